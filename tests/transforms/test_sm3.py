"""SM3 against optax.sm3 (leaves of rank 1 to 3) and pytorch-optimizer's SM3 (rank 0 to 3),
100 float64 steps; optax.sm3 fails on a rank-0 leaf."""

import jax
import jax.numpy as jnp
import optax
import pytest

import optimkit
from optimkit.transforms.sm3 import SM3State
from optimkit.transforms._util import find_state
from tests.parity import Problem, assert_parity, run_optax, run_torch
from tests.transforms._torch_threads import one_torch_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sm3_matches_optax_on_tensors():
  problem = Problem(seed=91, steps=100, shapes={"matrix": (6, 5), "stack": (3, 4, 5),
                                                "vector": (7,)})
  ours = run_optax(optimkit.sm3(0.1, momentum=0.8), problem)
  assert_parity(ours, run_optax(optax.sm3(0.1, momentum=0.8), problem), label="sm3 vs optax.sm3")


def test_sm3_matches_pytorch_optimizer_with_a_scalar_leaf():
  from pytorch_optimizer import SM3

  problem = Problem(seed=92, steps=100)
  ours = run_optax(optimkit.sm3(0.1, momentum=0.8), problem)
  ref = run_torch(lambda p: SM3(p, lr=0.1, momentum=0.8, eps=1e-8, foreach=False), problem)
  assert_parity(ours, ref, label="sm3 vs pytorch-optimizer SM3")


def test_sm3_state_is_per_axis():
  params = {"w": jnp.zeros((6, 5, 4)), "b": jnp.zeros(3), "s": jnp.zeros(())}
  state = optimkit.sm3().init(params)
  shapes = jax.tree.map(jnp.shape, find_state(state, SM3State).accumulators)
  assert shapes == {"w": ((6, 1, 1), (1, 5, 1), (1, 1, 4)), "b": ((3,),), "s": ((),)}


def test_optax_sm3_fails_on_a_scalar_leaf():
  # If this starts failing, optax handles rank-0 leaves and the docstring should say so.
  params = {"s": jnp.zeros(())}
  tx = optax.sm3(0.1)
  with pytest.raises(IndexError):
    tx.update({"s": jnp.ones(())}, tx.init(params), params)
