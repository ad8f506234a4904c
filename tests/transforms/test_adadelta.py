"""Adadelta against torch.optim.Adadelta and optax.adadelta (given a learning rate), 100 float64
steps on four leaf shapes; and optax's default learning_rate=None, which climbs."""

import jax.numpy as jnp
import optax
import pytest
import torch

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch
from tests.transforms._torch_threads import one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_adadelta_matches_torch_and_optax():
  # eps = 1e-3 makes the first steps ~0.03 instead of ~0.001, so the trajectory moves.
  problem = Problem(seed=61, steps=100)
  ours = run_optax(optimkit.adadelta(1.0, rho=0.8, eps=1e-3, weight_decay=0.1), problem)
  ref = run_torch(lambda p: torch.optim.Adadelta(p, lr=1.0, rho=0.8, eps=1e-3, weight_decay=0.1),
                  problem)
  assert_parity(ours, ref, label="adadelta vs torch.optim.Adadelta")
  assert_parity(ours, run_optax(optax.adadelta(1.0, rho=0.8, eps=1e-3, weight_decay=0.1),
                                problem), label="adadelta vs optax.adadelta")


def test_adadelta_without_learning_rate_descends_where_optax_default_climbs():
  params = {"w": jnp.array([1.0, -2.0])}
  grads = {"w": jnp.array([1.0, -2.0])}  # of 0.5 |w|^2
  ours, _ = optimkit.adadelta(None).update(grads, optimkit.adadelta(None).init(params), params)
  theirs, _ = optax.adadelta().update(grads, optax.adadelta().init(params), params)
  assert jnp.all(jnp.sign(ours["w"]) == -jnp.sign(grads["w"]))
  # optax 0.2.8: learning_rate=None skips the step that also flips the sign (if this starts
  # failing, optax fixed it and the docstring of optimkit.adadelta should say so).
  assert jnp.all(jnp.sign(theirs["w"]) == jnp.sign(grads["w"]))
