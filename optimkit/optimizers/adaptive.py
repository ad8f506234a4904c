"""Adam and its descendants: Adam, AdamW, RAdam, Ranger, StableAdamW, Adan, Adam-mini, AdamS.

Each is one declaration whose body is its chain. Those optax also has (adam, adamw, radam) take
optax's arguments under optax's names, in optax's positional order; optimkit's own arguments are
keyword-only after them.
"""

from __future__ import annotations

from typing import Any

import optax

from optimkit.optimizers._declare import (
  Mask,
  ScalarOrSchedule,
  mu_storage_of,
  optimizer,
  shortcut,
)
from optimkit.state.storage import StorageLike
from optimkit.transforms._util import uses_previous_ema
from optimkit.transforms.adam_mini import Blocks, scale_by_adam_mini
from optimkit.transforms.adams import scale_by_adams
from optimkit.transforms.adan import scale_by_adan
from optimkit.transforms.lookahead import lookahead
from optimkit.transforms.moments import scale_by_adam
from optimkit.transforms.rectified import scale_by_radam
from optimkit.transforms.update_clipping import scale_by_stable_adam


@optimizer(family="adaptive", typical_lr=1e-3, optax="adam",
           reference="torch.optim.Adam; optax.adam")
def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Adam (Kingma & Ba 2015).

      m_t = b1 m_{t-1} + (1 - b1) g_t;   v_t = b2 v_{t-1} + (1 - b2) g_t^2
      w_t = w_{t-1} - lr m_hat / (sqrt(v_hat + eps_root) + eps),  x_hat = x_t / (1 - b^t)

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1, b2: moment decays in [0, 1). Defaults 0.9, 0.999.
    eps: added outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0.
    mu_dtype: optax's dtype of the first moment (bfloat16 stores it in optimkit's bfloat16
      format, with stochastic rounding). Default None: as `state_storage`.
    nesterov: NAdam's look-ahead first moment, in optax's form. Default False.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.adam(3e-4, b2=0.95)

  Equals optax.adam and torch.optim.Adam.
  """
  return optax.chain(
      scale_by_adam(b1, b2, eps, eps_root, nesterov=nesterov, state_storage=state_storage,
                    mu_storage=mu_storage_of("adam", mu_dtype)),
      optax.scale_by_learning_rate(learning_rate))


@optimizer(family="adaptive", typical_lr=1e-3, optax="adamw",
           reference="torch.optim.AdamW; optax.adamw")
def adamw(
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
  """AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay.

      w_t = w_{t-1} - lr (m_hat / (sqrt(v_hat + eps_root) + eps) + weight_decay w_{t-1})

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1, b2: moment decays in [0, 1). Defaults 0.9, 0.999.
    eps: added outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0.
    mu_dtype: optax's dtype of the first moment (see `adam`).
    weight_decay: decoupled decay, >= 0. Default 1e-4 (optax's; PyTorch's is 1e-2).
    mask: tree of bools (or a callable params -> tree) of the leaves that decay;
      `optimkit.weight_decay_mask` excludes biases and normalisation scales.
    nesterov: optax's Nesterov first moment. Default False.
    state_storage: "float32", "bfloat16", "8bit" or "4bit" (see `optimkit.state`).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.adamw(3e-4, b2=0.95, weight_decay=0.1, mask=optimkit.weight_decay_mask)

  Equals optax.adamw and torch.optim.AdamW.
  """
  return optax.chain(
      scale_by_adam(b1, b2, eps, eps_root, nesterov=nesterov, state_storage=state_storage,
                    mu_storage=mu_storage_of("adamw", mu_dtype)),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


adamw_8bit = shortcut(adamw, "adamw_8bit", state_storage="8bit", doc="""AdamW with blockwise
8-bit moments (Dettmers et al. 2022), about 2 bytes of state per parameter: `adamw(...,
state_storage="8bit")`, with every other argument of `adamw`.""")

adamw_4bit = shortcut(adamw, "adamw_4bit", state_storage="4bit", doc="""AdamW with 4-bit moments
(Li et al. 2023), about 1 byte of state per parameter: `adamw(..., state_storage="4bit")`,
with every other argument of `adamw`.""")


@optimizer(family="adaptive", typical_lr=1e-3, optax="radam",
           reference="torch.optim.RAdam; optax.radam")
def radam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """RAdam (Liu et al. 2020): Adam with the variance of its adaptive rate rectified.

      rho_t = rho_inf - 2 t b2^t / (1 - b2^t),  rho_inf = 2 / (1 - b2) - 1
      d_t = r_t m_hat / (sqrt(v_hat + eps_root) + eps)  if rho_t > threshold  else  m_hat
      w_t = w_{t-1} - lr (d_t + weight_decay w_{t-1})

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1, b2: moment decays in [0, 1). Defaults 0.9, 0.999.
    eps, eps_root: stabilisers outside / inside the root, >= 0. Defaults 1e-8, 0.
    threshold: rectify when rho_t exceeds it, >= 4. Default 5.
    nesterov: optax's Nesterov first moment. Default False.
    weight_decay: decoupled decay, >= 0. Default 0.
    mask: the leaves that decay.
    state_storage: storage format of the moments.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.radam(1e-3, eps=1e-10)   # torch.optim.RAdam's eps placement

  Equals optax.radam; torch.optim.RAdam puts eps before the bias correction (equal for eps
  small against sqrt(v)).
  """
  return optax.chain(
      scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov,
                     state_storage=state_storage),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


@optimizer(family="adaptive", typical_lr=1e-3, reference="torch-optimi Ranger",
           ranges={"alpha": dict(low=0.0, high=1.0)})
def ranger(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    sync_period: int = 6,
    alpha: float = 0.5,
    mask: Mask = None,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Ranger (Wright 2019): RAdam inside Lookahead (Zhang et al. 2019).

      fast weights: RAdam with decoupled decay;  every sync_period steps:
      slow <- slow + alpha (fast - slow), fast <- slow

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1, b2: RAdam's moment decays. Defaults 0.9, 0.99.
    eps: RAdam's stabiliser. Default 1e-6.
    weight_decay: decoupled decay, >= 0. Default 0.
    sync_period: k, steps between synchronisations, integer >= 1. Default 6.
    alpha: slow-weights step, [0, 1]. Default 0.5.
    mask: the leaves that decay.
    state_storage: storage format of RAdam's moments.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.ranger(1e-3)

  Defaults are torch-optimi's. optax has no Ranger (optax.lookahead needs a special params tree;
  this wraps an ordinary one).
  """
  return lookahead(optax.chain(scale_by_radam(b1, b2, eps, state_storage=state_storage),
                               optax.add_decayed_weights(weight_decay, mask),
                               optax.scale_by_learning_rate(learning_rate)),
                   sync_period, alpha)


@optimizer(family="adaptive", typical_lr=1e-3, reference="torch-optimi StableAdamW")
def stable_adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-6,
    weight_decay: float = 1e-2,
    mask: Mask = None,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """StableAdamW (Wortsman et al. 2023): AdamW with per-tensor update clipping.

      u_t = m_hat / (sqrt(v_hat) + eps);  r_t = max(1, RMS(g_t / sqrt(v_hat)))
      w_t = w_{t-1} - (lr / r_t) (u_t + weight_decay w_{t-1})

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1, b2: moment decays. Defaults 0.9, 0.99 (the paper's).
    eps: stabiliser, >= 0. Default 1e-6.
    weight_decay: decoupled decay, >= 0. Default 1e-2.
    mask: the leaves that decay.
    state_storage: storage format of the moments.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.stable_adamw(1e-3, weight_decay=0.1)

  Defaults are torch-optimi's; optax has no StableAdamW.
  """
  return optax.chain(
      scale_by_stable_adam(b1, b2, eps, weight_decay, mask, state_storage=state_storage),
      optax.scale_by_learning_rate(learning_rate))


@optimizer(family="adaptive", typical_lr=1e-3, optax="adan",
           optax_mode={"eps_root": 1e-8, "weight_decay": 0.0},
           optax_differs="optax weights the gradient difference by 1 - b2 (0.08) in the "
                         "direction and the squared term, where the paper and the authors' code "
                         "use b2 (0.92)",
           reference="torch-optimi Adan (the authors' algorithm)")
def adan(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.02,
    mask: Mask = None,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Adan (Xie et al. 2022) with the paper's proximal weight decay.

      m_t = b1 m + (1 - b1) g;  v_t = b2 v + (1 - b2)(g - g_prev);  n_t = b3 n + (1 - b3) z^2,
      z = g + b2 (g - g_prev);  u_t = (m_hat + b2 v_hat) / (sqrt(n_hat) + eps)
      w_t = (w_{t-1} - lr u_t) / (1 + lr weight_decay)

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1, b2, b3: decays of the gradient, gradient-difference and squared EMAs, [0, 1).
      Defaults 0.98, 0.92, 0.99 (the authors'; their paper writes 1 - b).
    eps: stabiliser, >= 0. Default 1e-8.
    eps_root: stabiliser inside the root, >= 0. Default 0 (the authors'; optax's is 1e-8).
    weight_decay: proximal decay, >= 0. Default 0.02 (the authors'; optax's is 0).
    mask: the leaves that decay.
    state_storage: storage format of the moments and the previous gradient.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.adan(1e-3)

  Where optax differs: optax.adan weights the gradient difference by 1 - b2 where the paper and
  the authors' code use b2 (u = m_hat + (1 - b2) v_hat: 0.08 against 0.92 at the defaults), has
  eps_root=1e-8 and no decay by default, and decays w <- w - lr (u + wd w) instead of the
  paper's proximal step. adan-pytorch skips the first
  step's moments; this follows the authors' algorithm as torch-optimi does.
  """
  # -lr (u + wd w) / (1 + lr wd) is the proximal step written as an update.
  return optax.chain(
      scale_by_adan(b1, b2, b3, eps, eps_root, state_storage=state_storage),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate),
      # learning_rate is an array here (the decorator passes a schedule's value).
      optax.scale(1.0 / (1.0 + learning_rate * weight_decay)))  # type: ignore[operator]


@optimizer(family="adaptive", typical_lr=1e-3, reference="adam-mini 1.1.1 (the authors')")
def adam_mini(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    blocks: Blocks = None,
    mask: Mask = None,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Adam-mini (Zhang et al. 2024): one second moment per parameter block.

      v_B = b2 v_B + (1 - b2) mean_{i in B} g_i^2;  d_i = m_hat_i / (sqrt(v_hat_B) + eps)

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1, b2: moment decays. Defaults 0.9, 0.999.
    eps: stabiliser, >= 0. Default 1e-8.
    weight_decay: decoupled decay, >= 0. Default 0.
    blocks: per leaf, the dims that index blocks (see `optimkit.adam_mini_blocks`, the
      default rule: per head for queries/keys, per output neuron, per token for embeddings).
    mask: the leaves that decay.
    state_storage: storage format of the first moment.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.adam_mini(1e-3, weight_decay=0.1)

  optax has no Adam-mini.
  """
  return optax.chain(
      scale_by_adam_mini(b1, b2, eps, blocks, state_storage=state_storage),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


adam_mini_4bit = shortcut(adam_mini, "adam_mini_4bit", state_storage="4bit", doc="""Adam-mini
with a 4-bit first moment: about 0.53 bytes of state per parameter on a Llama-2-7B-shaped tree
(0.5 for the first moment, one float32 per block for the second), against AdamW's 8 and
`adamw_4bit`'s 1.03. `adam_mini(..., state_storage="4bit")`, with every other argument of
`adam_mini`; AdamW's hyperparameters carry over (`optimkit.presets.adam_mini_4bit_from_adamw`).

The lowest-memory configuration found within 2% of AdamW's final loss on the reference task
(`benchmarks/frontier.py`, issue 22): 1,200 steps, three seeds, each at its tuned learning
rate, test loss +1.9% over AdamW's (the table and plot are in `benchmarks/RESULTS.md`).""")


@optimizer(family="adaptive", typical_lr=1e-3,
           reference="NumPy transcription of the paper (no package implements it)",
           derive={"one_pass": lambda args: uses_previous_ema(args["b1"], args["one_pass"])})
def adams(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.1,
    mask: Mask = None,
    *,
    one_pass: bool | None = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """AdamS (Zhang, Wang & Chen 2025): momentum normalised by sqrt(b2 m^2 + (1 - b2) g^2).

      m_t = b1 m_{t-1} + (1 - b1) g_t;  d_t = m_t / (sqrt(b2 m_{t-1}^2 + (1 - b2) g_t^2) + eps)

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1: momentum decay. Default 0.9.
    b2: weight of the old momentum in the normaliser. Default 0.95.
    eps: stabiliser, >= 0. Default 1e-8.
    weight_decay: decoupled decay, >= 0. Default 0.1 (AdamW's LLM setting, which the paper
      says AdamS inherits).
    mask: the leaves that decay.
    one_pass: read m_{t-1} recovered from m_t so the momentum updates in place in one pass;
      None (default): on when b1 >= 0.5 as given at construction.
    state_storage: storage format of the momentum.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.adams(1e-3)
  """
  return optax.chain(
      scale_by_adams(b1, b2, eps, state_storage=state_storage, one_pass=one_pass),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))
