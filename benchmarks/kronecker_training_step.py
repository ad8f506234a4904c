"""Shampoo, SOAP and PSGD Kron: the whole training step of the compare job's reference task,
with and without a preconditioner refresh, against AdamW's, measured in one run.

    python benchmarks/kronecker_training_step.py [--repeats 15] [--period 10] [--kron-cache]

`benchmarks/kronecker.py` times the optimizer's step alone on a parameter tree; this script
times what a user waits for: forward, backward and optimizer update of the reference task's
language model (`optimkit compare`'s default: 437,760 parameters, batch 16 x 64 bytes), one
jitted step per optimizer built by its compare-job recipe (registry learning rate under
warmup-cosine). The refresh period is set to `--period` for every optimizer so that a step
without a refresh exists: Shampoo `preconditioning_compute_steps` (its default, as
distributed_shampoo's, is 1: every step computes roots), SOAP `precondition_frequency` (its
default is 10), Kron `preconditioner_update_probability = 1 / period` (its default schedule
updates on every step for the first 500).

The refresh and plain steps are the same compiled program called on two states of a real run:
Shampoo and SOAP with the step count set to a refresh / non-refresh count, Kron after a real
update (its next step does not update) and after `period - 1` steps without one (its next step
updates). Rounds are interleaved (AdamW, then each optimizer's states) so the drift of a shared
machine is charged to all; medians over `--repeats` rounds. "Amortized" is one refresh and
`period - 1` plain steps averaged: the mean step of a long run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.common import machine  # noqa: E402
from benchmarks.kronecker import _with_count  # noqa: E402
from optimkit.comparison.data import TextData  # noqa: E402
from optimkit.comparison.model import TinyTransformer  # noqa: E402
from optimkit.comparison.recipes import recipe_for  # noqa: E402
from optimkit.comparison.task import TaskConfig, _cross_entropy  # noqa: E402

WARM_STEPS = 12  # past Shampoo's start_preconditioning_step (5) and SOAP's first basis


def overrides(name: str, period: int, kron_cache: bool) -> dict:
  kron = {"preconditioner_update_probability": 1.0 / period, "seed": 0}
  if kron_cache:
    kron["cache_preconditioner"] = True
  return {"shampoo": {"preconditioning_compute_steps": period},
          "soap": {"precondition_frequency": period},
          "kron": kron,
          }.get(name, {})


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--period", type=int, default=10)
  parser.add_argument("--optimizers", default="shampoo,soap,kron")
  parser.add_argument("--kron-cache", action="store_true",
                      help="Kron with cache_preconditioner=True (P_i = Q_i^T Q_i kept)")
  args = parser.parse_args()

  config = TaskConfig()
  data = TextData.load(None)
  model = TinyTransformer(config.model, nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  batches = jnp.asarray(data.train_batches(0, config.batch_size, config.model.seq_len,
                                           WARM_STEPS + args.period + 1))

  def loss_fn(params, batch):
    return _cross_entropy(nnx.merge(graphdef, params)(batch[:, :-1]), batch[:, 1:])

  def compiled_step(tx):
    def step(params, state, batch):
      loss, grads = jax.value_and_grad(loss_fn)(params, batch)
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state, loss
    state = tx.init(params)
    start = time.perf_counter()
    executable = jax.jit(step).lower(params, state, batches[0]).compile()
    return executable, state, time.perf_counter() - start

  def run(executable, params, state, first, count):
    for i in range(first, first + count):
      params, state, _ = executable(params, state, batches[i])
    return params, state

  n_params = sum(x.size for x in jax.tree.leaves(params))
  print(f"## Reference task training step: {n_params:,} params, batch {config.batch_size} x "
        f"{config.model.seq_len}, {machine()}\n")
  entries: dict[str, tuple] = {}
  executable, state, seconds = compiled_step(recipe_for("adamw").build(1e-3, config.steps))
  p, state = run(executable, params, state, 0, WARM_STEPS)
  entries["adamw"] = (executable, p, state, seconds)
  for name in args.optimizers.split(","):
    recipe = recipe_for(name)
    tx = recipe.build(recipe.learning_rate, config.steps, **overrides(name, args.period, args.kron_cache))
    executable, state, seconds = compiled_step(tx)
    p, state = run(executable, params, state, 0, WARM_STEPS)
    if name == "kron":
      # Kron's counter is reached by real steps (a hand-set counter hung XLA's CPU runtime in
      # the no-update branch, see benchmarks/kronecker.py): run to the step after an update.
      while _kron_counter(state) != 0:
        p, state = run(executable, p, state, WARM_STEPS, 1)
      plain = (p, state)
      p, state = run(executable, p, state, WARM_STEPS, args.period - 1)
      entries[f"{name} refresh"] = (executable, p, state, seconds)
      entries[f"{name} no refresh"] = (executable, *plain, None)
      continue
    refresh_count = args.period * (WARM_STEPS // args.period + 1)
    entries[f"{name} refresh"] = (executable, p, _with_count(state, refresh_count, False),
                                  seconds)
    entries[f"{name} no refresh"] = (executable, p, _with_count(state, refresh_count + 1, False),
                                     None)

  batch = batches[WARM_STEPS]
  for executable, p, state, _ in entries.values():  # warm-up of each branch
    jax.block_until_ready(executable(p, state, batch))
  times: dict[str, list[float]] = {name: [] for name in entries}
  for _ in range(args.repeats):
    for name, (executable, p, state, _) in entries.items():
      start = time.perf_counter()
      jax.block_until_ready(executable(p, state, batch))
      times[name].append(time.perf_counter() - start)

  medians = {name: statistics.median(t) for name, t in times.items()}
  base = medians["adamw"]
  print(f"Refresh period {args.period}; medians over {args.repeats} interleaved rounds.\n")
  print("| training step | median ms | vs AdamW | compile s | compile vs AdamW |")
  print("|---|---|---|---|---|")
  base_compile = entries["adamw"][3]
  for name, (_, _, _, seconds) in entries.items():
    compile_text = (f"{seconds:.2f} | {seconds / base_compile:.2f}x" if seconds is not None
                    else "(same program) | ")
    print(f"| {name} | {medians[name] * 1e3:.1f} | {medians[name] / base:.2f}x | "
          f"{compile_text} |")
  print()
  print("| optimizer | amortized step vs AdamW (1 refresh + period - 1 plain) |")
  print("|---|---|")
  for name in args.optimizers.split(","):
    mean = (medians[f"{name} refresh"] + (args.period - 1) * medians[f"{name} no refresh"]) \
        / args.period
    print(f"| {name} | {mean / base:.2f}x |")
  spread = {name: (max(t) - min(t)) / statistics.median(t) for name, t in times.items()}
  print(f"\nRun-to-run spread (max - min) / median: "
        + ", ".join(f"{name} {value:.0%}" for name, value in spread.items()))


def _kron_counter(state) -> int:
  """Kron's update counter, wherever the recipe's wrappers put its state."""
  found = []

  def visit(path, leaf):
    if path and getattr(path[-1], "name", "") == "update_counter":
      found.append(leaf)
    return leaf

  jax.tree_util.tree_map_with_path(visit, state)
  if len(found) != 1:
    raise RuntimeError(f"expected one Kron update counter in the state, found {len(found)}")
  return int(found[0])


if __name__ == "__main__":
  main()
