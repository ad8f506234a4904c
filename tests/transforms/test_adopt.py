"""optimkit.adopt against torch-adopt 0.1.0 (the authors' package) and optax.contrib.adopt, 120
steps in float64 on a matrix, a rank-3 stack, a vector and a scalar (tests for transforms/adopt
and its declaration in optimizers/modern)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optimkit
from optimkit.transforms.adopt import scale_by_adopt
from tests.parity import Problem, assert_parity, run_optax, run_torch


@pytest.mark.parametrize("weight_decay, decouple", [(0.0, False), (0.1, False), (0.1, True)])
def test_adopt_matches_torch_adopt(weight_decay, decouple):
  from adopt import ADOPT

  if weight_decay == 0.0:
    # The defaults, with large noise so that the t^0.25 clip is active early.
    problem, kwargs, betas = Problem(seed=22, noise=3.0), {}, (0.9, 0.9999)
  else:
    # b2 = 0.99 so that the second moment keeps moving over the run.
    problem, kwargs, betas = Problem(seed=21), {"b2": 0.99}, (0.9, 0.99)
  tx = optimkit.adopt(0.02, weight_decay=weight_decay, decouple=decouple, **kwargs)
  ours = run_optax(tx, problem)
  ref = run_torch(lambda p: ADOPT(p, lr=0.02, betas=betas, weight_decay=weight_decay,
                                  decouple=decouple, foreach=False), problem)
  assert_parity(ours, ref, label=f"adopt (wd={weight_decay}, decouple={decouple}) vs torch-adopt")
  if weight_decay == 0.0:
    unclipped = run_optax(optimkit.adopt(0.02, use_clipping=False), problem)
    assert np.max(np.abs(unclipped[-1]["matrix"] - ours[-1]["matrix"])) > 1e-6  # clip mattered


@pytest.mark.parametrize("kwargs", [{"nesterov": True, "b2": 0.95,
                                     "clip_value_fn": lambda t: 0.5 + t ** 0.5},
                                    {"use_clipping": False}])
def test_adopt_matches_optax(kwargs):
  problem = Problem(seed=23, noise=2.0)
  ours = run_optax(optimkit.adopt(0.02, **kwargs), problem)
  ref = run_optax(optax.contrib.adopt(0.02, **kwargs), problem)
  assert_parity(ours, ref, label=f"adopt {sorted(kwargs)} vs optax")


def test_adopt_first_step_only_initialises():
  tx = scale_by_adopt(nesterov=True, use_clipping=False)
  params = {"w": jnp.ones((3, 2))}
  state, update = tx.init(params), jax.jit(tx.update)
  grads = {"w": jnp.arange(6.0).reshape(3, 2) - 2.5}
  updates, state = update(grads, state)
  assert np.all(np.asarray(updates["w"]) == 0.0)
  np.testing.assert_allclose(state.nu["w"], np.square(grads["w"]))
  updates, state = update(grads, state)
  assert np.all(np.abs(np.asarray(updates["w"])) > 0.0)
