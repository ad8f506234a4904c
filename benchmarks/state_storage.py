"""State bytes per parameter for every optimizer and storage format, and the step time of each
storage relative to float32 on the same optimizer and tree, measured in one run.

    python benchmarks/state_storage.py [--params 25e6] [--repeats 10]

Target (issue 5): AdamW <= 2.1 B/param in 8-bit, <= 1.1 in 4-bit; quantized step <= 1.5x the
float32 step on this CPU.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import optimkit  # noqa: E402
from benchmarks.common import concrete_tree, describe, machine, time_step  # noqa: E402
from optimkit import memory  # noqa: E402

OPTIMIZERS = {
    "adamw": lambda s: optimkit.adamw(1e-3, state_storage=s),
    "lion": lambda s: optimkit.lion(1e-4, state_storage=s),
    "sgd_momentum": lambda s: optimkit.sgd(1e-2, momentum=0.9, state_storage=s),
    "adan": lambda s: optimkit.adan(1e-3, state_storage=s),
    "sophia": lambda s: optimkit.sophia(1e-4, state_storage=s, seed=0, update_interval=10**9),
    "adafactor+momentum": lambda s: optimkit.adafactor(1e-2, momentum=0.9, state_storage=s),
}
STORAGES = ("float32", "bfloat16", "8bit", "4bit")


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--params", type=float, default=25e6)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
  args = parser.parse_args()
  params = concrete_tree(args.params)
  grads = jax.tree.map(lambda p: 0.01 * jnp.sign(p) + p, params)
  print(f"# state storage: {describe(params)}; {machine()}")
  print("| optimizer | storage | bytes/param | step ms | ratio to float32 |")
  print("|---|---|---|---|---|")
  for name in args.optimizers.split(","):
    baseline = None
    for storage in STORAGES:
      tx = OPTIMIZERS[name](storage)
      per_param = memory.state_bytes_per_param(tx, params)
      # Sophia's Hessian refresh needs a model; the interval keeps it off in this timing.
      extra = (lambda: {"loss_fn": lambda p: 0.0, "key": jax.random.key(0)}) \
          if name == "sophia" else None
      seconds, _ = time_step(tx, params, grads, args.repeats, extra)
      baseline = baseline or seconds
      print(f"| {name} | {storage} | {per_param:.3f} | {1000 * seconds:.1f} | "
            f"{seconds / baseline:.2f} |", flush=True)


if __name__ == "__main__":
  main()
