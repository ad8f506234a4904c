"""Recent optimizers the field reaches for: ADOPT, AdEMAMix, Simplified AdEMAMix, MARS, CAME.

Each is one declaration whose body is its chain of `optimkit.transforms` primitives; the update
equations, the references each was checked against and every difference from optax and from the
authors' code are in the primitive's module (`transforms/adopt.py`, `ademamix.py`, `mars.py`,
`came.py`). Those optax has (`optax.contrib.adopt`, `ademamix`, `simplified_ademamix`) take
optax's arguments under optax's names in optax's positional order, and with optax's defaults
step exactly as optax does; optimkit's own arguments are keyword-only after them. The wrappers
of the same family, `optimkit.cautious(tx)` and `optimkit.sam(tx, ...)`, take an optimizer and
live in `optimkit.transforms` (`cautious.py`, `sam.py`).

One module rather than one per family: these five come from the same wave of work (2023-2024),
share no state layout with the older families, and each is one short chain.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from optimkit.optimizers._declare import (
  Mask,
  ScalarOrSchedule,
  mu_storage_of,
  optimizer,
)
from optimkit.state.storage import StorageLike
from optimkit.transforms.ademamix import scale_by_ademamix, scale_by_simplified_ademamix
from optimkit.transforms.adopt import add_decayed_weights_after_first_step, scale_by_adopt
from optimkit.transforms.came import scale_by_came
from optimkit.transforms.mars import scale_by_mars
from optimkit.transforms.moments import scale_by_adam

_NON_NEGATIVE = dict(low=0.0)
_POSITIVE = dict(low=0.0, low_inclusive=False)
_BETA = dict(low=0.0, high=1.0, high_inclusive=False)



def _clip_value(count: jax.Array) -> jax.Array:
  return count ** 0.25


# ----------------------------------------------------------------------------------------------
# ADOPT.


@optimizer(family="adaptive", typical_lr=1e-3, optax="contrib.adopt",
           reference="torch-adopt 0.1.0 ADOPT (the authors'); optax.contrib.adopt")
def adopt(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = _clip_value,
    weight_decay: float = 0.0,
    decouple: bool = False,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """ADOPT (Taniguchi et al. 2024): Adam normalised by the previous second moment, momentum
  after the normalisation, so that it converges for any b2.

      t = 0:   v_0 = g_0^2 and no step
      t >= 1:  m_t = b1 m_{t-1} + (1 - b1) clip(g_t / max(sqrt(v_{t-1}), eps), t^(1/4))
               w_t = w_{t-1} - lr m_t;   v_t = b2 v_{t-1} + (1 - b2) g_t^2

  (details in `optimkit.transforms.adopt`).

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3 (the authors'; optax has none).
    b1: momentum decay, [0, 1). Default 0.9.
    b2: second-moment decay, [0, 1). Default 0.9999.
    eps: floor of sqrt(v), >= 0. Default 1e-6.
    mu_dtype: optax's dtype of the momentum (bfloat16: optimkit's bfloat16 format). Default
      None: as `state_storage`.
    nesterov: optax's Nesterov form of the momentum. Default False.
    use_clipping: clip the normalised gradient to [-c_t, c_t]. Default True.
    clip_value_fn: c_t from the step count (1 at the second step). Default t^0.25. Under
      `optax.inject_hyperparams` it is scheduled like any callable (evaluated at the same
      count), which gives the same c_t.
    weight_decay: >= 0. Default 0 (the authors'; optax has no weight decay).
    decouple: False (default, torch-adopt's): L2 decay added to the gradient before the
      statistics; True: AdamW-style decoupled decay, lr * weight_decay * w, applied from the
      second step on, as torch-adopt does (the first step only initialises v).
    mask: tree of bools (or a callable params -> tree) of the leaves that decay.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.adopt(1e-3, weight_decay=0.01, decouple=True)

  Equals torch-adopt's ADOPT (with weight decay either way) and optax.contrib.adopt (no decay).
  """
  direction = scale_by_adopt(b1, b2, eps, nesterov=nesterov, use_clipping=use_clipping,
                             clip_value_fn=clip_value_fn, state_storage=state_storage,
                             mu_storage=mu_storage_of("adopt", mu_dtype))
  if decouple:
    return optax.chain(direction, add_decayed_weights_after_first_step(weight_decay, mask),
                       optax.scale_by_learning_rate(learning_rate))
  return optax.chain(optax.add_decayed_weights(weight_decay, mask), direction,
                     optax.scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------------------------
# AdEMAMix and Simplified AdEMAMix.


@optimizer(family="adaptive", typical_lr=1e-3, optax="contrib.ademamix",
           reference="pytorch-optimizer 4.1.0 AdEMAMix; optax.contrib.ademamix",
           ranges={"alpha": _NON_NEGATIVE, "alpha_warmup": _POSITIVE,
                   "b3_warmup": _POSITIVE})
def ademamix(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    mask: Mask = None,
    *,
    alpha_warmup: float | None = None,
    b3_warmup: float | None = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """AdEMAMix (Pagliardini, Ablin & Grangier 2024): AdamW plus a slow EMA of the gradient.

      w_t = w_{t-1} - lr ((m1_hat + alpha_t m2_t) / (sqrt(nu_hat + eps_root) + eps) + wd w)

  m1 the bias-corrected fast EMA (b1), m2 the slow EMA (b3_t, not bias-corrected), with the
  paper's warmups alpha_t = min(t alpha / T_alpha, alpha) and b3_t rising from b1 to b3 with a
  linearly growing half-life (details in `optimkit.transforms.ademamix`).

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1: fast EMA decay, [0, 1). Default 0.9.
    b2: second-moment decay, [0, 1). Default 0.999.
    b3: slow EMA decay, [0, 1), or a schedule of the step count. Default 0.9999.
    alpha: slow EMA weight, >= 0, or a schedule. Default 5.
    eps: added outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0.
    mu_dtype: optax's dtype of the first moments m1 and m2 (optax applies it to nu as well).
    weight_decay: decoupled decay, >= 0. Default 0.
    mask: tree of bools (or a callable params -> tree) of the leaves that decay.
    alpha_warmup: T_alpha of the paper, > 0, or None (default) for no warmup. May be traced.
    b3_warmup: T_b3 of the paper, > 0, or None (default). The paper (and pytorch-optimizer's
      `t_alpha_beta3`) set both to the number of training steps.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.ademamix(1e-3, alpha=8.0, weight_decay=0.1, alpha_warmup=100_000,
    ...                        b3_warmup=100_000)

  Equals optax.contrib.ademamix (warmups off, schedules at the step count before the update)
  and pytorch-optimizer's AdEMAMix (warmups at the paper's t = 1, 2, ...).
  """
  return optax.chain(
      scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, alpha_warmup=alpha_warmup,
                        b3_warmup=b3_warmup, state_storage=state_storage,
                        mu_storage=mu_storage_of("ademamix", mu_dtype)),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


@optimizer(family="adaptive", typical_lr=1e-4, optax="contrib.simplified_ademamix",
           reference="the authors' code (DepenM/Simplified-AdEMAMix, NumPy transcription); "
                     "optax.contrib.simplified_ademamix",
           ranges={"alpha": _NON_NEGATIVE, "b1_warmup": _POSITIVE, "min_b1": _BETA})
def simplified_ademamix(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: Mask = None,
    *,
    b1_warmup: float | None = None,
    min_b1: float = 0.9,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Simplified AdEMAMix (Morwani, Vyas, Zhang & Kakade 2025): one momentum, accumulated as a
  sum, plus the current gradient.

      m_t = b1_t m_{t-1} + g_t
      w_t = w_{t-1} - lr ((m_t + alpha_t g_t) / (sqrt(nu_hat + eps_root) + eps) + wd w)

  (details in `optimkit.transforms.ademamix`). The momentum sum is ~1/(1 - b1) times an EMA, so
  the learning rate is far below Adam's: the authors suggest lr_Adam sqrt((1 - min_b1)(1 - b1))
  (1e-4 for lr_Adam = 3e-3 and the defaults) and use 1e-4 in their example, the default here
  (optax has none).

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-4 (the authors' example).
    b1: momentum decay, [0, 1). Default 0.99.
    b2: second-moment decay, [0, 1). Default 0.95.
    alpha: weight of the current gradient, >= 0, or a schedule. Default 0.
    eps: added outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0.
    weight_decay: decoupled decay, >= 0. Default 0.
    mask: tree of bools (or a callable params -> tree) of the leaves that decay.
    b1_warmup: steps over which b1 rises from `min_b1` (half-life linear), > 0, or None
      (default). The authors set it to the number of training steps.
    min_b1: where the b1 warmup starts, [0, 1). Default 0.9.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.simplified_ademamix(1e-4, alpha=10.0, b1_warmup=50_000)

  Equals optax.contrib.simplified_ademamix (no b1 warmup) and the authors' algorithm.
  """
  return optax.chain(
      scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root, b1_warmup=b1_warmup,
                                   min_b1=min_b1, state_storage=state_storage),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------------------------
# MARS.


@optimizer(family="adaptive", typical_lr=3e-3,
           reference="pytorch-optimizer 4.1.0 MARS; the paper's Algorithm as the authors' code "
                     "(AGI-Arena/MARS) runs it (NumPy transcription)",
           ranges={"gamma": _NON_NEGATIVE, "lr_1d_factor": _NON_NEGATIVE, "b1_1d": _BETA,
                   "b2_1d": _BETA, "weight_decay_1d": _NON_NEGATIVE})
def mars(
    learning_rate: ScalarOrSchedule = 3e-3,
    b1: float = 0.95,
    b2: float = 0.99,
    gamma: ScalarOrSchedule = 0.025,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: Mask = None,
    *,
    mars_type: str = "adamw",
    optimize_1d: bool = False,
    mars_mask: Mask = None,
    lr_1d_factor: float = 1.0,
    b1_1d: float = 0.9,
    b2_1d: float = 0.95,
    weight_decay_1d: float = 0.1,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """MARS (Yuan et al. 2024): AdamW or Lion on a variance-reduced, norm-clipped gradient

      c_t = g_t + gamma (b1 / (1 - b1)) (g_t - g_{t-1}),   c~_t = c_t / max(1, ||c_t||)

  on the matrices, and plain AdamW on the other leaves, as the authors train (details in
  `optimkit.transforms.mars`):

      matrices:  w <- w - lr (direction(c~) + weight_decay w)
      the rest:  w <- w - lr lr_1d_factor (adamw(g; b1_1d, b2_1d) + weight_decay_1d w)

  Args:
    learning_rate: a float >= 0 or a schedule. Default 3e-3 (the authors').
    b1: momentum decay, [0, 1). Default 0.95.
    b2: second-moment decay ("adamw"), [0, 1). Default 0.99.
    gamma: correction strength, >= 0, or a schedule. Default 0.025.
    eps: added to the bias-corrected root, >= 0. Default 1e-8.
    weight_decay: decoupled decay of the MARS leaves, >= 0. Default 0.
    mask: tree of bools (or a callable params -> tree) of the leaves that decay (either group).
    mars_type: "adamw" (default) or "lion" (sign of the momentum).
    optimize_1d: MARS on every leaf, vectors and scalars included. Default False.
    mars_mask: which leaves MARS updates (True) and which AdamW, as a tree of bools or a
      callable params -> tree; None (default): leaves of rank >= 2, or every leaf with
      `optimize_1d`, as pytorch-optimizer does. The authors' code takes exactly-2-D leaves only:
      `mars_mask=lambda p: jax.tree.map(lambda x: x.ndim == 2, p)`.
    lr_1d_factor: the other leaves' learning rate over `learning_rate` (the references'
      lr_1d / lr), >= 0. Default 1.
    b1_1d, b2_1d: the other leaves' AdamW betas, [0, 1). Defaults 0.9, 0.95.
    weight_decay_1d: the other leaves' decoupled decay, >= 0. Default 0.1 (the references').
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.mars(3e-3, weight_decay=0.1, mask=optimkit.weight_decay_mask)

  Equals the paper's algorithm as the authors run it (with `mars_mask` for their 2-D rule) and
  pytorch-optimizer's MARS to 4e-7 (it adds eps before the bias correction). optax has no MARS.
  """

  def labels(params):
    if mars_mask is None:
      chosen = jax.tree.map(lambda p: optimize_1d or p.ndim >= 2, params)
    else:
      chosen = mars_mask(params) if callable(mars_mask) else mars_mask
    return jax.tree.map(lambda use: "mars" if use else "adamw", chosen)

  return optax.partition({
      "mars": optax.chain(
          scale_by_mars(b1, b2, gamma, eps, mars_type=mars_type, state_storage=state_storage),
          optax.add_decayed_weights(weight_decay, mask),
          optax.scale_by_learning_rate(learning_rate)),
      "adamw": optax.chain(
          scale_by_adam(b1_1d, b2_1d, eps, state_storage=state_storage),
          optax.add_decayed_weights(weight_decay_1d, mask),
          # learning_rate is an array here (the decorator passes a schedule's value).
          optax.scale_by_learning_rate(learning_rate * lr_1d_factor)),  # type: ignore[operator]
  }, labels)


# ----------------------------------------------------------------------------------------------
# CAME.


@optimizer(family="factored", typical_lr=2e-4,
           reference="came-pytorch 0.1.3 CAME (the authors')",
           ranges={"eps1": _NON_NEGATIVE, "eps2": _NON_NEGATIVE})
def came(
    learning_rate: ScalarOrSchedule = 2e-4,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: float = 0.9999,
    eps1: float = 1e-30,
    eps2: float = 1e-16,
    clipping_threshold: float = 1.0,
    weight_decay: float = 0.0,
    mask: Mask = None,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """CAME (Luo et al. 2023): Adafactor's factored second moment and update clipping, with a
  momentum whose step is divided by the factored root of its instability (u - m)^2.

      w_t = w_{t-1} - lr (m_t / sqrt(S_t) + weight_decay w_{t-1})

  (details in `optimkit.transforms.came`; vectors and scalars step along m_t).

  Args:
    learning_rate: a float >= 0 or a schedule. Default 2e-4 (the paper's).
    b1: momentum decay, [0, 1). Default 0.9.
    b2: squared-gradient statistics decay, [0, 1). Default 0.999.
    b3: instability statistics decay, [0, 1). Default 0.9999.
    eps1: added to g^2, >= 0. Default 1e-30.
    eps2: added to the instability, >= 0. Default 1e-16.
    clipping_threshold: largest RMS of the normalised update, > 0. Default 1.
    weight_decay: decoupled decay, >= 0. Default 0.
    mask: tree of bools (or a callable params -> tree) of the leaves that decay.
    state_storage: how the momentum (and unfactored second moments) are stored; the factored
      row/column statistics stay float32.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.came(2e-4, weight_decay=0.01)

  Equals came-pytorch's CAME (whose decay is decoupled, lr-scaled). optax has no CAME.
  """
  return optax.chain(
      scale_by_came(b1, b2, b3, eps1, eps2, clipping_threshold, state_storage=state_storage),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))
