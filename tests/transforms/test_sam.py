"""SAM against pytorch-optimizer 4.1.0 `SAM` (plain and adaptive, opaque mode: one call per SAM
step) and optax.contrib.sam (transparent and opaque), 120 SAM steps in float64 on a matrix, a
rank-3 stack, a vector and a scalar (tests for transforms/sam)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from optimkit.transforms.sam import sam
from tests.parity import Problem, assert_parity, run_optax


def _jax_grad(problem, params, noise):
  """The problem's gradient as a traceable function (problem.grad is NumPy)."""
  return {k: problem.curvature[k] * (params[k] - problem.target[k]) + noise[k] for k in params}


def run_opaque(tx, problem):
  """One update per SAM step; the perturbed gradient uses the same noise (batch)."""
  params = {k: jnp.asarray(v) for k, v in problem.init.items()}
  state = tx.init(params)

  @jax.jit
  def step_fn(params, state, noise):
    grad_fn = lambda p, i: _jax_grad(problem, p, noise)
    updates, state = tx.update(grad_fn(params, -1), state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  trajectory = []
  for step in range(problem.steps):
    noise = {k: jnp.asarray(v) for k, v in problem.noise[step].items()}
    params, state = step_fn(params, state, noise)
    trajectory.append({k: np.asarray(v) for k, v in params.items()})
  return trajectory


def run_torch_sam(make_optimizer, problem):
  tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
             for k, v in problem.init.items()}
  optimizer = make_optimizer(list(tensors.values()))
  trajectory = []
  for step in range(problem.steps):
    def set_grads():
      grads = problem.grad(step, {k: t.detach().numpy() for k, t in tensors.items()})
      for k, t in tensors.items():
        t.grad = torch.tensor(grads[k], dtype=torch.float64)
      return 0.0

    set_grads()
    optimizer.step(set_grads)
    trajectory.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
  return trajectory


@pytest.mark.parametrize("base, adaptive", [("sgd", False), ("adamw", False), ("sgd", True)])
def test_sam_matches_pytorch_optimizer(base, adaptive):
  from pytorch_optimizer import SAM

  rho = 0.5 if adaptive else 0.1  # large enough that the perturbation changes the gradient
  if base == "sgd":
    outer = optax.sgd(0.05, momentum=0.9)
    torch_base, kwargs = torch.optim.SGD, dict(lr=0.05, momentum=0.9)
  else:
    outer = optax.adamw(0.01, weight_decay=0.01)
    torch_base, kwargs = torch.optim.AdamW, dict(lr=0.01, weight_decay=0.01)
  problem = Problem(seed=71)
  ours = run_opaque(sam(outer, rho=rho, adaptive=adaptive, opaque_mode=True), problem)
  ref = run_torch_sam(lambda p: SAM(p, torch_base, rho=rho, adaptive=adaptive, **kwargs),
                      problem)
  assert_parity(ours, ref, label=f"sam ({base}, adaptive={adaptive}) vs pytorch-optimizer")


@pytest.mark.parametrize("opaque_mode, sync_period, reset_state",
                         [(False, 2, False), (True, 3, True)])
def test_sam_matches_optax(opaque_mode, sync_period, reset_state):
  # A stateful adversarial optimizer, so that reset_state matters.
  outer = optax.adam(0.01)
  adversary = optax.chain(optax.contrib.normalize(), optax.sgd(0.05, momentum=0.5))
  kwargs = dict(sync_period=sync_period, reset_state=reset_state, opaque_mode=opaque_mode)
  ours_tx = sam(outer, adversary, **kwargs)
  ref_tx = optax.contrib.sam(outer, adversary, **kwargs)
  if opaque_mode:
    problem = Problem(seed=72)
    ours, ref = run_opaque(ours_tx, problem), run_opaque(ref_tx, problem)
  else:
    problem = Problem(seed=72, steps=120 * sync_period)  # one gradient per call
    ours, ref = run_optax(ours_tx, problem), run_optax(ref_tx, problem)
  assert_parity(ours, ref, label=f"sam ({kwargs}) vs optax.contrib.sam")


def test_transparent_mode_is_the_opaque_step_in_two_calls():
  problem = Problem(seed=73)
  opaque = run_opaque(sam(optax.sgd(0.05), rho=0.1, opaque_mode=True), problem)
  # The same batch for both calls of a step: noise k at calls 2k and 2k + 1.
  doubled = Problem(seed=73, steps=2 * problem.steps)
  doubled.noise = [noise for noise in problem.noise for _ in range(2)]
  transparent = run_optax(sam(optax.sgd(0.05), rho=0.1), doubled)[1::2]
  assert_parity(transparent, opaque, label="sam transparent vs opaque")


def test_sync_period_one_is_the_plain_optimizer():
  # optax.contrib.sam undoes each step here (it updates from the previous call's params).
  problem = Problem(seed=74)
  ours = run_optax(sam(optax.adam(0.01), sync_period=1), problem)
  assert_parity(ours, run_optax(optax.adam(0.01), problem), label="sam sync_period=1 vs adam")


def test_sam_state_is_fresh_and_opaque_needs_grad_fn():
  params = {"w": jnp.ones(3)}
  state = sam(optax.sgd(0.1)).init(params)
  assert state.cache["w"] is not params["w"]
  tx = sam(optax.sgd(0.1), opaque_mode=True)
  with pytest.raises(ValueError, match="grad_fn"):
    tx.update(params, tx.init(params), params)
  with pytest.raises(ValueError, match="sync_period"):
    sam(optax.sgd(0.1), sync_period=0)
