"""Quantize/dequantize round trips: every value lands on the nearest map entry of its block
(8-bit and 4-bit signed and unsigned), rank-1 second moments are never rounded to zero, and the
layout keeps blocks inside the leading axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimkit.state import quantized as q

RNG = np.random.default_rng(0)


def _nearest_error(normalized, table):
  return np.min(np.abs(normalized[..., None] - table), axis=-1)


@pytest.mark.parametrize("shape", [(7, 300), (6, 512)])  # one flat row; blocks within rows
@pytest.mark.parametrize("bits,packed,block", [(8, False, 256), (4, True, 128)])
@pytest.mark.parametrize("signed", [True, False])
def test_blockwise_round_trip_is_nearest_map_entry(bits, packed, block, signed, shape):
  table = q.dynamic_map(bits, signed)
  x = RNG.standard_t(3, size=shape) * 10.0 ** RNG.uniform(-4, 2, (shape[0], 1))
  x = (x if signed else x * x).astype(np.float32)
  quantized = q.quantize_blockwise(jnp.asarray(x), table, block, packed)
  restored = np.asarray(q.dequantize_blockwise(quantized, table, x.shape, block, packed))
  leading, trailing, blocks = q.block_layout(x.shape, block)
  rows = x.reshape(leading + (trailing,))
  padded = np.pad(rows, [(0, 0)] * len(leading) + [(0, blocks * block - trailing)])
  padded = padded.reshape(leading + (blocks, block))
  absmax = np.max(np.abs(padded), axis=-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(quantized.absmax), absmax[..., 0], rtol=0)
  unpad = lambda a: a.reshape(leading + (blocks * block,))[..., :trailing].reshape(-1)
  error = np.abs(restored - x).reshape(-1)
  # Each value lands on the nearest entry of the map (up to float32 rounding): a tight bound.
  bound = unpad(_nearest_error(padded / absmax, table) * absmax)
  np.testing.assert_allclose(error, bound, rtol=1e-5, atol=1e-6 * np.max(np.abs(x)))
  # And the worst case per block is half the largest gap of the map.
  worst = unpad(np.broadcast_to((np.max(np.diff(table)) / 2 + 1e-6) * absmax, padded.shape))
  assert np.all(error <= worst)


def test_maps_have_the_published_shapes():
  signed8, unsigned8 = q.dynamic_map(8, True), q.dynamic_map(8, False)
  assert signed8.size == unsigned8.size == 256
  assert signed8.max() == 1.0 and unsigned8.max() == 1.0 and unsigned8.min() == 0.0
  assert np.isclose(np.min(np.abs(signed8[signed8 != 0])), 1e-6 * 0.55, rtol=1e-6)
  assert np.all(np.diff(signed8) > 0) and np.all(np.diff(unsigned8) > 0)
  assert q.dynamic_map(4, True).size == 16
  np.testing.assert_allclose(q.linear_nonzero_map(4), np.arange(1, 17) / 16)


@pytest.mark.parametrize("table", [q.dynamic_map(8, True), q.dynamic_map(8, False),
                                   q.dynamic_map(4, True), q.dynamic_map(4, False),
                                   q.linear_nonzero_map(4)],
                         ids=["8bit-signed", "8bit-unsigned", "4bit-signed", "4bit-unsigned",
                              "4bit-linear"])
def test_arithmetic_decode_is_exactly_the_map(table):
  # Inside a step the codes decode arithmetically (a gather would not fuse); the values must be
  # the map's entries bit for bit, also inside a fused, vectorised loop.
  codes = jnp.tile(jnp.arange(table.size, dtype=jnp.uint8), 257)
  decoded = jax.jit(lambda c: q._decode(c, table) * 1.0)(codes)
  np.testing.assert_array_equal(np.asarray(decoded), np.tile(table, 257))
  # A map with no arithmetic decoder is looked up.
  other = np.sort(RNG.uniform(-1, 1, table.size)).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(q._decode(codes, other)), np.tile(other, 257))


def test_rank1_second_moment_is_never_zero_and_close():
  v = (RNG.standard_normal((64, 96)) ** 2 * np.exp(RNG.normal(0, 2, (64, 1)))).astype(np.float32)
  v = v.astype(np.float64).astype(np.float32)
  v[3, 5] = 0.0
  table = q.linear_nonzero_map(4)
  quantized = q.quantize_rank1(jnp.asarray(v), table)
  restored = np.asarray(q.dequantize_rank1(quantized, table, v.shape))
  normalizer = np.minimum(v.max(1, keepdims=True), v.max(0, keepdims=True))
  assert np.all(restored >= normalizer / 16 * (1 - 1e-6))  # zero excluded, even for v = 0
  # Each entry is the nearest of {1/16, ..., 1} times its normaliser min(row max, col max).
  nearest = table[np.argmin(np.abs(v[..., None] / normalizer[..., None] - table), axis=-1)]
  np.testing.assert_allclose(restored, nearest * normalizer, rtol=1e-6)
  assert quantized.codes.dtype == jnp.uint8 and quantized.codes.shape == (64, 48)


def test_block_layout_keeps_leading_axes():
  assert q.block_layout((768, 3072), 256) == ((768,), 3072, 12)
  assert q.block_layout((768, 12, 64), 256) == ((768,), 768, 3)
  assert q.block_layout((50000,), 256) == ((), 50000, 196)
  assert q.block_layout((4, 4), 256) == ((), 16, 1)
  # Rows that do not hold whole blocks are not padded one by one: the leaf becomes one row.
  assert q.block_layout((4160, 12480), 256) == ((), 4160 * 12480, 202800)


def test_4bit_packing_round_trips():
  codes = jnp.asarray(RNG.integers(0, 16, size=(3, 10)), jnp.uint8)
  np.testing.assert_array_equal(q._unpack4(q._pack4(codes)), codes)
