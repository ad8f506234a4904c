"""The compare job: the Python API on a user's model, the reference task end to end through
the command line (tiny settings), and the report files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import optimkit
import optimkit.comparison
from optimkit import cli
from optimkit.comparison.data import TextData
from tests.comparison.tiny_cli import TINY_COMPARE

REPO = Path(__file__).resolve().parents[2]


def test_compare_python_api_on_a_users_model():
  rng = np.random.default_rng(0)
  true_w = rng.normal(size=(4,))
  batches = []
  for _ in range(40):
    x = rng.normal(size=(16, 4))
    batches.append((x, x @ true_w))
  loss_fn = lambda p, b: jnp.mean((b[0] @ p["w"] - b[1]) ** 2)
  params = {"w": jnp.zeros(4)}
  rows = optimkit.compare(loss_fn, params, batches,
                          {"adamw": optimkit.adamw(0.1), "sgd": optimkit.sgd(0.01),
                           "sophia_h": optimkit.sophia(0.05, estimator="hutchinson", gamma=1.0,
                                                       weight_decay=0.0)},
                          eval_fn=lambda p: float(loss_fn(p, batches[0])), eval_every=10,
                          show_progress=False)
  by_name = {row["optimizer"]: row for row in rows}
  assert set(by_name) == {"adamw", "sgd", "sophia_h"}
  assert by_name["adamw"]["steps_ratio"] == 1.0
  assert by_name["adamw"]["final_loss"] < float(loss_fn(params, batches[0]))
  assert by_name["adamw"]["state_bytes_per_param"] > by_name["sgd"]["state_bytes_per_param"]
  assert by_name["sgd"]["curve"]["steps"] == [10, 20, 30, 40]
  # The caller's params were not donated away.
  assert float(jnp.sum(params["w"])) == 0.0


def test_compare_rejects_empty_inputs():
  with pytest.raises(ValueError, match="optimizers is empty"):
    optimkit.compare(lambda p, b: 0.0, {}, [1], {})


def test_text_data_split_and_batches_are_deterministic():
  data = TextData.load()
  assert len(data.validation) > 40_000 and len(data.train) > 9 * len(data.validation) - 10
  a = data.train_batches(3, 4, 16, 5)
  np.testing.assert_array_equal(a, data.train_batches(3, 4, 16, 5))
  assert a.shape == (5, 4, 17) and a.max() < 256
  assert not np.array_equal(a, data.train_batches(4, 4, 16, 5))


def _compare_in_a_fresh_process(directory, corpus, compile_cache):
  # The command line at tiny_cli's model size; the second process loads the first one's
  # compiled steps (every compile is cached), so what differs between them is the process.
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(compile_cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = subprocess.run(
      [sys.executable, "-m", "tests.comparison.tiny_cli", "compare", "--quick", "--steps", "12",
       "--optimizers", "adamw,sophia", "--data", str(corpus), "--out", str(directory)],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout, json.loads((directory / "compare.json").read_text())


def _without_timings(report):
  """Everything the run computed, minus what the clock measured."""
  results = []
  for row in report["results"]:
    row = {k: v for k, v in row.items() if k not in ("median_step_ms", "compile_seconds")}
    row["curve"] = {k: v for k, v in row["curve"].items() if k != "seconds"}
    results.append(row)
  return results


def test_cli_compare_writes_its_report_and_is_bit_identical_across_two_runs(tmp_path):
  """Two runs of the compare job with the same seed, each in its own process as a user would
  run it: every loss on every curve, the skipped steps and the ratios are bit-identical
  (Sophia's Hutchinson probes and all data order come from the seed)."""
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
  cache = tmp_path / "xla-cache"
  printed, first = _compare_in_a_fresh_process(tmp_path / "one", corpus, cache)
  _, second = _compare_in_a_fresh_process(tmp_path / "two", corpus, cache)
  assert "| adamw" in printed and "| sophia" in printed
  assert [r["optimizer"] for r in first["results"]] == ["adamw", "sophia"]
  assert all(np.isfinite(r["final_loss"]) for r in first["results"])
  assert (tmp_path / "one" / "compare.png").stat().st_size > 10_000
  assert "final val loss" in (tmp_path / "one" / "compare.md").read_text()
  assert _without_timings(first) == _without_timings(second)


def test_cli_rejects_unknown_optimizer(capsys):
  assert cli.main(["compare", "--optimizers", "adamw,nope"]) == 2
  assert "'nope' is not an optimkit optimizer" in capsys.readouterr().err  # the registry's word


def test_cli_schedule_prints_values_and_writes_png(tmp_path, capsys):
  out = tmp_path / "wsd.png"
  assert cli.main(["schedule", "wsd", "--peak", "1e-3", "--steps", "200", "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "step      10: 0.001" in printed  # end of the default 5% warmup: the peak
  assert "step     199:" in printed
  assert out.read_bytes()[:4] == b"\x89PNG"
  assert cli.main(["schedule", "nope", "--peak", "1", "--steps", "10"]) == 2


def test_cli_lr_sweep_keeps_the_best_of_three(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(optimkit.comparison, "QUICK", TINY_COMPARE)  # what --quick runs
  text = tmp_path / "corpus.txt"
  text.write_text("a stitch in time saves nine. " * 300)
  assert cli.main(["compare", "--quick", "--steps", "8", "--optimizers", "adamw", "--lr-sweep",
                   "--data", str(text), "--out", str(tmp_path / "out")]) == 0
  result = json.loads((tmp_path / "out" / "compare.json").read_text())["results"][0]
  sweep = result["sweep"]
  assert len(sweep) == 3 and result["final_loss"] == min(sweep.values())
  assert result["learning_rate"] in [float(k) for k in sweep] or \
      any(abs(result["learning_rate"] - float(k)) < 1e-9 for k in sweep)
