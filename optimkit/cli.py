"""The `optimkit` command.

    optimkit compare [--optimizers adamw,lion,...] [--steps N] [--seed S] [--out DIR]
                     [--quick] [--lr-sweep] [--data FILE]
    optimkit compare --suite [--budget quick|full] [--tasks lm,digits,...] [--seeds N]
                     [--optimizers ...] [--out DIR] [--data FILE]
    optimkit schedule NAME --peak LR --steps N [--warmup N] [--end LR] [--out FILE.png]
    optimkit memory --params 7e9 [--optimizers adamw,adamw:8bit,lion,soap::8bit,...]

Bad input (an optimizer name that is not in `optimkit.registry`, an empty name, a missing
`--data` file, an `--out` whose parent directory does not exist) is one line on stderr and exit
status 2, before anything is trained.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence


class UsageError(ValueError):
  """Bad command-line input: reported as one line and exit status 2."""


def _fail(command: str, error: Exception) -> int:
  print(f"optimkit {command}: {' '.join(str(error).split())}", file=sys.stderr)
  return 2


def parse_optimizer_names(text: str, flag: str = "--optimizers",
                          allow_storage: bool = False) -> list[str]:
  """Comma-separated optimizer names (with `allow_storage`, each may be `name:storage`), each a
  registered optimizer; raises ValueError naming the bad one and listing the valid names."""
  from optimkit import registry

  names = [name.strip() for name in text.split(",")]
  if not any(names):
    raise UsageError(f"{flag} is empty; give comma-separated optimizer names, e.g. adamw,lion")
  for name in names:
    if not name:
      raise UsageError(f"{flag} {text!r} has an empty name; remove the extra comma")
    base, _, storage = name.partition(":")
    if storage and not allow_storage:
      raise UsageError(f"{flag}: {name!r}: a storage suffix (:{storage}) is not accepted here")
    try:
      registry.get(base)
    except ValueError as error:
      raise UsageError(f"{flag}: {error}") from None
  return names


def check_output_directory(out: str, flag: str = "--out") -> None:
  """A directory to write into: it may not exist yet (it is created), but its parent must, so
  a mistyped path fails now rather than after the run."""
  path = Path(out)
  if path.exists() and not path.is_dir():
    raise UsageError(f"{flag} {out}: exists and is not a directory")
  _check_directory(path if path.is_dir() else path.parent, flag, out)


def check_output_file(out: str, flag: str = "--out") -> None:
  """A file to write: its directory must exist."""
  path = Path(out)
  if path.is_dir():
    raise UsageError(f"{flag} {out}: is a directory; give a file name")
  _check_directory(path.parent, flag, out)


def _check_directory(directory: Path, flag: str, out: str) -> None:
  if not directory.is_dir():
    raise UsageError(f"{flag} {out}: directory {directory} does not exist")
  if not os.access(directory, os.W_OK):
    raise UsageError(f"{flag} {out}: directory {directory} is not writable")


def check_data_file(data: str | None) -> None:
  if data is None:
    return
  if not Path(data).is_file():
    raise UsageError(f"--data {data}: no such file")
  from optimkit.comparison.data import TextData

  TextData.load(data)  # ValueError when the text is too short to split


SUITE_ONLY = ("tasks", "seeds", "budget")
NOT_FOR_SUITE = ("steps", "quick", "lr_sweep", "seed")


def _check_compare_flags(args: argparse.Namespace) -> None:
  flag = lambda name: "--" + name.replace("_", "-")
  given = lambda name: getattr(args, name) is not None and getattr(args, name) is not False
  if args.suite:
    extra = [flag(n) for n in NOT_FOR_SUITE if given(n)]
    if extra:
      raise UsageError(f"{', '.join(extra)}: not used with --suite, which sets steps, learning "
                       "rates and seeds from --budget and --seeds")
    if args.seeds is not None and args.seeds < 1:
      raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
  else:
    extra = [flag(n) for n in SUITE_ONLY if given(n)]
    if extra:
      raise UsageError(f"{', '.join(extra)}: only used with --suite")
  if args.steps is not None and args.steps < 1:
    raise UsageError(f"--steps must be >= 1, got {args.steps}")
  check_output_directory(args.out)
  check_data_file(args.data)


def _parse_tasks(text: str | None) -> list[str]:
  from optimkit.comparison.tasks import TASK_NAMES

  if text is None:
    return list(TASK_NAMES)
  names = [name.strip() for name in text.split(",")]
  if not all(names):
    raise UsageError(f"--tasks {text!r} has an empty name; choose from {', '.join(TASK_NAMES)}")
  unknown = [name for name in names if name not in TASK_NAMES]
  if unknown:
    raise UsageError(f"--tasks: unknown {', '.join(unknown)}; choose from "
                     f"{', '.join(TASK_NAMES)}")
  if "digits" in names:
    try:
      import sklearn  # noqa: F401  (the digits task reads the copy scikit-learn ships)
    except ImportError:
      raise UsageError("the digits task needs scikit-learn: pip install 'optimkit[suite]', or "
                       "leave it out with --tasks") from None
  return names


def _use_compilation_cache(directory: Path) -> None:
  """Keeps compiled train steps in `directory` (JAX's persistent cache), so that a resumed or
  repeated suite loads them instead of compiling again; a cache directory the user configured
  (JAX_COMPILATION_CACHE_DIR) is left as it is."""
  import jax

  if not jax.config.jax_compilation_cache_dir:  # type: ignore[attr-defined]  # a config option
    jax.config.update("jax_compilation_cache_dir", str(directory))


def _suite(args: argparse.Namespace, names: list[str] | None, tasks: list[str]) -> int:
  from optimkit.comparison.suite import run_suite
  from optimkit.comparison.suite_report import markdown, write_suite_reports
  from optimkit.comparison.tasks import BUDGETS

  budget = BUDGETS[args.budget or "quick"]
  _use_compilation_cache(Path(args.out) / "xla-cache")
  print(f"optimkit compare --suite: budget {budget.name}, tasks {', '.join(tasks)}, "
        f"results cached in {Path(args.out) / 'runs'} (rerun the same command to resume)",
        file=sys.stderr)
  result = run_suite(args.out, budget, tasks, names, args.seeds, args.data)
  print(markdown(result))
  for kind, path in write_suite_reports(result, args.out).items():
    print(f"wrote {kind}: {path}")
  return 0


def _compare(args: argparse.Namespace) -> int:
  from optimkit.comparison import (
    DEFAULT_OPTIMIZERS,
    QUICK,
    TaskConfig,
    markdown_table,
    run_reference_task,
    write_reports,
  )

  try:
    _check_compare_flags(args)
    names = parse_optimizer_names(args.optimizers) if args.optimizers is not None else None
    tasks = _parse_tasks(args.tasks) if args.suite else []
  except ValueError as error:
    return _fail("compare", error)
  if args.suite:
    return _suite(args, names, tasks)
  names = names or list(DEFAULT_OPTIMIZERS)
  seed = args.seed or 0
  config = QUICK if args.quick else TaskConfig()
  if args.steps is not None:
    config = replace(config, steps=args.steps, eval_every=max(1, min(config.eval_every,
                                                                     args.steps)))
  print(f"optimkit compare: {', '.join(names)} for {config.steps} steps "
        f"({'quick' if args.quick else 'default'} setting, seed {seed})", file=sys.stderr)
  results, setting = run_reference_task(names, config, seed=seed, data_path=args.data,
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
    check_output_file(args.out)
    schedule = schedule_from_cli(args.name, args.peak, args.steps, warmup, args.end)
  except ValueError as error:
    return _fail("schedule", error)
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
    "adamw,adamw:bfloat16,adamw:8bit,adamw:4bit,lion,lion:8bit,adafactor,sgd,adam_mini,"
    "adam_mini:4bit,adams,"
    "sophia,schedule_free_adamw,adan,muon,muon:8bit,shampoo,shampoo:8bit,shampoo::bfloat16,"
    "shampoo:8bit:8bit,soap,soap:8bit,soap::bfloat16,soap:8bit:8bit,kron,kron:8bit,"
    "kron::bfloat16,kron:8bit:8bit")


def parse_mesh(text: str) -> dict[str, int]:
  """"2x4" -> {"data": 2, "model": 4}: the data (FSDP, ZeRO-1) and model (tensor) axes."""
  parts = text.lower().split("x")
  if len(parts) != 2 or not all(part.isdigit() and int(part) >= 1 for part in parts):
    raise ValueError(f"--mesh must be DATAxMODEL with two whole numbers >= 1 (e.g. 2x4, 8x1), "
                     f"got {text!r}")
  return {"data": int(parts[0]), "model": int(parts[1])}


def memory_table(total_params: float, names: Sequence[str],
                 mesh_shape: dict[str, int] | None = None) -> list[dict]:
  """Rows of (optimizer, storage, bytes/param, total GB) for a transformer-shaped tree; with a
  mesh, also the state bytes on one device under FSDP x TP with ZeRO-1 over the data axis.

  A name is `optimizer[:state_storage[:preconditioner_storage]]`: `soap:8bit:8bit` stores SOAP's
  moments and its statistics and bases at 8 bits, `kron::bfloat16` only Kron's factors in
  bfloat16 (the storage column reads "moments/preconditioner" then)."""
  from optimkit import memory, registry

  params = memory.transformer_shaped_params(total_params)
  count = memory.param_count(params)
  specs = memory.fsdp_tp_specs_for(params, mesh_shape) if mesh_shape else None
  rows = []
  for spec in names:
    name, _, storages = spec.partition(":")
    storage, _, preconditioner = storages.partition(":")
    maker = registry.get(name).make  # ValueError, listing the valid names, for a non-optimizer
    kwargs: dict[str, Any] = {"state_storage": storage} if storage else {}
    if preconditioner:
      import inspect
      if "preconditioner_storage" not in inspect.signature(maker).parameters:
        raise ValueError(f"{spec}: {name} has no preconditioner_storage (only the Kronecker "
                         f"preconditioners shampoo, soap and kron do); give "
                         f"{name}{':' + storage if storage else ''}")
      kwargs["preconditioner_storage"] = preconditioner
    if name == "sgd":
      kwargs["momentum"] = 0.9
    tx = maker(**kwargs)
    total = memory.state_bytes(tx, params)
    fields = memory.state_breakdown(tx, params)
    label = storage or "float32"
    if preconditioner:
      label = f"{label}/{preconditioner}"
    row = {"optimizer": name, "storage": label,
           "bytes_per_param": total / count, "total_gb": total / 1e9,
           "fields": {k: v / count for k, v in fields.items() if v / count >= 0.005}}
    if mesh_shape:
      zero1_axis = "data" if mesh_shape["data"] > 1 else None
      per_device = memory.state_bytes_per_device(tx, params, specs, mesh_shape, zero1_axis)
      row["device_gb"] = per_device / 1e9
      row["of_even_share"] = per_device / (total / math.prod(mesh_shape.values()))
    rows.append(row)
  return rows


def _memory(args: argparse.Namespace) -> int:
  from optimkit import memory

  try:
    names = parse_optimizer_names(args.optimizers, allow_storage=True)
    mesh_shape = parse_mesh(args.mesh) if args.mesh else None
    rows = memory_table(args.params, names, mesh_shape)
  except ValueError as error:
    return _fail("memory", error)
  count = memory.param_count(memory.transformer_shaped_params(args.params))
  print(f"optimizer state for a transformer-shaped tree of {count / 1e9:.3f}B float32 "
        f"parameters (params themselves: {4 * count / 1e9:.1f} GB)")
  mesh_columns = ""
  if mesh_shape:
    devices = math.prod(mesh_shape.values())
    zero = " with ZeRO-1 over data" if mesh_shape["data"] > 1 else ""
    print(f"per device: a {mesh_shape['data']} (data) x {mesh_shape['model']} (model) mesh, "
          f"FSDP x tensor-parallel params{zero}; 'x even' is the device's state over total/"
          f"{devices}")
    mesh_columns = " GB/device | x even |"
  print(f"\n| {'optimizer':<20} | {'storage':<16} | bytes/param | state GB |{mesh_columns} "
        f"largest fields (B/param)")
  print(f"|{'-' * 22}|{'-' * 18}|-------------|----------|"
        f"{'-----------|--------|' if mesh_shape else ''}{'-' * 30}")
  for row in rows:
    fields = ", ".join(f"{k.replace('inner_state.', '')} {v:.2f}"
                       for k, v in sorted(row["fields"].items(), key=lambda kv: -kv[1])[:3])
    device = (f" {row['device_gb']:>9.3f} | {row['of_even_share']:>6.2f} |"
              if mesh_shape else "")
    print(f"| {row['optimizer']:<20} | {row['storage']:<16} | {row['bytes_per_param']:>11.3f} | "
          f"{row['total_gb']:>8.2f} |{device} {fields}")
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
  compare.add_argument("--seed", type=int, default=None, help="seed (default 0)")
  compare.add_argument("--out", default="optimkit-compare", help="output directory")
  compare.add_argument("--quick", action="store_true", help="a smaller model, about a minute")
  compare.add_argument("--lr-sweep", action="store_true",
                       help="try 1/3x, 1x and 3x each recipe's learning rate, keep the best")
  compare.add_argument("--data", default=None, help="a text file to train on instead")
  compare.add_argument("--suite", action="store_true",
                       help="the decision guide: every task, tuned learning rates, several "
                            "seeds, verdicts on the folklore (resumable)")
  compare.add_argument("--budget", choices=("quick", "full"), default=None,
                       help="--suite size: quick (about 8 CPU-minutes) or full (about "
                            "an hour); default quick")
  compare.add_argument("--tasks", default=None,
                       help="--suite tasks, comma-separated (default: lm,digits,lm_large_batch,"
                            "instability,memory)")
  compare.add_argument("--seeds", type=int, default=None,
                       help="--suite seeds per optimizer at its chosen rate (default 3)")
  compare.set_defaults(handler=_compare)

  schedule = commands.add_parser("schedule",
                                 help="print and draw a built-in learning-rate schedule")
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
  memory.add_argument("--mesh", default=None,
                      help="DATAxMODEL (e.g. 2x4): also the state bytes on one device of that "
                           "mesh, FSDP x tensor-parallel with ZeRO-1 over data")
  memory.add_argument("--optimizers", default=DEFAULT_MEMORY_OPTIMIZERS,
                      help="comma-separated names, optionally name:storage (8bit, 4bit, ...) "
                           "and, for shampoo/soap/kron, name:storage:preconditioner_storage "
                           "(float32, bfloat16, 8bit; e.g. soap:8bit:8bit, kron::bfloat16)")
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
