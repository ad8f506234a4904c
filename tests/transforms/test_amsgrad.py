"""AMSGrad against torch.optim.Adam(amsgrad=True) / AdamW(amsgrad=True) (the maximum of the raw
second moment, the default) and optax.amsgrad (the maximum of the debiased one, and the paper's
form without bias correction), 100 float64 steps on four leaf shapes."""

import optax
import pytest
import torch

import optimkit
from tests.parity import Problem, assert_parity, max_relative_error, run_optax, run_torch
from tests.transforms._torch_threads import one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_amsgrad_matches_torch_and_its_optax_form_matches_optax():
  problem = Problem(seed=21, steps=100)
  ours = run_optax(optimkit.amsgrad(0.02, b2=0.99), problem)
  ref = run_torch(lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.9, 0.99), amsgrad=True),
                  problem)
  assert_parity(ours, ref, label="amsgrad vs torch.optim.Adam(amsgrad=True)")

  optax_form = run_optax(optimkit.amsgrad(0.02, b2=0.99, debias_before_max=True), problem)
  assert_parity(optax_form, run_optax(optax.amsgrad(0.02, b2=0.99), problem),
                label="amsgrad(debias_before_max=True) vs optax.amsgrad")
  # Where the maximum is taken matters: the two forms are different algorithms.
  assert max_relative_error(ours, optax_form) > 1e-2


def test_amsgrad_with_decoupled_decay_matches_torch_adamw():
  problem = Problem(seed=22, steps=100)
  ours = run_optax(optimkit.amsgrad(0.02, b1=0.8, eps=1e-6, weight_decay=0.2), problem)
  ref = run_torch(lambda p: torch.optim.AdamW(p, lr=0.02, betas=(0.8, 0.999), eps=1e-6,
                                              weight_decay=0.2, amsgrad=True), problem)
  assert_parity(ours, ref, label="amsgrad(weight_decay) vs torch.optim.AdamW(amsgrad=True)")


def test_amsgrad_without_bias_correction_matches_optax_paper_form():
  problem = Problem(seed=23, steps=100)
  ours = run_optax(optimkit.amsgrad(0.01, b2=0.99, bias_correction_mu=False,
                                    bias_correction_nu=False), problem)
  ref = run_optax(optax.amsgrad(0.01, b2=0.99, bias_correction_mu=False,
                                bias_correction_nu=False), problem)
  assert_parity(ours, ref, label="amsgrad(no bias correction) vs optax.amsgrad")
