"""Schedule-free optimizers (Defazio et al. 2024): AdamW and SGD without a learning-rate
schedule, following the authors' `schedulefree` package."""

from __future__ import annotations

from typing import Any

import optax

from optimkit.optimizers._declare import Mask, ScalarOrSchedule, optimizer, storage_of
from optimkit.state import storage
from optimkit.state.storage import StorageLike
from optimkit.transforms.moments import adam_direction, scale_by_adam
from optimkit.transforms.schedule_free import schedule_free, schedule_free_with_recomputed_direction


@optimizer(family="schedule_free", typical_lr=2.5e-3, optax="contrib.schedule_free_adamw",
           reference="schedulefree 1.4.1 (the authors' AdamWScheduleFree), incl. eval() weights",
           optax_differs="optax applies weight decay inside the base optimizer, the authors at y")
def schedule_free_adamw(
    learning_rate: ScalarOrSchedule = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
    *,
    r: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Schedule-free AdamW (Defazio et al. 2024, "The Road Less Scheduled"), as the authors'.

      d_t = g_t / (sqrt(v_t / (1 - b2^t)) + eps) + weight_decay y_t
      then `optimkit.schedule_free` averaging of d_t (see its docstring for y, z, x).

  Train on the returned params (y); evaluate and checkpoint
  `optimkit.schedule_free_eval_params(state, params)` (x).

  Args:
    learning_rate: a float >= 0 or a schedule (usually constant). Default 0.0025.
    warmup_steps: linear warmup length, integer >= 0 or None (0). Default None.
    b1: interpolation between y and z, [0, 1). Default 0.9.
    b2: second-moment decay, [0, 1). Default 0.999.
    eps: stabiliser, >= 0. Default 1e-8.
    weight_decay: decay applied at y, >= 0. Default 0.
    weight_lr_power: power of lr_max in the averaging weights, >= 0. Default 2.
    state_dtype: optax's dtype of the state (bfloat16: optimkit's bfloat16 storage of v).
    r: power of the step in the averaging weights, >= 0. Default 0.
    mask: the leaves that decay.
    state_storage: storage format of v.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.schedule_free_adamw(2.5e-3, warmup_steps=1000)

  Where optax differs: optax.contrib applies weight decay inside the base optimizer; the
  authors (and optimkit) at y.
  """
  state_storage = storage_of("schedule_free_adamw", "state_dtype", state_dtype, state_storage)
  adam = scale_by_adam(0.0, b2, eps, state_storage=state_storage)
  decay = optax.add_decayed_weights(weight_decay, mask)
  # learning_rate is an array here (the decorator passes a schedule's value).
  averaging = schedule_free(learning_rate, b1, weight_lr_power, r,  # type: ignore[arg-type]
                            0 if warmup_steps is None else warmup_steps)
  store = storage.resolve(state_storage)
  if store.name != "float32":  # rounded moments: d cannot be recomputed from the state
    return optax.chain(adam, decay, averaging)

  def direction_from_states(grads, states, params):  # what adam then decay output
    adam_state, decay_state = states
    nu = store.read(adam_state.nu, grads, signed=False)
    direction = adam_direction(grads, grads, nu, adam_state.count, 0.0, b2, eps, 0.0)
    return decay.update(direction, decay_state, params)[0]

  return schedule_free_with_recomputed_direction((adam, decay), averaging, direction_from_states)


@optimizer(family="schedule_free", typical_lr=1.0, optax="contrib.schedule_free_sgd",
           reference="schedulefree 1.4.1 (the authors' SGDScheduleFree)")
def schedule_free_sgd(
    learning_rate: ScalarOrSchedule = 1.0,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    weight_decay: float | None = None,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
    *,
    r: float = 0.0,
    mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Schedule-free SGD (Defazio et al. 2024), as the authors' SGDScheduleFree (their
  `momentum` is `b1` here, as in optax).

      d_t = g_t + weight_decay y_t, then `optimkit.schedule_free` averaging.

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1.0.
    warmup_steps: linear warmup length, integer >= 0 or None (0). Default None.
    b1: interpolation between y and z, [0, 1). Default 0.9.
    weight_decay: decay at y, >= 0, or None (0). Default None.
    weight_lr_power: power of lr_max in the averaging weights, >= 0. Default 2.
    state_dtype: accepted for optax's signature; z is kept in the params' dtype or float32.
    r: power of the step in the averaging weights, >= 0. Default 0.
    mask: the leaves that decay.
    state_storage: accepted for a uniform signature (SGD has no moments).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.schedule_free_sgd(1.0, warmup_steps=100)
  """
  storage_of("schedule_free_sgd", "state_dtype", state_dtype, state_storage)
  return optax.chain(
      optax.add_decayed_weights(0.0 if weight_decay is None else weight_decay, mask),
      # learning_rate is an array here (the decorator passes a schedule's value).
      schedule_free(learning_rate, b1, weight_lr_power, r,  # type: ignore[arg-type]
                    0 if warmup_steps is None else warmup_steps))
