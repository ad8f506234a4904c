"""Lowering + compile time of one optimizer step against the number of parameter leaves,
optimkit against optax, alone and behind global-norm clipping, measured in one run.

    python benchmarks/compile_time.py [--leaves 100,1000,3000] [--optimizers adamw,adafactor]

Leaves are 64 x 64 float32 arrays (a deep unscanned model has thousands of them). The "floor"
column is a bare SGD-momentum step written with two `tree.map`s and no library at all: XLA's
own compile time for that many arrays, which no optimizer library can go below without changing
the parameter layout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import optimkit  # noqa: E402
from benchmarks.common import machine  # noqa: E402

PAIRS = {
    "adamw": (lambda: optimkit.adamw(1e-3), lambda: optax.adamw(1e-3)),
    "clip+adamw": (lambda: optax.chain(optax.clip_by_global_norm(1.0), optimkit.adamw(1e-3)),
                   lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))),
    "adafactor": (lambda: optimkit.adafactor(1e-2, relative_step=False, min_dim_size_to_factor=32),
                  lambda: optax.adafactor(1e-2, min_dim_size_to_factor=32)),
    "lion": (lambda: optimkit.lion(1e-4), lambda: optax.lion(1e-4)),
}


def compile_seconds(tx: optax.GradientTransformation, leaves: int) -> float:
  params = {f"w{i:05d}": jax.ShapeDtypeStruct((64, 64), jnp.float32) for i in range(leaves)}
  state = jax.eval_shape(tx.init, params)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  start = time.perf_counter()
  jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
  return time.perf_counter() - start


def floor_seconds(leaves: int) -> float:
  params = {f"w{i:05d}": jax.ShapeDtypeStruct((64, 64), jnp.float32) for i in range(leaves)}

  def step(params, momentum, grads):
    momentum = jax.tree.map(lambda m, g: 0.9 * m + g, momentum, grads)
    return jax.tree.map(lambda p, m: p - 1e-3 * m, params, momentum), momentum

  start = time.perf_counter()
  jax.jit(step, donate_argnums=(0, 1)).lower(params, params, params).compile()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--leaves", default="100,1000,3000")
  parser.add_argument("--optimizers", default=",".join(PAIRS))
  args = parser.parse_args()
  print(f"# compile time (lower + compile, s) vs number of 64x64 leaves; {machine()}")
  print("| optimizer | leaves | optimkit s | optax s | ratio | floor s |")
  print("|---|---|---|---|---|---|")
  leaf_counts = [int(n) for n in args.leaves.split(",")]
  floors = {leaves: floor_seconds(leaves) for leaves in leaf_counts}
  for name in args.optimizers.split(","):
    ours, theirs = PAIRS[name]
    for leaves in leaf_counts:
      ours_s = compile_seconds(ours(), leaves)
      theirs_s = compile_seconds(theirs(), leaves)
      print(f"| {name} | {leaves} | {ours_s:.2f} | {theirs_s:.2f} | {ours_s / theirs_s:.2f} "
            f"| {floors[leaves]:.2f} |", flush=True)


if __name__ == "__main__":
  main()
