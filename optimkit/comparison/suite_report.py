"""The suite's outputs: `suite.md` (the verdict table, then a table per task), `suite.json`
(every number, the per-seed values and curves included) and `suite-<task>.png` per task (test
metric against steps, mean and seed range at the chosen rate; the learning-rate sweep)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from optimkit.comparison.progress import format_duration
from optimkit.comparison.suite import CandidateResult, SuiteResult, TaskResult
from optimkit.comparison.verdicts import describe_sample, describe_verdict

METRIC_TITLES = {"loss": "test loss (nats)", "error": "test error (%)"}


def _table(header: list[str], rows: list[list[str]]) -> str:
  widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
  line = lambda row: "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |"
  return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                   + [line(r) for r in rows])


def verdict_table(result: SuiteResult) -> str:
  rows = [[v.claim.text, v.claim.task, f"**{v.verdict}**", describe_verdict(v)]
          for v in result.verdicts]
  return _table(["claim", "task", "verdict", "measured"], rows)


def _sweep_text(c: CandidateResult, metric: str) -> str:
  return ", ".join(f"{lr:.3g}: {_number(r.validation.get(metric, math.nan))}"
                   for lr, r in sorted(c.sweep.items()))


def _number(x: float) -> str:
  if not math.isfinite(x) or abs(x) > 1e4:
    return "diverged"
  return f"{x:.4f}"


def task_table(task_result: TaskResult, timings: bool = True) -> str:
  """One row per candidate. `timings=False` leaves out what the clock measured."""
  task = task_result.task
  header = ["optimizer", "lr", f"final {task.metric}", "steps to target"]
  header += (["s to target"] if timings else []) + ["state B/param"]
  header += (["step ms"] if timings else []) + ["skipped", "spikes", "largest spike"]
  rows = []
  for c in task_result.candidates:
    lr = f"{c.chosen_lr:.3g}" + (" (grid edge)" if c.at_edge else "")
    row = [c.label, lr, describe_sample(c.final(task.metric), "final"),
           describe_sample(c.steps, "steps") if c.steps.n else "-"]
    if timings:
      row.append(describe_sample(c.seconds, "seconds") if c.seconds.n else "-")
    budget = task.state_budget
    fits = "" if budget is None else (" (fits)" if c.label in task_result.eligible()
                                      else " (over budget)")
    row.append(f"{c.state_bytes_per_param:.2f}{fits}")
    if timings:
      row.append(f"{c.median_step_ms:.1f}")
    row += [_counts(c.skipped_steps), _counts(c.spikes),
            describe_sample(c.largest_spike, "spike")]
    rows.append(row)
  return _table(header, rows)


def _counts(values: list[int]) -> str:
  return "/".join(str(v) for v in values)


def markdown(result: SuiteResult, timings: bool = True) -> str:
  s = result.setting
  parts = [
      "# optimkit compare --suite",
      "",
      (f"Budget `{result.budget.name}`, {result.seeds} seeds per optimizer at its chosen "
      f"learning rate; learning rates chosen at seed 0 on validation data from {s['grid']}. "
      "Every number below is on test data that no choice saw; `mean ± sd` over seeds. "
      "A verdict compares the best (by mean) of the claim's optimizers with its rival "
      "(the best of the others when none is named): the effect is the relative difference of "
      "the means with a 95% Welch interval; the claim holds when the interval meets the "
      "claimed range and excludes no difference, does not hold when it misses the claimed "
      "range, and is not distinguishable from seed noise otherwise."),
      "",
      "## Verdicts",
      "",
      verdict_table(result),
  ]
  for name, task_result in result.tasks.items():
    task = task_result.task
    target = ("-" if task_result.target is None
              else f"test loss {task_result.target:.4f} ({task.baseline}'s worst seed)")
    parts += ["", f"## {name}: {task.title}", "", task_result.description + ".", "",
              (f"Target: {target}. Skipped: non-finite steps per seed; spikes: steps whose "
              f"training loss jumps > 0.5 nats above the median of the 20 before, per seed; "
              f"largest spike: the largest such jump (nats)."),
              "", task_table(task_result, timings), ""]
    if task.sweep:
      parts += [f"Sweeps (validation {task.metric} at seed 0 per learning rate):", ""]
      parts += [f"- {c.label}: {_sweep_text(c, task.metric)}" for c in task_result.candidates]
    else:
      parts += ["Not tuned: the learning rate is the scenario."]
  if timings:
    parts += ["", (f"Machine: {s['machine']}; jax {s['versions']['jax']}, optax "
              f"{s['versions']['optax']}; {s['date']}. This invocation: {result.fresh_runs} runs "
              f"trained, {result.cached_runs} loaded from the cache, "
              f"{format_duration(result.wall_seconds)}.")]
  return "\n".join(parts) + "\n"


def _finite(x: Any) -> Any:
  """JSON has no NaN or infinity: they become null."""
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  return x


def to_json(result: SuiteResult) -> dict:
  tasks = {}
  for name, task_result in result.tasks.items():
    task = task_result.task
    candidates = []
    for c in task_result.candidates:
      final = c.final(task.metric)
      candidates.append({
          "label": c.label, "optimizer": c.candidate.optimizer,
          "recipe": c.candidate.describe(), "chosen_lr": c.chosen_lr, "at_grid_edge": c.at_edge,
          "sweep": [{"lr": lr, "validation": r.validation} for lr, r in sorted(c.sweep.items())],
          f"final_{task.metric}": {"mean": final.mean, "std": final.std,
                                   "values": list(final.values)},
          "steps_to_target": {"values": list(c.steps.values),
                              "reached": list(c.steps.reached or ())},
          "seconds_to_target": {"values": list(c.seconds.values)},
          "state_bytes_per_param": c.state_bytes_per_param, "median_step_ms": c.median_step_ms,
          "skipped_steps": c.skipped_steps, "spikes": c.spikes,
          "largest_spike": list(c.largest_spike.values),
          "runs": [{"seed": r.seed, "eval_steps": r.eval_steps, "test": r.test,
                    "train_seconds": r.train_seconds} for r in c.runs],
      })
    tasks[name] = {"title": task.title, "description": task_result.description,
                   "metric": task.metric, "baseline": task.baseline,
                   "target_test_loss": task_result.target, "state_budget": task.state_budget,
                   "candidates": candidates}
  return _finite({"setting": result.setting, "verdicts": [v.row() for v in result.verdicts],
                  "tasks": tasks, "fresh_runs": result.fresh_runs,
                  "cached_runs": result.cached_runs, "wall_seconds": result.wall_seconds})


def write_suite_reports(result: SuiteResult, out_dir: str) -> dict[str, str]:
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = {"markdown": out / "suite.md", "json": out / "suite.json"}
  paths["markdown"].write_text(markdown(result))
  paths["json"].write_text(json.dumps(to_json(result), indent=1))
  written = {kind: str(path) for kind, path in paths.items()}
  for name, task_result in result.tasks.items():
    png = plot_task(task_result, out / f"suite-{name}.png")
    if png:
      written[f"png {name}"] = png
  return written


def plot_task(task_result: TaskResult, path: Path) -> str | None:
  try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
  except ImportError:
    return None
  task = task_result.task
  figure, (curves, sweeps) = plt.subplots(1, 2, figsize=(12, 4.5))
  for c in task_result.candidates:
    steps = c.runs[0].eval_steps
    values = np.array([r.test[task.metric] for r in c.runs], dtype=float)
    line, = curves.plot(steps, values.mean(0), label=f"{c.label} (lr {c.chosen_lr:.3g})")
    if len(c.runs) > 1:
      curves.fill_between(steps, values.min(0), values.max(0), alpha=0.2,
                          color=line.get_color())
    if task.sweep:
      rates = sorted(c.sweep)
      sweeps.plot(rates, [c.sweep[lr].validation.get(task.metric, np.nan) for lr in rates],
                  marker="o", color=line.get_color(), label=c.label)
    else:  # one rate, the scenario's: show what it does to the training loss instead
      sweeps.plot(c.runs[0].train_loss, color=line.get_color(), linewidth=0.7,
                  label=f"{c.label}, seed 0")
  if task_result.target is not None and task.metric == "loss":
    curves.axhline(task_result.target, color="grey", linestyle=":", label="target")
  finals = [v for c in task_result.candidates for v in c.final(task.metric).values
            if math.isfinite(v)]
  if finals:  # the start of training dwarfs the differences at the end
    top = max(finals) + 2.0 * (max(finals) - min(finals) + 0.05 * abs(max(finals)))
    curves.set_ylim(min(finals) - 0.1 * (top - min(finals)), top)
  curves.set_xlabel("training step")
  curves.set_ylabel(METRIC_TITLES[task.metric] + ", mean and seed range")
  if task.sweep:
    sweeps.set_xscale("log")
    sweeps.set_xlabel("peak learning rate")
    sweeps.set_ylabel(f"validation {task.metric} at seed 0")
  else:
    sweeps.set_xlabel("training step")
    sweeps.set_ylabel("training loss (nats)")
  for axis in (curves, sweeps):
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
  figure.suptitle(f"optimkit compare --suite: {task.name}, {task.title}\n"
                  f"{task_result.description}", fontsize=9)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return str(path)
