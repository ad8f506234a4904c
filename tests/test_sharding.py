"""Derived optimizer-state shardings on 8 simulated CPU devices (a 2 x 4 data x model mesh):
every listed optimizer's state is created in its derived sharding and a sharded step equals the
single-device step; ZeRO-1 halves the state per device; Orbax checkpoints restore onto another
mesh and resume bit-identically. Runs in a subprocess: the device count is fixed at JAX start."""

import os
import subprocess
import sys

import optimkit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_state_shardings_on_eight_devices():
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharding_checks.py")],
                          capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  for name in ("adamw", "adafactor", "lamb", "sophia", "adamw_4bit", "clip+masked adamw", "specs",
               "zero1"):
    assert f"OK {name}" in result.stdout
  for name in ("adamw", "adafactor", "sophia", "schedule_free_adamw", "adamw_4bit"):
    assert f"OK checkpoint {name}" in result.stdout
  for name in ("adamw", "adamw_8bit", "adafactor"):
    assert f"OK offload {name}" in result.stdout
  assert "OK errors and no all-gather" in result.stdout
  assert "OK wide quantized leaf sharded" in result.stdout
  for name in ("adamw", "adafactor", "adam_mini", "adamw_8bit", "adamw_4bit"):
    assert f"OK nnx {name}" in result.stdout
  assert "OK nnx one call optax.adafactor" in result.stdout
  for wrapper in ("masked", "multi_transform", "partition", "MultiSteps", "chain",
                  "inject_hyperparams", "apply_if_finite", "skip_nonfinite"):
    assert f"OK wrapped {wrapper} " in result.stdout, wrapper
  assert "OK wrappers" in result.stdout


def test_every_optimizer_on_data_model_and_explicit_meshes():
  """Every optimizer in the registry on an Explicit-axes 2 x 4 mesh, and one set covering every
  family and storage kind also on a data-only mesh (8) and a model-only mesh (8), with and
  without ZeRO-1: equal to the single-device run, state in the derived shardings; quantized
  blocks aligned to shards move no state between devices."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharding_meshes.py")],
                          capture_output=True, text=True, env=env, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  lines = [line for line in result.stdout.splitlines() if line.startswith("OK ")]
  full = next(line for line in result.stdout.splitlines() if line.startswith("FULL "))
  for name in optimkit.registry.names():
    assert any(line.startswith(f"OK {name} on explicit data x model:") for line in lines), name
  for name in full[len("FULL "):].split(","):
    for mesh in ("data", "model"):
      assert any(line.startswith(f"OK {name} on {mesh}:") for line in lines), (name, mesh)
  for line in lines[:-1]:
    if " on data:" in line:
      # ZeRO-1 over 8 devices: at most 1/8 of the state, plus the scalars and the arrays no dim
      # of which 8 divides (blocked SOAP's 4 x 4 bases of the (4, 16, 64) leaf: 296 B in all)
      plain, zero = (int(part.split(" B")[0].split()[-1]) for part in line.split(",")[-2:])
      assert zero <= plain / 8 + 512, line
  assert lines[-1] == "OK quantized blocks aligned to shards"


def _abstract(specs_and_shapes):
  import jax

  return ({k: jax.ShapeDtypeStruct(shape, "float32") for k, (shape, _) in specs_and_shapes.items()},
          {k: spec for k, (_, spec) in specs_and_shapes.items()})


def test_specs_through_masks_of_whole_subtrees_and_unforeseen_layouts():
  """In-process, on an abstract 2 x 4 mesh: a mask that leaves out a whole subtree (one
  MaskedNode for it), and a wrapper whose state holds params-shaped leaves in a plain list (not
  laid out like the params) still give every moment its parameter's spec."""
  import jax
  import jax.numpy as jnp
  import optax
  from jax.sharding import AbstractMesh, PartitionSpec as P

  import optimkit
  from optimkit import sharding

  mesh = AbstractMesh((2, 4), ("data", "model"))
  shapes = {"w": ((16, 64), P("data", "model")), "b": ((64,), P("model"))}
  leaves, leaf_specs = _abstract(shapes)
  params = {"enc": leaves, "dec": dict(leaves)}
  specs = {"enc": leaf_specs, "dec": dict(leaf_specs)}
  masked = optax.masked(optimkit.adamw(1e-2), {"enc": False, "dec": True})
  adam = sharding.state_specs(masked, params, specs=specs, mesh=mesh).inner_state.inner_state[0]
  assert isinstance(adam.mu["enc"], optax.MaskedNode)
  assert adam.mu["dec"] == adam.nu["dec"] == {"w": P("data", "model"), "b": P("model")}
  assert adam.count == P()

  as_list = optax.GradientTransformation(
      lambda p: {"copies": [jnp.zeros_like(x) for x in jax.tree.leaves(p)],
                 "count": jnp.zeros([], jnp.int32)},
      lambda u, s, p=None: (u, s))
  got = sharding.state_specs(as_list, params, specs=specs, mesh=mesh, zero1_axis="data")
  assert got["count"] == P()
  # Leaves in params order (dec.b, dec.w, enc.b, enc.w); ZeRO-1 adds "data" where it divides.
  assert got["copies"] == [P("model"), P("data", "model")] * 2, got


def test_galore_projections_keep_the_params_shared_dim_and_take_zero1():
  """GaLore's projected moments (m x r of an m x n param) and projectors (r x n) keep the
  param's spec on the dim they share with it; quantized projected moments (blocks of m x r, not
  of the param) no longer raise, and ZeRO-1 splits them."""
  import jax
  from jax.sharding import AbstractMesh, PartitionSpec as P

  import optimkit
  from optimkit import sharding

  mesh = AbstractMesh((2, 4), ("data", "model"))
  params, specs = _abstract({"tall": ((512, 64), P("model", "data")),
                             "wide": ((64, 512), P(None, "model")), "b": ((64,), P("model"))})
  got = sharding.state_specs(optimkit.galore_adamw(1e-3, rank=8), params, specs=specs,
                             mesh=mesh).inner_state[0]
  assert got.inner_state.mu == {"tall": P("model", None), "wide": P(None, "model"),
                                "b": P("model")}
  # tall: P = V[:, :r]^T (r x n) shares n; wide: P = U[:, :r] (m x r) shares m (unsharded).
  assert got.projectors == {"tall": P(None, "data"), "wide": P(None, None), "b": None}
  quantized = sharding.state_specs(optimkit.galore_adamw(1e-3, rank=8, state_storage="8bit"),
                                   params, specs=specs, mesh=mesh, zero1_axis="data")
  codes = jax.tree.leaves(quantized.inner_state[0].inner_state.mu,
                          is_leaf=lambda x: isinstance(x, P))
  assert any("data" in tuple(spec) for spec in codes), codes


def _free_port():
  import socket

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_of_four_devices_match_a_single_process(tmp_path):
  """jax.distributed on 127.0.0.1: 2 processes x 4 CPU devices, ZeRO-1 sharded steps with an
  Orbax save/restore in the middle, equal to the same steps in one process."""
  import jax
  import numpy as np
  import optax

  from tests.multiprocess_problem import (
      STEPS_AFTER, STEPS_BEFORE, host_params, loss_fn, make_tx)

  env = dict(os.environ, PYTHONPATH=ROOT, JAX_ENABLE_X64="0")
  env.pop("XLA_FLAGS", None)
  port = _free_port()
  workers = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests",
                                                            "multiprocess_worker.py"),
                               str(i), str(port), str(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
  outputs = [w.communicate(timeout=600) for w in workers]
  for worker, (out, err) in zip(workers, outputs):
    assert worker.returncode == 0, err[-4000:]
  result = np.load(tmp_path / "params.npz")

  tx = make_tx()  # float32 params: float32 hyperparameters and moments, as in the workers
  params = {k: jax.numpy.asarray(v) for k, v in host_params().items()}
  state = tx.init(params)
  for _ in range(STEPS_BEFORE + STEPS_AFTER):
    updates, state = tx.update(jax.grad(loss_fn)(params), state, params)
    params = optax.apply_updates(params, updates)
  for k in params:
    np.testing.assert_allclose(result[k], np.asarray(params[k]), rtol=1e-5, atol=1e-6)
