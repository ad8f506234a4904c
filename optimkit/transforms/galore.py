"""GaLore: gradient low-rank projection around any optimizer (Zhao et al. 2024).

Each projected matrix gradient G (m x n) is moved into a rank-r subspace, the wrapped
optimizer `tx` runs there (its state has the projected shape, so Adam's two moments cost
2 r max(m, n) instead of 2 m n), and its update is moved back and scaled:

    every update_proj_gap steps (t = 0, T, 2T, ...):  U S V^T = svd(G_t),  r = min(rank, m, n)
      right side: P = V[:, :r]^T (r x n);  low = G P^T (m x r);  back(u) = scale * u P
      left side:  P = U[:, :r]   (m x r);  low = P^T G (r x n);  back(u) = scale * P u
    update = back(tx.update(low))

Which side: `proj_type="std"` (galore-torch's default) projects the shorter dimension away
(right for m >= n, so the state is m x r); `"reverse_std"` the longer one (left for m >= n, the
state r x n: optax.contrib.galore's choice); `"left"` / `"right"` force a side. Leaves that are
not projected (by default every leaf that is not 2-D) go through `tx` whole. The moments carry
over when the projector is refreshed, as in the reference.

Deterministic projector: singular vectors are defined up to sign, and LAPACK builds pick
different ones; each is flipped so that its largest-magnitude entry is positive, so the
projector is a function of G alone (the tests give galore-torch the same convention). The SVD
runs in the gradient's compute dtype (float32, float64 for float64); galore-torch and optax
compute it in float32 whatever the dtype.

`tx` sees low-rank tensors, not the params: `params` are not passed to it (None). Weight decay
and the learning rate belong outside, in the full space:
`chain(galore(scale_by_adam(), rank=128), add_decayed_weights(wd), scale_by_learning_rate(lr))`.
Where galore-torch differs: its `GaLoreAdamW` decays the params after the step (p <- (p - lr u)
(1 - lr wd)), which differs from that chain by lr^2 wd u; and its Adam adds eps to sqrt(v)
before the bias correction (transformers' old AdamW), so it equals `scale_by_adam` at eps = 0.

State, sharding-friendly: `projectors` has the params' structure with one array per projected
leaf (r x n on the right side, sharing the param's axis 1; m x r on the left, sharing axis 0)
and None elsewhere; the inner state's leaf for a projected param is m x r (right) or r x n
(left), keeping the param's unprojected axis where it was. Every leaf is a plain array (or a
storage format's, from `tx`).

Example:
  tx = optax.chain(optimkit.galore(optimkit.scale_by_adam(), rank=128, update_proj_gap=200,
                                   scale=0.25),
                   optax.add_decayed_weights(0.01), optax.scale_by_learning_rate(1e-3))

Reference: Zhao et al., "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
Projection", ICML 2024, https://arxiv.org/abs/2403.03507; code: galore-torch 1.0.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import compute_dtype
from optimkit.transforms._util import increment

PROJ_TYPES = ("std", "reverse_std", "left", "right")


class GaLoreState(NamedTuple):
  """State of `galore`.

    count: steps taken; the projectors are refreshed when count % update_proj_gap == 0.
    projectors: per projected leaf its P (right: r x n, left: m x r); None for other leaves.
    inner_state: the wrapped optimizer's state, for the projected shapes.
  """

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  projectors: Any
  inner_state: Any


def _side(shape: tuple[int, ...], proj_type: str) -> str:
  if proj_type in ("left", "right"):
    return proj_type
  tall = shape[0] >= shape[1]
  return "right" if tall == (proj_type == "std") else "left"


def _projected_shape(shape: tuple[int, int], rank: int, side: str) -> tuple[int, int]:
  r = min(rank, *shape)
  return (shape[0], r) if side == "right" else (r, shape[1])


def _sign_fixed(vectors: jax.Array, axis: int) -> jax.Array:
  """Each singular vector (a column for axis=0, a row for axis=1) flipped so that its entry of
  largest magnitude is positive."""
  index = jnp.argmax(jnp.abs(vectors), axis=axis, keepdims=True)
  sign = jnp.sign(jnp.take_along_axis(vectors, index, axis=axis))
  return vectors * jnp.where(sign == 0, 1, sign)


def _projector(grad: jax.Array, rank: int, side: str) -> jax.Array:
  matrix = grad.astype(compute_dtype(grad))
  u, _, vh = jnp.linalg.svd(matrix, full_matrices=False)
  r = min(rank, *grad.shape)
  if side == "right":
    return _sign_fixed(vh[:r, :], axis=1)
  return _sign_fixed(u[:, :r], axis=0)


def galore(
    tx: optax.GradientTransformation,
    rank: int,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    *,
    proj_type: str = "std",
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """Runs `tx` on rank-`rank` projections of the matrix gradients (see the module doc).

  Args:
    tx: the optimizer to run in the projected space; a transform that needs no params
      (`scale_by_adam`, `scale_by_sign_momentum`, ...): params are not passed to it.
    rank: the rank r of the projection (an integer >= 1; min(rank, m, n) per matrix).
    update_proj_gap: recompute each projector from the gradient's SVD every this many steps
      (an integer >= 1). Default 200.
    scale: multiplies the projected-back updates, > 0 (the paper's alpha; 0.25 in its
      experiments). Default 1.0.
    proj_type: "std" (default, galore-torch's), "reverse_std" (optax.contrib.galore's side),
      "left" or "right".
    mask: which leaves to project: a tree of bools like the params, or a callable params ->
      such a tree; None (default) projects every 2-D leaf. Only 2-D leaves can be projected.

  Returns:
    An `optax.GradientTransformationExtraArgs` whose state is a `GaLoreState`.
  """
  owner = "galore"
  _checks.check_int_at_least(owner, "rank", rank, 1)
  _checks.check_int_at_least(owner, "update_proj_gap", update_proj_gap, 1)
  _checks.check_range(owner, "scale", scale, 0.0, low_inclusive=False)
  if proj_type not in PROJ_TYPES:
    raise ValueError(f"{owner}: proj_type must be one of {PROJ_TYPES}, got {proj_type!r}")
  inner = optax.with_extra_args_support(tx)

  def projected(params) -> Any:
    """A bool per leaf: whether it is projected. An empty matrix (a zero dimension) has no
    singular vectors and nothing to save: it goes through `tx` whole, selected or not."""
    if mask is None:
      return jax.tree.map(lambda p: p.ndim == 2 and p.size > 0, params)
    chosen = mask(params) if callable(mask) else mask
    def check(path, p, flag):
      if flag and p.ndim != 2:
        raise ValueError(f"{owner}: mask selects {jax.tree_util.keystr(path)} of shape "
                         f"{tuple(p.shape)}; only 2-D leaves can be projected")
      return bool(flag) and p.size > 0
    return jax.tree_util.tree_map_with_path(check, params, chosen)

  def low_rank_like(params, flags):
    return jax.tree.map(
        lambda p, flag: jnp.zeros(_projected_shape(p.shape, rank, _side(p.shape, proj_type)),
                                  compute_dtype(p)) if flag else p, params, flags)

  def init_fn(params):
    flags = projected(params)
    projectors = jax.tree.map(
        lambda p, flag: jnp.zeros(_projector_shape(p.shape), compute_dtype(p)) if flag else None,
        params, flags)
    return GaLoreState(count=jnp.zeros([], jnp.int32), projectors=projectors,
                       inner_state=inner.init(low_rank_like(params, flags)))

  def _projector_shape(shape):
    r = min(rank, *shape)
    return (r, shape[1]) if _side(shape, proj_type) == "right" else (shape[0], r)

  def update_fn(updates, state, params=None, **extra_args):
    del params  # tx works in the projected space
    flags = projected(updates)
    refresh = state.count % update_proj_gap == 0
    is_none = lambda x: x is None

    def new_projector(g, old, flag):
      if not flag:
        return None
      side = _side(g.shape, proj_type)
      return jax.lax.cond(refresh, lambda: _projector(g, rank, side).astype(old.dtype),
                          lambda: old)
    projectors = jax.tree.map(new_projector, updates, state.projectors, flags, is_leaf=is_none)

    def down(g, p, flag):
      if not flag:
        return g
      g32 = g.astype(p.dtype)  # in the compute dtype: tx's statistics are at least float32
      return g32 @ p.T if _side(g.shape, proj_type) == "right" else p.T @ g32
    low = jax.tree.map(down, updates, projectors, flags, is_leaf=is_none)
    low_updates, inner_state = inner.update(low, state.inner_state, None, **extra_args)

    def up(g, u, p, flag):
      if not flag:
        return u
      u32 = u.astype(p.dtype)
      full = u32 @ p if _side(g.shape, proj_type) == "right" else p @ u32
      return (scale * full).astype(g.dtype)
    new_updates = jax.tree.map(up, updates, low_updates, projectors, flags, is_leaf=is_none)
    return new_updates, GaLoreState(count=increment(state.count), projectors=projectors,
                                    inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
