"""PSGD Kron: preconditioned SGD with a Kronecker-factored preconditioner fitted by gradient
whitening on the Lie group of triangular matrices (Li 2024, "Stochastic Hessian Fittings with
Lie Groups", arXiv:2402.11858; Li 2015, "Preconditioned Stochastic Gradient Descent",
arXiv:1512.04202), as kron-torch's `Kron` (Evan Walters, after lixilinx/psgd_torch) runs it.

Per leaf (merged to a matrix when it has more than two dims, optionally blocked), one factor
Q_i per dim: upper triangular b_i x b_i, or diagonal (a length-b_i vector) for dims of size 1,
above `max_size_triangular`, in leaves of fewer than `min_ndim_triangular` dims (vectors,
scalars) or chosen by `memory_save_mode`. P = kron(Q_i^T Q_i). With t the 1-based step:

    m = b1 m + (1 - b1) g,   m_hat = m / (1 - b1^t)
    with probability `preconditioner_update_probability` (see below), with h = m_hat (or g
    without `momentum_into_precond_update`) and V ~ N(0, I):
      h <- h + sqrt(eps_f32) mean|h| V                       (damping)
      A = h x_i Q_i,   B = V x_i Q_i^(-T)                     (mode products; B by solves)
      for each i:  D = A_(i) A_(i)^T - B_(i) B_(i)^T,  S = A_(i) A_(i)^T + B_(i) B_(i)^T
        triangular: Q_i <- Q_i - precond_lr triu(D) Q_i / lb(S)    (lb: a lower bound of |S|_2)
        diagonal:   Q_i <- Q_i - precond_lr diag(D) Q_i / max|diag(S)|
    u = m_hat x_i (Q_i^T Q_i),   u <- u min(1, 1.1 / rms(u))     (update RMS clipped at 1.1)

With `cache_preconditioner=True` the state also holds P_i = Q_i^T Q_i for every triangular
factor (as heavyball's cached PSGD Kron keeps Q^T Q): it is recomputed only when the factors
are (inside the update branch), and a step without an update applies u = m_hat x_i P_i, one
product per factor instead of two (Q_i^T Q_i is b_i^3 work per block, the product with m_hat
b_i^2 times the other dims). The result is the same up to rounding (P_i is the same product,
computed at the update instead of at the use); it costs one more b_i x b_i matrix per factor,
kept in `preconditioner_storage` (a symmetric matrix there: rounded to nearest, read back
symmetrized). Default off: the state is kron-torch's.

Where the fit runs: with `block_size`, every block's fit (and its P_i) is a function of that
block alone, and the blocks of all leaves with a triangular factor go, one stack per block
shape, through `kronecker.map_stacked` (`optimkit.matrix_work.map_matrices`): on a mesh each
block is fitted once, on one device, as Shampoo's roots. Without blocking each leaf's fit is
left to GSPMD, which partitions its products but replicates its triangular solves; a single
b x b factor cannot be split, so unblocked trees (few, large factors) cannot spread evenly.

Before each preconditioner update the factors of a leaf are rescaled to equal inf-norms (their
product, hence P, is unchanged: a guard against over/underflow; kron-torch does it on a random
1% of the updates, which changes nothing else either).

Update schedule: kron-torch updates the preconditioner when a counter reaches 1/p (so p = 0.5
is every 2nd step, deterministically), p a number or a schedule of the step (default
`precond_update_prob_schedule()`: 1 for 500 steps, then annealed to 0.03). `random_updates=True`
draws each update with probability p instead (PSGD's original Bernoulli rule). The update runs
under `lax.cond`: a step without it costs the momentum, the preconditioning products and the
clipping.

Randomness (V and, with `random_updates`, the draw): pass `key=` to `update` (the same key on
every device), or construct with `seed=` and the state carries a key, folded with the step
count; as `scale_by_sophia`. The V of all leaves are one draw
`jax.random.normal(key, (total,))` split in tree-flatten order, each piece reshaped to the
leaf's blocks (n_blocks, *block); with `random_updates` the update draw uses
`jax.random.fold_in(key, number of leaves)`. Except, with `block_size`, the leaves whose fit is
spread per block (below): block j of them (numbered across these leaves in tree order) draws
its own V = `jax.random.normal(fold_in(fold_in(key, number of leaves + 1), j), block)`, on the
device that fits it (a slice of one flat draw would have to be laid out as the blocks first).

Checked against kron-torch 0.3.3 `Kron` fed the same V (tests/transforms/test_kron.py). Where it
differs from that reference:
  - kron-torch adds the damping to m_hat in place, so on update steps it preconditions the
    damped momentum; the paper (and psgd_torch) precondition m_hat itself, as here by default;
    `precondition_damped=True` gives kron-torch's;
  - kron-torch solves the triangular systems in float32 whatever the dtype; here the compute
    dtype (the parity test runs the reference's solve in float64);
  - kron-torch fails on 0-d parameters (it permutes a 0-d tensor); a scalar here is a
    one-element vector with a diagonal factor, the rule kron-torch applies to a (1,) leaf;
  - added: `block_size` (each block is preconditioned as a separate parameter: its own factors,
    damping mean and RMS clipping), `random_updates`.
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

_HIGHEST = jax.lax.Precision.HIGHEST
_DAMPING = float(np.sqrt(np.finfo(np.float32).eps))  # kron-torch's, for every dtype
_MEMORY_SAVE_MODES = (None, "smart_one_diag", "one_diag", "all_diag")


class KronState(NamedTuple):
  """State of `scale_by_kron`.

    count: steps so far.
    mu: the momentum m, shaped like the params.
    factors: per leaf, one factor per merged (block) dim: (n_blocks, b, b) upper triangular, in
      the `preconditioner_storage` format (`optimkit.state.matrices`), or (n_blocks, b) for a
      diagonal dim (always in the compute dtype).
    preconditioners: per leaf, with `cache_preconditioner`, P_i = Q_i^T Q_i (n_blocks, b, b) for
      each triangular factor, in the `preconditioner_storage` format; () per leaf without it.
    update_counter: steps since the last preconditioner update (the reference's counter).
    key: raw PRNG key data (uint32) used when no key is passed to update; zeros without a seed.
  """

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  factors: Any
  update_counter: jax.Array
  key: jax.Array
  preconditioners: Any


def precond_update_prob_schedule(max_prob: float = 1.0, min_prob: float = 0.03,
                                 decay: float = 0.001, flat_start: int = 500
                                 ) -> Callable[[Any], jax.Array]:
  """kron-torch's default: p(n) = clip(max_prob exp(-decay (n - flat_start)), min_prob,
  max_prob) at step n (0-based): 1 for 500 steps, then down to 0.03 by about step 4000."""

  def schedule(count):
    n = jnp.asarray(count, jnp.float32)
    return jnp.clip(max_prob * jnp.exp(-decay * (n - flat_start)), min_prob, max_prob)

  return schedule


def _merged_shape(shape: tuple[int, ...], merge_dims: bool) -> tuple[int, ...]:
  """kron-torch's merge: a leaf of more than two dims becomes the matrix (prod(s[:-1]), s[-1])
  or (s[0], prod(s[1:])), whichever has the smaller signed difference d1 - d0; a scalar is a
  one-element vector."""
  if not shape:
    return (1,)
  if len(shape) > 2 and merge_dims:
    first = (int(np.prod(shape[:-1])), shape[-1])
    second = (shape[0], int(np.prod(shape[1:])))
    return first if first[1] - first[0] <= second[1] - second[0] else second
  return shape


def kron_layout(shape: tuple[int, ...], max_size_triangular: int, min_ndim_triangular: int,
                memory_save_mode: str | None, merge_dims: bool,
                block_size: int | None) -> kr.KroneckerLayout:
  """A leaf's Kron layout (matrix dims are the triangular factors, the others diagonal)."""
  shape = tuple(shape)
  merged = _merged_shape(shape, merge_dims)
  if 0 in shape:
    return kr.kronecker_layout(shape)
  forced: tuple[int, ...] = ()
  order = np.argsort(merged)[::-1]  # as kron-torch picks "the largest" dim, ties included
  if memory_save_mode == "one_diag":
    forced = (int(order[0]),)
  elif memory_save_mode == "smart_one_diag":
    ranked = sorted(merged)
    if len(merged) > 1 and ranked[-1] > ranked[-2]:
      forced = (int(order[0]),)
  elif memory_save_mode == "all_diag":
    forced = tuple(range(len(merged)))
  # A scalar leaf is merged to (1,); the rank rule counts the merged dims, as kron-torch does on
  # its merged gradient (a scalar's factor is diagonal either way).
  return kr.kronecker_layout(shape, merge=lambda s: merged, block_size=block_size,
                             max_matrix_dim=max_size_triangular, min_matrix_dim=2,
                             min_rank=min_ndim_triangular, diagonal_dims=forced)


def _norm_lower_bound(matrix: jax.Array, max_abs: jax.Array) -> jax.Array:
  """A cheap lower bound of the spectral norm of a symmetric PSD matrix: from its column of
  largest norm x, |S (S x / |S x|)| (one power step), on S / max|S| for range."""
  scaled = matrix / max_abs
  column = jnp.argmax(jnp.sum(scaled * scaled, axis=0))
  x = jnp.matmul(scaled[:, column], scaled, precision=_HIGHEST)
  x = x / jnp.linalg.norm(x)
  return jnp.linalg.norm(jnp.matmul(scaled, x, precision=_HIGHEST)) * max_abs


def _balanced(factors: list[jax.Array]) -> list[jax.Array]:
  """Factors rescaled to equal inf-norms (per block), the product unchanged."""
  if len(factors) < 2:
    return factors
  norms = jnp.stack([jnp.max(jnp.abs(q.reshape(q.shape[0], -1)), axis=1) for q in factors])
  scale = jnp.exp(jnp.mean(jnp.log(norms), axis=0)) / norms
  return [q * s.reshape((-1,) + (1,) * (q.ndim - 1)) for q, s in zip(factors, scale)]


def _updated_factors(lay: kr.KroneckerLayout, factors: list[jax.Array], h: jax.Array,
                     noise: jax.Array, step_size: Any) -> list[jax.Array]:
  """One whitening step of every factor of one leaf from the pair (V, h) (h already damped)."""
  tiny = jnp.finfo(h.dtype).tiny
  a, conj_b = h, noise
  for q, i in zip(factors, range(lay.rank)):
    if lay.matrix[i]:
      a = kr.mode_product(a, q, i, transpose=True, precision=_HIGHEST)  # x_i Q_i
      # x_i Q_i^(-T): along dim i solve y Q = x for the row vectors x of the unfolding.
      moved = jnp.moveaxis(conj_b, i + 1, -1)
      flat = moved.reshape(moved.shape[0], -1, moved.shape[-1])
      solved = jax.lax.linalg.triangular_solve(q, flat, left_side=False, lower=False)
      conj_b = jnp.moveaxis(solved.reshape(moved.shape), -1, i + 1)
    else:
      a = kr.scale_dim(a, q, i)
      conj_b = kr.scale_dim(conj_b, 1.0 / q, i)
  new = []
  for q, i in zip(factors, range(lay.rank)):
    if lay.matrix[i]:
      aa, bb = kr.block_gram(a, i, precision=_HIGHEST), kr.block_gram(conj_b, i,
                                                                       precision=_HIGHEST)
      difference, total = step_size * (aa - bb), aa + bb
      norm = jnp.max(jnp.abs(total), axis=(1, 2))
      bound = jax.vmap(_norm_lower_bound)(total, jnp.where(norm > 0, norm, 1.0))
      bound = jnp.maximum(jnp.where(norm > 0, bound, norm), tiny)
      step = jnp.triu(difference) / bound[:, None, None]
      new.append(q - jnp.matmul(step, q, precision=_HIGHEST))
    else:
      aa, bb = kr.block_gram_diagonal(a, i), kr.block_gram_diagonal(conj_b, i)
      difference, total = step_size * (aa - bb), aa + bb
      norm = jnp.maximum(jnp.max(jnp.abs(total), axis=1), tiny)
      new.append(q - difference * q / norm[:, None])
  return new


def _grams(lay: kr.KroneckerLayout, factors: list[jax.Array]) -> list[jax.Array]:
  """P_i = Q_i^T Q_i of every triangular factor of one leaf, in the order of its matrix dims."""
  return [jnp.matmul(jnp.swapaxes(factors[i], 1, 2), factors[i], precision=_HIGHEST)
          for i in lay.matrix_dims]


def _key_as_floats(key: jax.Array) -> jax.Array:
  """A key's uint32 words as their 16-bit halves in float32 (exact in any float dtype >= 16
  bits of mantissa): `map_stacked` packs every input of a block in one float dtype."""
  words = jax.random.key_data(key)
  return jnp.stack([words >> 16, words & 0xFFFF], axis=-1).reshape(
      words.shape[:-1] + (-1,)).astype(jnp.float32)


def _key_from_floats(halves: jax.Array, impl: Any) -> jax.Array:
  pairs = halves.astype(jnp.uint32).reshape(-1, 2)
  return jax.random.wrap_key_data((pairs[:, 0] << 16) | pairs[:, 1], impl=impl)


def _block_fit(step_size: Any, with_grams: bool, with_damped: bool, impl: Any
               ) -> Callable[..., tuple]:
  """The fit of ONE block, for `kr.map_stacked`: (h, key (`_key_as_floats`), real-entry count,
  padding mask per dim, *factors) of the block (a factor of ndim 2 is triangular, of ndim 1
  diagonal) -> (*new factors, *their P_i if `with_grams`, the damped h if `with_damped`). V is
  drawn here, from the block's key, so that it is drawn where the block is fitted."""

  def fit(h, key_halves, count, *rest):
    masks, factors = rest[:h.ndim], rest[h.ndim:]
    key = _key_from_floats(key_halves, impl)
    noise = jax.random.normal(key, h.shape, h.dtype)
    for i, mask in enumerate(masks):  # zero on the padding, as h
      noise = noise * mask.reshape((1,) * i + (-1,) + (1,) * (h.ndim - i - 1))
    h = h + _DAMPING * (jnp.sum(jnp.abs(h)) / count) * noise
    flags = tuple(q.ndim == 2 for q in factors)
    lay = kr.KroneckerLayout(h.shape, h.shape, h.shape, (1,) * h.ndim, flags)
    # `map_matrices` pads the stack with zero blocks to a multiple of the device count: identity
    # factors there keep the (discarded) result finite. A real factor is never all zeros.
    guarded = [jnp.where(jnp.all(q == 0), jnp.eye(q.shape[0], dtype=q.dtype) if q.ndim == 2
                         else jnp.ones_like(q), q)[None] for q in factors]
    new = _updated_factors(lay, _balanced(guarded), h[None], noise[None], step_size)
    grams = _grams(lay, new) if with_grams else []
    return tuple(x[0] for x in new + grams) + ((h,) if with_damped else ())

  return fit


def _preconditioned(lay: kr.KroneckerLayout, factors: list[jax.Array], x: jax.Array,
                    grams: list[jax.Array] | None = None) -> jax.Array:
  """x x_i (Q_i^T Q_i), with the products P_i = Q_i^T Q_i given (`grams`, one per matrix dim)
  or computed here."""
  grams = _grams(lay, factors) if grams is None else grams
  products = dict(zip(lay.matrix_dims, grams))
  for q, i in zip(factors, range(lay.rank)):
    if lay.matrix[i]:
      x = kr.mode_product(x, products[i], i, precision=_HIGHEST)
    else:
      x = kr.scale_dim(x, q * q, i)
  return x


def _block_means(lay: kr.KroneckerLayout, x: jax.Array, count: np.ndarray) -> jax.Array:
  """Per block mean over its real entries (padding holds zeros), shaped to broadcast."""
  total = jnp.sum(x.reshape(x.shape[0], -1), axis=1)
  return (total / count).reshape((-1,) + (1,) * lay.rank)


def _real_counts(lay: kr.KroneckerLayout) -> np.ndarray:
  count = np.ones(lay.n_blocks)
  for i in range(lay.rank):
    count = count * lay.dim_mask(i, np.float64).sum(axis=1)
  return count


def _real_mask(lay: kr.KroneckerLayout, dtype) -> np.ndarray | None:
  if lay.padded == lay.merged:
    return None
  mask = np.ones((lay.n_blocks,) + (1,) * lay.rank)
  for i in range(lay.rank):
    shape = [lay.n_blocks] + [1] * lay.rank
    shape[i + 1] = lay.block[i]
    mask = mask * lay.dim_mask(i, np.float64).reshape(shape)
  return mask.astype(dtype)


def _draws(key: jax.Array, layouts: list, inputs: list) -> list[jax.Array]:
  """The V of every leaf, in tree order: one standard normal draw of all their blocks' entries,
  split (one draw, not one per leaf: XLA compiles each threefry draw separately, ~1 s each)."""
  shapes = [(lay.n_blocks,) + lay.block for lay in layouts]
  sizes = [int(np.prod(shape)) for shape in shapes]
  dtypes = [x.dtype for x, _ in inputs]
  flat = jax.random.normal(key, (max(sum(sizes), 1),), jnp.result_type(*dtypes))
  offsets = np.cumsum([0] + sizes)
  return [flat[a:b].reshape(shape).astype(dtype)
          for a, b, shape, dtype in zip(offsets[:-1], offsets[1:], shapes, dtypes)]


def scale_by_kron(
    b1: float = 0.9,
    preconditioner_update_probability: Union[float, Callable[[Any], Any], None] = None,
    max_size_triangular: int = 8192,
    min_ndim_triangular: int = 2,
    memory_save_mode: str | None = None,
    momentum_into_precond_update: bool = True,
    precond_lr: float = 0.1,
    precond_init_scale: float = 1.0,
    merge_dims: bool = True,
    *,
    block_size: int | None = None,
    precondition_damped: bool = False,
    random_updates: bool = False,
    seed: int | None = None,
    state_storage: StorageLike = "float32",
    preconditioner_storage: matrices.StorageLike = "float32",
    cache_preconditioner: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """PSGD Kron's direction (module docstring for the equations); chain the learning rate.

  Arguments and defaults are kron-torch's (its weight decay, on leaves of rank >= 2, and the
  learning rate belong to the `kron` optimizer).

  Args:
    b1: momentum, [0, 1). Default 0.9.
    preconditioner_update_probability: p in (0, 1], or a schedule step -> p; None:
      `precond_update_prob_schedule()`.
    max_size_triangular: dims above this get a diagonal factor. Default 8192.
    min_ndim_triangular: leaves with fewer dims get diagonal factors only. Default 2.
    memory_save_mode: None, "smart_one_diag" (the largest dim diagonal if strictly largest),
      "one_diag" (the largest dim diagonal) or "all_diag".
    momentum_into_precond_update: fit the preconditioner to m_hat (default) or to g.
    precond_lr: step size of the preconditioner fit, > 0. Default 0.1.
    precond_init_scale: initial P = scale^2 I (each factor scale^(1/rank)), > 0. Default 1.
    merge_dims: merge leaves of more than two dims into matrices. Default True.
    block_size: cut dims above this into blocks, each preconditioned as its own parameter
      (None: no blocking, as kron-torch). Blocked leaves are fitted block by block, each block
      once on one device of a mesh, with V drawn per block (module docstring).
    precondition_damped: precondition the damped m_hat on update steps, as kron-torch does.
    random_updates: draw each update with probability p instead of kron-torch's counter.
    seed: seed of the state's PRNG key; None: pass `key=` to every update.
    state_storage: how the momentum is stored (see `optimkit.state`).
    preconditioner_storage: how the triangular factors are stored: "float32" (the compute
      dtype, default), "bfloat16" or "8bit" (`optimkit.state.matrices`: rounded stochastically,
      as each update changes them by a small step; at 8 bits the diagonal, which every
      triangular solve divides by, stays in the compute dtype). Diagonal factors are O(d) and
      stay in the compute dtype.
    cache_preconditioner: keep P_i = Q_i^T Q_i in the state (in `preconditioner_storage`),
      recomputed on update steps only, so that a step without an update does one product per
      factor (module docstring). One more b x b matrix per triangular factor. Default False
      (kron-torch's state).

  Example:
    >>> tx = optax.chain(scale_by_kron(seed=0), optax.scale_by_learning_rate(3e-4))
  """
  owner = "scale_by_kron"
  _checks.check_beta(owner, "b1", b1)
  if preconditioner_update_probability is None:
    preconditioner_update_probability = precond_update_prob_schedule()
  if not callable(preconditioner_update_probability):
    _checks.check_range(owner, "preconditioner_update_probability",
                        preconditioner_update_probability, 0.0, 1.0, low_inclusive=False)
  _checks.check_int_at_least(owner, "max_size_triangular", max_size_triangular, 0)
  _checks.check_int_at_least(owner, "min_ndim_triangular", min_ndim_triangular, 0)
  if memory_save_mode not in _MEMORY_SAVE_MODES:
    raise ValueError(f"{owner}: memory_save_mode must be one of {_MEMORY_SAVE_MODES}, got "
                     f"{memory_save_mode!r}")
  _checks.check_range(owner, "precond_lr", precond_lr, 0.0, low_inclusive=False)
  _checks.check_range(owner, "precond_init_scale", precond_init_scale, 0.0, low_inclusive=False)
  if block_size is not None:
    _checks.check_int_at_least(owner, "block_size", block_size, 1)
  store = resolve(state_storage)
  try:
    factor_store = matrices.resolve(preconditioner_storage)
  except ValueError as error:
    raise ValueError(f"{owner}: {error}") from None

  def layout(shape):
    return kron_layout(tuple(shape), max_size_triangular, min_ndim_triangular, memory_save_mode,
                       merge_dims, block_size)

  def init_fn(params):
    def factors(p):
      lay = layout(p.shape)
      dtype = compute_dtype(p)
      scale = precond_init_scale ** (1.0 / max(lay.rank, 1))
      # The whole block's identity, padding included: a factor stays invertible and, with V
      # and h zero on the padding, its padding part is never updated and never mixes in.
      # jnp, not NumPy: under `jax.eval_shape` a NumPy identity is a concrete constant.
      return tuple(factor_store.init(jnp.broadcast_to(scale * jnp.eye(lay.block[i], dtype=dtype),
                                                      shape))
                   if lay.matrix[i] else jnp.full(shape[:2], scale, dtype)
                   for i, shape in ((i, (lay.n_blocks, lay.block[i], lay.block[i]))
                                    for i in range(lay.rank)))

    def grams(p):  # P_i = Q_i^T Q_i of the initial factors: scale^(2 / rank) I
      if not cache_preconditioner:
        return ()
      lay = layout(p.shape)
      scale = precond_init_scale ** (2.0 / max(lay.rank, 1))
      return tuple(factor_store.init(jnp.broadcast_to(
          scale * jnp.eye(lay.block[i], dtype=compute_dtype(p)),
          (lay.n_blocks, lay.block[i], lay.block[i]))) for i in lay.matrix_dims)

    key = (jnp.zeros((2,), jnp.uint32) if seed is None
           else jax.random.key_data(jax.random.key(seed)))
    return KronState(count=jnp.zeros([], jnp.int32), mu=store.init(params, signed=True),
                     factors=jax.tree.map(factors, params),
                     update_counter=jnp.zeros([], jnp.int32), key=key,
                     preconditioners=jax.tree.map(grams, params))

  def update_fn(updates, state, params=None, *, key=None, **unused):
    del params, unused
    if key is None:
      if seed is None:
        raise ValueError(
            f"{owner}: the preconditioner update draws random vectors: pass key=... to "
            f"update() (the same key on every device), or construct with seed=...")
      key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.count)
    grads, treedef = jax.tree.flatten(updates)
    layouts = [layout(g.shape) for g in grads]
    stored_factors = treedef.flatten_up_to(state.factors)
    dtypes = [compute_dtype(g) for g in grads]
    factors = [list(f) for f in kr.read_factors(factor_store, stored_factors, dtypes,
                                                "triangular")]
    stored_grams = treedef.flatten_up_to(state.preconditioners)
    grams = [list(p) for p in kr.read_factors(factor_store, stored_grams, dtypes, "symmetric")]
    mu = treedef.flatten_up_to(store.read(state.mu, updates, signed=True))

    probability = preconditioner_update_probability
    if callable(probability):
      probability = probability(state.count)
    probability = jnp.asarray(probability, jnp.float32)
    counter = state.update_counter + 1
    if random_updates:
      do_update = jax.random.uniform(jax.random.fold_in(key, len(grads))) < probability
    else:
      do_update = counter.astype(jnp.float32) >= 1.0 / probability
    counter = jnp.where(do_update, 0, counter).astype(jnp.int32)

    count = increment(state.count)
    new_mu, inputs = [], []
    for g, m in zip(grads, mu):
      x = g.astype(compute_dtype(g))
      m = b1 * m + (1.0 - b1) * x
      new_mu.append(m)
      debiased = m / (1.0 - b1 ** count.astype(x.dtype))
      inputs.append((x, debiased))

    def damped(lay, h, noise):
      mask = _real_mask(lay, h.dtype)
      if mask is not None:
        noise = noise * mask
      mean = _block_means(lay, jnp.abs(h), _real_counts(lay))
      return h + _DAMPING * mean * noise, noise

    # In a reduced format the branches take the stored factors (and cached products) too
    # (`stored`, empty in float32): a step without an update keeps them as stored, an update
    # writes the new ones. Without `cache_preconditioner` the products are empty lists.
    def refreshed(factors, grams, *stored):
      new = [list(f) for f in factors]
      new_grams: list = [None] * len(layouts)
      damped_inputs = [lay.to_blocks(debiased if momentum_into_precond_update else x)
                       for lay, (x, debiased) in zip(layouts, inputs)]
      # Blocked leaves: every block's fit (its V, damping, new factors and P_i) computed once,
      # on one device of the mesh, all leaves' blocks of one shape in one stack
      # (`kr.map_stacked`); unblocked leaves are left to GSPMD (a single big factor cannot be
      # split: on one device the others would wait).
      fitted = [k for k, lay in enumerate(layouts)
                if lay.n_blocks and lay.rank and 0 not in lay.block]  # (an empty leaf: no fit)
      spread = [k for k in fitted if block_size is not None and not layouts[k].diagonal]
      local = [k for k in fitted if k not in spread]
      draws = _draws(key, [layouts[k] for k in local], [inputs[k] for k in local]) if local \
          else []
      for k, noise in zip(local, draws):
        h, noise = damped(layouts[k], damped_inputs[k], noise)
        damped_inputs[k] = h
        new[k] = _updated_factors(layouts[k], _balanced(factors[k]), h, noise, precond_lr)
      with_damped = precondition_damped and momentum_into_precond_update
      typed = (key if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
               else jax.random.wrap_key_data(key))  # a raw uint32 key (jax.random.PRNGKey)
      spread_key, first, stacks = jax.random.fold_in(typed, len(grads) + 1), 0, []
      fit = _block_fit(precond_lr, cache_preconditioner, with_damped,
                       jax.random.key_impl(spread_key))
      for k in spread:
        lay, h = layouts[k], damped_inputs[k]
        keys = jax.vmap(lambda j: _key_as_floats(jax.random.fold_in(spread_key, j)))(
            jnp.arange(first, first + lay.n_blocks))
        first += lay.n_blocks
        stacks.append((h, keys,
                       jnp.asarray(_real_counts(lay), h.dtype),
                       *(jnp.asarray(lay.dim_mask(i, h.dtype)) for i in range(lay.rank)),
                       *factors[k]))
      for k, out in zip(spread, kr.map_stacked(fit, stacks)):
        rank, matrices = layouts[k].rank, len(layouts[k].matrix_dims)
        new[k] = list(out[:rank])
        new_grams[k] = list(out[rank:rank + (matrices if cache_preconditioner else 0)])
        if with_damped:
          damped_inputs[k] = out[-1]
      new = [[f.astype(old.dtype) for f, old in zip(leaf_new, leaf_old)]
             for leaf_new, leaf_old in zip(new, factors)]
      # The cached products of the leaves fitted here (the spread ones came out of the fit);
      # without the cache every leaf has none, and none are computed.
      new_grams = [[p.astype(old.dtype) for p, old in zip(
          _grams(lay, leaf_new) if fresh is None else fresh, old_grams)] if old_grams else []
          for lay, leaf_new, fresh, old_grams in zip(layouts, new, new_grams, grams)]
      written = ((kr.write_factors(factor_store, new, stored[0], accumulated=True),
                  kr.write_factors(factor_store, new_grams, stored[1], accumulated=False))
                 if stored else ())
      if with_damped:
        return new, new_grams, damped_inputs, *written
      return (new, new_grams, [lay.to_blocks(d) for lay, (_, d) in zip(layouts, inputs)],
              *written)

    def kept(factors, grams, *stored):
      return (factors, grams, [lay.to_blocks(d) for lay, (_, d) in zip(layouts, inputs)],
              *stored)

    extra = () if factor_store.lossless else (stored_factors, stored_grams)
    factors, grams, preconditioned_inputs, *written = jax.lax.cond(
        do_update, refreshed, kept, factors, grams, *extra)
    stored_factors, stored_grams = written if written else (factors, grams)

    directions = []
    for g, lay, leaf_factors, leaf_grams, blocks in zip(grads, layouts, factors, grams,
                                                        preconditioned_inputs):
      u = _preconditioned(lay, leaf_factors, blocks,
                          leaf_grams if cache_preconditioner else None)
      rms = jnp.sqrt(_block_means(lay, u * u, _real_counts(lay)))
      u = u * jnp.minimum(1.0, 1.1 / (rms + 1e-12))
      directions.append(lay.from_blocks(u).astype(g.dtype))

    unflatten = treedef.unflatten
    return unflatten(directions), KronState(
        count=count, mu=store.write(unflatten(new_mu), updates, state.mu, signed=True),
        factors=unflatten([tuple(f) for f in stored_factors]), update_counter=counter,
        key=state.key, preconditioners=unflatten([tuple(p) for p in stored_grams]))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
