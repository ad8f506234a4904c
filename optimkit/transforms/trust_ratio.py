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

from typing import Any, Callable, NamedTuple, Union

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

    def scale(u, w, stack):
      if stack > 0 and u.ndim < stack:
        raise ValueError(
            f"{owner}: stack_dims={stack} for a leaf of rank {u.ndim}; it must be <= the rank."
        )
      w_norm = _norm(w, stack, min_norm)
      u_norm = _norm(u, stack, min_norm)
      ratio = trust_coefficient * w_norm / (u_norm + eps)
      ratio = jnp.where((w_norm == 0.0) | (u_norm == 0.0), 1.0, ratio)
      return (u * ratio).astype(u.dtype)

    return jax.tree.map(scale, updates, params, stacks), state

  transform = optax.GradientTransformation(init_fn, update_fn)
  if mask is not None:
    return optax.masked(transform, mask)
  return transform


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
