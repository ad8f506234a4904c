"""Learning-rate schedules: plain functions `step -> value`, jit-able with a traced step.

Every maker validates its arguments at construction (ValueError naming the argument) and uses
the same names: `init_value`, `peak_value`, `end_value`, `warmup_steps`, `decay_steps`,
`total_steps`. Past its end a schedule holds its last value (PyTorch's CosineAnnealingLR would
climb back up; a training loop that runs long should not see its learning rate rise).

PyTorch equivalents (checked in tests/test_schedules.py):
  linear          LinearLR (factors times the base lr)
  cosine          CosineAnnealingLR (T_max = decay_steps, eta_min = end_value)
  onecycle        OneCycleLR (cos and linear annealing, three_phase)
  step_decay      StepLR (step_size) and MultiStepLR (milestones)
  exponential     ExponentialLR
  polynomial      PolynomialLR (end_value 0)
  cosine_restarts CosineAnnealingWarmRestarts (T_0, T_mult, eta_min)
  join            SequentialLR (each schedule restarts its count at its boundary)
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from optimkit import _checks

Schedule = Callable[[jax.Array], jax.Array]


def _float_step(step) -> jax.Array:
  return jnp.asarray(step).astype(jnp.result_type(float))


def _check_steps(owner: str, name: str, value, low: int = 1) -> None:
  _checks.check_int_at_least(owner, name, value, low)


def _check_value(owner: str, name: str, value) -> None:
  _checks.check_non_negative(owner, name, value)


def constant(value: float) -> Schedule:
  """value at every step."""
  _check_value("constant", "value", value)
  return lambda step: jnp.zeros_like(_float_step(step)) + value


def linear(init_value: float, end_value: float, transition_steps: int,
           transition_begin: int = 0) -> Schedule:
  """From init_value to end_value linearly over transition_steps, starting at transition_begin."""
  owner = "linear"
  _check_value(owner, "init_value", init_value)
  _check_value(owner, "end_value", end_value)
  _check_steps(owner, "transition_steps", transition_steps)
  _check_steps(owner, "transition_begin", transition_begin, 0)

  def schedule(step):
    fraction = jnp.clip((_float_step(step) - transition_begin) / transition_steps, 0.0, 1.0)
    return init_value + (end_value - init_value) * fraction

  return schedule


def cosine(init_value: float, decay_steps: int, end_value: float = 0.0,
           exponent: float = 1.0) -> Schedule:
  """Half a cosine from init_value to end_value over decay_steps (SGDR without restarts)."""
  owner = "cosine"
  _check_value(owner, "init_value", init_value)
  _check_value(owner, "end_value", end_value)
  _check_steps(owner, "decay_steps", decay_steps)
  _checks.check_range(owner, "exponent", exponent, 0.0, low_inclusive=False)

  def schedule(step):
    fraction = jnp.clip(_float_step(step) / decay_steps, 0.0, 1.0)
    shape = (0.5 * (1.0 + jnp.cos(jnp.pi * fraction))) ** exponent
    return end_value + (init_value - end_value) * shape

  return schedule


def warmup_cosine(init_value: float, peak_value: float, warmup_steps: int, total_steps: int,
                  end_value: float = 0.0) -> Schedule:
  """Linear warmup from init_value to peak_value, then cosine to end_value at total_steps."""
  owner = "warmup_cosine"
  _check_value(owner, "init_value", init_value)
  _check_value(owner, "peak_value", peak_value)
  _check_value(owner, "end_value", end_value)
  _check_steps(owner, "warmup_steps", warmup_steps, 0)
  _check_steps(owner, "total_steps", total_steps)
  if total_steps <= warmup_steps:
    raise ValueError(f"{owner}: total_steps must be > warmup_steps, got total_steps="
                     f"{total_steps} and warmup_steps={warmup_steps}")
  warm = linear(init_value, peak_value, max(warmup_steps, 1))
  decay = cosine(peak_value, total_steps - warmup_steps, end_value)
  return join([warm, decay], [warmup_steps])


DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def wsd(peak_value: float, total_steps: int, warmup_steps: int = 0,
        decay_steps: int | None = None, decay_fraction: float | None = 0.2,
        init_value: float = 0.0, end_value: float = 0.0,
        decay_shape: str = "1-sqrt") -> Schedule:
  """Warmup-stable-decay (Hu et al. 2024, MiniCPM; Hägele et al. 2024): linear warmup to
  peak_value, constant, then a final decay to end_value over `decay_steps` (or
  `decay_fraction` of total_steps) with shape "linear", "cosine" or "1-sqrt"
  (1 - sqrt(fraction), Hägele et al.'s best)."""
  owner = "wsd"
  _check_value(owner, "peak_value", peak_value)
  _check_value(owner, "init_value", init_value)
  _check_value(owner, "end_value", end_value)
  _check_steps(owner, "total_steps", total_steps)
  _check_steps(owner, "warmup_steps", warmup_steps, 0)
  if decay_shape not in DECAY_SHAPES:
    raise ValueError(f"{owner}: decay_shape must be one of {DECAY_SHAPES}, got {decay_shape!r}")
  if decay_steps is None:
    if decay_fraction is None:
      raise ValueError(f"{owner}: give decay_steps or decay_fraction")
    _checks.check_range(owner, "decay_fraction", decay_fraction, 0.0, 1.0, low_inclusive=False)
    decay_steps = max(1, int(round(total_steps * decay_fraction)))
  _check_steps(owner, "decay_steps", decay_steps)
  if warmup_steps + decay_steps > total_steps:
    raise ValueError(f"{owner}: warmup_steps + decay_steps must be <= total_steps, got "
                     f"{warmup_steps} + {decay_steps} > {total_steps}")
  decay_start = total_steps - decay_steps

  def schedule(step):
    t = _float_step(step)
    warm = init_value + (peak_value - init_value) * t / max(warmup_steps, 1)
    fraction = jnp.clip((t - decay_start) / decay_steps, 0.0, 1.0)
    if decay_shape == "linear":
      shape = 1.0 - fraction
    elif decay_shape == "cosine":
      shape = 0.5 * (1.0 + jnp.cos(jnp.pi * fraction))
    else:
      shape = 1.0 - jnp.sqrt(fraction)
    decayed = end_value + (peak_value - end_value) * shape
    return jnp.where(t < warmup_steps, warm, decayed)

  return schedule


def onecycle(max_value: float, total_steps: int, pct_start: float = 0.3,
             div_factor: float = 25.0, final_div_factor: float = 1e4,
             anneal_strategy: str = "cos", three_phase: bool = False) -> Schedule:
  """The 1cycle policy (Smith & Topin 2019) exactly as PyTorch's OneCycleLR: from
  max_value / div_factor up to max_value over pct_start of the steps, then down to
  max_value / div_factor / final_div_factor (with three_phase, back to the start value first)."""
  owner = "onecycle"
  _checks.check_range(owner, "max_value", max_value, 0.0, low_inclusive=False)
  _check_steps(owner, "total_steps", total_steps, 2)
  _checks.check_range(owner, "pct_start", pct_start, 0.0, 1.0, low_inclusive=False,
                      high_inclusive=False)
  _checks.check_range(owner, "div_factor", div_factor, 0.0, low_inclusive=False)
  _checks.check_range(owner, "final_div_factor", final_div_factor, 0.0, low_inclusive=False)
  if anneal_strategy not in ("cos", "linear"):
    raise ValueError(f"{owner}: anneal_strategy must be 'cos' or 'linear', got "
                     f"{anneal_strategy!r}")
  initial = max_value / div_factor
  minimum = initial / final_div_factor
  up_end = float(pct_start * total_steps) - 1.0
  if three_phase:
    phases = [(0.0, up_end, initial, max_value), (up_end, 2 * up_end, max_value, initial),
              (2 * up_end, total_steps - 1.0, initial, minimum)]
  else:
    phases = [(0.0, up_end, initial, max_value), (up_end, total_steps - 1.0, max_value, minimum)]

  def anneal(start, end, fraction):
    if anneal_strategy == "cos":
      return end + (start - end) / 2.0 * (1.0 + jnp.cos(jnp.pi * fraction))
    return start + (end - start) * fraction

  def schedule(step):
    t = jnp.minimum(_float_step(step), total_steps - 1.0)
    value = anneal(*phases[-1][2:], jnp.clip((t - phases[-1][0]) / (phases[-1][1] - phases[-1][0]),
                                             0.0, 1.0))
    for begin, end, start_value, end_value in reversed(phases[:-1]):
      fraction = jnp.clip((t - begin) / (end - begin), 0.0, 1.0)
      value = jnp.where(t <= end, anneal(start_value, end_value, fraction), value)
    return value

  return schedule


def step_decay(init_value: float, gamma: float = 0.1, step_size: int | None = None,
               milestones: Sequence[int] | None = None) -> Schedule:
  """init_value * gamma^k: k = step // step_size (StepLR) or the number of milestones <= step
  (MultiStepLR). Give exactly one of step_size and milestones."""
  owner = "step_decay"
  _check_value(owner, "init_value", init_value)
  _check_value(owner, "gamma", gamma)
  if (step_size is None) == (milestones is None):
    raise ValueError(f"{owner}: give exactly one of step_size and milestones")
  if step_size is not None:
    _check_steps(owner, "step_size", step_size)
    return lambda step: init_value * gamma ** jnp.floor(_float_step(step) / step_size)
  assert milestones is not None  # exactly one of the two was given (checked above)
  marks = list(milestones)
  if any(not isinstance(m, int) or m < 1 for m in marks) or marks != sorted(marks):
    raise ValueError(f"{owner}: milestones must be increasing integers >= 1, got {milestones!r}")
  boundaries = jnp.asarray(marks)
  return lambda step: init_value * gamma ** jnp.sum(jnp.asarray(step) >= boundaries)


def exponential(init_value: float, gamma: float, transition_steps: int = 1) -> Schedule:
  """init_value * gamma^(step / transition_steps) (ExponentialLR with transition_steps=1)."""
  owner = "exponential"
  _check_value(owner, "init_value", init_value)
  _checks.check_range(owner, "gamma", gamma, 0.0, low_inclusive=False)
  _check_steps(owner, "transition_steps", transition_steps)
  return lambda step: init_value * gamma ** (_float_step(step) / transition_steps)


def inverse_sqrt(peak_value: float, warmup_steps: int, init_value: float = 0.0) -> Schedule:
  """Linear warmup to peak_value, then peak_value * sqrt(warmup_steps / step) (Vaswani et al.
  2017, with the warmup made linear as in fairseq)."""
  owner = "inverse_sqrt"
  _check_value(owner, "peak_value", peak_value)
  _check_value(owner, "init_value", init_value)
  _check_steps(owner, "warmup_steps", warmup_steps)

  def schedule(step):
    t = _float_step(step)
    warm = init_value + (peak_value - init_value) * t / warmup_steps
    return jnp.where(t < warmup_steps, warm,
                     peak_value * jnp.sqrt(warmup_steps / jnp.maximum(t, warmup_steps)))

  return schedule


def cosine_restarts(init_value: float, first_period: int, period_mult: int = 1,
                    end_value: float = 0.0) -> Schedule:
  """SGDR (Loshchilov & Hutter 2017) as PyTorch's CosineAnnealingWarmRestarts: cosine from
  init_value to end_value over periods of first_period * period_mult^i steps."""
  owner = "cosine_restarts"
  _check_value(owner, "init_value", init_value)
  _check_value(owner, "end_value", end_value)
  _check_steps(owner, "first_period", first_period)
  _check_steps(owner, "period_mult", period_mult)

  def schedule(step):
    t = _float_step(step)
    if period_mult == 1:
      position, period = jnp.mod(t, first_period), float(first_period)
    else:
      cycle = jnp.floor(jnp.log(t / first_period * (period_mult - 1) + 1.0) / math.log(period_mult))
      start = lambda c: first_period * (period_mult ** c - 1.0) / (period_mult - 1)
      # The logarithm can land a hair below an integer at a cycle boundary: correct by one.
      cycle = jnp.where(t >= start(cycle + 1), cycle + 1, cycle)
      cycle = jnp.where(t < start(cycle), cycle - 1, cycle)
      position = t - start(cycle)
      period = first_period * period_mult ** cycle
    return end_value + (init_value - end_value) * (1.0 + jnp.cos(jnp.pi * position / period)) / 2

  return schedule


def polynomial(init_value: float, end_value: float, power: float, decay_steps: int,
               transition_begin: int = 0) -> Schedule:
  """end + (init - end) * (1 - t / decay_steps)^power, held at end_value afterwards."""
  owner = "polynomial"
  _check_value(owner, "init_value", init_value)
  _check_value(owner, "end_value", end_value)
  _checks.check_range(owner, "power", power, 0.0, low_inclusive=False)
  _check_steps(owner, "decay_steps", decay_steps)
  _check_steps(owner, "transition_begin", transition_begin, 0)

  def schedule(step):
    fraction = jnp.clip((_float_step(step) - transition_begin) / decay_steps, 0.0, 1.0)
    return end_value + (init_value - end_value) * (1.0 - fraction) ** power

  return schedule


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
  """schedules[i] from boundaries[i-1] on, each counting its steps from its own boundary."""
  owner = "join"
  if len(schedules) != len(boundaries) + 1:
    raise ValueError(f"{owner}: need one more schedule than boundaries, got {len(schedules)} "
                     f"schedules and {len(boundaries)} boundaries")
  if any(not callable(s) for s in schedules):
    raise ValueError(f"{owner}: every schedule must be callable step -> value")
  marks = list(boundaries)
  if any(not isinstance(b, int) or b < 0 for b in marks) or marks != sorted(marks):
    raise ValueError(f"{owner}: boundaries must be non-decreasing integers >= 0, got "
                     f"{boundaries!r}")

  def schedule(step):
    step = jnp.asarray(step)
    value = schedules[0](step)
    for boundary, later in zip(marks, schedules[1:]):
      value = jnp.where(step >= boundary, later(step - boundary), value)
    return value

  return schedule


BUILTIN = {
    "constant": constant, "linear": linear, "cosine": cosine, "warmup_cosine": warmup_cosine,
    "wsd": wsd, "onecycle": onecycle, "step_decay": step_decay, "exponential": exponential,
    "inverse_sqrt": inverse_sqrt, "cosine_restarts": cosine_restarts, "polynomial": polynomial,
}


def plot_schedule(schedule: Schedule, total_steps: int, path: str, title: str = "") -> str:
  """Draws schedule(step) for steps 0 .. total_steps - 1 to a PNG (needs matplotlib)."""
  _check_steps("plot_schedule", "total_steps", total_steps)
  try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError as error:
    raise ImportError("plot_schedule needs matplotlib: pip install 'optimkit[plot]'") from error
  steps = jnp.arange(total_steps)
  values = jax.vmap(schedule)(steps)
  figure, axis = plt.subplots(figsize=(7, 3.5))
  axis.plot(steps, values)
  axis.set_xlabel("step")
  axis.set_ylabel("learning rate")
  axis.grid(alpha=0.3)
  if title:
    axis.set_title(title)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return str(path)
