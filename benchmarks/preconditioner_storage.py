"""The loss cost of storing the Kronecker preconditioners' matrices in reduced precision
(`preconditioner_storage`): shampoo, soap and kron with float32, bfloat16 and 8-bit matrices on
the compare job's reference task (the byte-level LM of `optimkit compare --suite`'s full
budget), each at its recipe's learning rate (Shampoo with roots every 10 steps), one seed;
prints final test loss and state bytes/param per run, then bytes/param on a 7B
transformer-shaped tree (`optimkit.memory`).

    python benchmarks/preconditioner_storage.py [--steps 600] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from optimkit import memory, registry
from optimkit.comparison.problems import LanguageModel
from optimkit.comparison.tasks import FULL, candidate
from optimkit.comparison.training import Trainer

OPTIMIZERS = ("kron", "soap", "shampoo")
FORMATS = ("float32", "bfloat16", "8bit")


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
  parser.add_argument("--shampoo-matrix-epsilon", type=float, default=None,
                      help="Shampoo's relative matrix_epsilon (default: its own, 1e-6)")
  args = parser.parse_args()
  setting = dataclasses.replace(FULL.lm, steps=args.steps)
  problem = LanguageModel(setting)
  print(problem.summary(problem.init(args.seed)), flush=True)
  print("\n| optimizer | preconditioner_storage | final test loss | state B/param | lr | s |")
  print("|---|---|---|---|---|---|", flush=True)
  for name in args.optimizers.split(","):
    for fmt in FORMATS:
      # Shampoo refreshes its roots every 10 steps here (its default is every step): with a
      # fresh root every step the stored roots are never read, and eigh every step would be
      # most of the run's time.
      extra = {"preconditioning_compute_steps": 10} if name == "shampoo" else {}
      if name == "shampoo" and args.shampoo_matrix_epsilon is not None:
        extra["matrix_epsilon"] = args.shampoo_matrix_epsilon
      option = candidate(name, preconditioner_storage=fmt, **extra)
      start = time.time()
      record = Trainer(problem, option).run(option.learning_rate, args.seed)
      print(f"| {name} | {fmt} | {record.final('loss'):.4f} | {record.state_bytes_per_param:.2f} | "
            f"{option.learning_rate:g} | {time.time() - start:.0f} |", flush=True)
  if args.optimizers != ",".join(OPTIMIZERS):
    return
  tree = memory.transformer_shaped_params(7e9)
  count = memory.param_count(tree)
  print(f"\n7B transformer-shaped tree ({count / 1e9:.2f}B params), optimizer defaults:")
  print("| optimizer | preconditioner_storage | bytes/param | preconditioner B/param |")
  print("|---|---|---|---|")
  for name in OPTIMIZERS:
    for fmt in FORMATS:
      tx = registry.get(name).make(preconditioner_storage=fmt)
      fields = memory.state_breakdown(tx, tree)
      matrices = sum(v for k, v in fields.items()
                     if any(f in k.split(".") for f in ("statistics", "roots", "bases", "factors")))
      print(f"| {name} | {fmt} | {memory.state_bytes(tx, tree) / count:.3f} | "
            f"{matrices / count:.3f} |", flush=True)


if __name__ == "__main__":
  main()
