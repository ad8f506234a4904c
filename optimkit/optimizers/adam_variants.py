"""Adam's variants: NAdam, NAdamW, AMSGrad, AdaMax, AdaMaxW, AdaBelief, Yogi and NovoGrad.

Each is one declaration whose body is its chain, and takes optax's arguments under optax's
names, in optax's positional order; optimkit's own arguments are keyword-only after them. Two
follow their authors' reference where optax does not, each with one argument for optax's form:

  - `nadam` / `nadamw` keep torch.optim.NAdam's momentum schedule (Dozat 2016), which optax
    drops; `momentum_schedule=False` is optax's simplified form (the AlgoPerf NAdamW baseline).
  - `amsgrad` takes the maximum of the raw second moment as torch.optim.Adam(amsgrad=True)
    does; `debias_before_max=True` is optax's maximum of the debiased one.
"""

from __future__ import annotations

from typing import Any

import optax

from optimkit.optimizers._declare import (
  Mask,
  ScalarOrSchedule,
  mu_storage_of,
  optimizer,
)
from optimkit.state.storage import StorageLike
from optimkit.transforms.adabelief import scale_by_adabelief
from optimkit.transforms.adamax import scale_by_adamax
from optimkit.transforms.amsgrad import scale_by_amsgrad
from optimkit.transforms.moments import scale_by_adam
from optimkit.transforms.nesterov_adam import scale_by_nadam
from optimkit.transforms.novograd import scale_by_novograd
from optimkit.transforms.yogi import scale_by_yogi

_MOMENTUM_DECAY = {"momentum_decay": dict(low=0.0)}



def _nadam_direction(owner: str, b1: Any, b2: Any, eps: Any, eps_root: Any, mu_dtype: Any,
                     nesterov: bool, momentum_decay: Any, momentum_schedule: bool,
                     state_storage: StorageLike) -> optax.GradientTransformation:
  """NAdam's direction, or Adam's when `nesterov=False` (as optax.nadam(nesterov=False))."""
  mu_storage = mu_storage_of(owner, mu_dtype)
  if not nesterov:
    return scale_by_adam(b1, b2, eps, eps_root, state_storage=state_storage,
                         mu_storage=mu_storage)
  return scale_by_nadam(b1, b2, eps, eps_root, momentum_decay,
                        momentum_schedule=momentum_schedule, state_storage=state_storage,
                        mu_storage=mu_storage)


@optimizer(family="adaptive", typical_lr=1e-3, optax="nadam", ranges=_MOMENTUM_DECAY,
           optax_mode={"momentum_schedule": False},
           reference="torch.optim.NAdam; optax.nadam (momentum_schedule=False)")
def nadam(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    momentum_decay: float = 4e-3,
    momentum_schedule: bool = True,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """NAdam (Dozat 2016): Adam with a Nesterov look-ahead and a warming-up momentum.

      mu_t = b1 (1 - 0.5 * 0.96^(t momentum_decay)),   P_t = mu_1 ... mu_t
      m_t = b1 m_{t-1} + (1 - b1) g_t;   v_t = b2 v_{t-1} + (1 - b2) g_t^2
      w_t = w_{t-1} - lr [mu_{t+1} m_t / (1 - P_t mu_{t+1}) + (1 - mu_t) g_t / (1 - P_t)]
                         / (sqrt(v_t / (1 - b2^t) + eps_root) + eps)

  Args:
    learning_rate: a float >= 0 or a schedule. Default 2e-3 (torch's).
    b1, b2: moment decays in [0, 1); b1 is also the limit of the momentum schedule. Defaults
      0.9, 0.999.
    eps: added outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0.
    mu_dtype: optax's dtype of the first moment (bfloat16 stores it in optimkit's bfloat16
      format, with stochastic rounding). Default None: as `state_storage`.
    nesterov: optax's switch; False is plain Adam (as optax.nadam(nesterov=False)). Default True.
    momentum_decay: psi of the schedule, >= 0. Default 4e-3 (torch's).
    momentum_schedule: True (default): torch.optim.NAdam's scheduled momentum. False: mu_t = b1,
      optax.nadam's simplified form.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.nadam(2e-3)

  Equals torch.optim.NAdam; with `momentum_schedule=False`, optax.nadam. Where the defaults
  differ from optax: the momentum schedule (optax has none), and the learning rate default
  (optax has none; 2e-3 is torch's). See `optimkit.transforms.nesterov_adam`.
  """
  direction = _nadam_direction("nadam", b1, b2, eps, eps_root, mu_dtype, nesterov,
                               momentum_decay, momentum_schedule, state_storage)
  return optax.chain(direction, optax.scale_by_learning_rate(learning_rate))


@optimizer(family="adaptive", typical_lr=1e-3, optax="nadamw", ranges=_MOMENTUM_DECAY,
           optax_mode={"momentum_schedule": False},
           reference="torch.optim.NAdam(decoupled_weight_decay=True); optax.nadamw "
                     "(momentum_schedule=False)")
def nadamw(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: float = 1e-4,
    mask: Mask = None,
    *,
    nesterov: bool = True,
    momentum_decay: float = 4e-3,
    momentum_schedule: bool = True,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """NAdamW: NAdam (Dozat 2016) with decoupled weight decay (Loshchilov & Hutter 2019).

      w_t = w_{t-1} - lr (d_t + weight_decay w_{t-1}),   d_t NAdam's direction (see `nadam`)

  Args:
    learning_rate: a float >= 0 or a schedule. Default 2e-3 (torch's).
    b1, b2: moment decays in [0, 1). Defaults 0.9, 0.999.
    eps: added outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0.
    mu_dtype: optax's dtype of the first moment (see `nadam`).
    weight_decay: decoupled decay, >= 0. Default 1e-4 (optax's; torch's NAdam has 0).
    mask: tree of bools (or a callable params -> tree) of the leaves that decay;
      `optimkit.weight_decay_mask` excludes biases and normalisation scales.
    nesterov: optax's switch; False is AdamW. Default True.
    momentum_decay: psi of the momentum schedule, >= 0. Default 4e-3 (torch's).
    momentum_schedule: True (default): torch's scheduled momentum. False: optax.nadamw's
      simplified form, the AlgoPerf NAdamW baseline's.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.nadamw(1e-3, weight_decay=0.1, momentum_schedule=False)  # AlgoPerf's

  Equals torch.optim.NAdam(decoupled_weight_decay=True); with `momentum_schedule=False`,
  optax.nadamw. Defaults differ from optax in the momentum schedule and the learning rate.
  """
  direction = _nadam_direction("nadamw", b1, b2, eps, eps_root, mu_dtype, nesterov,
                               momentum_decay, momentum_schedule, state_storage)
  return optax.chain(direction, optax.add_decayed_weights(weight_decay, mask),
                     optax.scale_by_learning_rate(learning_rate))


@optimizer(family="adaptive", typical_lr=1e-3, optax="amsgrad",
           optax_mode={"debias_before_max": True},
           reference="torch.optim.Adam(amsgrad=True); torch.optim.AdamW(amsgrad=True); "
                     "optax.amsgrad (debias_before_max=True)")
def amsgrad(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    debias_before_max: bool = False,
    weight_decay: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """AMSGrad (Reddi, Kale & Kumar 2018): Adam dividing by the running maximum of v_t.

      vmax_t = max(vmax_{t-1}, v_t)
      w_t = w_{t-1} - lr (m_hat_t / (sqrt(vmax_t / (1 - b2^t) + eps_root) + eps)
                          + weight_decay w_{t-1})

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1, b2: moment decays in [0, 1). Defaults 0.9, 0.999.
    eps: added outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0.
    mu_dtype: optax's dtype of the first moment (see `nadam`).
    bias_correction_mu, bias_correction_nu: debias m_t, and the second moment. Default True;
      both False is the paper's Algorithm 2 (and optax's with the same arguments).
    debias_before_max: the maximum of v_t / (1 - b2^t), as optax.amsgrad. Default False: the
      maximum of v_t, debiased after, as torch.optim.Adam(amsgrad=True).
    weight_decay: decoupled decay, >= 0, as torch.optim.AdamW(amsgrad=True). Default 0.
    mask: the leaves that decay.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.amsgrad(1e-3)

  Equals torch.optim.Adam(amsgrad=True); with `debias_before_max=True`, optax.amsgrad. The
  default differs from optax's in where the maximum is taken (see
  `optimkit.transforms.amsgrad`: the trajectories separate within a few steps).
  """
  return optax.chain(
      scale_by_amsgrad(b1, b2, eps, eps_root, bias_correction_mu, bias_correction_nu,
                       debias_before_max=debias_before_max, state_storage=state_storage,
                       mu_storage=mu_storage_of("amsgrad", mu_dtype)),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


@optimizer(family="adaptive", typical_lr=1e-3, optax="adamax",
           reference="torch.optim.Adamax; optax.adamax")
def adamax(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """AdaMax (Kingma & Ba 2015, Section 7.1): Adam with the infinity norm.

      m_t = b1 m_{t-1} + (1 - b1) g_t;   u_t = max(b2 u_{t-1}, |g_t| + eps)
      w_t = w_{t-1} - lr (m_t / (1 - b1^t)) / u_t

  Args:
    learning_rate: a float >= 0 or a schedule. Default 2e-3 (the paper's and torch's).
    b1, b2: decays of the first moment and of the infinity norm, in [0, 1). Defaults 0.9, 0.999.
    eps: added to |g_t|, >= 0. Default 1e-8.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.adamax(2e-3)

  Equals torch.optim.Adamax and optax.adamax (optax has no learning-rate default).
  """
  return optax.chain(scale_by_adamax(b1, b2, eps, state_storage=state_storage),
                     optax.scale_by_learning_rate(learning_rate))


@optimizer(family="adaptive", typical_lr=1e-3, optax="adamaxw",
           reference="optax.adamaxw; torch.optim.Adamax (no decay)")
def adamaxw(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    mask: Mask = None,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """AdaMaxW: AdaMax with decoupled weight decay (Loshchilov & Hutter 2019).

      w_t = w_{t-1} - lr ((m_t / (1 - b1^t)) / u_t + weight_decay w_{t-1})   (see `adamax`)

  Args:
    learning_rate: a float >= 0 or a schedule. Default 2e-3.
    b1, b2: decays in [0, 1). Defaults 0.9, 0.999.
    eps: added to |g_t|, >= 0. Default 1e-8.
    weight_decay: decoupled decay, >= 0. Default 1e-4 (optax's).
    mask: the leaves that decay.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.adamaxw(2e-3, weight_decay=0.01)

  Equals optax.adamaxw. (torch.optim.Adamax's weight decay is coupled, an L2 term.)
  """
  return optax.chain(scale_by_adamax(b1, b2, eps, state_storage=state_storage),
                     optax.add_decayed_weights(weight_decay, mask),
                     optax.scale_by_learning_rate(learning_rate))


@optimizer(family="adaptive", typical_lr=1e-3, optax="adabelief",
           reference="optax.adabelief; pytorch-optimizer AdaBelief(rectify=False) (the authors' "
                     "unrectified update)")
def adabelief(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """AdaBelief (Zhuang et al. 2020): Adam normalised by the variance of g around its EMA.

      m_t = b1 m_{t-1} + (1 - b1) g_t;   s_t = b2 s_{t-1} + (1 - b2) (g_t - m_t)^2 + eps_root
      w_t = w_{t-1} - lr (m_hat_t / (sqrt(s_t / (1 - b2^t)) + eps) + weight_decay w_{t-1})

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3 (the authors').
    b1, b2: decays in [0, 1). Defaults 0.9, 0.999.
    eps: added outside the root, >= 0. Default 1e-16.
    eps_root: added to the variance state each step, >= 0. Default 1e-16.
    nesterov: optax's Nesterov numerator. Default False.
    weight_decay: decoupled decay, >= 0 (the authors' `weight_decouple=True`). Default 0.
    mask: the leaves that decay.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.adabelief(1e-3, weight_decay=1e-2)

  Equals optax.adabelief, and the authors' update with `rectify=False` (their package's
  default is rectified; see `optimkit.transforms.adabelief`).
  """
  return optax.chain(
      scale_by_adabelief(b1, b2, eps, eps_root, nesterov=nesterov, state_storage=state_storage),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


@optimizer(family="adaptive", typical_lr=1e-3, optax="yogi",
           reference="optax.yogi; pytorch-optimizer Yogi")
def yogi(
    learning_rate: ScalarOrSchedule = 1e-2,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    *,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
    weight_decay: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Yogi (Zaheer et al. 2018): Adam whose second moment moves additively, by (1 - b2) g^2.

      m_t = b1 m_{t-1} + (1 - b1) g_t;   v_t = v_{t-1} - (1 - b2) sign(v_{t-1} - g_t^2) g_t^2
      w_t = w_{t-1} - lr (m_hat_t / (sqrt(v_hat_t + eps_root) + eps) + weight_decay w_{t-1})

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-2 (pytorch-optimizer's).
    b1, b2: decays in [0, 1). Defaults 0.9, 0.999.
    eps: added outside the root, >= 0. Default 1e-3 (optax's).
    eps_root: added inside the root, >= 0. Default 0.
    initial_accumulator_value: the starting value of both moments, >= 0. Default 1e-6.
    weight_decay: decoupled decay, >= 0. Default 0.
    mask: the leaves that decay.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.yogi(1e-2)

  Equals optax.yogi (whose eps_root and initial_accumulator_value are arguments of its
  scale_by_yogi only) and pytorch-optimizer's Yogi.
  """
  return optax.chain(
      scale_by_yogi(b1, b2, eps, eps_root, initial_accumulator_value,
                    state_storage=state_storage),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


@optimizer(family="adaptive", typical_lr=1e-2, optax="novograd",
           reference="optax.novograd; pytorch-optimizer NovoGrad(grad_averaging=False)")
def novograd(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """NovoGrad (Ginsburg et al. 2019): momentum of gradients normalised per leaf (layer).

      v_t = b2 v_{t-1} + (1 - b2) ||g_t||^2  (v_1 = ||g_1||^2; one scalar per leaf)
      m_t = b1 m_{t-1} + g_t / (sqrt(v_t + eps_root) + eps) + weight_decay w_{t-1}
      w_t = w_{t-1} - lr m_t

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1: momentum, [0, 1). Default 0.9.
    b2: decay of the per-leaf squared norm, [0, 1). Default 0.25.
    eps: added outside the root, >= 0. Default 1e-6.
    eps_root: added inside the root, >= 0. Default 0.
    weight_decay: decay added inside the momentum (the paper's; not decoupled), >= 0, or a
      schedule. Default 0.
    state_storage: storage of the momentum (see `optimkit.state`); the per-leaf norms stay
      float32.

  Returns:
    An `optax.GradientTransformationExtraArgs`; its `update` needs `params`.

  Example:
    >>> tx = optimkit.novograd(1e-2, weight_decay=1e-3)

  Equals optax.novograd and pytorch-optimizer's NovoGrad with `grad_averaging=False`.
  """
  return optax.chain(
      # weight_decay is an array here (the decorator passes a schedule's value).
      scale_by_novograd(b1, b2, eps, eps_root, weight_decay,  # type: ignore[arg-type]
                        state_storage=state_storage),
      optax.scale_by_learning_rate(learning_rate))
