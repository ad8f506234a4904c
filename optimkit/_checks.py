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
  except Exception:  # pylint: disable=broad-except
    return None
  if array.shape != ():
    return None
  return float(array)


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
  left = "[" if low_inclusive else "("
  right = "]" if high_inclusive else ")"
  valid = f"{left}{low}, {high}{right}"
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
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
  if value < low:
    raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")


def check_learning_rate(owner: str, value: Any) -> None:
  """A float >= 0, or a schedule (callable step -> value) checked at step 0."""
  if value is None:
    raise ValueError(f"{owner}: learning_rate must be a number in [0.0, inf] or a schedule "
                     f"(a callable step -> value), got None")
  if callable(value):
    try:
      first = value(0)
    except Exception:  # pylint: disable=broad-except
      return  # A schedule that cannot be called eagerly is checked by its own maker.
    check_range(owner, "learning_rate (at step 0 of the schedule)", first, 0.0)
    return
  check_non_negative(owner, "learning_rate", value)


# ----------------------------------------------------------------------------------------------
# Tree matching: name the first path where gradients and parameters differ.


def _leaf_description(leaf: Any) -> str:
  if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
    return f"{jnp.dtype(leaf.dtype).name}{list(leaf.shape)}"
  return type(leaf).__name__


def first_mismatch(updates: Any, params: Any) -> str | None:
  """Describes the first path where the two trees differ in structure or leaf shape."""
  update_leaves, update_def = jax.tree_util.tree_flatten_with_path(updates)
  param_leaves, param_def = jax.tree_util.tree_flatten_with_path(params)
  if update_def == param_def:
    for (path, update), (_, param) in zip(update_leaves, param_leaves):
      if hasattr(update, "shape") and hasattr(param, "shape") and update.shape != param.shape:
        return (
            f"at {jax.tree_util.keystr(path) or '<root>'}: gradient has shape "
            f"{tuple(update.shape)} but the parameter has shape {tuple(param.shape)}"
        )
    return None
  update_paths = [jax.tree_util.keystr(path) for path, _ in update_leaves]
  param_paths = [jax.tree_util.keystr(path) for path, _ in param_leaves]
  for update_path, param_path in zip(update_paths, param_paths):
    if update_path != param_path:
      if update_path not in param_paths:
        return f"at {update_path}: the gradient has a leaf the parameters do not have"
      return f"at {param_path}: the parameters have a leaf the gradient does not have"
  if len(update_paths) > len(param_paths):
    return f"at {update_paths[len(param_paths)]}: the gradient has a leaf the parameters do not have"
  if len(param_paths) > len(update_paths):
    return f"at {param_paths[len(update_paths)]}: the parameters have a leaf the gradient does not have"
  # Same leaf paths, different containers (e.g. a list where a tuple was expected).
  return f"in the container types: gradient tree is {update_def}, parameter tree is {param_def}"


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


# ----------------------------------------------------------------------------------------------
# Ranges of the hyperparameters every optimizer shares, by argument name.

_BETA = dict(low=0.0, high=1.0, high_inclusive=False)
_NON_NEGATIVE = dict(low=0.0)
_POSITIVE = dict(low=0.0, low_inclusive=False)

KNOWN_RANGES = {
    "b1": _BETA, "b2": _BETA, "b3": _BETA, "decay": _BETA, "momentum": _BETA,
    "eps": _NON_NEGATIVE, "eps_root": _NON_NEGATIVE, "eps_scale": _NON_NEGATIVE,
    "weight_decay": _NON_NEGATIVE, "initial_accumulator_value": _NON_NEGATIVE,
    "initial_scale": _NON_NEGATIVE, "weight_lr_power": _NON_NEGATIVE, "r": _NON_NEGATIVE,
    "warmup_steps": _NON_NEGATIVE, "min_norm": _NON_NEGATIVE,
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
