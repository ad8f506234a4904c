"""Optimizer step time, optimkit against optax on the same algorithm, and against the memory
bandwidth this machine streams at, all measured in one run.

    python benchmarks/step_time.py [--params 25e6] [--repeats 10] [--optimizers adamw,lion]

For each optimizer: optimkit's and optax's median step time (params and state donated, as in a
training step), their ratio, the bytes the step must move (params read + written, gradients
read, state read + written), and the achieved fraction of a streaming bound: the bandwidth of
`a + s * b` over the same arrays, measured here.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import optimkit  # noqa: E402
from benchmarks.common import (  # noqa: E402
    concrete_tree, describe, machine, time_in_place, time_step)
from optimkit.memory import param_count, state_bytes  # noqa: E402

SOPHIA_EXTRA = lambda: {"key": jax.random.key(0), "logits_fn": lambda p: jnp.zeros((1, 2)),
                        "obj_fn": lambda p: 0.0}

# name -> (optimkit optimizer, optax optimizer of the same algorithm or None, extra update args)
PAIRS = {
    "adamw": (lambda: optimkit.adamw(1e-3), lambda: optax.adamw(1e-3), None),
    "lion": (lambda: optimkit.lion(1e-4), lambda: optax.lion(1e-4), None),
    "adafactor": (lambda: optimkit.adafactor(1e-2, relative_step=False),
                  lambda: optax.adafactor(1e-2), None),
    "lamb": (lambda: optimkit.lamb(1e-3), lambda: optax.lamb(1e-3), None),
    "sgd_momentum": (lambda: optimkit.sgd(1e-2, momentum=0.9),
                     lambda: optax.sgd(1e-2, momentum=0.9), None),
    # The Hessian refresh (every 10 steps) is a model evaluation, not optimizer cost: timed off.
    "sophia": (lambda: optimkit.sophia(1e-4, update_interval=10**9),
               lambda: optax.contrib.sophia(1e-4, update_interval=10**9), SOPHIA_EXTRA),
    "schedule_free_adamw": (lambda: optimkit.schedule_free_adamw(1e-3),
                            lambda: optax.contrib.schedule_free_adamw(1e-3), None),
    "adamw_8bit": (lambda: optimkit.adamw_8bit(1e-3), None, None),
}


def streaming_bandwidth(params, repeats: int) -> float:
  """Bytes per second of a + s * b over `params`-shaped arrays (2 reads, 1 write)."""
  stream = lambda a, b: jax.tree.map(lambda x, y: x + 0.5 * y, a, b)
  return 12 * param_count(params) / time_in_place(stream, (params, params), 0, repeats)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--params", type=float, default=25e6)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--optimizers", default=",".join(PAIRS))
  args = parser.parse_args()
  params = concrete_tree(args.params)
  grads = jax.tree.map(lambda p: 0.01 * jnp.sign(p) + p, params)
  n = param_count(params)
  bandwidth = streaming_bandwidth(params, args.repeats)
  print(f"# step time: {describe(params)}; {machine()}")
  print(f"# streaming bound (a + s*b): {bandwidth / 1e9:.1f} GB/s")
  print("| optimizer | optimkit ms | optax ms | ratio | bytes/param moved | "
        "optimkit % of bound | optax % of bound |")
  print("|---|---|---|---|---|---|---|")
  for name in args.optimizers.split(","):
    ours_maker, theirs_maker, extra = PAIRS[name]
    ours = ours_maker()
    moved = 12 * n + 2 * state_bytes(ours, params)
    ours_s, _ = time_step(ours, params, grads, args.repeats, extra)
    line = f"| {name} | {1000 * ours_s:.1f} | "
    if theirs_maker is not None:
      theirs = theirs_maker()
      theirs_s, _ = time_step(theirs, params, grads, args.repeats, extra)
      theirs_moved = 12 * n + 2 * state_bytes(theirs, params)
      line += (f"{1000 * theirs_s:.1f} | {ours_s / theirs_s:.2f} | {moved / n:.1f} | "
               f"{100 * moved / ours_s / bandwidth:.0f}% | "
               f"{100 * theirs_moved / theirs_s / bandwidth:.0f}% |")
    else:
      line += f"- | - | {moved / n:.1f} | {100 * moved / ours_s / bandwidth:.0f}% | - |"
    print(line, flush=True)


if __name__ == "__main__":
  main()
