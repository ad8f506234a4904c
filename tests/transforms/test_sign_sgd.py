"""signSGD and Signum against optax.sign_sgd / optax.signum, and Signum with decoupled weight
decay against pytorch-optimizer's SignSGD, 100 float64 steps on four leaf shapes."""

import optax
import pytest

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch
from tests.transforms._torch_threads import one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sign_sgd_matches_optax():
  problem = Problem(seed=101, steps=100)
  ours = run_optax(optimkit.sign_sgd(0.01), problem)
  assert_parity(ours, run_optax(optax.sign_sgd(0.01), problem), label="sign_sgd vs optax")


def test_signum_matches_optax():
  problem = Problem(seed=102, steps=100)
  ours = run_optax(optimkit.signum(0.01, beta=0.8), problem)
  assert_parity(ours, run_optax(optax.signum(0.01, beta=0.8), problem), label="signum vs optax")


def test_signum_with_decoupled_decay_matches_pytorch_optimizer():
  from pytorch_optimizer import SignSGD

  problem = Problem(seed=103, steps=100)
  ours = run_optax(optimkit.signum(0.01, beta=0.8, weight_decay=0.5), problem)
  ref = run_torch(lambda p: SignSGD(p, lr=0.01, momentum=0.8, weight_decay=0.5,
                                    weight_decouple=True, foreach=False), problem)
  assert_parity(ours, ref, label="signum(weight_decay) vs pytorch-optimizer SignSGD")
