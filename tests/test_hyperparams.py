"""Hyperparameters as data: changing learning rate, betas and weight decay between steps of a
jitted loop takes effect and compiles nothing new; bfloat16 params keep float32 hyperparams."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optimkit

CHANGES = {
    "adamw": dict(learning_rate=3e-4, b1=0.5, b2=0.9, weight_decay=0.3),
    "lion": dict(learning_rate=3e-4, b1=0.5, b2=0.9, weight_decay=0.3),
    "sgd": dict(learning_rate=3e-4, momentum=0.5, weight_decay=0.3),
    "adafactor": dict(learning_rate=3e-4, decay_rate=0.5, weight_decay=0.3),
    "lamb": dict(learning_rate=3e-4, b1=0.5, b2=0.9, weight_decay=0.3),
    "schedule_free_adamw": dict(learning_rate=3e-4, b1=0.5, weight_decay=0.3),
}
MAKERS = {
    "adamw": lambda: optimkit.adamw(1e-3),
    "lion": lambda: optimkit.lion(1e-3),
    "sgd": lambda: optimkit.sgd(1e-3, momentum=0.9),
    "adafactor": lambda: optimkit.adafactor(1e-3),
    "lamb": lambda: optimkit.lamb(1e-3),
    "schedule_free_adamw": lambda: optimkit.schedule_free_adamw(1e-3),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_changing_hyperparameters_does_not_recompile(name):
  tx = MAKERS[name]()
  params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(1)  # runs only when JAX traces (compiles) the step
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  rng = np.random.default_rng(0)
  random_grads = lambda: jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
  state = tx.init(params)
  for _ in range(3):  # some history, so that the betas matter
    params, state = step(params, state, random_grads())
  grads, next_grads = random_grads(), random_grads()
  two_steps = lambda state: step(*step(params, state, grads), next_grads)[0]
  params_a = two_steps(state)
  for hyperparam, value in CHANGES[name].items():
    # Two steps: some hyperparameters (Lion's b2) act only on the state for the next step.
    params_b = two_steps(optimkit.set_hyperparams(state, **{hyperparam: value}))
    # The change takes effect: the step differs from the unchanged one...
    assert not np.allclose(params_a["w"], params_b["w"]), hyperparam
  # ...and the step was compiled once.
  assert len(traces) == 1


def test_schedule_is_evaluated_per_step_and_recorded():
  schedule = optax.linear_schedule(1.0, 0.0, 10)
  tx = optimkit.sgd(schedule)
  params = {"w": jnp.zeros(2)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  seen = []
  for _ in range(4):
    updates, state = update({"w": jnp.ones(2)}, state, params)
    seen.append(float(-updates["w"][0]))
  np.testing.assert_allclose(seen, [1.0, 0.9, 0.8, 0.7], rtol=1e-6)


def test_bfloat16_params_keep_float32_hyperparameters():
  """optax.inject_hyperparams would store b2=0.999 as bfloat16 (= 1.0); we do not."""
  params = {"w": jnp.ones(4, jnp.bfloat16)}
  state = optimkit.adamw(1e-3).init(params)
  assert state.hyperparams["b2"].dtype == jnp.float32
  assert float(state.hyperparams["b2"]) == pytest.approx(0.999, rel=1e-7)
  theirs = optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3).init(params)
  assert float(theirs.hyperparams["b2"]) == 1.0


def test_set_hyperparams_reaches_inside_wrappers_and_rejects_unknown_names():
  tx = optimkit.skip_nonfinite(optimkit.adamw(1e-3))
  state = tx.init({"w": jnp.ones(2)})
  state = optimkit.set_hyperparams(state, learning_rate=0.5)
  assert float(state.inner_state.hyperparams["learning_rate"]) == 0.5
  with pytest.raises(ValueError, match="'momentum'.* are not hyperparameters"):
    optimkit.set_hyperparams(state, momentum=0.1)
