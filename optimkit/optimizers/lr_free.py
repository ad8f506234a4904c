"""Learning-rate-free optimizers: Prodigy and D-Adaptation AdamW. `learning_rate` multiplies the
estimate of D they learn while training (1.0 by default; a schedule such as linear decay to 0 on
top is what the authors recommend).

Each is one declaration whose body is its chain; the update equations, the references and every
difference from optax and from the authors' code are in `optimkit.transforms.lr_free`. Both take
optax.contrib's arguments under its names in its positional order; optimkit's own arguments are
keyword-only after them. The defaults follow the authors' packages (prodigyopt, dadaptation),
which do not bias-correct: `bias_correction=True` gives optax.contrib's trajectory.
"""

from __future__ import annotations

import optax

from optimkit.optimizers._declare import ScalarOrSchedule, optimizer
from optimkit.state.storage import StorageLike
from optimkit.transforms.lr_free import scale_by_dadapt_adam, scale_by_prodigy

_POSITIVE = dict(low=0.0, low_inclusive=False)
_BETA = dict(low=0.0, high=1.0, high_inclusive=False)
_GROWTH = dict(low=1.0)


def _decay_first(weight_decay, decouple: bool) -> optax.GradientTransformation:
  """Coupled (L2) decay is added to the gradient before the statistics; decoupled decay is the
  transform's own, scaled by d lr."""
  return optax.add_decayed_weights(0.0 if decouple else weight_decay)


@optimizer(family="lr_free", typical_lr=1.0, optax="contrib.prodigy",
           optax_mode={"bias_correction": True},
           reference="prodigyopt 1.1.2 Prodigy (the authors'); optax.contrib.prodigy",
           ranges={"eps": _POSITIVE, "beta3": _BETA, "estim_lr0": _POSITIVE,
                   "estim_lr_coef": _POSITIVE, "growth_rate": _GROWTH})
def prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    beta3: float | None = None,
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    estim_lr_coef: float = 1.0,
    weight_decay: float = 0.0,
    safeguard_warmup: bool = False,
    *,
    bias_correction: bool = False,
    growth_rate: float | None = None,
    decouple: bool = True,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Prodigy (Mishchenko & Defazio 2024): Adam stepped by d lr, with d a running estimate of the
  distance to the solution that weights recent gradients more than D-Adaptation does.

      m_t = b1 m + (1 - b1) d g;   v_t = b2 v + (1 - b2) d^2 g^2
      d_{t+1} = max(d_t, d_coef r_t / sum|s_t|)   (r, s: weighted sums of <g, x_0 - x> and g)
      x_{t+1} = x_t - d lr (m_t / (sqrt(v_t) + d_{t+1} eps) + weight_decay x_t)

  (in full, with growth_rate and safeguard_warmup, in `optimkit.transforms.lr_free`).

  Args:
    learning_rate: multiplier of the estimate, >= 0, or a schedule. Default 1.0.
    betas: (b1, b2), each in [0, 1). Default (0.9, 0.999).
    beta3: decay of the estimate's sums, [0, 1); None (default): sqrt(b2).
    eps: > 0, scaled by d. Default 1e-8.
    estim_lr0: d0, the initial estimate, > 0. Default 1e-6.
    estim_lr_coef: d_coef, multiplies each estimate, > 0. Default 1.0.
    weight_decay: >= 0. Default 0.
    safeguard_warmup: leave lr out of the estimate's denominator (for warmups). Default False.
    bias_correction: Adam's bias correction in d lr; True is optax.contrib.prodigy's trajectory.
      Default False (the authors').
    growth_rate: d grows by at most this factor a step, >= 1; None (default) is unbounded (the
      authors' inf; an inf would sit in the state as a hyperparameter).
    decouple: True (default, prodigyopt's and optax's): AdamW-style decay scaled by d lr;
      False: L2 decay added to the gradient.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" for m, v and s (see
      `optimkit.state`); x_0 stays in the params' dtype.

  Returns:
    An `optax.GradientTransformationExtraArgs`; its `update` needs `params`.

  Example:
    >>> tx = optimkit.prodigy(optax.linear_schedule(1.0, 0.0, 10_000), weight_decay=0.01)

  Equals prodigyopt's Prodigy (to ~1e-10 over 200 float64 steps) and, with
  bias_correction=True, optax.contrib.prodigy (~1e-15).
  """
  return optax.chain(
      _decay_first(weight_decay, decouple),
      scale_by_prodigy(learning_rate, betas, beta3, eps, estim_lr0, estim_lr_coef,
                       weight_decay if decouple else 0.0, safeguard_warmup,
                       bias_correction=bias_correction, growth_rate=growth_rate,
                       state_storage=state_storage))


@optimizer(family="lr_free", typical_lr=1.0, optax="contrib.dadapt_adamw",
           optax_mode={"bias_correction": True},
           reference="dadaptation 3.2 DAdaptAdam (the authors', decouple=True); "
                     "optax.contrib.dadapt_adamw",
           ranges={"eps": _POSITIVE, "estim_lr0": _POSITIVE, "growth_rate": _GROWTH})
def dadapt_adamw(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    bias_correction: bool = False,
    growth_rate: float | None = None,
    decouple: bool = True,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """D-Adaptation AdamW (Defazio & Mishchenko 2023): Adam whose step d lr grows with a lower
  bound d on the distance to the solution, estimated from the gradients seen.

      m_t = b1 m + (1 - b1) d lr g;   v_t = b2 v + (1 - b2) g^2
      d_{t+1} = max(d_t, r_t / ((1 - sqrt(b2)) sum|s_t|))   (r, s: weighted sums)
      x_{t+1} = x_t - m_t / (sqrt(v_t) + eps) - d lr weight_decay x_t

  (in full in `optimkit.transforms.lr_free`).

  Args:
    learning_rate: multiplier of the estimate, >= 0, or a schedule. Default 1.0.
    betas: (b1, b2), each in [0, 1). Default (0.9, 0.999).
    eps: > 0. Default 1e-8.
    estim_lr0: d0, the initial estimate, > 0. Default 1e-6.
    weight_decay: >= 0. Default 0.
    bias_correction: Adam's bias correction in d lr; True is optax.contrib.dadapt_adamw's
      trajectory. Default False (the authors').
    growth_rate: d grows by at most this factor a step, >= 1; None (default) is unbounded (the
      authors' inf; an inf would sit in the state as a hyperparameter).
    decouple: True (default; the name's AdamW, and optax's): decay scaled by d lr; False: L2
      decay added to the gradient (DAdaptAdam's own default).
    state_storage: "float32", "bfloat16", "8bit" or "4bit" for m, v and s (see
      `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`; its `update` needs `params`.

  Example:
    >>> tx = optimkit.dadapt_adamw(weight_decay=0.01)

  Equals dadaptation's DAdaptAdam(decouple=True) (~1e-13 over 200 float64 steps; with
  decouple=False its default) and, with bias_correction=True, optax.contrib.dadapt_adamw.
  """
  return optax.chain(
      _decay_first(weight_decay, decouple),
      scale_by_dadapt_adam(learning_rate, betas, eps, estim_lr0,
                           weight_decay if decouple else 0.0, bias_correction=bias_correction,
                           growth_rate=growth_rate, state_storage=state_storage))
