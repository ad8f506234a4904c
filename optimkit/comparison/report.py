"""The comparison's outputs: a text/Markdown table, a JSON file, and a PNG of validation loss
against steps and against wall-clock time."""

from __future__ import annotations

import json
from pathlib import Path

from optimkit.comparison.runner import RunResult

COLUMNS = ("optimizer", "lr", "final val loss", "steps to baseline", "ratio", "state B/param",
           "median step ms", "compile s", "skipped")


def _format_row(result: RunResult) -> list[str]:
  steps = "never" if result.steps_to_baseline is None else str(result.steps_to_baseline)
  ratio = "-" if result.steps_ratio is None else f"{result.steps_ratio:.2f}"
  lr = "-" if result.learning_rate is None else f"{result.learning_rate:.3g}"
  return [result.optimizer, lr, f"{result.final_loss:.4f}", steps, ratio,
          f"{result.state_bytes_per_param:.2f}", f"{result.median_step_ms:.1f}",
          f"{result.compile_seconds:.2f}", str(result.skipped_steps)]


def markdown_table(results: list[RunResult]) -> str:
  rows = [list(COLUMNS)] + [_format_row(r) for r in results]
  widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
  line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
  separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
  return "\n".join([line(rows[0]), separator] + [line(r) for r in rows[1:]])


def write_reports(results: list[RunResult], setting: dict, out_dir: str) -> dict[str, str]:
  """Writes compare.md, compare.json and (with matplotlib) compare.png; returns their paths."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = {}
  table = markdown_table(results)
  baseline = setting.get("baseline", "the baseline")
  notes = (f"'steps to baseline': first evaluation step at which the validation loss reaches "
           f"{baseline}'s final loss; 'ratio': that over {baseline}'s own (lower is faster).")
  details = "\n".join(f"- {k}: {v}" for k, v in setting.items())
  (out / "compare.md").write_text(f"# optimkit compare\n\n{table}\n\n{notes}\n\n{details}\n")
  paths["markdown"] = str(out / "compare.md")
  payload = {"setting": setting,
             "results": [dict(r.row(), curve={"steps": r.curve_steps, "loss": r.curve_losses,
                                              "seconds": r.curve_seconds}, **r.extra)
                         for r in results]}
  (out / "compare.json").write_text(json.dumps(payload, indent=2))
  paths["json"] = str(out / "compare.json")
  png = plot_curves(results, setting, out / "compare.png")
  if png:
    paths["png"] = png
  return paths


def plot_curves(results: list[RunResult], setting: dict, path: Path) -> str | None:
  try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return None
  figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.5))
  for result in results:
    by_step.plot(result.curve_steps, result.curve_losses, marker=".", label=result.optimizer)
    by_time.plot(result.curve_seconds, result.curve_losses, marker=".", label=result.optimizer)
  by_step.set_xlabel("training step")
  by_time.set_xlabel("training wall-clock time (s, excluding compile and evaluation)")
  for axis in (by_step, by_time):
    axis.set_ylabel("validation loss (nats/byte)")
    axis.grid(alpha=0.3)
    axis.legend()
  figure.suptitle(f"optimkit compare: {setting.get('model', '')}\n{setting.get('data', '')}, "
                  f"{setting.get('steps')} steps, seed {setting.get('seed')}", fontsize=10)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return str(path)
