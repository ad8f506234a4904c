"""Adam-mini (Zhang, Chen, Li, Ding, Wu, Kingma, Ye, Luo & Sun 2024, "Adam-mini: Use Fewer
Learning Rates To Gain More", arXiv:2406.16793): Adam with one second-moment value per block of
parameters instead of one per parameter, the blocks following the Hessian's block structure.

    m   = b1 m + (1 - b1) g                          (per parameter, as Adam)
    v_B = b2 v_B + (1 - b2) mean_{i in B} g_i^2      (one scalar per block B)
    u   = (m / (1 - b1^t)) / (sqrt(v_B / (1 - b2^t)) + eps)

Blocks are given per leaf as the axes to average over (`()` is plain Adam, all axes one scalar
for the tensor). `adam_mini_blocks` derives them from Flax parameter paths with the paper's
rules (matching names as the authors' package does, case-insensitive substrings):
  - biases: plain Adam;
  - embeddings ("embed", "embd", "wte"): one value per token row;
  - output head ("lm_head", "output", "final_layer"): one per output token (Flax kernel column);
  - query/key ("q_proj", "k_proj", "wq", "wk", "query", "key"): one per head for Flax's
    (in, heads, head_dim) kernels, one per output neuron for 2-D kernels;
  - value, attention output and MLP ("v_proj", "wv", "value", "o_proj", "wo", "out",
    "attn.proj", "feed_forward", "linear", "mlp"): one per output neuron;
  - everything else (norm scales, scalars): one per tensor.
Pass your own `blocks` (a tree of axis tuples, or a callable params -> tree) to override.
Reference: the `adam-mini` package (the authors', version 1.1.1).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, compute_dtype, resolve
from optimkit.transforms._util import bias_correction, ema, increment, map_like, path_keys

Blocks = Union[Any, Callable[[Any], Any], None]

BIAS_NAMES = ("bias",)
EMBEDDING_NAMES = ("embed", "embd", "wte")
OUTPUT_NAMES = ("lm_head", "output", "final_layer")
QUERY_KEY_NAMES = ("k_proj", "q_proj", "wq", "wk", "query", "key")
PER_NEURON_NAMES = ("v_proj", "wv", "value", "o_proj", "wo", "out", "attn.proj",
                    "feed_forward", "linear", "mlp")


def _path_name(path) -> str:
  return ".".join(path_keys(path)).lower()


def _block_axes(name: str, leaf) -> tuple[int, ...]:
  ndim = leaf.ndim
  everything = tuple(range(ndim))
  matches = lambda names: any(n in name for n in names)
  if ndim == 0 or matches(BIAS_NAMES):
    return ()
  if matches(EMBEDDING_NAMES) and ndim == 2:
    return (1,)  # nnx.Embed: (vocab, features); one value per token
  if matches(OUTPUT_NAMES) and ndim >= 2:
    return tuple(range(ndim - 1))  # one per output unit (last axis in Flax)
  if matches(QUERY_KEY_NAMES) and ndim == 3:
    return (0, 2)  # (in, heads, head_dim): one per head
  if matches(QUERY_KEY_NAMES) and ndim == 2:
    return (0,)
  if matches(PER_NEURON_NAMES) and ndim >= 2:
    if "value" in name and ndim == 3:
      return (0,)  # (in, heads, head_dim): outputs are (heads, head_dim)
    return tuple(range(ndim - 1))
  return everything


def adam_mini_blocks(params: Any) -> Any:
  """The paper's block rules over Flax parameter paths: a tree of axes to average over."""
  return jax.tree_util.tree_map_with_path(lambda path, leaf: _block_axes(_path_name(path), leaf),
                                          params)


class AdamMiniState(NamedTuple):
  """State of `scale_by_adam_mini`: count, per-parameter `mu`, per-block `nu` (reduced dims
  kept with size 1, so each block value broadcasts over its block)."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  nu: Any


def scale_by_adam_mini(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                       blocks: Blocks = None,
                       state_storage: StorageLike = "float32") -> optax.GradientTransformation:
  """Adam-mini's direction.

  Args:
    b1, b2: moment decays, [0, 1). Defaults 0.9, 0.999.
    eps: stabiliser, >= 0. Default 1e-8.
    blocks: per-leaf axes to average g^2 over; None uses `adam_mini_blocks`.
    state_storage: how the first moment is stored (see `optimkit.state`); the per-block second
      moments are tiny and stay at full precision. Default "float32".
  """
  owner = "scale_by_adam_mini"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "eps", eps)
  if not (blocks is None or callable(blocks) or isinstance(blocks, (dict, list, tuple))):
    raise ValueError(f"{owner}: blocks must be None, a tree of axis tuples shaped like the params "
                     f"or a callable params -> such a tree, got {blocks!r}")

  def axes_for(params):
    if blocks is None:
      return adam_mini_blocks(params)
    return blocks(params) if callable(blocks) else blocks

  store = resolve(state_storage)

  def init_fn(params):
    axes = axes_for(params)
    nu = jax.tree.map(
        lambda p, a: jnp.zeros([1 if i in a else n for i, n in enumerate(p.shape)],
                               compute_dtype(p)),
        params, axes, is_leaf=lambda x: type(x) is tuple and all(isinstance(i, int) for i in x))
    return AdamMiniState(count=jnp.zeros([], jnp.int32), mu=store.init(params, signed=True),
                         nu=nu)

  def update_fn(updates, state, params=None):
    del params
    mu = ema(b1, updates, store.read(state.mu, updates, signed=True))
    # The block of each leaf is recovered from the state's shape: reduced axes have size 1
    # where the gradient's do not (a size-1 axis of the gradient reduces to itself either way).
    nu = jax.tree.map(
        lambda g, v: (b2 * v + (1.0 - b2) * jnp.mean(
            g * g, axis=tuple(i for i, (n, k) in enumerate(zip(g.shape, v.shape)) if n != k),
            keepdims=True)).astype(v.dtype) if g.size else v,
        updates, state.nu)
    count = increment(state.count)
    c1, c2 = bias_correction(b1, count), bias_correction(b2, count)
    direction = map_like(lambda g, m, v: (m / c1) / (jnp.sqrt(v / c2) + eps), updates, mu, nu)
    return direction, AdamMiniState(count=count,
                                    mu=store.write(mu, updates, state.mu, signed=True), nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)
