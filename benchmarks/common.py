"""Shared by the benchmarks: a concrete transformer-shaped tree, and a donated, jitted optimizer
step timed as a training loop runs it (median over repeats, after compilation)."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from optimkit.memory import param_count, transformer_shaped_params


def concrete_tree(total_params: float, seed: int = 0) -> Any:
  """Random float32 arrays with the shapes of `transformer_shaped_params(total_params)`."""
  abstract = transformer_shaped_params(total_params, vocab_size=8192)
  leaves, treedef = jax.tree.flatten(abstract)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten([0.02 * jax.random.normal(k, leaf.shape, leaf.dtype)
                            for k, leaf in zip(keys, leaves)])


def time_step(tx: optax.GradientTransformation, params: Any, grads: Any, repeats: int = 10,
              extra_args: Callable[[], dict] | None = None) -> tuple[float, float]:
  """(median seconds per step, compile seconds) of `params, state <- step(params, state)`, with
  params and state donated as a real training step would."""
  state = tx.init(params)
  extra = extra_args() if extra_args else {}

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state

  jitted = jax.jit(step, donate_argnums=(0, 1))
  params, state = jax.tree.map(jnp.copy, (params, state))
  start = time.perf_counter()
  compiled = jitted.lower(params, state, grads).compile()
  compile_seconds = time.perf_counter() - start
  params, state = compiled(params, state, grads)  # warm-up
  jax.block_until_ready(params)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    params, state = compiled(params, state, grads)
    jax.block_until_ready((params, state))
    times.append(time.perf_counter() - start)
  return statistics.median(times), compile_seconds


def time_in_place(fn: Callable[..., Any], args: tuple, donated: int | None,
                  repeats: int) -> float:
  """Median seconds of jitted `fn(*args)` over `repeats` calls after a compiling one; the
  output replaces args[donated] (donated) each call, so the pass runs in place."""
  jitted = jax.jit(fn, donate_argnums=() if donated is None else (donated,))
  args = jax.tree.map(jnp.copy, args)
  times = []
  for _ in range(repeats + 1):
    start = time.perf_counter()
    out = jax.block_until_ready(jitted(*args))
    times.append(time.perf_counter() - start)
    if donated is not None:
      args = args[:donated] + (out,) + args[donated + 1:]
  return statistics.median(times[1:])


def machine() -> str:
  return (f"{platform.machine()} {platform.processor() or ''} cpus={len(jax.devices())}x"
          f"{jax.devices()[0].platform} jax {jax.__version__} optax {optax.__version__}").strip()


def describe(params: Any) -> str:
  return f"{param_count(params) / 1e6:.1f}M params in {len(jax.tree.leaves(params))} leaves"


# ----------------------------------------------------------------------------------------------
# Bytes a compiled SPMD program moves between devices, read from its HLO.

_ITEMSIZE = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s64": 8, "u64": 8, "s32": 4, "u32": 4,
             "s16": 2, "u16": 2, "s8": 1, "u8": 1, "pred": 1}
_COLLECTIVE = re.compile(r"^(.*?)\s(all-gather|all-to-all|all-reduce|reduce-scatter|"
                         r"collective-permute)(-start)?\(")
_SHAPE = re.compile(r"\b(" + "|".join(_ITEMSIZE) + r")\[([\d,]*)\]")


def _shapes_bytes(text: str) -> int:
  return sum(math.prod(int(d) for d in dims.split(",") if d) * _ITEMSIZE[dtype]
             for dtype, dims in _SHAPE.findall(text))


def _group_size(line: str, devices: int) -> int:
  """Devices per replica group of a collective, from any of XLA's three spellings."""
  explicit = re.search(r"replica_groups=\{\{([\d,]*)\}", line)
  if explicit:
    return len(explicit.group(1).split(","))
  named = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)
  if named:
    sizes = {k: int(v) for k, v in re.findall(r"'([^']+)'=(\d+)", named.group(1))}
    return math.prod(sizes[n.strip().strip("'")] for n in named.group(2).split(",") if n.strip())
  iota = re.search(r"replica_groups=\[([\d,]+)\]<=", line)
  if iota:
    return int(iota.group(1).split(",")[-1])
  return devices


def collective_bytes(hlo: str, devices: int) -> dict[str, float]:
  """Bytes each device receives per run of a compiled (partitioned, per-device) HLO module, by
  collective kind, counted as the usual ring/pairwise algorithms move them: all-gather and
  all-to-all (g - 1) / g of their result, all-reduce 2 (g - 1) / g of its buffer, reduce-scatter
  (g - 1) times its result, collective-permute its result; g is the replica group's size."""
  moved: dict[str, float] = {}
  for line in hlo.splitlines():
    if " = " not in line:
      continue
    match = _COLLECTIVE.match(line.split(" = ", 1)[1])
    if not match:
      continue
    kind, size, group = match.group(2), _shapes_bytes(match.group(1)), _group_size(line, devices)
    share = {"all-gather": (group - 1) / group, "all-to-all": (group - 1) / group,
             "all-reduce": 2 * (group - 1) / group, "reduce-scatter": group - 1,
             "collective-permute": 1.0}[kind]
    moved[kind] = moved.get(kind, 0.0) + size * share
  return moved


def rerun_on_eight_devices(script: str, arguments: list[str]) -> None:
  """Runs `script` again in a fresh process with 8 simulated CPU devices (the device count is
  fixed when JAX starts), printing its output; exits with its code when it fails."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  result = subprocess.run([sys.executable, os.path.abspath(script), *arguments], env=env,
                          capture_output=True, text=True)
  print(result.stdout, end="")
  if result.returncode:
    print(result.stderr[-4000:], file=sys.stderr)
    sys.exit(result.returncode)


# glibc settings under which freed memory stays in the process heap: XLA's CPU runtime allocates
# a step's temporaries (and copies) afresh each step, and by default glibc maps every block above
# 128 KiB (adaptively up to 32 MiB) with mmap and unmaps it when freed, so each params-sized
# temporary is page-faulted and zero-filled by the kernel on every step: on this machine that,
# not the bytes the step moves, is most of the time of a step with temporaries. XLA's GPU and
# TPU allocators pool device memory, so the pooled heap is the CPU measurement that predicts
# them; jemalloc or tcmalloc (LD_PRELOAD) have the same effect.
POOLED_HEAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "2147483647", "MALLOC_TRIM_THRESHOLD_": "4294967295",
                   "MALLOC_TOP_PAD_": "536870912"}


def pooled_heap() -> bool:
  """Whether this process runs with `POOLED_HEAP_ENV` (glibc reads it at start only)."""
  return all(os.environ.get(k) == v for k, v in POOLED_HEAP_ENV.items())


def rerun_with_pooled_heap(script: str, arguments: list[str]) -> None:
  """Runs `script` again in a fresh process with `POOLED_HEAP_ENV`, printing its output; exits
  with its code when it fails."""
  env = dict(os.environ, **POOLED_HEAP_ENV)
  result = subprocess.run([sys.executable, os.path.abspath(script), *arguments], env=env)
  sys.exit(result.returncode)
