"""`optimkit.map_matrices`: f applied to every matrix, computed once. Locally it is a vmap over
each input's leading axes; on 8 simulated devices (tests/matrix_work_checks.py, in a subprocess:
the device count is fixed when JAX starts) it spreads Muon's Newton-Schulz over FSDP, TP, 2 x 4,
ZeRO-1 and Explicit-axes meshes, equal to one device, at <= 1.25 x 1/8 of the FLOPs per device
and fewer bytes moved than optax's Muon under GSPMD."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optimkit
from optimkit.transforms.muon import newton_schulz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_local_map_is_f_on_every_matrix():
  rng = np.random.default_rng(0)
  inputs = [jnp.asarray(rng.normal(size=shape)) for shape in [(4, 6), (3, 4, 6), (2, 2, 5, 3)]]
  outputs = jax.jit(lambda xs: optimkit.map_matrices(newton_schulz, xs))(inputs)
  for x, y in zip(inputs, outputs):
    flat = np.asarray(x).reshape((-1,) + x.shape[-2:])
    expected = np.stack([np.asarray(newton_schulz(jnp.asarray(m))) for m in flat])
    np.testing.assert_allclose(np.asarray(y), expected.reshape(x.shape), atol=1e-12)
  # An f that changes the shape: the Gram matrix of each.
  grams = optimkit.map_matrices(lambda x: x @ x.T, inputs)
  assert [g.shape for g in grams] == [(4, 4), (3, 4, 4), (2, 2, 5, 5)]
  np.testing.assert_allclose(np.asarray(grams[1][2]),
                             np.asarray(inputs[1][2] @ inputs[1][2].T), atol=1e-12)
  assert optimkit.map_matrices(newton_schulz, []) == []


def test_a_vector_is_refused():
  with pytest.raises(ValueError, match="input 1 has shape \\(3,\\)"):
    optimkit.map_matrices(newton_schulz, [jnp.zeros((2, 2)), jnp.zeros(3)])


def test_sharded_muon_on_eight_devices_equals_one_device():
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "matrix_work_checks.py")],
                          capture_output=True, text=True, env=env, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  for label in ("fsdp", "tp", "2x4", "data zero1", "2x4 explicit", "fsdp flops and bytes",
                "tp flops and bytes", "map_matrices explicit"):
    assert f"OK {label}" in result.stdout, result.stdout
  assert "Involuntary full rematerialization" not in result.stderr


def _free_port():
  import socket

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_of_four_devices_match_a_single_process(tmp_path):
  """jax.distributed on 127.0.0.1: 2 processes x 4 CPU devices, Muon's matrices spread over all
  eight devices (all-to-alls across the processes), equal to the same steps in one process."""
  import optax

  from tests.muon_multiprocess_problem import STEPS, grads_at, host_params, make_tx

  env = dict(os.environ, PYTHONPATH=ROOT, JAX_ENABLE_X64="0")
  env.pop("XLA_FLAGS", None)
  port = _free_port()
  workers = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests",
                                                            "muon_multiprocess_worker.py"),
                               str(i), str(port), str(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
  outputs = [w.communicate(timeout=600) for w in workers]
  for worker, (out, err) in zip(workers, outputs):
    assert worker.returncode == 0, err[-4000:]
  result = np.load(tmp_path / "params.npz")
  assert (tmp_path / "collectives.txt").read_text() == "all-to-all"

  tx = make_tx()  # float32, as in the workers
  params = {k: jnp.asarray(v) for k, v in host_params().items()}
  state = tx.init(params)
  for t in range(STEPS):
    updates, state = tx.update({k: jnp.asarray(v) for k, v in grads_at(t).items()}, state, params)
    params = optax.apply_updates(params, updates)
  for k in params:
    np.testing.assert_allclose(result[k], np.asarray(params[k]), rtol=2e-5, atol=2e-6)
