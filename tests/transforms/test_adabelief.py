"""AdaBelief against optax.adabelief (plain and Nesterov) and pytorch-optimizer's AdaBelief with
rectify=False (the authors' unrectified update, decoupled weight decay), 100 float64 steps on
four leaf shapes."""

import optax
import pytest

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch
from tests.transforms._torch_threads import one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("nesterov", [False, True])
def test_adabelief_matches_optax(nesterov):
  problem = Problem(seed=41, steps=100)
  ours = run_optax(optimkit.adabelief(0.02, b2=0.99, nesterov=nesterov), problem)
  ref = run_optax(optax.adabelief(0.02, b2=0.99, nesterov=nesterov), problem)
  assert_parity(ours, ref, label=f"adabelief(nesterov={nesterov}) vs optax.adabelief")


def test_adabelief_with_decoupled_decay_matches_pytorch_optimizer():
  from pytorch_optimizer import AdaBelief

  problem = Problem(seed=42, steps=100)
  # One eps for both places, as the authors' code has it.
  ours = run_optax(optimkit.adabelief(0.02, b1=0.8, b2=0.99, eps=1e-12, eps_root=1e-12,
                                      weight_decay=0.2), problem)
  ref = run_torch(lambda p: AdaBelief(p, lr=0.02, betas=(0.8, 0.99), eps=1e-12,
                                      weight_decay=0.2, weight_decouple=True, rectify=False,
                                      foreach=False), problem)
  assert_parity(ours, ref, label="adabelief(weight_decay) vs pytorch-optimizer AdaBelief")
