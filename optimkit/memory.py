"""Measured optimizer-state memory: the shapes and dtypes of `tx.init(params)` via
`jax.eval_shape`, so nothing is allocated and a 70B-parameter tree is measured on a laptop.

    optimkit memory --params 7e9 --optimizers adamw,adamw:8bit,adamw:4bit,lion,adafactor
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import jax
import jax.numpy as jnp
import optax


def _nbytes(tree: Any) -> int:
  return sum(leaf.size * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree))


def param_count(params: Any) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def state_bytes(tx: optax.GradientTransformation, params: Any) -> int:
  """Bytes of optimizer state for `params` (arrays or `jax.ShapeDtypeStruct`s)."""
  return _nbytes(jax.eval_shape(tx.init, params))


def state_bytes_per_param(tx: optax.GradientTransformation, params: Any) -> float:
  return state_bytes(tx, params) / max(param_count(params), 1)


def state_breakdown(tx: optax.GradientTransformation, params: Any) -> dict[str, int]:
  """Bytes per state field: leaves grouped by their path of NamedTuple fields (e.g.
  "inner_state.mu.codes"), the parameter tree's own keys left out."""
  shapes = jax.eval_shape(tx.init, params)
  totals: dict[str, int] = defaultdict(int)
  for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    fields = [entry.name for entry in path if isinstance(entry, jax.tree_util.GetAttrKey)]
    totals[".".join(fields) or "<root>"] += leaf.size * jnp.dtype(leaf.dtype).itemsize
  return dict(totals)


def transformer_shaped_params(total_params: float, vocab_size: int = 32_000,
                              dtype: Any = jnp.float32) -> dict:
  """Abstract (ShapeDtypeStruct) parameters of a GPT-style decoder with about `total_params`
  parameters: L layers of width d = 128 L (GPT-3's aspect ratio), each with a fused QKV
  projection, an output projection, a 4d MLP, biases and two norms, plus the embedding."""
  if total_params < 1e5:
    raise ValueError(f"transformer_shaped_params: total_params must be >= 1e5, got {total_params}")
  layers = max(1, round((total_params / (12 * 128 ** 2)) ** (1 / 3)))
  width = 128 * layers
  # Correct the width so the count lands near the target despite the rounding of `layers`.
  width = max(64, int(round(math.sqrt(max(total_params - vocab_size * 128 * layers, 1)
                                      / (12 * layers)) / 64)) * 64)
  s = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)
  tree = {"embedding": s(vocab_size, width), "final_norm": {"scale": s(width)}}
  for i in range(layers):
    tree[f"layer_{i:03d}"] = {
        "attention": {"qkv": {"kernel": s(width, 3 * width), "bias": s(3 * width)},
                      "out": {"kernel": s(width, width), "bias": s(width)}},
        "mlp": {"up": {"kernel": s(width, 4 * width), "bias": s(4 * width)},
                "down": {"kernel": s(4 * width, width), "bias": s(width)}},
        "attention_norm": {"scale": s(width)}, "mlp_norm": {"scale": s(width)},
    }
  return tree
