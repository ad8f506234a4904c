"""What low-precision state and low-precision weights cost in loss and in step time, on the
reference task of `optimkit compare` (the byte-level transformer LM, 1,200 steps, AdamW on its
nanoGPT recipe), measured in one run:

  state    float32 (the baseline), bfloat16 (stochastic rounding), 8-bit, 4-bit
  weights  bfloat16 with optax's round-to-nearest `apply_updates` (plain), with Kahan
           compensation and with stochastic rounding (`optimkit.compensated_updates`), each
           with float32 state

    python benchmarks/low_precision_training.py [--steps 1200] [--seeds 0,1]

For bfloat16 weights the model computes in float32 (the weights are cast up inside the loss),
so what is measured is the storage of the weights alone, not bfloat16 arithmetic. Each seed
picks the initialisation and the batch order; every variant of a seed sees the same ones.
The loss is the test loss (the held-out text's second half), as the suite reports it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp

import optimkit
from benchmarks.common import describe, machine
from optimkit.comparison.problems import LanguageModel, LMSetting
from optimkit.comparison.recipes import recipe_for
from optimkit.comparison.runner import run_optimizer
from optimkit.comparison.task import TaskConfig

# label -> (state_storage, weight dtype, compensation method or None)
VARIANTS = {
    "float32": ("float32", jnp.float32, None),
    "state:bfloat16": ("bfloat16", jnp.float32, None),
    "state:8bit": ("8bit", jnp.float32, None),
    "state:4bit": ("4bit", jnp.float32, None),
    "weights:bfloat16": ("float32", jnp.bfloat16, None),
    "weights:bfloat16+kahan": ("float32", jnp.bfloat16, "kahan"),
    "weights:bfloat16+stochastic": ("float32", jnp.bfloat16, "stochastic"),
}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=TaskConfig().steps)
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  labels = [v.strip() for v in args.variants.split(",")]
  unknown = [v for v in labels if v not in VARIANTS]
  if unknown:
    raise SystemExit(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")

  config = TaskConfig(steps=args.steps)
  problem = LanguageModel(LMSetting(config.model, config.batch_size, config.steps,
                                    config.eval_every, config.eval_batches))
  recipe = recipe_for("adamw")

  def loss_in_float32(params, batch):
    return problem.loss(jax.tree.map(lambda w: w.astype(jnp.float32), params), batch)

  test_loss = jax.jit(lambda params: problem.metrics(
      jax.tree.map(lambda w: w.astype(jnp.float32), params), problem.test)["loss"])

  print(machine())
  print(f"adamw recipe {recipe.describe()}; {problem.summary(problem.init(0))}; seeds {seeds}")
  rows = {}
  for label in labels:
    storage, weight_dtype, method = VARIANTS[label]
    losses, step_ms, bytes_per_param = [], [], 0.0
    for seed in seeds:
      tx = recipe.build(recipe.learning_rate, config.steps, state_storage=storage)
      if method is not None:
        tx = optimkit.compensated_updates(tx, method)
      params = jax.tree.map(lambda w, dtype=weight_dtype: w.astype(dtype), problem.init(seed))
      result = run_optimizer(label, tx, loss_in_float32, params, problem.train_batches(seed),
                             eval_fn=test_loss, eval_every=config.steps, seed=seed,
                             show_progress=False)
      losses.append(result.final_loss)
      step_ms.append(result.median_step_ms)
      bytes_per_param = result.state_bytes_per_param
    rows[label] = (losses, statistics.median(step_ms), bytes_per_param)
    print(f"  {label:30s} test loss {' '.join(f'{x:.4f}' for x in losses)}  "
          f"step {rows[label][1]:.1f} ms", file=sys.stderr)

  base_loss = statistics.mean(rows["float32"][0]) if "float32" in rows else None
  base_ms = rows["float32"][1] if "float32" in rows else None
  print()
  print("| variant | state B/param | test loss (per seed) | mean | vs float32 | "
        "median step ms | vs float32 |")
  print("|---|---:|---|---:|---:|---:|---:|")
  for label, (losses, ms, bpp) in rows.items():
    mean = statistics.mean(losses)
    loss_ratio = f"{100 * (mean / base_loss - 1):+.2f}%" if base_loss else "-"
    time_ratio = f"{ms / base_ms:.2f}x" if base_ms else "-"
    print(f"| {label} | {bpp:.2f} | {' / '.join(f'{x:.4f}' for x in losses)} | {mean:.4f} | "
          f"{loss_ratio} | {ms:.1f} | {time_ratio} |")
  print()
  print(describe(problem.init(0)))


if __name__ == "__main__":
  main()
