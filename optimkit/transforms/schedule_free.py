"""Schedule-free averaging (Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky 2024, "The Road
Less Scheduled", arXiv:2405.15682), following the authors' reference implementation (the
`schedulefree` package, AdamWScheduleFree / SGDScheduleFree, version 1.4).

The parameters the model sees (and where gradients are taken) are y; the state holds the base
sequence z; the averaged sequence x, the one to evaluate and checkpoint, is recovered from y and
z. Given the preconditioned direction d_t (weight decay at y already added) and step k = t - 1:

    lr_k     = learning_rate * min(1, (k + 1) / warmup_steps)
    lr_max   = max(lr_max, lr_k)
    w_k      = (k + 1)^r * lr_max^weight_lr_power
    c_k      = w_k / sum_{i <= k} w_i                    (0 while the sum is 0)
    y       <- (1 - c_k) y + c_k z + lr_k (b1 (1 - c_k) - 1) d_t
    z       <- z - lr_k d_t
    x        = y + (1 - 1/b1) (z - y)                    (`schedule_free_eval_params`)

Where optax differs (and we do not): optax.contrib.schedule_free has no warmup and no
polynomial weighting `r`, takes the learning rate from a base optimizer that already applied it,
and its schedule_free_adamw applies weight decay inside the base optimizer rather than at y as
the authors do.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.transforms._util import find_state, increment, map_like


class ScheduleFreeState(NamedTuple):
  """State of `schedule_free`.

    count: steps so far (k).
    z: the base sequence, shaped like the params.
    weight_sum: running sum of averaging weights.
    lr_max: largest learning rate seen (-1 before the first step, as in the authors' code).
    b1: the interpolation b1 of the last step, needed to recover x for evaluation.
  """

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  z: Any
  weight_sum: jax.Array
  lr_max: jax.Array
  b1: jax.Array


def schedule_free(
    learning_rate: float | Callable[[jax.Array], jax.Array] = 0.0025,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    r: float = 0.0,
    warmup_steps: int = 0,
) -> optax.GradientTransformation:
  """Schedule-free averaging of a preconditioned direction; the output is y_new - y.

  Put it last in a chain, after the preconditioner and weight decay (see
  `optimkit.schedule_free_adamw`); it applies the learning rate and the sign itself.

  Args:
    learning_rate: base learning rate (a float or a schedule of the step), >= 0. Default 0.0025.
    b1: interpolation between z and x for y, in (0, 1). Default 0.9.
    weight_lr_power: power of lr_max in the averaging weights, >= 0. Default 2.
    r: power of the step in the averaging weights, >= 0. Default 0.
    warmup_steps: linear warmup length, >= 0. Default 0.
  """
  owner = "schedule_free"
  _checks.check_learning_rate(owner, learning_rate)
  _checks.check_range(owner, "b1", b1, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
  _checks.check_non_negative(owner, "weight_lr_power", weight_lr_power)
  _checks.check_non_negative(owner, "r", r)
  _checks.check_non_negative(owner, "warmup_steps", warmup_steps)

  def init_fn(params):
    float_type = jnp.result_type(float)
    return ScheduleFreeState(
        count=jnp.zeros([], jnp.int32),
        z=jax.tree.map(jnp.array, params),
        weight_sum=jnp.zeros([], float_type),
        lr_max=jnp.full([], -1.0, float_type),
        b1=jnp.asarray(b1, float_type),
    )

  def update_fn(updates, state, params=None, y_direction=None, **extra_args):
    """`y_direction`: the same direction as `updates`, computed apart (see
    `schedule_free_with_recomputed_direction`); the y update reads it instead."""
    del extra_args
    if params is None:
      raise ValueError(f"{owner}: update() needs params (the current y).")
    float_type = jnp.result_type(float)
    step = state.count.astype(float_type)
    base_rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
    warmup = jnp.asarray(warmup_steps, float_type)
    schedule = jnp.where(step < warmup, (step + 1.0) / jnp.maximum(warmup, 1.0), 1.0)
    rate = base_rate * schedule
    lr_max = jnp.maximum(rate, state.lr_max).astype(float_type)
    weight = (step + 1.0) ** r * lr_max ** weight_lr_power
    weight_sum = (state.weight_sum + weight).astype(float_type)
    ckp1 = jnp.where(weight_sum != 0, weight / jnp.where(weight_sum != 0, weight_sum, 1.0), 0.0)
    z = map_like(lambda z, d: z - rate * d, state.z, updates)
    # y_new - y = c (z - y) + lr (b1 (1 - c) - 1) d, written with the new z (z = z_new + lr d):
    # c (z_new - y) - lr (1 - c)(1 - b1) d. The same in exact arithmetic; it lets XLA update
    # z and then y in place, where reading the old z after z's update forced a copy of z and
    # of the params (measured: 1.7x optax's step time before, see benchmarks/RESULTS.md).
    d_coefficient = -rate * (1.0 - ckp1) * (1.0 - b1)
    y_direction = updates if y_direction is None else y_direction
    new_updates = map_like(
        lambda d, y, z_new: ckp1 * (z_new - y) + d_coefficient * d, y_direction, params, z)
    return new_updates, ScheduleFreeState(
        count=increment(state.count), z=z, weight_sum=weight_sum, lr_max=lr_max,
        b1=jnp.asarray(b1, float_type))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def schedule_free_with_recomputed_direction(
    preconditioners: tuple[optax.GradientTransformation, ...],
    averaging: optax.GradientTransformation,
    direction_from_states: Callable[[Any, tuple, Any], Any],
) -> optax.GradientTransformation:
  """`optax.chain(*preconditioners, averaging)`, same state and values, in fewer passes.

  Both the z and the y update read the direction d. Computed once, d is one array with two
  readers, which XLA writes out and reads back (for schedule-free AdamW: 2x the step time on
  CPU, 55 ms against 28 ms on 25M parameters); XLA will not compute a division and a square
  root twice on its own. So the y update gets d again from `direction_from_states(grads,
  new preconditioner states, params)`, evaluated on values passed through an optimization
  barrier, so that it is not merged with the first d and each update fuses its own.
  `direction_from_states` must give exactly the preconditioners' output from their new states
  (true for float32 moments; not for quantized ones, whose stored values are rounded).
  """
  def init_fn(params):
    return tuple(t.init(params) for t in preconditioners) + (averaging.init(params),)

  def update_fn(updates, state, params=None, **extra_args):
    grads, direction, new_states = updates, updates, []
    for transform, inner in zip(preconditioners, state[:-1]):
      direction, inner = transform.update(direction, inner, params)
      new_states.append(inner)
    again = direction_from_states(*jax.lax.optimization_barrier((grads, tuple(new_states),
                                                                 params)))
    new_updates, averaged = averaging.update(direction, state[-1], params, y_direction=again)
    return new_updates, tuple(new_states) + (averaged,)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def schedule_free_eval_params(state: Any, params: Any) -> Any:
  """The averaged parameters x to evaluate and checkpoint with, from the training params y.

  `state` may be the full optimizer state (any nesting of chains and injected hyperparameters);
  the schedule-free part is found inside it.
  """
  sf_state = find_state(state, ScheduleFreeState)
  if sf_state is None:
    raise ValueError(
        "schedule_free_eval_params: the optimizer state has no schedule-free part; it works "
        "with states of schedule_free_adamw, schedule_free_sgd or a chain holding schedule_free.")
  from optimkit import flax as flax_support  # imports no Flax itself

  b1 = sf_state.b1
  # Params as `nnx.split` returns them hold Variables, the state plain values (init ran on the
  # values): average the values, return them in the params' containers.
  averaged = jax.tree.map(lambda y, z: (y + (1.0 - 1.0 / b1) * (z - y)).astype(y.dtype),
                          flax_support.values_of(params), flax_support.values_of(sf_state.z))
  return flax_support.like(params, averaged)
