"""Blocked Kronecker statistics: how Shampoo, SOAP and PSGD-Kron lay a parameter out as a stack
of equal-shape blocks with one matrix factor per block dimension.

For a leaf of shape `s`, decided from `s` alone (never from a shard, so a checkpoint restores
onto any mesh):

  1. merge   small adjacent dims, e.g. (1, 2, 512, 1, 2048, 1, 3, 4) -> (1024, 2048, 12) for
             `max_dim=1024` (distributed_shampoo's rule, `merge_small_dims`), or by any rule
             given as a function of the shape;
  2. block   each merged dim d > `block_size` into ceil(d / block_size) blocks of `block_size`,
             the last one zero-padded, so that the leaf becomes one stack of equal-shape blocks
             (n_blocks, b_0, ..., b_{k-1}) in row-major block order (distributed_shampoo's
             `BlockPartitioner` order);
  3. factor  each block dim i is a *matrix* dim (one b_i x b_i statistic, root or basis per
             block) or a *diagonal* dim (no factor, or a length-b_i vector for PSGD): dims
             outside [min_matrix_dim, max_matrix_dim], leaves of merged rank below `min_rank`
             (vectors and scalars by default) and anything forced `diagonal` fall back to the
             diagonal.

Padding: the padded coordinates of a block carry zero gradient, so Gram statistics vanish there;
the algorithms mask their factors with `KroneckerLayout.dim_mask` so padding never mixes into
the real coordinates and the result is the same as for unpadded, ragged blocks.

Per-block matrix work (inverse roots, eigendecompositions, QR) is written as a function of one
block's factor. `map_stacked` gathers every leaf's factors of one size into one stack and hands
it to `optimkit.matrix_work.map_matrices`, which vmaps the function locally or, on a mesh,
shards the stack axis so that each block is computed once, on one device.
"""

from __future__ import annotations

import dataclasses
import math
import string
from typing import Any, Callable, Iterable, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

Shape = tuple[int, ...]
MergeRule = Union[None, int, Callable[[Shape], Sequence[int]]]


def merge_small_dims(shape: Sequence[int], max_dim: int) -> Shape:
  """Merge adjacent dims while their product stays <= `max_dim`; dims of size 1 disappear.

  (1, 2, 512, 1, 2048, 1, 3, 4) -> (1024, 2048, 12) for max_dim 1024, (1, 2, 768, 1, 2048) ->
  (2, 768, 2048); an all-ones shape -> (1,), a scalar -> (). The rule of distributed_shampoo's
  `merge_small_dims` (pytorch-optimizer's SOAP keeps some size-1 dims, which have a 1 x 1
  factor there and change nothing).
  """
  shape = tuple(int(d) for d in shape)
  if shape and all(d == 1 for d in shape):
    return (1,)
  merged, product = [], 1
  for d in shape:
    if product * d <= max_dim:
      product *= d
    else:
      if product > 1:
        merged.append(product)
      product = d
  if product > 1:
    merged.append(product)
  return tuple(merged)


@dataclasses.dataclass(frozen=True)
class KroneckerLayout:
  """How one leaf is cut into blocks and which block dims get a matrix factor.

    shape:  the leaf's (global) shape.
    merged: the shape after merging small dims (the leaf is reshaped to it, row-major).
    block:  the shape of one block (b_i = min(merged_i, block_size)).
    grid:   blocks per merged dim (ceil(merged_i / b_i)); n_blocks = prod(grid).
    matrix: per block dim, whether it has a b_i x b_i factor (else diagonal / none).
  """

  shape: Shape
  merged: Shape
  block: Shape
  grid: Shape
  matrix: tuple[bool, ...]

  @property
  def rank(self) -> int:
    return len(self.block)

  @property
  def n_blocks(self) -> int:
    return int(math.prod(self.grid))

  @property
  def padded(self) -> Shape:
    return tuple(g * b for g, b in zip(self.grid, self.block))

  @property
  def matrix_dims(self) -> tuple[int, ...]:
    return tuple(i for i, is_matrix in enumerate(self.matrix) if is_matrix)

  @property
  def diagonal(self) -> bool:
    """No matrix factor at all: the algorithm's diagonal fallback handles the leaf."""
    return not any(self.matrix)

  def factor_shapes(self) -> list[Shape]:
    """Shapes of the stacked matrix factors, one per matrix dim: (n_blocks, b_i, b_i)."""
    return [(self.n_blocks, self.block[i], self.block[i]) for i in self.matrix_dims]

  def to_blocks(self, x: jax.Array) -> jax.Array:
    """The leaf as a stack of blocks (n_blocks, *block), zero-padded."""
    x = jnp.reshape(x, self.merged)
    if self.padded != self.merged:
      x = jnp.pad(x, [(0, p - m) for p, m in zip(self.padded, self.merged)])
    k = self.rank
    x = jnp.reshape(x, [n for pair in zip(self.grid, self.block) for n in pair])
    x = jnp.transpose(x, list(range(0, 2 * k, 2)) + list(range(1, 2 * k, 2)))
    return jnp.reshape(x, (self.n_blocks,) + self.block)

  def from_blocks(self, blocks: jax.Array) -> jax.Array:
    """Inverse of `to_blocks`: the blocks laid back out in the leaf's shape, padding dropped."""
    k = self.rank
    x = jnp.reshape(blocks, self.grid + self.block)
    x = jnp.transpose(x, [j for i in range(k) for j in (i, k + i)])
    x = jnp.reshape(x, self.padded)
    if self.padded != self.merged:
      x = x[tuple(slice(0, m) for m in self.merged)]
    return jnp.reshape(x, self.shape)

  def dim_mask(self, i: int, dtype: Any = np.float32) -> np.ndarray:
    """(n_blocks, b_i): 1 at the real coordinates of block dim i, 0 at the padding."""
    index = np.unravel_index(np.arange(self.n_blocks), self.grid)[i] if self.rank else 0
    position = np.asarray(index)[:, None] * self.block[i] + np.arange(self.block[i])[None, :]
    return (position < self.merged[i]).astype(dtype)

  def eye(self, i: int, dtype: Any) -> jax.Array:
    """(n_blocks, b_i, b_i): the identity on the real coordinates, zero on the padding."""
    # One jitted program from the (n_blocks, b_i) mask: an eager init makes one small transfer
    # and one call per factor shape, and under `jax.eval_shape` (optimkit.memory, the sharding
    # specs) nothing is built (a NumPy identity there is a concrete constant: gigabytes of them
    # for a 7B tree cut into 128-blocks).
    return _masked_eye(jnp.asarray(self.dim_mask(i, dtype)))


@jax.jit
def _masked_eye(mask: jax.Array) -> jax.Array:
  return mask[:, :, None] * jnp.eye(mask.shape[-1], dtype=mask.dtype)[None]


def kronecker_layout(
    shape: Sequence[int],
    *,
    merge: MergeRule = None,
    block_size: int | None = None,
    max_matrix_dim: int | None = None,
    min_matrix_dim: int = 1,
    min_rank: int = 1,
    diagonal: bool = False,
    diagonal_dims: Iterable[int] = (),
) -> KroneckerLayout:
  """The layout of a leaf of global shape `shape`.

  Args:
    shape: the leaf's shape (global, not a shard's).
    merge: None (keep the dims), an int (`merge_small_dims` with that max_dim) or a function
      shape -> merged shape (same number of elements).
    block_size: split merged dims larger than this into blocks of this size (None: no blocking).
    max_matrix_dim: block dims larger than this are diagonal (None: no limit).
    min_matrix_dim: block dims smaller than this are diagonal (PSGD-Kron: 2, size-1 dims).
    min_rank: leaves whose merged rank is below this are all-diagonal (1: only scalars).
    diagonal: the whole leaf is diagonal (e.g. Shampoo's skip rules on the original shape).
    diagonal_dims: merged dims forced diagonal (PSGD-Kron's memory-saving modes).
  """
  shape = tuple(int(d) for d in shape)
  if 0 in shape:  # an empty leaf: one empty block, nothing to precondition
    return KroneckerLayout(shape, shape, shape, (1,) * len(shape), (False,) * len(shape))
  if merge is None:
    merged = shape
  elif callable(merge):
    merged = tuple(int(d) for d in merge(shape))
  else:
    merged = merge_small_dims(shape, int(merge))
  if math.prod(merged) != math.prod(shape):
    raise ValueError(f"kronecker_layout: merging {shape} gave {merged}, which does not have "
                     f"the same number of elements")
  block = tuple(block_size if block_size and 0 < block_size < d else d for d in merged)
  grid = tuple(-(-d // b) for d, b in zip(merged, block))
  forced = set(int(i) for i in diagonal_dims)
  matrix = tuple(
      not diagonal and len(merged) >= min_rank and i not in forced and b >= min_matrix_dim
      and (max_matrix_dim is None or b <= max_matrix_dim)
      for i, b in enumerate(block))
  return KroneckerLayout(shape, merged, block, grid, matrix)


# ----------------------------------------------------------------------------------------------
# Gram statistics and mode products on stacks of blocks (n_blocks, b_0, ..., b_{k-1}).

_LETTERS = string.ascii_letters


def _block_letters(rank: int) -> str:
  if rank > 24:
    raise ValueError(f"blocks of rank {rank} are not supported (at most 24 dims)")
  return _LETTERS[1:rank + 1]  # 'a' is the stack index


def block_gram(blocks: jax.Array, dim: int, other: jax.Array | None = None,
               precision: Any = None) -> jax.Array:
  """(n, b_dim, b_dim): per block, X_(dim) Y_(dim)^T, the Gram matrix of the mode-`dim`
  unfolding (contracting every other dim); Y = X unless `other` is given."""
  other = blocks if other is None else other
  rank = blocks.ndim - 1
  left = _block_letters(rank)
  right = left.replace(left[dim], "Z")
  return jnp.einsum(f"a{left},a{right}->a{left[dim]}Z", blocks, other, precision=precision)


def block_gram_diagonal(blocks: jax.Array, dim: int) -> jax.Array:
  """(n, b_dim): the diagonal of `block_gram` (sums of squares over the other dims)."""
  axes = tuple(j + 1 for j in range(blocks.ndim - 1) if j != dim)
  return jnp.sum(blocks * blocks, axis=axes)


def mode_product(blocks: jax.Array, matrices: jax.Array, dim: int, *, transpose: bool = False,
                 precision: Any = None) -> jax.Array:
  """Multiply block dim `dim` by a matrix per block: out_{..a..} = sum_k M[k, a] x_{..k..}
  (M^T applied along the dim, as distributed_shampoo's tensordot over axis 0), or
  out_{..a..} = sum_k M[a, k] x_{..k..} (M applied) when `transpose`."""
  rank = blocks.ndim - 1
  letters = _block_letters(rank)
  out = letters.replace(letters[dim], "Z")
  factor = f"a{letters[dim]}Z" if not transpose else f"aZ{letters[dim]}"
  return jnp.einsum(f"a{letters},{factor}->a{out}", blocks, matrices, precision=precision)


def scale_dim(blocks: jax.Array, vectors: jax.Array, dim: int) -> jax.Array:
  """Multiply block dim `dim` elementwise by a vector per block, (n, b_dim)."""
  shape = [blocks.shape[0]] + [1] * (blocks.ndim - 1)
  shape[dim + 1] = blocks.shape[dim + 1]
  return blocks * jnp.reshape(vectors, shape)


# ----------------------------------------------------------------------------------------------
# Per-factor matrix work, batched across leaves and laid out over the mesh by `map_matrices`.


def map_stacked(f: Callable[..., tuple], stacks: Sequence[tuple], *, mesh: Any = None
                ) -> list[tuple]:
  """`f` applied to every matrix factor of every leaf, batched by size, each computed once.

  Each element of `stacks` is a tuple of arrays with a common leading stack axis n_i (one row
  per block, e.g. (statistics (n, b, b), padding masks (n, b), previous roots (n, b, b))), and
  `f` maps the arrays of ONE block (statistic (b, b), mask (b,), root (b, b)) to a tuple of
  arrays. Elements whose arrays have the same trailing shapes and dtype are concatenated into
  one stack of N = sum n_i blocks; the stack goes to `optimkit.matrix_work.map_matrices` as one
  batch of (rows, w) matrices, w the last dim of the first array (the components laid
  row-wise, each flattened and zero-padded to whole rows when its size is not a multiple of w,
  e.g. PSGD's (b0, b1) block with its b0 x b0 factor), which vmaps `f` locally or, on a mesh,
  shards the stack axis so that each block is computed once, on one device, and returns the
  results in the layout their consumers need. Returns, per input, the tuple of `f`'s outputs
  with the leading axis n_i.
  """
  from optimkit.matrix_work import map_matrices  # the layout of per-matrix work (DESIGN)

  results: list[Any] = [None] * len(stacks)
  groups: dict[Any, list[int]] = {}
  for index, item in enumerate(stacks):
    key = tuple((tuple(x.shape[1:]), jnp.dtype(x.dtype).name) for x in item)
    groups.setdefault(key, []).append(index)
  for indices in groups.values():
    items = [stacks[i] for i in indices]
    sizes = [item[0].shape[0] for item in items]
    stacked = items[0] if len(items) == 1 else tuple(
        jnp.concatenate(parts, axis=0) for parts in zip(*items))
    width = stacked[0].shape[-1]
    dtype = jnp.result_type(*stacked)
    in_shapes = [x.shape[1:] for x in stacked]
    in_dtypes = [x.dtype for x in stacked]
    out_structs = jax.eval_shape(f, *(jax.ShapeDtypeStruct(shape, d)
                                      for shape, d in zip(in_shapes, in_dtypes)))

    def packed_f(matrix, in_shapes=in_shapes, in_dtypes=in_dtypes, out_structs=out_structs,
                 width=width):
      parts, row = [], 0
      for shape, d in zip(in_shapes, in_dtypes):
        rows, size = _rows(shape, width), math.prod(shape)
        part = matrix[row:row + rows]
        if size != rows * width:
          part = part.reshape(-1)[:size]
        parts.append(part.reshape(shape).astype(d))
        row += rows
      outputs = f(*parts)
      return jnp.concatenate([_as_rows(jnp.broadcast_to(o, o.shape or (width,)), width)
                              .astype(matrix.dtype) for o in outputs], axis=0)

    n = stacked[0].shape[0]
    packed = jnp.concatenate([_as_rows(x.astype(dtype).reshape(n, -1), width, n)
                              for x in stacked], axis=1)
    out = map_matrices(packed_f, [packed], mesh=mesh)[0]
    outputs, row = [], 0
    for struct in out_structs:
      rows, size = _rows(struct.shape, width), math.prod(struct.shape)
      piece = out[:, row:row + rows]
      if not struct.shape:
        piece = piece[:, 0, 0]
      else:
        if size != rows * width:
          piece = piece.reshape(n, -1)[:, :size]
        piece = piece.reshape((n,) + struct.shape)
      outputs.append(piece.astype(struct.dtype))
      row += rows
    offsets = np.cumsum([0] + sizes)
    for i, start, stop in zip(indices, offsets[:-1], offsets[1:]):
      results[i] = tuple(o[int(start):int(stop)] for o in outputs)
  return results


def _rows(shape: Sequence[int], width: int) -> int:
  """Rows of `width` that an array of `shape` takes in `map_stacked`'s packing (a scalar: one
  row, broadcast)."""
  return max(1, -(-math.prod(shape) // width))


def _as_rows(x: jax.Array, width: int, n: int | None = None) -> jax.Array:
  """x as (rows, width) (or (n, rows, width) for a stack of n), its entries row-major and the
  last row zero-padded when the size is not a multiple of `width`."""
  flat = x.reshape(-1) if n is None else x.reshape(n, -1)
  size = flat.shape[-1]
  padding = -size % width
  if padding:
    flat = jnp.pad(flat, [(0, 0)] * (flat.ndim - 1) + [(0, padding)])
  return flat.reshape((-1, width) if n is None else (n, -1, width))


# ----------------------------------------------------------------------------------------------
# Stored factors: per leaf, a tuple of stacked matrices kept through `optimkit.state.matrices`
# (the algorithms' `preconditioner_storage=`).


def read_factors(store: Any, stored: Sequence[tuple], dtypes: Sequence[Any], kind: str
                 ) -> list[tuple]:
  """Every leaf's stored factors as arrays in its compute dtype (`MatrixStorage.read`)."""
  return [tuple(store.read(s, dtype, kind) for s in leaf) for leaf, dtype in zip(stored, dtypes)]


def write_factors(store: Any, values: Sequence[tuple], stored: Sequence[tuple],
                  accumulated: bool) -> list[tuple]:
  """Every leaf's factors in the storage format (`MatrixStorage.write`)."""
  return [tuple(store.write(v, s, accumulated) for v, s in zip(leaf_values, leaf_stored))
          for leaf_values, leaf_stored in zip(values, stored)]
