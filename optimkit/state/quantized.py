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

Which leaves are quantized, and how they are cut into blocks, is decided from the leaf's global
shape only (never a local shard, so a checkpoint restores onto any mesh): leaves under
`min_size` elements (4096, bitsandbytes' threshold) stay float32. A block is a tile of the leaf
(`block_layout`): an extent t_i dividing each dim d_i, B/2 to 2B elements for a nominal block
size B (256 at 8 bits, 128 at 4), with t_i chosen so that d_i / t_i keeps at least 2^3 (or all
of d_i's factors of two, if fewer): then any split of a dim into up to 8 shards, or 2 x 4 of
two dims, holds whole blocks, and every device quantizes its own blocks. Blocks follow the rows
as far as that allows (a (4096, 11008) kernel at 8 bits: 1 x 344 tiles). The scales have the
shape of the grid of tiles (d_0 / t_0, d_1 / t_1, ...) and the codes that of the leaf with
each dim split into (tiles, within a tile), (d_0 / t_0, t_0, d_1 / t_1, t_1, ...) without the
unit axes (a reshape of the leaf), so both shard like the parameter along the grid axes.
Quantizing and reading are reshapes, a reduction over the within-tile axes and elementwise
work: no transposes or gathers. A leaf no tile fits (a prime
length) is read as one flat row padded to whole blocks of B; its padding is in the codes, so
the memory report counts it.

What differs from bitsandbytes: its blocks are runs of B consecutive values of the flattened
tensor, which straddle rows (and shards) whenever B does not divide a shard of the row; here
the block size varies per leaf (B/2 to 2B) so that blocks never straddle either.
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
# Blockwise layout: tiles that shards hold whole.

# Every dim keeps this many factors of two after tiling where its size allows (2^3: an 8-way
# split of any one dim, or 2 x 4 of two, holds whole blocks). Eight is the usual tensor-parallel
# width; larger splits (FSDP over many devices) are on the leading dims, which a block spans as
# little as the sizes allow and so keep nearly all their factors.
_SHARD_RESERVE = 3


class BlockLayout(NamedTuple):
  """How a leaf is cut into blocks. `tile` is a block's extent along each dim of `view`, the
  shape the codes hold (before 4-bit packing): the leaf's own shape when the tile divides it,
  else the flat fallback, the leaf read as one row padded to whole blocks of `tile[0]`. A
  block's scale sits at its tile's index in the grid `view / tile`."""

  tile: tuple[int, ...]
  view: tuple[int, ...]
  flat: bool

  @property
  def grid(self) -> tuple[int, ...]:
    return tuple(v // t for v, t in zip(self.view, self.tile))

  @property
  def blocked(self) -> tuple[int, ...]:
    """The codes' shape (before packing): (g_0, t_0, g_1, t_1, ...), the view with each dim
    split into (tiles, within a tile), leaving out within-tile axes of extent 1. A
    row-contiguous tile is (g_0, g_1, t_1). Writing codes in the view's shape instead made XLA's
    CPU loop find each byte's scale by integer division: the 4-bit write took 4x as long."""
    return tuple(n for g, t in zip(self.grid, self.tile) for n in ((g, t) if t > 1 else (g,)))

  @property
  def grid_axes(self) -> tuple[int, ...]:
    """The axis of `blocked` holding each dim's tile index g_i."""
    axes, axis = [], 0
    for t in self.tile:
      axes.append(axis)
      axis += 2 if t > 1 else 1
    return tuple(axes)


def _twos(n: int) -> int:
  """The number of factors of two in n (0 for n = 0)."""
  return (n & -n).bit_length() - 1 if n else 0


def _divisors(n: int, limit: int) -> list[int]:
  return [d for d in range(1, min(n, limit) + 1) if n % d == 0] if n else [1]


def _tiles(shape: tuple[int, ...], limit: int):
  """Every tile of divisors of `shape`'s dims with at most `limit` elements."""
  if not shape:
    yield ()
    return
  for rest in _tiles(shape[1:], limit):
    room = limit // math.prod(rest)
    for extent in _divisors(shape[0], room):
      yield (extent,) + rest


@functools.lru_cache(maxsize=4096)
def block_layout(shape: tuple[int, ...], block_size: int) -> BlockLayout:
  """The blocks of a leaf of global shape `shape` (never a shard's: a checkpoint restores onto
  any mesh) for a nominal `block_size` B.

  A block is a tile t of the leaf, t_i dividing d_i, so a shard of dim i into k parts holds
  whole blocks whenever k divides d_i / t_i. Mesh sizes are powers of two in practice (odd
  factors of t_i never stop a split), so the choice is about where a tile spends the factors of
  two of the dims. Among tiles of B/2 to 2B elements (a leaf smaller than B/2 is one block), it
  takes, in order of priority:
    1. the one that leaves every dim min(its factors of two, `_SHARD_RESERVE`) factors of two
       (as nearly as possible: the smallest sum of shortfalls);
    2. the one spanning the fewest rows (product of the extents before the last dim): values
       within a row share their scale, as in row-contiguous blocks;
    3. the one whose size is nearest B (in ratio);
    4. the one leaving the most factors of two in its worst-off dims, then the next (leximin).
  E.g. (4096, 11008) at B = 256: (1, 344), 344 = 8 x 43, leaving 11008 / 344 = 32 = 2^5 along
  the row, so 8-way (1376 columns, 4 blocks) and 4-way shards hold whole blocks, where 256-runs
  along the rows do not (1376 / 256 = 5.375). (1600, 1600) (GPT-2-XL): (1, 200). When no tile
  is in the range (a leaf of prime or odd sizes, e.g. a 50257-vector, which no mesh divides
  anyway), the leaf is read as one flat row padded to whole blocks of B: padded codes that the
  memory report counts.
  """
  shape = tuple(int(d) for d in shape)
  size = math.prod(shape)
  if shape:
    low, high = min(block_size // 2, size), 2 * block_size
    best, best_key = None, None
    for tile in _tiles(shape, high):
      elements = math.prod(tile)
      if elements < low:
        continue
      kept = [_twos(d // t) if d else 0 for d, t in zip(shape, tile)]
      shortfall = sum(max(0, min(_twos(d), _SHARD_RESERVE) - r) for d, r in zip(shape, kept))
      # The last entry only makes the choice unique: longer runs along the trailing dims.
      key = (shortfall, math.prod(tile[:-1]), abs(math.log2(max(elements, 1) / block_size)),
             tuple(-r for r in sorted(kept)), tuple(-t for t in reversed(tile)))
      if best_key is None or key < best_key:
        best, best_key = tile, key
    if best is not None:
      return BlockLayout(tile=best, view=shape, flat=False)
  block = min(block_size, max(size, 1))
  return BlockLayout(tile=(block,), view=(-(-size // block) * block,), flat=True)
class BlockQuantized(NamedTuple):
  """A blockwise-quantized tensor: uint8 codes shaped like the layout's `blocked` shape (two per
  byte along its last axis at 4 bits, padded to an even count), and one float32 absmax per
  block, shaped like the layout's grid."""

  codes: jax.Array
  absmax: jax.Array


def _scale_shape(layout: BlockLayout) -> tuple[int, ...]:
  """`layout.blocked` with 1 for each within-tile axis: the scales, broadcasting over blocks."""
  return tuple(n for g, t in zip(layout.grid, layout.tile) for n in ((g, 1) if t > 1 else (g,)))


def as_blocks(x: jax.Array, layout: BlockLayout) -> jax.Array:
  """`x` (the tensor's shape) in float32 shaped `layout.blocked`: a reshape, and for the flat
  layout a pad at the end. A block is the entries with one index into every grid axis; its
  reductions run over the others (`block_axes`)."""
  x = x.astype(jnp.float32)
  if layout.flat:
    x = x.reshape(-1)
    if layout.view[0] > x.size:
      x = jnp.pad(x, (0, layout.view[0] - x.size))
  return x.reshape(layout.blocked)


def block_axes(layout: BlockLayout) -> tuple[int, ...]:
  """The within-tile axes of `layout.blocked`."""
  return tuple(axis for axis in range(len(layout.blocked)) if axis not in layout.grid_axes)


def block_scales(x: jax.Array, layout: BlockLayout) -> jax.Array:
  """Each block's absolute maximum, shaped like the layout's grid."""
  return jnp.max(jnp.abs(as_blocks(x, layout)), axis=block_axes(layout)).reshape(layout.grid)


def encode_blocks(x: jax.Array, absmax: jax.Array, layout: BlockLayout, table: np.ndarray,
                  packed: bool, entropy: jax.Array | None = None) -> jax.Array:
  """The codes of `x` given its blocks' scales: x / absmax rounded to the nearest map entry
  (or stochastically, given `entropy`: see `quantize_blockwise`)."""
  scales = absmax.reshape(_scale_shape(layout))
  normalized = as_blocks(x, layout) / jnp.where(scales > 0, scales, 1.0)
  codes = (_encode(normalized, table) if entropy is None
           else _encode_stochastic(normalized, table, as_blocks(entropy, layout)))
  if not packed:
    return codes
  if codes.shape[-1] % 2:
    codes = jnp.pad(codes, [(0, 0)] * (codes.ndim - 1) + [(0, 1)])
  return _pack4(codes)


def quantize_blockwise(x: jax.Array, table: np.ndarray, block_size: int,
                       packed: bool, entropy: jax.Array | None = None) -> BlockQuantized:
  """`x` in blocks (`block_layout`), each block divided by its absolute maximum and rounded to
  `table`: to the nearest entry, or, given `entropy` (an array shaped like `x` whose bits seed
  the draw, as `round_to_bfloat16`'s), stochastically between the two entries around it, so
  that the rounding is unbiased."""
  layout = block_layout(tuple(x.shape), block_size)
  absmax = block_scales(x, layout)
  return BlockQuantized(codes=encode_blocks(x, absmax, layout, table, packed, entropy),
                        absmax=absmax)


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


def _packing(codes: tuple[int, ...], layout: BlockLayout) -> bool | None:
  """Whether codes of shape `codes` are `layout`'s packed (True) or unpacked (False), or None."""
  blocked = layout.blocked
  if codes == blocked:
    return False
  if codes == blocked[:-1] + (-(-blocked[-1] // 2),):
    return True
  return None


def stored_layout(stored: BlockQuantized, shape: tuple[int, ...]) -> tuple[BlockLayout, bool]:
  """The layout and packing `stored` was made with, for a tensor of `shape`, read from the
  arrays' shapes (the layout rule's block size need not be known). ValueError if they cannot
  be blocks of such a tensor."""
  shape = tuple(shape)
  codes, grid = tuple(stored.codes.shape), tuple(stored.absmax.shape)
  if shape and len(grid) == len(shape) and all(
      (g == 0 and d == 0) or (g and d % g == 0) for d, g in zip(shape, grid)):
    tile = tuple(d // g if g else 1 for d, g in zip(shape, grid))
    layout = BlockLayout(tile=tile, view=shape, flat=False)
    packed = _packing(codes, layout)
    if packed is not None:
      return layout, packed
  size = math.prod(shape)
  if len(grid) == 1 and grid[0] and codes:
    for block in (codes[-1], 2 * codes[-1], 2 * codes[-1] - 1, 1):
      if block > 0 and -(-size // block) == grid[0]:
        layout = BlockLayout(tile=(block,), view=(grid[0] * block,), flat=True)
        packed = _packing(codes, layout)
        if packed is not None:
          return layout, packed
  raise ValueError(f"quantized arrays {codes}/{grid} do not fit a tensor of shape {shape}")


def dequantize_blockwise(q: BlockQuantized, table: np.ndarray, shape: tuple[int, ...],
                         block_size: int, packed: bool) -> jax.Array:
  layout = block_layout(tuple(shape), block_size)
  codes = _unpack4(q.codes)[..., :layout.blocked[-1]] if packed else q.codes
  values = _decode(codes, table) * q.absmax.reshape(_scale_shape(layout))
  if layout.flat:
    return values.reshape(-1)[:math.prod(shape)].reshape(shape)
  return values.reshape(shape)


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
