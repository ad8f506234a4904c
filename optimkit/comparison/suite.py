"""`optimkit compare --suite`: the decision table's folklore measured across tasks, with tuned
learning rates and several seeds.

For each task (`tasks.py`) and candidate:
  1. a learning-rate sweep at seed 0 over a log grid around the recipe's rate, chosen on the
     final validation metric (ties: nearer the recipe's rate); when the best rate is at an edge
     of the grid, the grid grows past it (`Budget.extensions` times at most);
  2. `seeds` runs at the chosen rate (seed 0 is the sweep's run): the seed picks the
     initialisation, the batch order and the optimizer's randomness;
  3. the numbers reported, all on test data no choice has seen: the final metric over seeds,
     the steps and training seconds to the task's target (the baseline's worst seed's final
     test loss, so every baseline seed reaches it), state bytes/param, step time, skipped
     (non-finite) steps, loss spikes.
Then each claim of `verdicts.CLAIMS` is judged on those numbers.

Every run is cached as a JSON file in `<out>/runs/`, keyed by the problem's settings, the
candidate's recipe, the learning rate and the seed, and written atomically when the run ends:
an interrupted suite, run again with the same settings, loads what it finished and trains only
the rest. Runs are deterministic, so a resumed suite's tables equal an uninterrupted one's
(timings aside).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
import optax

from optimkit.comparison.progress import SuiteProgress
from optimkit.comparison.tasks import QUICK, TASK_NAMES, Budget, Candidate, Task, build_tasks
from optimkit.comparison.training import RunRecord, Trainer
from optimkit.comparison.verdicts import Sample, Verdict, evaluate_claims

CACHE_VERSION = 1  # bump when a change to training makes cached runs stale
SPIKE_WINDOW = 20
SPIKE_JUMP = 0.5  # nats above the median of the previous SPIKE_WINDOW training losses
STATE_BUDGET_SLACK = 1.01  # a budget of B bytes/param admits B * 1.01


# ----------------------------------------------------------------------------------------------
# The cache.


def _digest(data: Any) -> str:
  text = json.dumps(data, sort_keys=True, default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:12]


def _slug(text: str) -> str:
  return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


class RunCache:
  """One JSON file per (problem, candidate, learning rate, seed) under `root`."""

  def __init__(self, root: Path):
    self.root = Path(root)

  def path(self, problem: Any, candidate: Candidate, learning_rate: float, seed: int) -> Path:
    problem_key = _digest({"problem": problem.describe(), "version": CACHE_VERSION})
    candidate_key = _digest({"label": candidate.label, "recipe": candidate.describe()})
    return (self.root / f"{problem.kind}-{problem_key}" / f"{_slug(candidate.label)}-"
            f"{candidate_key}" / f"lr{learning_rate:.10g}-seed{seed}.json")

  def load(self, path: Path) -> RunRecord | None:
    try:
      return RunRecord.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):  # absent, or cut short by a kill: run it again
      return None

  def store(self, path: Path, record: RunRecord, problem: Any, candidate: Candidate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    about = path.parent / "about.json"
    if not about.exists():
      about.write_text(json.dumps({"problem": problem.describe(), "candidate": candidate.label,
                                   "recipe": candidate.describe()}, indent=1, default=str))
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(record.to_json()))
    os.replace(partial, path)  # atomic: a kill leaves the old state or the whole file


# ----------------------------------------------------------------------------------------------
# What a task's runs add up to.


def steps_to_target(steps: Sequence[float], values: Sequence[float], target: float
                    ) -> float | None:
  """Where the curve first reaches `target`, linearly interpolated between evaluations."""
  for i, value in enumerate(values):
    if value <= target:
      if i == 0:
        return float(steps[0])
      previous = values[i - 1]
      fraction = (previous - target) / (previous - value) if previous != value else 1.0
      return float(steps[i - 1] + fraction * (steps[i] - steps[i - 1]))
  return None


def loss_jumps(train_loss: Sequence[float], window: int = SPIKE_WINDOW) -> np.ndarray:
  """Each step's training loss minus the median of the `window` before it (+inf where the
  loss is not finite); empty for runs shorter than the window."""
  losses = np.asarray(train_loss, dtype=np.float64)
  jumps = [losses[t] - np.median(losses[t - window:t]) if np.isfinite(losses[t]) else np.inf
           for t in range(window, len(losses))]
  return np.asarray(jumps, dtype=np.float64)


def count_spikes(train_loss: Sequence[float], window: int = SPIKE_WINDOW,
                 jump: float = SPIKE_JUMP) -> int:
  """Steps whose training loss is more than `jump` above the median of the `window` before
  (a non-finite loss counts)."""
  return int(np.sum(loss_jumps(train_loss, window) > jump))


def largest_spike(train_loss: Sequence[float], window: int = SPIKE_WINDOW) -> float:
  """The largest jump of the training loss above the median of the `window` steps before (NaN
  for a run no longer than the window)."""
  jumps = loss_jumps(train_loss, window)
  return float(np.max(jumps)) if jumps.size else math.nan


@dataclass
class CandidateResult:
  candidate: Candidate
  sweep: dict[float, RunRecord]  # learning rate -> seed-0 run
  chosen_lr: float
  at_edge: bool  # the chosen rate is the grid's smallest or largest
  runs: list[RunRecord]  # the seeds at the chosen rate
  steps: Sample = field(default_factory=lambda: Sample(()))
  seconds: Sample = field(default_factory=lambda: Sample(()))

  @property
  def label(self) -> str:
    return self.candidate.label

  def final(self, metric: str) -> Sample:
    return Sample(tuple(r.final(metric) for r in self.runs))

  @property
  def state_bytes_per_param(self) -> float:
    return self.runs[0].state_bytes_per_param

  @property
  def median_step_ms(self) -> float:
    return float(np.median([r.median_step_ms for r in self.runs]))

  @property
  def skipped_steps(self) -> list[int]:
    return [r.skipped_steps for r in self.runs]

  @property
  def spikes(self) -> list[int]:
    return [count_spikes(r.train_loss) for r in self.runs]

  @property
  def largest_spike(self) -> Sample:
    return Sample(tuple(largest_spike(r.train_loss) for r in self.runs))


@dataclass
class TaskResult:
  task: Task
  candidates: list[CandidateResult]
  target: float | None  # test loss
  description: str

  def eligible(self) -> list[str]:
    """Labels whose state fits the task's budget (all labels without one)."""
    budget = self.task.state_budget
    return [c.label for c in self.candidates
            if budget is None or c.state_bytes_per_param <= budget * STATE_BUDGET_SLACK]

  def samples(self) -> dict[str, dict[str, Sample]]:
    return {"final": {c.label: c.final(self.task.metric) for c in self.candidates},
            "steps": {c.label: c.steps for c in self.candidates if c.steps.n},
            "seconds": {c.label: c.seconds for c in self.candidates if c.seconds.n},
            "spike": {c.label: c.largest_spike for c in self.candidates}}


def _time_samples(task: Task, result: CandidateResult, target: float) -> None:
  steps, seconds, reached = [], [], []
  for run in result.runs:
    at = steps_to_target(run.eval_steps, run.test["loss"], target)
    if at is None:  # never reached: count the whole budget, a lower bound
      steps.append(float(run.eval_steps[-1]))
      seconds.append(float(run.train_seconds[-1]))
      reached.append(False)
    else:
      steps.append(at)
      seconds.append(float(np.interp(at, run.eval_steps, run.train_seconds)))
      reached.append(True)
  result.steps = Sample(tuple(steps), tuple(reached))
  result.seconds = Sample(tuple(seconds), tuple(reached))


@dataclass
class SuiteResult:
  budget: Budget
  seeds: int
  tasks: dict[str, TaskResult]
  verdicts: list[Verdict]
  setting: dict
  fresh_runs: int
  cached_runs: int
  wall_seconds: float


# ----------------------------------------------------------------------------------------------
# Running it.


def _score(record: RunRecord, metric: str) -> tuple[float, float]:
  values = (record.validation.get(metric, math.inf), record.validation.get("loss", math.inf))
  first, second = (v if math.isfinite(v) else math.inf for v in values)
  return first, second


def _same_runs(problem: Any, candidate: Candidate) -> tuple[str, str]:
  """Equal for two tasks' candidates that train the same runs (the memory task's and lm's)."""
  return (_digest(problem.describe()), _digest([candidate.label, candidate.describe()]))


class _Runner:
  def __init__(self, cache: RunCache, progress: SuiteProgress):
    self.cache, self.progress = cache, progress
    self.trainers: dict[tuple[str, str], Trainer] = {}  # shared by tasks on the same problem
    self.records: dict[Path, RunRecord] = {}  # this invocation's, so a shared run counts once
    self.fresh = self.cached = 0

  def run(self, task: Task, candidate: Candidate, learning_rate: float, seed: int) -> RunRecord:
    path = self.cache.path(task.problem, candidate, learning_rate, seed)
    if path in self.records:  # another task on the same problem already has it
      return self.records[path]
    self.records[path] = record = self._load_or_train(path, task, candidate, learning_rate, seed)
    return record

  def _load_or_train(self, path: Path, task: Task, candidate: Candidate, learning_rate: float,
                     seed: int) -> RunRecord:
    label = f"{candidate.label} lr={learning_rate:.3g} seed={seed}"
    record = self.cache.load(path)
    if record is not None:
      self.cached += 1
      self.progress.finish_run(task.name, label, cached=True)
      return record
    key = _same_runs(task.problem, candidate)
    if key not in self.trainers:
      self.trainers[key] = Trainer(task.problem, candidate)
    self.progress.start_run(task.name, label, task.problem.steps)
    record = self.trainers[key].run(learning_rate, seed, self.progress.update)
    self.cache.store(path, record, task.problem, candidate)
    self.fresh += 1
    metric = task.problem.metric_names[-1] if task.metric == "error" else "loss"
    self.progress.finish_run(task.name, label, cached=False,
                             summary=f": test {metric} {record.final(metric):.4f}")
    return record


def _tune(runner: _Runner, task: Task, candidate: Candidate, budget: Budget, seeds: int
          ) -> CandidateResult:
  if not task.sweep:
    runs = [runner.run(task, candidate, candidate.learning_rate, s) for s in range(seeds)]
    return CandidateResult(candidate, {candidate.learning_rate: runs[0]},
                           candidate.learning_rate, False, runs)
  rate = lambda k: candidate.learning_rate * budget.grid_base ** k
  exponents = sorted(budget.grid_exponents)
  sweep = {k: runner.run(task, candidate, rate(k), 0) for k in exponents}
  best = lambda: min(exponents, key=lambda k: (_score(sweep[k], task.metric), abs(k)))
  for _ in range(budget.extensions):
    k = best()
    if k not in (exponents[0], exponents[-1]) or len(exponents) == 1:
      break
    k = k - 1 if k == exponents[0] else k + 1
    runner.progress.plan_more(task.name)
    sweep[k] = runner.run(task, candidate, rate(k), 0)
    exponents = sorted(exponents + [k])
  k = best()
  at_edge = len(exponents) > 1 and k in (exponents[0], exponents[-1])
  runs = [sweep[k]] + [runner.run(task, candidate, rate(k), s) for s in range(1, seeds)]
  return CandidateResult(candidate, {rate(j): sweep[j] for j in exponents}, rate(k), at_edge,
                         runs)


def planned_runs(tasks: dict[str, Task], budget: Budget, seeds: int) -> Counter:
  """Runs each task needs before any grid extension, counting shared runs once."""
  planned: Counter = Counter()
  seen = set()
  for name, task in tasks.items():
    for c in task.candidates:
      key = _same_runs(task.problem, c)
      if key in seen:
        continue
      seen.add(key)
      planned[name] += (len(budget.grid_exponents) + seeds - 1) if task.sweep else seeds
  return planned


def run_suite(out_dir: str | os.PathLike, budget: Budget = QUICK,
              task_names: Sequence[str] = TASK_NAMES, optimizers: Sequence[str] | None = None,
              seeds: int | None = None, data_path: str | None = None,
              show_progress: bool = True) -> SuiteResult:
  """Runs (or resumes) the suite into `out_dir`; returns the results and verdicts. Write the
  reports with `suite_report.write_suite_reports`."""
  tasks = build_tasks(budget, task_names, optimizers, data_path)
  if not tasks:
    raise ValueError("no task has any of the optimizers asked for: nothing to run")
  return run_tasks(out_dir, tasks, budget, seeds, show_progress)


def run_tasks(out_dir: str | os.PathLike, tasks: dict[str, Task], budget: Budget,
              seeds: int | None = None, show_progress: bool = True) -> SuiteResult:
  """`run_suite` on tasks already built (`tasks.build_tasks`, or your own)."""
  seeds = budget.seeds if seeds is None else seeds
  if seeds < 1:
    raise ValueError(f"seeds must be >= 1, got {seeds}")
  started = time.perf_counter()
  progress = SuiteProgress(planned_runs(tasks, budget, seeds), enabled=show_progress)
  runner = _Runner(RunCache(Path(out_dir) / "runs"), progress)
  results: dict[str, TaskResult] = {}
  for name, task in tasks.items():
    candidates = [_tune(runner, task, c, budget, seeds) for c in task.candidates]
    baseline = next((c for c in candidates if c.label == task.baseline), None)
    target = max(r.final("loss") for r in baseline.runs) if baseline else None
    if target is not None and math.isfinite(target):
      for c in candidates:
        _time_samples(task, c, target)
    else:
      target = None
    results[name] = TaskResult(task, candidates, target,
                               task.problem.summary(task.problem.init(0)))
  progress.close()
  samples = {name: r.samples() for name, r in results.items()}
  eligible = {name: r.eligible() for name, r in results.items()}
  setting = {
      "budget": budget.name, "seeds": seeds,
      "grid": f"recipe rate x {budget.grid_base:g}^k, k in {list(budget.grid_exponents)}"
              + (f", extended up to {budget.extensions}x past an edge" if budget.extensions
                 else ""),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                 f"{jax.device_count()} x {jax.devices()[0].platform}",
      "versions": {"jax": jax.__version__, "optax": optax.__version__,
                   "python": platform.python_version()},
      "date": time.strftime("%Y-%m-%d"),
  }
  return SuiteResult(budget, seeds, results, evaluate_claims(samples, eligible), setting,
                     runner.fresh, runner.cached, time.perf_counter() - started)
