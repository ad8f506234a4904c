"""Optimizer step time for every optimizer in the registry, against optax's same algorithm and
against two memory-traffic bounds, all measured in one run.

    python benchmarks/step_time.py [--params 25e6] [--repeats 10] [--rounds 3]
                                   [--optimizers adamw,lion] [--heap pooled]

For each optimizer: optimkit's median step time (params and state donated, as in a training
step) and, where optax has the algorithm (`registry` `optax`, built with `optax_mode`), optax's
and their ratio; then two bounds at the streaming bandwidth measured in this run:

  streaming bound  the bytes of one read/write pass (read g, p, state; write p, state)
  own bound        that plus the extra reads the optimizer's reduction dependencies force
                   (`benchmarks/bounds.py`: a norm or a row/column statistic must be complete
                   before the update that depends on it is written)

and the fraction of each the step achieves (bytes / time / bandwidth). The bandwidth is that of
an in-place `a <- a + s * b` over params-shaped float32 arrays (2 reads, 1 write), measured on
this CPU before every optimizer; the table uses the run's median and prints its spread. Steps
of optimkit and optax alternate in `--rounds` blocks of `--repeats` steps; times are the median
over all steps, the spread the range of the per-round medians.

`--heap pooled` reruns the measurement in a process whose glibc keeps freed memory
(`benchmarks.common.POOLED_HEAP_ENV`): with glibc's default every params-sized temporary or
copy a step makes is mapped, page-faulted and unmapped again each step, which on CPU costs
more than the traffic the bounds count, and which XLA's GPU/TPU allocators (pools) do not pay.
optax is measured under the same heap in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from benchmarks.bounds import PASSES  # noqa: E402
from benchmarks.common import (  # noqa: E402
    concrete_tree,
    describe,
    machine,
    pooled_heap,
    rerun_with_pooled_heap,
    time_in_place,
)
from optimkit import registry  # noqa: E402
from optimkit.memory import param_count, state_bytes  # noqa: E402


def _logits_fn(params):
  del params
  return jnp.zeros((1, 2))


# Extra `update` arguments by need (registry `needs`); the same for optax's counterpart.
NEEDS: dict[str, Callable[[], Any]] = {
    "key": lambda: jax.random.key(0),
    "logits_fn": lambda: _logits_fn,
}

# Arguments for both libraries that keep work that is not the optimizer's per-step cost out of
# the timing: Sophia's Hessian refresh is a model evaluation (every 10 steps by default).
# Kron's preconditioner update probability is annealed from 1 to 0.03 (its long-run value is
# timed); Shampoo recomputes its roots every 10 steps, as SOAP its eigenbases by default, so the
# median step is one without the recomputation (what Sophia's refresh is above). Kron's dense
# preconditioner of the 8,192-token embedding dimension (max_size_triangular 8,192) alone costs
# seconds of matrix products per step on this CPU; at 4,096 that dimension is diagonal.
TIMED_OFF: dict[str, dict[str, Any]] = {
    "kron": {"preconditioner_update_probability": 0.03, "max_size_triangular": 4096},
    "shampoo": {"preconditioning_compute_steps": 10},
    "sophia": {"update_interval": 10**9},
}


def makers(name: str) -> tuple[Callable[[], optax.GradientTransformation],
                                Callable[[], optax.GradientTransformation] | None, dict]:
  """(optimkit's optimizer, optax's of the same algorithm or None, extra update args)."""
  info = registry.get(name)
  lr = info.typical_lr
  common = TIMED_OFF.get(name, {})
  theirs_fn = info.optax_function()
  ours = lambda: info.make(lr, **info.optax_mode, **common)
  theirs = None if theirs_fn is None else (lambda: theirs_fn(lr, **common))
  extra = {need: NEEDS[need]() for need in info.needs}
  if name == "sophia":  # optax's Sophia asks for obj_fn where optimkit's asks for logits_fn
    extra["obj_fn"] = lambda p: 0.0
  return ours, theirs, extra


def compiled_step(tx: optax.GradientTransformation, params: Any, grads: Any, extra: dict):
  """(compiled donated step, fresh params, fresh state)."""
  state = tx.init(params)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state

  params, state = jax.tree.map(jnp.copy, (params, state))
  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
  params, state = compiled(params, state, grads)  # warm-up
  jax.block_until_ready((params, state))
  return compiled, [params, state]


def interleaved(runs: list, grads: Any, repeats: int, rounds: int) -> list[tuple[float, float]]:
  """(median seconds per step, spread of the per-round medians) of each compiled step, the steps
  alternating in `rounds` blocks so that the machine's load falls on all of them alike."""
  times: list[list[float]] = [[] for _ in runs]
  round_medians: list[list[float]] = [[] for _ in runs]
  for _ in range(rounds):
    for i, (compiled, carry) in enumerate(runs):
      block = []
      for _ in range(repeats):
        start = time.perf_counter()
        carry[0], carry[1] = compiled(carry[0], carry[1], grads)
        jax.block_until_ready(carry)
        block.append(time.perf_counter() - start)
      times[i] += block
      round_medians[i].append(statistics.median(block))
  return [(statistics.median(t), max(r) - min(r)) for t, r in zip(times, round_medians)]


def streaming_bandwidth(params: Any, repeats: int) -> float:
  """Bytes per second of an in-place a <- a + s * b over `params` (2 reads, 1 write)."""
  stream = lambda a, b: jax.tree.map(lambda x, y: x + 0.5 * y, a, b)
  return 12 * param_count(params) / time_in_place(stream, (params, params), 0, repeats)


def _tree_bytes(tree: Any) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--params", type=float, default=25e6)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--optimizers", default=",".join(registry.names()))
  parser.add_argument("--heap", choices=("default", "pooled"), default="default",
                      help="pooled: glibc keeps freed memory (as GPU/TPU allocators pool)")
  args = parser.parse_args()
  if args.heap == "pooled" and not pooled_heap():
    rerun_with_pooled_heap(__file__, sys.argv[1:])
  params = concrete_tree(args.params)
  grads = jax.tree.map(lambda p: 0.01 * jnp.sign(p) + p, params)
  grad_bytes = param_bytes = _tree_bytes(params)
  rows, bandwidths = [], []
  for name in args.optimizers.split(","):
    bandwidths.append(streaming_bandwidth(params, args.repeats))
    ours_maker, theirs_maker, extra = makers(name)
    txs = [ours_maker()] + ([theirs_maker()] if theirs_maker else [])
    runs = [compiled_step(tx, params, grads, extra) for tx in txs]
    timed = interleaved(runs, grads, args.repeats, args.rounds)
    del runs
    passes = PASSES[name]
    state = state_bytes(txs[0], params)
    rows.append((name, timed, passes.streaming_bytes(grad_bytes, param_bytes, state),
                 passes.own_bytes(grad_bytes, param_bytes, state), passes.matmul))
    # Progress, with the bandwidth measured just before this optimizer (the table below uses
    # the run's median), so that a long run interrupted still leaves its numbers.
    own_s = passes.own_bytes(grad_bytes, param_bytes, state) / bandwidths[-1]
    print(f"# {name}: {1000 * timed[0][0]:.1f} ms"
          + (f", optax {1000 * timed[1][0]:.1f} ms" if len(timed) > 1 else "")
          + f", own bound {1000 * own_s:.1f} ms at {bandwidths[-1] / 1e9:.1f} GB/s",
          file=sys.stderr, flush=True)
  bandwidth = statistics.median(bandwidths)
  n = param_count(params)
  heap = "pooled heap (POOLED_HEAP_ENV)" if pooled_heap() else "glibc's default heap"
  print(f"# step time: {describe(params)}; {machine()}; {heap}")
  print(f"# streaming bandwidth (in-place a + s*b, CPU): median {bandwidth / 1e9:.1f} GB/s, "
        f"range {min(bandwidths) / 1e9:.1f}-{max(bandwidths) / 1e9:.1f} over "
        f"{len(bandwidths)} measurements; {args.rounds} rounds x {args.repeats} steps")
  print("| optimizer | optimkit ms (spread) | optax ms (spread) | ratio | streaming B/param | "
        "own B/param | % of streaming bound | % of own bound |")
  print("|---|---|---|---|---|---|---|---|")
  for name, timed, streaming, own, matmul in rows:
    (ours_s, ours_spread), theirs = timed[0], timed[1:]
    optax_cells = (f"{1000 * theirs[0][0]:.1f} ({1000 * theirs[0][1]:.1f}) | "
                   f"{ours_s / theirs[0][0]:.2f}" if theirs else "- | -")
    mark = " (matmul)" if matmul else ""
    print(f"| {name}{mark} | {1000 * ours_s:.1f} ({1000 * ours_spread:.1f}) | {optax_cells} | "
          f"{streaming / n:.1f} | {own / n:.1f} | {100 * streaming / ours_s / bandwidth:.0f}% | "
          f"{100 * own / ours_s / bandwidth:.0f}% |", flush=True)


if __name__ == "__main__":
  main()
