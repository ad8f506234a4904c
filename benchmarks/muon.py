"""Muon: optimkit against optax.contrib.muon, measured in one run.

    python benchmarks/muon.py [--width 128] [--layers 4] [--repeats 15]

1. One device: median step time (params and state donated, the optimizers timed in interleaved
   rounds) on a transformer-shaped tree, for
   optimkit's Muon as the authors run it (Newton-Schulz in bfloat16), optimkit in optax's mode
   (float32 Newton-Schulz, the same arithmetic as optax) and optax.contrib.muon, all routing the
   same leaves to Muon (kernels) and to AdamW (embedding, biases, norms).
2. Eight simulated devices (a subprocess: the device count is fixed when JAX starts), on FSDP
   (every kernel's first axis over 8), tensor-parallel (Megatron's column/row split over 8) and
   2 x 4 meshes: per-device FLOPs of the compiled update (the cost analysis of the partitioned
   executable; Newton-Schulz is nearly all of them) and bytes each device receives per step
   (the collectives in the compiled HLO, `benchmarks.common.collective_bytes`), for
     - optimkit: `map_matrices` lays each matrix on one device (all-to-all in and out), with
       its default bfloat16 Newton-Schulz and in optax's mode (float32, optax's arithmetic);
     - optax under GSPMD: optax.contrib.muon on the sharded params, XLA partitioning each
       Newton-Schulz matmul;
     - replicate everything: gradients all-gathered, momentum replicated, every device
       orthogonalizing every matrix (optax.contrib.muon on replicated inputs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from optax.contrib import MuonDimensionNumbers  # noqa: E402

import optimkit  # noqa: E402
from benchmarks.common import (  # noqa: E402
    collective_bytes,
    describe,
    machine,
    rerun_on_eight_devices,
)
from optimkit import registry  # noqa: E402

LR = 0.02


def transformer_tree(width: int, layers: int, vocab: int = 2048, seed: int = 0) -> dict:
  """The layout of `optimkit.memory.transformer_shaped_params` (fused QKV, output projection,
  4x MLP, biases, two norms per layer, an embedding) at a chosen width and depth."""
  rng = np.random.default_rng(seed)
  arr = lambda *shape: jnp.asarray(0.02 * rng.normal(size=shape), jnp.float32)
  tree = {"embedding": arr(vocab, width), "final_norm": {"scale": arr(width)}}
  for i in range(layers):
    tree[f"layer_{i:03d}"] = {
        "attention": {"qkv": {"kernel": arr(width, 3 * width), "bias": arr(3 * width)},
                      "out": {"kernel": arr(width, width), "bias": arr(width)}},
        "mlp": {"up": {"kernel": arr(width, 4 * width), "bias": arr(4 * width)},
                "down": {"kernel": arr(4 * width, width), "bias": arr(width)}},
        "attention_norm": {"scale": arr(width)}, "mlp_norm": {"scale": arr(width)},
    }
  return tree


def optax_muon(params, **kwargs):
  """optax.contrib.muon routed as optimkit's default: kernels to Muon, the rest to Adam."""
  dims = optimkit.muon_labels(params)
  dims = jax.tree.map(lambda label: MuonDimensionNumbers() if label == "muon" else None, dims)
  return optax.contrib.muon(LR, muon_weight_dimension_numbers=dims, **kwargs)


def optimkit_optax_mode(params):
  mode = {k: v for k, v in registry.get("muon").optax_mode.items() if k != "muon_mask"}
  return optimkit.muon(LR, **mode)  # same routing as optax_muon above: the default rule


def newton_schulz_flops(params) -> float:
  """5 iterations of 4 m^2 n + 2 m^3 (X X^T, A A, B X) per Muon matrix, m <= n."""
  total = 0.0
  for leaf, label in zip(jax.tree.leaves(params), jax.tree.leaves(optimkit.muon_labels(params))):
    if label == "muon":
      m, n = sorted(leaf.shape[-2:])
      total += 5 * (4 * m * m * n + 2 * m ** 3)
  return total


def single_device(width: int, layers: int, repeats: int) -> None:
  params = transformer_tree(width, layers)
  grads = jax.tree.map(lambda p: 0.1 * jnp.cos(100 * p), params)
  print(f"## One device: {describe(params)} (width {width}, {layers} layers), {machine()}")
  print(f"Newton-Schulz: {newton_schulz_flops(params) / 1e9:.2f} GFLOP per step\n")
  runs = {
      "optax.contrib.muon": optax_muon(params),
      "optimkit.muon (optax mode, float32 NS)": optimkit_optax_mode(params),
      "optimkit.muon (authors: bfloat16 NS)": optimkit.muon(LR, adam_learning_rate=LR),
  }
  # Compiled first, then timed in interleaved rounds: on a shared machine the load drifts,
  # and timing one optimizer after the other would charge the drift to one of them.
  steps = {}
  for name, tx in runs.items():
    def step(params, state, grads, tx=tx):
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state
    start = time.perf_counter()
    jitted = jax.jit(step, donate_argnums=(0, 1))
    carry = jax.tree.map(jnp.copy, (params, tx.init(params)))
    carry = jax.block_until_ready(jitted(*carry, grads))
    steps[name] = [jitted, carry, [], time.perf_counter() - start]
  for _ in range(repeats):
    for entry in steps.values():
      start = time.perf_counter()
      entry[1] = jax.block_until_ready(entry[0](*entry[1], grads))
      entry[2].append(time.perf_counter() - start)
  base = statistics.median(steps["optax.contrib.muon"][2])
  print("| optimizer | median step ms | compile + first step s | vs optax |")
  print("|---|---|---|---|")
  for name, (_, _, times, first) in steps.items():
    print(f"| {name} | {statistics.median(times) * 1e3:.1f} | {first:.1f} | "
          f"{statistics.median(times) / base:.2f}x |")
  print()


# ----------------------------------------------------------------------------------------------
# Eight devices (run in the subprocess).

COLUMN = ("qkv", "up")  # column-parallel in Megatron's tensor parallelism; out, down row-parallel


def mesh_specs(params, kind: str):
  from jax.sharding import PartitionSpec as P

  def spec(path, leaf):
    names = [getattr(entry, "key", "") for entry in path]
    if kind == "replicated":
      return P()
    if leaf.ndim == 1:
      return P("model") if kind != "fsdp" else P("data")
    if names[0] == "embedding":
      return P(None, "model") if kind != "fsdp" else P("data", None)
    column = names[-2] in COLUMN
    if kind == "fsdp":
      return P("data", None)
    if kind == "tp":
      return P(None, "model") if column else P("model", None)
    return P("data", "model") if column else P("model", "data")  # 2x4

  return jax.tree_util.tree_map_with_path(spec, params)


def layout(width: int, layers: int) -> None:
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

  from optimkit import sharding

  host = transformer_tree(width, layers)
  assert jax.device_count() == 8

  def step(tx):
    def run(params, state, grads):
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state
    return run

  def compiled(tx, params, grads, out_params, state_shardings, mesh):
    with jax.set_mesh(mesh):
      state = jax.eval_shape(tx.init, params)
      state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                           state, state_shardings)
      return jax.jit(step(tx), out_shardings=(out_params, state_shardings)).lower(
          params, state, grads).compile()

  def gathered(tx):
    """`tx` on replicated gradients, its updates replicated too (else XLA would partition the
    work again to match the sharded params): every device orthogonalizes every matrix."""
    replicate = lambda tree: jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, P()), tree)

    def update(grads, state, params=None):
      updates, state = tx.update(replicate(grads), state, params)
      return replicate(updates), state
    return optax.GradientTransformation(tx.init, update)

  def abstract(tree, mesh, specs):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                          sharding=NamedSharding(mesh, s)),
                        tree, specs, is_leaf=lambda x: isinstance(x, P))

  single = jax.jit(step(optax_muon(host))).lower(
      host, optax_muon(host).init(host), host).compile().cost_analysis()["flops"]
  ns = newton_schulz_flops(host)
  print(f"## Eight devices: {describe(host)} (width {width}, {layers} layers)")
  print(f"one device's update: {single / 1e9:.2f} GFLOP (Newton-Schulz {ns / 1e9:.2f}); "
        f"total / 8 = {single / 8e9:.3f} GFLOP\n")
  print("| mesh | layout | GFLOP/device | x total/8 | MB received/device/step | "
        "bytes vs optax |")
  print("|---|---|---|---|---|---|")
  meshes = {"FSDP (8)": ("fsdp", (8,), ("data",)), "TP (8)": ("tp", (8,), ("model",)),
            "2x4": ("2x4", (2, 4), ("data", "model"))}
  for label, (kind, shape, names) in meshes.items():
    mesh = jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))
    specs = mesh_specs(host, kind)
    params = abstract(host, mesh, specs)
    out_params = jax.tree.map(lambda p: p.sharding, params)
    replicated = abstract(host, mesh, jax.tree.map(lambda _: P(), host))
    optax_tx = optax_muon(host)
    ours = optimkit.muon(LR, adam_learning_rate=LR)
    ours_f32 = optimkit_optax_mode(host)
    runs = {
        "optimkit, bfloat16 NS (default)": compiled(ours, params, params, out_params,
                                                    sharding.state_shardings(ours, params), mesh),
        "optimkit, float32 NS (optax mode)": compiled(
            ours_f32, params, params, out_params, sharding.state_shardings(ours_f32, params),
            mesh),
        "optax under GSPMD": compiled(optax_tx, params, params, out_params,
                                      sharding.state_shardings(optax_tx, params), mesh),
        # the state replicated, the gradients all-gathered on the way in (in the program)
        "replicate everything": compiled(gathered(optax_tx), params, params, out_params,
                                         sharding.state_shardings(optax_tx, replicated), mesh),
    }
    measured = {name: (executable.cost_analysis()["flops"],
                       sum(collective_bytes(executable.as_text(), 8).values()))
                for name, executable in runs.items()}
    for name, (flops, received) in measured.items():
      print(f"| {label} | {name} | {flops / 1e9:.3f} | {flops / (single / 8):.2f} | "
            f"{received / 1e6:.3f} | {received / measured['optax under GSPMD'][1]:.3f}x |")
  print()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=int, default=128)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--mesh-width", type=int, default=256)
  parser.add_argument("--mesh-layers", type=int, default=8)
  parser.add_argument("--layout-only", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.layout_only:
    layout(args.mesh_width, args.mesh_layers)
    return
  single_device(args.width, args.layers, args.repeats)
  rerun_on_eight_devices(__file__, ["--layout-only", "--mesh-width", str(args.mesh_width),
                                    "--mesh-layers", str(args.mesh_layers)])


if __name__ == "__main__":
  main()
