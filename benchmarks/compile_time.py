"""Compile time of one optimizer step against the number of parameter leaves, optimkit against
optax on every optimizer both have (and clip + AdamW), measured in one run.

    python benchmarks/compile_time.py [--leaves 100,1000,3000] [--optimizers adamw,lion]
                                      [--repeats 3] [--markdown]

Leaves are 64 x 64 float32 arrays (a deep unscanned model has thousands of them). Each
measurement is split into its three phases: trace (Python runs the optimizer and builds the
jaxpr), lower (jaxpr to StableHLO) and compile (XLA). Times are process CPU seconds, not wall
clock: the machine is shared, and CPU time is what the step costs whatever else runs beside it
(wall clock is printed too). optimkit and optax alternate within each repeat; the ratio is the
median of the per-repeat ratios, with their range. "ops/leaf" is the optimized HLO's instruction
count per leaf, a structural proxy for XLA's work that no load changes.

The "floor" column is a bare SGD-momentum step written with two `tree.map`s and no library at
all: XLA's own compile time for that many arrays, which no optimizer library can go below without
changing the parameter layout.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import optimkit  # noqa: E402
from benchmarks.common import machine  # noqa: E402
from optimkit import registry  # noqa: E402

Maker = Callable[[], optax.GradientTransformation]


def _sophia_extra() -> dict:
  return {"key": jax.random.key(0), "logits_fn": lambda p: jnp.zeros((1, 2)),
          "obj_fn": lambda p: 0.0}


# Extra `update` arguments an optimizer needs (the model, for Sophia), by registry name.
EXTRA_ARGS: dict[str, Callable[[], dict]] = {"sophia": _sophia_extra}


def _optax_function(path: str) -> Callable[..., optax.GradientTransformation]:
  return functools.reduce(getattr, path.split("."), optax)


def shared_pairs() -> dict[str, tuple[Maker, Maker]]:
  """name -> (optimkit maker, optax maker): every registry optimizer optax also has, each in
  optax mode at its typical learning rate, and clip + AdamW."""
  pairs: dict[str, tuple[Maker, Maker]] = {
      "clip+adamw": (lambda: optax.chain(optax.clip_by_global_norm(1.0), optimkit.adamw(1e-3)),
                     lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))),
  }
  for name, info in sorted(registry.OPTIMIZERS.items()):
    if not info.optax or info.shortcut_of:
      continue
    lr = info.typical_lr
    pairs[name] = (functools.partial(info.make, learning_rate=lr, **info.optax_mode),
                   functools.partial(_optax_function(info.optax), learning_rate=lr))
  # optax's Adafactor factors dimensions >= 128 by default; both factor these 64 x 64 leaves.
  pairs["adafactor"] = (
      lambda: optimkit.adafactor(1e-2, relative_step=False, min_dim_size_to_factor=32),
      lambda: optax.adafactor(1e-2, min_dim_size_to_factor=32))
  return dict(sorted(pairs.items()))


def abstract_params(leaves: int) -> dict:
  return {f"w{i:05d}": jax.ShapeDtypeStruct((64, 64), jnp.float32) for i in range(leaves)}


def _phases(jitted: Any, *args: Any) -> dict[str, float]:
  """CPU and wall seconds of trace, lower and compile, and the optimized HLO's op count."""
  times: dict[str, float] = {}
  cpu, wall = time.process_time(), time.perf_counter()

  def lap(phase: str) -> None:
    nonlocal cpu, wall
    now_cpu, now_wall = time.process_time(), time.perf_counter()
    times[phase], times[phase + "_wall"] = now_cpu - cpu, now_wall - wall
    cpu, wall = now_cpu, now_wall

  traced = jitted.trace(*args)
  lap("trace")
  lowered = traced.lower()
  lap("lower")
  compiled = lowered.compile()
  lap("compile")
  times["total"] = times["trace"] + times["lower"] + times["compile"]
  times["total_wall"] = times["trace_wall"] + times["lower_wall"] + times["compile_wall"]
  times["hlo_ops"] = sum(" = " in line for line in compiled.as_text().splitlines())
  return times


def measure(tx: optax.GradientTransformation, leaves: int, extra: dict) -> dict[str, float]:
  params = abstract_params(leaves)
  state = jax.eval_shape(tx.init, params)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state

  return _phases(jax.jit(step, donate_argnums=(0, 1)), params, state, params)


def floor(leaves: int) -> dict[str, float]:
  params = abstract_params(leaves)

  def step(params, momentum, grads):
    momentum = jax.tree.map(lambda m, g: 0.9 * m + g, momentum, grads)
    return jax.tree.map(lambda p, m: p - 1e-3 * m, params, momentum), momentum

  return _phases(jax.jit(step, donate_argnums=(0, 1)), params, params, params)


def _median_range(values: list[float]) -> str:
  return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
  pairs = shared_pairs()
  parser = argparse.ArgumentParser()
  parser.add_argument("--leaves", default="100,1000,3000")
  parser.add_argument("--optimizers", default=",".join(pairs),
                      help=f"comma-separated, from: {', '.join(pairs)}")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  leaf_counts = [int(n) for n in args.leaves.split(",")]
  names = args.optimizers.split(",")
  print(f"# compile time vs number of 64x64 leaves (CPU s, median of {args.repeats}; ratio: "
        f"median [range] of per-repeat ratios); {machine()}")
  print("| optimizer | leaves | optimkit trace / lower / compile | optax trace / lower / compile "
        "| optimkit s | optax s | ratio | wall ratio | ops/leaf optimkit / optax | floor s |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  floors = {leaves: floor(leaves)["total"] for leaves in leaf_counts}
  for leaves in leaf_counts:
    for name in names:
      ours_maker, theirs_maker = pairs[name]
      extra = EXTRA_ARGS.get(name, dict)()
      ours, theirs = [], []
      for repeat in range(args.repeats):
        # Alternate which library goes first: whatever the machine does meanwhile hits both.
        order = [(ours, ours_maker), (theirs, theirs_maker)]
        for results, maker in order if repeat % 2 == 0 else order[::-1]:
          results.append(measure(maker(), leaves, extra))
      ratios = [a["total"] / b["total"] for a, b in zip(ours, theirs)]
      wall = [a["total_wall"] / b["total_wall"] for a, b in zip(ours, theirs)]

      def phases(results: list[dict]) -> str:
        return " / ".join(f"{statistics.median(r[p] for r in results):.2f}"
                          for p in ("trace", "lower", "compile"))

      print(f"| {name} | {leaves} | {phases(ours)} | {phases(theirs)} "
            f"| {statistics.median(r['total'] for r in ours):.2f} "
            f"| {statistics.median(r['total'] for r in theirs):.2f} "
            f"| {_median_range(ratios)} | {statistics.median(wall):.2f} "
            f"| {ours[0]['hlo_ops'] / leaves:.1f} / {theirs[0]['hlo_ops'] / leaves:.1f} "
            f"| {floors[leaves]:.2f} |", flush=True)


if __name__ == "__main__":
  main()
