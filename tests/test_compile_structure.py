"""What an optimizer step costs to compile, checked structurally (no timings): the jaxpr's size
against optax's on the same tree, and what tracing `update` runs besides the algorithm.

Compile time on a model of thousands of unscanned leaves grows with the equations per leaf;
`benchmarks/compile_time.py` measures the seconds. These tests catch the regressions that made
it slower before: per-leaf work added by the wrapper layer, and an abstract `init` traced inside
every `update` for the state check.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import optimkit

LEAVES = 40


def _params() -> dict:
  return {f"w{i:03d}": jax.ShapeDtypeStruct((8, 8), jnp.float32) for i in range(LEAVES)}


def _step_equations(tx: optax.GradientTransformation) -> int:
  params = _params()
  state = jax.eval_shape(tx.init, params)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return len(jax.make_jaxpr(step)(params, state, params).jaxpr.eqns)


def test_adamw_step_is_no_larger_than_optax():
  # Hyperparameters as data, the tree check and the dtype handling add a constant number of
  # scalar equations (reading the hyperparameters, a second count), none per leaf. Measured in
  # JAX's default 32-bit mode, as a float32 model runs (the suite runs in float64, where the
  # step count's bias correction is float64 and promotes each leaf's direction).
  with jax.enable_x64(False):
    ours = _step_equations(optimkit.adamw(1e-3))
    theirs = _step_equations(optax.adamw(1e-3))
  assert ours <= theirs + 16, (ours, theirs)


def test_update_does_not_trace_init_for_a_state_init_made(monkeypatch):
  # The state check compares against the state `init` recorded for these parameters; an
  # abstract `init` inside every traced `update` cost a fifth of AdamW's trace time.
  tx = optimkit.adamw(1e-3)
  params = _params()
  state = jax.eval_shape(tx.init, params)
  calls = []
  real_eval_shape = jax.eval_shape
  monkeypatch.setattr(jax, "eval_shape",
                      lambda *a, **k: calls.append(a) or real_eval_shape(*a, **k))
  jax.make_jaxpr(lambda s, g, p: tx.update(g, s, p))(state, params, params)
  assert not calls
