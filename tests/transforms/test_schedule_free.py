"""Schedule-free AdamW and SGD against the authors' `schedulefree` package (120 steps, with
warmup, polynomial weighting r, weight_lr_power and weight decay), the averaged eval params
against the reference's eval() mode, and the documented deviation of optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import optimkit
from tests.parity import Problem, assert_parity, max_relative_error, run_optax, run_torch


def _run_with_eval(tx, problem):
  params = {k: jnp.asarray(v) for k, v in problem.init.items()}
  state = tx.init(params)
  update = jax.jit(tx.update)
  for step in range(problem.steps):
    grads = {k: jnp.asarray(v) for k, v in problem.grad(step, params).items()}
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  evaluated = optimkit.schedule_free_eval_params(state, params)
  return {k: np.asarray(v) for k, v in evaluated.items()}


def _torch_eval(make_optimizer, problem):
  tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
             for k, v in problem.init.items()}
  optimizer = make_optimizer(list(tensors.values()))
  optimizer.train()
  for step in range(problem.steps):
    grads = problem.grad(step, {k: t.detach().numpy() for k, t in tensors.items()})
    for k, t in tensors.items():
      t.grad = torch.tensor(grads[k], dtype=torch.float64)
    optimizer.step()
  optimizer.eval()
  return {k: t.detach().numpy().copy() for k, t in tensors.items()}


def _trained(make_optimizer):
  def make(params):
    optimizer = make_optimizer(params)
    optimizer.train()
    return optimizer
  return make


ADAMW_CASES = [
    dict(lr=0.02, warmup_steps=0, r=0.0, weight_lr_power=2.0, weight_decay=0.0),
    dict(lr=0.02, warmup_steps=15, r=0.5, weight_lr_power=2.0, weight_decay=0.05),
    dict(lr=0.01, warmup_steps=30, r=0.0, weight_lr_power=0.0, weight_decay=0.01),
]


@pytest.mark.parametrize("case", ADAMW_CASES)
def test_schedule_free_adamw_matches_authors(case):
  from schedulefree import AdamWScheduleFree

  problem = Problem(seed=9)
  ours = run_optax(optimkit.schedule_free_adamw(
      case["lr"], b1=0.9, b2=0.999, eps=1e-8, weight_decay=case["weight_decay"],
      warmup_steps=case["warmup_steps"], r=case["r"], weight_lr_power=case["weight_lr_power"]),
      problem)
  make = lambda p: AdamWScheduleFree(p, lr=case["lr"], betas=(0.9, 0.999), eps=1e-8,
                                     weight_decay=case["weight_decay"],
                                     warmup_steps=case["warmup_steps"], r=case["r"],
                                     weight_lr_power=case["weight_lr_power"], foreach=False)
  ref = run_torch(_trained(make), problem)
  assert_parity(ours, ref, label=f"schedule_free_adamw {case} vs schedulefree")

  ours_eval = _run_with_eval(optimkit.schedule_free_adamw(
      case["lr"], weight_decay=case["weight_decay"], warmup_steps=case["warmup_steps"],
      r=case["r"], weight_lr_power=case["weight_lr_power"]), problem)
  ref_eval = _torch_eval(make, problem)
  error = max_relative_error([ours_eval], [ref_eval])
  print(f"PARITY schedule_free_adamw eval params: max_rel_err={error:.3e}")
  assert error < 1e-6


def test_schedule_free_sgd_matches_authors():
  from schedulefree import SGDScheduleFree

  problem = Problem(seed=10)
  ours = run_optax(optimkit.schedule_free_sgd(0.05, b1=0.9, weight_decay=0.01, warmup_steps=10,
                                              r=0.25), problem)
  make = lambda p: SGDScheduleFree(p, lr=0.05, momentum=0.9, weight_decay=0.01,
                                   warmup_steps=10, r=0.25, foreach=False)
  ref = run_torch(_trained(make), problem)
  assert_parity(ours, ref, label="schedule_free_sgd vs schedulefree")
  ours_eval = _run_with_eval(optimkit.schedule_free_sgd(0.05, weight_decay=0.01, warmup_steps=10,
                                                        r=0.25), problem)
  assert max_relative_error([ours_eval], [_torch_eval(make, problem)]) < 1e-6


def test_optax_schedule_free_deviates_from_authors_with_weight_decay():
  """The deviation we do not copy: optax's schedule_free_adamw with weight decay."""
  from schedulefree import AdamWScheduleFree

  problem = Problem(seed=9)
  make = lambda p: AdamWScheduleFree(p, lr=0.02, weight_decay=0.05, warmup_steps=15,
                                     foreach=False)
  ref = run_torch(_trained(make), problem)
  theirs = run_optax(optax.contrib.schedule_free_adamw(0.02, warmup_steps=15,
                                                       weight_decay=0.05), problem)
  assert max_relative_error(theirs, ref) > 1e-3


def test_eval_params_needs_schedule_free_state():
  tx = optimkit.adam(1e-3)
  params = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="no schedule-free part"):
    optimkit.schedule_free_eval_params(tx.init(params), params)


def test_recomputed_direction_equals_the_plain_chain():
  # schedule_free_adamw's y update reads d recomputed from the new state (one pass less); its
  # steps must equal the plain chain of the same pieces, with the state laid out the same.
  from optimkit.transforms.moments import scale_by_adam

  key_p, key_g = jax.random.split(jax.random.key(7))
  params = {"w": jax.random.normal(key_p, (33, 17)), "b": jnp.zeros(17)}
  mask = {"w": True, "b": False}
  fused = optimkit.schedule_free_adamw(0.01, b1=0.9, b2=0.99, weight_decay=0.1, mask=mask,
                                       warmup_steps=3)
  plain = optax.chain(scale_by_adam(0.0, 0.99, 1e-8), optax.add_decayed_weights(0.1, mask),
                      optimkit.schedule_free(0.01, 0.9, warmup_steps=3))
  fused_state, plain_state = fused.init(params), plain.init(params)
  fused_params, plain_params = params, params
  for step in range(20):
    grads = jax.tree.map(lambda p: jnp.sin(p * (step + 1)) + 0.1 * p, fused_params)
    updates, fused_state = jax.jit(fused.update)(grads, fused_state, fused_params)
    fused_params = optax.apply_updates(fused_params, updates)
    updates, plain_state = jax.jit(plain.update)(grads, plain_state, plain_params)
    plain_params = optax.apply_updates(plain_params, updates)
  for a, b in zip(jax.tree.leaves(fused_params), jax.tree.leaves(plain_params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  inner = fused_state.inner_state
  assert jax.tree.structure(inner) == jax.tree.structure(plain_state)
  for a, b in zip(jax.tree.leaves(inner), jax.tree.leaves(plain_state)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
