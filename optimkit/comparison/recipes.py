"""Learning rates and settings for the comparison, each from a published recipe, scaled to a
small model. A recipe names a registry optimizer, its peak learning rate and its other
settings; `Recipe.build(lr, steps, **overrides)` returns the optimizer for a run of `steps`
steps at peak rate `lr` (so a sweep can scale it), with `overrides` replacing settings (the
suite's variants: `b2=0.95`, `nesterov=True`, `state_storage="8bit"`, ...).

`build` works with `lr` a traced scalar: the suite compiles one train step per (task,
optimizer) and feeds each run's learning rate through `optax.inject_hyperparams`, so a sweep
and its seeds share one compilation. Learning rates therefore reach the optimizer as schedules
(warmup-cosine, or a constant written as a schedule), never as a value an optimizer might copy
into its own state at construction.

Sources:
  adamw      nanoGPT's character-level Shakespeare config (lr 1e-3, b2 0.99, wd 0.1, warmup
             then cosine to 10%); decay off biases and norms.
  lion       Chen et al. 2023, Sec. 5: lr 3-10x smaller than AdamW's, wd larger by the same
             factor (lr * wd kept): lr 3e-4, wd 0.33.
  adamw_8bit, adamw_4bit, lion_8bit  the same recipes with quantized state (optimkit.state).
  adafactor  Shazeer & Stern 2018: relative step min(1e-2, 1/sqrt(t)) times parameter RMS,
             beta2_t = 1 - t^-0.8, update clipping 1.0, no momentum (its own schedule).
  sophia     Liu et al. 2023 (authors' GPT-2 small config): lr 3e-4 (Lion-like scale),
             rho 0.05, wd 0.2, betas (0.965, 0.99), Hessian every 10 steps (Sophia-G).
  schedule_free_adamw  Defazio et al. 2024 / schedulefree defaults: lr 2.5e-3, warmup 5%,
             no schedule.
  stable_adamw, adam_mini, adams, radam, ranger  AdamW's recipe: their papers present them as
             drop-in replacements taking AdamW's hyperparameters (Adam-mini, AdamS explicitly).
  adan       Xie et al. 2022: betas (0.98, 0.92, 0.99), weight decay 0.02, AdamW-like lr.
  muon       Moonlight (Liu et al. 2025): update RMS matched to AdamW's (0.2), so AdamW's lr,
             warmup-cosine schedule and wd 0.1 serve both the matrices and the AdamW leaves.
  others     the defaults their papers give for language models where there is one (LAMB:
             Adam-like lr with trust ratio; RMSprop/AdaGrad/SGD: their common small-model lrs).
  any other registered optimizer  its registry `typical_lr` under the warmup-cosine schedule
             and its own defaults (`recipe_for`), so a newly declared optimizer can be compared
             before anyone writes a recipe for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import jax.numpy as jnp
import optax

from optimkit import registry
from optimkit.transforms.weight_decay import weight_decay_mask

SCHEDULES = ("warmup_cosine", "constant")


def warmup_cosine(peak: Any, total_steps: int, warmup_fraction: float = 0.05,
                  end_fraction: float = 0.1) -> optax.Schedule:
  """Linear warmup over 5% of the steps to `peak`, then cosine decay to 10% of it. `peak` may
  be traced: it multiplies a unit-peak schedule rather than entering optax's constructor."""
  warmup = max(1, int(total_steps * warmup_fraction))
  unit = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, max(total_steps, warmup + 1),
                                            end_fraction)
  return lambda count: peak * unit(count)


def constant(value: Any) -> optax.Schedule:
  return lambda count: jnp.asarray(value, jnp.float32) + 0.0 * count


@dataclass(frozen=True)
class Recipe:
  """A registry optimizer with its published settings, at peak learning rate `learning_rate`.

  `warmup_steps_arg` names an argument that receives 5% of the run's steps (schedule-free's
  built-in warmup)."""

  optimizer: str
  learning_rate: float
  settings: Mapping[str, Any] = field(default_factory=dict)
  schedule: str = "warmup_cosine"
  warmup_steps_arg: str | None = None

  def build(self, learning_rate: Any, steps: int, *, schedule: str | None = None,
            **overrides: Any) -> optax.GradientTransformation:
    schedule = schedule or self.schedule
    if schedule not in SCHEDULES:
      raise ValueError(f"recipe schedule must be one of {SCHEDULES}, got {schedule!r}")
    rate = (warmup_cosine(learning_rate, steps) if schedule == "warmup_cosine"
            else constant(learning_rate))
    settings = dict(self.settings)
    if self.warmup_steps_arg is not None:
      settings[self.warmup_steps_arg] = max(1, int(0.05 * steps))
    settings.update(overrides)
    return registry.get(self.optimizer).make(rate, **settings)

  def describe(self, schedule: str | None = None, **overrides: Any) -> str:
    """A stable one-line description (the suite's cache key uses it)."""
    settings = {**self.settings, **overrides}
    if self.warmup_steps_arg is not None:
      settings[self.warmup_steps_arg] = "5% of steps"
    text = ", ".join(f"{k}={_describe(v)}" for k, v in sorted(settings.items()))
    return f"{self.optimizer}({schedule or self.schedule} lr; {text})"


def _describe(value: Any) -> str:
  return getattr(value, "__qualname__", None) or repr(value)


_ADAMW = dict(b2=0.99, weight_decay=0.1, mask=weight_decay_mask)
_LION = dict(b1=0.9, b2=0.99, weight_decay=0.33, mask=weight_decay_mask)

RECIPES: dict[str, Recipe] = {
    "adamw": Recipe("adamw", 1e-3, _ADAMW),
    "adamw_8bit": Recipe("adamw_8bit", 1e-3, _ADAMW),
    "adamw_4bit": Recipe("adamw_4bit", 1e-3, _ADAMW),
    "lion_8bit": Recipe("lion_8bit", 3e-4, _LION),
    "adam": Recipe("adam", 1e-3, dict(b2=0.99)),
    "lion": Recipe("lion", 3e-4, _LION),
    "adafactor": Recipe("adafactor", 1e-2, schedule="constant"),
    "sophia": Recipe("sophia", 3e-4, dict(gamma=0.05, weight_decay=0.2,
                                          weight_decay_mask=weight_decay_mask)),
    "schedule_free_adamw": Recipe("schedule_free_adamw", 2.5e-3, schedule="constant",
                                  warmup_steps_arg="warmup_steps"),
    "schedule_free_sgd": Recipe("schedule_free_sgd", 0.5, schedule="constant",
                                warmup_steps_arg="warmup_steps"),
    "lamb": Recipe("lamb", 2e-3, dict(weight_decay=0.01, mask=weight_decay_mask)),
    "lars": Recipe("lars", 1.0, dict(trust_coefficient=0.02, weight_decay=1e-4)),
    "sgd": Recipe("sgd", 0.3, dict(momentum=0.9)),
    "rmsprop": Recipe("rmsprop", 1e-3),
    "adagrad": Recipe("adagrad", 3e-2),
    "stable_adamw": Recipe("stable_adamw", 1e-3, _ADAMW),
    "adan": Recipe("adan", 1e-3, dict(weight_decay=0.02, mask=weight_decay_mask)),
    "radam": Recipe("radam", 1e-3, _ADAMW),
    "ranger": Recipe("ranger", 1e-3, dict(weight_decay=0.1, mask=weight_decay_mask)),
    "adam_mini": Recipe("adam_mini", 1e-3, _ADAMW),
    "adams": Recipe("adams", 1e-3, dict(b2=0.95, weight_decay=0.1, mask=weight_decay_mask)),
    # Moonlight (Liu et al. 2025, Sec. 2.2): Muon's update scaled to AdamW's RMS
    # (consistent_rms 0.2) with weight decay, so AdamW's lr, schedule and wd carry over to both
    # parts (adam_learning_rate=None: the AdamW leaves follow the same schedule); momentum 0.95,
    # Nesterov, 5 Newton-Schulz steps (the authors').
    "muon": Recipe("muon", 1e-3, dict(weight_decay=0.1, consistent_rms=0.2,
                                      adam_learning_rate=None, adam_b2=0.99,
                                      adam_weight_decay=0.1)),
}

DEFAULT_OPTIMIZERS = ("adamw", "lion", "adafactor", "sophia", "schedule_free_adamw")


def recipe_for(name: str) -> Recipe:
  """The recipe for registry optimizer `name`: the published one above, else the registry's
  typical learning rate under warmup-cosine with the optimizer's defaults. Raises ValueError
  (listing the valid names) for a name that is not a registered optimizer."""
  info = registry.get(name)
  return RECIPES.get(name) or Recipe(name, float(info.typical_lr))

