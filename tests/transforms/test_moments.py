"""Parity of the moment-based optimizers (SGD, AdaGrad, RMSprop, Adam, AdamW) against PyTorch,
torch-optimi and optax, 120 steps on a random float64 problem."""

import optax
import pytest
import torch

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch


@pytest.fixture(scope="module")
def problem():
  return Problem(seed=1)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_torch(problem, nesterov):
  ours = run_optax(optimkit.sgd(0.05, momentum=0.9, nesterov=nesterov), problem)
  ref = run_torch(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=nesterov), problem)
  assert_parity(ours, ref, label=f"sgd nesterov={nesterov} vs torch")


def test_sgdw_matches_optimi_decoupled(problem):
  import optimi

  ours = run_optax(optimkit.sgd(0.05, momentum=0.9, weight_decay=0.1), problem)
  ref = run_torch(lambda p: optimi.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.1,
                                       decouple_wd=True, foreach=False), problem)
  assert_parity(ours, ref, label="sgd wd vs optimi")


def test_sgd_plain_matches_optax(problem):
  ours = run_optax(optimkit.sgd(0.05), problem)
  ref = run_optax(optax.sgd(0.05), problem)
  assert_parity(ours, ref, label="sgd vs optax")


def test_adagrad_matches_torch(problem):
  ours = run_optax(optimkit.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-10,
                                    eps_in_sqrt=False), problem)
  ref = run_torch(lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-10), problem)
  assert_parity(ours, ref, label="adagrad vs torch")


def test_adagrad_defaults_match_optax(problem):
  ours = run_optax(optimkit.adagrad(0.1), problem)
  ref = run_optax(optax.adagrad(0.1), problem)
  assert_parity(ours, ref, label="adagrad vs optax")


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [None, 0.9])
def test_rmsprop_matches_torch(problem, centered, momentum):
  ours = run_optax(optimkit.rmsprop(0.01, decay=0.99, eps=1e-8, eps_in_sqrt=False,
                                    centered=centered, momentum=momentum), problem)
  ref = run_torch(lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99, eps=1e-8,
                                                centered=centered, momentum=momentum or 0.0),
                  problem)
  assert_parity(ours, ref, label=f"rmsprop centered={centered} momentum={momentum} vs torch")


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_defaults_match_optax(problem, centered):
  ours = run_optax(optimkit.rmsprop(0.01, centered=centered, momentum=0.9), problem)
  ref = run_optax(optax.rmsprop(0.01, centered=centered, momentum=0.9), problem)
  assert_parity(ours, ref, label=f"rmsprop centered={centered} vs optax")


def test_adam_matches_torch_and_optax(problem):
  ours = run_optax(optimkit.adam(0.01, b1=0.8, b2=0.95, eps=1e-8), problem)
  ref = run_torch(lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.95), eps=1e-8), problem)
  assert_parity(ours, ref, label="adam vs torch")
  assert_parity(ours, run_optax(optax.adam(0.01, b1=0.8, b2=0.95), problem), label="adam vs optax")


def test_adamw_matches_torch_and_optax(problem):
  ours = run_optax(optimkit.adamw(0.01, weight_decay=0.1), problem)
  ref = run_torch(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1), problem)
  assert_parity(ours, ref, label="adamw vs torch")
  assert_parity(ours, run_optax(optax.adamw(0.01, weight_decay=0.1), problem),
                label="adamw vs optax")
