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


def _give_up_problem(donate):
  tx = optimkit.skip_nonfinite(optimkit.adamw(1e-2), max_consecutive_skips=3)
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}

  def step(params, state, poison):
    grads = jax.tree.map(lambda g: g + poison, jax.grad(_loss)(params))
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return tx, params, jax.jit(step, donate_argnums=(0, 1) if donate else ())


def _host_copy(tree):
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def _assert_tree_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("donate", [False, True], ids=["plain", "donated"])
def test_give_up_raises_its_own_error_and_leaves_the_last_good_params_and_state(donate):
  """The 3rd bad step in a row returns normally (a skip: the last good params and state); the
  next call raises NonFiniteStepsError before running, so under donation too the user holds
  valid arrays equal to the bit to those after the last good step, and can go on from them."""
  tx, params, step = _give_up_problem(donate)
  state = tx.init(params)
  for poison in (0.0, 0.0, jnp.nan, jnp.nan, 0.0):  # two bad steps, then a good one resets
    params, state = step(params, state, poison)
  good_params, good_state = _host_copy(params), _host_copy(state)
  assert int(state.consecutive_skips) == 0 and int(state.skipped_steps) == 2
  for poison in (jnp.inf, jnp.nan, jnp.nan):  # the third one gives up, and still returns
    params, state = step(params, state, poison)
  assert int(state.consecutive_skips) == 3 and int(state.skipped_steps) == 5

  with pytest.raises(optimkit.NonFiniteStepsError) as raised:
    step(params, state, 0.0)
  error = raised.value
  assert isinstance(error, FloatingPointError)
  assert "skip_nonfinite: 3 consecutive steps had non-finite gradients or updates" in str(error)
  assert "max_consecutive_skips=3, 5 skipped in all" in str(error)
  assert "This call did not run" in str(error)
  assert (error.consecutive_skips, error.max_consecutive_skips, error.skipped_steps) == (3, 3, 5)

  # What remains valid: the last call's outputs, not deleted, equal to the last good ones.
  assert not any(leaf.is_deleted() for leaf in jax.tree.leaves((params, state)))
  _assert_tree_equal(_host_copy(params), good_params)
  _assert_tree_equal(_host_copy(state.inner_state), good_state.inner_state)

  # Going on from them: reset the counter (as the docstring says) and train.
  state = optax.tree_utils.tree_set(state, consecutive_skips=jnp.zeros([], jnp.int32))
  params, state = step(params, state, 0.0)
  assert int(state.consecutive_skips) == 0 and int(state.skipped_steps) == 5
  assert not np.array_equal(params["w"], good_params["w"])
  assert _state_finite(state) and _state_finite(params)


def test_give_up_in_eager_updates_raises_at_the_next_update():
  tx = optimkit.skip_nonfinite(optimkit.sgd(0.1), max_consecutive_skips=2)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  nan = {"w": jnp.full(3, jnp.nan)}
  for _ in range(2):
    updates, state = tx.update(nan, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(params["w"], np.ones(3))
  with pytest.raises(optimkit.NonFiniteStepsError, match="2 consecutive steps"):
    tx.update({"w": jnp.ones(3)}, state, params)
  updates, _ = tx.update({"w": jnp.ones(3)}, state, params)  # raised once; still latched
  np.testing.assert_array_equal(updates["w"], np.zeros(3))


def test_after_giving_up_every_step_is_skipped_until_the_counter_is_reset():
  """Steps that run after the give-up (dispatched before the host heard of it, or a step
  compiled ahead of time, which is never traced again and so cannot raise) change nothing,
  even with finite gradients."""
  tx, params, step = _give_up_problem(donate=True)
  state = tx.init(params)
  compiled = step.lower(params, state, 0.0).compile()
  params, state = compiled(params, state, 0.0)
  good_params, good_state = _host_copy(params), _host_copy(state)
  for poison in (jnp.nan, jnp.nan, jnp.nan, 0.0, 0.0, 0.0):
    params, state = compiled(params, state, poison)
  assert int(state.consecutive_skips) == 6 and int(state.skipped_steps) == 6
  _assert_tree_equal(_host_copy(params), good_params)
  _assert_tree_equal(_host_copy(state.inner_state), good_state.inner_state)
  with pytest.raises(optimkit.NonFiniteStepsError, match="3 consecutive steps"):
    step(params, state, 0.0)  # the jitted (traced) step still reports the give-up


def test_give_up_inside_a_scanned_loop_raises_at_the_next_call():
  tx = optimkit.skip_nonfinite(optimkit.adamw(1e-2), max_consecutive_skips=2)
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}

  @jax.jit
  def steps(params, state, poisons):
    def body(carry, poison):
      params, state = carry
      grads = jax.tree.map(lambda g: g + poison, jax.grad(_loss)(params))
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None
    return jax.lax.scan(body, (params, state), poisons)[0]

  state = tx.init(params)
  params, state = steps(params, state, jnp.zeros(2))
  good_params = _host_copy(params)
  params, state = steps(params, state, jnp.asarray([jnp.nan, jnp.inf, 0.0, 0.0]))
  assert int(state.consecutive_skips) == 4
  _assert_tree_equal(_host_copy(params), good_params)
  with pytest.raises(optimkit.NonFiniteStepsError, match="2 consecutive steps"):
    steps(params, state, jnp.zeros(2))


def test_max_consecutive_skips_is_validated():
  with pytest.raises(ValueError, match="max_consecutive_skips must be an integer >= 1"):
    optimkit.skip_nonfinite(optimkit.sgd(0.1), max_consecutive_skips=0)


def _mlp_problem():
  rng = np.random.default_rng(0)
  params = {"hidden": {"w": jnp.asarray(rng.normal(size=(8, 16)) * 0.3, jnp.float32),
                       "b": jnp.zeros(16, jnp.float32)},
            "out": {"w": jnp.asarray(rng.normal(size=(16, 1)) * 0.3, jnp.float32),
                    "b": jnp.zeros(1, jnp.float32)}}
  inputs = rng.normal(size=(30, 32, 8)).astype(np.float32)  # 30 batches of 32
  targets = np.sin(inputs.sum(-1, keepdims=True)).astype(np.float32)

  def loss_fn(params, x, y):
    hidden = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return jnp.mean((hidden @ params["out"]["w"] + params["out"]["b"] - y) ** 2)

  return params, inputs, targets, loss_fn


POISONED = {5: np.nan, 11: np.inf, 12: -np.inf, 20: np.nan}  # batch index -> injected value


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_loop_with_poisoned_batches_equals_the_loop_without_them(name):
  """NaN/Inf injected into the inputs of chosen batches of a real training loop (an MLP, 30
  steps): with `skip_nonfinite` the run ends bit-identical to a run that never saw those
  batches, with the skips counted."""
  params, inputs, targets, loss_fn = _mlp_problem()
  tx = optimkit.skip_nonfinite(OPTIMIZERS[name]())

  @jax.jit
  def step(params, state, x, y):
    batch_loss = lambda p: loss_fn(p, x, y)
    grads = jax.grad(batch_loss)(params)
    updates, state = tx.update(grads, state, params, loss_fn=batch_loss)
    return optax.apply_updates(params, updates), state

  def train(batch_indices, poison):
    p, s = params, tx.init(params)
    for i in batch_indices:
      x = inputs[i].copy()
      if i in poison:
        x[3, 2] = poison[i]  # one element of one example
      p, s = step(p, s, x, targets[i])
    return p, s

  poisoned_params, poisoned_state = train(range(len(inputs)), POISONED)
  clean_params, clean_state = train([i for i in range(len(inputs)) if i not in POISONED], {})
  assert int(poisoned_state.skipped_steps) == len(POISONED)
  assert int(clean_state.skipped_steps) == 0
  for a, b in zip(jax.tree.leaves(poisoned_params), jax.tree.leaves(clean_params)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(poisoned_state.inner_state),
                  jax.tree.leaves(clean_state.inner_state)):
    np.testing.assert_array_equal(a, b)
  assert _state_finite(poisoned_params)


def test_compare_reports_skipped_steps():
  params, inputs, targets, loss_fn = _mlp_problem()
  batches = [(inputs[i].copy(), targets[i]) for i in range(12)]
  batches[4][0][0, 0] = np.nan
  batches[9][0][1, 1] = np.inf
  rows = optimkit.compare(lambda p, b: loss_fn(p, *b), params, batches,
                          {"adamw": optimkit.adamw(1e-2), "lion": optimkit.lion(1e-3)},
                          eval_every=4, show_progress=False)
  assert [row["skipped_steps"] for row in rows] == [2, 2]
  assert all(np.isfinite(row["final_loss"]) for row in rows)
