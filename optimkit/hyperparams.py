"""Hyperparameters as data: learning rate, betas, weight decay ... live in the optimizer state
as arrays, so a jitted training step compiles once and they can be changed between steps:

    state.hyperparams["learning_rate"] = jnp.asarray(3e-4)   # no recompilation

The state is optax's own `InjectStatefulHyperparamsState`, so code written for
`optax.inject_hyperparams` works unchanged. What optax gets wrong and this module fixes: optax
stores float hyperparameters in the *highest dtype of the params*, so a model with only
bfloat16 params gets b2 = 0.999 rounded to 1.0 (bfloat16 has 8 bits of mantissa) and Adam's
second moment stops updating. Here floats are stored in at least float32 (float64 when the
params hold float64).

Every full optimizer in `optimkit.optimizers` is built through `inject_hyperparams`, and its
update also checks that the gradient tree matches the parameter tree, naming the first path
where they differ.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optimkit import _checks

HyperparamsState = optax.InjectStatefulHyperparamsState


def _float_dtype(params: Any) -> jnp.dtype:
  dtype = jnp.dtype(jnp.float32)
  for leaf in jax.tree.leaves(params):
    if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
      dtype = jnp.promote_types(dtype, leaf.dtype)
  return dtype


def _as_array(value: Any, float_dtype: jnp.dtype) -> jax.Array:
  # Always a strongly typed array: a weakly typed one is a different input type to `jit` and
  # would make the step compile again.
  array = jnp.asarray(value)
  dtype = float_dtype if jnp.issubdtype(array.dtype, jnp.floating) else array.dtype
  return jnp.asarray(array, dtype=dtype)


def inject_hyperparams(
    factory: Callable[..., optax.GradientTransformation],
    static_args: Iterable[str] = (),
) -> Callable[..., optax.GradientTransformationExtraArgs]:
  """Wraps `factory` so that its numeric and schedule arguments become state.

  Numeric arguments (floats, ints, arrays; not bools) are stored in `state.hyperparams`.
  Callable arguments are schedules of the step count, evaluated every step and their current
  value stored too (for logging). Arguments named in `static_args`, bools, strings, None and
  other objects are passed to the factory unchanged.
  """
  static = set(static_args)
  signature = inspect.signature(factory)
  unknown = static - set(signature.parameters)
  if unknown:
    raise ValueError(f"inject_hyperparams: static_args {sorted(unknown)} are not arguments of "
                     f"{factory.__name__}")

  def wrapped(*args, **kwargs) -> optax.GradientTransformationExtraArgs:
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    numeric, schedules, other = {}, {}, {}
    for name, value in bound.arguments.items():
      if name in static or isinstance(value, (bool, str)) or value is None:
        other[name] = value
      elif callable(value):
        schedules[name] = value
      elif isinstance(value, (int, float, np.ndarray, jax.Array, np.number)):
        numeric[name] = value
      else:
        other[name] = value

    def init_fn(params):
      dtype = _float_dtype(params)
      count = jnp.zeros([], jnp.int32)
      hyperparams = {name: _as_array(value, dtype) for name, value in numeric.items()}
      hyperparams.update(
          {name: _as_array(fn(count), dtype) for name, fn in schedules.items()})
      return HyperparamsState(
          count=count,
          hyperparams=hyperparams,
          hyperparams_states={},
          inner_state=factory(**other, **hyperparams).init(params),
      )

    def update_fn(updates, state, params=None, **extra_args):
      dtype = _float_dtype(params if params is not None else updates)
      hyperparams = {name: _as_array(value, dtype) for name, value in state.hyperparams.items()}
      hyperparams.update(
          {name: _as_array(fn(state.count), dtype) for name, fn in schedules.items()})
      inner = optax.with_extra_args_support(factory(**other, **hyperparams))
      updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
      return updates, HyperparamsState(
          count=optax.safe_increment(state.count),
          hyperparams=hyperparams,
          hyperparams_states=state.hyperparams_states,
          inner_state=inner_state,
      )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

  wrapped.__name__ = factory.__name__
  wrapped.__doc__ = factory.__doc__
  return wrapped


def with_tree_check(
    owner: str, transform: optax.GradientTransformation
) -> optax.GradientTransformationExtraArgs:
  """`transform` with the input checks of a full optimizer, and updates returned in the
  gradients' dtypes.

  `init` rejects integer and boolean parameters, naming the leaf. `update` checks, at trace
  time, that the gradient tree matches the parameter tree and that the state is what `init`
  makes for these parameters (so a state from another optimizer fails with the path where it
  differs, not deep inside the algorithm). The cast on the way out matters for bfloat16 and
  float16 params: the learning rate and weight decay are float32 (or float64) arrays in the
  state, and optax's scaling transforms promote with them.
  """
  transform = optax.with_extra_args_support(transform)
  expected_states = {}  # the abstract init state, by parameter signature

  def init_fn(params):
    _checks.check_float_params(owner, params)
    return transform.init(params)

  def expected_state(like):
    leaves, treedef = jax.tree.flatten(like)
    key = (treedef, tuple((tuple(leaf.shape), jnp.dtype(leaf.dtype)) for leaf in leaves))
    if key not in expected_states:
      expected_states[key] = jax.eval_shape(transform.init, like)
    return expected_states[key]

  def update_fn(updates, state, params=None, **extra_args):
    _checks.check_trees_match(owner, updates, params)
    # Shapes only matter here; gradients have the params' shapes when params are not given.
    _checks.check_state_matches(owner, state,
                                expected_state(params if params is not None else updates))
    new_updates, state = transform.update(updates, state, params, **extra_args)
    new_updates = jax.tree.map(lambda new, old: new.astype(old.dtype), new_updates, updates)
    return new_updates, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def set_hyperparams(state: Any, **values: Any) -> Any:
  """A copy of `state` with the named hyperparameters replaced, e.g.
  `state = optimkit.set_hyperparams(state, learning_rate=3e-4, weight_decay=0.1)`.

  Finds the hyperparameter dict wherever it sits (inside `skip_nonfinite`, a chain, ...), and
  gives each new value the dtype of the old one, so the jitted step does not compile again.
  """
  if isinstance(state, HyperparamsState):
    unknown = set(values) - set(state.hyperparams)
    if unknown:
      raise ValueError(f"set_hyperparams: {sorted(unknown)} are not hyperparameters of this "
                       f"optimizer; it has {sorted(state.hyperparams)}")
    hyperparams = dict(state.hyperparams)
    for name, value in values.items():
      hyperparams[name] = jnp.asarray(value, dtype=hyperparams[name].dtype)
    return state._replace(hyperparams=hyperparams)
  if isinstance(state, tuple) and hasattr(state, "_fields"):
    return type(state)(*(_replace_inside(child, values) for child in state))
  if isinstance(state, (tuple, list)):
    return type(state)(_replace_inside(child, values) for child in state)
  raise ValueError("set_hyperparams: no hyperparameters found in this state; optimkit's full "
                   "optimizers keep them, bare primitives do not.")


def _replace_inside(child: Any, values: dict) -> Any:
  try:
    return set_hyperparams(child, **values)
  except ValueError as error:
    if "no hyperparameters found" in str(error):
      return child
    raise
