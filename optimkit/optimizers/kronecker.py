"""Kronecker-factored preconditioners: Shampoo, SOAP and PSGD-Kron.

Each is one declaration whose body chains its primitive (`optimkit.transforms.shampoo`,
`.soap`, `.kron`, sharing the blocked statistics of `optimkit.transforms.kronecker`), the
weight decay of its reference and the learning rate. None of them is in optax, so the arguments
follow the authors' packages: `shampoo` takes `distributed_shampoo`'s names and positional order
(precondition-opt 0.3.0, switch by import), `soap` pytorch-optimizer's `SOAP` (betas split into
b1, b2), `kron` kron-torch's `Kron`.

What decides structure is `structural(...)` (block sizes, refresh periods, the root's exponent,
the dims that get a matrix factor); every other number is data (`optimkit.set_hyperparams`,
`optax.inject_hyperparams`). The Adam / grafting moments and momenta are stored through
`state_storage` (`optimkit.state.storage`); the O(d^2) matrices, Kronecker statistics, roots,
eigenbases and triangular factors, through `preconditioner_storage` ("float32", the default,
"bfloat16" or "8bit"; `optimkit.state.matrices`). One name for the three: Kron has no
statistics, and what all of them store is the preconditioner.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit.optimizers._declare import Mask, ScalarOrSchedule, optimizer, storage_of, structural
from optimkit.state import matrices
from optimkit.state.storage import StorageLike
from optimkit.transforms._util import increment
from optimkit.transforms.kron import scale_by_kron
from optimkit.transforms.shampoo import scale_by_shampoo
from optimkit.transforms.soap import scale_by_soap

_BETA = dict(low=0.0, high=1.0, high_inclusive=False)
_NON_NEGATIVE = dict(low=0.0)
_POSITIVE = dict(low=0.0, low_inclusive=False)


def _count(low: int) -> dict:
  return dict(low=low, integer=True)


# ----------------------------------------------------------------------------------------------
# Shampoo.


@optimizer(
    family="kronecker", typical_lr=0.03,
    reference="precondition-opt 0.3.0 distributed_shampoo (Anil et al. 2020, JAX)",
    ranges={"block_size": _count(1), "beta1": _BETA, "beta2": dict(low=0.0, high=1.0),
            "diagonal_epsilon": _NON_NEGATIVE, "matrix_epsilon": _NON_NEGATIVE,
            "start_preconditioning_step": _count(0), "preconditioning_compute_steps": _count(1),
            "statistics_compute_steps": _count(1), "exponent_override": _count(0),
            "skip_preconditioning_dim_size_gt": _count(0),
            "skip_preconditioning_rank_lt": _count(0),
            "merge_small_dims_block_size": _count(1), "inverse_failure_threshold": _POSITIVE})
def shampoo(
    learning_rate: ScalarOrSchedule = 0.03,
    block_size: int = structural(128),
    beta1: float = 0.9,
    beta2: float = 0.999,
    diagonal_epsilon: float = 1e-10,
    matrix_epsilon: float = 1e-6,
    weight_decay: float = 0.0,
    start_preconditioning_step: int = 5,
    preconditioning_compute_steps: int = structural(1),
    statistics_compute_steps: int = structural(1),
    best_effort_shape_interpretation: bool = True,
    graft_type: Any = "sgd",
    nesterov: bool = True,
    exponent_override: int = structural(0),
    *,
    weight_decay_mask: Mask = None,
    decoupled_weight_decay: bool = False,
    moving_average_for_momentum: bool = False,
    skip_preconditioning_dim_size_gt: int = structural(4096),
    skip_preconditioning_rank_lt: int = structural(1),
    merge_small_dims_block_size: int = structural(4096),
    relative_matrix_epsilon: bool = True,
    inverse_failure_threshold: float = 0.1,
    root_method: str = "eigh",
    state_storage: StorageLike = "float32",
    preconditioner_storage: matrices.StorageLike = "float32",
) -> optax.GradientTransformation:
  """Distributed Shampoo (Gupta et al. 2018; Anil et al. 2020): blocked Kronecker statistics,
  inverse p-th roots every few steps, grafted to a diagonal method's step size, momentum.

  Per block G of each leaf (merged small dims, dims > block_size cut into blocks), 0-based t:
      S_i = beta2 S_i + (1 - beta2) G_(i) G_(i)^T            (beta2 = 1: sums, AdaGrad-style)
      P_i = (S_i + matrix_epsilon lambda_max I)^(-1/p)       every preconditioning_compute_steps
      D = G x_1 P_1 x_2 P_2 ...;   A = graft(g);   U = D |A|_F / |D|_F (+ weight_decay w)
      m = beta1 m + U;   w_t = w_{t-1} - lr (t >= start_preconditioning_step ? m : m_A)
  with Nesterov's U + beta1 m (and the grafted m_A the same way from A); see
  `optimkit.transforms.shampoo` for the grafting rules and the diagonal fallback.

  Args (distributed_shampoo's, in its order):
    learning_rate: a float >= 0 or a schedule. Default 0.03 (distributed_shampoo has none;
      a start for SGD grafting with Nesterov momentum).
    block_size: dims larger than this are cut into blocks, integer >= 1 (structural).
      Default 128 (distributed_shampoo has none; its examples use 128 to 1024).
    beta1: momentum, [0, 1). Default 0.9.
    beta2: decay of the statistics and of RMSprop/Adam grafting, [0, 1]. Default 0.999.
    diagonal_epsilon: the grafting's epsilon, >= 0. Default 1e-10.
    matrix_epsilon: damping before the root (relative to lambda_max), >= 0. Default 1e-6.
    weight_decay: added to the update before momentum (coupled, the reference's default), or
      AdamW's -lr weight_decay w with `decoupled_weight_decay`, >= 0. Default 0.
    start_preconditioning_step: steps of the grafted update first, integer >= 0. Default 5.
    preconditioning_compute_steps: refresh the roots every this many steps (structural). 1.
    statistics_compute_steps: update the statistics every this many steps (structural). 1.
    best_effort_shape_interpretation: merge small dims (up to merge_small_dims_block_size).
    graft_type: "sgd" (default), "adagrad", "rmsprop", "rmsprop_normalized",
      "adagrad_normalized", "adam", "sqrt_n", "none", or a distributed_shampoo.GraftingType.
    nesterov: Nesterov momentum. Default True.
    exponent_override: p of the inverse root; 0: twice the number of block dims (structural).
  Args (keyword-only; distributed_shampoo's names where it has them):
    weight_decay_mask: which leaves decay (a tree of bools or a callable params -> tree).
    decoupled_weight_decay: AdamW's decay -lr wd w, after the direction (see below).
    moving_average_for_momentum: momentum as an EMA (added terms scaled by 1 - beta1).
    skip_preconditioning_dim_size_gt: leaves with a larger dim are only grafted. Default 4096.
    skip_preconditioning_rank_lt: leaves of lower rank are only grafted. Default 1 (scalars).
    merge_small_dims_block_size: largest merged dim. Default 4096.
    relative_matrix_epsilon: scale matrix_epsilon by lambda_max. Default True.
    inverse_failure_threshold: coupled Newton's residual above which a root is discarded, > 0.
    root_method: "eigh" (default) or "newton" (coupled Newton, the reference's default,
      `eigh=False` there).
    state_storage: storage of the momenta and the grafting statistics ("float32", "bfloat16",
      "8bit", "4bit").
    preconditioner_storage: storage of the Kronecker statistics and roots: "float32" (at least
      float32, default), "bfloat16" or "8bit" (`optimkit.state.matrices`; 8-bit keeps each
      matrix's diagonal in float, as distributed_shampoo's best_effort_memory_usage_reduction,
      which stores these matrices in int16). Reduced formats need matrix_epsilon >= ~1e-3: the
      root cannot resolve eigenvalues below the storage's precision (see the module doc of
      `optimkit.state.matrices` for the measured cost).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.shampoo(1e-3, block_size=128, beta1=0.9, beta2=0.99,
    ...                       graft_type="rmsprop_normalized", preconditioning_compute_steps=10)

  Equals `distributed_shampoo(learning_rate, block_size, ..., eigh=True)` to about 1e-7 over
  120 float64 steps (tests/optimizers/test_kronecker.py); `root_method="newton"` for its
  default coupled Newton roots. Differs from the reference: the roots by eigh by default;
  statistics in the params' compute dtype (the reference starts them in float32);
  `decoupled_weight_decay=True` is AdamW's -lr wd w (the reference's, under its default
  `decoupled_learning_rate`, multiplies the decay by the learning rate twice); "adam" grafting
  added; not implemented: one-sided preconditioners, low-rank / frequent-directions
  compression, LOBPCG, gradient clipping by scaled norm, int16 statistics (8-bit and
  bfloat16 instead, `preconditioner_storage`).

  References:
    Gupta, Koren & Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization", 2018.
    Anil, Gupta, Koren, Regan & Singer, "Scalable Second Order Optimization for Deep
    Learning", arXiv:2002.09018.
  """
  coupled = 0.0 if decoupled_weight_decay else weight_decay
  direction = scale_by_shampoo(
      block_size, beta1, beta2, diagonal_epsilon, matrix_epsilon, coupled,
      start_preconditioning_step, preconditioning_compute_steps, statistics_compute_steps,
      best_effort_shape_interpretation, graft_type, nesterov, exponent_override,
      merge_small_dims_block_size=merge_small_dims_block_size,
      skip_preconditioning_dim_size_gt=skip_preconditioning_dim_size_gt,
      skip_preconditioning_rank_lt=skip_preconditioning_rank_lt,
      moving_average_for_momentum=moving_average_for_momentum,
      relative_matrix_epsilon=relative_matrix_epsilon,
      inverse_failure_threshold=inverse_failure_threshold, root_method=root_method,
      weight_decay_mask=None if decoupled_weight_decay else weight_decay_mask,
      state_storage=state_storage, preconditioner_storage=preconditioner_storage)
  if not decoupled_weight_decay:
    return optax.chain(direction, optax.scale_by_learning_rate(learning_rate))
  return optax.chain(direction, optax.add_decayed_weights(weight_decay, weight_decay_mask),
                     optax.scale_by_learning_rate(learning_rate))


# ----------------------------------------------------------------------------------------------
# SOAP.


class DecayAfterStepState(NamedTuple):
  """State of `_decay_after_step`: steps so far (the first one does not decay)."""

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do


def _decay_after_step(rate: Any) -> optax.GradientTransformation:
  """The final update of w <- (w + u)(1 - rate), u the incoming update: u - rate (w + u), from
  the second step on (the authors' SOAP decays after its step and not on the first, which only
  sets up the bases). rate = lr * weight_decay."""

  def init_fn(params):
    del params
    return DecayAfterStepState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("soap: weight decay needs params passed to update().")
    first = state.count == 0
    decayed = jax.tree.map(
        lambda u, w: jnp.where(first, u, u - rate * (w + u)).astype(u.dtype), updates, params)
    return decayed, DecayAfterStepState(count=increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


@optimizer(
    family="kronecker", typical_lr=3e-3,
    reference="pytorch-optimizer 4.1.0 SOAP (the authors' nikhilvyas/SOAP); the paper's "
              "Algorithms 3-4 (sort_eigenbasis=False) against NumPy",
    ranges={"shampoo_beta": _BETA, "precondition_frequency": _count(1),
            "max_precondition_dim": _count(1), "block_size": _count(1)})
def soap(
    learning_rate: ScalarOrSchedule = 3e-3,
    b1: float = 0.95,
    b2: float = 0.95,
    shampoo_beta: float | None = None,
    weight_decay: float = 0.01,
    precondition_frequency: int = structural(10),
    max_precondition_dim: int = structural(10000),
    merge_dims: bool = False,
    precondition_1d: bool = False,
    correct_bias: bool = True,
    normalize_gradient: bool = False,
    eps: float = 1e-8,
    weight_decay_mask: Mask = None,
    *,
    block_size: int | None = structural(None),
    sort_eigenbasis: bool = True,
    state_storage: StorageLike = "float32",
    preconditioner_storage: matrices.StorageLike = "float32",
) -> optax.GradientTransformation:
  """SOAP (Vyas et al. 2024): Adam run in the eigenbasis of Shampoo's factors, the basis
  refreshed every `precondition_frequency` steps by one power iteration and QR.

  Per leaf (matrix dims Q_i, L_i; see `optimkit.transforms.soap`), Adam step count t:
      first step: L_i = (1 - shampoo_beta) G_(i) G_(i)^T, Q_i = eigh(L_i); no update
      g' = g x_i Q_i^T;   m = b1 m + (1 - b1) g';   v = b2 v + (1 - b2) g'^2   (eigenbasis)
      u = (m / (sqrt(v) + eps)) x_i Q_i * sqrt(1 - b2^t) / (1 - b1^t)
      w_t = (w_{t-1} - lr u)(1 - lr weight_decay)        (the authors' order)
      L_i = shampoo_beta L_i + (1 - shampoo_beta) G_(i) G_(i)^T;  every f steps Q_i = QR(L_i Q_i)
        and m moved into the new basis (m x_i Q_i^old x_i Q_i^new^T), as the authors' code does

  Args (pytorch-optimizer's, in its order; betas=(b1, b2)):
    learning_rate: a float >= 0 or a schedule. Default 3e-3.
    b1, b2: moment decays, [0, 1). Defaults 0.95, 0.95.
    shampoo_beta: decay of the statistics, [0, 1); None: b2.
    weight_decay: decoupled, applied after the step (w (1 - lr wd)) from the second step on,
      >= 0. Default 0.01.
    precondition_frequency: refresh the bases every this many steps (structural). Default 10.
    max_precondition_dim: dims above this are not rotated; the largest merged dim
      (structural). Default 10000.
    merge_dims: merge small dims before factoring. Default False.
    precondition_1d: rotate vectors too (a full basis). Default False.
    correct_bias: Adam's bias correction. Default True.
    normalize_gradient: divide the rotated-back direction by its RMS. Default False.
    eps: added to sqrt(v), >= 0. Default 1e-8.
    weight_decay_mask: which leaves decay (tree of bools or callable). Default all.
  Args (optimkit's):
    block_size: cut dims above this into blocks with their own bases (structural; None: none,
      as the reference). This is what spreads SOAP's eigh/QR work over a mesh: bases of one size
      are split evenly over the devices, where unblocked factor sizes leave groups smaller than
      the device count and every device computes a whole basis (benchmarks/kronecker.py).
    sort_eigenbasis: order each basis by estimated eigenvalue before the QR, permuting v, as the
      authors' code does (default); False: the paper's Algorithm 4 as written.
    state_storage: storage of m and v.
    preconditioner_storage: storage of the statistics and eigenbases: "float32" (at least
      float32, default), "bfloat16" or "8bit" (`optimkit.state.matrices`; a reduced-precision
      basis is re-orthogonalized by one Bjorck step when read).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.soap(3e-3, b1=0.95, b2=0.95, weight_decay=0.01, precondition_frequency=10)

  Equals pytorch-optimizer's `SOAP(params, lr, betas=(b1, b2), ...)` in float64 (its QR run in
  float64; it casts to float32); the reference's `data_format="channels_last"` is not
  implemented; merging follows distributed_shampoo's rule (see `optimkit.transforms.soap`).

  References:
    Vyas, Morwani, Zhao, Shapira, Brandfonbrener, Janson & Kakade, "SOAP: Improving and
    Stabilizing Shampoo using Adam", arXiv:2409.11321, 2024.
  """
  direction = scale_by_soap(
      b1, b2, shampoo_beta, eps, precondition_frequency, max_precondition_dim, merge_dims,
      precondition_1d, correct_bias, normalize_gradient, block_size=block_size,
      sort_eigenbasis=sort_eigenbasis, state_storage=state_storage,
      preconditioner_storage=preconditioner_storage)
  decay = _decay_after_step(learning_rate * weight_decay)  # type: ignore[operator]  # an array
  if weight_decay_mask is not None:
    decay = optax.masked(decay, weight_decay_mask)
  return optax.chain(direction, optax.scale_by_learning_rate(learning_rate), decay)


# ----------------------------------------------------------------------------------------------
# PSGD Kron.


def _rank_at_least_2(params: Any) -> Any:
  """kron-torch's weight-decay rule: leaves of two or more dims decay."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


@optimizer(
    family="kronecker", typical_lr=3e-4, needs=("key",),
    reference="kron-torch 0.3.3 Kron (Evan Walters, after lixilinx/psgd_torch), same random "
              "vectors; the paper's update (undamped momentum preconditioned) against NumPy",
    ranges={"preconditioner_update_probability": dict(low=0.0, high=1.0, low_inclusive=False),
            "max_size_triangular": _count(0), "min_ndim_triangular": _count(0),
            "precond_lr": _POSITIVE, "precond_init_scale": _POSITIVE, "block_size": _count(1)})
def kron(
    learning_rate: ScalarOrSchedule = 3e-4,
    b1: float = 0.9,
    weight_decay: float = 0.0,
    preconditioner_update_probability: ScalarOrSchedule | None = None,
    max_size_triangular: int = structural(8192),
    min_ndim_triangular: int = structural(2),
    memory_save_mode: str | None = None,
    momentum_into_precond_update: bool = True,
    precond_lr: float = 0.1,
    precond_init_scale: float = 1.0,
    merge_dims: bool = True,
    mu_dtype: Any = None,
    *,
    weight_decay_mask: Mask = None,
    block_size: int | None = structural(None),
    precondition_damped: bool = False,
    random_updates: bool = False,
    seed: int | None = None,
    state_storage: StorageLike = "float32",
    preconditioner_storage: matrices.StorageLike = "float32",
    cache_preconditioner: bool = structural(False),
) -> optax.GradientTransformation:
  """PSGD Kron (Li 2024): SGD with momentum preconditioned by a Kronecker product of
  triangular factors, fitted to whiten the gradient on some steps.

  Per leaf (see `optimkit.transforms.kron`), 1-based t:
      m = b1 m + (1 - b1) g;   m_hat = m / (1 - b1^t)
      with probability p (kron-torch's counter): one Lie-group step of every factor Q_i from
        (V, m_hat + damping V), V ~ N(0, I)
      u = m_hat x_i (Q_i^T Q_i);   u <- u min(1, 1.1 / rms(u))
      w_t = w_{t-1} - lr (u + weight_decay w_{t-1})        (decay on leaves of rank >= 2)

  Randomness: pass `key=` to every `update` (the same on every device), or construct with
  `seed=`; as `optimkit.sophia`.

  Args (kron-torch's, in its order):
    learning_rate: a float >= 0 or a schedule. Default 3e-4.
    b1: momentum, [0, 1). Default 0.9.
    weight_decay: added to the preconditioned update, >= 0. Default 0.
    preconditioner_update_probability: p in (0, 1] or a schedule of the step; None:
      `optimkit.transforms.kron.precond_update_prob_schedule()` (1 for 500 steps, then down to
      0.03), as kron-torch.
    max_size_triangular: dims above this get a diagonal factor (structural). Default 8192.
    min_ndim_triangular: leaves with fewer dims get diagonal factors (structural). Default 2.
    memory_save_mode: None, "smart_one_diag", "one_diag" or "all_diag".
    momentum_into_precond_update: fit the preconditioner to m_hat (default) or g.
    precond_lr: the preconditioner's step size, > 0. Default 0.1.
    precond_init_scale: initial P = scale^2 I, > 0. Default 1.
    merge_dims: merge leaves of more than two dims into matrices. Default True.
    mu_dtype: kron-torch's momentum dtype (bfloat16: optimkit's bfloat16 storage).
  Args (optimkit's):
    weight_decay_mask: which leaves decay (tree of bools or callable); None: rank >= 2, as
      kron-torch.
    block_size: cut dims above this into blocks, each preconditioned as its own parameter
      (structural; None: none, as kron-torch). On a mesh each block's fit runs once, on one
      device (`optimkit.transforms.kron`); V is then drawn per block.
    precondition_damped: on update steps precondition the damped m_hat, as kron-torch does;
      False (default): m_hat itself, as the paper and psgd_torch.
    random_updates: draw each update with probability p instead of the counter.
    seed: seed of the state's PRNG key; None: pass `key=` to every update.
    state_storage: storage of the momentum.
    preconditioner_storage: storage of the triangular factors: "float32" (at least float32,
      default), "bfloat16" or "8bit" (`optimkit.state.matrices`; the diagonal stays in float).
    cache_preconditioner: keep P_i = Q_i^T Q_i in the state, recomputed on update steps only:
      a step without an update does one product per factor instead of two, for one more b x b
      matrix per triangular factor (structural; default False, kron-torch's state).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.kron(3e-4, weight_decay=0.1, seed=0)

  Equals kron-torch's `Kron(params, lr, b1, weight_decay, ...)` fed the same V with
  `precondition_damped=True` (its triangular solve run in float64; it casts to float32);
  kron-torch's `precond_dtype` is not taken (the factors are in the compute dtype); a 0-d leaf
  is a one-element vector here (kron-torch fails on it).

  References:
    Li, "Stochastic Hessian Fittings with Lie Groups", arXiv:2402.11858, 2024.
    Li, "Preconditioned Stochastic Gradient Descent", arXiv:1512.04202, 2015.
  """
  direction = scale_by_kron(
      b1, preconditioner_update_probability,  # type: ignore[arg-type]  # an array, as above
      max_size_triangular, min_ndim_triangular,
      memory_save_mode, momentum_into_precond_update, precond_lr, precond_init_scale,
      merge_dims, block_size=block_size, precondition_damped=precondition_damped,
      random_updates=random_updates, seed=seed,
      state_storage=storage_of("kron", "mu_dtype", mu_dtype, state_storage),
      preconditioner_storage=preconditioner_storage,
      cache_preconditioner=cache_preconditioner)
  mask = _rank_at_least_2 if weight_decay_mask is None else weight_decay_mask
  return optax.chain(direction, optax.add_decayed_weights(weight_decay, mask),
                     optax.scale_by_learning_rate(learning_rate))
