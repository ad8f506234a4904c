"""Factored second moments: Adafactor."""

from __future__ import annotations

from typing import Any

import optax

from optimkit.optimizers._declare import Mask, ScalarOrSchedule, optimizer, storage_of, structural
from optimkit.state.storage import StorageLike
from optimkit.transforms.factored import scale_by_factored_rms, scale_by_relative_step_size
from optimkit.transforms.moments import scale_by_ema


@optimizer(family="factored", typical_lr=1e-2, optax="adafactor",
           optax_mode={"relative_step": False},
           reference="torch.optim.Adafactor (relative step); optax.adafactor")
def adafactor(
    learning_rate: ScalarOrSchedule | None = 1e-2,
    min_dim_size_to_factor: int = structural(128),
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum: Any = None,
    weight_decay_rate: float | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    weight_decay_mask: Mask = None,
    *,
    weight_decay: float = 0.0,
    eps_scale: float = 1e-3,
    relative_step: bool = True,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Adafactor (Shazeer & Stern 2018); see `optimkit.transforms.factored` for the statistics.

      V_t: factored EMA of g^2 + eps (row and column means) with beta2_t = 1 - t^-decay_rate
      u_t = clip(g_t / sqrt(V_t), clipping_threshold)          (per-leaf RMS clipping)
      rho_t = min(learning_rate, 1 / sqrt(t))  (relative_step)   or  learning_rate
      alpha_t = max(eps_scale, RMS(w_{t-1})) rho_t  (multiply_by_parameter_scale)  or  rho_t
      w_t = w_{t-1} - alpha_t u_t - learning_rate weight_decay w_{t-1}
                    - weight_decay_rate w_{t-1}

  Args:
    learning_rate: the cap on rho_t, a float >= 0 or a schedule; None: no cap (the paper's
      1/sqrt(t)), or 1 with relative_step=False (optax's None). Default 1e-2 (PyTorch's).
    min_dim_size_to_factor: factor a leaf only if its two largest dims are at least this.
      Default 128. Decides the state's shapes (structural).
    decay_rate: exponent of beta2_t, > 0. Default 0.8.
    decay_offset: steps subtracted from t (fine-tuning restarts), integer >= 0. Default 0.
    multiply_by_parameter_scale: scale the step by each leaf's RMS. Default True.
    clipping_threshold: d of the paper, > 0, or None. Default 1.0.
    momentum: EMA of the scaled update (no debiasing), [0, 1) or None. Default None.
    dtype_momentum: optax's dtype of that EMA (bfloat16: optimkit's bfloat16 storage). Default
      None: float32 (optax writes jnp.float32, which optax.inject_hyperparams would take for a
      schedule).
    weight_decay_rate: optax's decay, not multiplied by the learning rate, >= 0, or None.
    eps: eps1 of the paper, added to g^2, >= 0. Default 1e-30.
    factored: factor the second moment of matrices. Default True.
    weight_decay_mask: the leaves that decay (both kinds).
    weight_decay: PyTorch's decay, multiplied by learning_rate, >= 0. Default 0.
    eps_scale: eps2 of the paper, >= 0. Default 1e-3.
    relative_step: rho_t = min(learning_rate, 1/sqrt(t)) as the paper and PyTorch (True), or
      learning_rate as optax (False). Default True.
    state_storage: storage format of the momentum.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.adafactor(1e-2)                       # torch.optim.Adafactor
    >>> tx = optimkit.adafactor(1e-3, relative_step=False)  # optax.adafactor(1e-3)

  Where optimkit differs from optax: the relative step (`relative_step=False` gives optax's).
  """
  momentum_storage = storage_of("adafactor", "dtype_momentum", dtype_momentum, state_storage)
  parts = [
      scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps,
                            clipping_threshold),
      # learning_rate is None or an array here (the decorator passes a schedule's value).
      scale_by_relative_step_size(learning_rate,  # type: ignore[arg-type]
                                  relative_step, multiply_by_parameter_scale, eps_scale),
  ]
  if momentum is not None:
    parts.append(scale_by_ema(momentum, state_storage=momentum_storage))
  parts.append(optax.add_decayed_weights(
      weight_decay if learning_rate is None
      else learning_rate * weight_decay,  # type: ignore[operator]  # an array, as above
      weight_decay_mask))
  if weight_decay_rate is not None:
    parts.append(optax.add_decayed_weights(weight_decay_rate, weight_decay_mask))
  return optax.chain(*parts, optax.scale(-1.0))
