"""The decision table's folklore, each claim set against the suite's measurements.

Every claim compares a subject (the best, by mean, of one or more candidates) with a rival
(one candidate, or the best of every other candidate in the task) on one quantity:

  final    the final test metric (loss, or error % for the CNN); lower is better
  steps    steps to reach the task's target (the baseline's worst seed's final test loss)
  seconds  training wall-clock to reach it (compilation and evaluation excluded)
  spike    the largest loss spike: the largest jump of the training loss above the median of
           the 20 steps before it (nats)

The effect is the relative difference of the means, (subject - rival) / rival: -0.2 means the
subject is 20% lower (better, or sooner). Its 95% interval is Welch's t interval of the
difference of means over the seeds, divided by the rival's mean. A run that never reaches the
target counts as the budget (a lower bound) and opens the interval on that side.

Each claim states the range of effects it asserts (`claimed`) and the range that would mean it
is not supported (`null`: no difference, or worse than a tolerance). The verdict:

  does not hold                        the interval misses the claimed range
  holds                                the interval meets the claimed range and misses the null
  not distinguishable from seed noise  the interval meets both
  not measured                         a candidate the claim needs was not run (or < 2 seeds)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

HOLDS = "holds"
FAILS = "does not hold"
NOISE = "not distinguishable from seed noise"
NOT_MEASURED = "not measured"

INF = math.inf


@dataclass(frozen=True)
class Sample:
  """One candidate's values over seeds; `reached[i]` False marks values[i] as a lower bound
  (a run that never reached the target, counted at the budget)."""

  values: tuple[float, ...]
  reached: tuple[bool, ...] | None = None

  @property
  def n(self) -> int:
    return len(self.values)

  @property
  def mean(self) -> float:
    return float(np.mean(self.values)) if self.values else math.nan

  @property
  def std(self) -> float:
    return float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan

  @property
  def censored(self) -> bool:
    return self.reached is not None and not all(self.reached)


@dataclass(frozen=True)
class Interval:
  estimate: float
  low: float
  high: float

  def meets(self, low: float, high: float) -> bool:
    return self.low <= high and self.high >= low


def _t_quantile(confidence: float, df: float) -> float:
  from scipy import stats  # a dependency of jax

  return float(stats.t.ppf(0.5 + confidence / 2.0, df))


def relative_difference(subject: Sample, rival: Sample, confidence: float = 0.95) -> Interval:
  """(mean(subject) - mean(rival)) / |mean(rival)| with Welch's t interval. Fewer than two
  values on either side, or non-finite values, give an unbounded interval."""
  values = subject.values + rival.values
  if subject.n < 2 or rival.n < 2 or not all(math.isfinite(v) for v in values):
    estimate = (subject.mean - rival.mean) / abs(rival.mean) if rival.n and rival.mean else 0.0
    return Interval(estimate if math.isfinite(estimate) else 0.0, -INF, INF)
  scale = abs(rival.mean) or 1.0
  va, vb = subject.std ** 2 / subject.n, rival.std ** 2 / rival.n
  difference = subject.mean - rival.mean
  if va + vb == 0.0:  # every seed identical on both sides: the difference is exact
    half = 0.0
  else:
    df = (va + vb) ** 2 / (va ** 2 / (subject.n - 1) + vb ** 2 / (rival.n - 1))
    half = _t_quantile(confidence, df) * math.sqrt(va + vb)
  low, high = (difference - half) / scale, (difference + half) / scale
  # A run that never reached the target took longer than recorded: no upper bound for it.
  if subject.censored:
    high = INF
  if rival.censored:
    low = -INF
  return Interval(difference / scale, low, high)


def judge(interval: Interval, claimed: tuple[float, float],
          null: tuple[float, float] = (0.0, 0.0)) -> str:
  if not interval.meets(*claimed):
    return FAILS
  if interval.meets(*null):
    return NOISE
  return HOLDS


@dataclass(frozen=True)
class Claim:
  """A row of the decision table. `subject`/`rival` are candidate labels in `task`; the best
  (lowest mean) of each group is compared; `rival=None` is every other candidate that fits the
  task's state budget."""

  text: str
  task: str
  subject: tuple[str, ...]
  rival: tuple[str, ...] | None
  quantity: str  # "final" | "steps" | "seconds" | "spike"
  claimed: tuple[float, float]
  null: tuple[float, float] = (0.0, 0.0)


BETTER = (-INF, 0.0)
SCHEDULE_FREE_TOLERANCE = 0.01  # "matching": final loss at most 1% above

CLAIMS: tuple[Claim, ...] = (
    Claim("AdamW is the default, and the choice for transformers", "lm", ("adamw",), None,
          "final", BETTER),
    Claim("SGD + momentum (+ Nesterov) for CNNs, rather than AdamW", "digits",
          ("sgd", "sgd nesterov"), ("adamw",), "final", BETTER),
    Claim("Nesterov momentum improves on heavy-ball momentum", "digits", ("sgd nesterov",),
          ("sgd",), "final", BETTER),
    Claim("SGD + momentum gives the best final accuracy if you can tune", "digits",
          ("sgd", "sgd nesterov"), None, "final", BETTER),
    Claim("Ranger for small-batch CNNs, rather than AdamW", "digits", ("ranger",), ("adamw",),
          "final", BETTER),
    Claim("LAMB for large batches, rather than AdamW", "lm_large_batch", ("lamb",), ("adamw",),
          "final", BETTER),
    Claim("8-bit AdamW or Lion when memory is short", "memory", ("adamw:8bit", "lion"), None,
          "final", BETTER),
    Claim("StableAdamW against loss spikes", "instability", ("stable_adamw",), ("adamw",),
          "spike", BETTER),
    Claim("A lower beta2 (0.95) against loss spikes", "instability", ("adamw b2=0.95",),
          ("adamw",), "spike", BETTER),
    Claim("Lion reaches the target perplexity 18-22% sooner than AdamW", "lm", ("lion",),
          ("adamw",), "steps", (-0.22, -0.18)),
    Claim("Adafactor is 8-12% slower than AdamW (wall-clock)", "lm", ("adafactor",), ("adamw",),
          "seconds", (0.08, 0.12)),
    Claim("Sophia needs 2x fewer steps than AdamW", "lm", ("sophia",), ("adamw",), "steps",
          (-1.0, -0.5)),
    Claim("Schedule-free AdamW matches a tuned cosine schedule", "lm", ("schedule_free_adamw",),
          ("adamw",), "final", (-INF, SCHEDULE_FREE_TOLERANCE), (SCHEDULE_FREE_TOLERANCE, INF)),
)


@dataclass(frozen=True)
class Verdict:
  claim: Claim
  verdict: str
  subject: str | None = None  # the label chosen from the subject group
  rival: str | None = None
  subject_sample: Sample | None = None
  rival_sample: Sample | None = None
  interval: Interval | None = None
  reason: str = ""

  def row(self) -> dict:
    data: dict[str, Any] = {
        "claim": self.claim.text, "task": self.claim.task, "quantity": self.claim.quantity,
        "claimed": list(self.claim.claimed), "verdict": self.verdict, "reason": self.reason,
        "subject": self.subject, "rival": self.rival}
    if self.interval is not None:
      data.update(effect=self.interval.estimate, low=self.interval.low, high=self.interval.high)
    for name, sample in (("subject_values", self.subject_sample),
                         ("rival_values", self.rival_sample)):
      if sample is not None:
        data[name] = list(sample.values)
    return data


def _best(labels: Sequence[str], samples: Mapping[str, Sample]) -> str | None:
  present = [label for label in labels if label in samples and samples[label].n]
  return min(present, key=lambda label: _mean_or_inf(samples[label])) if present else None


def _mean_or_inf(sample: Sample) -> float:
  return sample.mean if math.isfinite(sample.mean) else INF


def evaluate_claim(claim: Claim, samples: Mapping[str, Mapping[str, Sample]],
                   eligible: Sequence[str] | None = None) -> Verdict:
  """`samples[quantity][label]` for the claim's task; `eligible` the labels that fit the
  task's state budget (every label when None)."""
  by_label = samples.get(claim.quantity, {})
  pool = list(eligible) if eligible is not None else list(by_label)
  subject = _best([label for label in claim.subject if label in pool], by_label)
  if subject is None:
    missing = [label for label in claim.subject if label not in by_label]
    return Verdict(claim, NOT_MEASURED, reason=f"{' / '.join(claim.subject)} "
                   + ("not run" if missing == list(claim.subject) else "over the state budget"))
  if claim.rival is None:
    rivals = [label for label in pool if label not in claim.subject and label in by_label]
  else:
    rivals = list(claim.rival)
  rival = _best(rivals, by_label)
  if rival is None:
    return Verdict(claim, NOT_MEASURED, subject=subject,
                   reason=f"no rival run ({' / '.join(rivals) or 'none eligible'})")
  a, b = by_label[subject], by_label[rival]
  interval = relative_difference(a, b)
  if min(a.n, b.n) < 2:
    return Verdict(claim, NOT_MEASURED, subject, rival, a, b, interval,
                   reason="needs >= 2 seeds for a noise estimate")
  return Verdict(claim, judge(interval, claim.claimed, claim.null), subject, rival, a, b,
                 interval)


def evaluate_claims(samples: Mapping[str, Mapping[str, Mapping[str, Sample]]],
                    eligible: Mapping[str, Sequence[str]] | None = None,
                    claims: Sequence[Claim] = CLAIMS) -> list[Verdict]:
  """`samples[task][quantity][label]`; claims on tasks that were not run are "not measured"."""
  verdicts = []
  for claim in claims:
    if claim.task not in samples:
      verdicts.append(Verdict(claim, NOT_MEASURED, reason=f"task {claim.task} not run"))
      continue
    verdicts.append(evaluate_claim(claim, samples[claim.task],
                                   (eligible or {}).get(claim.task)))
  return verdicts


def _percent(x: float) -> str:
  if x == INF:
    return "+inf"
  if x == -INF:
    return "-inf"
  return f"{100 * x:+.1f}%"


def describe_sample(sample: Sample, quantity: str) -> str:
  digits = {"final": 4, "steps": 0, "seconds": 1, "spike": 3}[quantity]
  if sample.n == 0 or all(math.isnan(v) for v in sample.values):
    return "-"
  text = f"{sample.mean:.{digits}f}"
  if sample.n >= 2:
    text += f" ± {sample.std:.{digits}f}"
  if sample.censored:
    text = f">= {text} ({sum(sample.reached or ())}/{sample.n} reached)"
  return text


def describe_verdict(verdict: Verdict) -> str:
  """The numbers behind a verdict, one line."""
  if verdict.interval is None or verdict.subject_sample is None:
    return verdict.reason
  claim, interval = verdict.claim, verdict.interval
  unit = {"final": "final", "steps": "steps to target", "seconds": "s to target",
          "spike": "largest spike"}[claim.quantity]
  low, high = claim.claimed
  claimed = (f"claimed {_percent(low)}..{_percent(high)}" if math.isfinite(low)
             else f"claimed <= {_percent(high)}" if high else "claimed < 0")
  text = (f"{verdict.subject} {describe_sample(verdict.subject_sample, claim.quantity)} vs "
          f"{verdict.rival} {describe_sample(verdict.rival_sample, claim.quantity)} "  # type: ignore[arg-type]  # set with subject_sample
          f"({unit}): "
          f"{_percent(interval.estimate)}, 95% CI [{_percent(interval.low)}, "
          f"{_percent(interval.high)}]; {claimed}")
  if verdict.reason:
    text += f"; {verdict.reason}"
  return text
