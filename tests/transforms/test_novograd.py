"""NovoGrad against optax.novograd and pytorch-optimizer's NovoGrad (grad_averaging=False),
100 float64 steps on four leaf shapes, with weight decay inside the momentum."""

import optax
import pytest

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch
from tests.transforms._torch_threads import one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_novograd_matches_optax_and_pytorch_optimizer():
  from pytorch_optimizer import NovoGrad

  problem = Problem(seed=71, steps=100)
  ours = run_optax(optimkit.novograd(0.01, b1=0.8, b2=0.3, eps=1e-6, weight_decay=0.1), problem)
  assert_parity(ours, run_optax(optax.novograd(0.01, b1=0.8, b2=0.3, eps=1e-6, weight_decay=0.1),
                                problem), label="novograd vs optax.novograd")
  ref = run_torch(lambda p: NovoGrad(p, lr=0.01, betas=(0.8, 0.3), eps=1e-6, weight_decay=0.1,
                                     weight_decouple=False, grad_averaging=False, foreach=False),
                  problem)
  assert_parity(ours, ref, label="novograd vs pytorch-optimizer NovoGrad")
