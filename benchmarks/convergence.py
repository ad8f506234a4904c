"""The optimizer comparison at a fixed budget, next to the claims people repeat, written into
benchmarks/RESULTS.md (the section between the convergence markers; the rest is kept).

    python benchmarks/convergence.py [--steps 1200] [--seed 0] [--lr-sweep] [--quick]

Each claim is checked against the measured table and stated plainly as holding or not at this
scale (a ~0.4M-parameter byte-level transformer on CPython's documentation text).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from optimkit.comparison import QUICK, TaskConfig, markdown_table, run_reference_task  # noqa: E402

OPTIMIZERS = ["adamw", "lion", "adafactor", "sophia", "schedule_free_adamw", "adamw_8bit",
              "adamw_4bit"]
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
BEGIN, END = "<!-- convergence:begin -->", "<!-- convergence:end -->"


def _verdicts(results) -> list[str]:
  by = {r.optimizer: r for r in results}
  base = by["adamw"]
  lines = []

  def ratio_text(r):
    return "never reached AdamW's final loss" if r.steps_ratio is None else \
        f"reached AdamW's final loss in {r.steps_ratio:.2f}x AdamW's steps"

  def loss_gap(r):
    return 100.0 * (r.final_loss / base.final_loss - 1.0)

  checks = [
      ("lion", "Lion reaches a target perplexity 18-22% sooner than AdamW",
       lambda r: r.steps_ratio is not None and r.steps_ratio <= 0.85),
      ("adafactor", "Adafactor is 8-12% slower than AdamW on small GPT-2",
       lambda r: r.steps_ratio is None or r.steps_ratio >= 1.05),
      ("sophia", "Sophia needs half the steps of AdamW",
       lambda r: r.steps_ratio is not None and r.steps_ratio <= 0.6),
      ("schedule_free_adamw", "schedule-free matches a tuned cosine schedule without one",
       lambda r: loss_gap(r) <= 1.0),
      ("adamw_8bit", "8-bit AdamW matches 32-bit AdamW (target: final loss within 1%)",
       lambda r: abs(loss_gap(r)) <= 1.0),
      ("adamw_4bit", "4-bit AdamW matches 32-bit AdamW (target: final loss within 2%)",
       lambda r: abs(loss_gap(r)) <= 2.0),
  ]
  for name, claim, holds in checks:
    if name not in by:
      continue
    r = by[name]
    verdict = "holds" if holds(r) else "does not hold"
    lines.append(f"- **{claim}**: {verdict} here. {name} {ratio_text(r)}; final validation "
                 f"loss {r.final_loss:.4f} vs AdamW {base.final_loss:.4f} "
                 f"({loss_gap(r):+.1f}%).")
  return lines


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--lr-sweep", action="store_true")
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  config = QUICK if args.quick else TaskConfig()
  if args.steps:
    config = replace(config, steps=args.steps)
  results, setting = run_reference_task(OPTIMIZERS, config, seed=args.seed,
                                        lr_sweep=args.lr_sweep)
  details = "\n".join(f"- {k}: {v}" for k, v in setting.items())
  command = "python benchmarks/convergence.py" + (" --lr-sweep" if args.lr_sweep else "") + \
      (" --quick" if args.quick else "") + (f" --steps {args.steps}" if args.steps else "") + \
      f" --seed {args.seed}"
  section = "\n".join([
      BEGIN, "## Convergence: which optimizer, measured", "",
      f"`{command}` (learning rates from each optimizer's published recipe, see "
      "`optimkit/comparison/recipes.py`; schedule-free runs are evaluated at their averaged "
      "weights).", "", markdown_table(results), "", "### The claims, checked at this scale", "",
      *_verdicts(results), "", "Setting:", "", details, END])
  text = open(RESULTS).read() if os.path.exists(RESULTS) else "# optimkit benchmark results\n"
  if BEGIN in text:
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: section, text,
                  flags=re.S)
  else:
    text = text.rstrip() + "\n\n" + section + "\n"
  with open(RESULTS, "w") as handle:
    handle.write(text)
  print(markdown_table(results))
  print("\n".join(_verdicts(results)))
  print(f"wrote {RESULTS}")


if __name__ == "__main__":
  main()
