"""SOAP: Adam run in the eigenbasis of Shampoo's factors (Vyas, Morwani, Zhao, Shapira,
Brandfonbrener, Janson & Kakade 2024, "SOAP: Improving and Stabilizing Shampoo using Adam",
arXiv:2409.11321, Algorithms 3 and 4).

Per leaf (merged and optionally blocked, `optimkit.transforms.kronecker`), one statistic L_i
and one orthogonal basis Q_i per matrix dim; with G' = G x_1 Q_1^T x_2 Q_2^T ... the gradient in
the eigenbasis and t the number of Adam steps so far:

    first step:  L_i = (1 - shampoo_beta) G_(i) G_(i)^T,  Q_i = eigenvectors(L_i) (eigenvalues
                 descending); no update (the first gradient only initializes the basis)
    then:        m = b1 m + (1 - b1) G'                      (first moment, eigenbasis)
                 v = b2 v + (1 - b2) G'^2                    (second moment, eigenbasis)
                 N = (m / (sqrt(v) + eps)) x_i Q_i           (Adam in the eigenbasis, rotated back)
                 u = N sqrt(1 - b2^t) / (1 - b1^t)           (`correct_bias`; N / rms(N) first
                                                               with `normalize_gradient`)
                 L_i = shampoo_beta L_i + (1 - shampoo_beta) G_(i) G_(i)^T
                 every `precondition_frequency` steps: one power iteration and QR,
                   Q_i <- QR(L_i Q_i), and m <- m x_i Q_i^old x_i Q_i^new^T

Both moments live in the eigenbasis, as in the authors' code (its exp_avg is updated with the
projected gradient; when the basis changes it is projected back with the old basis and into the
new one): a step rotates G in and the direction out (with the Gram statistics, 3 products per
matrix dim), and m is rotated only at a refresh. pytorch-optimizer keeps m in the parameter
basis and projects it on every step (one more product per dim); with orthogonal bases the two
are the same algorithm (m x_i Q_i^T is linear in m), and the parity tests hold at float64
precision. v: at a refresh the authors' code first orders Q_i's columns by their estimated
eigenvalues diag(Q_i^T L_i Q_i), descending, and permutes v along dim i the same way, so each
coordinate of v stays with its eigenvector; the QR then runs on the ordered columns (m needs no
permutation: it goes through the parameter basis).

The first basis diagonalizes a rank-deficient G G^T whenever a dim is larger than the product of
the others plus one (a vector: rank 1); its null space has no preferred basis, so which one the
eigensolver returns changes the coordinates Adam runs in there (SOAP is not invariant to it).
Any two implementations then agree only up to that choice; the parity tests use shapes with at
most a one-dimensional null space.

Dims above `max_precondition_dim` are not rotated; vectors (unless `precondition_1d`) and
scalars get plain Adam. The first basis is an eigendecomposition, later ones one QR; both run
under one `lax.switch`, so the step compiles once and a step without refresh costs the
statistics, the projections and the Adam arithmetic. All bases of the same size, across leaves,
are computed as one batched stack (`map_stacked`, through `optimkit.matrix_work.map_matrices`:
on a mesh each block's basis is computed once, on one device). `block_size` is what spreads
that work over a mesh: unblocked, each leaf's factors have sizes of their own, a group of
same-size bases smaller than the device count costs every device one basis, and the largest
(an MLP's or the embedding's) is computed by every device in effect; with blocks of one size
(e.g. 128 or 256) all bases form one stack split evenly over the devices.

Reference: pytorch-optimizer 4.1.0 `SOAP` (the authors' code, nikhilvyas/SOAP, ported),
tests/transforms/test_soap.py. Where it differs from the paper, and what this transform does:
  - the ordering of the basis by estimated eigenvalue (and the matching permutation of v)
    before the QR is in the code, not in the paper's Algorithm 4 (QR(P Q) as it stands);
    `sort_eigenbasis=True` (default) follows the code, False the paper, which is tested against
    a NumPy transcription of Algorithms 3 and 4;
  - the code decays weights after the update, w <- (w - lr u)(1 - lr wd), and not at all on the
    first step; the `soap` optimizer does the same (this transform has no weight decay);
  - the code runs the QR in float32 whatever the dtype; here it runs in the compute dtype (the
    parity test runs the reference's QR in float64);
  - merging follows distributed_shampoo's `merge_small_dims` (pytorch-optimizer's keeps size-1
    dims, whose 1 x 1 basis changes nothing, and fails to reshape a leaf merged into one dim);
  - added: `block_size` (the paper's blocking suggestion for large dims; None, the default, is
    the reference). Not implemented: the reference's `data_format="channels_last"`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state import matrices
from optimkit.state.storage import StorageLike, compute_dtype, resolve
from optimkit.transforms import kronecker as kr
from optimkit.transforms._util import increment

_HIGHEST = jax.lax.Precision.HIGHEST


class SOAPState(NamedTuple):
  """State of `scale_by_soap`.

    count: steps so far (the first one only initializes the bases).
    mu: Adam's first moment, in the eigenbasis `bases` (as the authors' code keeps it), shaped
      like the params (block padding dropped, as for nu). It was kept in the parameter basis
      before (CHANGELOG, 0.2.0 "Changed"): a checkpoint written then holds m in the parameter
      basis, and restoring it here reads it as eigenbasis coordinates (rotate it with `bases`
      first: m x_i Q_i^T per block).
    nu: Adam's second moment, in the eigenbasis, shaped like the params (block padding dropped:
      the padding's coordinates are their own eigenvectors and carry no gradient).
    statistics: per leaf, a tuple with one (n_blocks, b_i, b_i) statistic per matrix dim, in the
      `preconditioner_storage` format (`optimkit.state.matrices`).
    bases: the eigenbases Q_i in use, shaped and stored as `statistics`.
  """

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  nu: Any
  statistics: Any
  bases: Any


def soap_layout(shape: tuple[int, ...], max_precondition_dim: int, merge_dims: bool,
                precondition_1d: bool, block_size: int | None) -> kr.KroneckerLayout:
  """A leaf's SOAP layout: the reference's rules (a vector is rotated only with
  precondition_1d; dims above max_precondition_dim are not rotated)."""
  return kr.kronecker_layout(
      shape, merge=max_precondition_dim if merge_dims else None, block_size=block_size,
      max_matrix_dim=max_precondition_dim, min_rank=0,
      diagonal=len(shape) == 1 and not precondition_1d)


def _padded_statistic(statistic: jax.Array, mask: jax.Array) -> jax.Array:
  """The statistic with -1 on the padding's diagonal: the padding's coordinates become
  eigenvectors of their own, with the lowest eigenvalue (the statistic is PSD), so they sort
  last and never mix with the real coordinates. Unpadded blocks are unchanged."""
  return statistic - jnp.diag(1.0 - mask)


def _clean_basis(basis: jax.Array, mask: jax.Array) -> jax.Array:
  """Exactly block diagonal: real eigenvectors on the real coordinates, identity on padding."""
  return basis * mask[:, None] * mask[None, :] + jnp.diag(1.0 - mask)


def first_basis(statistic: jax.Array, mask: jax.Array) -> jax.Array:
  """Eigenvectors of one statistic, eigenvalues descending."""
  _, vectors = jnp.linalg.eigh(_padded_statistic(statistic, mask))
  return _clean_basis(jnp.flip(vectors, axis=1), mask)


def refined_basis(statistic: jax.Array, basis: jax.Array, mask: jax.Array,
                  sort: bool) -> tuple[jax.Array, jax.Array]:
  """One power iteration and QR from the current basis: QR(L Q), with the columns first ordered
  by the estimated eigenvalues diag(Q^T L Q), descending, when `sort`. Returns the new basis and
  the column order used (to permute the second moment with)."""
  product = jnp.matmul(_padded_statistic(statistic, mask), basis, precision=_HIGHEST)
  if sort:
    estimates = jnp.sum(basis * product, axis=0)
    order = jnp.argsort(-estimates, stable=True)
    product = product[:, order]
  else:
    order = jnp.arange(basis.shape[-1])
  q, _ = jnp.linalg.qr(product)
  return _clean_basis(q, mask), order


def scale_by_soap(
    b1: float = 0.95,
    b2: float = 0.95,
    shampoo_beta: float | None = None,
    eps: float = 1e-8,
    precondition_frequency: int = 10,
    max_precondition_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    correct_bias: bool = True,
    normalize_gradient: bool = False,
    *,
    block_size: int | None = None,
    sort_eigenbasis: bool = True,
    state_storage: StorageLike = "float32",
    preconditioner_storage: matrices.StorageLike = "float32",
) -> optax.GradientTransformation:
  """SOAP's direction (module docstring for the equations); chain the learning rate after it.

  Arguments and defaults are pytorch-optimizer's (`betas=(b1, b2)`).

  Args:
    b1: first-moment decay, [0, 1). Default 0.95.
    b2: second-moment decay, [0, 1). Default 0.95.
    shampoo_beta: decay of the Shampoo statistics, [0, 1); None: b2.
    eps: added to sqrt(v), >= 0. Default 1e-8.
    precondition_frequency: refresh the bases every this many steps (>= 1). Default 10.
    max_precondition_dim: dims above this are not rotated (and the max merged dim). 10000.
    merge_dims: merge small dims (up to max_precondition_dim) before factoring.
    precondition_1d: rotate vectors too (a full b x b basis). Default False.
    correct_bias: Adam's bias correction, folded into the step. Default True.
    normalize_gradient: divide the rotated-back direction by its RMS (+ eps).
    block_size: cut dims above this into blocks, each with its own bases (None: no blocking).
    sort_eigenbasis: order the basis by estimated eigenvalue before each QR and permute v with
      it, as the authors' code does (default); False: the paper's Algorithm 4 as written.
    state_storage: how m and v are stored (see `optimkit.state`).
    preconditioner_storage: how the statistics and bases are stored: "float32" (the compute
      dtype, default), "bfloat16" or "8bit" (`optimkit.state.matrices`: statistics rounded
      stochastically and read back symmetrized; bases rounded to nearest and read back after
      one Bjorck step towards orthogonality, since the rotation back uses Q as Q^T's inverse).
  """
  owner = "scale_by_soap"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  if shampoo_beta is not None:
    _checks.check_beta(owner, "shampoo_beta", shampoo_beta)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_range(owner, "precondition_frequency", precondition_frequency, 1.0)
  _checks.check_int_at_least(owner, "max_precondition_dim", max_precondition_dim, 1)
  if block_size is not None:
    _checks.check_int_at_least(owner, "block_size", block_size, 1)
  store = resolve(state_storage)
  try:
    factor_store = matrices.resolve(preconditioner_storage)
  except ValueError as error:
    raise ValueError(f"{owner}: {error}") from None
  beta_shampoo = b2 if shampoo_beta is None else shampoo_beta

  def layout(shape):
    return soap_layout(tuple(shape), max_precondition_dim, merge_dims, precondition_1d,
                       block_size)

  def init_fn(params):
    def zeros(p):
      lay = layout(p.shape)
      return tuple(factor_store.init(jnp.zeros(shape, compute_dtype(p)))
                   for shape in lay.factor_shapes())

    def identities(p):
      lay = layout(p.shape)
      return tuple(factor_store.init(lay.eye(i, compute_dtype(p))) for i in lay.matrix_dims)

    return SOAPState(count=jnp.zeros([], jnp.int32), mu=store.init(params, signed=True),
                     nu=store.init(params, signed=False),
                     statistics=jax.tree.map(zeros, params),
                     bases=jax.tree.map(identities, params))

  def update_fn(updates, state, params=None):
    del params
    grads, treedef = jax.tree.flatten(updates)
    layouts = [layout(g.shape) for g in grads]
    dtypes = [compute_dtype(g) for g in grads]
    stored_statistics = treedef.flatten_up_to(state.statistics)
    stored_bases = treedef.flatten_up_to(state.bases)
    statistics = kr.read_factors(factor_store, stored_statistics, dtypes, "symmetric")
    bases = kr.read_factors(factor_store, stored_bases, dtypes, "orthogonal")
    mu = treedef.flatten_up_to(store.read(state.mu, updates, signed=True))
    nu = treedef.flatten_up_to(store.read(state.nu, updates, signed=False))
    first = state.count == 0
    count = state.count  # Adam steps so far, after this one (the first step is not one)
    new_mu, new_nu, directions, new_statistics = [], [], [], []
    for g, lay, leaf_bases, leaf_statistics, m, v in zip(grads, layouts, bases, statistics,
                                                         mu, nu):
      x = g.astype(compute_dtype(g))
      blocks = lay.to_blocks(x)
      rotated = lay.from_blocks(_rotate(blocks, lay, leaf_bases))
      # The first step only initializes the bases: no update, moments untouched. They are kept
      # before the direction reads them, not only on the write: with the selection on the write
      # alone, XLA recomputed the unselected moments from the old buffers inside the direction
      # and copied both buffers every step (the direction is zero on that step either way). The
      # moments are selected in the leaf's shape, as stored: selected among blocks, XLA still
      # recomputed them inside the update of a leaf without rotated dims (a vector) and copied
      # its nu.
      m_next = jnp.where(first, m, b1 * m + (1.0 - b1) * rotated)
      v_next = jnp.where(first, v, b2 * v + (1.0 - b2) * rotated * rotated)
      adam = lay.to_blocks(m_next) / (jnp.sqrt(lay.to_blocks(v_next)) + eps)
      direction = lay.from_blocks(_rotate(adam, lay, leaf_bases, back=True))
      if normalize_gradient:
        direction = direction / (jnp.sqrt(jnp.mean(direction * direction)) + eps)
      if correct_bias:
        steps = jnp.maximum(count, 1).astype(x.dtype)
        direction = direction * (jnp.sqrt(1.0 - b2 ** steps) / (1.0 - b1 ** steps))
      directions.append(jnp.where(first, 0.0, direction).astype(g.dtype))
      new_mu.append(m_next)
      new_nu.append(v_next)
      new_statistics.append(tuple(
          (beta_shampoo * s + (1.0 - beta_shampoo) * kr.block_gram(blocks, i)).astype(s.dtype)
          for s, i in zip(leaf_statistics, lay.matrix_dims)))

    # In a reduced format the branches take the stored bases too (`stored`, empty in float32):
    # a step without a refresh keeps them as stored, a refresh writes the new ones. The first
    # moment is carried into the new basis as the next steps will read it back from storage
    # (`in_use`), so that m and the gradient are rotated by the same matrices.
    def new_state(bases, new_bases, mus, stored):
      if stored:
        written = kr.write_factors(factor_store, new_bases, stored[0], accumulated=False)
        in_use = kr.read_factors(factor_store, written, dtypes, "orthogonal")
      else:
        written = in_use = new_bases
      return written, _change_basis(layouts, mus, bases, in_use)

    def keep(new_statistics, bases, mus, nus, *stored):
      del new_statistics
      return (stored[0] if stored else bases), mus, nus

    def eigenbases(new_statistics, bases, mus, nus, *stored):
      stacks = _stacks(layouts, new_statistics, bases)
      fresh = kr.map_stacked(lambda a, mask, q: (first_basis(a, mask),), stacks)
      new_bases = _unstack(layouts, bases, [basis for (basis,) in fresh])
      # m is still zero (initialized so, and the first step leaves it): no change of basis.
      return (kr.write_factors(factor_store, new_bases, stored[0], accumulated=False)
              if stored else new_bases), mus, nus

    def refreshed(new_statistics, bases, mus, nus, *stored):
      stacks = _stacks(layouts, new_statistics, bases)
      outputs = kr.map_stacked(lambda a, mask, q: refined_basis(a, q, mask, sort_eigenbasis),
                               stacks)
      new_bases = _unstack(layouts, bases, [basis for basis, _ in outputs])
      orders = _unstack(layouts, bases, [order for _, order in outputs])
      if sort_eigenbasis:
        nus = [_permute(v, lay, leaf_orders) for v, lay, leaf_orders in zip(nus, layouts, orders)]
      return *new_state(bases, new_bases, mus, stored), nus

    branch = jnp.where(first, 1, jnp.where(count % precondition_frequency == 0, 2, 0))
    extra = () if factor_store.lossless else (stored_bases,)
    new_bases, new_mu, new_nu = jax.lax.switch(branch, [keep, eigenbases, refreshed],
                                               new_statistics, bases, new_mu, new_nu, *extra)
    if not factor_store.lossless:
      new_statistics = kr.write_factors(factor_store, new_statistics, stored_statistics,
                                        accumulated=True)
    unflatten = treedef.unflatten
    return unflatten(directions), SOAPState(
        count=increment(state.count),
        mu=store.write(unflatten(new_mu), updates, state.mu, signed=True),
        nu=store.write(unflatten(new_nu), updates, state.nu, signed=False),
        statistics=unflatten(new_statistics), bases=unflatten(new_bases))

  return optax.GradientTransformation(init_fn, update_fn)


def _rotate(blocks: jax.Array, lay: kr.KroneckerLayout, bases: tuple, back: bool = False,
            reverse: bool = False):
  """Blocks into the eigenbasis (x_i Q_i^T), or back (x_i Q_i); dims in order, or from the last
  when `reverse` (the products along different dims commute)."""
  pairs = list(zip(bases, lay.matrix_dims))
  for basis, i in reversed(pairs) if reverse else pairs:
    blocks = kr.mode_product(blocks, basis, i, transpose=back, precision=_HIGHEST)
  return blocks


def _change_basis(layouts: list, tensors: list, old: list, new: list) -> list:
  """Leaf-shaped tensors in the bases `old`, expressed in the bases `new`: rotated back to the
  parameter basis with Q_old and into Q_new (the authors' `project_back` and `project`).

  Two products per matrix dim. One, with the transition Q_new^T Q_old, would cost a b x b x b
  product per block and dim instead, more than the second product on an unblocked leaf whose
  other dims are smaller than b (the 1024 x 1024 transition of a (256, 1024) leaf: 2.1 GFLOP
  against 0.5), and on a mesh a group of fewer transitions than devices costs every device one."""
  out = []
  for x, lay, leaf_old, leaf_new in zip(tensors, layouts, old, new):
    if not leaf_old:
      out.append(x)
      continue
    # Back from the last dim: on an FSDP mesh (first dims sharded) XLA's partitioner then keeps
    # one of the two back products sharded inside the refresh's conditional, where it
    # all-gathers m for both in dim order (8 devices, benchmarks/kronecker.py's tree: the step's
    # FLOPs per device 9.13 -> 7.31 G).
    blocks = _rotate(_rotate(lay.to_blocks(x), lay, leaf_old, back=True, reverse=True), lay,
                     leaf_new)
    out.append(lay.from_blocks(blocks))
  return out


def _stacks(layouts, statistics, bases):
  """(statistic, padding mask, basis) for every matrix dim of every leaf, in leaf order."""
  return [(s, jnp.asarray(lay.dim_mask(i, s.dtype)), q)
          for lay, leaf_statistics, leaf_bases in zip(layouts, statistics, bases)
          for s, q, i in zip(leaf_statistics, leaf_bases, lay.matrix_dims)]


def _unstack(layouts, like, flat):
  """`flat` (one entry per matrix dim, in leaf order) regrouped as per-leaf tuples."""
  out, position = [], 0
  for _lay, leaf in zip(layouts, like):
    out.append(tuple(flat[position:position + len(leaf)]))
    position += len(leaf)
  return out


def _permute(v: jax.Array, lay: kr.KroneckerLayout, orders: tuple) -> jax.Array:
  """The second moment with each block's rotated coordinates reordered like its basis: along
  block dim i, new[k] = old[order[k]], written as a sort keyed by each coordinate's new position
  (a gather with per-block indices, `take_along_axis`, failed XLA's SPMD partitioner on a
  blocked, FSDP-sharded leaf: "Slice dim size 256 greater than dynamic slice dimension")."""
  if not orders:
    return v
  blocks = lay.to_blocks(v)
  for order, i in zip(orders, lay.matrix_dims):
    shape = [order.shape[0]] + [1] * lay.rank
    shape[i + 1] = order.shape[1]
    position = jnp.broadcast_to(jnp.reshape(jnp.argsort(order, axis=-1), shape), blocks.shape)
    _, blocks = jax.lax.sort((position, blocks), dimension=i + 1, num_keys=1)
  return lay.from_blocks(blocks)
