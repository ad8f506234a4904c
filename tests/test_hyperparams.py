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


def _leaves_named(state, name):
  return [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
          if f"'{name}'" in jax.tree_util.keystr(path)]


WRAPPERS = {
    "multi_transform": lambda tx: optax.multi_transform({"a": tx, "b": optimkit.lion(1e-4)},
                                                        {"w": "a", "b": "b"}),
    "partition": lambda tx: optax.partition({"a": tx, "b": optimkit.lion(1e-4)},
                                            {"w": "a", "b": "b"}),
    "masked": lambda tx: optax.masked(tx, {"w": True, "b": False}),
    "MultiSteps": lambda tx: optax.MultiSteps(tx, every_k_schedule=1),
    "chain": lambda tx: optax.chain(optax.clip_by_global_norm(1.0), tx),
    "skip_nonfinite": optimkit.skip_nonfinite,
}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_set_hyperparams_reaches_through_optax_wrappers(wrapper):
  tx = WRAPPERS[wrapper](optimkit.adamw(1e-3))
  params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
  state = optimkit.set_hyperparams(tx.init(params), learning_rate=0.25)
  values = _leaves_named(state, "learning_rate")
  assert values and all(float(v) == 0.25 for v in values)
  # ... and the step uses it: an SGD-like first Adam step moves each coordinate by ~lr.
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  assert float(jnp.max(jnp.abs(updates["w"]))) == pytest.approx(0.25 * (1 + 1e-4), rel=1e-3)


def test_set_hyperparams_on_a_flax_nnx_state():
  from flax import nnx

  class Model(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.ones((3, 2)))

  optimizer = nnx.Optimizer(Model(), optimkit.adamw(1e-3), wrt=nnx.Param)
  state = nnx.state(optimizer, nnx.optimizer.OptState)
  changed = optimkit.set_hyperparams(state, learning_rate=0.5)
  nnx.update(optimizer, changed)
  assert float(optimkit.get_hyperparams(nnx.state(optimizer, nnx.optimizer.OptState))
               ["learning_rate"]) == 0.5


def test_set_hyperparams_refuses_a_value_a_schedule_owns():
  tx = optimkit.adamw(optax.linear_schedule(1e-3, 0.0, 100))
  state = tx.init({"w": jnp.ones(2)})
  with pytest.raises(ValueError, match="learning_rate .* follows a schedule"):
    optimkit.set_hyperparams(state, learning_rate=0.1)
  # the other hyperparameters are still settable
  assert float(optimkit.set_hyperparams(state, b1=0.5).hyperparams["b1"]) == 0.5


def test_set_hyperparams_refuses_optax_inject_hyperparams_schedules_too():
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=optax.linear_schedule(1e-3, 0, 10))
  state = tx.init({"w": jnp.ones(2)})
  with pytest.raises(ValueError, match="follows a schedule"):
    optimkit.set_hyperparams(state, learning_rate=0.1)
  assert float(optimkit.set_hyperparams(state, b1=0.5).hyperparams["b1"]) == 0.5


def test_set_hyperparams_on_a_plain_optax_state_says_why():
  state = optax.adam(1e-3).init({"w": jnp.ones(2)})
  with pytest.raises(ValueError, match="holds no hyperparameters.*optax.inject_hyperparams"):
    optimkit.set_hyperparams(state, learning_rate=0.1)


def test_optax_inject_hyperparams_values_win_and_stay_in_its_state():
  """optax's wrapper owns the values it passes: they drive the step and live in its state (the
  optimkit optimizer inside keeps no stale copy of them)."""
  tx = optax.inject_hyperparams(optimkit.lion)(learning_rate=optax.linear_schedule(1e-3, 0, 4))
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  step = jax.jit(tx.update)
  sizes = []
  for _ in range(5):
    updates, state = step({"w": jnp.ones(3)}, state, params)
    sizes.append(float(jnp.abs(updates["w"][0])))
  np.testing.assert_allclose(sizes, [1e-3, 7.5e-4, 5e-4, 2.5e-4, 0.0], atol=1e-9)
  assert "learning_rate" not in state.inner_state.hyperparams


def test_integer_hyperparameter_handed_in_as_an_array():
  """optax.inject_hyperparams hands decay_offset in as an int32 array (it used to raise)."""
  tx = optax.inject_hyperparams(optimkit.adafactor)(learning_rate=1e-2, decay_offset=3)
  params = {"w": jnp.ones((4, 3))}
  updates, _ = jax.jit(tx.update)({"w": jnp.ones((4, 3))}, tx.init(params), params)
  assert np.isfinite(np.asarray(updates["w"])).all()


def test_structural_argument_traced_by_a_wrapper_says_to_use_static_args():
  tx = optax.inject_hyperparams(optimkit.adafactor)(min_dim_size_to_factor=2)
  params = {"w": jnp.ones((4, 3))}
  with pytest.raises(ValueError, match="min_dim_size_to_factor .* static_args"):
    jax.jit(tx.update)({"w": jnp.ones((4, 3))}, tx.init(params), params)
  fixed = optax.inject_hyperparams(optimkit.adafactor, static_args=("min_dim_size_to_factor",))
  tx = fixed(min_dim_size_to_factor=2)
  jax.jit(tx.update)({"w": jnp.ones((4, 3))}, tx.init(params), params)
