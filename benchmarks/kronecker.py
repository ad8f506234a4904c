"""Shampoo, SOAP and PSGD Kron against optimkit's AdamW, measured in one run.

    python benchmarks/kronecker.py [--width 128] [--layers 2] [--repeats 7]

1. One device, a transformer-shaped tree (`benchmarks.muon.transformer_tree`): median step
   time of a refresh step (Shampoo: the inverse roots, eigh; SOAP: the power iteration and QR
   of every basis; Kron: the preconditioner fit) and of a step without one, each the same
   compiled step called on a state whose count selects the branch, timed in interleaved rounds
   with AdamW's step (the load of a shared machine drifts; interleaving charges it to all), and
   the compile time of each step against AdamW's. Settings: Shampoo block 128, roots every 10
   steps, RMSprop-normalized grafting; SOAP bases every 10 steps (the authors' default); Kron
   preconditioner update probability 0.1 (after kron-torch's warm start: every 10th step).
2. Eight simulated devices (a subprocess: the device count is fixed when JAX starts), FSDP (the
   kernels' first axis over 8) and 2 x 4 meshes: per device, the eigendecompositions / QRs the
   compiled refresh runs (read off the partitioned HLO: LAPACK custom calls are opaque to XLA's
   cost analysis on CPU, so their FLOPs are counted from their per-device operand shapes,
   ~9 b^3 per eigh with vectors, ~(4/3 + 4/3) b^3 per QR) against the single-device total / 8,
   and the whole step's per-device FLOPs (XLA's cost analysis of the partitioned executable)
   against one device's / 8. SOAP runs unblocked (its default, the reference's) and with
   `block_size` 256 and 128.

Kron options: `--kron-cache` adds Kron with `cache_preconditioner=True` (Q^T Q kept between
updates) to part 1; `--kron-block-size B` adds Kron with `block_size=B` to both parts (its factor
fit is then one stack of same-size blocks, spread over the mesh by `map_stacked`).
Triangular solves (LAPACK trsm, opaque to the cost analysis like eigh) are counted as b^2 m per
(b x b) factor and m right-hand sides. On CPU `optimkit.matrix_work` runs a function that calls
LAPACK one matrix at a time (`lax.map`, a while loop), and XLA's cost analysis counts a loop
body once whatever its trip count; part 2 only compiles, so it compiles with those functions
vmapped (the same work, visible to the cost analysis).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import optimkit  # noqa: E402
from benchmarks.common import describe, machine, rerun_on_eight_devices  # noqa: E402
from benchmarks.muon import transformer_tree  # noqa: E402

PERIOD = 10
KRON_CACHE = False  # part 1: also Kron with cache_preconditioner=True (--kron-cache)
KRON_BLOCK_SIZE = None  # part 2: also Kron with block_size= (--kron-block-size)
ROWS = None  # the optimizer rows to run in both parts, comma-separated (--rows)
# A small vocabulary: an unblocked (vocab, width) embedding gives Kron a vocab x vocab triangular
# factor (and SOAP a vocab x vocab basis), whose O(vocab^3) products would be all the time.
VOCAB = 512


def optimizers() -> dict:
  """name -> (optimizer, state count of a refresh step, of a step without one)."""
  return {
      # refresh when count % PERIOD == 0 (after start_preconditioning_step)
      "shampoo": (optimizer_shampoo(), PERIOD, PERIOD + 1),
      # count 0 is the first eigh; QR refresh when count % PERIOD == 0 afterwards
      "soap": (optimizer_soap(), PERIOD, PERIOD + 1),
      # kron-torch's counter: an update when update_counter + 1 >= 1 / p
      "kron": (optimizer_kron(), PERIOD - 1, 0),
      **({"kron cached": (optimizer_kron(cache_preconditioner=True), PERIOD - 1, 0)}
         if KRON_CACHE else {}),
      **({f"kron block {KRON_BLOCK_SIZE}": (optimizer_kron(block_size=KRON_BLOCK_SIZE),
                                            PERIOD - 1, 0)} if KRON_BLOCK_SIZE else {}),
      **({f"kron block {KRON_BLOCK_SIZE} cached": (
          optimizer_kron(block_size=KRON_BLOCK_SIZE, cache_preconditioner=True), PERIOD - 1, 0)}
         if KRON_BLOCK_SIZE and KRON_CACHE else {}),
  }


def optimizer_shampoo():
  return optimkit.shampoo(1e-3, 128, 0.9, 0.99, graft_type="rmsprop_normalized",
                          start_preconditioning_step=1, preconditioning_compute_steps=PERIOD)


def optimizer_soap():
  return optimkit.soap(3e-3, precondition_frequency=PERIOD)


def optimizer_soap_blocked(block_size: int):
  """SOAP with its dims cut into blocks of `block_size`: what spreads its bases over a mesh."""
  return lambda: optimkit.soap(3e-3, precondition_frequency=PERIOD, block_size=block_size)


def optimizer_kron(**options):
  return optimkit.kron(3e-4, preconditioner_update_probability=1.0 / PERIOD, seed=0, **options)


def _step(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


def _with_count(state, count: int, kron_counter: bool):
  """The state with every step count (or Kron's update counter) set to `count`."""
  def visit(path, leaf):
    name = getattr(path[-1], "name", "") if path else ""
    if kron_counter and name == "update_counter":
      return jnp.asarray(count, leaf.dtype)
    if not kron_counter and name == "count" and leaf.dtype == jnp.int32:
      return jnp.asarray(count, leaf.dtype)
    return leaf
  return jax.tree_util.tree_map_with_path(visit, state)


def single_device(width: int, layers: int, repeats: int) -> None:
  params = transformer_tree(width, layers, vocab=VOCAB)
  grads = jax.tree.map(lambda p: 0.1 * jnp.cos(100 * p), params)
  print(f"## One device: {describe(params)} (width {width}, {layers} layers), {machine()}\n")
  adamw = optimkit.adamw(1e-3, weight_decay=0.1)
  entries = {}

  def compiled(tx):
    state = tx.init(params)
    start = time.perf_counter()
    executable = jax.jit(_step(tx)).lower(params, state, grads).compile()
    return executable, state, time.perf_counter() - start

  executable, state, seconds = compiled(adamw)
  # A few real steps first, so that moments and statistics are not all zeros.
  for _ in range(3):
    _, state = executable(params, state, grads)
  entries["adamw"] = (executable, state, seconds)
  for name, (tx, refresh, plain) in optimizers().items():
    if ROWS and name not in ROWS.split(","):
      continue
    executable, state, seconds = compiled(tx)
    for _ in range(3):
      _, state = executable(params, state, grads)
    if name.startswith("kron"):
      # Kron's counter reached by real steps (an update_counter set by hand hung XLA's CPU
      # runtime in the branch without the update): 3 steps so far, the 10th updates.
      plain_state = state
      for _ in range(PERIOD - 1 - 3):
        _, state = executable(params, state, grads)
      entries[f"{name} refresh"] = (executable, state, seconds)
      entries[f"{name} no refresh"] = (executable, plain_state, None)
      continue
    entries[f"{name} refresh"] = (executable, _with_count(state, refresh, False), seconds)
    entries[f"{name} no refresh"] = (executable, _with_count(state, plain, False), None)
  times = {name: [] for name in entries}
  for name, (executable, state, _) in entries.items():  # warm-up of each branch
    jax.block_until_ready(executable(params, state, grads))
  for _ in range(repeats):
    for name, (executable, state, _) in entries.items():
      start = time.perf_counter()
      jax.block_until_ready(executable(params, state, grads))
      times[name].append(time.perf_counter() - start)
  base = statistics.median(times["adamw"])
  base_compile = entries["adamw"][2]
  print(flush=True)
  print("| step | median ms | vs AdamW | compile s | compile vs AdamW |")
  print("|---|---|---|---|---|")
  for name, (_, _, seconds) in entries.items():
    median = statistics.median(times[name])
    compile_text = (f"{seconds:.2f} | {seconds / base_compile:.1f}x" if seconds is not None
                    else "(same program) | ")
    print(f"| {name} | {median * 1e3:.2f} | {median / base:.2f}x | {compile_text} |")
  print()


# ----------------------------------------------------------------------------------------------
# Eight devices (run in the subprocess).

_SHAPE = re.compile(r"(f32|f64)\[([0-9,]*)\]")


def lapack_flops(hlo: str) -> dict[str, float]:
  """FLOPs of the LAPACK calls in an HLO module, from their operand shapes (batch, b, b):
  eigh (syevd) ~9 b^3, QR (geqrf + orgqr) ~4/3 b^3 each, per matrix."""
  weights = {"syevd": 9.0, "geqrf": 4.0 / 3.0, "orgqr": 4.0 / 3.0, "trsm": 1.0}
  totals = {"eigh": 0.0, "qr": 0.0, "trsm": 0.0}
  for line in hlo.splitlines():
    if "custom-call(" not in line or "custom_call_target" not in line:
      continue
    target = line.split('custom_call_target="', 1)[1].split('"', 1)[0]
    kind = next((k for k in weights if k in target), None)
    if kind is None:
      continue
    operands = line.split("custom-call(", 1)[1]
    match = _SHAPE.search(operands)
    if not match:
      continue
    dims = [int(d) for d in match.group(2).split(",") if d]
    b = dims[-1]
    batch = int(np.prod(dims[:-2])) if len(dims) > 2 else 1
    if kind == "trsm":  # (batch, b, b) factors, (batch, m, b) right-hand sides: m b^2 each
      rhs = [int(d) for d in _SHAPE.findall(operands)[1][1].split(",") if d]
      totals["trsm"] += batch * int(np.prod(rhs[-2:])) * b
      continue
    totals["eigh" if kind == "syevd" else "qr"] += weights[kind] * batch * b ** 3
  return totals


def mesh_specs(params, kind: str):
  from jax.sharding import PartitionSpec as P

  def spec(path, leaf):
    if leaf.ndim == 1:
      return P("data") if kind == "fsdp" else P("model")
    if kind == "fsdp":
      return P("data", None)
    return P("data", "model")

  return jax.tree_util.tree_map_with_path(spec, params)


def layout(width: int, layers: int) -> None:
  from jax.sharding import AxisType, NamedSharding

  from optimkit import sharding

  host = transformer_tree(width, layers, vocab=VOCAB)
  assert jax.device_count() == 8
  print(f"## Eight devices: {describe(host)} (width {width}, {layers} layers)\n")
  from optimkit import matrix_work

  print("| optimizer | mesh | eigh GFLOP/device | QR GFLOP/device | trsm GFLOP/device | "
        "LAPACK x total/8 | step GFLOP/device | step x total/8 | step + LAPACK x total/8 |")
  print("|---|---|---|---|---|---|---|---|---|")
  meshes = {"FSDP (8)": ("fsdp", (8,), ("data",)), "2x4": ("2x4", (2, 4), ("data", "model"))}
  # SOAP unblocked is its default (the reference's); blocked is what spreads its bases.
  makers = {"shampoo": optimizer_shampoo, "soap": optimizer_soap,
            "soap block 256": optimizer_soap_blocked(256),
            "soap block 128": optimizer_soap_blocked(128), "kron": optimizer_kron}
  if KRON_BLOCK_SIZE:
    makers[f"kron block {KRON_BLOCK_SIZE}"] = lambda: optimizer_kron(block_size=KRON_BLOCK_SIZE)
  if ROWS:
    makers = {k: v for k, v in makers.items() if k in ROWS.split(",")}
  # Compiled only, never run: per-matrix work vmapped for the cost analysis (module docstring).
  matrix_work._LAPACK_PRIMITIVES = frozenset()
  for name, make in makers.items():
    tx = make()
    single = jax.jit(_step(tx)).lower(host, tx.init(host), host).compile()
    single_lapack = lapack_flops(single.as_text())
    single_flops = single.cost_analysis()["flops"]
    single_all = single_flops + sum(single_lapack.values())
    for label, (kind, shape, names) in meshes.items():
      mesh = jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))
      specs = mesh_specs(host, kind)
      params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(
          x.shape, x.dtype, sharding=NamedSharding(mesh, s)), host, specs)
      with jax.set_mesh(mesh):
        shardings = sharding.state_shardings(tx, params)
        state = jax.eval_shape(tx.init, params)
        state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                             state, shardings)
        out = (jax.tree.map(lambda p: p.sharding, params), shardings)
        executable = jax.jit(_step(tx), out_shardings=out).lower(params, state, params).compile()
      lapack = lapack_flops(executable.as_text())
      total = sum(single_lapack.values())
      ratio = sum(lapack.values()) / (total / 8) if total else float("nan")
      flops = executable.cost_analysis()["flops"]
      both = flops + sum(lapack.values())
      print(flush=True, end="")
      print(f"| {name} | {label} | {lapack['eigh'] / 1e9:.3f} | {lapack['qr'] / 1e9:.3f} | "
            f"{lapack['trsm'] / 1e9:.3f} | {ratio:.2f} | {flops / 1e9:.3f} | "
            f"{flops / (single_flops / 8):.2f} | {both / (single_all / 8):.2f} |")
    print(f"| {name} | one device | {single_lapack['eigh'] / 1e9:.3f} | "
          f"{single_lapack['qr'] / 1e9:.3f} | {single_lapack['trsm'] / 1e9:.3f} | 8 | "
          f"{single_flops / 1e9:.3f} | 8 | 8 |", flush=True)
  print()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=int, default=128)
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--mesh-width", type=int, default=256)
  parser.add_argument("--mesh-layers", type=int, default=2)
  parser.add_argument("--kron-cache", action="store_true",
                      help="part 1: also Kron with cache_preconditioner=True")
  parser.add_argument("--kron-block-size", type=int, default=None,
                      help="part 2: also Kron with this block_size")
  parser.add_argument("--only", choices=("single", "layout"), default=None,
                      help="run only part 1 (single) or part 2 (layout)")
  parser.add_argument("--rows", default=None,
                      help="comma-separated optimizer rows to run in both parts, e.g. "
                           "'kron,kron cached' (default: all; AdamW always runs in part 1)")
  parser.add_argument("--layout-only", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  global KRON_CACHE, KRON_BLOCK_SIZE, ROWS
  KRON_CACHE, KRON_BLOCK_SIZE, ROWS = args.kron_cache, args.kron_block_size, args.rows
  if args.layout_only:
    layout(args.mesh_width, args.mesh_layers)
    return
  if args.only != "layout":
    single_device(args.width, args.layers, args.repeats)
  if args.only == "single":
    return
  extra = (["--kron-block-size", str(args.kron_block_size)] if args.kron_block_size else []) + (
      ["--rows", args.rows] if args.rows else [])
  rerun_on_eight_devices(__file__, ["--layout-only", "--mesh-width", str(args.mesh_width),
                                    "--mesh-layers", str(args.mesh_layers)] + extra)


if __name__ == "__main__":
  main()
