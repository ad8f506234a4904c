"""LAMB and LARS against optax.lamb / optax.lars (120 steps), the per-slice trust ratio of a
scan-stacked leaf against the same layers unstacked, zero norms and the mask."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimkit
from tests.parity import Problem, assert_parity, max_relative_error, run_optax, run_torch


def test_lamb_matches_optax():
  problem = Problem(seed=5)
  ours = run_optax(optimkit.lamb(1e-2, weight_decay=0.01), problem)
  ref = run_optax(optax.lamb(1e-2, weight_decay=0.01), problem)
  assert_parity(ours, ref, label="lamb vs optax")


def test_lars_matches_pytorch_optimizer():
  from pytorch_optimizer import LARS

  problem = Problem(seed=6)
  matrices_only = {k: len(s) > 1 for k, s in problem.shapes.items()}  # as pytorch-optimizer
  ours = run_optax(optimkit.lars(0.5, weight_decay=0.01, trust_coefficient=0.02, momentum=0.9,
                                 weight_decay_mask=matrices_only, trust_ratio_mask=matrices_only), problem)
  ref = run_torch(lambda p: LARS(p, lr=0.5, weight_decay=0.01, trust_coefficient=0.02,
                                 momentum=0.9, foreach=False), problem)
  assert_parity(ours, ref, label="lars vs pytorch-optimizer")


def test_optax_lars_deviates_from_the_paper_denominator():
  """optax divides by ||g + wd w|| where the paper divides by ||g|| + wd ||w||."""
  problem = Problem(seed=6)
  kwargs = dict(weight_decay=0.05, trust_coefficient=0.02, momentum=0.9)
  ours = run_optax(optimkit.lars(0.5, **kwargs), problem)
  theirs = run_optax(optax.lars(0.5, **kwargs), problem)
  assert max_relative_error(theirs, ours) > 1e-3
  # Without weight decay the two definitions coincide.
  kwargs["weight_decay"] = 0.0
  assert_parity(run_optax(optimkit.lars(0.5, **kwargs), problem),
                run_optax(optax.lars(0.5, **kwargs), problem), label="lars (wd=0) vs optax")


def test_stacked_lamb_equals_unstacked_layers():
  # One leaf (3, 4, 5) holding three layers must step like three separate (4, 5) leaves.
  stacked_problem = Problem(seed=7, shapes={"layers": (3, 4, 5), "head": (5,)})
  unstacked = Problem(seed=7, shapes={"layers": (3, 4, 5), "head": (5,)})
  ours = run_optax(optimkit.lamb(1e-2, weight_decay=0.01, stack_dims={"layers": 1, "head": 0}),
                   stacked_problem)

  # Reference: optax.lamb on the layers split into separate leaves.
  tx = optax.lamb(1e-2, weight_decay=0.01)
  split = lambda p: {"l0": p["layers"][0], "l1": p["layers"][1], "l2": p["layers"][2],
                     "head": p["head"]}
  join = lambda s: {"layers": np.stack([s["l0"], s["l1"], s["l2"]]), "head": s["head"]}
  params = split({k: jnp.asarray(v) for k, v in unstacked.init.items()})
  state = tx.init(params)
  ref = []
  for step in range(unstacked.steps):
    grads = split({k: jnp.asarray(v) for k, v in unstacked.grad(step, join(params)).items()})
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    ref.append({k: np.asarray(v) for k, v in join(params).items()})
  assert_parity(ours, ref, label="stacked lamb vs optax per layer")

  # And it really differs from one ratio for the whole stack.
  whole = run_optax(optimkit.lamb(1e-2, weight_decay=0.01), stacked_problem)
  assert np.max(np.abs(whole[-1]["layers"] - ours[-1]["layers"])) > 1e-4


def test_zero_norms_give_ratio_one():
  tx = optimkit.scale_by_trust_ratio()
  params = {"zero_w": jnp.zeros(3), "w": jnp.ones(3)}
  updates = {"zero_w": jnp.ones(3), "w": jnp.zeros(3)}
  out, _ = tx.update(updates, tx.init(params), params)
  np.testing.assert_array_equal(out["zero_w"], jnp.ones(3))
  np.testing.assert_array_equal(out["w"], jnp.zeros(3))


def test_mask_leaves_unmasked_updates_unchanged():
  tx = optimkit.scale_by_trust_ratio(mask={"w": True, "b": False})
  params = {"w": jnp.full(4, 2.0), "b": jnp.full(4, 2.0)}
  updates = {"w": jnp.full(4, 0.5), "b": jnp.full(4, 0.5)}
  out, _ = tx.update(updates, tx.init(params), params)
  np.testing.assert_allclose(out["w"], jnp.full(4, 2.0))  # ||w||/||u|| = 4
  np.testing.assert_array_equal(out["b"], updates["b"])
