"""Train one model once per optimizer, from the same initialisation and the same batch order,
measuring validation loss against steps and wall-clock time, step time, compile time and
optimizer-state bytes per parameter. This is `optimkit.compare`, the Python face of the
`optimkit compare` command.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optimkit.memory import state_bytes_per_param
from optimkit.transforms._util import find_state
from optimkit.transforms.nonfinite import skip_nonfinite
from optimkit.transforms.schedule_free import ScheduleFreeState, schedule_free_eval_params

LossFn = Callable[[Any, Any], jax.Array]  # (params, batch) -> scalar loss


@dataclass
class RunResult:
  """One optimizer's run. `curve_*` are the evaluation points."""

  optimizer: str
  learning_rate: float | None
  final_loss: float
  curve_steps: list[int]
  curve_losses: list[float]
  curve_seconds: list[float]
  median_step_ms: float
  compile_seconds: float
  state_bytes_per_param: float
  skipped_steps: int
  steps_to_baseline: int | None = None  # first eval step reaching the baseline's final loss
  steps_ratio: float | None = None  # steps_to_baseline / baseline's own steps_to_baseline
  extra: dict = field(default_factory=dict)

  def row(self) -> dict:
    data = asdict(self)
    for name in ("curve_steps", "curve_losses", "curve_seconds", "extra"):
      data.pop(name)
    return data


class Progress:
  """A one-line progress bar on stderr (a line per 10% when stderr is not a terminal)."""

  def __init__(self, label: str, total: int, enabled: bool = True):
    self.label, self.total, self.enabled = label, total, enabled
    self.tty = sys.stderr.isatty()
    self.start = time.perf_counter()
    self.last_decile = -1

  def update(self, step: int, loss: float | None = None) -> None:
    if not self.enabled:
      return
    fraction = step / max(self.total, 1)
    decile = int(fraction * 10)
    if not self.tty and decile == self.last_decile and step != self.total:
      return
    self.last_decile = decile
    bar = "#" * int(24 * fraction) + "-" * (24 - int(24 * fraction))
    loss_text = f" val {loss:.4f}" if loss is not None else ""
    line = (f"{self.label:<24} [{bar}] {step:>5}/{self.total}{loss_text} "
            f"{time.perf_counter() - self.start:6.1f}s")
    sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
    if self.tty and step == self.total:
      sys.stderr.write("\n")
    sys.stderr.flush()


def _eval_params(state: Any, params: Any) -> Any:
  """Schedule-free optimizers are evaluated at their averaged point x, the others at params."""
  if find_state(state, ScheduleFreeState) is not None:
    return schedule_free_eval_params(state, params)
  return params


def run_optimizer(
    name: str,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    params: Any,
    batches: Sequence[Any] | np.ndarray,
    eval_fn: Callable[[Any], float] | None = None,
    eval_every: int = 100,
    logits_fn: Callable[[Any, Any], jax.Array] | None = None,
    seed: int = 0,
    learning_rate: float | None = None,
    show_progress: bool = True,
) -> RunResult:
  """Trains `params` with `tx` over `batches` (one step per batch) and measures the run."""
  tx = skip_nonfinite(tx)  # a bad batch is skipped and counted, never poisons the comparison
  state = tx.init(params)
  base_key = jax.random.key(seed)

  def step_fn(params, state, batch, step):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    extra = {"key": jax.random.fold_in(base_key, step),
             "loss_fn": lambda p: loss_fn(p, batch)}
    if logits_fn is not None:
      extra["logits_fn"] = lambda p: logits_fn(p, batch)
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state, loss

  jitted = jax.jit(step_fn, donate_argnums=(0, 1))
  first = jax.tree.map(jnp.asarray, batches[0])
  start = time.perf_counter()
  compiled = jitted.lower(params, state, first, jnp.asarray(0)).compile()
  compile_seconds = time.perf_counter() - start
  bytes_per_param = state_bytes_per_param(tx, params)
  # Donated buffers must be distinct and not the caller's: copy params and state once.
  params, state = jax.tree.map(jnp.copy, (params, state))

  progress = Progress(name, len(batches), show_progress)
  curve_steps, curve_losses, curve_seconds, step_seconds = [], [], [], []
  recent_train_losses = []
  train_seconds = 0.0
  for step, batch in enumerate(batches):
    batch = jax.tree.map(jnp.asarray, batch)
    start = time.perf_counter()
    params, state, loss = compiled(params, state, batch, jnp.asarray(step))
    loss = float(loss)  # waits for the step: the time below is the real step time
    elapsed = time.perf_counter() - start
    step_seconds.append(elapsed)
    train_seconds += elapsed
    recent_train_losses.append(loss)
    done = step + 1
    if done % eval_every == 0 or done == len(batches):
      if eval_fn is not None:
        value = float(eval_fn(_eval_params(state.inner_state, params)))
      else:
        value = float(np.mean(recent_train_losses))
      recent_train_losses = []
      curve_steps.append(done)
      curve_losses.append(value)
      curve_seconds.append(train_seconds)
      progress.update(done, value)
    else:
      progress.update(done)

  return RunResult(
      optimizer=name,
      learning_rate=learning_rate,
      final_loss=curve_losses[-1],
      curve_steps=curve_steps,
      curve_losses=curve_losses,
      curve_seconds=curve_seconds,
      median_step_ms=1000.0 * float(np.median(step_seconds[1:] or step_seconds)),
      compile_seconds=compile_seconds,
      state_bytes_per_param=bytes_per_param,
      skipped_steps=int(state.skipped_steps),
  )


def add_baseline_ratios(results: list[RunResult], baseline: str) -> None:
  """Steps each run needs to reach the baseline's final loss, as a ratio to the baseline's."""
  reference = next((r for r in results if r.optimizer == baseline), None)
  if reference is None:
    return
  target = reference.final_loss

  def first_reaching(result):
    for step, loss in zip(result.curve_steps, result.curve_losses):
      if loss <= target:
        return step
    return None

  baseline_steps = first_reaching(reference)
  for result in results:
    result.steps_to_baseline = first_reaching(result)
    if result.steps_to_baseline is not None and baseline_steps:
      result.steps_ratio = result.steps_to_baseline / baseline_steps


def compare(
    loss_fn: LossFn,
    params: Any,
    batches: Sequence[Any],
    optimizers: Mapping[str, optax.GradientTransformation],
    *,
    eval_fn: Callable[[Any], float] | None = None,
    eval_every: int = 100,
    logits_fn: Callable[[Any, Any], jax.Array] | None = None,
    baseline: str | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> list[dict]:
  """Compares optimizers on your own model; returns one row (a dict) per optimizer.

  Args:
    loss_fn: (params, batch) -> scalar training loss.
    params: the initial parameters; every optimizer starts from them.
    batches: a sequence of batches, one per step, the same order for every optimizer.
    optimizers: name -> optax GradientTransformation (optimkit's or any other).
    eval_fn: params -> validation loss; without it, the mean training loss since the last
      evaluation is reported.
    eval_every: evaluate every this many steps (and at the end).
    logits_fn: (params, batch) -> logits, for Sophia-G; without it Sophia's Hutchinson
      estimator (estimator="hutchinson") gets `loss_fn` through the extra args.
    baseline: name whose final loss defines "steps to reach" (default: the first optimizer).
    seed: seeds the per-step PRNG keys passed to optimizers that need randomness.

  Rows have: optimizer, final_loss, steps_to_baseline, steps_ratio, median_step_ms,
  compile_seconds, state_bytes_per_param, skipped_steps, plus the curves under "curve".
  """
  if not optimizers:
    raise ValueError("compare: optimizers is empty; give at least one name -> transformation")
  if len(batches) == 0:
    raise ValueError("compare: batches is empty; give one batch per training step")
  results = [run_optimizer(name, tx, loss_fn, params, batches, eval_fn, eval_every, logits_fn,
                           seed, show_progress=show_progress)
             for name, tx in optimizers.items()]
  add_baseline_ratios(results, baseline or next(iter(optimizers)))
  rows = []
  for result in results:
    row = result.row()
    row["curve"] = {"steps": result.curve_steps, "loss": result.curve_losses,
                    "seconds": result.curve_seconds}
    rows.append(row)
  return rows
