"""Checkpoints that survive being killed mid-save.

A training run (tests/checkpoint_fault_worker.py, in a subprocess) checkpoints every 2 steps; it
is killed with SIGKILL in the middle of three saves in turn - right after Orbax creates the
temporary directory, after some arrays are written, and with everything written just before the
atomic rename - and resumed each time from the newest complete checkpoint. The partial save is
never listed, the previous checkpoint restores, and the final params and optimizer state are
bit-identical to an uninterrupted run's.
"""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from optimkit import checkpoint

WORKER = os.path.join(os.path.dirname(__file__), "checkpoint_fault_worker.py")
TOTAL_STEPS = 10
FAULTS = [(4, "after_tmp_dir"), (6, "while_writing"), (8, "before_commit")]


def _run(*arguments):
  return subprocess.run([sys.executable, WORKER, *map(str, arguments)], capture_output=True,
                        text=True, timeout=300)


def _final(directory):
  with np.load(os.path.join(directory, "final.npz")) as arrays:
    return [arrays[name] for name in arrays.files]


@pytest.mark.parametrize("optimizer", ["adamw", "adamw_4bit"])
def test_killed_mid_save_resumes_bit_identically(optimizer, tmp_path):
  clean, faulty = str(tmp_path / "clean"), str(tmp_path / "faulty")
  result = _run(optimizer, clean, TOTAL_STEPS)
  assert result.returncode == 0, result.stderr[-3000:]

  resumed_from = None  # the first faulty run starts from scratch
  for kill_at, fault in FAULTS:
    result = _run(optimizer, faulty, TOTAL_STEPS, kill_at, fault)
    assert result.returncode == -signal.SIGKILL, (fault, result.stdout, result.stderr[-3000:])
    assert "KILLED" in result.stdout and "FINISHED" not in result.stdout, fault
    if resumed_from is not None:
      assert f"RESUMED from step {resumed_from}" in result.stdout, (fault, result.stdout)
    # The interrupted save left its temporary directory behind and nothing under its own name;
    # the newest complete checkpoint is the previous one.
    assert checkpoint.complete_steps(faulty)[-1] == kill_at - 2, fault
    assert any(name.startswith(f"step_{kill_at:08d}.") for name in os.listdir(faulty)), fault
    resumed_from = kill_at - 2

  result = _run(optimizer, faulty, TOTAL_STEPS)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"RESUMED from step {resumed_from}" in result.stdout, result.stdout
  clean_arrays, faulty_arrays = _final(clean), _final(faulty)
  assert len(clean_arrays) == len(faulty_arrays) > 0
  for a, b in zip(clean_arrays, faulty_arrays):
    np.testing.assert_array_equal(a, b)
