"""The `optimkit` command.

    optimkit compare [--optimizers adamw,lion,...] [--steps N] [--seed S] [--out DIR]
                     [--quick] [--lr-sweep] [--data FILE]
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
