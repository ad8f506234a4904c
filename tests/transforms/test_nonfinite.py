"""Non-finite gradients: without protection every optimizer's state is poisoned; with
`skip_nonfinite` the step changes nothing (bit-identical params and state) and is counted."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optimkit
from tests.test_optimizers import OPTIMIZERS


def _loss(params):
  return jnp.sum((params["w"] - 1.0) ** 2) + jnp.sum(params["b"] ** 2)


def _state_finite(state):
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state)
             if jnp.issubdtype(x.dtype, jnp.inexact))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_nan_gradient_poisons_unprotected_state(name):
  """The documented behaviour: a NaN gradient propagates into the state (or the params)."""
  tx = OPTIMIZERS[name]()
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
  state = tx.init(params)
  grads = jax.grad(_loss)(params)
  grads["w"] = grads["w"].at[0, 0].set(jnp.nan)
  updates, state = tx.update(grads, state, params, loss_fn=_loss)
  new_params = optax.apply_updates(params, updates)
  assert not (_state_finite(state) and _state_finite(new_params))


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_skip_nonfinite_leaves_params_and_state_bit_identical(name, bad):
  tx = optimkit.skip_nonfinite(OPTIMIZERS[name]())
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
  state = tx.init(params)

  @jax.jit
  def step(params, state, poison):
    grads = jax.grad(_loss)(params)
    grads["w"] = grads["w"].at[1, 1].add(poison)
    updates, state = tx.update(grads, state, params, loss_fn=_loss)
    return optax.apply_updates(params, updates), state

  for _ in range(3):
    params, state = step(params, state, 0.0)
  before_params, before_state = params, state
  params, state = step(params, state, bad)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(before_params)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(state.inner_state), jax.tree.leaves(before_state.inner_state)):
    np.testing.assert_array_equal(a, b)
  assert int(state.skipped_steps) == 1 and int(state.consecutive_skips) == 1
  params, state = step(params, state, 0.0)  # training resumes
  assert int(state.skipped_steps) == 1 and int(state.consecutive_skips) == 0
  assert _state_finite(state) and _state_finite(params)
  assert not np.array_equal(params["w"], before_params["w"])


def test_gives_up_after_max_consecutive_skips_with_a_clear_error():
  tx = optimkit.skip_nonfinite(optimkit.adamw(1e-2), max_consecutive_skips=3)
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
  state = tx.init(params)

  @jax.jit
  def step(params, state, poison):
    grads = jax.tree.map(lambda g: g + poison, jax.grad(_loss)(params))
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  # Two bad steps, a good one (the count resets), two more bad ones: still running.
  for poison in (jnp.nan, jnp.nan, 0.0, jnp.inf, jnp.nan):
    params, state = step(params, state, poison)
  jax.block_until_ready(params)
  assert int(state.consecutive_skips) == 2 and int(state.skipped_steps) == 4
  with pytest.raises(Exception, match="3 consecutive steps had non-finite gradients"):
    params, state = step(params, state, jnp.nan)
    jax.block_until_ready(params)


def test_max_consecutive_skips_is_validated():
  with pytest.raises(ValueError, match="max_consecutive_skips must be an integer >= 1"):
    optimkit.skip_nonfinite(optimkit.sgd(0.1), max_consecutive_skips=0)
