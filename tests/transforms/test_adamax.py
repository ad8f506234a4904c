"""AdaMax against torch.optim.Adamax and optax.adamax, AdaMaxW against optax.adamaxw, 100
float64 steps on four leaf shapes."""

import optax
import pytest
import torch

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch
from tests.transforms._torch_threads import one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_adamax_matches_torch_and_optax():
  problem = Problem(seed=31, steps=100)
  ours = run_optax(optimkit.adamax(0.02, b1=0.8, b2=0.99, eps=1e-6), problem)
  ref = run_torch(lambda p: torch.optim.Adamax(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6),
                  problem)
  assert_parity(ours, ref, label="adamax vs torch.optim.Adamax")
  assert_parity(ours, run_optax(optax.adamax(0.02, b1=0.8, b2=0.99, eps=1e-6), problem),
                label="adamax vs optax.adamax")


def test_adamaxw_matches_optax():
  problem = Problem(seed=32, steps=100)
  ours = run_optax(optimkit.adamaxw(0.02, b2=0.99, weight_decay=0.3), problem)
  ref = run_optax(optax.adamaxw(0.02, b2=0.99, weight_decay=0.3), problem)
  assert_parity(ours, ref, label="adamaxw vs optax.adamaxw")
