"""The registry's wrapped optimizers (optimkit/optimizers/wrapped.py) against their references,
float64, 200 steps on matrices, a rank-3 stack, a vector and a scalar:

  - cautious_adamw against a NumPy transcription of the paper's C-AdamW (Liang et al. 2024,
    Algorithm 2, as the authors' C-Optim code runs it; no package on PyPI ships it), with
    masked weight decay;
  - cautious_lion against pytorch-optimizer 4.1.0's `Lion(cautious=True)`, with weight decay;
  - galore_adamw against galore-torch 1.0's `GaLoreAdamW` (the projector from a float64 SVD with
    optimkit's sign convention on both sides, as tests/transforms/test_galore.py does).
"""

import numpy as np
import pytest

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch
from tests.transforms import test_galore

STEPS = 200


def _c_adamw_numpy(problem, lr, b1, b2, eps, weight_decay, decays):
  """C-AdamW, transcribed from the paper: Adam's moments, the mask phi = 1[m_t * g_t > 0] scaled
  by d / (sum(phi) + 1) per tensor, the decoupled decay w <- w (1 - lr wd) before the step."""
  params = {k: v.copy() for k, v in problem.init.items()}
  m = {k: np.zeros_like(v) for k, v in params.items()}
  v = {k: np.zeros_like(x) for k, x in params.items()}
  trajectory = []
  for step in range(problem.steps):
    t = step + 1
    grads = problem.grad(step, params)
    for k in params:
      g = grads[k]
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
      phi = (m[k] * g > 0).astype(np.float64)
      phi = phi * (phi.size / (phi.sum() + 1))
      denom = np.sqrt(v[k]) / np.sqrt(1 - b2 ** t) + eps
      if decays[k]:
        params[k] = params[k] * (1 - lr * weight_decay)
      params[k] = params[k] - (lr / (1 - b1 ** t)) * (m[k] * phi) / denom
    trajectory.append({k: x.copy() for k, x in params.items()})
  return trajectory


def test_cautious_adamw_matches_the_papers_algorithm():
  problem = Problem(seed=71, steps=STEPS, noise=2.0)
  decays = {"matrix": True, "stack": True, "vector": False, "scalar": True}
  tx = optimkit.cautious_adamw(3e-3, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1, mask=decays)
  ours = run_optax(tx, problem)
  reference = _c_adamw_numpy(problem, 3e-3, 0.9, 0.99, 1e-8, 0.1, decays)
  assert_parity(ours, reference, label="cautious_adamw vs C-AdamW (NumPy)")


def test_cautious_lion_matches_pytorch_optimizer():
  from pytorch_optimizer import Lion

  problem = Problem(seed=72, steps=STEPS, noise=2.0)
  ours = run_optax(optimkit.cautious_lion(3e-3, b1=0.9, b2=0.99, weight_decay=0.1), problem)
  reference = run_torch(lambda p: Lion(p, lr=3e-3, betas=(0.9, 0.99), weight_decay=0.1,
                                       cautious=True, foreach=False), problem)
  assert_parity(ours, reference, label="cautious_lion vs pytorch-optimizer Lion(cautious=True)")


@pytest.mark.parametrize("proj_type", ["std", "reverse_std"])
def test_galore_adamw_matches_galore_torch(monkeypatch, proj_type):
  """galore-torch's Adam adds eps before the bias correction and decays after the step: equal at
  eps = 0 and no decay (the differences are in galore_adamw's docstring)."""
  from galore_torch.galore_projector import GaLoreProjector

  monkeypatch.setattr(GaLoreProjector, "get_orthogonal_matrix",
                      test_galore._float64_orthogonal_matrix)
  problem = Problem(seed=73, steps=STEPS, shapes=test_galore.SHAPES)
  tx = optimkit.galore_adamw(0.05, b1=0.8, b2=0.99, eps=0.0, rank=2, update_proj_gap=10,
                             scale=0.25, proj_type=proj_type)
  ours = run_optax(tx, problem)
  reference = run_torch(test_galore._reference(2, 10, 0.25, 0.05, (0.8, 0.99), proj_type),
                        problem)
  assert_parity(ours, reference, label=f"galore_adamw ({proj_type}) vs GaLoreAdamW")


def test_galore_adamw_keeps_projected_moments():
  """The memory GaLore is for: Adam's moments of an m x n matrix are m x r (or r x n)."""
  import jax.numpy as jnp

  params = {"w": jnp.zeros((64, 32)), "b": jnp.zeros(32)}
  state = optimkit.galore_adamw(1e-3, rank=4).init(params)
  galore_state = state.inner_state[0]  # (the layer's hyperparameters around the chain)
  assert galore_state.inner_state.mu["w"].shape == (64, 4)
  assert galore_state.inner_state.mu["b"].shape == (32,)
  assert galore_state.projectors["w"].shape == (4, 32)
