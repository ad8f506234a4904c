"""optimkit.came against came-pytorch 0.1.3 (the authors' package), 120 steps in float64 on a matrix, a
rank-3 stack, a vector, a scalar and a column matrix (tests for transforms/came)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optimkit
from optimkit.transforms.came import is_factored, scale_by_came
from tests.parity import Problem, assert_parity, run_optax, run_torch

SHAPES = {"matrix": (6, 5), "stack": (3, 4, 5), "vector": (7,), "scalar": (), "column": (4, 1)}


@pytest.mark.parametrize("weight_decay, betas", [(0.0, (0.9, 0.999, 0.9999)),
                                                 (0.05, (0.8, 0.95, 0.99))])
def test_came_matches_came_pytorch(weight_decay, betas):
  from came_pytorch import CAME

  # noise 3 so that the RMS clipping of u acts; the smaller betas make the confidence
  # statistics move within the run.
  problem = Problem(seed=51, shapes=SHAPES, noise=3.0)
  b1, b2, b3 = betas
  ours = run_optax(optimkit.came(0.01, b1, b2, b3, weight_decay=weight_decay), problem)
  ref = run_torch(lambda p: CAME(p, lr=0.01, betas=betas, weight_decay=weight_decay), problem)
  assert_parity(ours, ref, label=f"came (wd={weight_decay}, betas={betas}) vs came-pytorch")


def test_came_clip_threshold_matches_came_pytorch():
  from came_pytorch import CAME

  problem = Problem(seed=52, shapes=SHAPES)
  ours = run_optax(optimkit.came(0.01, clipping_threshold=0.3, eps1=1e-20, eps2=1e-10),
                   problem)
  ref = run_torch(lambda p: CAME(p, lr=0.01, clip_threshold=0.3, eps=(1e-20, 1e-10)), problem)
  assert_parity(ours, ref, label="came (clip 0.3) vs came-pytorch")


def test_came_state_is_factored_and_fresh():
  params = {"w": jnp.ones((3, 4, 5)), "b": jnp.ones(5), "e": jnp.ones((0, 3))}
  state = scale_by_came().init(params)
  assert state.v_row["w"].shape == (3, 4) and state.v_col["w"].shape == (3, 5)
  assert state.res_row["w"].shape == (3, 4) and state.v["w"].shape == (1,)
  assert state.v["b"].shape == (5,) and state.v["e"].shape == (0, 3)
  assert not is_factored((0, 3)) and is_factored((1, 1))
  leaves = jax.tree.leaves(state)
  assert len({id(leaf) for leaf in leaves}) == len(leaves)
  updates, _ = jax.jit(scale_by_came().update)(params, state)
  assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))
