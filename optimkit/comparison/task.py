"""The reference task of `optimkit compare`: a byte-level language model on text that ships
with Python, trained once per optimizer with its published recipe."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from optimkit.comparison.data import TextData
from optimkit.comparison.model import ModelConfig, TinyTransformer
from optimkit.comparison.recipes import recipe_for
from optimkit.comparison.runner import RunResult, add_baseline_ratios, run_optimizer


@dataclass(frozen=True)
class TaskConfig:
  steps: int = 1200
  batch_size: int = 16
  eval_every: int = 100
  eval_batches: int = 8
  model: ModelConfig = ModelConfig()


QUICK = TaskConfig(steps=150, batch_size=8, eval_every=25, eval_batches=4,
                   model=ModelConfig(seq_len=32, d_model=64, num_heads=4, num_layers=2))

LR_SWEEP_FACTORS = (1 / 3, 1.0, 3.0)


def _cross_entropy(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()


def run_reference_task(
    optimizer_names: Sequence[str],
    config: TaskConfig = TaskConfig(),
    seed: int = 0,
    data_path: str | None = None,
    lr_sweep: bool = False,
    show_progress: bool = True,
) -> tuple[list[RunResult], dict]:
  """Runs the comparison; returns the results (best learning rate per optimizer when sweeping)
  and a description of the setting (data, model, machine, versions) for the report."""
  recipes = {name: recipe_for(name) for name in optimizer_names}  # ValueError for a bad name
  data = TextData.load(data_path)
  model = TinyTransformer(config.model, nnx.Rngs(seed))
  graphdef, params = nnx.split(model, nnx.Param)

  def logits_fn(params, batch):
    return nnx.merge(graphdef, params)(batch[:, :-1])

  def loss_fn(params, batch):
    return _cross_entropy(logits_fn(params, batch), batch[:, 1:])

  train = data.train_batches(seed, config.batch_size, config.model.seq_len, config.steps)
  validation = jnp.asarray(
      data.validation_batches(config.batch_size, config.model.seq_len, config.eval_batches))
  eval_loss = jax.jit(lambda params: jnp.mean(jax.vmap(lambda b: loss_fn(params, b))(validation)))

  results = []
  for name in optimizer_names:
    recipe = recipes[name]
    factors = LR_SWEEP_FACTORS if lr_sweep else (1.0,)
    candidates = []
    for factor in factors:
      lr = recipe.learning_rate * factor
      label = f"{name} lr={lr:.3g}" if lr_sweep else name
      result = run_optimizer(
          name, recipe.build(lr, config.steps), loss_fn, params, train,
          eval_fn=lambda p: float(eval_loss(p)), eval_every=config.eval_every,
          logits_fn=logits_fn, seed=seed, learning_rate=lr, show_progress=show_progress)
      result.extra["label"] = label
      candidates.append(result)
    best = min(candidates, key=lambda r: r.final_loss if np.isfinite(r.final_loss) else np.inf)
    if lr_sweep:
      best.extra["sweep"] = {f"{r.learning_rate:.3g}": r.final_loss for r in candidates}
    results.append(best)
  add_baseline_ratios(results, "adamw" if "adamw" in optimizer_names else optimizer_names[0])

  setting = {
      "data": data.source,
      "train_bytes": int(len(data.train)),
      "validation_bytes": int(len(data.validation)),
      "model": (f"decoder-only transformer, {config.model.num_layers} layers, d_model "
                f"{config.model.d_model}, {config.model.num_heads} heads, "
                f"seq {config.model.seq_len}, byte vocabulary"),
      "parameters": int(sum(x.size for x in jax.tree.leaves(params))),
      "steps": config.steps,
      "batch_size": config.batch_size,
      "seed": seed,
      "lr_sweep": lr_sweep,
      "baseline": "adamw" if "adamw" in optimizer_names else optimizer_names[0],
      "machine": f"{platform.machine()}, {jax.device_count()} x {jax.devices()[0].platform}",
      "versions": {"jax": jax.__version__, "optax": optax.__version__,
                   "python": platform.python_version()},
      "date": time.strftime("%Y-%m-%d"),
  }
  return results, setting
