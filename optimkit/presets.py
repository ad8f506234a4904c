"""Published training recipes as ready optimizers: an optax chain of gradient clipping, the
optimizer with its schedule, and a weight-decay mask that spares biases and norms.

Each function cites its source; where a source gives a range, the docstring says which end is
taken and why.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import optax

from optimkit import _checks, optimizers, schedules
from optimkit.transforms.weight_decay import weight_decay_mask


class LLMSize(NamedTuple):
  peak_learning_rate: float
  batch_tokens: float  # for reference: the batch size (tokens) the rate was tuned with


#: GPT-3 (Brown et al. 2020, Table 2.1): learning rate by model size.
GPT3_SIZES: dict[str, LLMSize] = {
    "125M": LLMSize(6.0e-4, 0.5e6), "350M": LLMSize(3.0e-4, 0.5e6),
    "760M": LLMSize(2.5e-4, 0.5e6), "1.3B": LLMSize(2.0e-4, 1e6),
    "2.7B": LLMSize(1.6e-4, 1e6), "6.7B": LLMSize(1.2e-4, 2e6),
    "13B": LLMSize(1.0e-4, 2e6), "175B": LLMSize(0.6e-4, 3.2e6),
}


def _with_clipping(clip_norm: float | None, tx: optax.GradientTransformation):
  if clip_norm is None:
    return tx
  _checks.check_range("preset", "clip_norm", clip_norm, 0.0, low_inclusive=False)
  return optax.chain(optax.clip_by_global_norm(clip_norm), tx)


def llm_pretraining_adamw(model_size: str, total_steps: int, warmup_steps: int | None = None,
                          clip_norm: float | None = 1.0, mask: Any = weight_decay_mask
                          ) -> optax.GradientTransformation:
  """AdamW for decoder-only LLM pre-training, GPT-3's recipe (Brown et al. 2020, Table 2.1 and
  Appendix B): betas (0.9, 0.95), eps 1e-8, weight decay 0.1, global-norm clipping 1.0,
  linear warmup then cosine decay to 10% of the peak, the peak by model size (125M: 6e-4 ...
  175B: 6e-5). GPT-3 warms up over 375M tokens; `warmup_steps` defaults to 1% of the run, which
  is that at GPT-3's batch sizes and ~300B-token runs. Decay is masked off biases and norms.
  """
  if model_size not in GPT3_SIZES:
    raise ValueError(f"llm_pretraining_adamw: model_size must be one of {list(GPT3_SIZES)}, "
                     f"got {model_size!r}")
  peak = GPT3_SIZES[model_size].peak_learning_rate
  warmup = max(1, total_steps // 100) if warmup_steps is None else warmup_steps
  schedule = schedules.warmup_cosine(0.0, peak, warmup, total_steps, end_value=0.1 * peak)
  return _with_clipping(clip_norm, optimizers.adamw(schedule, b1=0.9, b2=0.95, eps=1e-8,
                                                    weight_decay=0.1, mask=mask))


def finetuning_adamw(total_steps: int, learning_rate: float = 2e-5, warmup_fraction: float = 0.1,
                     clip_norm: float | None = 1.0, mask: Any = weight_decay_mask
                     ) -> optax.GradientTransformation:
  """AdamW for fine-tuning a pre-trained transformer, BERT's recipe (Devlin et al. 2019,
  Appendix A.3 and the released fine-tuning code): lr 2e-5 (of their grid 5e-5, 3e-5, 2e-5; the
  smallest is the safest start), betas (0.9, 0.999), eps 1e-6, weight decay 0.01 off biases and
  norms, warmup over the first 10% then linear decay to 0, clipping 1.0."""
  _checks.check_range("finetuning_adamw", "warmup_fraction", warmup_fraction, 0.0, 1.0,
                      high_inclusive=False)
  warmup = int(total_steps * warmup_fraction)
  schedule = schedules.join([schedules.linear(0.0, learning_rate, max(1, warmup)),
                             schedules.linear(learning_rate, 0.0, max(1, total_steps - warmup))],
                            [warmup])
  return _with_clipping(clip_norm, optimizers.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6,
                                                    weight_decay=0.01, mask=mask))


def _scaled(learning_rate, factor: float):
  if callable(learning_rate):
    return lambda step: learning_rate(step) * factor
  return learning_rate * factor


def lion_from_adamw(learning_rate: float | Callable, weight_decay: float, factor: float = 3.0,
                    b1: float = 0.9, b2: float = 0.99, clip_norm: float | None = 1.0,
                    mask: Any = weight_decay_mask) -> optax.GradientTransformation:
  """Lion with hyperparameters moved over from a working AdamW setup (Chen et al. 2023,
  Section 5): the learning rate `factor` times smaller and the weight decay `factor` times
  larger, so lr * wd (the effective decay) is kept. The paper says 3-10x; the default 3 is the
  conservative end (a too-large sign step diverges, a too-small one only trains slower).
  `learning_rate` may be AdamW's schedule; it is scaled as a whole."""
  _checks.check_range("lion_from_adamw", "factor", factor, 1.0)
  _checks.check_non_negative("lion_from_adamw", "weight_decay", weight_decay)
  return _with_clipping(clip_norm, optimizers.lion(_scaled(learning_rate, 1.0 / factor), b1=b1,
                                                   b2=b2, weight_decay=weight_decay * factor,
                                                   mask=mask))


def adam_mini_4bit_from_adamw(learning_rate: float | Callable, weight_decay: float,
                              b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                              clip_norm: float | None = 1.0, mask: Any = weight_decay_mask
                              ) -> optax.GradientTransformation:
  """AdamW's quality at about 0.53 bytes of state per parameter: `adam_mini_4bit` with a
  working AdamW setup's hyperparameters unchanged. Adam-mini's authors (Zhang et al. 2024,
  Section 3) run it with AdamW's learning rate, betas and weight decay; on this project's
  reference task the tuned rates of AdamW and of 4-bit Adam-mini coincided and the final loss
  was within 2% of AdamW's (`benchmarks/frontier.py`, issue 22). `learning_rate` may be
  AdamW's schedule."""
  _checks.check_non_negative("adam_mini_4bit_from_adamw", "weight_decay", weight_decay)
  return _with_clipping(clip_norm, optimizers.adam_mini_4bit(learning_rate, b1=b1, b2=b2, eps=eps,
                                                             weight_decay=weight_decay,
                                                             mask=mask))


def sophia_from_adamw(adamw_peak_learning_rate: float, total_steps: int,
                      warmup_steps: int | None = None, gamma: float = 0.05,
                      clip_norm: float | None = 1.0, mask: Any = weight_decay_mask
                      ) -> optax.GradientTransformation:
  """Sophia-G for GPT-style pre-training, from the authors' recommendations (Liu et al. 2023
  and their released GPT-2 configs): peak learning rate about half AdamW's, rho (gamma) in
  [0.01, 0.1] with 0.05 for 355M and larger (0.03 at 125M), weight decay 0.2, betas
  (0.965, 0.99), Hessian every 10 steps, warmup then cosine to 10%, clipping 1.0.
  Pass `logits_fn=` and `key=` to update (see `optimkit.sophia`)."""
  peak = 0.5 * adamw_peak_learning_rate
  warmup = max(1, total_steps // 100) if warmup_steps is None else warmup_steps
  schedule = schedules.warmup_cosine(0.0, peak, warmup, total_steps, end_value=0.1 * peak)
  return _with_clipping(clip_norm, optimizers.sophia(schedule, b1=0.965, b2=0.99, gamma=gamma,
                                                     weight_decay=0.2, update_interval=10,
                                                     weight_decay_mask=mask))


def schedule_free_from_adamw(adamw_peak_learning_rate: float, warmup_steps: int,
                             factor: float = 3.0, b1: float = 0.9, b2: float = 0.95,
                             weight_decay: float = 0.1, clip_norm: float | None = 1.0,
                             mask: Any = weight_decay_mask) -> optax.GradientTransformation:
  """Schedule-free AdamW from a scheduled AdamW's peak learning rate (Defazio et al. 2024 and
  the authors' README): its learning rates are typically 1-10x larger than a scheduled run's
  (default 3x), warmup is still needed, and no decay schedule is used; b1 0.9 (raise to 0.95 or
  0.98 for very long runs). Evaluate with `optimkit.schedule_free_eval_params`."""
  _checks.check_range("schedule_free_from_adamw", "factor", factor, 0.0, low_inclusive=False)
  return _with_clipping(clip_norm, optimizers.schedule_free_adamw(
      adamw_peak_learning_rate * factor, b1=b1, b2=b2, weight_decay=weight_decay,
      warmup_steps=warmup_steps, mask=mask))


def shampoo_from_adamw(learning_rate: float | Callable, b1: float = 0.9, b2: float = 0.999,
                       eps: float = 1e-8, weight_decay: float = 0.01, block_size: int = 1024,
                       preconditioning_compute_steps: int = 10, clip_norm: float | None = 1.0,
                       mask: Any = weight_decay_mask) -> optax.GradientTransformation:
  """Shampoo grafted onto a working AdamW setup, as Meta's Distributed Shampoo README says to
  switch (facebookresearch/optimizers, shampoo/README.md): keep AdamW's learning rate (or
  schedule), betas and weight decay (decoupled, AdamW's), graft from Adam with AdamW's eps as
  the grafting epsilon and b2 as its decay, and damp the statistics by an absolute 1e-12; the
  first moment is an EMA (Meta's `betas[0]`), without Nesterov. `block_size` 1024 and roots
  every 10 steps are this preset's choices (the README leaves them to the user: larger blocks
  and rarer roots trade quality for time), not the README's."""
  _checks.check_non_negative("shampoo_from_adamw", "weight_decay", weight_decay)
  return _with_clipping(clip_norm, optimizers.shampoo(
      learning_rate, block_size, b1, b2, diagonal_epsilon=eps, matrix_epsilon=1e-12,
      weight_decay=weight_decay, start_preconditioning_step=preconditioning_compute_steps,
      preconditioning_compute_steps=preconditioning_compute_steps, graft_type="adam",
      nesterov=False, moving_average_for_momentum=True, relative_matrix_epsilon=False,
      decoupled_weight_decay=True, weight_decay_mask=mask))


def soap_from_adamw(adamw_peak_learning_rate: float, total_steps: int,
                    warmup_steps: int | None = None, weight_decay: float = 0.01,
                    precondition_frequency: int = 10, clip_norm: float | None = 1.0,
                    mask: Any = weight_decay_mask) -> optax.GradientTransformation:
  """SOAP from AdamW's peak learning rate (Vyas et al. 2024): SOAP is Adam in a rotated basis
  and adds one hyperparameter, the basis refresh frequency, so AdamW's learning rate carries
  over; the authors' released defaults for the rest: betas (0.95, 0.95), eps 1e-8, weight
  decay 0.01 (after the step), bases every 10 steps. Warmup (default 1% of the run) then
  cosine to 10% of the peak, clipping 1.0, as the other LLM presets here."""
  warmup = max(1, total_steps // 100) if warmup_steps is None else warmup_steps
  peak = adamw_peak_learning_rate
  schedule = schedules.warmup_cosine(0.0, peak, warmup, total_steps, end_value=0.1 * peak)
  return _with_clipping(clip_norm, optimizers.soap(
      schedule, 0.95, 0.95, None, weight_decay, precondition_frequency, eps=1e-8,
      weight_decay_mask=mask))


def kron_from_adamw(learning_rate: float | Callable, weight_decay: float, factor: float = 3.0,
                    b1: float = 0.9, clip_norm: float | None = 1.0, seed: int | None = None,
                    mask: Any = weight_decay_mask) -> optax.GradientTransformation:
  """PSGD Kron from a working AdamW setup, kron-torch 0.3.3's README: a learning rate about 3x
  smaller than Adam's and a weight decay 3-10x larger (default 3x both, the conservative end),
  b1 0.9, and its default preconditioner update schedule (every step for 500 steps, then
  annealed to 3%). Pass `key=` to update, or `seed=` (see `optimkit.kron`)."""
  _checks.check_range("kron_from_adamw", "factor", factor, 1.0)
  _checks.check_non_negative("kron_from_adamw", "weight_decay", weight_decay)
  return _with_clipping(clip_norm, optimizers.kron(
      _scaled(learning_rate, 1.0 / factor), b1, weight_decay * factor, seed=seed,
      weight_decay_mask=mask))
