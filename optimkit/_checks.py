"""Input checks shared by every optimizer: hyperparameter ranges and tree matching.

Checks run in Python at construction (hyperparameters) or at trace time (tree structure), so
they cost nothing inside a compiled step. A hyperparameter that is a schedule (a callable) or a
traced array (as under `optax.inject_hyperparams`) cannot be checked eagerly and is let through:
its value is only known inside the step.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _concrete_float(value: Any) -> float | None:
  """The value as a Python float, or None when it is not known before tracing."""
  if callable(value) or isinstance(value, jax.core.Tracer):
    return None
  try:
    array = np.asarray(value)
  except Exception as error:  # an object numpy cannot read: not a number
    raise TypeError(f"not a number: {value!r}") from error
  if array.dtype.kind not in "biuf":
    raise TypeError(f"not a number: {value!r}")
  if array.shape != ():
    return None
  return float(array)


def describe_range(low: float = -math.inf, high: float = math.inf, *, low_inclusive: bool = True,
                   high_inclusive: bool = True) -> str:
  """A range as written in messages: [0.0, 1.0)."""
  left = "[" if low_inclusive else "("
  right = "]" if high_inclusive else ")"
  return f"{left}{low}, {high}{right}"


def check_range(
    owner: str,
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
  """Raises ValueError naming `owner`, the argument, its value and the valid range."""
  valid = describe_range(low, high, low_inclusive=low_inclusive, high_inclusive=high_inclusive)
  try:
    number = _concrete_float(value)
  except (TypeError, ValueError):  # a string, None, an object: not a number at all
    raise ValueError(f"{owner}: {name} must be a number in {valid}, got {value!r}") from None
  if number is None:
    return
  above_low = number >= low if low_inclusive else number > low
  below_high = number <= high if high_inclusive else number < high
  if math.isnan(number) or not (above_low and below_high):
    raise ValueError(f"{owner}: {name} must be in {valid}, got {value!r}")


def check_non_negative(owner: str, name: str, value: Any) -> None:
  check_range(owner, name, value, 0.0)


def check_beta(owner: str, name: str, value: Any) -> None:
  """A decay rate of an exponential moving average: [0, 1)."""
  check_range(owner, name, value, 0.0, 1.0, high_inclusive=False)


def check_int_at_least(owner: str, name: str, value: Any, low: int) -> None:
  """An integer >= low: a Python int or an integer array (a hyperparameter handed in as data;
  a traced one is let through, its value is only known inside the step)."""
  message = f"{owner}: {name} must be an integer >= {low}, got {value!r}"
  if isinstance(value, jax.core.Tracer):
    if not jnp.issubdtype(value.dtype, jnp.integer):
      raise ValueError(message)
    return
  if isinstance(value, (jax.Array, np.ndarray, np.generic)) and np.ndim(value) == 0 and \
      jnp.issubdtype(value.dtype, jnp.integer):
    value = int(value)
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(message)


def check_learning_rate(owner: str, value: Any) -> None:
  """A float >= 0, or a schedule (callable step -> value) checked at step 0."""
  if value is None:
    raise ValueError(f"{owner}: learning_rate must be a number in [0.0, inf] or a schedule "
                     f"(a callable step -> value), got None")
  if callable(value):
    try:
      first = value(0)
    except Exception:  # A schedule that cannot be called eagerly is checked by its own maker.
      return
    check_range(owner, "learning_rate (at step 0 of the schedule)", first, 0.0)
    return
  check_non_negative(owner, "learning_rate", value)


# ----------------------------------------------------------------------------------------------
# Tree matching: name the first path where gradients and parameters differ.


def _leaf_description(leaf: Any) -> str:
  if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
    return f"{jnp.dtype(leaf.dtype).name}{list(leaf.shape)}"
  return type(leaf).__name__


def first_mismatch(given: Any, expected: Any, given_name: str = "gradient",
                   expected_name: str = "parameter") -> str | None:
  """Describes the first path where the two trees differ in structure or leaf shape."""
  # The common case, matching trees, is decided on the plain flattening: paths cost a Python
  # object per leaf, which on thousands of leaves is a visible share of the step's trace time.
  leaves, treedef = jax.tree.flatten(given)
  wanted_leaves, wanted_def = jax.tree.flatten(expected)
  if treedef == wanted_def and all(  # type: ignore[operator]
      getattr(leaf, "shape", None) == getattr(wanted, "shape", None)
      or not (hasattr(leaf, "shape") and hasattr(wanted, "shape"))
      for leaf, wanted in zip(leaves, wanted_leaves)):
    return None
  given_leaves, given_def = jax.tree_util.tree_flatten_with_path(given)
  expected_leaves, expected_def = jax.tree_util.tree_flatten_with_path(expected)
  if given_def == expected_def:  # type: ignore[operator]  # PyTreeDef's stub lacks __eq__
    for (path, leaf), (_, wanted) in zip(given_leaves, expected_leaves):
      if hasattr(leaf, "shape") and hasattr(wanted, "shape") and leaf.shape != wanted.shape:
        return (f"at {jax.tree_util.keystr(path) or '<root>'}: the {given_name} has shape "
                f"{tuple(leaf.shape)} but the {expected_name} has shape {tuple(wanted.shape)}")
    return None
  given_paths = [jax.tree_util.keystr(path) for path, _ in given_leaves]
  expected_paths = [jax.tree_util.keystr(path) for path, _ in expected_leaves]
  extra = f"the {given_name} has a leaf the {expected_name} does not have"
  missing = f"the {expected_name} has a leaf the {given_name} does not have"
  for given_path, expected_path in zip(given_paths, expected_paths):
    if given_path != expected_path:
      if given_path not in expected_paths:
        return f"at {given_path}: {extra}"
      return f"at {expected_path}: {missing}"
  if len(given_paths) > len(expected_paths):
    return f"at {given_paths[len(expected_paths)]}: {extra}"
  if len(expected_paths) > len(given_paths):
    return f"at {expected_paths[len(given_paths)]}: {missing}"
  # Same leaf paths, different containers (e.g. a list where a tuple was expected).
  return (f"in the container types: the {given_name} tree is {given_def}, the {expected_name} "
          f"tree is {expected_def}")


class TreeMismatchError(ValueError):
  """A gradient (update) tree that does not match the parameter tree."""


def check_trees_match(owner: str, updates: Any, params: Any) -> None:
  if params is None:
    return
  problem = first_mismatch(updates, params)
  if problem is not None:
    raise TreeMismatchError(
        f"{owner}: the gradient tree does not match the parameter tree {problem}."
    )


def check_float_params(owner: str, params: Any) -> None:
  """Optimizers move floating-point parameters; an integer or boolean leaf (a step counter, a
  mask, an embedding index table) has no gradient to follow, and its float0 "gradient" breaks
  every moment update deep inside the step. Caught at `init`, naming the leaf."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and not jnp.issubdtype(dtype, jnp.inexact):
      raise TypeError(
          f"{owner}: the parameter at {jax.tree_util.keystr(path) or '<root>'} has dtype "
          f"{jnp.dtype(dtype).name}; optimizers update floating-point parameters only. Keep "
          f"non-float leaves out of the tree given to the optimizer (for Flax NNX: "
          f"nnx.Optimizer(..., wrt=nnx.Param)).")


def key_name(key: Any) -> str:
  """The name in one step of a tree path: a NamedTuple field, a mapping key or an index."""
  for attribute in ("name", "key", "idx"):  # GetAttrKey, DictKey, SequenceKey
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _named_shapes(tree: Any) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
  """Leaves by container-independent path (a NamedTuple field and a mapping key of the same name
  are the same step), with their shapes, in sorted order."""
  return sorted((tuple(key_name(key) for key in path), tuple(getattr(leaf, "shape", ())))
                for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0])


def check_state_matches(owner: str, state: Any, expected: Any) -> None:
  """`state` must be what this optimizer's `init` makes for these parameters (`expected`, its
  abstract value). Containers may differ when a framework re-wraps the state (Flax NNX turns
  dicts and NamedTuples into its `State` mappings), so a different tree structure is accepted
  when it holds the same leaves under the same names; leaf dtypes are not compared (a state may
  be cast on purpose)."""
  problem = first_mismatch(state, expected, "given state", "expected state")
  if problem is None:
    return
  restructured = jax.tree.structure(state) != jax.tree.structure(expected)  # type: ignore[operator]
  if restructured and _named_shapes(state) == _named_shapes(expected):
    return  # re-wrapped containers, the same leaves under the same names
  raise TreeMismatchError(
      f"{owner}: the state passed to update() is not this optimizer's state for these "
      f"parameters {problem}. Pass the state that {owner}'s init() returned (a state from "
      f"another optimizer, or one made for other parameters, does not fit).")


# ----------------------------------------------------------------------------------------------
# Ranges of the hyperparameters every optimizer shares, by argument name.

_BETA = dict(low=0.0, high=1.0, high_inclusive=False)
_NON_NEGATIVE = dict(low=0.0)
_POSITIVE = dict(low=0.0, low_inclusive=False)

_COUNT = dict(low=0, integer=True)
_PERIOD = dict(low=1, integer=True)

KNOWN_RANGES: dict[str, dict[str, Any]] = {
    "b1": _BETA, "b2": _BETA, "b3": _BETA, "decay": _BETA, "momentum": _BETA,
    "weight_decay_rate": _NON_NEGATIVE, "clip_threshold": _POSITIVE,
    "decay_offset": _COUNT, "min_dim_size_to_factor": _COUNT, "update_interval": _PERIOD,
    "sync_period": _PERIOD, "seed": _COUNT, "print_win_rate_every_n_steps": _COUNT,
    "alpha": dict(low=0.0, high=1.0),
    "eps": _NON_NEGATIVE, "eps_root": _NON_NEGATIVE, "eps_scale": _NON_NEGATIVE,
    "weight_decay": _NON_NEGATIVE, "initial_accumulator_value": _NON_NEGATIVE,
    "initial_scale": _NON_NEGATIVE, "weight_lr_power": _NON_NEGATIVE, "r": _NON_NEGATIVE,
    "warmup_steps": _COUNT, "min_norm": _NON_NEGATIVE,
    # RAdam rectifies when rho_t > threshold; the rectifier sqrt((rho_t - 4)(rho_t - 2)...) is
    # undefined below 4.
    "threshold": dict(low=4.0),
    "gamma": _POSITIVE, "trust_coefficient": _POSITIVE, "decay_rate": _POSITIVE,
    "clipping_threshold": _POSITIVE,
}


def validate(owner: str, **hyperparams: Any) -> None:
  """Checks every argument whose name has a known range; `learning_rate` may be a schedule."""
  for name, value in hyperparams.items():
    if name == "learning_rate":
      check_learning_rate(owner, value)
    elif value is None:
      continue
    elif name in KNOWN_RANGES:
      check_range(owner, name, value, **KNOWN_RANGES[name])
