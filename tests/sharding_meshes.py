"""Run in a subprocess with 8 simulated CPU devices (see tests/test_sharding.py): every optimizer
in the registry on the data x model (2 x 4) mesh with Explicit axes, with and without ZeRO-1,
and a set covering every family and storage kind (FULL below) on three meshes - data only (8),
model only (8) and the 2 x 4 one; each sharded run equals the single-device run and its state
keeps the derived shardings. Prints the state bytes per device with and without ZeRO-1."""

import inspect
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

import optimkit  # noqa: E402
from optimkit import sharding  # noqa: E402

assert jax.device_count() == 8
rng = np.random.default_rng(1)
# "big" and "emb" are quantized, in tiles that 8 shards of their last dim hold whole.
HOST = {k: np.asarray(v, np.float32) for k, v in {
    "w": rng.normal(size=(16, 64)), "v": rng.normal(size=(32,)),
    "stack": rng.normal(size=(4, 16, 64)), "emb": rng.normal(size=(128, 64)),
    "big": rng.normal(size=(16, 2048)), "s": np.asarray(1.5)}.items()}
MODEL_SPECS = {"w": P(None, "model"), "v": P("model"), "stack": P(None, None, "model"),
               "emb": P(None, "model"), "big": P(None, "model"), "s": P()}
MESHES = {
    # Pure data parallelism: params replicated; ZeRO-1 is what shards the state.
    "data": (jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,)),
             {k: P() for k in HOST}, (None, "data")),
    "model": (jax.make_mesh((8,), ("model",), axis_types=(AxisType.Auto,)), MODEL_SPECS, (None,)),
    "explicit data x model": (
        jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Explicit,) * 2),
        {**MODEL_SPECS, "w": P("data", "model"), "stack": P(None, "data", "model")},
        (None, "data")),
}

# Every family and storage kind on all three meshes, with settings that exercise their sharded
# paths (factoring at this size, centered RMSprop, Sophia's Hutchinson probes).
FULL = {
    "sgd": lambda: optimkit.sgd(1e-2, momentum=0.9),
    "adagrad": lambda: optimkit.adagrad(1e-2),
    "rmsprop": lambda: optimkit.rmsprop(1e-3, momentum=0.9, centered=True),
    "adam": lambda: optimkit.adam(1e-2),
    "adamw": lambda: optimkit.adamw(1e-2),
    "lion": lambda: optimkit.lion(1e-3),
    "adafactor": lambda: optimkit.adafactor(1e-2, min_dim_size_to_factor=8, momentum=0.9),
    "lamb": lambda: optimkit.lamb(1e-2),
    "lars": lambda: optimkit.lars(1e-2),
    "sophia": lambda: optimkit.sophia(1e-3, estimator="hutchinson", seed=0),
    "schedule_free_adamw": lambda: optimkit.schedule_free_adamw(1e-2),
    "schedule_free_sgd": lambda: optimkit.schedule_free_sgd(1e-2),
    "stable_adamw": lambda: optimkit.stable_adamw(1e-2),
    "adan": lambda: optimkit.adan(1e-2),
    "radam": lambda: optimkit.radam(1e-2),
    "ranger": lambda: optimkit.ranger(1e-2),
    "adam_mini": lambda: optimkit.adam_mini(1e-2),
    "adams": lambda: optimkit.adams(1e-2),
    "adamw_8bit": lambda: optimkit.adamw_8bit(1e-2),
    "adamw_4bit": lambda: optimkit.adamw_4bit(1e-2),
    "lion_8bit": lambda: optimkit.lion_8bit(1e-3),
    "sgd bf16": lambda: optimkit.sgd(1e-2, momentum=0.9, state_storage="bfloat16"),
    # Blocked SOAP: blocks of (16, 32) and (4, 16, 32), their 16 x 16 and 4 x 4 bases in stacks
    # spread over the mesh, and a refresh within the 3 steps (count 2: the QR, v's reordering
    # and m's change of basis). The 32-dims stay unrotated (max_precondition_dim): with every
    # dim of a block rotated, the second step's gradient (the first one's: no update between)
    # is diagonal in its own eigenbasis, and Adam's m / sqrt(v) of the off-diagonal rounding
    # noise is +-1, different on each mesh.
    "soap blocked": lambda: optimkit.soap(3e-3, block_size=32, max_precondition_dim=16,
                                          precondition_frequency=2),
    # Kron's blocked fit through map_stacked (each 16 x 16 block's fit on one device), with the
    # cached Q^T Q; p = 1: the fit runs on every step.
    "kron blocked": lambda: optimkit.kron(1e-2, preconditioner_update_probability=1.0,
                                          block_size=16, cache_preconditioner=True),
}
# The rest of the registry at its typical learning rate, on the Explicit 2 x 4 mesh only (the
# hardest: sharding in types, model- and data-sharded params, ZeRO-1).
OPTIMIZERS = dict(FULL)
# sharded vs single-device, where an optimizer needs other than the default (SOAP's: below)
TOLERANCES: dict = {"soap blocked": {"rtol": 1e-4, "atol": 2e-4}}
for _name in optimkit.registry.names():
  if _name not in OPTIMIZERS:
    _info = optimkit.registry.get(_name)
    # Newton-Schulz in the params' dtype: in bfloat16 (Muon's default) a matmul split over
    # devices rounds differently from the single-device one (1e-3 apart after 3 steps); Muon's
    # own sharded tests (tests/matrix_work_checks.py) cover bfloat16 with its tolerance.
    _kwargs = {"ns_dtype": None} if "ns_dtype" in inspect.signature(_info.make).parameters else {}
    # SOAP runs Adam in the eigenbasis of its statistics. A wide leaf's statistic is rank
    # deficient for many steps (16 x 2048 gives a 2048 x 2048 factor of rank <= 16 per step), and
    # in its null space any orthonormal basis is an eigenbasis: the sharded sums round
    # differently, eigh picks another basis there, and the runs part as legitimately as two
    # LAPACK builds would. Factors of at most 16 (full rank here) keep the comparison exact and
    # still send every leaf's 16 x 16 factor through the sharded eigh.
    if "max_precondition_dim" in inspect.signature(_info.make).parameters:
      _kwargs["max_precondition_dim"] = 16
      # Rounding of the sharded sums reaches the update through float32 eigenvectors (accurate
      # to eps / eigenvalue gap) and Adam's division by the rotated sqrt(v) + eps, large where v
      # is near 0: 2 of 32768 elements of "big" (params of order 1) differ by 7.5e-5 after 3
      # steps on the model mesh. The bound is absolute at that scale.
      TOLERANCES[_name] = {"rtol": 1e-4, "atol": 2e-4}
    OPTIMIZERS[_name] = lambda info=_info, kw=_kwargs: info.make(info.typical_lr, **kw)
ALL_MESHES = set(FULL)
loss_fn = lambda p: sum(jnp.sum(jnp.sin(x) ** 2) for x in jax.tree.leaves(p))


def logits_fn(p):
  # Sophia-G's sampled labels need logits that depend on every param.
  total = sum(jnp.mean(jnp.sin(x)) for x in jax.tree.leaves(p))
  return jnp.tanh(jnp.linspace(-1.0, 1.0, 40).reshape(4, 10) * (1.0 + total))
STEPS = 3


def make_step(tx):
  def step(params, state):
    grads = jax.grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, loss_fn=loss_fn, logits_fn=logits_fn,
                               key=jax.random.key(0))
    return optax.apply_updates(params, updates), state
  return step


# `python tests/sharding_meshes.py kron` runs only the optimizers whose names start with "kron"
# (the FULL line stays complete; tests/test_sharding.py runs everything).
ONLY = sys.argv[1] if len(sys.argv) > 1 else ""
print("FULL " + ",".join(FULL))
for name, make in OPTIMIZERS.items():
  if not name.startswith(ONLY):
    continue
  tx = make()
  single = jax.jit(make_step(tx))
  p_single = {k: jnp.asarray(v) for k, v in HOST.items()}
  s_single = tx.init(p_single)
  for _ in range(STEPS):
    p_single, s_single = single(p_single, s_single)
  for mesh_name, (mesh, specs, zero_axes) in MESHES.items():
    if name not in ALL_MESHES and mesh_name != "explicit data x model":
      continue
    explicit = AxisType.Explicit in mesh.axis_types
    params = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in HOST.items()}
    param_shardings = jax.tree.map(lambda p: p.sharding, params)
    per_device = {}
    if zero_axes == (None, "data") and not explicit:
      # Params replicated over "data": the plain state is replicated too, so its bytes are
      # measured from the init alone and only the ZeRO-1 step is run.
      plain = sharding.sharded_init(tx, params)
      per_device[None] = max(sharding.bytes_per_device(plain).values())
      zero_axes = ("data",)
    for zero in zero_axes:
      shardings = sharding.state_shardings(tx, params, zero1_axis=zero)
      with jax.set_mesh(mesh):
        if explicit and zero is None:
          # Sharding in types: the plain init already places the state in the derived specs,
          # and a jit without out_shardings keeps them.
          state = jax.jit(tx.init)(params)
          run = jax.jit(make_step(tx))
        else:
          state = sharding.sharded_init(tx, params, zero1_axis=zero)
          run = jax.jit(make_step(tx), out_shardings=(param_shardings, shardings))
        p, s = params, state
        for _ in range(STEPS):
          p, s = run(p, s)
      assert jax.tree.structure(s) == jax.tree.structure(shardings), (name, mesh_name)
      for leaf, wanted in zip(jax.tree.leaves(s), jax.tree.leaves(shardings)):
        assert leaf.sharding.is_equivalent_to(wanted, leaf.ndim), \
            (name, mesh_name, zero, leaf.shape, leaf.sharding, wanted)
      for k in HOST:
        np.testing.assert_allclose(np.asarray(p[k]), np.asarray(p_single[k]),
                                   **TOLERANCES.get(name, {"rtol": 2e-5, "atol": 2e-6}),
                                   err_msg=f"{name} on {mesh_name}, zero1={zero}")
        assert p[k].sharding.is_equivalent_to(params[k].sharding, p[k].ndim)
      per_device[zero] = max(sharding.bytes_per_device(s).values())
    sizes = ", ".join(f"{'ZeRO-1' if z else 'plain'} {b} B" for z, b in per_device.items())
    print(f"OK {name} on {mesh_name}: max state bytes/device {sizes}")

# Quantized blocks aligned to shard boundaries: "big" (16 x 2048, 1 x 256 tiles at 8 bits,
# 1 x 128 at 4) and "emb" (128 x 64, 16 x 8 and 8 x 8 tiles: an 8 x 8 and a 16 x 8 grid) sharded
# 8 ways on their last dim hold whole tiles per shard, so codes and scales are sharded with them
# on the tiles' grid axes and the compiled 8- and 4-bit steps move no
# optimizer state between devices.
mesh, specs, _ = MESHES["model"]
params = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in HOST.items()}
eight = sharding.state_specs(optimkit.adamw_8bit(1e-2), params).inner_state[0]
assert eight.mu["big"].codes == P(None, "model", None), eight.mu["big"]  # (16, 8, 256)
assert eight.mu["big"].absmax == P(None, "model") and eight.nu["big"].absmax == P(None, "model")
assert eight.mu["emb"].codes == P(None, None, "model", None), eight.mu["emb"]  # (8, 16, 8, 8)
assert eight.mu["emb"].absmax == P(None, "model"), eight.mu["emb"]
four = sharding.state_specs(optimkit.adamw_4bit(1e-2), params).inner_state[0]
assert four.mu["big"].codes == P(None, "model", None), four.mu["big"]  # (16, 16, 64)
assert four.nu["big"] == type(four.nu["big"])(codes=P(None, "model"), row_max=P(None),
                                              col_max=P("model")), four.nu["big"]
for name in ("adamw_8bit", "adamw_4bit"):
  tx = FULL[name]()
  aligned = {k: params[k] for k in ("big", "emb")}
  shardings = sharding.state_shardings(tx, aligned)
  compiled = jax.jit(lambda p, s, g: tx.update(g, s, p), out_shardings=(
      {k: p.sharding for k, p in aligned.items()}, shardings)).lower(
          aligned, sharding.sharded_init(tx, aligned), aligned).compile().as_text()
  assert "all-gather" not in compiled and "all-to-all" not in compiled, name
print("OK quantized blocks aligned to shards")
