"""The cautious wrapper against pytorch-optimizer 4.1.0's cautious variants (Lion, MARS), as a
wrapper of a full optimizer and of a direction, 120 steps in float64 on a matrix, a rank-3
stack, a vector and a scalar (tests for transforms/cautious)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optimkit
from optimkit.transforms.cautious import cautious, cautious_mask
from optimkit.transforms.mars import scale_by_mars
from optimkit.transforms.sign_momentum import scale_by_sign_momentum
from tests.parity import Problem, assert_parity, run_optax, run_torch


def test_cautious_full_lion_matches_pytorch_optimizer():
  from pytorch_optimizer import Lion

  # A full optimizer without weight decay: its updates are -lr * sign(...), so the wrapper's
  # default (updates added to the params) applies.
  problem = Problem(seed=61, noise=2.0)
  ours = run_optax(cautious(optimkit.lion(3e-3, weight_decay=0.0)), problem)
  ref = run_torch(lambda p: Lion(p, lr=3e-3, weight_decay=0.0, cautious=True, foreach=False),
                  problem)
  assert_parity(ours, ref, label="cautious(lion) vs pytorch-optimizer")


def test_cautious_lion_direction_with_decay_matches_pytorch_optimizer():
  from pytorch_optimizer import Lion

  problem = Problem(seed=62, noise=2.0)
  tx = optax.chain(cautious(scale_by_sign_momentum(0.9, 0.99), direction=True),
                   optax.add_decayed_weights(0.1), optax.scale_by_learning_rate(3e-3))
  ours = run_optax(tx, problem)
  ref = run_torch(lambda p: Lion(p, lr=3e-3, weight_decay=0.1, cautious=True, foreach=False),
                  problem)
  assert_parity(ours, ref, label="cautious(lion direction) + decay vs pytorch-optimizer")


def test_cautious_mars_matches_pytorch_optimizer():
  from pytorch_optimizer import MARS

  # pytorch-optimizer masks MARS's momentum before dividing by the (positive) denominator: the
  # same coordinates as masking the direction. All leaves through MARS (optimize_1d).
  problem = Problem(seed=63, noise=2.0)
  tx = optax.chain(cautious(scale_by_mars(), direction=True), optax.add_decayed_weights(0.05),
                   optax.scale_by_learning_rate(0.01))
  ours = run_optax(tx, problem)
  ref = run_torch(lambda p: MARS(p, lr=0.01, weight_decay=0.05, optimize_1d=True,
                                 cautious=True, foreach=False), problem)
  assert_parity(ours, ref, label="cautious(mars direction) vs pytorch-optimizer")


def test_cautious_mask_rule():
  u = {"w": jnp.array([1.0, -2.0, 3.0, 0.5]), "s": jnp.array(2.0)}
  g = {"w": jnp.array([1.0, 1.0, 1.0, -1.0]), "s": jnp.array(1.0)}
  mask = jax.jit(cautious_mask, static_argnums=2)
  along = mask(u, g, True)
  # Two of four agree: kept and scaled by 4 / (2 + 1); a scalar that agrees is halved.
  np.testing.assert_allclose(along["w"], [4 / 3, 0.0, 4.0, 0.0])
  np.testing.assert_allclose(along["s"], 1.0)
  against = mask(jax.tree.map(lambda x: -x, u), g, False)
  np.testing.assert_allclose(against["w"], [-4 / 3, 0.0, -4.0, 0.0])
  bf16 = mask({"w": u["w"].astype(jnp.bfloat16)}, {"w": g["w"]}, True)
  assert bf16["w"].dtype == jnp.bfloat16


def test_cautious_passes_extra_args_and_keeps_state():
  inner = optax.contrib.sam(optax.sgd(0.1), optax.sgd(0.01), opaque_mode=True)
  tx = cautious(inner)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  assert jax.tree.structure(state) == jax.tree.structure(inner.init(params))
  grad_fn = lambda p, i: jax.tree.map(lambda x: 2.0 * x, p)
  updates, _ = tx.update({"w": jnp.full(3, 2.0)}, state, params, grad_fn=grad_fn)
  assert np.all(np.asarray(updates["w"]) < 0)
