"""Cautious masking: keep only the update coordinates that move along the descent direction
of the current gradient (Liang, Chen, Liu & Liu 2024, "Cautious Optimizers: Improving Training
with One Line of Code", arXiv:2411.16085).

A momentum optimizer's update can point uphill where the momentum and the fresh gradient
disagree. The cautious form zeroes those coordinates and rescales the rest, per leaf, so that
the update keeps its overall size:

    phi_t = 1[u_t * g_t > 0]                   (u_t: the update as a direction, + = along g)
    u_t  <- u_t * phi_t * (d / (nnz(phi_t) + 1))    d = the leaf's number of elements

(the +1 of the paper's code avoids a division by zero; it also means a fully agreeing leaf is
scaled by d / (d + 1), and a scalar leaf by 1/2, exactly as in the references).

`cautious(tx)` wraps any transformation. Its sign convention is the one question: a full
optimizer (`optimkit.adamw(...)`, `optax.sgd(...)`) returns updates that are *added* to the
params, pointing against the gradient (`direction=False`, the default); a primitive before the
learning rate (`scale_by_adam()`, `scale_by_sign_momentum()`) returns a direction pointing
along it (`direction=True`). Wrapping a full optimizer masks everything it adds, weight decay
included; the paper's C-AdamW and pytorch-optimizer's cautious variants mask the momentum step
only and apply the decay unmasked, which is

    optax.chain(cautious(scale_by_adam(), direction=True), optax.add_decayed_weights(wd),
                optax.scale_by_learning_rate(lr))

Checked against pytorch-optimizer 4.1.0's cautious variants (`Lion(cautious=True)`,
`MARS(cautious=True)`), both as a wrapper of the full optimizer (no decay) and of the
direction (with decay): tests/transforms/test_cautious.py. optax has no cautious wrapper.
The normalisation differs between implementations: the paper's code and pytorch-optimizer
divide by nnz + 1 (followed here); some later ones multiply by 1 / max(mean(phi), 1e-3).

Example:
    >>> import optimkit
    >>> tx = optimkit.cautious(optimkit.lion(1e-4, weight_decay=0.0))
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from optimkit.state.storage import compute_dtype
from optimkit.transforms._util import leaf_scalars


def cautious_mask(updates: Any, grads: Any, direction: bool = False, signs: Any = None) -> Any:
  """`updates` with the coordinates that disagree with `grads` zeroed and the rest rescaled
  by d / (nnz + 1), per leaf (see the module docstring for `direction`). `signs`, a tree shaped
  like `updates` (default: `updates`), is what is tested against `grads`: a value with the
  sign of each update, cheaper to compute than the update itself (see `cautious`)."""

  def mask_leaf(u, g, s):
    dtype = compute_dtype(u)
    product = s.astype(dtype) * g.astype(dtype)
    keep = ((product > 0) if direction else (product < 0)).astype(dtype)
    if signs is None:
      return (u.astype(dtype) * keep * (u.size / (jnp.sum(keep) + 1.0))).astype(u.dtype)
    # With `signs`, nnz as the sum of min((x + |x|) big big, 1), x = +-product: 1 exactly where
    # x > 0 (big^2 >= 1 / the smallest subnormal), 0 elsewhere. XLA's CPU reduction fuses
    # arithmetic but not a comparison, whose mask it writes out. The product is its own
    # expression (g * 1, exact), 1 and big the leaf's own (`leaf_scalars`): shared, the product
    # or a broadcast constant is written out. (Without `signs`, the update is written out anyway
    # and this count measured slower than the mask's: cautious_lion 3.7x AdamW's step, not 3.3x.)
    info = jnp.finfo(dtype)
    one, big = leaf_scalars(g, jnp.ones((), dtype),
                            jnp.asarray(2.0 ** ((info.nmant - info.minexp + 1) // 2), dtype))
    agreement = s.astype(dtype) * (g.astype(dtype) * one)
    agreement = agreement if direction else -agreement
    nnz = jnp.sum(jnp.minimum((agreement + jnp.abs(agreement)) * big * big, one))
    return (u.astype(dtype) * keep * (u.size / (nnz + 1.0))).astype(u.dtype)

  return jax.tree.map(mask_leaf, updates, grads, updates if signs is None else signs)


def cautious(tx: optax.GradientTransformation, *, direction: bool = False,
             signs: Callable[[Any, Any], Any] | None = None
             ) -> optax.GradientTransformationExtraArgs:
  """`tx` with its update masked to the coordinates that agree with the gradient's descent.

  Args:
    tx: any gradient transformation; its state is the wrapper's state, unchanged.
    direction: False (default) when `tx` returns updates to add to the params (a full
      optimizer: descent means u * g < 0); True when it returns a direction that points along
      the gradient (a primitive before the learning rate: u * g > 0).
    signs: (grads, new state of `tx`) -> a tree with the signs of `tx`'s updates (where they
      are not 0), for the mask and nnz: a value cheaper than the update (Adam's m_hat /
      (sqrt(v_hat) + eps): the first moment m), or the update computed again. Read by nnz
      and by the masked update, the update is written out (XLA does not compute a division
      twice, nor a value a reduction reads); from `signs`, each reads its own expression. The
      same mask unless a product u * g or s * g underflows to 0. Default None: the updates.

  Returns:
    A transformation with `tx`'s state; extra arguments of `update` are passed on to `tx`.
  """
  inner = optax.with_extra_args_support(tx)

  def update_fn(updates, state, params=None, **extra_args):
    new_updates, state = inner.update(updates, state, params, **extra_args)
    agreeing = None if signs is None else signs(updates, state)
    return cautious_mask(new_updates, updates, direction, agreeing), state

  return optax.GradientTransformationExtraArgs(inner.init, update_fn)
