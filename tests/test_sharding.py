"""Derived optimizer-state shardings on 8 simulated CPU devices (a 2 x 4 data x model mesh):
every listed optimizer's state is created in its derived sharding and a sharded step equals the
single-device step; ZeRO-1 halves the state per device; Orbax checkpoints restore onto another
mesh and resume bit-identically. Runs in a subprocess: the device count is fixed at JAX start."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_state_shardings_on_eight_devices():
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharding_checks.py")],
                          capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  for name in ("adamw", "adafactor", "sophia", "schedule_free_adamw", "adam_mini", "adamw_8bit",
               "adamw_4bit", "clip+masked adamw", "specs", "zero1"):
    assert f"OK {name}" in result.stdout
  for name in ("adamw", "adafactor", "sophia", "schedule_free_adamw", "adamw_8bit", "adamw_4bit"):
    assert f"OK checkpoint {name}" in result.stdout
  for name in ("adamw", "adamw_8bit", "adafactor"):
    assert f"OK offload {name}" in result.stdout
  assert "OK errors and no all-gather" in result.stdout
