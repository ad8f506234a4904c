"""The declared `shampoo`, `soap` and `kron` against their references at the references' own
settings, float64, >= 100 steps, on a matrix, a matrix cut into padded blocks (Shampoo) or with
a dim above the factor limit (SOAP, Kron), a rank-3 leaf, a vector and a scalar:

  - shampoo == precondition-opt 0.3.0 `distributed_shampoo(..., eigh=True)`, called with the
    same positional arguments (switching is one import), coupled weight decay included;
  - soap == pytorch-optimizer 4.1.0 `SOAP` with its default decoupled weight decay (after the
    step, not on the first);
  - kron == kron-torch 0.3.3 `Kron` with weight decay (rank >= 2 leaves) and its default
    update-probability schedule, fed the same random vectors.

Weight-decay masks: the problem's gradients are per leaf, so every leaf's trajectory depends only
on that leaf; a masked run equals, leaf by leaf, the reference with decay (masked-in leaves) or
without (masked-out leaves). The references' harnesses (float64 QR / triangular solves, the fed
random vectors) are the primitives' parity tests' (tests/transforms/)."""

import jax
import numpy as np
import optax
import pytest
import torch

import optimkit
from optimkit.transforms.kron import kron_layout
from tests.parity import Problem, assert_parity, run_optax, run_torch
from tests.transforms.test_kron import _as_reference_problem, _key, _noise, reference_kron
from tests.transforms.test_shampoo import _distributed_shampoo, _in_float64
from tests.transforms.test_soap import reference_soap

assert reference_kron and reference_soap  # pytest fixtures, used by name below

STEPS = 100


def _leafwise(decayed: list, undecayed: list, mask: dict) -> list:
  """The trajectory whose leaf k is `decayed`'s where mask[k], else `undecayed`'s."""
  return [{k: (d if mask[k] else u)[k] for k in d} for d, u in zip(decayed, undecayed)]


# ----------------------------------------------------------------------------------------------
# Shampoo.

SHAMPOO_SHAPES = {"matrix": (6, 5), "large": (20, 12), "stack": (3, 4, 5), "vector": (7,),
                  "scalar": ()}
# learning_rate, block_size, beta1, beta2, diagonal_epsilon, matrix_epsilon, weight_decay,
# start_preconditioning_step, preconditioning_compute_steps, statistics_compute_steps,
# best_effort_shape_interpretation, graft_type (RMSprop), nesterov, exponent_override
SHAMPOO_ARGS = (0.05, 8, 0.9, 0.99, 1e-10, 1e-6, 1e-3, 5, 3, 2, True, 3, True, 0)


def _reference_shampoo(weight_decay, problem):
  args = list(SHAMPOO_ARGS)
  args[6] = weight_decay
  ds = _distributed_shampoo()
  return run_optax(_in_float64(ds.distributed_shampoo(
      *args, merge_small_dims_block_size=8, eigh=True, generate_training_metrics=False)),
      problem)


def test_shampoo_matches_distributed_shampoo_and_masks_its_decay():
  problem = Problem(seed=3, shapes=SHAMPOO_SHAPES, steps=120)
  decayed = _reference_shampoo(SHAMPOO_ARGS[6], problem)
  ours = run_optax(optimkit.shampoo(*SHAMPOO_ARGS, merge_small_dims_block_size=8), problem)
  # The reference scales matrix_epsilon by a power-iteration estimate of lambda_max, optimkit by
  # the eigh's exact one (measured ~4e-7).
  assert_parity(ours, decayed, label="shampoo vs distributed_shampoo (eigh)")
  mask = {"matrix": True, "large": False, "stack": True, "vector": False, "scalar": False}
  masked = run_optax(optimkit.shampoo(*SHAMPOO_ARGS, merge_small_dims_block_size=8,
                                      weight_decay_mask=mask), problem)
  expected = _leafwise(decayed, _reference_shampoo(0.0, problem), mask)
  assert_parity(masked, expected, label="shampoo masked decay vs distributed_shampoo per leaf")
  # The mask changed something: the masked-out leaves moved away from the decayed reference.
  assert np.max(np.abs(masked[-1]["large"] - decayed[-1]["large"])) > 1e-4


def test_shampoo_decoupled_decay_is_adamw_decay():
  """decoupled_weight_decay=True: the direction without decay, then -lr wd w (AdamW's)."""
  problem = Problem(seed=4, shapes={"matrix": (6, 5), "vector": (7,)}, steps=STEPS)
  lr, wd = 0.05, 0.1
  ours = run_optax(optimkit.shampoo(lr, 4, weight_decay=wd, decoupled_weight_decay=True,
                                    graft_type="adam"), problem)
  theirs = run_optax(optax.chain(
      optimkit.scale_by_shampoo(4, weight_decay=0.0, graft_type="adam"),
      optax.add_decayed_weights(wd), optax.scale_by_learning_rate(lr)), problem)
  assert_parity(ours, theirs, rtol=1e-12, label="shampoo decoupled decay vs chain")
  coupled = run_optax(optimkit.shampoo(lr, 4, weight_decay=wd, graft_type="adam"), problem)
  assert np.max(np.abs(coupled[-1]["matrix"] - ours[-1]["matrix"])) > 1e-4


# ----------------------------------------------------------------------------------------------
# SOAP.

SOAP_SHAPES = {"matrix": (6, 5), "wide": (4, 12), "stack": (3, 4, 5), "vector": (2,),
               "scalar": ()}
SOAP_OPTIONS = dict(precondition_frequency=3, max_precondition_dim=10, precondition_1d=True)


def _reference_soap(cls, weight_decay, problem):
  return run_torch(lambda p: cls(p, lr=3e-3, betas=(0.95, 0.95), weight_decay=weight_decay,
                                 **SOAP_OPTIONS), problem)


def test_soap_matches_pytorch_optimizer_and_masks_its_decay(reference_soap):
  # Decay 0.3 (lr * wd ~ 1e-3 a step) so that where it is applied shows in 100 steps.
  wd = 0.3
  problem = Problem(seed=6, shapes=SOAP_SHAPES, steps=STEPS)
  decayed = _reference_soap(reference_soap, wd, problem)
  ours = run_optax(optimkit.soap(3e-3, 0.95, 0.95, None, wd, **SOAP_OPTIONS), problem)
  assert_parity(ours, decayed, label="soap vs pytorch-optimizer SOAP (weight decay 0.3)")
  mask = {"matrix": True, "wide": False, "stack": True, "vector": False, "scalar": True}
  masked = run_optax(optimkit.soap(3e-3, 0.95, 0.95, None, wd, weight_decay_mask=mask,
                                   **SOAP_OPTIONS), problem)
  expected = _leafwise(decayed, _reference_soap(reference_soap, 0.0, problem), mask)
  assert_parity(masked, expected, label="soap masked decay vs pytorch-optimizer per leaf")
  assert np.max(np.abs(masked[-1]["wide"] - decayed[-1]["wide"])) > 1e-5


# ----------------------------------------------------------------------------------------------
# PSGD Kron.

# Leaf names sorted: the reference's parameter order is the tree order (the order of the V).
KRON_SHAPES = {"a_matrix": (6, 5), "b_wide": (4, 12), "c_stack": (3, 4, 5), "d_vector": (7,),
               "e_scalar": ()}


def _reference_kron(fed, weight_decay, problem):
  layouts = [kron_layout(s, 11, 2, None, True, None) for _, s in sorted(KRON_SHAPES.items())]
  noise = lambda step: _noise(step, [lay.merged for lay in layouts])
  trajectory = run_torch(
      lambda p: fed(p, noise, lr=0.02, b1=0.9, weight_decay=weight_decay,
                    max_size_triangular=11, precond_dtype=torch.float64),
      _as_reference_problem(problem))
  return [{k: v.reshape(KRON_SHAPES[k]) for k, v in r.items()} for r in trajectory]


def test_kron_matches_kron_torch_and_masks_its_decay(reference_kron):
  wd = 0.5
  problem = Problem(seed=10, shapes=KRON_SHAPES, steps=STEPS)
  key = lambda step, params: {"key": _key(step)}
  decayed = _reference_kron(reference_kron, wd, problem)
  # kron-torch preconditions the damped momentum on update steps (precondition_damped=True);
  # its default update schedule (None) is p = 1 for these 100 steps.
  ours = run_optax(optimkit.kron(0.02, 0.9, wd, None, 11, precondition_damped=True), problem,
                   extra_args=key)
  assert_parity(ours, decayed, label="kron vs kron-torch Kron (weight decay on rank >= 2)")
  mask = {"a_matrix": False, "b_wide": True, "c_stack": True, "d_vector": False,
          "e_scalar": False}
  masked = run_optax(optimkit.kron(0.02, 0.9, wd, None, 11, precondition_damped=True,
                                   weight_decay_mask=mask), problem, extra_args=key)
  expected = _leafwise(decayed, _reference_kron(reference_kron, 0.0, problem), mask)
  assert_parity(masked, expected, label="kron masked decay vs kron-torch per leaf")
  assert np.max(np.abs(masked[-1]["a_matrix"] - decayed[-1]["a_matrix"])) > 1e-4


def test_kron_seed_or_key():
  params = {"w": jax.numpy.ones((4, 3))}
  grads = {"w": jax.numpy.full((4, 3), 0.5)}
  with pytest.raises(ValueError, match="key"):
    tx = optimkit.kron()
    tx.update(grads, tx.init(params), params)
  tx = optimkit.kron(seed=1)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert np.all(np.isfinite(np.asarray(updates["w"]))) and np.any(np.asarray(updates["w"]))
