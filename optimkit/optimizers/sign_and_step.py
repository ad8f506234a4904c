"""Optimizers that use only the sign of the gradient: signSGD and Signum, which move every
coordinate by the learning rate, and Rprop, which adapts a step size per coordinate from the
gradient's sign changes.

Each takes optax's arguments under optax's names, in optax's positional order; optimkit's own
arguments (decoupled weight decay and its mask, the storage format) are keyword-only after them.
"""

from __future__ import annotations

from typing import Any

import optax

from optimkit.optimizers._declare import Mask, ScalarOrSchedule, optimizer, storage_of
from optimkit.state.storage import StorageLike
from optimkit.transforms.rprop import scale_by_rprop
from optimkit.transforms.sign_sgd import scale_by_signum


@optimizer(family="sign", typical_lr=1e-4, optax="sign_sgd",
           reference="optax.sign_sgd; pytorch-optimizer SignSGD(momentum=0)")
def sign_sgd(
    learning_rate: ScalarOrSchedule = 1e-4,
    *,
    weight_decay: float = 0.0,
    mask: Mask = None,
) -> optax.GradientTransformation:
  """signSGD (Bernstein et al. 2018): every coordinate moves by the learning rate.

      w_t = w_{t-1} - lr (sign(g_t) + weight_decay w_{t-1})

  No state. Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-4 (optax has none).
    weight_decay: decoupled decay, >= 0. Default 0.
    mask: the leaves that decay.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.sign_sgd(1e-4)

  Equals optax.sign_sgd.
  """
  return optax.chain(optax.scale_by_sign(), optax.add_decayed_weights(weight_decay, mask),
                     optax.scale_by_learning_rate(learning_rate))


@optimizer(family="sign", typical_lr=1e-4, optax="signum", ranges={"beta": dict(
    low=0.0, high=1.0, high_inclusive=False)},
           reference="optax.signum; pytorch-optimizer SignSGD (decoupled weight decay)")
def signum(
    learning_rate: ScalarOrSchedule = 1e-4,
    beta: float = 0.9,
    accumulator_dtype: Any = None,
    *,
    weight_decay: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Signum (Bernstein et al. 2018): the sign of the gradient's momentum.

      m_t = beta m_{t-1} + (1 - beta) g_t
      w_t = w_{t-1} - lr (sign(m_t) + weight_decay w_{t-1})

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-4 (optax has none).
    beta: momentum decay, [0, 1). Default 0.9.
    accumulator_dtype: optax's dtype of the momentum (bfloat16: optimkit's bfloat16 storage).
    weight_decay: decoupled decay, >= 0. Default 0.
    mask: the leaves that decay.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.signum(1e-4, beta=0.9)

  Equals optax.signum (the paper's Signum) and pytorch-optimizer's SignSGD with momentum.
  """
  return optax.chain(
      scale_by_signum(beta, state_storage=storage_of("signum", "accumulator_dtype",
                                                     accumulator_dtype, state_storage)),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


@optimizer(family="sign", typical_lr=1e-3, optax="rprop",
           ranges={"eta_minus": dict(low=0.0, high=1.0, low_inclusive=False,
                                     high_inclusive=False),
                   "eta_plus": dict(low=1.0),
                   "min_step_size": dict(low=0.0),
                   "max_step_size": dict(low=0.0)},
           optax_differs="optax.rprop (0.2.8) applies each step's move one step late: its update "
                         "returns the previous step's step_size * sign(g), so its first update "
                         "is zero; torch.optim.Rprop and the paper move at once, as optimkit",
           reference="torch.optim.Rprop")
def rprop(
    learning_rate: float = 1e-2,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Rprop (Riedmiller & Braun 1993; iRprop-, Igel & Huesken 2000): per-coordinate step sizes
  from the gradient's sign changes, for full-batch training.

      step_t = clip(step_{t-1} * (eta_plus if g_t g_{t-1}' > 0, eta_minus if < 0, 1 if = 0),
                    min_step_size, max_step_size)             (unchanged where the product is 0)
      g_t'   = 0 where g_t g_{t-1}' < 0, else g_t
      w_t    = w_{t-1} - step_t sign(g_t')

  Args:
    learning_rate: the initial step size of every coordinate, >= 0 (not a multiplier, and not
      a schedule). Default 1e-2 (torch's).
    eta_minus: step-size factor after a sign flip, (0, 1). Default 0.5.
    eta_plus: step-size factor while the sign holds, >= 1. Default 1.2.
    min_step_size, max_step_size: bounds of the step sizes, >= 0. Defaults 1e-6, 50.
    state_storage: storage of the step sizes (see `optimkit.state`); the previous signs are
      int8.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.rprop(1e-2)

  Equals torch.optim.Rprop. Differs from optax.rprop, which moves one step late (see
  `optimkit.transforms.rprop`).
  """
  return optax.chain(
      scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size,
                     state_storage=state_storage),
      optax.scale(-1.0))
