"""The classic optimizers: SGD (heavy-ball and Nesterov momentum), AdaGrad and RMSprop.

Each takes optax's arguments under optax's names, in optax's positional order; optimkit's own
arguments (decoupled weight decay, its mask, the storage format) are keyword-only after them.
"""

from __future__ import annotations

from typing import Any

import optax

from optimkit.optimizers._declare import Mask, ScalarOrSchedule, optimizer, storage_of
from optimkit.state.storage import StorageLike
from optimkit.transforms.moments import scale_by_adagrad, scale_by_momentum, scale_by_rms


@optimizer(family="classic", typical_lr=0.3, optax="sgd",
           reference="torch.optim.SGD; torch-optimi SGD(decouple_wd=True); optax.sgd")
def sgd(
    learning_rate: ScalarOrSchedule = 1e-2,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
    *,
    weight_decay: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """SGD with optional heavy-ball or Nesterov momentum and decoupled weight decay (SGDW).

      v_t = momentum v_{t-1} + g_t                   (no momentum: v_t = g_t)
      d_t = v_t  (heavy ball)  or  g_t + momentum v_t  (Nesterov)
      w_t = w_{t-1} - lr (d_t + weight_decay w_{t-1})

  Args:
    learning_rate: a float >= 0 or a schedule (step -> value). Default 1e-2.
    momentum: velocity decay in [0, 1), or None for plain SGD (no buffer). Default None.
    nesterov: Nesterov's form of the momentum. Default False.
    accumulator_dtype: optax's dtype of the velocity; jnp.bfloat16 stores it as
      `state_storage="bfloat16"` does (with stochastic rounding), float32/None as float32.
    weight_decay: decoupled decay, >= 0 (PyTorch's is coupled L2). Default 0.
    mask: tree of bools (or a callable params -> tree) of the leaves that decay.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.sgd(0.1, momentum=0.9, nesterov=True)

  References: Polyak 1964; Sutskever et al. 2013; Loshchilov & Hutter 2019 (decoupled decay).
  Equals optax.sgd with optax's arguments.
  """
  parts = []
  if momentum is not None:
    parts.append(scale_by_momentum(
        momentum, nesterov,
        state_storage=storage_of("sgd", "accumulator_dtype", accumulator_dtype, state_storage)))
  return optax.chain(*parts, optax.add_decayed_weights(weight_decay, mask),
                     optax.scale_by_learning_rate(learning_rate))


@optimizer(family="classic", typical_lr=3e-2, optax="adagrad",
           reference="torch.optim.Adagrad (eps_in_sqrt=False); optax.adagrad")
def adagrad(
    learning_rate: ScalarOrSchedule = 1e-2,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    *,
    eps_in_sqrt: bool = True,
    weight_decay: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """AdaGrad (Duchi, Hazan & Singer 2011).

      s_t = s_{t-1} + g_t^2        (s_0 = initial_accumulator_value)
      w_t = w_{t-1} - lr (g_t / sqrt(s_t + eps) + weight_decay w_{t-1})
      (eps_in_sqrt=False: g_t / (sqrt(s_t) + eps), PyTorch's)

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-2.
    initial_accumulator_value: s_0, >= 0. Default 0.1 (optax's; PyTorch's is 0).
    eps: stabiliser, >= 0. Default 1e-7 (optax's; PyTorch's is 1e-10).
    eps_in_sqrt: eps inside the root (optax) or outside (PyTorch). Default True.
    weight_decay: decoupled decay, >= 0. Default 0.
    mask: the leaves that decay.
    state_storage: storage format of the accumulator.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.adagrad(1e-2, initial_accumulator_value=0.0, eps=1e-10, eps_in_sqrt=False)

  Defaults are optax's (the trajectory equals optax.adagrad's); the example is torch's.
  """
  return optax.chain(
      scale_by_adagrad(initial_accumulator_value, eps, eps_in_sqrt, state_storage=state_storage),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


@optimizer(family="classic", typical_lr=1e-3, optax="rmsprop",
           reference="torch.optim.RMSprop (eps_in_sqrt=False); optax.rmsprop")
def rmsprop(
    learning_rate: ScalarOrSchedule = 1e-2,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
    *,
    weight_decay: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """RMSprop (Hinton 2012; Graves 2013 for the centered form), optionally with momentum.

      nu_t = decay nu_{t-1} + (1 - decay) g_t^2     (nu_0 = initial_scale)
      d_t  = g_t / sqrt(nu_t + eps)  (centered: nu_t - mu_t^2 with mu_t the EMA of g_t)
      momentum: b_t = momentum b_{t-1} + d_t; the step is lr b_t (Nesterov: lr (d_t + momentum b_t))

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-2.
    decay: EMA decay, [0, 1). Default 0.9 (optax's; PyTorch's is 0.99).
    eps: stabiliser, >= 0. Default 1e-8.
    initial_scale: nu_0, >= 0. Default 0.
    eps_in_sqrt: eps inside the root (optax) or outside (PyTorch). Default True.
    centered: divide by the variance estimate. Default False.
    momentum: momentum in [0, 1) or None (no buffer). Default None.
    nesterov: Nesterov form of the momentum. Default False.
    bias_correction: debias nu_t (and mu_t) by 1 - decay^t, as optax's option. Default False.
    weight_decay: decoupled decay, >= 0. Default 0.
    mask: the leaves that decay.
    state_storage: storage format of the buffers.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.rmsprop(1e-3, decay=0.99, eps_in_sqrt=False)   # torch.optim.RMSprop

  Where optax differs: with momentum, optax's momentum accumulates lr * d_t (the learning rate
  applied first); optimkit accumulates d_t, as PyTorch and the published form do. The two agree
  for a constant learning rate and differ under a schedule.
  """
  return optax.chain(
      scale_by_rms(decay, eps, initial_scale, eps_in_sqrt, centered,
                   0.0 if momentum is None else momentum, nesterov, bias_correction,
                   state_storage=state_storage),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))
