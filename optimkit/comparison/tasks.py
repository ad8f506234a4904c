"""The suite's tasks: each a training problem, the optimizers it compares (candidates) and how
their learning rates are chosen. The folklore each task tests is in `verdicts.CLAIMS`.

  lm              the byte-level transformer LM: AdamW vs Lion, Adafactor, Sophia, schedule-free
                  AdamW and SGD + momentum, each at its tuned learning rate.
  digits          a small CNN on 8x8 digits at a small batch: SGD + momentum (and Nesterov),
                  AdamW and Ranger.
  lm_large_batch  the LM at 8x the batch for 1/8 of the steps (the same tokens): AdamW, LAMB,
                  LARS; sweeps centred on each recipe's rate times sqrt(8) (the square-root
                  scaling rule for adaptive optimizers).
  instability     the LM at a constant learning rate of 0.3 from step 0 (no warmup, no decay),
                  where AdamW (b2 = 0.999) spikes: the rate is the scenario, so it is not tuned;
                  AdamW with b2 0.999 and 0.95 and StableAdamW (b2 0.999) run at it.
  memory          the LM with optimizers whose state fits in 4 bytes per parameter (half of
                  float32 AdamW's 8): AdamW with bfloat16 or 8-bit state, Lion, SGD + momentum,
                  Adafactor, beside float32 AdamW as the reference it must approach. Runs it
                  shares with `lm` (same problem, same recipe) are run once.

A budget (`QUICK`, `FULL`) sets the sizes, the learning-rate grid and the seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import optax

from optimkit.comparison.model import ModelConfig
from optimkit.comparison.problems import Digits, DigitsSetting, LanguageModel, LMSetting
from optimkit.comparison.recipes import Recipe, recipe_for


@dataclass(frozen=True)
class Candidate:
  """One optimizer configuration in a task. `label` names it in tables ("adamw",
  "adamw:8bit", "adamw b2=0.95"); `optimizer` is its registry name (what `--optimizers`
  selects); its learning-rate sweep is centred on `learning_rate`."""

  label: str
  optimizer: str
  learning_rate: float
  recipe: Recipe
  overrides: dict = field(default_factory=dict)
  schedule: str | None = None

  def build(self, learning_rate: Any, steps: int) -> optax.GradientTransformation:
    return self.recipe.build(learning_rate, steps, schedule=self.schedule, **self.overrides)

  def describe(self) -> str:
    return self.recipe.describe(self.schedule, **self.overrides)


def candidate(spec: str, learning_rate: float | None = None, *, scale: float = 1.0,
              schedule: str | None = None, label: str | None = None,
              **overrides: Any) -> Candidate:
  """A candidate from "name" or "name:storage" (as in `optimkit memory`), on its recipe."""
  name, _, storage = spec.partition(":")
  recipe = recipe_for(name)
  if storage:
    overrides["state_storage"] = storage
  rate = (recipe.learning_rate if learning_rate is None else learning_rate) * scale
  return Candidate(label or spec, name, rate, recipe, overrides, schedule)


@dataclass(frozen=True)
class Task:
  name: str
  title: str
  problem: Any  # LanguageModel | Digits
  candidates: tuple[Candidate, ...]
  metric: str = "loss"  # the reported metric, lower is better ("loss" or "error" in %)
  baseline: str = "adamw"  # the label whose worst seed's final test loss is the target
  sweep: bool = True  # False: every candidate runs at its own rate, seeds only
  state_budget: float | None = None  # bytes/param a candidate's state must fit (memory task)
  extendable: bool = True  # optimizers named in --optimizers but not listed here join it


@dataclass(frozen=True)
class Budget:
  """Sizes and the sweep. A candidate's grid is centre * grid_base**k for k in grid_exponents;
  when the best rate is at an edge the grid grows by one point past it, up to `extensions`
  times."""

  name: str
  lm: LMSetting
  digits: DigitsSetting
  large_batch_factor: int  # divides the LM's steps and eval_every (whole chunks)
  grid_base: float
  grid_exponents: tuple[int, ...]
  extensions: int
  seeds: int = 3


FULL = Budget(
    name="full",
    lm=LMSetting(ModelConfig(seq_len=64, d_model=64, num_heads=4, num_layers=2), batch_size=16,
                 steps=600, eval_every=25, eval_batches=8),
    digits=DigitsSetting(batch_size=16, steps=2000, eval_every=100),
    large_batch_factor=8, grid_base=2.0, grid_exponents=(-2, -1, 0, 1, 2), extensions=2)

# Quick is dominated by compiling one step per candidate (about 20); its runs are short enough
# that a best rate on the grid's edge is worth one more point.
QUICK = Budget(
    name="quick",
    lm=LMSetting(ModelConfig(seq_len=32, d_model=32, num_heads=2, num_layers=2), batch_size=8,
                 steps=192, eval_every=16, eval_batches=4),
    digits=DigitsSetting(batch_size=16, steps=600, eval_every=50, channels=(8, 16)),
    large_batch_factor=8, grid_base=3.0, grid_exponents=(-1, 0, 1), extensions=1)

BUDGETS = {"quick": QUICK, "full": FULL}
TASK_NAMES = ("lm", "digits", "lm_large_batch", "instability", "memory")
MEMORY_BUDGET = 4.0  # bytes/param: half of float32 AdamW's two moments
# The instability scenario's rate, constant from step 0. Measured on the full budget's model
# (one seed, 300-600 steps): at 0.03 and 0.1, constant or cosine without warmup, training
# shows no spike (largest jump of the loss above its running median 0.24-0.28 nats); at a
# constant 0.3 AdamW (b2 0.999) spiked (4 steps > 0.5 nats, largest 1.04). Not tuned per
# optimizer: the rate is the scenario.
INSTABILITY_RATE = 0.3


def build_tasks(budget: Budget, names: Sequence[str] = TASK_NAMES,
                optimizers: Sequence[str] | None = None,
                data_path: str | None = None) -> dict[str, Task]:
  """The tasks named, at `budget`. With `optimizers` (registry names), each task keeps the
  candidates of those optimizers, and an optimizer no task lists joins every extendable task
  on its recipe (`recipe_for`)."""
  unknown = [n for n in names if n not in TASK_NAMES]
  if unknown:
    raise ValueError(f"unknown tasks {unknown}; choose from {', '.join(TASK_NAMES)}")
  if optimizers is not None:
    for name in optimizers:
      recipe_for(name)  # ValueError listing the registry's names for a bad one
  tasks: dict[str, Task] = {}
  lm = LanguageModel(budget.lm, data_path) if {"lm", "memory"} & set(names) else None
  for name in names:
    task = _TASK_BUILDERS[name](budget, lm, data_path)
    if optimizers is not None:
      kept = [c for c in task.candidates if c.optimizer in optimizers]
      listed = {c.optimizer for c in task.candidates}
      extra = [candidate(o) for o in optimizers if o not in listed] if task.extendable else []
      task = replace(task, candidates=tuple(kept + extra))
    if task.candidates:
      tasks[name] = task
  return tasks


# Adafactor factors a matrix only when both dimensions reach min_dim_size_to_factor (128 by
# default): at d_model 32-64 nothing would be, and it would keep a full second moment (4
# B/param). 16 factors these models' matrices as the default factors GPT-2's.
_ADAFACTOR: dict[str, Any] = dict(min_dim_size_to_factor=16)


def _lm(budget: Budget, lm: LanguageModel, data_path: str | None) -> Task:
  return Task("lm", "Transformer LM (bytes)", lm, (
      candidate("adamw"), candidate("lion"), candidate("adafactor", **_ADAFACTOR),
      candidate("sophia"), candidate("schedule_free_adamw"), candidate("sgd")))


def _digits(budget: Budget, lm: Any, data_path: str | None) -> Task:
  # Image-classification recipes (ResNet-style SGD 0.1 / momentum 0.9 / wd 5e-4; AdamW 3e-3),
  # not the LM's.
  sgd: dict[str, Any] = dict(momentum=0.9, weight_decay=5e-4)
  adam: dict[str, Any] = dict(weight_decay=0.05)
  return Task("digits", "Small-batch CNN (8x8 digits)", Digits(budget.digits), (
      candidate("adamw", 3e-3, **adam),
      candidate("sgd", 0.1, **sgd),
      candidate("sgd", 0.1, label="sgd nesterov", nesterov=True, **sgd),
      candidate("ranger", 3e-3, **adam),
  ), metric="error")


def _large_batch(budget: Budget, lm: Any, data_path: str | None) -> Task:
  k = budget.large_batch_factor
  s = budget.lm
  # The same evaluation windows as the LM task: eval_batches / k batches of k x the batch.
  setting = replace(s, batch_size=s.batch_size * k, steps=max(1, s.steps // k),
                    eval_every=max(1, s.eval_every // k),
                    eval_batches=max(1, s.eval_batches // k))
  scale = math.sqrt(k)
  return Task("lm_large_batch", f"Transformer LM at {k}x batch", LanguageModel(setting, data_path),
              tuple(candidate(n, scale=scale) for n in ("adamw", "lamb", "lars")))


def _instability(budget: Budget, lm: Any, data_path: str | None) -> Task:
  rate, constant = INSTABILITY_RATE, "constant"
  return Task("instability", f"Transformer LM, constant rate {rate:g}, no warmup",
              LanguageModel(budget.lm, data_path), (
                  candidate("adamw", rate, schedule=constant, b2=0.999),
                  candidate("adamw", rate, schedule=constant, label="adamw b2=0.95", b2=0.95),
                  candidate("stable_adamw", rate, schedule=constant, b2=0.999),
              ), sweep=False, extendable=False)


def _memory(budget: Budget, lm: LanguageModel, data_path: str | None) -> Task:
  return Task("memory", f"Transformer LM, optimizer state <= {MEMORY_BUDGET:g} B/param", lm,
              tuple(candidate(spec) for spec in (
                  "adamw", "adamw:bfloat16", "adamw:8bit", "lion", "sgd"))
              + (candidate("adafactor", **_ADAFACTOR),),
              state_budget=MEMORY_BUDGET, extendable=False)


_TASK_BUILDERS = {"lm": _lm, "digits": _digits, "lm_large_batch": _large_batch,
                  "instability": _instability, "memory": _memory}
