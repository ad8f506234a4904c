"""Learning rates and settings for the comparison, each from a published recipe, scaled to a
small byte-level model. Every recipe takes the peak learning rate (so `--lr-sweep` can scale
it) and the number of steps, and returns an optimkit optimizer.

Sources:
  adamw      nanoGPT's character-level Shakespeare config (lr 1e-3, b2 0.99, wd 0.1, warmup
             then cosine to 10%); decay off biases and norms.
  lion       Chen et al. 2023, Sec. 5: lr 3-10x smaller than AdamW's, wd larger by the same
             factor (lr * wd kept): lr 3e-4, wd 0.33.
  adamw_8bit, adamw_4bit, lion_8bit  the same recipes with quantized state (optimkit.state).
  adafactor  Shazeer & Stern 2018: relative step min(1e-2, 1/sqrt(t)) times parameter RMS,
             beta2_t = 1 - t^-0.8, update clipping 1.0, no momentum.
  sophia     Liu et al. 2023 (authors' GPT-2 small config): lr 3e-4 (Lion-like scale),
             rho 0.05, wd 0.2, betas (0.965, 0.99), Hessian every 10 steps (Sophia-G).
  schedule_free_adamw  Defazio et al. 2024 / schedulefree defaults: lr 2.5e-3, warmup 5%,
             no schedule.
  stable_adamw, adam_mini, adams, radam, ranger  AdamW's recipe: their papers present them as
             drop-in replacements taking AdamW's hyperparameters (Adam-mini, AdamS explicitly).
  adan       Xie et al. 2022: betas (0.98, 0.92, 0.99), weight decay 0.02, AdamW-like lr.
  others     the defaults their papers give for language models where there is one (LAMB:
             Adam-like lr with trust ratio; RMSprop/AdaGrad/SGD: their common small-model lrs).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import optax

from optimkit import optimizers
from optimkit.transforms.weight_decay import weight_decay_mask


def warmup_cosine(peak: float, total_steps: int, warmup_fraction: float = 0.05,
                  end_fraction: float = 0.1) -> optax.Schedule:
  warmup = max(1, int(total_steps * warmup_fraction))
  return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1),
                                            peak * end_fraction)


class Recipe(NamedTuple):
  learning_rate: float
  build: Callable[[float, int], optax.GradientTransformation]


RECIPES: dict[str, Recipe] = {
    "adamw": Recipe(1e-3, lambda lr, n: optimizers.adamw(
        warmup_cosine(lr, n), b2=0.99, weight_decay=0.1, mask=weight_decay_mask)),
    "adamw_8bit": Recipe(1e-3, lambda lr, n: optimizers.adamw(
        warmup_cosine(lr, n), b2=0.99, weight_decay=0.1, mask=weight_decay_mask,
        state_storage="8bit")),
    "adamw_4bit": Recipe(1e-3, lambda lr, n: optimizers.adamw(
        warmup_cosine(lr, n), b2=0.99, weight_decay=0.1, mask=weight_decay_mask,
        state_storage="4bit")),
    "lion_8bit": Recipe(3e-4, lambda lr, n: optimizers.lion(
        warmup_cosine(lr, n), b1=0.9, b2=0.99, weight_decay=0.33, mask=weight_decay_mask,
        state_storage="8bit")),
    "adam": Recipe(1e-3, lambda lr, n: optimizers.adam(warmup_cosine(lr, n), b2=0.99)),
    "lion": Recipe(3e-4, lambda lr, n: optimizers.lion(
        warmup_cosine(lr, n), b1=0.9, b2=0.99, weight_decay=0.33, mask=weight_decay_mask)),
    "adafactor": Recipe(1e-2, lambda lr, n: optimizers.adafactor(lr)),
    "sophia": Recipe(3e-4, lambda lr, n: optimizers.sophia(
        warmup_cosine(lr, n), gamma=0.05, weight_decay=0.2,
        weight_decay_mask=weight_decay_mask)),
    "schedule_free_adamw": Recipe(2.5e-3, lambda lr, n: optimizers.schedule_free_adamw(
        lr, warmup_steps=max(1, int(0.05 * n)))),
    "schedule_free_sgd": Recipe(0.5, lambda lr, n: optimizers.schedule_free_sgd(
        lr, warmup_steps=max(1, int(0.05 * n)))),
    "lamb": Recipe(2e-3, lambda lr, n: optimizers.lamb(
        warmup_cosine(lr, n), weight_decay=0.01, mask=weight_decay_mask)),
    "lars": Recipe(1.0, lambda lr, n: optimizers.lars(
        warmup_cosine(lr, n), trust_coefficient=0.02, weight_decay=1e-4)),
    "sgd": Recipe(0.3, lambda lr, n: optimizers.sgd(warmup_cosine(lr, n), momentum=0.9)),
    "rmsprop": Recipe(1e-3, lambda lr, n: optimizers.rmsprop(warmup_cosine(lr, n))),
    "adagrad": Recipe(3e-2, lambda lr, n: optimizers.adagrad(warmup_cosine(lr, n))),
    "stable_adamw": Recipe(1e-3, lambda lr, n: optimizers.stable_adamw(
        warmup_cosine(lr, n), b2=0.99, weight_decay=0.1, mask=weight_decay_mask)),
    "adan": Recipe(1e-3, lambda lr, n: optimizers.adan(
        warmup_cosine(lr, n), weight_decay=0.02, mask=weight_decay_mask)),
    "radam": Recipe(1e-3, lambda lr, n: optimizers.radam(
        warmup_cosine(lr, n), b2=0.99, weight_decay=0.1, mask=weight_decay_mask)),
    "ranger": Recipe(1e-3, lambda lr, n: optimizers.ranger(
        warmup_cosine(lr, n), weight_decay=0.1, mask=weight_decay_mask)),
    "adam_mini": Recipe(1e-3, lambda lr, n: optimizers.adam_mini(
        warmup_cosine(lr, n), b2=0.99, weight_decay=0.1, mask=weight_decay_mask)),
    "adams": Recipe(1e-3, lambda lr, n: optimizers.adams(
        warmup_cosine(lr, n), b2=0.95, weight_decay=0.1, mask=weight_decay_mask)),
    # Moonlight (Liu et al. 2025, Sec. 2.2): Muon's update scaled to AdamW's RMS
    # (consistent_rms 0.2) with weight decay, so AdamW's lr, schedule and wd carry over to both
    # parts; momentum 0.95, Nesterov, 5 Newton-Schulz steps (the authors').
    "muon": Recipe(1e-3, lambda lr, n: optimizers.muon(
        warmup_cosine(lr, n), weight_decay=0.1, consistent_rms=0.2,
        adam_learning_rate=warmup_cosine(lr, n), adam_b2=0.99, adam_weight_decay=0.1)),
}

DEFAULT_OPTIMIZERS = ("adamw", "lion", "adafactor", "sophia", "schedule_free_adamw")
