"""The `optimkit` command.

    optimkit compare [--optimizers adamw,lion,...] [--steps N] [--seed S] [--out DIR]
                     [--quick] [--lr-sweep] [--data FILE]
    optimkit schedule NAME --peak LR --steps N [--warmup N] [--end LR] [--out FILE.png]
    optimkit memory --params 7e9 [--optimizers adamw,adamw:8bit,lion,...]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Sequence


def _compare(args: argparse.Namespace) -> int:
  from optimkit.comparison import (
      DEFAULT_OPTIMIZERS, QUICK, RECIPES, TaskConfig, markdown_table, run_reference_task,
      write_reports)

  names = [n.strip() for n in args.optimizers.split(",") if n.strip()] if args.optimizers \
      else list(DEFAULT_OPTIMIZERS)
  unknown = [n for n in names if n not in RECIPES]
  if unknown:
    print(f"optimkit compare: unknown optimizers {unknown}; choose from {sorted(RECIPES)}",
          file=sys.stderr)
    return 2
  config = QUICK if args.quick else TaskConfig()
  if args.steps is not None:
    if args.steps < 1:
      print(f"optimkit compare: --steps must be >= 1, got {args.steps}", file=sys.stderr)
      return 2
    config = replace(config, steps=args.steps, eval_every=max(1, min(config.eval_every,
                                                                     args.steps)))
  print(f"optimkit compare: {', '.join(names)} for {config.steps} steps "
        f"({'quick' if args.quick else 'default'} setting, seed {args.seed})", file=sys.stderr)
  results, setting = run_reference_task(names, config, seed=args.seed, data_path=args.data,
                                        lr_sweep=args.lr_sweep)
  print(markdown_table(results))
  paths = write_reports(results, setting, args.out)
  print()
  for kind, path in paths.items():
    print(f"wrote {kind}: {path}")
  if "png" not in paths:
    print("(no PNG: install matplotlib, e.g. pip install 'optimkit[plot]')")
  return 0


def schedule_from_cli(name: str, peak: float, steps: int, warmup: int, end: float):
  """A built-in schedule from the command line's few numbers (see `optimkit schedule -h`)."""
  from optimkit import schedules as s

  makers = {
      "constant": lambda: s.constant(peak),
      "linear": lambda: s.linear(peak, end, steps),
      "cosine": lambda: s.cosine(peak, steps, end),
      "warmup_cosine": lambda: s.warmup_cosine(0.0, peak, warmup, steps, end),
      "wsd": lambda: s.wsd(peak, steps, warmup_steps=warmup, end_value=end),
      "onecycle": lambda: s.onecycle(peak, steps),
      "step_decay": lambda: s.step_decay(peak, gamma=0.1, step_size=max(1, steps // 3)),
      "exponential": lambda: s.exponential(peak, 0.01 ** (1.0 / steps)),
      "inverse_sqrt": lambda: s.inverse_sqrt(peak, max(1, warmup)),
      "cosine_restarts": lambda: s.cosine_restarts(peak, max(1, steps // 4), 1, end),
      "polynomial": lambda: s.polynomial(peak, end, 2.0, steps),
  }
  if name not in makers:
    raise ValueError(f"unknown schedule {name!r}; choose from {sorted(makers)}")
  return makers[name]()


def _schedule(args: argparse.Namespace) -> int:
  import numpy as np

  from optimkit.schedules import plot_schedule

  warmup = args.warmup if args.warmup is not None else max(1, args.steps // 20)
  try:
    schedule = schedule_from_cli(args.name, args.peak, args.steps, warmup, args.end)
  except ValueError as error:
    print(f"optimkit schedule: {error}", file=sys.stderr)
    return 2
  samples = sorted(set(np.linspace(0, args.steps - 1, 9).astype(int).tolist() + [warmup]))
  print(f"{args.name}: peak {args.peak:g}, {args.steps} steps, warmup {warmup}, end {args.end:g}")
  for step in samples:
    print(f"  step {step:>7}: {float(schedule(step)):.6g}")
  try:
    print(f"wrote {plot_schedule(schedule, args.steps, args.out, title=args.name)}")
  except ImportError as error:
    print(f"(no PNG: {error})")
  return 0


DEFAULT_MEMORY_OPTIMIZERS = (
    "adamw,adamw:bfloat16,adamw:8bit,adamw:4bit,lion,lion:8bit,adafactor,sgd,adam_mini,adams,"
    "sophia,schedule_free_adamw,adan,muon,muon:8bit,shampoo,shampoo:8bit,soap,soap:8bit,kron,"
    "kron:8bit")


def memory_table(total_params: float, names: Sequence[str]) -> list[dict]:
  """Rows of (optimizer, storage, bytes/param, total GB) for a transformer-shaped tree."""
  import optimkit
  from optimkit import memory

  params = memory.transformer_shaped_params(total_params)
  count = memory.param_count(params)
  rows = []
  for spec in names:
    name, _, storage = spec.partition(":")
    maker = getattr(optimkit.optimizers, name, None)
    if maker is None or name.startswith("_"):
      raise ValueError(f"unknown optimizer {name!r}")
    kwargs = {"state_storage": storage} if storage else {}
    if name == "sgd":
      kwargs["momentum"] = 0.9
    tx = maker(**kwargs)
    total = memory.state_bytes(tx, params)
    fields = memory.state_breakdown(tx, params)
    rows.append({"optimizer": name, "storage": storage or "float32",
                 "bytes_per_param": total / count, "total_gb": total / 1e9,
                 "fields": {k: v / count for k, v in fields.items() if v / count >= 0.005}})
  return rows


def _memory(args: argparse.Namespace) -> int:
  from optimkit import memory

  names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
  try:
    rows = memory_table(args.params, names)
  except ValueError as error:
    print(f"optimkit memory: {error}", file=sys.stderr)
    return 2
  count = memory.param_count(memory.transformer_shaped_params(args.params))
  print(f"optimizer state for a transformer-shaped tree of {count / 1e9:.3f}B float32 "
        f"parameters (params themselves: {4 * count / 1e9:.1f} GB)\n")
  print(f"| {'optimizer':<20} | {'storage':<8} | bytes/param | state GB | largest fields (B/param)")
  print(f"|{'-' * 22}|{'-' * 10}|-------------|----------|{'-' * 30}")
  for row in rows:
    fields = ", ".join(f"{k.replace('inner_state.', '')} {v:.2f}"
                       for k, v in sorted(row["fields"].items(), key=lambda kv: -kv[1])[:3])
    print(f"| {row['optimizer']:<20} | {row['storage']:<8} | {row['bytes_per_param']:>11.3f} | "
          f"{row['total_gb']:>8.2f} | {fields}")
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="optimkit", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command")
  compare = commands.add_parser(
      "compare", help="train a reference model with each optimizer and compare them")
  compare.add_argument("--optimizers", default=None,
                       help="comma-separated names (default: adamw,lion,adafactor,sophia,"
                            "schedule_free_adamw)")
  compare.add_argument("--steps", type=int, default=None, help="training steps per optimizer")
  compare.add_argument("--seed", type=int, default=0)
  compare.add_argument("--out", default="optimkit-compare", help="output directory")
  compare.add_argument("--quick", action="store_true", help="a smaller model, about a minute")
  compare.add_argument("--lr-sweep", action="store_true",
                       help="try 1/3x, 1x and 3x each recipe's learning rate, keep the best")
  compare.add_argument("--data", default=None, help="a text file to train on instead")
  compare.set_defaults(handler=_compare)

  schedule = commands.add_parser("schedule", help="print and draw a built-in learning-rate schedule")
  schedule.add_argument("name", help="constant, linear, cosine, warmup_cosine, wsd, onecycle, "
                                     "step_decay, exponential, inverse_sqrt, cosine_restarts, "
                                     "polynomial")
  schedule.add_argument("--peak", type=float, required=True, help="peak (or initial) value")
  schedule.add_argument("--steps", type=int, required=True, help="total steps")
  schedule.add_argument("--warmup", type=int, default=None, help="warmup steps (default 5%%)")
  schedule.add_argument("--end", type=float, default=0.0, help="final value (default 0)")
  schedule.add_argument("--out", default="schedule.png", help="PNG file to write")
  schedule.set_defaults(handler=_schedule)

  memory = commands.add_parser("memory", help="optimizer-state memory for a model size")
  memory.add_argument("--params", type=float, default=7e9, help="number of parameters")
  memory.add_argument("--optimizers", default=DEFAULT_MEMORY_OPTIMIZERS,
                      help="comma-separated names, optionally name:storage (8bit, 4bit, ...)")
  memory.set_defaults(handler=_memory)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if getattr(args, "handler", None) is None:
    # The embedded default: the comparison on its default setting.
    args = parser.parse_args(["compare"])
  return args.handler(args)


if __name__ == "__main__":
  sys.exit(main())
