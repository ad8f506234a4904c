"""Lion against the authors' PyTorch port (lion-pytorch) and optax.lion, 120 steps."""

import optax

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch


def test_lion_matches_lion_pytorch_and_optax():
  from lion_pytorch import Lion

  problem = Problem(seed=2)
  ours = run_optax(optimkit.lion(3e-3, b1=0.9, b2=0.99, weight_decay=0.5), problem)
  ref = run_torch(lambda p: Lion(p, lr=3e-3, betas=(0.9, 0.99), weight_decay=0.5), problem)
  assert_parity(ours, ref, label="lion vs lion-pytorch")
  other = run_optax(optax.lion(3e-3, b1=0.9, b2=0.99, weight_decay=0.5), problem)
  assert_parity(ours, other, label="lion vs optax")
