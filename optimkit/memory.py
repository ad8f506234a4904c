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


# ----------------------------------------------------------------------------------------------
# Real model shapes, and state bytes per device on a mesh (issue 22): the per-device figure is
# what decides whether a run fits, and a storage format whose blocks straddle shard boundaries
# is replicated where its parameter is sharded.

# name: (vocab, width, layers, MLP width, key/value width, GPT-2 layout). GPT-2-XL's vocabulary
# is padded from 50257 to 50304 (a multiple of 64, as nanoGPT and Megatron pad it), without
# which no mesh axis divides it.
MODEL_SHAPES: dict[str, tuple[int, int, int, int, int, bool]] = {
    "llama-2-7b": (32_000, 4096, 32, 11_008, 4096, False),
    "llama-2-13b": (32_000, 5120, 40, 13_824, 5120, False),
    "mistral-7b": (32_000, 4096, 32, 14_336, 1024, False),
    "gpt2-xl": (50_304, 1600, 48, 6400, 1600, True),
}


def model_shaped_params(name: str, dtype: Any = jnp.bfloat16) -> dict:
  """Abstract parameters of a published decoder's shapes (`MODEL_SHAPES`), Flax layout
  (kernels are (in, out)), one subtree per layer as an unscanned model holds them."""
  if name not in MODEL_SHAPES:
    raise ValueError(f"model_shaped_params: unknown model {name!r}; choose from "
                     f"{', '.join(MODEL_SHAPES)}")
  vocab, width, layers, mlp, kv, gpt2 = MODEL_SHAPES[name]
  s = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)
  tree: dict = {"embedding": s(vocab, width), "final_norm": {"scale": s(width)}}
  if gpt2:  # learned positions, biases, LayerNorm biases, a fused QKV, a tied output head
    tree["positions"] = s(1024, width)
    tree["final_norm"]["bias"] = s(width)
  else:
    tree["lm_head"] = s(width, vocab)
  for i in range(layers):
    if gpt2:
      layer = {"attention": {"qkv": {"kernel": s(width, 3 * width), "bias": s(3 * width)},
                             "out": {"kernel": s(width, width), "bias": s(width)}},
               "mlp": {"up": {"kernel": s(width, mlp), "bias": s(mlp)},
                       "down": {"kernel": s(mlp, width), "bias": s(width)}},
               "attention_norm": {"scale": s(width), "bias": s(width)},
               "mlp_norm": {"scale": s(width), "bias": s(width)}}
    else:
      layer = {"attention": {"q": {"kernel": s(width, width)}, "k": {"kernel": s(width, kv)},
                             "v": {"kernel": s(width, kv)}, "out": {"kernel": s(width, width)}},
               "mlp": {"gate": {"kernel": s(width, mlp)}, "up": {"kernel": s(width, mlp)},
                       "down": {"kernel": s(mlp, width)}},
               "attention_norm": {"scale": s(width)}, "mlp_norm": {"scale": s(width)}}
    tree[f"layer_{i:03d}"] = layer
  return tree


def fsdp_tp_specs(params: Any, data_axis: str | None = "data",
                  model_axis: str | None = "model") -> Any:
  """PartitionSpecs of the usual FSDP x tensor-parallel layout (either axis may be None):
  kernels whose output feeds the MLP or attention heads (q, k, v, qkv, gate, up) are split
  (data, model), the projections back to the residual width (out, down) (model, data), the
  embedding and output head over the vocabulary (model) and the width (data); vectors over
  data."""
  from jax.sharding import PartitionSpec as P

  back = ("out", "down")

  def spec(path, leaf):
    names = [str(getattr(entry, "key", "")) for entry in path]
    if leaf.ndim == 1:
      return P(data_axis)
    if "embedding" in names or "positions" in names:
      return P(model_axis, data_axis)
    if "lm_head" in names:
      return P(data_axis, model_axis)
    if any(name in back for name in names):
      return P(model_axis, data_axis)
    return P(data_axis, model_axis)

  return jax.tree_util.tree_map_with_path(spec, params)


def fsdp_tp_specs_for(params: Any, mesh_shape: dict[str, int]) -> Any:
  """`fsdp_tp_specs` on a {"data": d, "model": m} mesh, naming only the axes of size > 1: a spec
  naming an axis of size 1 shards nothing but would keep ZeRO-1 off that dim."""
  return fsdp_tp_specs(params, "data" if mesh_shape["data"] > 1 else None,
                       "model" if mesh_shape["model"] > 1 else None)


def state_bytes_per_device(tx: optax.GradientTransformation, params: Any, specs: Any,
                           mesh_shape: dict[str, int], zero1_axis: str | None = None) -> int:
  """Bytes of `tx.init(params)` on one device of a mesh of `mesh_shape` ({axis: size}), with
  the state in `optimkit.sharding.state_specs` (ZeRO-1 over `zero1_axis` if given): the sum over
  state leaves of one shard's bytes. Nothing is allocated; no devices are needed."""
  from jax.sharding import AbstractMesh, PartitionSpec

  from optimkit import sharding

  mesh = AbstractMesh(tuple(mesh_shape.values()), tuple(mesh_shape))
  shapes = jax.eval_shape(tx.init, params)
  state_specs = sharding.state_specs(tx, params, specs, zero1_axis, mesh=mesh)
  total = 0
  spec_leaves = jax.tree.leaves(state_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
  for leaf, spec in zip(jax.tree.leaves(shapes), spec_leaves, strict=True):
    entries = tuple(spec) + (None,) * (leaf.ndim - len(tuple(spec)))
    elements = 1
    for size, entry in zip(leaf.shape, entries):
      split = math.prod(mesh_shape[axis] for axis in
                        (entry if isinstance(entry, tuple) else (entry,)) if axis is not None)
      elements *= -(-size // split)
    total += elements * jnp.dtype(leaf.dtype).itemsize
  return total
