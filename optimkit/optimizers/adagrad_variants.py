"""AdaGrad's descendants that are not Adam's: Adadelta, which replaces the learning rate by the
RMS of past steps, and SM3, which keeps AdaGrad's accumulators in sublinear memory.

Each takes optax's arguments under optax's names, in optax's positional order; optimkit's own
arguments are keyword-only after them.
"""

from __future__ import annotations

import optax

from optimkit.optimizers._declare import Mask, ScalarOrSchedule, optimizer
from optimkit.state.storage import StorageLike
from optimkit.transforms.adadelta import scale_by_adadelta
from optimkit.transforms.sm3 import scale_by_sm3


@optimizer(family="classic", typical_lr=1.0, optax="adadelta",
           ranges={"rho": dict(low=0.0, high=1.0)},
           reference="torch.optim.Adadelta; optax.adadelta (with a learning rate given)")
def adadelta(
    learning_rate: ScalarOrSchedule | None = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Mask = None,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Adadelta (Zeiler 2012): steps of RMS(past steps) / RMS(gradients) times the gradient.

      g_t'      = g_t + weight_decay w_{t-1}                  (coupled, an L2 term)
      E[g^2]_t  = rho E[g^2]_{t-1} + (1 - rho) g_t'^2
      d_t       = sqrt(E[dx^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) g_t'
      E[dx^2]_t = rho E[dx^2]_{t-1} + (1 - rho) d_t^2
      w_t       = w_{t-1} - lr d_t

  Args:
    learning_rate: a float >= 0 or a schedule; None is the paper's "no learning rate", 1.0.
      Default 1.0 (torch's).
    rho: decay of both averages, [0, 1]. Default 0.9 (the paper used 0.95).
    eps: inside both roots, >= 0; it also sets the size of the first steps. Default 1e-6.
    weight_decay: coupled (L2) decay added to the gradient, as torch's and optax's, >= 0.
      Default 0.
    weight_decay_mask: the leaves that decay.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.adadelta()

  Equals torch.optim.Adadelta, and optax.adadelta given a learning rate. Where the default
  differs from optax: optax's default learning_rate=None skips the learning-rate step and with
  it the sign flip, so `optax.adadelta()` climbs the loss (optax 0.2.8); None here descends with
  a learning rate of 1, as the paper.
  """
  return optax.chain(
      optax.add_decayed_weights(weight_decay, weight_decay_mask),
      scale_by_adadelta(rho, eps, state_storage=state_storage),
      optax.scale_by_learning_rate(1.0 if learning_rate is None else learning_rate))


@optimizer(family="factored", typical_lr=0.1, optax="sm3",
           optax_differs="optax.sm3 (0.2.8) fails on a rank-0 (scalar) leaf, whose list of "
                         "per-axis accumulators is empty; on leaves of rank >= 1 the trajectories "
                         "are equal (tests/transforms/test_sm3.py)",
           reference="optax.sm3 (no rank-0 leaves); pytorch-optimizer SM3")
def sm3(
    learning_rate: ScalarOrSchedule = 0.1,
    momentum: float = 0.9,
    *,
    eps: float = 1e-8,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """SM3-II (Anil et al. 2019): AdaGrad with one accumulator per slice along each axis.

      nu_t(i) = min over axes a of acc^a_{t-1}(i_a) + g_t(i)^2;   acc^a_t = max of nu_t off axis a
      m_t = momentum m_{t-1} + (1 - momentum) g_t / sqrt(nu_t + eps)
      w_t = w_{t-1} - lr m_t

  Args:
    learning_rate: a float >= 0 or a schedule. Default 0.1 (optax has none).
    momentum: decay of the momentum, [0, 1). Default 0.9 (optax's).
    eps: inside the root, >= 0. Default 1e-8 (optax's scale_by_sm3; the paper has none).
    state_storage: storage of the momentum (see `optimkit.state`); the per-axis accumulators
      stay float32.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.sm3(0.1)

  Equals optax.sm3 (which fails on rank-0 leaves; see `optimkit.transforms.sm3`) and
  pytorch-optimizer's SM3.
  """
  return optax.chain(scale_by_sm3(momentum, eps, state_storage=state_storage),
                     optax.scale_by_learning_rate(learning_rate))
