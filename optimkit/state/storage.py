"""How a moment buffer is stored: the one place every moment-bearing transform goes through, so
that every optimizer gets every format from one argument (`state_storage=`).

    "float32"   at least float32 (float64 params keep float64): exact; the default.
    "bfloat16"  2 bytes, written back with stochastic rounding (unbiased).
    "8bit"      blockwise dynamic 8-bit, block 256, ~1 byte (Dettmers et al. 2022).
    "4bit"      4-bit: first moments blockwise (128) dynamic, second moments rank-1 normalised
                with a zero-free linear map, ~0.5 byte (Li et al. 2023).

A transform computes in float32 (or float64): it `read`s its stored moments, updates them, and
`write`s them back. `signed` tells the format whether the moment can be negative (momentum) or
not (second moments, squared-gradient sums), which picks the quantization map.
"""

from __future__ import annotations

import abc
from typing import Any, Union

import jax
import jax.numpy as jnp

from optimkit.state import quantized as q
from optimkit.state.stochastic_rounding import round_to_bfloat16


def compute_dtype(like: jax.Array) -> jnp.dtype:
  """The dtype moments are computed in: at least float32."""
  return jnp.promote_types(like.dtype, jnp.float32)


class StateStorage(abc.ABC):
  """A storage format for moment buffers, defined by its three per-leaf methods."""

  name = "abstract"

  # Per leaf --------------------------------------------------------------------------------

  @abc.abstractmethod
  def init_leaf(self, like: jax.Array, signed: bool) -> Any:
    """Stored zeros for a moment shaped like `like`."""

  @abc.abstractmethod
  def read_leaf(self, stored: Any, like: jax.Array, signed: bool) -> jax.Array:
    """The stored moment as an array in the compute dtype."""

  @abc.abstractmethod
  def write_leaf(self, value: jax.Array, like: jax.Array, stored: Any, signed: bool) -> Any:
    """`value` in this format (`stored` is the previous stored value, same structure)."""

  # Per tree: `like` (params or gradients) comes first, so quantized leaves, which are small
  # NamedTuples of arrays, are passed whole.

  def init(self, params: Any, signed: bool) -> Any:
    return jax.tree.map(lambda p: self.init_leaf(p, signed), params)

  def read(self, stored: Any, like: Any, signed: bool) -> Any:
    return jax.tree.map(lambda x, s: self.read_leaf(s, x, signed), like, stored)

  def write(self, values: Any, like: Any, stored: Any, signed: bool) -> Any:
    return jax.tree.map(lambda x, v, s: self.write_leaf(v, x, s, signed), like, values, stored)

  def __repr__(self) -> str:
    return f"StateStorage({self.name!r})"


class Float32Storage(StateStorage):
  name = "float32"

  def init_leaf(self, like, signed):
    return jnp.zeros(like.shape, compute_dtype(like))

  def read_leaf(self, stored, like, signed):
    return stored.astype(compute_dtype(like))

  def write_leaf(self, value, like, stored, signed):
    # The dtype `init` chose, not the incoming one: an update promoted upstream (a float64
    # hyperparameter times a float16 gradient) must not change the state's dtype mid-run.
    return value.astype(stored.dtype)


class BFloat16Storage(StateStorage):
  """bfloat16 moments; each write rounds stochastically, with the gradient as entropy."""

  name = "bfloat16"

  def init_leaf(self, like, signed):
    return jnp.zeros(like.shape, jnp.bfloat16)

  def read_leaf(self, stored, like, signed):
    return stored.astype(compute_dtype(like))

  def write_leaf(self, value, like, stored, signed):
    return round_to_bfloat16(value, entropy=like)


def _restore(stored: Any) -> Any:
  """A quantized leaf as its NamedTuple again. Containers may hand it back as a mapping of its
  fields (Flax NNX's Optimizer turns NamedTuples nested in its state into `State` mappings)."""
  if q.is_quantized(stored) or hasattr(stored, "astype"):
    return stored
  fields = dict(stored)
  kind = q.Rank1Quantized if "row_max" in fields else q.BlockQuantized
  return kind(**{name: fields[name] for name in kind._fields})


class _QuantizedStorage(StateStorage):
  """Shared by the 8- and 4-bit formats: small leaves stay float32."""

  min_size = 4096

  def _quantized(self, like) -> bool:
    return like.size >= self.min_size

  def init_leaf(self, like, signed):
    if not self._quantized(like):
      return jnp.zeros(like.shape, compute_dtype(like))
    return self._quantize(jnp.zeros(like.shape, jnp.float32), signed)

  def read_leaf(self, stored, like, signed):
    stored = _restore(stored)
    if not q.is_quantized(stored):
      return stored.astype(compute_dtype(like))
    return self._dequantize(stored, like.shape, signed).astype(compute_dtype(like))

  def write_leaf(self, value, like, stored, signed):
    if not self._quantized(like):
      return value.astype(stored.dtype)  # as in Float32Storage.write_leaf
    return self._quantize(value, signed)


class Blockwise8BitStorage(_QuantizedStorage):
  name = "8bit"

  def __init__(self, block_size: int = 256, min_size: int = 4096):
    self.block_size, self.min_size = block_size, min_size
    self.tables = {True: q.dynamic_map(8, signed=True), False: q.dynamic_map(8, signed=False)}

  def _quantize(self, value, signed):
    return q.quantize_blockwise(value, self.tables[signed], self.block_size, packed=False)

  def _dequantize(self, stored, shape, signed):
    return q.dequantize_blockwise(stored, self.tables[signed], shape, self.block_size,
                                  packed=False)


class FourBitStorage(_QuantizedStorage):
  name = "4bit"

  def __init__(self, block_size: int = 128, min_size: int = 4096):
    self.block_size, self.min_size = block_size, min_size
    self.signed_table = q.dynamic_map(4, signed=True)
    self.second_moment_table = q.linear_nonzero_map(4)

  def _rank1(self, shape, signed) -> bool:
    return not signed and len(shape) >= 2

  def _quantize(self, value, signed):
    if self._rank1(value.shape, signed):
      return q.quantize_rank1(value, self.second_moment_table)
    table = self.signed_table if signed else self.second_moment_table
    return q.quantize_blockwise(value, table, self.block_size, packed=True)

  def _dequantize(self, stored, shape, signed):
    if self._rank1(shape, signed):
      return q.dequantize_rank1(stored, self.second_moment_table, shape)
    table = self.signed_table if signed else self.second_moment_table
    return q.dequantize_blockwise(stored, table, shape, self.block_size, packed=True)


FORMATS = {
    "float32": Float32Storage,
    "bfloat16": BFloat16Storage,
    "8bit": Blockwise8BitStorage,
    "4bit": FourBitStorage,
}

StorageLike = Union[str, StateStorage]


def resolve(storage: StorageLike) -> StateStorage:
  """A StateStorage from its name (or the object itself)."""
  if isinstance(storage, StateStorage):
    return storage
  if storage not in FORMATS:
    raise ValueError(f"state_storage must be one of {sorted(FORMATS)} or a StateStorage, "
                     f"got {storage!r}")
  return FORMATS[storage]()
