"""Full optimizers: short, visible chains of the primitives in `optimkit.transforms`.

Every optimizer here
  - takes a float or a schedule (step -> value) as learning rate;
  - keeps its numeric hyperparameters in the state (`state.hyperparams[...]`), so they can be
    changed between steps of a jitted loop without recompiling (see `optimkit.hyperparams`);
  - applies weight decay decoupled from the gradient statistics, with an optional `mask`
    (a tree of bools or a callable params -> tree; `optimkit.weight_decay_mask` excludes biases
    and normalisation scales);
  - raises ValueError at construction for an invalid hyperparameter, and at the first update
    for a gradient tree that does not match the parameters, naming the first differing path;
  - stores its moments in the format `state_storage` names: "float32" (default), "bfloat16"
    (stochastic rounding), "8bit" or "4bit" (see `optimkit.state`).

Argument names follow optax wherever the concept is the same, so switching is one import.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import jax
import optax

from optimkit import _checks
from optimkit.hyperparams import inject_hyperparams, with_tree_check
from optimkit.sharding import with_explicit_axes
from optimkit.state import storage
from optimkit.state.storage import StorageLike
from optimkit.transforms._util import uses_previous_ema
from optimkit.transforms.adam_mini import Blocks, scale_by_adam_mini
from optimkit.transforms.adams import scale_by_adams
from optimkit.transforms.adan import scale_by_adan
from optimkit.transforms.factored import scale_by_factored_rms, scale_by_relative_step_size
from optimkit.transforms.hessian import HessianEstimator, scale_by_sophia
from optimkit.transforms.lookahead import lookahead
from optimkit.transforms.moments import (
    adam_direction, scale_by_adagrad, scale_by_adam, scale_by_ema, scale_by_momentum, scale_by_rms)
from optimkit.transforms.rectified import scale_by_radam
from optimkit.transforms.schedule_free import (
    schedule_free, schedule_free_with_recomputed_direction)
from optimkit.transforms.sign_momentum import scale_by_sign_momentum
from optimkit.transforms.trust_ratio import StackDims, scale_by_lars, scale_by_trust_ratio
from optimkit.transforms.update_clipping import scale_by_stable_adam

ScalarOrSchedule = Union[float, jax.Array, Callable[[jax.Array], jax.Array]]
Mask = Union[Any, Callable[[Any], Any], None]


def _build(owner: str, factory: Callable[..., optax.GradientTransformation],
           static_args: tuple[str, ...], **arguments) -> optax.GradientTransformationExtraArgs:
  """Validates, then wraps `factory` with hyperparameters-as-data and the tree check."""
  _checks.validate(owner, **arguments)
  if "state_storage" in arguments:
    try:
      storage.resolve(arguments["state_storage"])
    except ValueError as error:
      raise ValueError(f"{owner}: {error}") from None
  # Build once now so the primitives' own checks run at construction; schedules are checked
  # through their value at step 0. A primitive's error is prefixed with the optimizer the user
  # called, e.g. "ranger: lookahead: sync_period must be ...".
  try:
    factory(**{name: value(0) if callable(value) and name not in static_args else value
               for name, value in arguments.items()})
  except ValueError as error:
    raise ValueError(f"{owner}: {error}") from None
  injected = inject_hyperparams(factory, static_args=static_args)(**arguments)
  return with_explicit_axes(with_tree_check(owner, injected))


def _decay(weight_decay: Any, mask: Mask) -> optax.GradientTransformation:
  return optax.add_decayed_weights(weight_decay, mask)


def _decoupled(direction: optax.GradientTransformation, weight_decay: Any, mask: Mask,
               learning_rate: Any) -> optax.GradientTransformation:
  """The common tail: w <- w - lr * (direction + wd * w)."""
  return optax.chain(direction, _decay(weight_decay, mask),
                     optax.scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------------------------
# Classic family.


def sgd(
    learning_rate: ScalarOrSchedule = 1e-2,
    momentum: float | None = None,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """SGD with optional heavy-ball or Nesterov momentum and decoupled weight decay (SGDW).

      v <- momentum v + g;  w <- w - lr (v + wd w)   (Nesterov: g + momentum v in place of v)

  Reference: torch.optim.SGD (no decay; PyTorch's decay is coupled L2), torch-optimi SGD with
  `decouple_wd=True` (with decay).
  """

  def factory(learning_rate, momentum, nesterov, weight_decay, mask, state_storage):
    parts = []
    if momentum is not None:
      parts.append(scale_by_momentum(momentum, nesterov, storage=state_storage))
    parts += [_decay(weight_decay, mask), optax.scale_by_learning_rate(learning_rate)]
    return optax.chain(*parts)

  return _build("sgd", factory, ("mask", "state_storage"), learning_rate=learning_rate,
                momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, mask=mask,
                state_storage=state_storage)


def adagrad(
    learning_rate: ScalarOrSchedule = 1e-2,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    eps_in_sqrt: bool = True,
    weight_decay: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """AdaGrad (Duchi et al. 2011): w <- w - lr (g / sqrt(sum g^2 + eps) + wd w).

  Defaults are optax's; `initial_accumulator_value=0, eps=1e-10, eps_in_sqrt=False` is
  torch.optim.Adagrad. Reference: both.
  """

  def factory(learning_rate, initial_accumulator_value, eps, eps_in_sqrt, weight_decay, mask,
              state_storage):
    direction = scale_by_adagrad(initial_accumulator_value, eps, eps_in_sqrt, storage=state_storage)
    return _decoupled(direction, weight_decay, mask, learning_rate)

  return _build("adagrad", factory, ("mask", "state_storage"), learning_rate=learning_rate,
                initial_accumulator_value=initial_accumulator_value, eps=eps,
                eps_in_sqrt=eps_in_sqrt, weight_decay=weight_decay, mask=mask,
                state_storage=state_storage)


def rmsprop(
    learning_rate: ScalarOrSchedule = 1e-2,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """RMSprop (Hinton 2012), optionally centered and with momentum; see `scale_by_rms`.

  Defaults are optax's; `decay=0.99, eps_in_sqrt=False` is torch.optim.RMSprop. Reference: both.
  """

  def factory(learning_rate, decay, eps, initial_scale, eps_in_sqrt, centered, momentum,
              nesterov, weight_decay, mask, state_storage):
    return _decoupled(scale_by_rms(decay, eps, initial_scale, eps_in_sqrt, centered,
                      momentum or 0.0, nesterov, storage=state_storage), weight_decay, mask,
                          learning_rate)

  # momentum decides whether a buffer exists, so it is structural (static), as in optax.
  return _build("rmsprop", factory, ("mask", "momentum", "state_storage"),
                learning_rate=learning_rate, decay=decay, eps=eps, initial_scale=initial_scale,
                eps_in_sqrt=eps_in_sqrt, centered=centered, momentum=momentum, nesterov=nesterov,
                weight_decay=weight_decay, mask=mask, state_storage=state_storage)


def adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """Adam (Kingma & Ba 2015). Reference: torch.optim.Adam, optax.adam."""

  def factory(learning_rate, b1, b2, eps, eps_root, state_storage):
    return optax.chain(scale_by_adam(b1, b2, eps, eps_root, storage=state_storage),
                       optax.scale_by_learning_rate(learning_rate))

  return _build("adam", factory, ("state_storage",), learning_rate=learning_rate, b1=b1, b2=b2,
                eps=eps, eps_root=eps_root, state_storage=state_storage)


def adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 1e-4,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """AdamW (Loshchilov & Hutter 2019): w <- w - lr (m_hat / (sqrt(v_hat) + eps) + wd w).

  Default weight decay 1e-4 is optax's (PyTorch's is 1e-2). Reference: torch.optim.AdamW,
  optax.adamw.
  """

  def factory(learning_rate, b1, b2, eps, eps_root, weight_decay, mask, state_storage):
    return _decoupled(scale_by_adam(b1, b2, eps, eps_root, storage=state_storage), weight_decay,
                      mask, learning_rate)

  return _build("adamw", factory, ("mask", "state_storage"), learning_rate=learning_rate, b1=b1,
                b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay, mask=mask,
                state_storage=state_storage)


# ----------------------------------------------------------------------------------------------
# The five primitives as optimizers.


def lion(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: float = 0.9,
    b2: float = 0.99,
    weight_decay: float = 1e-3,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """Lion (Chen et al. 2023): w <- w - lr (sign(b1 m + (1 - b1) g) + wd w).

  Reference: lion-pytorch, optax.lion. Default weight decay is optax's.
  """

  # b2 is an array inside the step (hyperparameters are data), so the one-pass form is chosen
  # here, from the value given.
  one_pass = uses_previous_ema(b2, None)

  def factory(learning_rate, b1, b2, weight_decay, mask, state_storage):
    direction = scale_by_sign_momentum(b1, b2, storage=state_storage, one_pass=one_pass)
    return _decoupled(direction, weight_decay, mask, learning_rate)

  return _build("lion", factory, ("mask", "state_storage"), learning_rate=learning_rate, b1=b1,
                b2=b2, weight_decay=weight_decay, mask=mask, state_storage=state_storage)


def adafactor(
    learning_rate: ScalarOrSchedule = 1e-2,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    weight_decay: float = 0.0,
    eps: float = 1e-30,
    eps_scale: float = 1e-3,
    factored: bool = True,
    relative_step: bool = True,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """Adafactor (Shazeer & Stern 2018); see `optimkit.transforms.factored` for the equations.

      w <- w - alpha_t * clip(g / sqrt(V)) - learning_rate * weight_decay * w

  With `relative_step=True` (default, the paper's and PyTorch's) the step is
  rho_t = min(learning_rate, 1/sqrt(t)); with False it is learning_rate (optax's behaviour).
  `momentum` adds an EMA (no debiasing) of the scaled update, as optax does. Weight decay is
  multiplied by learning_rate as in PyTorch (optax's `weight_decay_rate` is not).
  Reference: torch.optim.Adafactor, optax.adafactor.
  """

  def factory(learning_rate, min_dim_size_to_factor, decay_rate, decay_offset,
              multiply_by_parameter_scale, clipping_threshold, momentum, weight_decay, eps,
              eps_scale, factored, relative_step, mask, state_storage):
    parts = [
        scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps,
                              clipping_threshold),
        scale_by_relative_step_size(learning_rate, relative_step, multiply_by_parameter_scale,
                                    eps_scale),
    ]
    if momentum is not None:
      parts.append(scale_by_ema(momentum, storage=state_storage))
    parts += [_decay(learning_rate * weight_decay, mask), optax.scale(-1.0)]
    return optax.chain(*parts)

  return _build("adafactor", factory, ("mask", "min_dim_size_to_factor", "decay_offset",
                "momentum"), learning_rate=learning_rate,
                min_dim_size_to_factor=min_dim_size_to_factor, decay_rate=decay_rate,
                decay_offset=decay_offset, multiply_by_parameter_scale=multiply_by_parameter_scale,
                clipping_threshold=clipping_threshold, momentum=momentum,
                weight_decay=weight_decay, eps=eps, eps_scale=eps_scale, factored=factored,
                relative_step=relative_step, mask=mask, state_storage=state_storage)


def lamb(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: Mask = None,
    stack_dims: StackDims = 0,
    trust_mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """LAMB (You et al. 2019): Adam's ratio plus decay, scaled per layer by ||w|| / ||u||.

  `stack_dims` gives one ratio per slice of scan-stacked layers (see `scale_by_trust_ratio`);
  `trust_mask` chooses the leaves that get a ratio. Reference: optax.lamb (per leaf and, for
  stacks, against the unstacked model).
  """

  def factory(learning_rate, b1, b2, eps, eps_root, weight_decay, mask, stack_dims, trust_mask,
              state_storage):
    return optax.chain(
        scale_by_adam(b1, b2, eps, eps_root, storage=state_storage),
        _decay(weight_decay, mask),
        scale_by_trust_ratio(stack_dims=stack_dims, mask=trust_mask),
        optax.scale_by_learning_rate(learning_rate),
    )

  return _build("lamb", factory, ("mask", "stack_dims", "trust_mask", "state_storage"),
                learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root,
                weight_decay=weight_decay, mask=mask, stack_dims=stack_dims, trust_mask=trust_mask,
                state_storage=state_storage)


def lars(
    learning_rate: ScalarOrSchedule = 1e-1,
    weight_decay: float = 0.0,
    mask: Mask = None,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_mask: Mask = None,
    momentum: float = 0.9,
    nesterov: bool = False,
    stack_dims: StackDims = 0,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """LARS (You et al. 2017, Algorithm 1):
  v <- momentum v + lr * eta ||w|| / (||g|| + wd ||w||) (g + wd w);  w <- w - v.

  optax.lars divides by ||g + wd w|| instead; this follows the paper. Reference:
  pytorch-optimizer's LARS (with `mask` and `trust_mask` excluding rank-1 leaves, as it does).
  """

  def factory(learning_rate, weight_decay, mask, trust_coefficient, eps, trust_mask, momentum,
              nesterov, stack_dims, state_storage):
    return optax.chain(
        scale_by_lars(trust_coefficient, weight_decay, eps, mask, trust_mask, stack_dims),
        optax.scale_by_learning_rate(learning_rate),
        scale_by_momentum(momentum, nesterov, storage=state_storage),
    )

  return _build("lars", factory, ("mask", "stack_dims", "trust_mask", "state_storage"),
                learning_rate=learning_rate, weight_decay=weight_decay, mask=mask,
                trust_coefficient=trust_coefficient, eps=eps, trust_mask=trust_mask,
                momentum=momentum, nesterov=nesterov, stack_dims=stack_dims,
                state_storage=state_storage)


_SOPHIA_GAMMA = {"gnb": 0.04, "hutchinson": 0.01}


def sophia(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: float = 0.965,
    b2: float = 0.99,
    gamma: float | None = None,
    eps: float = 1e-15,
    weight_decay: float = 0.1,
    update_interval: int = 10,
    estimator: Union[str, HessianEstimator] = "gnb",
    seed: int | None = None,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """Sophia (Liu et al. 2023): w <- w - lr (clip(m / (gamma h + eps), 1) + wd w).

  `estimator="gnb"` is Sophia-G (pass `logits_fn=` to update), `"hutchinson"` Sophia-H (pass
  `loss_fn=`). `gamma` defaults to 0.04 for GNB (authors' code) and 0.01 for Hutchinson (paper).
  Randomness comes from `key=` passed to update, or from `seed=`. Defaults are the authors'.
  Reference: sophia-opt (the authors' SophiaG).
  """
  if gamma is None:
    gamma = _SOPHIA_GAMMA.get(estimator, 0.04) if isinstance(estimator, str) else 0.04

  def factory(learning_rate, b1, b2, gamma, eps, weight_decay, update_interval, estimator, seed,
              mask, state_storage):
    direction = scale_by_sophia(b1, b2, gamma, eps, update_interval, estimator, seed,
                                storage=state_storage)
    return _decoupled(direction, weight_decay, mask, learning_rate)

  return _build("sophia", factory, ("mask", "update_interval", "estimator", "seed",
                "state_storage"), learning_rate=learning_rate, b1=b1, b2=b2, gamma=gamma, eps=eps,
                weight_decay=weight_decay, update_interval=update_interval, estimator=estimator,
                seed=seed, mask=mask, state_storage=state_storage)


def schedule_free_adamw(
    learning_rate: ScalarOrSchedule = 0.0025,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """Schedule-free AdamW (Defazio et al. 2024) exactly as the authors' AdamWScheduleFree.

      d = g / (sqrt(v / (1 - b2^t)) + eps) + wd y, then `schedule_free` averaging.

  Train on the returned params (y); evaluate and checkpoint
  `optimkit.schedule_free_eval_params(state, params)` (x). Reference: schedulefree 1.4.
  """

  def factory(learning_rate, b1, b2, eps, weight_decay, warmup_steps, r, weight_lr_power, mask,
              state_storage):
    adam = scale_by_adam(0.0, b2, eps, storage=state_storage)
    decay = _decay(weight_decay, mask)
    averaging = schedule_free(learning_rate, b1, weight_lr_power, r, warmup_steps)
    store = storage.resolve(state_storage)
    if store.name != "float32":  # rounded moments: d cannot be recomputed from the state
      return optax.chain(adam, decay, averaging)

    def direction_from_states(grads, states, params):  # what adam then decay output
      adam_state, decay_state = states
      nu = store.read(adam_state.nu, grads, signed=False)
      direction = adam_direction(grads, grads, nu, adam_state.count, 0.0, b2, eps, 0.0)
      return decay.update(direction, decay_state, params)[0]

    return schedule_free_with_recomputed_direction((adam, decay), averaging,
                                                   direction_from_states)

  return _build("schedule_free_adamw", factory, ("mask", "state_storage"),
                learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power, mask=mask,
                state_storage=state_storage)


def schedule_free_sgd(
    learning_rate: ScalarOrSchedule = 1.0,
    b1: float = 0.9,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """Schedule-free SGD (Defazio et al. 2024) as the authors' SGDScheduleFree (their `momentum`
  is `b1` here, as in optax). Reference: schedulefree 1.4."""

  def factory(learning_rate, b1, weight_decay, warmup_steps, r, weight_lr_power, mask,
              state_storage):
    return optax.chain(
        _decay(weight_decay, mask),
        schedule_free(learning_rate, b1, weight_lr_power, r, warmup_steps),
    )

  return _build("schedule_free_sgd", factory, ("mask", "state_storage"),
                learning_rate=learning_rate, b1=b1, weight_decay=weight_decay,
                warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power, mask=mask,
                state_storage=state_storage)


# ----------------------------------------------------------------------------------------------
# The modern family.


def stable_adamw(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-6,
    weight_decay: float = 1e-2,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """StableAdamW (Wortsman et al. 2023): AdamW with per-tensor update clipping, on device.

  Defaults are torch-optimi's. Reference: torch-optimi StableAdamW.
  """

  def factory(learning_rate, b1, b2, eps, weight_decay, mask, state_storage):
    return optax.chain(scale_by_stable_adam(b1, b2, eps, weight_decay, mask, storage=state_storage),
                       optax.scale_by_learning_rate(learning_rate))

  return _build("stable_adamw", factory, ("mask", "state_storage"), learning_rate=learning_rate,
                b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask,
                state_storage=state_storage)


def adan(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.02,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """Adan (Xie et al. 2022) with the paper's proximal weight decay:
  w <- (w - lr u) / (1 + lr wd). Defaults are the authors'. Reference: torch-optimi Adan."""

  def factory(learning_rate, b1, b2, b3, eps, weight_decay, mask, state_storage):
    # -lr (u + wd w) / (1 + lr wd) is the proximal step written as an update.
    return optax.chain(
        scale_by_adan(b1, b2, b3, eps, storage=state_storage),
        _decay(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
        optax.scale(1.0 / (1.0 + learning_rate * weight_decay)),
    )

  return _build("adan", factory, ("mask", "state_storage"), learning_rate=learning_rate, b1=b1,
                b2=b2, b3=b3, eps=eps, weight_decay=weight_decay, mask=mask,
                state_storage=state_storage)


def radam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    threshold: float = 5.0,
    weight_decay: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """RAdam (Liu et al. 2020) with decoupled weight decay. Reference: torch.optim.RAdam,
  optax.radam."""

  def factory(learning_rate, b1, b2, eps, threshold, weight_decay, mask, state_storage):
    return _decoupled(scale_by_radam(b1, b2, eps, threshold, storage=state_storage), weight_decay,
                      mask, learning_rate)

  return _build("radam", factory, ("mask", "threshold", "state_storage"),
                learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, threshold=threshold,
                weight_decay=weight_decay, mask=mask, state_storage=state_storage)


def ranger(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    sync_period: int = 6,
    alpha: float = 0.5,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """Ranger: RAdam inside Lookahead (k = 6, alpha = 0.5) on an ordinary params tree.

  Defaults are torch-optimi's. Reference: torch-optimi Ranger.
  """

  def factory(learning_rate, b1, b2, eps, weight_decay, sync_period, alpha, mask, state_storage):
    direction = scale_by_radam(b1, b2, eps, storage=state_storage)
    return lookahead(_decoupled(direction, weight_decay, mask, learning_rate), sync_period, alpha)

  return _build("ranger", factory, ("mask", "sync_period", "alpha", "state_storage"),
                learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                sync_period=sync_period, alpha=alpha, mask=mask, state_storage=state_storage)


def adam_mini(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    blocks: Blocks = None,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """Adam-mini (Zhang et al. 2024): one second moment per block; see
  `optimkit.transforms.adam_mini` for the block rules. Reference: the `adam-mini` package."""

  def factory(learning_rate, b1, b2, eps, weight_decay, blocks, mask, state_storage):
    direction = scale_by_adam_mini(b1, b2, eps, blocks, storage=state_storage)
    return _decoupled(direction, weight_decay, mask, learning_rate)

  return _build("adam_mini", factory, ("mask", "blocks", "state_storage"),
                learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                blocks=blocks, mask=mask, state_storage=state_storage)


def adams(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.1,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformationExtraArgs:
  """AdamS (Zhang, Wang & Chen 2025): momentum-normalised steps with SGD-momentum memory.

  Defaults are AdamW's LLM settings, which the paper says AdamS inherits."""

  one_pass = uses_previous_ema(b1, None)  # chosen from the value given, as in `lion`

  def factory(learning_rate, b1, b2, eps, weight_decay, mask, state_storage):
    direction = scale_by_adams(b1, b2, eps, storage=state_storage, one_pass=one_pass)
    return _decoupled(direction, weight_decay, mask, learning_rate)

  return _build("adams", factory, ("mask", "state_storage"), learning_rate=learning_rate, b1=b1,
                b2=b2, eps=eps, weight_decay=weight_decay, mask=mask, state_storage=state_storage)


# ----------------------------------------------------------------------------------------------
# The names people search for.


def _fixed_storage(owner: str, kwargs: dict) -> None:
  if "state_storage" in kwargs:
    raise ValueError(f"{owner}: state_storage is fixed by the name; for another format call the "
                     f"base optimizer with state_storage=..., got {kwargs['state_storage']!r}")


def adamw_8bit(learning_rate: ScalarOrSchedule = 1e-3, **kwargs
               ) -> optax.GradientTransformationExtraArgs:
  """AdamW with blockwise 8-bit moments (~2 bytes of state per parameter)."""
  _fixed_storage("adamw_8bit", kwargs)
  return adamw(learning_rate, state_storage="8bit", **kwargs)


def adamw_4bit(learning_rate: ScalarOrSchedule = 1e-3, **kwargs
               ) -> optax.GradientTransformationExtraArgs:
  """AdamW with 4-bit moments (~1 byte of state per parameter)."""
  _fixed_storage("adamw_4bit", kwargs)
  return adamw(learning_rate, state_storage="4bit", **kwargs)


def lion_8bit(learning_rate: ScalarOrSchedule = 1e-4, **kwargs
              ) -> optax.GradientTransformationExtraArgs:
  """Lion with a blockwise 8-bit momentum (~1 byte of state per parameter)."""
  _fixed_storage("lion_8bit", kwargs)
  return lion(learning_rate, state_storage="8bit", **kwargs)
