"""Run in a subprocess with 8 simulated CPU devices (see tests/test_matrix_work.py): `optimkit.muon`
with its Newton-Schulz work laid out over the mesh by `optimkit.map_matrices`.

On FSDP (data-sharded), tensor-parallel (model-sharded), 2 x 4 (Auto and Explicit axes) and
ZeRO-1 meshes, sharded Muon steps equal the single-device steps and keep the params' and the
state's shardings; on the FSDP and TP meshes each device does at most 1.25 x 1/8 of the
single-device step's FLOPs (the compiled executables' cost analysis) and moves fewer bytes than
optax's Muon under GSPMD (the collectives in the compiled HLO). Prints one OK line per check.
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402
from optax.contrib import MuonDimensionNumbers  # noqa: E402

import optimkit  # noqa: E402
from benchmarks.common import collective_bytes  # noqa: E402
from optimkit import sharding  # noqa: E402
from optimkit.transforms.muon import newton_schulz  # noqa: E402

assert jax.device_count() == 8
rng = np.random.default_rng(0)
d, layers = 32, 4
# Muon's: a scanned (layers, in, out) leaf of 8 matrices, and per layer q, k, v, o, up, down;
# 24 (32, 32) matrices and 8 (32, 128) ones (the down projections transposed): 3 + 1 per device.
# AdamW's: the embedding and the biases.
HOST = {"stack": rng.normal(size=(8, d, d)), "embedding": rng.normal(size=(64, d))}
for i in range(layers):
  for name in ("q", "k", "v", "o"):
    HOST[f"{i}_{name}"] = rng.normal(size=(d, d))
  HOST[f"{i}_up"], HOST[f"{i}_down"] = rng.normal(size=(d, 4 * d)), rng.normal(size=(4 * d, d))
  HOST[f"{i}_up_bias"] = rng.normal(size=(4 * d,))
HOST = {k: np.asarray(v, np.float32) for k, v in HOST.items()}

COLUMN = ("q", "k", "v", "up")  # Megatron's column-parallel layers; "o", "down" are row-parallel


def specs_for(kind):
  def spec(name):
    last = name.split("_")[-1]
    if last == "bias":
      return P() if kind == "dp" else P("data") if kind == "fsdp" else P("model")
    if kind == "fsdp":
      return P(None, "data", None) if name == "stack" else P("data", None)
    if kind == "tp":
      return P(None, None, "model") if name == "stack" else \
          P(None, "model") if last in COLUMN else P("model", None)
    if kind == "2x4":
      return P(None, "data", "model") if name == "stack" else \
          P("data", "model") if last in COLUMN else P("model", "data")
    return P()  # data parallel: params replicated
  return {k: spec(k) for k in HOST}


def step_fn(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


def grads_at(step):
  return {k: jnp.asarray(np.cos(v * (step + 1)), jnp.float32) for k, v in HOST.items()}


STEPS = 3
tx = optimkit.muon(ns_dtype=None, weight_decay=0.1)
p_single = {k: jnp.asarray(v) for k, v in HOST.items()}
s_single = tx.init(p_single)
single = jax.jit(step_fn(tx))
single_flops = single.lower(p_single, s_single, p_single).compile().cost_analysis()["flops"]
for t in range(STEPS):
  p_single, s_single = single(p_single, s_single, grads_at(t))

MESHES = {
    "fsdp": (jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,)), "fsdp", None),
    "tp": (jax.make_mesh((8,), ("model",), axis_types=(AxisType.Auto,)), "tp", None),
    "2x4": (jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2), "2x4",
            None),
    "data zero1": (jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,)), "dp", "data"),
    "2x4 explicit": (jax.make_mesh((2, 4), ("data", "model"),
                                   axis_types=(AxisType.Explicit,) * 2), "2x4", None),
}
measured = {}
for label, (mesh, kind, zero) in MESHES.items():
  specs = specs_for(kind)
  explicit = AxisType.Explicit in mesh.axis_types
  params = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in HOST.items()}
  place = lambda tree: {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in
                        tree.items()}
  param_shardings = jax.tree.map(lambda p: p.sharding, params)
  state_shardings = sharding.state_shardings(tx, params, zero1_axis=zero)
  with jax.set_mesh(mesh):
    if explicit:
      state = jax.jit(tx.init)(params)  # sharding in types: init places the state itself
      run = jax.jit(step_fn(tx))
    else:
      state = sharding.sharded_init(tx, params, zero1_axis=zero)
      run = jax.jit(step_fn(tx), out_shardings=(param_shardings, state_shardings))
    compiled = run.lower(params, state, place(grads_at(0))).compile()
    p, s = params, state
    for t in range(STEPS):
      p, s = run(p, s, place(grads_at(t)))
  for k in HOST:
    np.testing.assert_allclose(np.asarray(p[k]), np.asarray(p_single[k]), rtol=2e-5, atol=2e-6,
                               err_msg=f"{label}: {k}")
    assert p[k].sharding.is_equivalent_to(params[k].sharding, p[k].ndim), (label, k)
  for leaf, wanted in zip(jax.tree.leaves(s), jax.tree.leaves(state_shardings)):
    assert leaf.sharding.is_equivalent_to(wanted, leaf.ndim), (label, leaf.shape, wanted)
  # Inside optax.partition the moments still shard like their params (not replicated).
  momentum = s.inner_state.inner_states["muon"].inner_state[0].momentum["0_up"]
  assert momentum.sharding.is_equivalent_to(params["0_up"].sharding, 2) or zero, label
  flops = compiled.cost_analysis()["flops"]
  moved = sum(collective_bytes(compiled.as_text(), 8).values())
  measured[label] = (flops, moved)
  print(f"OK {label}: equal to one device; per-device FLOPs {flops / single_flops:.3f} of the "
        f"single-device step, {moved:.0f} B moved")

# Each matrix orthogonalized once: per-device FLOPs of the whole step (Newton-Schulz and the
# elementwise rest) within 1.25 x 1/8 of one device's, where every param is sharded 8 ways.
for label in ("fsdp", "tp"):
  flops, moved = measured[label]
  assert flops <= 1.25 * single_flops / 8, (label, flops, single_flops)
  # optax's Muon under GSPMD on the same mesh: collectives inside every iteration.
  mesh, kind, _ = MESHES[label]
  specs = specs_for(kind)
  params = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in HOST.items()}
  # (the same routing: the embedding and biases to its Adam)
  dims = {k: MuonDimensionNumbers(1, 2) if k == "stack" else None
          if k == "embedding" or k.endswith("bias") else MuonDimensionNumbers() for k in HOST}
  reference = optax.contrib.muon(0.02, weight_decay=0.1, muon_weight_dimension_numbers=dims)
  with jax.set_mesh(mesh):
    state = sharding.sharded_init(reference, params)
    theirs = jax.jit(step_fn(reference), out_shardings=(
        jax.tree.map(lambda p: p.sharding, params),
        sharding.state_shardings(reference, params))).lower(params, state, params).compile()
  their_moved = sum(collective_bytes(theirs.as_text(), 8).values())
  assert moved < their_moved, (label, moved, their_moved)
  print(f"OK {label} flops and bytes: {flops / (single_flops / 8):.3f} x total/8; {moved:.0f} B "
        f"moved vs optax's {their_moved:.0f} B")

# map_matrices itself on Explicit axes: results in the inputs' types, for an f that keeps the
# shape and for one that does not (the Gram matrix, as Shampoo's statistics).
mesh = MESHES["2x4 explicit"][0]
inputs = [jax.device_put(HOST["0_up"], NamedSharding(mesh, P("data", "model"))),
          jax.device_put(HOST["stack"], NamedSharding(mesh, P(None, "data", "model")))]
with jax.set_mesh(mesh):
  same = jax.jit(lambda xs: optimkit.map_matrices(newton_schulz, xs))(inputs)
  gram = jax.jit(lambda xs: optimkit.map_matrices(lambda x: x @ x.T, xs))(inputs)
for x, y, g in zip(inputs, same, gram):
  assert jax.typeof(y).sharding.spec == jax.typeof(x).sharding.spec, jax.typeof(y)
  np.testing.assert_allclose(np.asarray(y), np.asarray(jax.vmap(newton_schulz)(
      np.asarray(x).reshape((-1,) + x.shape[-2:]))).reshape(x.shape), rtol=1e-4, atol=1e-5)
  expected = np.einsum("...ij,...kj->...ik", np.asarray(x), np.asarray(x))
  assert g.shape == expected.shape
  np.testing.assert_allclose(np.asarray(g), expected, rtol=1e-4, atol=1e-3)
print("OK map_matrices explicit")
