"""The blocked Kronecker layout shared by Shampoo, SOAP and PSGD-Kron: merging and blocking
against distributed_shampoo's own `merge_small_dims` and `BlockPartitioner`, the padding masks,
Gram statistics and mode products against NumPy, and the batched matrix work."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimkit.transforms import kronecker as kr


def _reference():
  for name, replacement in (("tree_map", jax.tree.map), ("tree_flatten", jax.tree.flatten),
                            ("tree_unflatten", jax.tree.unflatten),
                            ("tree_leaves", jax.tree.leaves)):
    if not hasattr(jax, name):
      setattr(jax, name, replacement)
  from precondition import distributed_shampoo
  return distributed_shampoo


@pytest.mark.parametrize("shape,max_dim", [
    ((1, 2, 512, 1, 2048, 1, 3, 4), 1024), ((1, 2, 768, 1, 2048), 1024), ((1, 1, 1), 8),
    ((), 8), ((6, 5), 4), ((6, 5), 30), ((3, 4, 5), 20), ((7,), 3), ((2, 1, 9), 18)])
def test_merge_small_dims_is_distributed_shampoos(shape, max_dim):
  reference = _reference().merge_small_dims(list(shape), max_dim)
  assert kr.merge_small_dims(shape, max_dim) == tuple(reference)


@pytest.mark.parametrize("shape,block_size", [((10, 7), 4), ((9, 3, 5), 2), ((12,), 5),
                                              ((8, 8), 4), ((5, 6), 100)])
def test_blocks_follow_distributed_shampoos_partition(shape, block_size):
  ds = _reference()
  x = np.random.default_rng(0).normal(size=shape)
  layout = kr.kronecker_layout(shape, block_size=block_size)
  blocks = np.asarray(layout.to_blocks(jnp.asarray(x)))
  partitions = ds.BlockPartitioner(x, block_size).partition(jnp.asarray(x))
  assert blocks.shape == (len(partitions),) + layout.block
  for block, part in zip(blocks, partitions):
    part = np.asarray(part)
    np.testing.assert_array_equal(block[tuple(slice(0, n) for n in part.shape)], part)
    # Everything outside the real part is zero padding, as the masks say.
    outside = np.ones(block.shape, bool)
    outside[tuple(slice(0, n) for n in part.shape)] = False
    assert not np.any(block[outside])
  for i in range(layout.rank):
    masks = layout.dim_mask(i)
    for mask, part in zip(masks, partitions):
      assert mask.sum() == part.shape[i] and np.all(mask[:part.shape[i]] == 1)
  np.testing.assert_array_equal(np.asarray(layout.from_blocks(jnp.asarray(blocks))), x)


def test_layout_rules():
  # Merging then blocking: (4, 3, 50) -> (12, 50) -> blocks of (12, 16), grid (1, 4).
  layout = kr.kronecker_layout((4, 3, 50), merge=16, block_size=16)
  assert layout.merged == (12, 50) and layout.block == (12, 16) and layout.grid == (1, 4)
  assert layout.matrix == (True, True) and layout.n_blocks == 4
  assert layout.factor_shapes() == [(4, 12, 12), (4, 16, 16)]
  # Vectors and scalars are diagonal with min_rank=2, dims above max_matrix_dim too.
  assert kr.kronecker_layout((7,), min_rank=2).diagonal
  assert kr.kronecker_layout((), min_rank=1).diagonal
  assert kr.kronecker_layout((7,)).matrix == (True,)
  assert kr.kronecker_layout((5, 300), max_matrix_dim=100).matrix == (True, False)
  assert kr.kronecker_layout((1, 6), min_matrix_dim=2).matrix == (False, True)
  assert kr.kronecker_layout((5, 6), diagonal_dims=(1,)).matrix == (True, False)
  assert kr.kronecker_layout((5, 6), diagonal=True).diagonal
  # A merge rule given as a function, checked for size.
  assert kr.kronecker_layout((2, 3, 4), merge=lambda s: (6, 4)).merged == (6, 4)
  with pytest.raises(ValueError, match="same number of elements"):
    kr.kronecker_layout((2, 3, 4), merge=lambda s: (6, 5))
  # Empty leaves: one empty block, nothing preconditioned, round trip works.
  empty = kr.kronecker_layout((0, 4), block_size=2)
  assert empty.diagonal and empty.to_blocks(jnp.zeros((0, 4))).shape == (1, 0, 4)
  # Scalars are one block of shape ().
  scalar = kr.kronecker_layout(())
  assert scalar.to_blocks(jnp.asarray(3.0)).shape == (1,)
  assert float(scalar.from_blocks(jnp.asarray([3.0]))) == 3.0


def test_grams_and_mode_products_match_numpy():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 4, 5, 6))  # 3 blocks of shape (4, 5, 6)
  y = rng.normal(size=x.shape)
  for dim in range(3):
    unfold = lambda t: np.moveaxis(t, dim, 0).reshape(t.shape[dim], -1)
    expected = np.stack([unfold(a) @ unfold(b).T for a, b in zip(x, y)])
    np.testing.assert_allclose(kr.block_gram(jnp.asarray(x), dim, jnp.asarray(y)), expected,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kr.block_gram_diagonal(jnp.asarray(x), dim),
                               np.stack([np.diag(unfold(a) @ unfold(a).T) for a in x]),
                               rtol=1e-12)
    m = rng.normal(size=(3, x.shape[dim + 1], 7))
    got = kr.mode_product(jnp.asarray(x), jnp.asarray(m), dim)
    expected = np.stack([np.moveaxis(np.tensordot(a, b, axes=([dim], [0])), -1, dim)
                         for a, b in zip(x, m)])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    mt = np.swapaxes(m, 1, 2)
    np.testing.assert_allclose(kr.mode_product(jnp.asarray(x), jnp.asarray(mt), dim,
                                               transpose=True), expected, rtol=1e-12,
                               atol=1e-12)
    v = rng.normal(size=(3, x.shape[dim + 1]))
    scaled = np.stack([np.moveaxis(np.moveaxis(a, dim, -1) * b, -1, dim) for a, b in zip(x, v)])
    np.testing.assert_allclose(kr.scale_dim(jnp.asarray(x), jnp.asarray(v), dim), scaled)


def test_map_stacked_batches_by_size_and_keeps_order():
  rng = np.random.default_rng(2)
  stacks = [(jnp.asarray(rng.normal(size=(n, s, s))), jnp.asarray(rng.normal(size=(n, s))))
            for n, s in [(2, 3), (1, 4), (3, 3), (2, 4)]]
  calls = []

  def fn(matrix, vector):
    calls.append(matrix.shape)
    return jnp.linalg.inv(matrix), matrix @ vector, jnp.trace(matrix) > 0

  out = kr.map_stacked(fn, stacks)
  # Traced per size (its output shapes, then under vmap), not per input: both 3 x 3 inputs, all
  # five blocks, go through one trace.
  assert sorted(calls) == [(3, 3), (3, 3), (4, 4), (4, 4)]
  for (matrix, vector), (inverse, product, positive) in zip(stacks, out):
    matrix, vector = np.asarray(matrix), np.asarray(vector)
    np.testing.assert_allclose(inverse, np.linalg.inv(matrix), rtol=1e-10)
    np.testing.assert_allclose(product, np.einsum("nij,nj->ni", matrix, vector), rtol=1e-12)
    assert positive.dtype == jnp.bool_
    np.testing.assert_array_equal(positive, np.trace(matrix, axis1=1, axis2=2) > 0)


def test_padded_eye_and_layouts_are_hashable():
  layout = kr.kronecker_layout((5, 3), block_size=2)
  eye = np.asarray(layout.eye(0, jnp.float32))
  assert eye.shape == (6, 2, 2)
  # Blocks in the last row of the grid hold one real row: their identity has one 1.
  assert [int(e.sum()) for e in eye] == [2, 2, 2, 2, 1, 1]
  assert hash(layout) == hash(kr.kronecker_layout((5, 3), block_size=2))
  for shape in itertools.product([1, 3], [2, 5]):
    lay = kr.kronecker_layout(shape, block_size=2)
    x = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
    np.testing.assert_array_equal(lay.from_blocks(lay.to_blocks(x)), x)
