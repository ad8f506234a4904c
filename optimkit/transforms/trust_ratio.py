"""Layer-wise trust ratio: the common step of LAMB (You et al. 2019, "Large Batch Optimization
for Deep Learning: Training BERT in 76 minutes", arXiv:1904.00962, Algorithm 2) and LARS
(You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks",
arXiv:1708.03888).

    ratio = trust_coefficient * ||w|| / (||u|| + eps)    per leaf (or per slice of a stack)
    ratio = 1                                            where ||w|| = 0 or ||u|| = 0
    u    <- ratio * u

Norms are floored at `min_norm`. What optax lacks: with scan-stacked layers one leaf of shape
(L, ...) holds L layers, and the paper's ratio is per layer; `stack_dims` gives the number of
leading dimensions that index layers, so each slice gets its own ratio (and equals what the
unstacked model would get). A `mask` selects the leaves that get a ratio at all (the paper
excludes biases and normalisation scales in LAMB's public BERT code).

`scale_by_lars` is LARS's own local learning rate, whose denominator is ||g|| + wd ||w|| as in
the paper's Algorithm 1 (optax.lars instead uses ||g + wd w||, which differs whenever g and w
are not aligned; we follow the paper and pytorch-optimizer's LARS).

Checked against optax.lamb (LAMB), pytorch-optimizer's LARS, and for stacks against the
unstacked model.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.transforms._util import option_tree

StackDims = Union[int, Any, Callable[[Any], Any]]


class TrustRatioState(NamedTuple):
  """`scale_by_trust_ratio` keeps no state."""


def _norm(x: jax.Array, stack: int, min_norm: float) -> jax.Array:
  axes = tuple(range(stack, x.ndim))
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))
  return jnp.maximum(norm, min_norm)


def scale_by_trust_ratio(
    min_norm: float = 0.0,
    trust_coefficient: float = 1.0,
    eps: float = 0.0,
    stack_dims: StackDims = 0,
    mask: Any = None,
) -> optax.GradientTransformation:
  """Scales each leaf's update by trust_coefficient * ||w|| / (||u|| + eps).

  Args:
    min_norm: floor on both norms, >= 0. Default 0.
    trust_coefficient: eta of LARS, > 0. Default 1 (LAMB).
    eps: added to the update norm, >= 0. Default 0.
    stack_dims: number of leading dims that index stacked layers: an int for every leaf, or a
      tree of ints shaped like the params, or a callable params -> such a tree. Default 0.
    mask: tree of bools (or callable params -> tree) choosing the leaves that get a ratio;
      the others pass through unchanged. Default: all leaves.
  """
  owner = "scale_by_trust_ratio"
  _checks.check_non_negative(owner, "min_norm", min_norm)
  _checks.check_range(owner, "trust_coefficient", trust_coefficient, 0.0, low_inclusive=False)
  _checks.check_non_negative(owner, "eps", eps)
  if isinstance(stack_dims, int):
    _checks.check_int_at_least(owner, "stack_dims", stack_dims, 0)

  def init_fn(params):
    del params
    return TrustRatioState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(f"{owner}: the trust ratio needs params in update().")
    stacks = option_tree(stack_dims, params, 0)

    scale = lambda u, w, stack: (u * _ratio(owner, u, w, stack, min_norm, trust_coefficient,
                                            eps)).astype(u.dtype)
    return jax.tree.map(scale, updates, params, stacks), state

  transform = optax.GradientTransformation(init_fn, update_fn)
  if mask is not None:
    return optax.masked(transform, mask)
  return transform


def _ratio(owner: str, u: jax.Array, w: jax.Array, stack: int, min_norm: float,
           trust_coefficient: float, eps: float) -> jax.Array:
  """trust_coefficient ||w|| / (||u|| + eps) per leaf (per slice of a stack), 1 where a norm
  is 0; shaped to broadcast against the leaf."""
  if stack > 0 and u.ndim < stack:
    raise ValueError(
        f"{owner}: stack_dims={stack} for a leaf of rank {u.ndim}; it must be <= the rank."
    )
  w_norm = _norm(w, stack, min_norm)
  u_norm = _norm(u, stack, min_norm)
  ratio = trust_coefficient * w_norm / (u_norm + eps)
  return jnp.where((w_norm == 0.0) | (u_norm == 0.0), 1.0, ratio)


def trust_ratio_chain(
    before: Sequence[optax.GradientTransformation],
    after: Sequence[optax.GradientTransformation],
    again: Callable[[Any, Any, Any], Any],
    *,
    min_norm: float = 0.0,
    trust_coefficient: float = 1.0,
    eps: float = 0.0,
    stack_dims: StackDims = 0,
    mask: Any = None,
) -> optax.GradientTransformation:
  """`optax.chain(*before, scale_by_trust_ratio(...), *after)`, with the same state and the
  same updates up to rounding, in fewer passes over memory.

  ||u|| has to be complete before any element of the scaled u is written, so u is read twice:
  by the norms and by the update. XLA's CPU backend does not duplicate the computation of u
  (divisions and roots count as expensive) into both readers: it writes u out as a
  params-sized temporary, a new buffer every step, and reads it back. Here the norms are taken
  of u computed a second time, by `again(grads, new_state, params)` from the state `before`
  has just written (LAMB: Adam's ratio from the new moments), with the hyperparameters it
  reads made each leaf's own (`leaf_scalars`). XLA then sees two values, fuses each
  computation of u into its one reader, and writes no temporary: the norms re-read the new
  state and the params straight from their buffers. (With shared scalars the two computations
  are one value again, and a broadcast of a scalar to a shape several leaves share, the layers
  of a model, would be computed once for all of their norms, so written out at full size.)

  Args:
    before: the transforms that compute the update u (LAMB: Adam's ratio, the weight decay).
    after: the transforms applied to the scaled update (the learning rate).
    again: (grads, new state of `before` (a tuple), params) -> u, as `before` computed it.
    min_norm, trust_coefficient, eps, stack_dims, mask: as `scale_by_trust_ratio`.
  """
  owner = "trust_ratio_chain"
  trust = scale_by_trust_ratio(min_norm, trust_coefficient, eps, stack_dims, mask)
  head, tail = optax.chain(*before), optax.chain(*after)
  n = len(before)

  def init_fn(params):
    return optax.chain(*before, trust, *after).init(params)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(f"{owner}: the trust ratio needs params in update().")
    grads = updates
    updates, new_head = head.update(grads, tuple(state[:n]), params)
    # The same u again, for the norms only (see above).
    u_again = again(grads, tuple(new_head), params)
    trusts = option_tree(mask, params, True)
    stacks = option_tree(stack_dims, params, 0)

    def scale(u, u_for_norm, w, use, stack):
      if not use:
        return u
      ratio = _ratio(owner, u_for_norm, w, stack, min_norm, trust_coefficient, eps)
      return (u * ratio).astype(u.dtype)

    updates = jax.tree.map(scale, updates, u_again, params, trusts, stacks)
    updates, new_tail = tail.update(updates, tuple(state[n + 1:]), params)
    return updates, (*new_head, state[n], *new_tail)

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_lars(
    trust_coefficient: float = 0.001,
    weight_decay: float = 0.0,
    eps: float = 0.0,
    mask: Any = None,
    trust_ratio_mask: Any = None,
    stack_dims: StackDims = 0,
) -> optax.GradientTransformation:
  """LARS's locally scaled gradient (You, Gitman & Ginsburg 2017, Algorithm 1):

      lambda = trust_coefficient * ||w|| / (||g|| + wd * ||w|| + eps)   (1 if a norm is 0)
      u      = lambda * (g + wd * w)

  Args:
    trust_coefficient: eta, > 0. Default 0.001.
    weight_decay: beta, >= 0, applied where `mask` is True. Default 0.
    eps: added to the denominator, >= 0. Default 0.
    mask: tree of bools (or callable) for the leaves that get weight decay; default all.
    trust_ratio_mask: the leaves that get the local rate; default all. (The usual practice is to
      exclude biases and norm scales from both, e.g. `optimkit.weight_decay_mask`.)
    stack_dims: leading stack dims with one rate per slice, as in `scale_by_trust_ratio`.
  """
  owner = "scale_by_lars"
  _checks.check_range(owner, "trust_coefficient", trust_coefficient, 0.0, low_inclusive=False)
  _checks.check_non_negative(owner, "weight_decay", weight_decay)
  _checks.check_non_negative(owner, "eps", eps)

  def init_fn(params):
    del params
    return TrustRatioState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(f"{owner}: the local learning rate needs params in update().")
    decays = option_tree(mask, params, True)
    trusts = option_tree(trust_ratio_mask, params, True)
    stacks = option_tree(stack_dims, params, 0)

    def scale(g, w, decay, trust, stack):
      beta = weight_decay if decay else 0.0
      direction = g + beta * w
      if not trust:
        return direction.astype(g.dtype)
      w_norm, g_norm = _norm(w, stack, 0.0), _norm(g, stack, 0.0)
      denominator = g_norm + beta * w_norm + eps
      rate = jnp.where((w_norm > 0) & (denominator > 0),
                       trust_coefficient * w_norm / jnp.where(denominator > 0, denominator, 1.0),
                       1.0)
      return (rate * direction).astype(g.dtype)

    return jax.tree.map(scale, updates, params, decays, trusts, stacks), state

  return optax.GradientTransformation(init_fn, update_fn)
