"""Shampoo (Gupta, Koren & Singer 2018, "Shampoo: Preconditioned Stochastic Tensor Optimization",
arXiv:1802.09568) as Distributed Shampoo runs it (Anil, Gupta, Koren, Regan & Singer 2020,
"Scalable Second Order Optimization for Deep Learning", arXiv:2002.09018): blocked Kronecker
statistics, inverse p-th roots refreshed every few steps, layer-wise grafting and momentum.

Each leaf is merged and blocked (`optimkit.transforms.kronecker`): a stack of blocks G_b with one
statistic per block dim i. With t the 0-based step:

    every `statistics_compute_steps`:      S_i <- beta2 S_i + (1 - beta2) G_(i) G_(i)^T
                                           (beta2 = 1: the sum, AdaGrad-style; S_i(0) = eps_m I)
    every `preconditioning_compute_steps`: P_i <- (S_i + eps_m lambda_max(S_i) I)^(-1/p)
                                           (p = 2 x the number of block dims, or
                                           `exponent_override`)
    preconditioned     D = G x_1 P_1 x_2 P_2 ...     (mode products, per block)
    grafting           A = graft(g): g (SGD), g / (sqrt(v) + eps_d) (AdaGrad v += g^2, RMSprop
                       v = beta2 v + (1 - beta2) g^2, Adam: RMSprop with v / (1 - beta2^(t+1))),
                       sign(g) ("sqrt_n"); "_normalized" variants first divide g by |g|_F
    shampoo update     U = D |A|_F / |D|_F  (+ weight_decay w, coupled)    (the graft's norm)
    momenta            m = beta1 m + U,   m_A = beta1 m_A + (A + weight_decay w)
    output             t >= start_preconditioning_step ? m : m_A    (and with Nesterov,
                       U + beta1 m resp. A + beta1 m_A; with `moving_average_for_momentum` every
                       U or A added to a momentum is scaled by 1 - beta1)

Leaves with a dimension above `skip_preconditioning_dim_size_gt` or of rank below
`skip_preconditioning_rank_lt` (both on the original shape) are not preconditioned: D = A.

Inverse roots: by eigendecomposition (default), eps_m scaled by the exact largest eigenvalue,
or by the coupled Newton iteration of Anil et al. (`root_method="newton"`, Higham 2008, eq. 7.18)
with the same stopping rule, divergence guard and damping retries as distributed_shampoo, eps_m
scaled by a power-iteration estimate. A root that is not finite (or, for Newton, whose residual
max|M - I| >= `inverse_failure_threshold`) is discarded and the previous one kept. Refreshes run
under `lax.cond`: the step compiles once, and a step without a refresh costs the statistics and
mode products only. All roots of the same size, across leaves, are computed as one batched
stack (`map_stacked`, through `optimkit.matrix_work.map_matrices`): on a mesh the stack axis is
sharded, so that each block's root is computed once, on one device.

Checked against `precondition-opt` 0.3.0 `distributed_shampoo` (tests/transforms/test_shampoo.py).
Where it differs from that reference:
  - default root method: eigh here, coupled Newton there (`root_method="newton"` for theirs);
  - with eigh, eps_m is scaled by the exact lambda_max (the eigh already has it); the reference
    estimates it by power iteration (|change| < 1e-6) before its eigh. Both floor lambda_max at
    1e-6 for eigh and 1e-25 for Newton, as the reference does;
  - the reference's `decoupled_weight_decay=True` multiplies the decay by the learning rate twice
    (-lr (u + lr wd w)) under its default decoupled learning rate; the `shampoo` optimizer's
    decoupled decay is AdamW's -lr wd w. This transform takes the coupled form only;
  - the reference starts statistics and roots in float32 whatever the params' dtype; here they
    are in the compute dtype (float64 params: float64), so float64 runs stay float64;
  - "Adam" grafting (bias-corrected RMSprop, as in Meta's Distributed Shampoo) is added.
  - not implemented: the reference's preconditioner types (one-sided), low-rank compression,
    frequent directions, LOBPCG deflation, gradient clipping by scaled norm, int8/int16 state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optimkit import _checks
from optimkit.state import matrices
from optimkit.state.storage import StorageLike, compute_dtype, resolve
from optimkit.transforms import kronecker as kr
from optimkit.transforms._util import increment

_EPSILON = 1e-25  # distributed_shampoo's guard in the grafting norm ratio
_HIGHEST = jax.lax.Precision.HIGHEST

# distributed_shampoo.GraftingType values, so its enum members can be passed as they are.
GRAFT_TYPES = {0: "none", 1: "sgd", 2: "adagrad", 3: "rmsprop", 4: "rmsprop_normalized",
               5: "sqrt_n", 6: "adagrad_normalized"}
_GRAFTS_WITH_STATISTICS = ("adagrad", "rmsprop", "rmsprop_normalized", "adagrad_normalized",
                           "adam")


class ShampooState(NamedTuple):
  """State of `scale_by_shampoo`.

    count: steps so far.
    statistics: per leaf, a tuple with one (n_blocks, b_i, b_i) statistic per matrix dim of its
      `KroneckerLayout` (empty for leaves that are not preconditioned); zero on the padding.
      Each stored in the `preconditioner_storage` format (`optimkit.state.matrices`).
    roots: the inverse p-th roots in use, shaped and stored as `statistics`.
    graft_nu: the grafting's diagonal statistics, shaped like the params (None for SGD grafting).
    momentum: momentum of the Shampoo update, shaped like the params.
    graft_momentum: momentum of the grafting update (used before start_preconditioning_step).
  """

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  statistics: Any
  roots: Any
  graft_nu: Any
  momentum: Any
  graft_momentum: Any


def normalize_graft_type(graft_type: Union[str, int]) -> str:
  names = sorted(set(GRAFT_TYPES.values()) | {"adam"})
  if isinstance(graft_type, (int, np.integer)) and not isinstance(graft_type, bool):
    if int(graft_type) in GRAFT_TYPES:
      return GRAFT_TYPES[int(graft_type)]
  elif isinstance(graft_type, str) and graft_type.lower() in names:
    return graft_type.lower()
  raise ValueError(f"scale_by_shampoo: graft_type must be one of {names} or a "
                   f"distributed_shampoo.GraftingType, got {graft_type!r}")


# ----------------------------------------------------------------------------------------------
# Inverse p-th roots of one (padded) PSD matrix; vmapped over a stack by `map_stacked`.


def _masked_identity(mask: jax.Array) -> jax.Array:
  return jnp.diag(mask)


def _power_iteration(matrix: jax.Array, mask: jax.Array, iterations: int = 100,
                     tolerance: float = 1e-6) -> jax.Array:
  """Estimate of the largest eigenvalue of a PSD matrix (Rayleigh quotient, stopped when it
  changes by less than `tolerance`)."""
  start = np.random.default_rng(1729).uniform(-1.0, 1.0, matrix.shape[-1])
  vector = jnp.asarray(start, matrix.dtype) * mask

  def body(carry):
    i, v, value, _ = carry
    v = v / jnp.linalg.norm(v)
    product = jnp.matmul(matrix, v, precision=_HIGHEST)
    new_value = jnp.dot(v, product, precision=_HIGHEST)
    return i + 1, product, new_value, jnp.abs(new_value - value) > tolerance

  _, _, value, _ = jax.lax.while_loop(lambda c: (c[0] < iterations) & c[3], body,
                                      (0, vector, jnp.zeros([], matrix.dtype), True))
  return value


def _matrix_power(matrix: jax.Array, p: int) -> jax.Array:
  result, base = None, matrix
  while p:
    if p & 1:
      result = base if result is None else jnp.matmul(result, base, precision=_HIGHEST)
    p >>= 1
    if p:
      base = jnp.matmul(base, base, precision=_HIGHEST)
  assert result is not None, "_matrix_power needs p >= 1"
  return result


def eigh_inverse_root(matrix: jax.Array, mask: jax.Array, p: int, epsilon: Any,
                      relative: bool = True) -> tuple[jax.Array, jax.Array]:
  """(matrix + eps lambda_max I)^(-1/p) on the real coordinates (`mask`), zero on the padding,
  and whether it is usable (finite)."""
  dtype = jnp.promote_types(matrix.dtype, jnp.float32)
  matrix = matrix.astype(dtype)
  values, vectors = jnp.linalg.eigh(matrix)
  scale = jnp.maximum(jnp.max(values), 1e-6) if relative else 1.0
  ridge = (epsilon * scale).astype(dtype)
  powered = jnp.maximum(values + ridge, ridge) ** (-1.0 / p)
  root = jnp.matmul(vectors * powered, vectors.T, precision=_HIGHEST)
  root = root * mask[:, None] * mask[None, :]
  return root, jnp.all(jnp.isfinite(root))


def newton_inverse_root(matrix: jax.Array, mask: jax.Array, p: int, epsilon: Any,
                        relative: bool = True, iterations: int = 100, tolerance: float = 1e-6,
                        failure_threshold: Any = 0.1) -> tuple[jax.Array, jax.Array]:
  """(matrix + eps lambda_max I)^(-1/p) by the coupled Newton iteration (Anil et al. 2020):

      z = (1 + p) / (2 |A|_F),  M_0 = z A,  H_0 = z^(1/p) I
      M_{k+1} = ((1 - a) I + a M_k)^p M_k,  H_{k+1} = H_k ((1 - a) I + a M_k),  a = -1/p

  until max|M - I| < tolerance, `iterations`, or the residual grows by more than 1.2x (then the
  previous H); retried with the damping x10, up to 6 times, while the residual is above 0.05.
  Returns the root (zero on the padding) and whether it is usable (finite, residual below
  `failure_threshold`)."""
  dtype = jnp.promote_types(matrix.dtype, jnp.float32)
  mask = mask.astype(dtype)
  # An all-padding block (map_matrices fills the last round of a stack with zeros): iterate on
  # the identity instead, and return zeros.
  empty = jnp.sum(mask) == 0
  mask = jnp.where(empty, 1.0, mask)
  matrix = jnp.where(empty, jnp.eye(matrix.shape[-1], dtype=dtype), matrix.astype(dtype))
  identity = _masked_identity(mask)
  scale = jnp.maximum(_power_iteration(matrix, mask), _EPSILON) if relative else 1.0
  ridge = (epsilon * scale).astype(dtype)
  if matrix.shape[-1] == 1:
    root = jnp.where(empty, 0.0, mask[:, None] * (matrix + ridge) ** (-1.0 / p))
    return root, jnp.all(jnp.isfinite(root))
  alpha = -1.0 / p
  max_ratio = 1.2

  def attempt(damping):
    damped = matrix + damping * identity
    z = (1 + p) / (2 * jnp.linalg.norm(damped))
    m0 = damped * z
    h0 = identity * z ** (1.0 / p)
    error0 = jnp.max(jnp.abs(m0 - identity))

    def cond(c):
      i, _, _, _, error, ratio = c
      return (i < iterations) & (error > tolerance) & (ratio < max_ratio)

    def body(c):
      i, m, h, _, error, _ = c
      step = (1 - alpha) * identity + alpha * m
      new_m = jnp.matmul(_matrix_power(step, p), m, precision=_HIGHEST)
      new_h = jnp.matmul(h, step, precision=_HIGHEST)
      new_error = jnp.max(jnp.abs(new_m - identity))
      return i + 1, new_m, new_h, h, new_error, new_error / error

    _, m, h, previous, _, ratio = jax.lax.while_loop(
        cond, body, (0, m0, h0, h0, error0, jnp.ones([], dtype)))
    error = jnp.max(jnp.abs(m - identity))
    return jnp.where(ratio < max_ratio, h, previous), error

  def retry(c):
    i, _, _ = c
    h, error = attempt(ridge * 10.0 ** i)
    return i + 1, h, error

  _, root, error = jax.lax.while_loop(
      lambda c: (c[0] < 6) & (c[2] > 0.05), retry, (0, identity, jnp.full([], 1000.0, dtype)))
  usable = jnp.all(jnp.isfinite(root)) & (error < failure_threshold)
  return jnp.where(empty, 0.0, root), usable


# ----------------------------------------------------------------------------------------------
# The transform.


def shampoo_layout(shape: tuple[int, ...], block_size: int, merge_dims: int | None,
                   skip_dim_size_gt: int, skip_rank_lt: int) -> kr.KroneckerLayout:
  """A leaf's Shampoo layout: distributed_shampoo's rules (skips judged on the original shape)."""
  skip = len(shape) < skip_rank_lt or any(d > skip_dim_size_gt for d in shape)
  return kr.kronecker_layout(shape, merge=merge_dims, block_size=block_size, diagonal=skip,
                             min_rank=0)


def scale_by_shampoo(
    block_size: int = 128,
    beta1: float = 0.9,
    beta2: float = 0.999,
    diagonal_epsilon: float = 1e-10,
    matrix_epsilon: float = 1e-6,
    weight_decay: float = 0.0,
    start_preconditioning_step: int = 5,
    preconditioning_compute_steps: int = 1,
    statistics_compute_steps: int = 1,
    best_effort_shape_interpretation: bool = True,
    graft_type: Union[str, int] = "sgd",
    nesterov: bool = True,
    exponent_override: int = 0,
    *,
    merge_small_dims_block_size: int = 4096,
    skip_preconditioning_dim_size_gt: int = 4096,
    skip_preconditioning_rank_lt: int = 1,
    moving_average_for_momentum: bool = False,
    relative_matrix_epsilon: bool = True,
    inverse_failure_threshold: float = 0.1,
    root_method: str = "eigh",
    weight_decay_mask: Any = None,
    state_storage: StorageLike = "float32",
    preconditioner_storage: matrices.StorageLike = "float32",
) -> optax.GradientTransformation:
  """Distributed Shampoo's direction (see the module docstring for the equations).

  The output is the direction before the learning rate (distributed_shampoo's update divided by
  -learning_rate); chain `optax.scale_by_learning_rate`. Arguments share distributed_shampoo's
  names, positions and defaults, except `graft_type` (also a string) and `root_method`.

  Args:
    block_size: split dims larger than this into blocks (> 0). Default 128.
    beta1: momentum, [0, 1). Default 0.9.
    beta2: decay of the statistics and of RMSprop/Adam grafting, [0, 1] (1: sums). 0.999.
    diagonal_epsilon: grafting's denominator epsilon, >= 0. Default 1e-10.
    matrix_epsilon: damping of the statistics before the root, relative to lambda_max when
      `relative_matrix_epsilon`, >= 0. Default 1e-6.
    weight_decay: coupled decay added to the update before momentum, >= 0. Default 0.
    start_preconditioning_step: steps (0-based) before which the grafted update is used. 5.
    preconditioning_compute_steps: refresh the roots every this many steps (>= 1). Default 1.
    statistics_compute_steps: update the statistics every this many steps (>= 1). Default 1.
    best_effort_shape_interpretation: merge small dims (up to merge_small_dims_block_size).
    graft_type: "sgd" (default), "adagrad", "rmsprop", "adam", "rmsprop_normalized",
      "adagrad_normalized", "sqrt_n", "none", or a distributed_shampoo.GraftingType.
    nesterov: Nesterov momentum. Default True.
    exponent_override: p of the inverse root (0: twice the number of block dims).
    merge_small_dims_block_size: max merged dim. Default 4096.
    skip_preconditioning_dim_size_gt: leaves with a larger dim are only grafted. Default 4096.
    skip_preconditioning_rank_lt: leaves of lower rank are only grafted. Default 1 (scalars);
      2 also sends vectors to the diagonal fallback.
    moving_average_for_momentum: momentum as an EMA (scale added terms by 1 - beta1).
    relative_matrix_epsilon: scale matrix_epsilon by lambda_max. Default True.
    inverse_failure_threshold: Newton residual above which a new root is discarded. 0.1.
    root_method: "eigh" (default) or "newton" (coupled Newton, distributed_shampoo's default).
    weight_decay_mask: which leaves the coupled decay applies to: a tree of bools like the params
      or a callable params -> such a tree (as `optax.add_decayed_weights`); None: all.
    state_storage: how the momenta and the grafting statistics are stored (see
      `optimkit.state`).
    preconditioner_storage: how the Kronecker statistics and roots are stored: "float32" (the
      compute dtype, default), "bfloat16" or "8bit" (`optimkit.state.matrices`: the statistics
      rounded stochastically, both read back symmetrized; the roots computed from the
      statistics as updated this step, before rounding). Use matrix_epsilon >= ~1e-3 with a
      reduced format: eigenvalues below the storage's relative precision are noise.

  Example:
    >>> tx = optax.chain(scale_by_shampoo(block_size=128, graft_type="rmsprop_normalized"),
    ...                  optax.scale_by_learning_rate(1e-3))
  """
  owner = "scale_by_shampoo"
  _checks.check_int_at_least(owner, "block_size", block_size, 1)
  _checks.check_beta(owner, "beta1", beta1)
  _checks.check_range(owner, "beta2", beta2, 0.0, 1.0)
  _checks.check_non_negative(owner, "diagonal_epsilon", diagonal_epsilon)
  _checks.check_non_negative(owner, "matrix_epsilon", matrix_epsilon)
  _checks.check_non_negative(owner, "weight_decay", weight_decay)
  _checks.check_range(owner, "start_preconditioning_step", start_preconditioning_step, 0.0)
  _checks.check_range(owner, "preconditioning_compute_steps", preconditioning_compute_steps, 1.0)
  _checks.check_range(owner, "statistics_compute_steps", statistics_compute_steps, 1.0)
  _checks.check_int_at_least(owner, "exponent_override", exponent_override, 0)
  _checks.check_int_at_least(owner, "merge_small_dims_block_size", merge_small_dims_block_size,
                             1)
  _checks.check_int_at_least(owner, "skip_preconditioning_dim_size_gt",
                             skip_preconditioning_dim_size_gt, 0)
  _checks.check_int_at_least(owner, "skip_preconditioning_rank_lt",
                             skip_preconditioning_rank_lt, 0)
  _checks.check_range(owner, "inverse_failure_threshold", inverse_failure_threshold, 0.0,
                      low_inclusive=False)
  if root_method not in ("eigh", "newton"):
    raise ValueError(f"{owner}: root_method must be 'eigh' or 'newton', got {root_method!r}")
  graft = normalize_graft_type(graft_type)
  store = resolve(state_storage)
  try:
    factor_store = matrices.resolve(preconditioner_storage)
  except ValueError as error:
    raise ValueError(f"{owner}: {error}") from None
  merge = merge_small_dims_block_size if best_effort_shape_interpretation else None

  def layout(shape):
    return shampoo_layout(tuple(shape), block_size, merge, skip_preconditioning_dim_size_gt,
                          skip_preconditioning_rank_lt)

  def exponent(lay):
    return exponent_override or 2 * len(lay.matrix_dims)

  def init_fn(params):
    def statistics(p):
      lay = layout(p.shape)
      return tuple(factor_store.init(matrix_epsilon * lay.eye(i, compute_dtype(p)))
                   for i in lay.matrix_dims)

    def roots(p):
      lay = layout(p.shape)
      return tuple(factor_store.init(lay.eye(i, compute_dtype(p))) for i in lay.matrix_dims)

    return ShampooState(
        count=jnp.zeros([], jnp.int32),
        statistics=jax.tree.map(statistics, params),
        roots=jax.tree.map(roots, params),
        graft_nu=store.init(params, signed=False) if graft in _GRAFTS_WITH_STATISTICS else None,
        momentum=store.init(params, signed=True),
        graft_momentum=store.init(params, signed=True))

  def root_of(p):
    if root_method == "eigh":
      return lambda a, mask: eigh_inverse_root(a, mask, p, matrix_epsilon,
                                               relative_matrix_epsilon)
    return lambda a, mask: newton_inverse_root(a, mask, p, matrix_epsilon,
                                               relative_matrix_epsilon,
                                               failure_threshold=inverse_failure_threshold)

  def update_fn(updates, state, params=None):
    decays = not (isinstance(weight_decay, (int, float)) and weight_decay == 0)
    if decays and params is None:
      raise ValueError(f"{owner}: weight_decay needs params passed to update().")
    grads, treedef = jax.tree.flatten(updates)
    layouts = [layout(g.shape) for g in grads]
    dtypes = [compute_dtype(g) for g in grads]
    stored_statistics = treedef.flatten_up_to(state.statistics)
    stored_roots = treedef.flatten_up_to(state.roots)
    statistics = kr.read_factors(factor_store, stored_statistics, dtypes, "symmetric")
    roots = kr.read_factors(factor_store, stored_roots, dtypes, "symmetric")
    step = state.count
    keep = beta2
    add = jnp.where(jnp.asarray(beta2) == 1.0, 1.0, 1.0 - jnp.asarray(beta2))

    def updated_statistics():
      new = []
      for g, lay, old in zip(grads, layouts, statistics):
        if lay.diagonal:
          new.append(())
          continue
        blocks = lay.to_blocks(g.astype(compute_dtype(g)))
        new.append(tuple((keep * s + add * kr.block_gram(blocks, i)).astype(s.dtype)
                         for s, i in zip(old, lay.matrix_dims)))
      return new

    stored_statistics, statistics = _every_stored(
        statistics_compute_steps, step, updated_statistics, statistics, factor_store,
        stored_statistics, accumulated=True)

    def refreshed_roots():
      # Batch every factor of the same size and exponent, across leaves, into one stack.
      entries = [(k, j) for k, lay in enumerate(layouts) for j in range(len(lay.matrix_dims))]
      by_exponent: dict[int, list] = {}
      for k, j in entries:
        by_exponent.setdefault(exponent(layouts[k]), []).append((k, j))
      new = [list(r) for r in roots]
      for p, members in by_exponent.items():
        stacks = []
        for k, j in members:
          lay, s = layouts[k], statistics[k][j]
          stacks.append((s, jnp.asarray(lay.dim_mask(lay.matrix_dims[j], s.dtype)),
                         roots[k][j]))
        root = root_of(p)

        def fresh_or_old(matrix, mask, old, root=root):
          fresh, usable = root(matrix, mask)
          return (jnp.where(usable, fresh.astype(old.dtype), old),)

        for (k, j), (out,) in zip(members, kr.map_stacked(fresh_or_old, stacks)):
          new[k][j] = out
      return [tuple(r) for r in new]

    stored_roots, roots = _every_stored(preconditioning_compute_steps, step, refreshed_roots,
                                        roots, factor_store, stored_roots, accumulated=False)

    # Grafting and the preconditioned direction, leaf by leaf.
    old_nu = (treedef.flatten_up_to(store.read(state.graft_nu, updates, signed=False))
              if graft in _GRAFTS_WITH_STATISTICS else [None] * len(grads))
    momentum = treedef.flatten_up_to(store.read(state.momentum, updates, signed=True))
    graft_momentum = treedef.flatten_up_to(
        store.read(state.graft_momentum, updates, signed=True))
    param_leaves = treedef.flatten_up_to(params) if decays else [None] * len(grads)
    if decays and weight_decay_mask is not None:
      mask = weight_decay_mask(params) if callable(weight_decay_mask) else weight_decay_mask
      param_leaves = [w if keep_leaf else None
                      for w, keep_leaf in zip(param_leaves, treedef.flatten_up_to(mask))]
    run_shampoo = step >= start_preconditioning_step
    added = (1.0 - beta1) if moving_average_for_momentum else 1.0
    directions, new_nu, new_momentum, new_graft_momentum = [], [], [], []
    for g, lay, leaf_roots, nu, m, m_graft, w in zip(grads, layouts, roots, old_nu, momentum,
                                                    graft_momentum, param_leaves):
      x = g.astype(compute_dtype(g))
      grafted, nu = _graft(graft, x, nu, keep, add, diagonal_epsilon, beta2, step)
      if lay.diagonal:
        preconditioned = grafted
      else:
        blocks = lay.to_blocks(x)
        for root, i in zip(leaf_roots, lay.matrix_dims):
          blocks = kr.mode_product(blocks, root, i, precision=_HIGHEST)
        preconditioned = lay.from_blocks(blocks)
      if graft == "none":
        update = preconditioned
      else:
        update = preconditioned * (jnp.linalg.norm(grafted)
                                   / (jnp.linalg.norm(preconditioned) + _EPSILON))
      if w is not None:
        update = update + weight_decay * w
        grafted = grafted + weight_decay * w
      m = beta1 * m + added * update
      m_graft = beta1 * m_graft + added * grafted
      chosen_momentum = jnp.where(run_shampoo, m, m_graft)
      if nesterov:
        direction = added * jnp.where(run_shampoo, update, grafted) + beta1 * chosen_momentum
      else:
        direction = chosen_momentum
      directions.append(direction.astype(g.dtype))
      new_nu.append(nu)
      new_momentum.append(m)
      new_graft_momentum.append(m_graft)

    unflatten = treedef.unflatten
    graft_nu = (store.write(unflatten(new_nu), updates, state.graft_nu, signed=False)
                if graft in _GRAFTS_WITH_STATISTICS else None)
    return unflatten(directions), ShampooState(
        count=increment(step),
        statistics=unflatten(stored_statistics),
        roots=unflatten(stored_roots),
        graft_nu=graft_nu,
        momentum=store.write(unflatten(new_momentum), updates, state.momentum, signed=True),
        graft_momentum=store.write(unflatten(new_graft_momentum), updates,
                                   state.graft_momentum, signed=True))

  return optax.GradientTransformation(init_fn, update_fn)


def _every(period: Any, step: jax.Array, compute: Callable[[], Any], current: Any) -> Any:
  """compute() on steps that are multiples of `period`, else `current`; a plain period of 1
  computes every step without a conditional."""
  if isinstance(period, (int, np.integer)) and not isinstance(period, bool) and period == 1:
    return compute()
  return jax.lax.cond(step % period == 0, compute, lambda: current)


def _every_stored(period: Any, step: jax.Array, compute: Callable[[], Any], current: Any,
                  store: Any, stored: Any, accumulated: bool) -> tuple[Any, Any]:
  """`_every` for matrices also kept in `store`'s format: (stored, current). In a reduced format
  the step goes on with the matrices as computed, and the stored ones are written only when
  they change (a refresh period skips the rounding too); in float32 both are the same value."""
  if store.lossless:
    value = _every(period, step, compute, current)
    return value, value

  def computed_and_stored():
    new = compute()
    return kr.write_factors(store, new, stored, accumulated), new

  return _every(period, step, computed_and_stored, (stored, current))


def _graft(graft: str, g: jax.Array, nu: Any, keep: Any, add: Any, eps: Any, beta2: Any,
           step: jax.Array) -> tuple[jax.Array, Any]:
  """The grafting direction of one leaf and its new diagonal statistics."""
  if graft in ("sgd", "none"):
    return g, nu
  if graft == "sqrt_n":
    return jnp.sign(g), nu
  if graft.endswith("_normalized"):
    g = g / (jnp.linalg.norm(g) + _EPSILON)
  if graft.startswith("adagrad"):
    nu = nu + g * g
    return g / (jnp.sqrt(nu) + eps), nu
  nu = keep * nu + add * g * g
  if graft == "adam":
    beta2 = jnp.asarray(beta2, nu.dtype)
    correction = jnp.where(beta2 == 1.0, 1.0, 1.0 - beta2 ** (step + 1).astype(nu.dtype))
    return g / (jnp.sqrt(nu / correction) + eps), nu
  return g / (jnp.sqrt(nu) + eps), nu
