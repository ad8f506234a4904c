"""Step-by-step parity harness: run an optimkit optimizer and a reference implementation
(PyTorch or optax) on the same random problem and compare the parameter trajectories.

The problem: a dict of float64 leaves (a matrix, a rank-3 stack, a vector and a scalar), and a
gradient g_t(w) = c * (w - target) + noise_t that depends on the current parameters, so that any
difference between the two implementations compounds over the steps instead of washing out.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

SHAPES = {"matrix": (6, 5), "stack": (3, 4, 5), "vector": (7,), "scalar": ()}
PARITY_RTOL = 1e-6


class Problem:
  def __init__(self, seed: int = 0, shapes=None, steps: int = 120, noise: float = 1.0):
    self.shapes = shapes or SHAPES
    rng = np.random.default_rng(seed)
    self.init = {k: rng.normal(size=s) for k, s in self.shapes.items()}
    self.target = {k: rng.normal(size=s) for k, s in self.shapes.items()}
    self.curvature = {k: rng.uniform(0.5, 2.0, size=s) for k, s in self.shapes.items()}
    self.noise = [{k: noise * rng.normal(size=s) for k, s in self.shapes.items()}
                  for _ in range(steps)]
    self.steps = steps

  def grad(self, step: int, params: dict) -> dict:
    return {k: self.curvature[k] * (np.asarray(params[k]) - self.target[k]) + self.noise[step][k]
            for k in self.shapes}


def run_optax(tx: optax.GradientTransformation, problem: Problem, extra_args=None) -> list:
  """Trajectory of params (numpy dicts) after each step, the update jitted."""
  params = {k: jnp.asarray(v) for k, v in problem.init.items()}
  state = tx.init(params)
  extra_args = extra_args or (lambda step, params: {})

  @jax.jit
  def step_fn(params, state, grads, extra):
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state

  trajectory = []
  for step in range(problem.steps):
    grads = {k: jnp.asarray(v) for k, v in problem.grad(step, params).items()}
    params, state = step_fn(params, state, grads, extra_args(step, params))
    trajectory.append({k: np.asarray(v) for k, v in params.items()})
  return trajectory


def run_torch(make_optimizer: Callable, problem: Problem, step_kwargs=None) -> list:
  import torch

  tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
             for k, v in problem.init.items()}
  optimizer = make_optimizer(list(tensors.values()))
  trajectory = []
  for step in range(problem.steps):
    grads = problem.grad(step, {k: t.detach().numpy() for k, t in tensors.items()})
    for k, t in tensors.items():
      t.grad = torch.tensor(grads[k], dtype=torch.float64)
    optimizer.step(**(step_kwargs or {}))
    trajectory.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
  return trajectory


def max_relative_error(ours: list, reference: list) -> float:
  """Largest over steps and leaves of max|ours - ref| / max|ref| (leaf-wise)."""
  worst = 0.0
  for a, b in zip(ours, reference, strict=True):
    for k in b:
      scale = max(np.max(np.abs(b[k])), 1e-12)
      worst = max(worst, float(np.max(np.abs(a[k] - b[k])) / scale))
  return worst


def assert_parity(ours: list, reference: list, rtol: float = PARITY_RTOL, label: str = "") -> float:
  error = max_relative_error(ours, reference)
  print(f"PARITY {label}: steps={len(ours)} max_rel_err={error:.3e}")
  assert np.isfinite(error) and error <= rtol, f"{label}: max relative error {error:.3e} > {rtol}"
  # A parity test must be able to fail: the trajectory has to move away from the start.
  moved = max(np.max(np.abs(ours[-1][k] - ours[0][k])) for k in ours[0])
  assert moved > 1e-6, f"{label}: parameters did not move; the test would prove nothing"
  return error
