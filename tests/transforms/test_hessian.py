"""Sophia against the authors' SophiaG (sophia-opt), driven with the same sampled labels, on a
small softmax model with a rank-3 leaf, a vector and a scalar; the Hutchinson estimator; keys."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import optimkit
from optimkit.transforms.hessian import sample_labels
from tests.parity import assert_parity

DIM, VOCAB, BATCH, STEPS, INTERVAL = 4, 6, 16, 120, 10


def _init_params(rng):
  return {"stack": rng.normal(size=(2, DIM, DIM)) * 0.5, "w": rng.normal(size=(DIM, VOCAB)),
          "b": rng.normal(size=(VOCAB,)) * 0.1, "temperature": np.asarray(1.0)}


def _logits_jax(params, x):
  h = jnp.tanh(x @ params["stack"][0]) @ params["stack"][1]
  return params["temperature"] * (h @ params["w"]) + params["b"]


def _logits_torch(params, x):
  h = torch.tanh(x @ params["stack"][0]) @ params["stack"][1]
  return params["temperature"] * (h @ params["w"]) + params["b"]


def _data(rng):
  xs = rng.normal(size=(STEPS, BATCH, DIM))
  ys = rng.integers(0, VOCAB, size=(STEPS, BATCH))
  return xs, ys


def test_sophia_g_matches_authors_sophiag():
  from sophia_opt import SophiaG

  rng = np.random.default_rng(8)
  init, (xs, ys) = _init_params(rng), _data(rng)
  lr, wd, rho, betas = 0.02, 0.1, 0.04, (0.965, 0.99)

  # optimkit, with the caller's key each step.
  tx = optimkit.sophia(lr, b1=betas[0], b2=betas[1], gamma=rho, weight_decay=wd,
                       update_interval=INTERVAL)
  params = {k: jnp.asarray(v) for k, v in init.items()}
  state = tx.init(params)

  @jax.jit
  def step_fn(params, state, x, y, key):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(_logits_jax(p, x), y).mean()
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params, key=key,
                               logits_fn=lambda p: _logits_jax(p, x))
    return optax.apply_updates(params, updates), state

  ours, sampled = [], {}
  for step in range(STEPS):
    key = jax.random.key(1000 + step)
    if step % INTERVAL == 0:  # the labels our estimator draws at this step, for the reference
      sampled[step] = np.asarray(sample_labels(key, _logits_jax(params, jnp.asarray(xs[step]))))
    params, state = step_fn(params, state, jnp.asarray(xs[step]), jnp.asarray(ys[step]), key)
    ours.append({k: np.asarray(v) for k, v in params.items()})

  # The authors' optimizer, with their hessian refresh driven on the same schedule and labels.
  tparams = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in init.items()}
  opt = SophiaG(list(tparams.values()), lr=lr, betas=betas, rho=rho, weight_decay=wd)
  ce = torch.nn.functional.cross_entropy
  ref = []
  for step in range(STEPS):
    x = torch.tensor(xs[step])
    if step % INTERVAL == 0:
      ce(_logits_torch(tparams, x), torch.tensor(sampled[step])).backward()
      opt.update_hessian()
      opt.zero_grad(set_to_none=True)
    ce(_logits_torch(tparams, x), torch.tensor(ys[step])).backward()
    opt.step(bs=BATCH)
    opt.zero_grad(set_to_none=True)
    ref.append({k: t.detach().numpy().copy() for k, t in tparams.items()})

  assert_parity(ours, ref, label="sophia-g vs sophia-opt SophiaG")
  fraction = float(optax.tree_utils.tree_get(state, "unclipped_fraction"))
  assert 0.0 <= fraction <= 1.0


def test_hutchinson_is_exact_for_a_diagonal_hessian():
  diag = {"a": jnp.arange(1.0, 7.0).reshape(2, 3), "s": jnp.asarray(2.5)}
  loss_fn = lambda p: 0.5 * sum(jnp.sum(d * x * x) for d, x in zip(jax.tree.leaves(diag),
                                                                     jax.tree.leaves(p)))
  params = jax.tree.map(jnp.ones_like, diag)
  estimate = optimkit.hutchinson(params, jax.random.key(0), loss_fn=loss_fn)
  for got, want in zip(jax.tree.leaves(estimate), jax.tree.leaves(diag)):
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_hutchinson_is_unbiased_for_a_dense_hessian():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(5, 5))
  hessian = jnp.asarray(a @ a.T + np.eye(5))
  loss_fn = lambda p: 0.5 * p["x"] @ hessian @ p["x"]
  params = {"x": jnp.zeros(5)}
  keys = jax.random.split(jax.random.key(1), 4000)
  estimates = jax.vmap(lambda k: optimkit.hutchinson(params, k, loss_fn=loss_fn)["x"])(keys)
  np.testing.assert_allclose(estimates.mean(0), jnp.diag(hessian), atol=0.15 * float(
      jnp.max(jnp.abs(hessian))))


def test_sophia_h_reduces_a_quadratic():
  hessian = jnp.diag(jnp.asarray([1.0, 10.0, 100.0]))
  loss_fn = lambda p: 0.5 * p["x"] @ hessian @ p["x"]
  tx = optimkit.sophia(0.5, gamma=1.0, estimator="hutchinson", weight_decay=0.0, seed=0,
                       update_interval=2)
  params = {"x": jnp.asarray([1.0, 1.0, 1.0])}
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    grads = jax.grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, loss_fn=loss_fn)
    return optax.apply_updates(params, updates), state

  for _ in range(200):
    params, state = step(params, state)
  assert float(loss_fn(params)) < 1e-3


def test_sophia_needs_a_key_or_a_seed():
  tx = optimkit.sophia(1e-3, estimator="hutchinson")
  params = {"x": jnp.ones(3)}
  with pytest.raises(ValueError, match="key=.*seed="):
    tx.update(params, tx.init(params), params, loss_fn=lambda p: jnp.sum(p["x"] ** 2))


def test_sophia_seed_is_deterministic_and_seeds_differ():
  params = {"x": jnp.ones(4)}
  loss_fn = lambda p: jnp.sum(jnp.cosh(p["x"]) * jnp.arange(1.0, 5.0))
  def run(seed):
    tx = optimkit.scale_by_sophia(estimator="hutchinson", seed=seed)
    state = tx.init(params)
    _, state = tx.update(jax.grad(loss_fn)(params), state, params, loss_fn=loss_fn)
    return state.hessian["x"]
  np.testing.assert_array_equal(run(1), run(1))
  # cosh'' at 1 is diagonal here, so Hutchinson is exact; the key matters for a dense Hessian.
  dense = lambda p: jnp.sum(p["y"]) ** 4
  params = {"y": jnp.ones(32)}
  def run_dense(seed):
    tx = optimkit.scale_by_sophia(estimator="hutchinson", seed=seed)
    _, state = tx.update(jax.grad(dense)(params), tx.init(params), params, loss_fn=dense)
    return state.hessian["y"]
  assert not np.array_equal(run_dense(1), run_dense(2))


def test_unclipped_fraction_is_measured_at_each_hessian_refresh_and_held_between():
  rng = np.random.default_rng(3)
  params = {"w": jnp.asarray(rng.normal(size=(6, 5))), "b": jnp.asarray(rng.normal(size=4))}
  loss_fn = lambda p: jnp.sum(jnp.cosh(p["w"])) + jnp.sum(p["b"] ** 4)
  gamma, eps = 0.05, 1e-12
  tx = optimkit.scale_by_sophia(gamma=gamma, eps=eps, estimator="hutchinson", seed=0,
                                update_interval=3)
  state = tx.init(params)
  step = jax.jit(lambda g, s, p: tx.update(g, s, p, loss_fn=loss_fn))
  measured = None
  for t in range(7):
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params)
    _, state = step(grads, state, params)
    if t % 3 == 0:  # a refresh: count |m| < max(gamma h, eps) from the new state, in numpy
      m = np.concatenate([np.ravel(state.mu[k]) for k in ("b", "w")])
      h = np.concatenate([np.ravel(state.hessian[k]) for k in ("b", "w")])
      measured = float(np.mean(np.abs(m) < np.maximum(gamma * h, eps)))
      assert 0.0 < measured < 1.0
    assert float(state.unclipped_fraction) == pytest.approx(measured, abs=1e-7), t
