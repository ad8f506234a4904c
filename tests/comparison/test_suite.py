"""`optimkit compare --suite`: the verdict logic on synthetic results, the pieces a run is
measured with, one compiled step per candidate being the same as building the optimizer at
each rate, and the suite end to end through the command line at a tiny budget, interrupted by
a kill and resumed."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from optimkit.comparison import verdicts
from optimkit.comparison.suite import count_spikes, steps_to_target
from optimkit.comparison.tasks import QUICK, build_tasks, candidate
from optimkit.comparison.training import Trainer
from optimkit.comparison.verdicts import (
    BETTER, FAILS, HOLDS, NOISE, NOT_MEASURED, Claim, Sample, evaluate_claim, evaluate_claims,
    relative_difference)

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------
# Verdicts on synthetic results.


def _sample(mean, spread, n=3):
  return Sample(tuple(float(mean + spread * x) for x in np.linspace(-1, 1, n)))


def test_relative_difference_is_welchs_interval():
  rng = np.random.default_rng(0)
  a, b = rng.normal(1.0, 0.05, 4), rng.normal(1.1, 0.02, 3)
  interval = relative_difference(Sample(tuple(a)), Sample(tuple(b)))
  reference = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
  scale = abs(b.mean())
  np.testing.assert_allclose([interval.low, interval.high],
                             [reference.low / scale, reference.high / scale], rtol=1e-9)
  assert interval.estimate == pytest.approx((a.mean() - b.mean()) / scale)


def test_judge_holds_fails_and_noise_for_a_directional_claim():
  claim = Claim("A beats B", "t", ("a",), ("b",), "final", BETTER)
  rival = _sample(2.0, 0.01)
  verdict = lambda subject: evaluate_claim(claim, {"final": {"a": subject, "b": rival}}).verdict
  assert verdict(_sample(1.9, 0.01)) == HOLDS  # 5% lower, seeds 1% apart
  assert verdict(_sample(2.1, 0.01)) == FAILS
  assert verdict(_sample(1.99, 0.2)) == NOISE  # lower on average, inside the seed spread
  assert verdict(_sample(2.0, 0.01)) == NOISE  # identical means


def test_judge_a_claimed_magnitude():
  claim = Claim("A is 18-22% sooner", "t", ("a",), ("b",), "steps", (-0.22, -0.18))
  rival = _sample(1000, 10)
  verdict = lambda subject: evaluate_claim(claim, {"steps": {"a": subject, "b": rival}}).verdict
  assert verdict(_sample(800, 10)) == HOLDS
  assert verdict(_sample(600, 10)) == FAILS  # sooner, but far more than claimed
  assert verdict(_sample(950, 10)) == FAILS  # 5% sooner: 18-22% is ruled out
  assert verdict(_sample(900, 150)) == NOISE  # could be 20% sooner, could be no faster


def test_non_inferiority_claim():
  claim = Claim("A matches B", "t", ("a",), ("b",), "final", (-math.inf, 0.01), (0.01, math.inf))
  rival = _sample(2.0, 0.002)
  verdict = lambda subject: evaluate_claim(claim, {"final": {"a": subject, "b": rival}}).verdict
  assert verdict(_sample(2.001, 0.002)) == HOLDS  # within 1%, tightly
  assert verdict(_sample(1.9, 0.002)) == HOLDS  # better is also "at least as good"
  assert verdict(_sample(2.1, 0.002)) == FAILS  # 5% worse
  assert verdict(_sample(2.02, 0.05)) == NOISE  # 1% worse on average, seeds 2.5% apart


def test_groups_budgets_censoring_and_missing_results():
  final = {"sgd": _sample(1.0, 0.01), "sgd nesterov": _sample(0.9, 0.01),
           "adamw": _sample(1.2, 0.01), "adamw:8bit": _sample(0.5, 0.01)}
  best_of = Claim("SGD is best", "t", ("sgd", "sgd nesterov"), None, "final", BETTER)
  verdict = evaluate_claim(best_of, {"final": final})
  assert (verdict.subject, verdict.rival, verdict.verdict) == ("sgd nesterov", "adamw:8bit",
                                                               FAILS)
  # With a state budget that excludes adamw:8bit, the rival is the best eligible other.
  verdict = evaluate_claim(best_of, {"final": final}, eligible=["sgd", "sgd nesterov", "adamw"])
  assert (verdict.rival, verdict.verdict) == ("adamw", HOLDS)
  # A subject that never reached the target in one seed: no upper bound on its time.
  sooner = Claim("A is sooner", "t", ("a",), ("b",), "steps", BETTER)
  censored = Sample((500.0, 520.0, 1000.0), (True, True, False))
  verdict = evaluate_claim(sooner, {"steps": {"a": censored, "b": _sample(900, 5)}})
  assert verdict.interval.high == math.inf and verdict.verdict == NOISE
  # Missing candidates, tasks and seeds are "not measured", never a verdict.
  assert evaluate_claim(sooner, {"steps": {"b": _sample(900, 5)}}).verdict == NOT_MEASURED
  one_seed = {"steps": {"a": Sample((500.0,)), "b": _sample(900, 5)}}
  assert evaluate_claim(sooner, one_seed).verdict == NOT_MEASURED
  over = evaluate_claim(best_of, {"final": final}, eligible=["adamw", "adamw:8bit"])
  assert over.verdict == NOT_MEASURED and "over the state budget" in over.reason
  rows = evaluate_claims({}, claims=verdicts.CLAIMS)
  assert len(rows) == len(verdicts.CLAIMS) and {r.verdict for r in rows} == {NOT_MEASURED}


def test_every_claim_names_candidates_its_task_runs():
  tasks = build_tasks(QUICK)
  for claim in verdicts.CLAIMS:
    labels = {c.label for c in tasks[claim.task].candidates}
    assert set(claim.subject) <= labels, claim.text
    assert claim.rival is None or set(claim.rival) <= labels, claim.text


# ----------------------------------------------------------------------------------------------
# Measuring a run.


def test_steps_to_target_interpolates_between_evaluations():
  assert steps_to_target([0, 10, 20], [3.0, 2.0, 1.0], 1.5) == pytest.approx(15.0)
  assert steps_to_target([0, 10, 20], [3.0, 2.0, 1.0], 3.0) == 0.0
  assert steps_to_target([0, 10, 20], [3.0, 2.0, 1.0], 0.5) is None


def test_count_spikes():
  losses = list(np.linspace(3.0, 2.0, 60))
  assert count_spikes(losses) == 0
  losses[40] = 3.5  # 1.4 nats above the recent median
  losses[50] = float("nan")
  assert count_spikes(losses) == 2


class _Toy:
  """A problem with the suite's interface that compiles in a fraction of a second."""

  kind = "toy"
  metric_names = ("loss",)
  steps, eval_every = 12, 4

  def __init__(self):
    rng = np.random.default_rng(0)
    self.x = rng.normal(size=(self.steps, 8, 100)).astype(np.float32)
    self.y = rng.integers(0, 3, size=(self.steps, 8)).astype(np.int32)
    self.validation = self.test = (jnp.asarray(self.x[0]), jnp.asarray(self.y[0]))

  def init(self, seed):
    keys = jax.random.split(jax.random.key(seed))
    return {"w": 0.1 * jax.random.normal(keys[0], (100, 3)), "b": jnp.zeros(3)}

  def logits(self, params, batch):
    return batch[0] @ params["w"] + params["b"]

  def loss(self, params, batch):
    return optax.softmax_cross_entropy_with_integer_labels(self.logits(params, batch),
                                                           batch[1]).mean()

  def train_batches(self, seed):
    return self.x, self.y

  def metrics(self, params, data):
    return {"loss": self.loss(params, data)}

  def describe(self):
    return {"problem": "toy"}


@pytest.mark.parametrize("spec", [
    dict(spec="adamw"),  # warmup-cosine
    dict(spec="adafactor"),  # a constant rate, as a schedule
    dict(spec="schedule_free_adamw"),  # the rate also weights the average
    dict(spec="sophia"),  # logits_fn and a PRNG key
    dict(spec="muon"),  # the same schedule also drives the AdamW leaves (adam_learning_rate=None)
])
def test_one_compiled_step_per_candidate_equals_building_it_at_each_rate(spec):
  """The suite feeds each run's learning rate through the optimizer state; that must train
  exactly as the optimizer built at that rate, for every way a rate enters a recipe."""
  spec = dict(spec)
  c = candidate(spec.pop("spec"), **spec)
  problem = _Toy()
  trainer = Trainer(problem, c)
  for rate in (c.learning_rate * 3, c.learning_rate / 3):
    record = trainer.run(rate, seed=1)
    tx = c.build(rate, problem.steps)
    params = problem.init(1)
    state = tx.init(params)
    key = jax.random.key(1)

    @jax.jit
    def step(params, state, batch, i):
      loss, grads = jax.value_and_grad(problem.loss)(params, batch)
      # Compiled and called within this iteration: tx and key are this rate's.
      updates, state = tx.update(grads, state, params, key=jax.random.fold_in(key, i),  # noqa: B023
                                 loss_fn=lambda p: problem.loss(p, batch),
                                 logits_fn=lambda p: problem.logits(p, batch))
      return optax.apply_updates(params, updates), state, loss

    losses = []
    for i in range(problem.steps):
      params, state, loss = step(params, state, (problem.x[i], problem.y[i]), i)
      losses.append(float(loss))
    np.testing.assert_allclose(record.train_loss, losses, rtol=2e-6, atol=1e-7)
  assert len(trainer._compiled) == 1  # both rates ran the one compiled step


def test_suite_on_toy_tasks_shares_runs_extends_grids_and_judges(tmp_path):
  """Two tasks on one problem share their common candidate's runs (trained once); a best rate
  on the grid's edge grows the grid; a task without a sweep runs its rate only; a state budget
  decides who may be compared."""
  from optimkit.comparison.suite import run_tasks
  from optimkit.comparison.tasks import Budget, Task

  toy = _Toy()
  toy.summary = lambda params: "toy"
  budget = Budget("toy", QUICK.lm, QUICK.digits, 1, grid_base=3.0, grid_exponents=(-1, 0),
                  extensions=1, seeds=2)
  tasks = {
      "lm": Task("lm", "toy", toy, (candidate("adamw"), candidate("sgd"))),
      "memory": Task("memory", "toy", toy, (candidate("adamw"), candidate("adamw:bfloat16")),
                     state_budget=4.0),
      "instability": Task("instability", "toy", toy, (
          candidate("stable_adamw", 0.3, schedule="constant", b2=0.999),), sweep=False),
  }
  result = run_tasks(tmp_path, tasks, budget, show_progress=False)
  lm, memory = result.tasks["lm"], result.tasks["memory"]
  for c in lm.candidates + memory.candidates:
    assert len(c.sweep) == 3  # a 2-point grid's best is on an edge: one point added
    assert [r.seed for r in c.runs] == [0, 1] and c.runs[0] is c.sweep[c.chosen_lr]
  assert memory.candidates[0].runs == lm.candidates[0].runs  # float32 AdamW: the same runs
  # 3 sweep points + 1 seed for adamw, sgd and adamw:bfloat16; 2 seeds for stable_adamw.
  assert (result.fresh_runs, result.cached_runs) == (3 * 4 + 2, 0)
  assert memory.eligible() == ["adamw:bfloat16"]
  for c in result.tasks["instability"].candidates:
    assert list(c.sweep) == [0.3] and c.chosen_lr == 0.3 and len(c.runs) == 2
  by_claim = {v.claim.text: v for v in result.verdicts}
  default = by_claim["AdamW is the default, and the choice for transformers"]
  assert (default.subject, default.rival) == ("adamw", "sgd")
  assert default.verdict in (HOLDS, FAILS, NOISE)
  assert by_claim["StableAdamW against loss spikes"].verdict == NOT_MEASURED  # no AdamW run
  # 8-bit AdamW and Lion were not run; the budget leaves only adamw:bfloat16, no rival.
  assert by_claim["8-bit AdamW or Lion when memory is short"].verdict == NOT_MEASURED
  # Everything is cached now: the same tables without training anything.
  again = run_tasks(tmp_path, tasks, budget, show_progress=False)
  assert (again.fresh_runs, again.cached_runs) == (0, 14)
  assert [v.row() for v in again.verdicts] == [v.row() for v in result.verdicts]


# ----------------------------------------------------------------------------------------------
# End to end through the command line, at the tiny budget of tests/comparison/tiny_cli.py.

# The CNN task's two SGD candidates: they compile faster than the transformer's (the compare
# job's own tests cover the LM; the in-process test above covers targets and shared runs).
SUITE_ARGS = ["compare", "--suite", "--tasks", "digits", "--optimizers", "sgd"]
TOTAL_RUNS = 8  # 2 candidates x (2 rates, 1 past the grid's edge, 1 more seed)


def _suite(out, compile_cache, kill_after=None):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(compile_cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  if kill_after is not None:
    env["KILL_AFTER_RUNS"] = str(kill_after)
  return subprocess.run([sys.executable, "-m", "tests.comparison.tiny_cli", *SUITE_ARGS,
                         "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=900)


def _stored_runs(out):
  return sorted(p for p in (out / "runs").rglob("*.json") if p.name != "about.json")


TIMINGS = {"seconds_to_target", "median_step_ms", "train_seconds", "wall_seconds", "fresh_runs",
           "cached_runs"}


def _without_timings(payload):
  """Everything the suite computed, minus what the clock measured."""
  if isinstance(payload, dict):
    if payload.get("quantity") == "seconds":  # a verdict on wall-clock
      return {k: v for k, v in payload.items() if k in ("claim", "task")}
    return {k: _without_timings(v) for k, v in payload.items() if k not in TIMINGS}
  if isinstance(payload, list):
    return [_without_timings(v) for v in payload]
  return payload


def test_suite_end_to_end_then_killed_and_resumed(tmp_path):
  """One test (two would each pay for the uninterrupted run under pytest-xdist)."""
  cache = tmp_path / "xla-cache"  # shared: the later processes load the first one's compiles
  whole = _suite(tmp_path / "whole", cache)
  assert whole.returncode == 0, whole.stderr[-3000:]
  _check_reports(tmp_path / "whole", whole)

  out = tmp_path / "resumed"
  killed = _suite(out, cache, kill_after=4)
  assert killed.returncode == -9, killed.stderr[-3000:]
  assert len(_stored_runs(out)) == 4 and not (out / "suite.json").exists()
  resumed = _suite(out, cache)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "4 from the cache" in resumed.stderr
  first = json.loads((tmp_path / "whole" / "suite.json").read_text())
  second = json.loads((out / "suite.json").read_text())
  assert second["cached_runs"] == 4
  assert _without_timings(second) == _without_timings(first)
  verdict_table = lambda path: (path / "suite.md").read_text().split("## Verdicts")[1].split(
      "\n## ")[0]
  assert verdict_table(out) == verdict_table(tmp_path / "whole")


def _check_reports(out, result):
  report = json.loads((out / "suite.json").read_text())
  assert set(report["tasks"]) == {"digits"}
  digits = {c["label"]: c for c in report["tasks"]["digits"]["candidates"]}
  assert set(digits) == {"sgd", "sgd nesterov"}
  for c in digits.values():
    assert len(c["final_error"]["values"]) == 2  # two seeds at the chosen rate
    assert len(c["sweep"]) >= 2 and c["chosen_lr"] in [s["lr"] for s in c["sweep"]]
    assert 0.0 <= c["final_error"]["mean"] <= 100.0
  by_claim = {v["claim"]: v for v in report["verdicts"]}
  assert len(by_claim) == len(verdicts.CLAIMS)
  measured = [v for v in by_claim.values() if v["verdict"] != NOT_MEASURED]
  assert {v["task"] for v in measured} == {"digits"}
  assert all(v["verdict"] in (HOLDS, FAILS, NOISE) for v in measured)
  assert by_claim["Nesterov momentum improves on heavy-ball momentum"]["verdict"] != NOT_MEASURED
  assert by_claim["Sophia needs 2x fewer steps than AdamW"]["verdict"] == NOT_MEASURED
  markdown = (out / "suite.md").read_text()
  assert "## Verdicts" in markdown and "## digits" in markdown
  assert markdown in result.stdout  # the report is also printed
  assert (out / "suite-digits.png").stat().st_size > 10_000
  assert len(_stored_runs(out)) == TOTAL_RUNS
  assert "ETA" in result.stderr and "suite done" in result.stderr
