"""Adafactor against torch.optim.Adafactor and optax.adafactor, 120 steps; the factoring rule
on rank-3 leaves; decay_offset without NaN."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import optimkit
from optimkit.transforms.factored import factored_dims
from tests.parity import Problem, assert_parity, run_optax, run_torch


def test_adafactor_matches_torch_relative_step():
  # PyTorch factors every leaf of rank >= 2 over its last two dims: with min_dim_size_to_factor=1
  # and leaves whose two largest dims are the last two, the rules coincide.
  problem = Problem(seed=3, shapes={"matrix": (6, 5), "stack": (2, 4, 5), "vector": (7,),
                                    "scalar": ()})
  ours = run_optax(optimkit.adafactor(learning_rate=1e-2, min_dim_size_to_factor=1,
                                      weight_decay=0.05), problem)
  ref = run_torch(lambda p: torch.optim.Adafactor(p, lr=1e-2, weight_decay=0.05,
                                                  foreach=False), problem)
  assert_parity(ours, ref, label="adafactor (relative step) vs torch")


def test_adafactor_matches_optax_fixed_lr_with_momentum():
  # Largest dims not last (rank-3: factor dims 0 and 2), one leaf below the factoring size.
  problem = Problem(seed=4, shapes={"a": (9, 2, 8), "b": (3, 10), "small": (2, 3), "v": (5,),
                                    "s": ()})
  kwargs = dict(learning_rate=1e-2, min_dim_size_to_factor=3, momentum=0.9)
  ours = run_optax(optimkit.adafactor(relative_step=False, **kwargs), problem)
  ref = run_optax(optax.adafactor(**kwargs), problem)
  assert_parity(ours, ref, label="adafactor (fixed lr, momentum) vs optax")


def test_factored_dims_rule():
  assert factored_dims((9, 2, 8), True, 3) == (2, 0)
  assert factored_dims((256, 512), True, 128) == (0, 1)
  assert factored_dims((64, 512), True, 128) is None
  assert factored_dims((512,), True, 1) is None
  assert factored_dims((4, 5), False, 1) is None


def test_factored_state_is_sublinear():
  tx = optimkit.scale_by_factored_rms(min_dim_size_to_factor=128)
  state = tx.init({"w": jnp.zeros((4, 256, 512))})
  assert state.v_row["w"].shape == (4, 256)
  assert state.v_col["w"].shape == (4, 512)
  assert state.v["w"].shape == (1,)


def test_decay_offset_has_no_nan_where_optax_does():
  params = {"w": jnp.ones((4, 4)), "v": jnp.ones(3)}
  grads = jax.tree.map(lambda p: 0.1 * p, params)
  ours = optimkit.adafactor(1e-2, decay_offset=5, min_dim_size_to_factor=1)
  updates, _ = ours.update(grads, ours.init(params), params)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
  theirs = optax.adafactor(1e-2, decay_offset=5, min_dim_size_to_factor=1)
  their_updates, _ = theirs.update(grads, theirs.init(params), params)
  assert not all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(their_updates))


def test_update_clipping_bounds_rms():
  tx = optimkit.scale_by_factored_rms(clipping_threshold=1.0, min_dim_size_to_factor=1)
  params = {"w": jnp.zeros((8, 8))}
  state = tx.init(params)
  rng = np.random.default_rng(0)
  for step in range(5):
    grads = {"w": jnp.asarray(rng.normal(size=(8, 8)) * 10 ** step)}
    updates, state = tx.update(grads, state)
    assert float(jnp.sqrt(jnp.mean(updates["w"] ** 2))) <= 1.0 + 1e-9
