"""Yogi against optax.yogi and pytorch-optimizer's Yogi (decoupled weight decay), 100 float64
steps on four leaf shapes."""

import optax
import pytest

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch
from tests.transforms._torch_threads import one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_yogi_matches_optax():
  problem = Problem(seed=51, steps=100)
  ours = run_optax(optimkit.yogi(0.05, b2=0.99), problem)
  ref = run_optax(optax.yogi(0.05, b2=0.99), problem)
  assert_parity(ours, ref, label="yogi vs optax.yogi")


def test_yogi_with_decoupled_decay_matches_pytorch_optimizer():
  from pytorch_optimizer import Yogi

  problem = Problem(seed=52, steps=100)
  ours = run_optax(optimkit.yogi(0.05, b1=0.8, b2=0.99, eps=1e-4, weight_decay=0.2), problem)
  ref = run_torch(lambda p: Yogi(p, lr=0.05, betas=(0.8, 0.99), eps=1e-4, weight_decay=0.2,
                                 weight_decouple=True, foreach=False), problem)
  assert_parity(ours, ref, label="yogi(weight_decay) vs pytorch-optimizer Yogi")
