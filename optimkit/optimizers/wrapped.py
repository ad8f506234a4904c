"""Optimizers made of a wrapper around a base optimizer's step: cautious AdamW and cautious Lion
(Liang et al. 2024), GaLore-AdamW (Zhao et al. 2024).

The wrappers themselves (`optimkit.cautious(tx)`, `optimkit.galore(tx, rank, ...)`) take any
transformation and live in `optimkit.transforms` (`cautious.py`, `galore.py`, with their
equations and references). The declarations here are the forms the papers train with, so that
they are in the registry like every other optimizer: selectable in `optimkit compare`, listed by
`optimkit memory`, and covered by the shared tests (storage formats, optax's wrappers,
donation, sharding, bad input). `optimkit.sam(tx, ...)` stays a wrapper only: its step takes a
second gradient (`grad_fn`), which no registry optimizer's `update` asks for.

Each body is the base optimizer's chain with the wrapper around its direction, so weight decay
and the learning rate stay outside, in the full space, as the papers' code applies them.
optax has none of the three.
"""

from __future__ import annotations

from typing import Any

import optax

from optimkit.optimizers._declare import (
  Mask,
  ScalarOrSchedule,
  mu_storage_of,
  optimizer,
  storage_of,
  structural,
)
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import uses_previous_ema
from optimkit.transforms.cautious import cautious
from optimkit.transforms.galore import galore
from optimkit.transforms.moments import scale_by_adam
from optimkit.transforms.sign_momentum import scale_by_sign_momentum

_POSITIVE = dict(low=0.0, low_inclusive=False)
_AT_LEAST_ONE = dict(low=1, integer=True)


@optimizer(family="adaptive", typical_lr=1e-3,
           reference="the paper's C-AdamW (Liang et al. 2024, Algorithm 2; NumPy transcription: "
                     "no package ships it)")
def cautious_adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: float = 1e-4,
    mask: Mask = None,
    *,
    nesterov: bool = False,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Cautious AdamW, C-AdamW (Liang, Chen, Liu & Liu 2024, "Cautious Optimizers: Improving
  Training with One Line of Code", arXiv:2411.16085).

      u_t   = m_hat / (sqrt(v_hat + eps_root) + eps)                (AdamW's direction)
      phi_t = 1[u_t * g_t > 0];   u_t <- u_t phi_t d / (nnz(phi_t) + 1)   (d: the leaf's size)
      w_t   = w_{t-1} - lr (u_t + weight_decay w_{t-1})

  The mask drops the coordinates where the momentum points against the fresh gradient and
  rescales the rest per leaf; the decay is applied unmasked, as in the paper's code.

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1, b2: moment decays in [0, 1). Defaults 0.9, 0.999.
    eps: added outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0.
    mu_dtype: optax's dtype of the first moment (see `adamw`).
    weight_decay: decoupled decay, >= 0. Default 1e-4 (as `adamw`).
    mask: the leaves that decay.
    nesterov: optax's Nesterov first moment. Default False.
    state_storage: storage format of both moments.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.cautious_adamw(3e-4, weight_decay=0.1, mask=optimkit.weight_decay_mask)

  Equals the paper's Algorithm 2 (tests/optimizers/test_wrapped.py, a NumPy transcription);
  `optimkit.cautious(optimkit.adamw(...))` instead masks the decay too.
  """
  mu_storage = mu_storage_of("cautious_adamw", mu_dtype)
  # Without nesterov the direction has the sign of m_t (its denominator is positive): the mask
  # reads m_t, and the direction, a division, is computed only in the masked update instead of
  # being written out for the count too (b1 = 0 keeps no m_t: it is g_t). Not when m_t is
  # stored rounded (the direction reads it unrounded), nor with nesterov (not m_t's sign).
  exact_mu = resolve(state_storage if mu_storage is None else mu_storage).name == "float32"
  signs = None
  if exact_mu and not nesterov:
    signs = lambda grads, state: grads if state.mu is None else state.mu
  return optax.chain(
      cautious(scale_by_adam(b1, b2, eps, eps_root, nesterov=nesterov,
                             state_storage=state_storage, mu_storage=mu_storage),
               direction=True, signs=signs),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


@optimizer(family="sign", typical_lr=1e-4,
           reference="pytorch-optimizer 4.1.0 Lion(cautious=True)",
           derive={"one_pass": lambda args: uses_previous_ema(args["b2"], args["one_pass"])})
def cautious_lion(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any = None,
    weight_decay: float = 1e-3,
    mask: Mask = None,
    *,
    one_pass: bool | None = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Cautious Lion (Liang et al. 2024; Lion: Chen et al. 2023).

      d_t   = sign(b1 m_{t-1} + (1 - b1) g_t);   m_t = b2 m_{t-1} + (1 - b2) g_t
      phi_t = 1[d_t * g_t > 0];   d_t <- d_t phi_t d / (nnz(phi_t) + 1)
      w_t   = w_{t-1} - lr (d_t + weight_decay w_{t-1})

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-4.
    b1: interpolation of the step, [0, 1). Default 0.9.
    b2: momentum decay, [0, 1). Default 0.99.
    mu_dtype: optax's dtype of the momentum (see `lion`).
    weight_decay: decoupled decay, >= 0, applied unmasked. Default 1e-3 (as `lion`).
    mask: the leaves that decay.
    one_pass: update the momentum in place in one pass (see `lion`). Default None: on when b2
      >= 0.5 as given at construction.
    state_storage: storage format of the momentum.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.cautious_lion(3e-4, weight_decay=0.1)

  Equals pytorch-optimizer's `Lion(cautious=True)`.
  """
  return optax.chain(
      cautious(scale_by_sign_momentum(
          b1, b2, state_storage=storage_of("cautious_lion", "mu_dtype", mu_dtype, state_storage),
          one_pass=one_pass),
          direction=True),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


@optimizer(family="low_rank", typical_lr=1e-3,
           reference="galore-torch 1.0 GaLoreAdamW (the authors')",
           ranges={"scale": _POSITIVE, "rank": _AT_LEAST_ONE, "update_proj_gap": _AT_LEAST_ONE})
def galore_adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: Mask = None,
    *,
    rank: int = structural(128),
    update_proj_gap: int = structural(200),
    scale: float = 0.25,
    proj_type: str = "std",
    projection_mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """GaLore-AdamW (Zhao et al. 2024, "GaLore: Memory-Efficient LLM Training by Gradient
  Low-Rank Projection", ICML 2024): Adam on rank-r projections of the matrix gradients.

      every update_proj_gap steps:  P from the top-r singular vectors of G_t
      u_t = scale * back(Adam(project(g_t)))                        (see `optimkit.galore`)
      w_t = w_{t-1} - lr (u_t + weight_decay w_{t-1})

  Adam's two moments of an m x n matrix cost 2 r max(m, n) numbers instead of 2 m n; other
  leaves (vectors, scalars, stacks) get plain AdamW.

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1, b2: moment decays in [0, 1). Defaults 0.9, 0.999.
    eps: added to Adam's sqrt(v_hat), >= 0. Default 1e-8.
    weight_decay: decoupled decay in the full space, >= 0. Default 0 (galore-torch's).
    mask: the leaves that decay.
    rank: the projection rank r, an integer >= 1 (min(r, m, n) per matrix). Default 128.
    update_proj_gap: steps between projector refreshes (an SVD of the gradient), an integer
      >= 1. Default 200.
    scale: multiplies the projected-back update, > 0 (the paper's alpha). Default 0.25.
    proj_type: "std" (default), "reverse_std", "left" or "right" (see `optimkit.galore`).
    projection_mask: which 2-D leaves are projected (tree of bools or a callable); None: all.
    state_storage: storage format of Adam's moments (in the projected space).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.galore_adamw(1e-3, rank=64, update_proj_gap=200, scale=0.25)

  Where galore-torch differs: its Adam adds eps to sqrt(v) before the bias correction, and its
  weight decay multiplies the params after the step, (w - lr u)(1 - lr wd), a difference of
  lr^2 wd u per step; with eps = 0 and no decay the two are equal
  (tests/optimizers/test_wrapped.py).
  """
  return optax.chain(
      galore(scale_by_adam(b1, b2, eps, state_storage=state_storage), rank, update_proj_gap,
             scale, proj_type=proj_type, mask=projection_mask),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))
