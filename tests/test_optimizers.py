"""Every full optimizer: convergence (quadratic, Rosenbrock), dtypes, awkward pytrees, jit and
vmap, inside optax.chain with clipping, and bad hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optimkit

# name -> (factory with a learning rate that converges on the test problems, needs loss_fn)
OPTIMIZERS = {
    "sgd": lambda **kw: optimkit.sgd(0.05, momentum=0.9, **kw),
    "sgd_nesterov": lambda **kw: optimkit.sgd(0.05, momentum=0.9, nesterov=True, **kw),
    "adagrad": lambda **kw: optimkit.adagrad(0.5, **kw),
    "rmsprop": lambda **kw: optimkit.rmsprop(0.01, **kw),
    "adam": lambda **kw: optimkit.adam(0.05, **kw),
    "adamw": lambda **kw: optimkit.adamw(0.05, weight_decay=1e-4, **kw),
    "lion": lambda **kw: optimkit.lion(0.01, weight_decay=0.0, **kw),
    "adafactor": lambda **kw: optimkit.adafactor(0.1, min_dim_size_to_factor=1, **kw),
    "lamb": lambda **kw: optimkit.lamb(0.05, **kw),
    "lars": lambda **kw: optimkit.lars(optax.cosine_decay_schedule(1.0, 400), trust_coefficient=0.1, **kw),
    "sophia": lambda **kw: optimkit.sophia(0.05, estimator="hutchinson", gamma=1.0,
                                      weight_decay=0.0, seed=0, update_interval=1, **kw),
    "schedule_free_adamw": lambda **kw: optimkit.schedule_free_adamw(0.05, **kw),
    "schedule_free_sgd": lambda **kw: optimkit.schedule_free_sgd(0.05, **kw),
    "stable_adamw": lambda **kw: optimkit.stable_adamw(0.05, weight_decay=1e-4, **kw),
    "adan": lambda **kw: optimkit.adan(0.05, weight_decay=1e-4, **kw),
    "radam": lambda **kw: optimkit.radam(0.05, **kw),
    "ranger": lambda **kw: optimkit.ranger(0.05, **kw),
    "adam_mini": lambda **kw: optimkit.adam_mini(0.05, **kw),
    "adams": lambda **kw: optimkit.adams(0.05, weight_decay=0.0, **kw),
}


def _train(tx, loss_fn, params, steps):
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    grads = jax.grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, loss_fn=loss_fn)
    return optax.apply_updates(params, updates), state

  for _ in range(steps):
    params, state = step(params, state)
  return params, state


def _quadratic(params):
  scales = jnp.asarray([1.0, 3.0, 10.0])
  return 0.5 * jnp.sum(scales * (params["x"] - 1.0) ** 2) + 0.5 * jnp.sum(params["m"] ** 2)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_converges_on_a_quadratic(name):
  params = {"x": jnp.zeros(3), "m": jnp.ones((3, 2))}
  start = float(_quadratic(params))
  params, state = _train(OPTIMIZERS[name](), _quadratic, params, 400)
  if name.startswith("schedule_free"):
    params = optimkit.schedule_free_eval_params(state, params)
  assert float(_quadratic(params)) < 1e-2 * start


def _rosenbrock(params):
  x, y = params["xy"][0], params["xy"][1]
  return (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2


ROSENBROCK = {
    "sgd": lambda **kw: optimkit.sgd(1e-3, momentum=0.9, **kw),
    "sgd_nesterov": lambda **kw: optimkit.sgd(1e-3, momentum=0.9, nesterov=True, **kw),
    "adagrad": lambda **kw: optimkit.adagrad(0.3, **kw),
    "rmsprop": lambda **kw: optimkit.rmsprop(3e-3, **kw),
    "adam": lambda **kw: optimkit.adam(0.02, **kw),
    "adamw": lambda **kw: optimkit.adamw(0.02, weight_decay=0.0, **kw),
    "lion": lambda **kw: optimkit.lion(optax.cosine_decay_schedule(0.01, 3000, 0.01), weight_decay=0.0, **kw),
    "adafactor": lambda **kw: optimkit.adafactor(0.05, momentum=0.9, **kw),
    "lamb": lambda **kw: optimkit.lamb(0.01, **kw),
    "lars": lambda **kw: optimkit.lars(optax.cosine_decay_schedule(0.5, 3000), trust_coefficient=0.05, **kw),
    "sophia": lambda **kw: optimkit.sophia(optax.cosine_decay_schedule(0.1, 3000, 0.01),
                                      estimator="hutchinson", gamma=0.05, weight_decay=0.0,
                                      seed=0, update_interval=1, b1=0.9, **kw),
    "schedule_free_adamw": lambda **kw: optimkit.schedule_free_adamw(0.02, **kw),
    "schedule_free_sgd": lambda **kw: optimkit.schedule_free_sgd(1e-3, **kw),
    "stable_adamw": lambda **kw: optimkit.stable_adamw(0.02, weight_decay=0.0, **kw),
    "adan": lambda **kw: optimkit.adan(0.02, weight_decay=0.0, **kw),
    # RAdam's first steps are plain momentum SGD on |g| ~ 400: warm the rate up (as its users do).
    "radam": lambda **kw: optimkit.radam(optax.warmup_cosine_decay_schedule(0.0, 0.02, 100, 3000), **kw),
    "ranger": lambda **kw: optimkit.ranger(optax.warmup_cosine_decay_schedule(0.0, 0.02, 100, 3000), **kw),
    "adam_mini": lambda **kw: optimkit.adam_mini(0.02, **kw),
    "adams": lambda **kw: optimkit.adams(optax.cosine_decay_schedule(0.02, 3000, 0.01),
                                    weight_decay=0.0, **kw),
}


@pytest.mark.parametrize("name", sorted(ROSENBROCK))
def test_makes_progress_on_rosenbrock(name):
  params = {"xy": jnp.asarray([-1.0, 1.0])}
  start = float(_rosenbrock(params))  # 4.0
  params, state = _train(ROSENBROCK[name](), _rosenbrock, params, 3000)
  if name.startswith("schedule_free"):
    params = optimkit.schedule_free_eval_params(state, params)
  assert float(_rosenbrock(params)) < 0.05 * start


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float64])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_dtypes_are_preserved(name, dtype):
  params = {"w": jnp.ones((4, 3), dtype), "b": jnp.full((3,), 0.5, dtype)}
  loss_fn = lambda p: jnp.sum(p["w"].astype(jnp.float32) ** 2) + jnp.sum(
      p["b"].astype(jnp.float32) ** 2)
  tx = OPTIMIZERS[name]()
  state = tx.init(params)
  grads = jax.grad(loss_fn)(params)
  updates, state = jax.jit(lambda g, s, p: tx.update(g, s, p, loss_fn=loss_fn))(
      grads, state, params)
  for update, param in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
    assert update.dtype == param.dtype
    assert bool(jnp.all(jnp.isfinite(update.astype(jnp.float32))))
  new_params = optax.apply_updates(params, updates)
  assert jax.tree.map(lambda p: p.dtype, new_params) == jax.tree.map(lambda p: p.dtype, params)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_awkward_pytrees(name):
  """Empty subtrees, None, scalars, zero-size arrays, tuples and lists in one tree."""
  params = {"empty": {}, "none": None, "scalar": jnp.asarray(1.5), "zero": jnp.zeros((0, 3)),
            "pair": (jnp.ones(2), [jnp.ones((2, 2))]), "rank3": jnp.ones((2, 2, 2))}
  loss_fn = lambda p: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))
  tx = OPTIMIZERS[name]()
  state = tx.init(params)
  for _ in range(3):
    grads = jax.grad(loss_fn)(params)
    updates, state = jax.jit(lambda g, s, p: tx.update(g, s, p, loss_fn=loss_fn))(
        grads, state, params)
    params = optax.apply_updates(params, updates)
  assert jax.tree.structure(updates) == jax.tree.structure(grads)
  assert params["zero"].shape == (0, 3)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_vmap_over_independent_problems_matches_a_loop(name):
  loss_fn = lambda p: jnp.sum((p["x"] - 2.0) ** 2 * jnp.arange(1.0, 4.0))
  tx = OPTIMIZERS[name]()
  starts = jnp.stack([jnp.zeros(3), jnp.ones(3), -jnp.ones(3)])

  def run(x0):
    params = {"x": x0}
    state = tx.init(params)
    for _ in range(3):
      updates, state = tx.update(jax.grad(loss_fn)(params), state, params, loss_fn=loss_fn)
      params = optax.apply_updates(params, updates)
    return params["x"]

  batched = jax.jit(jax.vmap(run))(starts)
  looped = jnp.stack([run(x0) for x0 in starts])
  np.testing.assert_allclose(batched, looped, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_inside_chain_with_global_norm_clipping(name):
  tx = optax.chain(optax.clip_by_global_norm(1.0), OPTIMIZERS[name]())
  params = {"x": jnp.zeros(3), "m": jnp.ones((3, 2))}
  start = float(_quadratic(params))
  params, state = _train(tx, _quadratic, params, 300)
  if name.startswith("schedule_free"):
    params = optimkit.schedule_free_eval_params(state, params)
  assert float(_quadratic(params)) < 0.1 * start


def test_weight_decay_mask_excludes_biases_and_norm_scales():
  params = {"dense": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)},
            "norm": {"scale": jnp.ones(3)}, "stacked_norm": {"scale": jnp.ones((2, 3))},
            "embedding": jnp.ones((5, 3))}
  mask = optimkit.weight_decay_mask(params)
  assert mask == {"dense": {"kernel": True, "bias": False}, "norm": {"scale": False},
                  "stacked_norm": {"scale": False}, "embedding": True}
  tx = optimkit.adamw(0.0, weight_decay=0.5, mask=optimkit.weight_decay_mask)
  zeros = jax.tree.map(jnp.zeros_like, params)
  # lr 0 moves nothing; check the decayed direction instead with lr 1 and zero grads.
  tx = optimkit.adamw(1.0, weight_decay=0.5, mask=optimkit.weight_decay_mask)
  updates, _ = tx.update(zeros, tx.init(params), params)
  assert float(jnp.max(jnp.abs(updates["dense"]["bias"]))) == 0.0
  assert float(jnp.max(jnp.abs(updates["norm"]["scale"]))) == 0.0
  np.testing.assert_allclose(updates["dense"]["kernel"], -0.5 * jnp.ones((3, 3)))


# Bad inputs (hyperparameters, trees, states, specs, checkpoints): tests/test_bad_inputs.py.
