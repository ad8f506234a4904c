"""Measured optimizer-state memory: shapes and dtypes of `tx.init(params)` via `jax.eval_shape`,
so nothing is allocated and any size of model can be measured on any machine."""

from __future__ import annotations

from typing import Any

import jax
import optax


def _nbytes(tree: Any) -> int:
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def param_count(params: Any) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def state_bytes(tx: optax.GradientTransformation, params: Any) -> int:
  """Bytes of optimizer state for `params` (arrays or `jax.ShapeDtypeStruct`s)."""
  return _nbytes(jax.eval_shape(tx.init, params))


def state_bytes_per_param(tx: optax.GradientTransformation, params: Any) -> float:
  return state_bytes(tx, params) / max(param_count(params), 1)
