"""Rprop against torch.optim.Rprop, 100 float64 steps on four leaf shapes; and optax.rprop's
one-step lag, which is why optax is not a reference here."""

import jax.numpy as jnp
import optax
import pytest
import torch

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch
from tests.transforms._torch_threads import one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("etas, bounds", [((0.5, 1.2), (1e-6, 50.0)), ((0.3, 1.5), (1e-3, 0.1))])
def test_rprop_matches_torch(etas, bounds):
  problem = Problem(seed=81, steps=100)
  ours = run_optax(optimkit.rprop(0.01, eta_minus=etas[0], eta_plus=etas[1],
                                  min_step_size=bounds[0], max_step_size=bounds[1]), problem)
  ref = run_torch(lambda p: torch.optim.Rprop(p, lr=0.01, etas=etas, step_sizes=bounds), problem)
  assert_parity(ours, ref, label=f"rprop{etas, bounds} vs torch.optim.Rprop")


def test_optax_rprop_moves_one_step_late():
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([1.0, -2.0, 3.0])}
  tx, reference = optimkit.rprop(0.01), optax.rprop(0.01)
  ours, _ = tx.update(grads, tx.init(params), params)
  first, state = reference.update(grads, reference.init(params), params)
  second, _ = reference.update(grads, state, params)
  assert jnp.allclose(ours["w"], -0.01 * jnp.sign(grads["w"]))
  # optax 0.2.8 returns the previous step's move: zero first, then the first step's (if this
  # starts failing, optax fixed it: make it a parity reference and update optimkit.rprop).
  assert jnp.all(first["w"] == 0.0)
  assert jnp.allclose(second["w"], ours["w"])
