"""NAdam and NAdamW against torch.optim.NAdam (the momentum schedule, the default) and optax's
simplified form (momentum_schedule=False), 100 float64 steps on four leaf shapes."""

import contextlib

import optax
import pytest
import torch

import optimkit
from tests.parity import Problem, assert_parity, max_relative_error, run_optax, run_torch
from tests.transforms._torch_threads import one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@contextlib.contextmanager
def torch_float64_scalars():
  # torch keeps NAdam's running momentum product in the default dtype (float32): rounding it
  # costs ~5e-8 relative, which would hide a real difference of that size.
  dtype = torch.get_default_dtype()
  torch.set_default_dtype(torch.float64)
  try:
    yield
  finally:
    torch.set_default_dtype(dtype)


def test_nadam_matches_torch_and_its_simplified_form_matches_optax():
  problem = Problem(seed=11, steps=100)
  ours = run_optax(optimkit.nadam(0.02, b1=0.9, b2=0.99), problem)
  with torch_float64_scalars():
    ref = run_torch(lambda p: torch.optim.NAdam(p, lr=0.02, betas=(0.9, 0.99)), problem)
  assert_parity(ours, ref, label="nadam vs torch.optim.NAdam")

  simplified = run_optax(optimkit.nadam(0.02, b1=0.9, b2=0.99, momentum_schedule=False), problem)
  assert_parity(simplified, run_optax(optax.nadam(0.02, b1=0.9, b2=0.99), problem),
                label="nadam(momentum_schedule=False) vs optax.nadam")
  # The schedule changes the trajectory: the argument selects a different algorithm.
  assert max_relative_error(ours, simplified) > 1e-2


def test_nadamw_matches_torch_decoupled_and_optax_nadamw():
  problem = Problem(seed=12, steps=100)
  ours = run_optax(optimkit.nadamw(0.02, b2=0.99, eps=1e-7, weight_decay=0.3,
                                   momentum_decay=0.01), problem)
  with torch_float64_scalars():
    ref = run_torch(lambda p: torch.optim.NAdam(
        p, lr=0.02, betas=(0.9, 0.99), eps=1e-7, weight_decay=0.3, momentum_decay=0.01,
        decoupled_weight_decay=True), problem)
  assert_parity(ours, ref, label="nadamw vs torch.optim.NAdam(decoupled_weight_decay=True)")

  simplified = run_optax(optimkit.nadamw(0.02, b2=0.99, eps=1e-7, weight_decay=0.3,
                                         momentum_schedule=False), problem)
  assert_parity(simplified, run_optax(optax.nadamw(0.02, b2=0.99, eps=1e-7, weight_decay=0.3),
                                      problem),
                label="nadamw(momentum_schedule=False) vs optax.nadamw")

