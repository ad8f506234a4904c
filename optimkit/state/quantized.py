"""Quantized moment storage: blockwise dynamic 8-bit (Dettmers, Lewis, Shleifer & Zettlemoyer
2022, "8-bit Optimizers via Block-wise Quantization", arXiv:2110.02861) and 4-bit (Li, Chen &
Zhu 2023, "Memory Efficient Optimizers with 4-bit States", arXiv:2309.01507).

8-bit: each block of 256 values is divided by its absolute maximum (kept in float32) and
rounded to the nearest entry of a 256-entry "dynamic" map: a sign, a decade exponent
(1e-6 ... 1) and a linear fraction in [0.1, 1], with more fraction steps for larger decades,
plus 0 and 1. Signed moments use the signed map; second moments (non-negative) the unsigned
one, which spends the sign bit on finer fractions.

4-bit: first moments in blocks of 128 with the 16-entry signed dynamic map. Second moments with
rank-1 normalisation: each entry of a matrix is divided by min(its row maximum, its column
maximum) and rounded to a linear map that excludes zero, {1/16, ..., 16/16}. Excluding zero is
the paper's key fix: a small v rounded to 0 makes the step m / (sqrt(v) + eps) explode.
Vectors use blocks of 128 with the same zero-free map.

Which leaves are quantized is decided from the leaf's global shape only (never a local shard):
leaves under `min_size` elements (4096, bitsandbytes' threshold) stay float32. Blocks run along
the trailing dimensions of a leaf (the smallest trailing group holding whole blocks), so
they never straddle the leading axes, along which parameters are usually sharded; when the
trailing dimensions do not hold a whole number of blocks, the leaf is blocked as one flat row
rather than padding every row.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# ----------------------------------------------------------------------------------------------
# The maps.


def _floor_log2(positive_ints: Any, xp: Any) -> Any:
  """floor(log2(n)) of int32 n in [1, 2**24), from the exponent of float32(n) (exact); -127
  for n = 0."""
  as_float = positive_ints.astype(np.float32)
  bits = (as_float.view(np.int32) if xp is np
          else jax.lax.bitcast_convert_type(as_float, jnp.int32))
  return (bits >> 23) - 127


def _dynamic_decoder(bits: int, signed: bool):
  """The decoder code -> value of the dynamic map: the map is defined by it (`dynamic_map`
  evaluates it on every code with NumPy), so decoding inside a step is arithmetic that fuses
  with its consumers, where a table lookup is a gather XLA will neither fuse nor duplicate.

  Codes sort the values ascending. A magnitude's rank r among the entries of its sign has
  e = floor(log2 r); the entries of one e are one decade's 2^e fractions, midpoints of equal
  steps of [0.1, 1], so r's value is 10^decade (0.1 + (j + 1/2) 0.9 / 2^e) with j = r - 2^e,
  which is n * unit[e] with the integer n = 18 r - 16 * 2^e + 9 and
  unit[e] = 10^decade / (20 * 2^e): one rounding of a product, the same in NumPy and XLA.
  """
  decades = bits - 1
  # Signed: rank = |code - zero code|, e = decade. Unsigned (twice the fractions per decade, no
  # sign): rank = code + 1, so rank 1 is zero and e = decade + 1.
  first_e = 0 if signed else 1
  units = [np.float32(10.0 ** (e - first_e - (decades - 1)) / (20.0 * 2 ** e))
           for e in range(first_e, first_e + decades)]
  top_rank = 2 ** (decades + first_e)  # the entry 1.0

  def decode(codes: Any, xp: Any) -> Any:
    offset = codes - (2 ** decades - 1) if signed else codes + 1
    rank = xp.abs(offset)
    e = _floor_log2(rank, xp)
    unit = xp.zeros(rank.shape, np.float32)  # zero where no decade matches: the entry 0
    for k, value in enumerate(units):
      unit = xp.where(e == first_e + k, value, unit)
    n = 18 * rank - (16 << xp.maximum(e, 0)) + 9
    value = xp.where(rank == top_rank, np.float32(1.0), n.astype(np.float32) * unit)
    return xp.where(offset < 0, -value, value) if signed else value

  return decode


def _linear_nonzero_decoder(bits: int):
  inverse_levels = np.float32(1.0 / 2 ** bits)
  return lambda codes, xp: (codes + 1).astype(np.float32) * inverse_levels


# Maps whose codes decode arithmetically, by the table's bytes; any other table is looked up.
_DECODERS: dict[bytes, Callable[[Any, Any], Any]] = {}


def _register(decoder: Callable[[Any, Any], Any], bits: int) -> np.ndarray:
  table = decoder(np.arange(2 ** bits, dtype=np.int32), np).astype(np.float32)
  assert np.all(np.diff(table) > 0), "codes must sort the map's values"
  _DECODERS[table.tobytes()] = decoder
  return table


@functools.lru_cache(maxsize=None)
def _dynamic_table(bits: int, signed: bool) -> np.ndarray:
  return _register(_dynamic_decoder(bits, signed), bits)


def dynamic_map(bits: int, signed: bool) -> np.ndarray:
  """The dynamic (decade exponent + linear fraction) quantization map with 2**bits entries.

  With s = bits - 1 non-sign bits and s decades 10^-(s-1) ... 10^0, decade i holds 2^i
  fractions (signed) or 2^(i+1) (unsigned): the midpoints of equal steps of [0.1, 1]. Adding
  0 and 1.0 fills the 2**bits entries exactly. Sorted ascending; float32.
  """
  return _dynamic_table(bits, signed).copy()


@functools.lru_cache(maxsize=None)
def _linear_nonzero_table(bits: int) -> np.ndarray:
  return _register(_linear_nonzero_decoder(bits), bits)


def linear_nonzero_map(bits: int) -> np.ndarray:
  """{1, 2, ..., 2**bits} / 2**bits: a linear map of (0, 1] without zero."""
  return _linear_nonzero_table(bits).copy()


# Nearest-entry search by a lookup on the float's top bits. A binary search (jnp.searchsorted)
# costs ~20x an elementwise pass on CPU; instead the top 17 bits of the float32 pattern (sign,
# exponent, 8 mantissa bits) index a table giving the lowest code that is nearest to some value
# in that bucket, and the nearest is then one of that code and the next two.
_BUCKET_SHIFT = 15
_CANDIDATES = 3
_COUNTED_UP_TO = 16  # maps this small are encoded by counting midpoints instead


def _midpoints(table: np.ndarray) -> np.ndarray:
  """float32 midpoints between consecutive map entries: the decision boundaries of nearest."""
  return ((table[1:].astype(np.float64) + table[:-1]) / 2.0).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _bucket_table(table_bytes: bytes) -> np.ndarray:
  table = np.frombuffer(table_bytes, dtype=np.float32)
  midpoints = _midpoints(table)
  keys = np.arange(2 ** (32 - _BUCKET_SHIFT), dtype=np.uint64)
  low_end = (keys << _BUCKET_SHIFT).astype(np.uint32).view(np.float32)
  high_end = ((keys << _BUCKET_SHIFT) | (2 ** _BUCKET_SHIFT - 1)).astype(np.uint32).view(
      np.float32)
  with np.errstate(invalid="ignore"):
    a = np.searchsorted(midpoints, np.nan_to_num(low_end), side="left")
    b = np.searchsorted(midpoints, np.nan_to_num(high_end), side="left")
  lowest, highest = np.minimum(a, b), np.maximum(a, b)
  # Normalized values lie in [-1, 1]: only those buckets must be resolvable by the candidates.
  in_range = np.isfinite(low_end) & np.isfinite(high_end) & (np.abs(low_end) <= 1.0)
  assert np.max((highest - lowest)[in_range]) < _CANDIDATES, "map too dense for the lookup"
  return lowest.astype(np.uint8)


def _encode(normalized: jax.Array, table: np.ndarray) -> jax.Array:
  """Index of the nearest map entry (ties to the lower one up to float rounding), as uint8."""
  values = normalized.astype(jnp.float32)
  if table.size <= _COUNTED_UP_TO:
    # A small (4-bit) map: the index is the number of midpoints below the value, 15 vectorised
    # compares and no gathers (measured 4x faster than the lookup below on 25M values).
    counts = sum((values > float(midpoint)).astype(jnp.int32) for midpoint in _midpoints(table))
    return counts.astype(jnp.uint8)  # type: ignore[union-attr]  # at least one midpoint
  bucket = jax.lax.bitcast_convert_type(values, jnp.uint32) >> _BUCKET_SHIFT
  lookup = jnp.asarray(_bucket_table(table.astype(np.float32).tobytes()))
  first = _lookup(lookup, bucket.astype(jnp.int32)).astype(jnp.int32)
  # The nearest entry is first + (how many of the midpoints after `first` lie below the value);
  # the padding makes the last entries' missing midpoints +inf.
  midpoints = jnp.asarray(np.concatenate([_midpoints(table),
                                          np.full(_CANDIDATES - 1, np.inf, np.float32)]))
  code = first
  for offset in range(_CANDIDATES - 1):
    code = code + (values > _lookup(midpoints, first + offset)).astype(jnp.int32)
  return code.astype(jnp.uint8)


def _lookup(table: jax.Array, indices: jax.Array) -> jax.Array:
  """table[indices], sharded like `indices` (a plain gather has no sharding rule for sharded
  indices under Explicit mesh axes)."""
  return table.at[indices].get(out_sharding=jax.typeof(indices).sharding)


def _decode(codes: jax.Array, table: np.ndarray) -> jax.Array:
  decoder = _DECODERS.get(np.asarray(table, np.float32).tobytes())
  if decoder is None:
    return _lookup(jnp.asarray(table), codes.astype(jnp.int32))
  return decoder(codes.astype(jnp.int32), jnp)


def _pack4(codes: jax.Array) -> jax.Array:
  """Two 4-bit codes per byte along the last axis (even length)."""
  pairs = codes.reshape(codes.shape[:-1] + (codes.shape[-1] // 2, 2))
  return (pairs[..., 0] | (pairs[..., 1] << 4)).astype(jnp.uint8)


def _unpack4(packed: jax.Array) -> jax.Array:
  low, high = packed & jnp.uint8(0x0F), packed >> 4
  return jnp.stack([low, high], axis=-1).reshape(packed.shape[:-1] + (packed.shape[-1] * 2,))


# ----------------------------------------------------------------------------------------------
# Blockwise layout along the trailing dimensions.


def block_layout(shape: tuple[int, ...], block_size: int) -> tuple[tuple[int, ...], int, int]:
  """(leading dims, trailing group size, blocks per row): the trailing group is the smallest
  suffix of dims that holds a whole number of blocks (so no row is padded), or all dims, in
  which case only the very end is padded."""
  split, trailing = len(shape), 1
  while split > 0 and (trailing < block_size or trailing % block_size):
    split -= 1
    trailing *= shape[split]
  return tuple(shape[:split]), trailing, math.ceil(trailing / block_size)


class BlockQuantized(NamedTuple):
  """A blockwise-quantized tensor: uint8 codes (two per byte at 4 bits) shaped
  (*leading, blocks, block or block/2) and one float32 absmax per block (*leading, blocks)."""

  codes: jax.Array
  absmax: jax.Array


def quantize_blockwise(x: jax.Array, table: np.ndarray, block_size: int,
                       packed: bool, entropy: jax.Array | None = None) -> BlockQuantized:
  """`x` in blocks of `block_size` along its trailing dims (`block_layout`), each block divided
  by its absolute maximum and rounded to `table`: to the nearest entry, or, given `entropy` (an
  array shaped like `x` whose bits seed the draw, as `round_to_bfloat16`'s), stochastically
  between the two entries around it, so that the rounding is unbiased."""
  leading, trailing, blocks = block_layout(x.shape, block_size)
  padding = blocks * block_size - trailing

  def as_blocks(array):
    rows = array.astype(jnp.float32).reshape(leading + (trailing,))
    if padding:
      rows = jnp.pad(rows, [(0, 0)] * len(leading) + [(0, padding)])
    return rows.reshape(leading + (blocks, block_size))

  rows = as_blocks(x)
  absmax = jnp.max(jnp.abs(rows), axis=-1)
  normalized = rows / jnp.where(absmax > 0, absmax, 1.0)[..., None]
  codes = (_encode(normalized, table) if entropy is None
           else _encode_stochastic(normalized, table, as_blocks(entropy)))
  return BlockQuantized(codes=_pack4(codes) if packed else codes, absmax=absmax)


def _encode_stochastic(normalized: jax.Array, table: np.ndarray,
                       entropy: jax.Array) -> jax.Array:
  """Unbiased rounding to the map: the nearest entry or its neighbour on the value's side,
  the neighbour with probability (distance to the nearest) / (gap between them). Nearest
  rounding loses every change smaller than half a step, so a buffer that moves by small
  increments (an EMA with beta close to 1) would never move."""
  from optimkit.state.stochastic_rounding import random_bits  # the same keyless hash

  values = normalized.astype(jnp.float32)
  code = _encode(values, table).astype(jnp.int32)
  nearest = _decode(code, table)
  other = jnp.clip(code + jnp.where(values > nearest, 1, -1), 0, table.size - 1)
  gap = _decode(other, table) - nearest
  probability = jnp.where(gap != 0, (values - nearest) / jnp.where(gap != 0, gap, 1.0), 0.0)
  uniform = (random_bits(values, entropy) >> 8).astype(jnp.float32) * np.float32(2.0 ** -24)
  return jnp.where(uniform < probability, other, code).astype(jnp.uint8)


def block_size_of(stored: BlockQuantized, shape: tuple[int, ...]) -> int:
  """The block size `stored` was made with, for a tensor of `shape` (codes hold one or two
  values per byte)."""
  width = stored.codes.shape[-1]
  for block_size in (width, 2 * width):
    leading, _, blocks = block_layout(shape, block_size)
    if leading + (blocks,) == tuple(stored.absmax.shape):
      return block_size
  raise ValueError(f"quantized arrays {stored.codes.shape}/{stored.absmax.shape} do not fit a "
                   f"tensor of shape {shape}")


def dequantize_blockwise(q: BlockQuantized, table: np.ndarray, shape: tuple[int, ...],
                         block_size: int, packed: bool) -> jax.Array:
  leading, trailing, blocks = block_layout(shape, block_size)
  codes = _unpack4(q.codes) if packed else q.codes
  values = _decode(codes, table) * q.absmax[..., None]
  return values.reshape(leading + (blocks * block_size,))[..., :trailing].reshape(shape)


class Rank1Quantized(NamedTuple):
  """A non-negative matrix-like tensor quantized after rank-1 normalisation: packed 4-bit codes
  shaped (*shape[:-1], ceil(shape[-1] / 2)), row maxima (*shape[:-1]) and column maxima
  (shape[-1],), all maxima float32."""

  codes: jax.Array
  row_max: jax.Array
  col_max: jax.Array


def _rank1_normalizer(row_max: jax.Array, col_max: jax.Array) -> jax.Array:
  return jnp.minimum(row_max[..., None], col_max)


def quantize_rank1(x: jax.Array, table: np.ndarray) -> Rank1Quantized:
  x = x.astype(jnp.float32)
  row_max = jnp.max(x, axis=-1)
  col_max = jnp.max(x.reshape(-1, x.shape[-1]), axis=0)
  normalizer = _rank1_normalizer(row_max, col_max)
  normalized = x / jnp.where(normalizer > 0, normalizer, 1.0)
  codes = _encode(normalized, table)
  if x.shape[-1] % 2:
    codes = jnp.pad(codes, [(0, 0)] * (x.ndim - 1) + [(0, 1)])
  return Rank1Quantized(codes=_pack4(codes), row_max=row_max, col_max=col_max)


def dequantize_rank1(q: Rank1Quantized, table: np.ndarray, shape: tuple[int, ...]) -> jax.Array:
  codes = _unpack4(q.codes)[..., :shape[-1]]
  return _decode(codes, table) * _rank1_normalizer(q.row_max, q.col_max)


QUANTIZED_TYPES = (BlockQuantized, Rank1Quantized)


def is_quantized(x: Any) -> bool:
  return isinstance(x, QUANTIZED_TYPES)
