"""Hyperparameters as data: learning rate, betas, weight decay ... live in the optimizer state
as arrays, so a jitted training step compiles once and they can be changed between steps:

    state = optimkit.set_hyperparams(state, learning_rate=3e-4)   # no recompilation

The state is optax's own `InjectStatefulHyperparamsState`, so code written for
`optax.inject_hyperparams` (logging `state.hyperparams["learning_rate"]`) works unchanged.

The contract with optax's wrappers, which every optimkit optimizer keeps:
  - Who owns a value. A Python number given to an optimkit optimizer is owned by its state
    (`set_hyperparams` changes it). A jax array given to it is owned by the caller: it is used
    as given, every time the optimizer is built, and not copied into the state. That is how
    `optax.inject_hyperparams(optimkit.lion)(learning_rate=schedule)` works: optax builds the
    optimizer anew inside each `init` and `update` with its current values as arrays, and those
    values drive the step (an optimizer that kept its own copy would silently ignore them).
  - A schedule (a callable of the step count) is evaluated at every step; its current value is
    in `state.hyperparams` for logging, and its name is a key of `state.hyperparams_states`, as
    optax records its own schedules. `set_hyperparams` refuses to change such a value.
  - Floats are stored in at least float32 (float64 when the params hold float64). What optax
    gets wrong: it stores them in the params' highest dtype, so a bfloat16 model gets b2 = 0.999
    rounded to 1.0 and Adam's second moment stops updating; values arriving that way from
    `optax.inject_hyperparams` are warned about (pass `hyperparam_dtype=jnp.float32`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

HyperparamsState = optax.InjectStatefulHyperparamsState


def float_dtype(params: Any) -> jnp.dtype:
  """The dtype floats are stored in: float32, or float64 when some param is float64."""
  dtype = jnp.dtype(jnp.float32)
  for leaf in jax.tree.leaves(params):
    if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
      dtype = jnp.promote_types(dtype, leaf.dtype)
  return dtype


def as_array(value: Any, dtype: jnp.dtype) -> jax.Array:
  """A strongly typed array (a weakly typed one is another input type to `jit` and would make
  the step compile again); floats in `dtype`, integers as they are."""
  array = jnp.asarray(value)
  if jnp.issubdtype(array.dtype, jnp.floating):
    return array.astype(dtype)
  return array


def _warn_if_rounded(owner: str, name: str, value: Any) -> None:
  dtype = getattr(value, "dtype", None)
  if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and \
      jnp.finfo(dtype).bits < 32:
    warnings.warn(
        f"{owner}: hyperparameter {name} arrives as {jnp.dtype(dtype).name} (optax's "
        f"inject_hyperparams stores hyperparameters in the params' dtype), which rounds values "
        f"such as b2=0.999 to 1.0; pass hyperparam_dtype=jnp.float32 to optax.inject_hyperparams",
        stacklevel=4)


def inject(
    owner: str,
    build: Callable[..., optax.GradientTransformation],
    owned: Mapping[str, Any],
    schedules: Mapping[str, Callable[[jax.Array], Any]],
    given: Mapping[str, Any],
) -> optax.GradientTransformationExtraArgs:
  """The transformation `build(**hyperparameters)`, its hyperparameters kept as data.

  Args:
    owner: the optimizer's name, for messages.
    build: makes the transformation from its hyperparameters (keyword arguments).
    owned: values the state owns (Python numbers): stored at `init`, read back at `update`.
    schedules: callables of the step count, evaluated at every step.
    given: arrays owned by the caller (an outer `optax.inject_hyperparams`), used as they are.
  """
  for name, value in given.items():
    _warn_if_rounded(owner, name, value)

  def current(state_values: Mapping[str, Any], count: jax.Array, dtype) -> dict:
    values = {name: as_array(value, dtype) for name, value in state_values.items()
              if name not in schedules}
    values.update({name: as_array(fn(count), dtype) for name, fn in schedules.items()})
    return values

  def init_fn(params):
    dtype = float_dtype(params)
    count = jnp.zeros([], jnp.int32)
    hyperparams = current(owned, count, dtype)
    inner = build(**hyperparams, **{k: as_array(v, dtype) for k, v in given.items()})
    return HyperparamsState(
        count=count,
        hyperparams=hyperparams,
        # optax's convention: a scheduled name is a key here (its schedule state, None for a
        # plain callable); set_hyperparams reads it to refuse values a schedule owns.
        hyperparams_states={name: None for name in schedules},
        inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    dtype = float_dtype(params if params is not None else updates)
    hyperparams = current(state.hyperparams, state.count, dtype)
    inner = optax.with_extra_args_support(
        build(**hyperparams, **{k: as_array(v, dtype) for k, v in given.items()}))
    updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    return updates, HyperparamsState(
        count=optax.safe_increment(state.count),
        hyperparams=hyperparams,
        hyperparams_states=state.hyperparams_states,
        inner_state=inner_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# Changing hyperparameters between steps.

_HYPERPARAMS_FIELDS = ("count", "hyperparams", "hyperparams_states", "inner_state")


def _is_hyperparams_state(node: Any) -> bool:
  """optax's state, or its fields re-wrapped as a mapping (Flax NNX's `State`, which drops the
  empty `hyperparams_states`)."""
  if isinstance(node, HyperparamsState):
    return True
  return isinstance(node, Mapping) and {"count", "hyperparams", "inner_state"} <= set(
      node.keys()) <= set(_HYPERPARAMS_FIELDS)


def _field(node: Any, name: str) -> Any:
  if isinstance(node, tuple):
    return getattr(node, name)
  return node.get(name, {}) if name == "hyperparams_states" else node[name]


def _leaf_value(leaf: Any) -> Any:
  """The array inside a Flax Variable (or the array itself)."""
  return leaf.get_value() if hasattr(leaf, "get_value") else leaf


def _with_value(leaf: Any, value: Any) -> Any:
  old = _leaf_value(leaf)
  new = jnp.asarray(value, dtype=old.dtype)
  if hasattr(leaf, "replace") and hasattr(leaf, "get_value"):
    return leaf.replace(new)
  return new


def _set_in(node: Any, values: Mapping[str, Any], found: set, where: str) -> Any:
  if _is_hyperparams_state(node):
    hyperparams = _field(node, "hyperparams")
    scheduled = _field(node, "hyperparams_states")
    replaced = dict(hyperparams)
    for name, value in values.items():
      if name not in hyperparams:
        continue
      if name in scheduled:
        raise ValueError(
            f"set_hyperparams: {name} in {where or 'the state'} follows a schedule, which sets it "
            f"at every step; a value set here would be overwritten. Build the optimizer with a "
            f"constant {name} (or another schedule) instead.")
      replaced[name] = _with_value(hyperparams[name], value)
      found.add(name)
    inner = _set_in(_field(node, "inner_state"), values, found, where + ".inner_state")
    if isinstance(node, tuple):  # a NamedTuple (optax's InjectHyperparamsState)
      return node._replace(  # type: ignore[attr-defined]
          hyperparams=type(hyperparams)(replaced) if not isinstance(hyperparams, dict)
          else replaced, inner_state=inner)
    rebuilt = dict(node.items())
    rebuilt["hyperparams"] = type(hyperparams)(replaced)
    rebuilt["inner_state"] = inner
    return type(node)(rebuilt)
  if isinstance(node, tuple) and hasattr(node, "_fields"):
    return type(node)(*(_set_in(child, values, found, f"{where}.{field}")
                        for field, child in zip(node._fields, node)))
  if isinstance(node, (tuple, list)):
    return type(node)(_set_in(child, values, found, f"{where}[{i}]")
                      for i, child in enumerate(node))
  if isinstance(node, Mapping):  # a dict type, built from a dict
    return type(node)({  # type: ignore[call-arg]
        key: _set_in(child, values, found, f"{where}[{key!r}]") for key, child in node.items()})
  return node


def _names_in(node: Any) -> set:
  names: set = set()

  def visit(child):
    if _is_hyperparams_state(child):
      names.update(_field(child, "hyperparams").keys())
      visit(_field(child, "inner_state"))
    elif isinstance(child, (tuple, list)):
      for grandchild in child:
        visit(grandchild)
    elif isinstance(child, Mapping):
      for grandchild in child.values():
        visit(grandchild)

  visit(node)
  return names


def set_hyperparams(state: Any, **values: Any) -> Any:
  """A copy of `state` with the named hyperparameters replaced, wherever they sit.

      state = optimkit.set_hyperparams(state, learning_rate=3e-4, weight_decay=0.1)

  Reaches through every container optax and Flax build (chain, masked, multi_transform,
  partition, MultiSteps, skip_nonfinite, Flax NNX `State`), into optimkit's states and into
  optax's own `inject_hyperparams` states; a name is replaced in every optimizer that has it
  (e.g. both groups of a `multi_transform`). Each new value keeps the dtype of the old one, so
  the jitted step does not compile again.

  Raises:
    ValueError: a name no hyperparameter state holds (naming the ones that exist, or saying the
      state keeps none: a bare optax optimizer keeps its hyperparameters in code, wrap it in
      `optax.inject_hyperparams`), or a value that a schedule owns.
  """
  available = _names_in(state)
  if not available:
    raise ValueError(
        f"set_hyperparams: {type(state).__name__} holds no hyperparameters. optimkit optimizers "
        f"keep theirs in the state; a plain optax optimizer or a bare primitive keeps them in "
        f"code (wrap it in optax.inject_hyperparams to make them data).")
  unknown = sorted(set(values) - available)
  if unknown:
    raise ValueError(f"set_hyperparams: {unknown} are not hyperparameters of this state; it has "
                     f"{sorted(available)}")
  found: set = set()
  return _set_in(state, values, found, "")


def get_hyperparams(state: Any) -> dict:
  """The current hyperparameters found in `state` (the first value of each name), as arrays."""
  result: dict = {}

  def visit(node):
    if _is_hyperparams_state(node):
      for name, value in _field(node, "hyperparams").items():
        result.setdefault(name, _leaf_value(value))
      visit(_field(node, "inner_state"))
    elif isinstance(node, (tuple, list)):
      for child in node:
        visit(child)
    elif isinstance(node, Mapping):
      for child in node.values():
        visit(child)

  visit(state)
  return result


def is_concrete(value: Any) -> bool:
  """Whether `value` is known before tracing (not a jax Tracer)."""
  return not isinstance(value, jax.core.Tracer)


def to_python(value: Any) -> Any:
  """A concrete scalar array as a Python number (other values unchanged)."""
  if isinstance(value, (jax.Array, np.ndarray, np.generic)) and np.ndim(value) == 0:
    return np.asarray(value).item()
  return value
