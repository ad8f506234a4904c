"""Shared by the benchmarks: a concrete transformer-shaped tree, and a donated, jitted optimizer
step timed as a training loop runs it (median over repeats, after compilation)."""

from __future__ import annotations

import platform
import statistics
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
