"""optimkit.ademamix against pytorch-optimizer 4.1.0 and optax.contrib.ademamix; Simplified AdEMAMix
against optax.contrib.simplified_ademamix and a NumPy transcription of the authors' algorithm
(Morwani et al. 2025, DepenM/Simplified-AdEMAMix) with its b1 warmup. 120 steps in float64 on
a matrix, a rank-3 stack, a vector and a scalar (tests for transforms/ademamix)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optimkit
from optimkit.transforms.ademamix import (
    half_life_warmup, linear_warmup, scale_by_simplified_ademamix)
from tests.parity import Problem, assert_parity, run_optax, run_torch


@pytest.mark.parametrize("warmup", [None, 60])
def test_ademamix_matches_pytorch_optimizer(warmup):
  from pytorch_optimizer import AdEMAMix

  # b3 = 0.99 and a 60-step warmup within the 120 steps, so that the slow EMA, both schedules
  # and their end all show in the trajectory.
  problem = Problem(seed=31)
  ours = run_optax(optimkit.ademamix(0.01, b3=0.99, alpha=5.0, weight_decay=0.05,
                                     alpha_warmup=warmup, b3_warmup=warmup), problem)
  ref = run_torch(lambda p: AdEMAMix(p, lr=0.01, betas=(0.9, 0.999, 0.99), alpha=5.0,
                                     t_alpha_beta3=warmup, weight_decay=0.05,
                                     weight_decouple=True, foreach=False), problem)
  assert_parity(ours, ref, label=f"ademamix (warmup={warmup}) vs pytorch-optimizer")


def test_ademamix_matches_optax_with_schedules():
  # optax evaluates alpha and b3 schedules at the count of previous updates, as ours do.
  alpha = optax.linear_schedule(0.0, 8.0, 50)
  b3 = lambda count: 0.9 + 0.09 * jnp.minimum(count / 80.0, 1.0)
  problem = Problem(seed=32)
  ours = run_optax(optimkit.ademamix(0.01, b3=b3, alpha=alpha, eps_root=1e-12, weight_decay=0.02),
                   problem)
  ref = run_optax(optax.contrib.ademamix(0.01, b3=b3, alpha=alpha, eps_root=1e-12,
                                         weight_decay=0.02), problem)
  assert_parity(ours, ref, label="ademamix (schedules) vs optax")


def test_warmups_traceable_and_follow_the_paper():
  steps = jnp.arange(1, 201)
  alpha = jax.jit(lambda t, warmup: linear_warmup(t, 8.0, warmup))(steps, jnp.float64(100.0))
  b3 = jax.jit(lambda t, warmup: half_life_warmup(t, 0.9, 0.9999, warmup))(steps, 100.0)
  for t, a, b in zip(np.asarray(steps), np.asarray(alpha), np.asarray(b3)):
    # The paper's closed forms (Pagliardini et al. 2024, Section 3).
    expected_alpha = min(t * 8.0 / 100.0, 8.0)
    log1, log3 = math.log(0.9), math.log(0.9999)
    expected_b3 = min(math.exp(log1 * log3 / ((1 - t / 100) * log3 + (t / 100) * log1)), 0.9999)
    assert abs(a - expected_alpha) <= 1e-12 * 8
    assert abs(b - expected_b3) <= 1e-12
  # Half-life form: 1/ln(1/b) - the e-folding time - rises linearly from b1's to b3's.
  folding = -1.0 / np.log(np.asarray(b3[:99]))
  np.testing.assert_allclose(np.diff(folding), np.diff(folding)[0], rtol=1e-8)


def _simplified_reference(problem, lr, b1, b2, alpha, eps, weight_decay, b1_warmup, min_b1):
  """The authors' Simplified AdEMAMix (Morwani et al. 2025, default bias corrections: none on
  the momentum sum, sqrt(1 - b2^t) on the denominator), transcribed in NumPy."""

  def warmed_b1(step):
    if b1_warmup is None or step >= b1_warmup:
      return b1
    half_life = lambda beta: math.log(0.5) / math.log(beta + 1e-8) - 1.0
    a = step / b1_warmup
    return 0.5 ** (1.0 / ((1.0 - a) * half_life(min_b1) + a * half_life(b1) + 1.0))

  params = {k: v.copy() for k, v in problem.init.items()}
  m = {k: np.zeros_like(v) for k, v in params.items()}
  v = {k: np.zeros_like(x) for k, x in params.items()}
  denominator_sum, trajectory = 0.0, []
  for step in range(problem.steps):
    grads = problem.grad(step, params)
    beta1 = warmed_b1(step + 1)
    denominator_sum = b2 * denominator_sum + (1.0 - b2)
    for k in params:
      g = grads[k]
      m[k] = beta1 * m[k] + g
      v[k] = b2 * v[k] + (1.0 - b2) * g * g
      update = (alpha * g + m[k]) / (np.sqrt(v[k]) + eps * math.sqrt(denominator_sum))
      update = update * math.sqrt(denominator_sum) + weight_decay * params[k]
      params[k] = params[k] - lr * update
    trajectory.append({k: x.copy() for k, x in params.items()})
  return trajectory


def test_simplified_ademamix_matches_authors_algorithm():
  # With the warmup (without it, the algorithm is optax's, tested below).
  b1_warmup = 80
  problem = Problem(seed=33)
  kwargs = dict(b1=0.95, b2=0.95, alpha=2.0, eps=1e-8)
  ours = run_optax(optimkit.simplified_ademamix(1e-3, weight_decay=0.1, b1_warmup=b1_warmup,
                                                min_b1=0.8, **kwargs), problem)
  ref = _simplified_reference(problem, 1e-3, weight_decay=0.1, b1_warmup=b1_warmup,
                              min_b1=0.8, **kwargs)
  # The authors' code takes log(b + 1e-8) in its warmup, which moves b1_t by ~1e-8.
  assert_parity(ours, ref, label=f"simplified ademamix (b1_warmup={b1_warmup}) vs authors")


def test_simplified_ademamix_matches_optax():
  alpha = optax.linear_schedule(0.0, 3.0, 60)
  problem = Problem(seed=34)
  ours = run_optax(optimkit.simplified_ademamix(1e-3, b1=0.9, alpha=alpha, eps_root=1e-10,
                                                weight_decay=0.01), problem)
  ref = run_optax(optax.contrib.simplified_ademamix(1e-3, b1=0.9, alpha=alpha, eps_root=1e-10,
                                                    weight_decay=0.01), problem)
  assert_parity(ours, ref, label="simplified ademamix vs optax")


def test_pytorch_optimizer_simplified_ademamix_is_not_the_authors():
  # Written down in the module docstring: pytorch-optimizer keeps an EMA momentum and divides
  # by sqrt(1 - b2^t) where the authors multiply. At the first step its update is
  # (1 - b1 + alpha) g / (|g| (1 - b2)); the authors' is (1 + alpha) g / |g|.
  from pytorch_optimizer import SimplifiedAdEMAMix
  import torch

  w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
  w.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
  SimplifiedAdEMAMix([w], lr=1.0, betas=(0.99, 0.95), alpha=1.0, eps=0.0,
                     foreach=False).step()
  theirs = -w.detach().numpy()
  np.testing.assert_allclose(theirs, (0.01 + 1.0) / 0.05 * np.sign([1.0, -2.0, 0.5]))
  tx = scale_by_simplified_ademamix(b1=0.99, b2=0.95, alpha=1.0, eps=0.0)
  ours, _ = tx.update(jnp.array([1.0, -2.0, 0.5]), tx.init(jnp.zeros(3)))
  np.testing.assert_allclose(ours, 2.0 * np.sign([1.0, -2.0, 0.5]))
