"""optimkit.mars (AdamW and Lion flavours) against pytorch-optimizer 4.1.0 `MARS` and a NumPy
transcription of the paper's Algorithm 2 as the authors' code runs it (AGI-Arena/MARS: MARS on
matrices, AdamW at their own betas / learning rate / decay on the other leaves). 120 steps in
float64 on a matrix, a rank-3 stack, a vector and a scalar (tests for transforms/mars)."""

import jax
import numpy as np
import pytest

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch


@pytest.mark.parametrize("mars_type", ["adamw", "lion"])
def test_mars_matches_pytorch_optimizer(mars_type):
  from pytorch_optimizer import MARS

  # gamma = 0.1 and noise 3 (a large gradient difference) so that both the correction and the
  # unit-norm clipping act; lion needs a smaller step.
  lr = 0.01 if mars_type == "adamw" else 0.002
  problem = Problem(seed=41, noise=3.0)
  ours = run_optax(optimkit.mars(lr, gamma=0.1, weight_decay=0.05, mars_type=mars_type,
                                 weight_decay_1d=0.02, lr_1d_factor=0.5), problem)
  ref = run_torch(lambda p: MARS(p, lr=lr, gamma=0.1, weight_decay=0.05, mars_type=mars_type,
                                 lr_1d=lr * 0.5, weight_decay_1d=0.02, foreach=False), problem)
  assert_parity(ours, ref, label=f"mars ({mars_type}) vs pytorch-optimizer")


def test_mars_optimize_1d_matches_pytorch_optimizer():
  from pytorch_optimizer import MARS

  problem = Problem(seed=42, noise=2.0)
  ours = run_optax(optimkit.mars(0.01, weight_decay=0.05, optimize_1d=True), problem)
  ref = run_torch(lambda p: MARS(p, lr=0.01, weight_decay=0.05, optimize_1d=True,
                                 foreach=False), problem)
  assert_parity(ours, ref, label="mars (optimize_1d) vs pytorch-optimizer")


def _mars_reference(problem, lr, b1, b2, gamma, eps, wd, mars_type, b1_1d, b2_1d, wd_1d,
                    lr_1d):
  """MARS-approx (Yuan et al. 2024, Algorithm 2 for "adamw", the sign step for "lion") on the
  2-D leaves and AdamW on the others, as the authors' code routes them, in NumPy."""
  params = {k: v.copy() for k, v in problem.init.items()}
  m = {k: np.zeros_like(v) for k, v in params.items()}
  v = {k: np.zeros_like(x) for k, x in params.items()}
  last = {k: np.zeros_like(x) for k, x in params.items()}
  trajectory = []
  for step in range(1, problem.steps + 1):
    grads = problem.grad(step - 1, params)
    for k in params:
      g = grads[k]
      if g.ndim == 2:
        c = g + gamma * b1 / (1 - b1) * (g - last[k])
        c = c / max(1.0, np.linalg.norm(c))
        m[k] = b1 * m[k] + (1 - b1) * c
        if mars_type == "adamw":
          v[k] = b2 * v[k] + (1 - b2) * c * c
          u = (m[k] / (1 - b1 ** step)) / (np.sqrt(v[k] / (1 - b2 ** step)) + eps)
        else:
          u = np.sign(m[k])
        params[k] = params[k] - lr * (u + wd * params[k])
      else:
        m[k] = b1_1d * m[k] + (1 - b1_1d) * g
        v[k] = b2_1d * v[k] + (1 - b2_1d) * g * g
        u = (m[k] / (1 - b1_1d ** step)) / (np.sqrt(v[k] / (1 - b2_1d ** step)) + eps)
        params[k] = params[k] - lr_1d * (u + wd_1d * params[k])
      last[k] = g
    trajectory.append({k: x.copy() for k, x in params.items()})
  return trajectory


@pytest.mark.parametrize("mars_type", ["adamw", "lion"])
def test_mars_matches_paper_as_the_authors_route_it(mars_type):
  lr = 0.01 if mars_type == "adamw" else 0.002
  problem = Problem(seed=43, noise=3.0)
  two_d = lambda params: jax.tree.map(lambda p: p.ndim == 2, params)  # the authors' rule
  ours = run_optax(optimkit.mars(lr, gamma=0.1, weight_decay=0.05, mars_type=mars_type,
                                 lr_1d_factor=0.5, mars_mask=two_d), problem)
  ref = _mars_reference(problem, lr, 0.95, 0.99, 0.1, 1e-8, 0.05, mars_type, 0.9, 0.95, 0.1,
                        lr * 0.5)
  assert_parity(ours, ref, label=f"mars ({mars_type}) vs paper / authors' code")

