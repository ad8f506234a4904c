"""How the O(d^2) matrix state of the Kronecker-factored preconditioners is stored: Shampoo's
statistics L_i and inverse roots, SOAP's statistics and eigenbases, PSGD-Kron's triangular
factors Q_i (`preconditioner_storage=`). `optimkit.state.storage` stores the params-shaped
moments; this module the stacks of per-block b x b matrices, shaped (n_blocks, b, b).

    "float32"   the compute dtype (at least float32), unchanged: the default, exact.
    "bfloat16"  2 bytes an entry, written with unbiased stochastic rounding.
    "8bit"      the diagonal in the compute dtype, the off-diagonal entries blockwise 8-bit with
                the signed dynamic map of `optimkit.state.quantized`, in its tile layout
                (blocks of about a row, at most 256 entries; one float32 absmax each):
                ~1 byte an entry plus 4/b for the scales and the diagonal. Matrix stacks under
                4096 entries stay in the compute dtype, as the moment formats' small leaves.

Why the diagonal is kept apart (as `distributed_shampoo`'s `best_effort_memory_usage_reduction`
does with `extract_diagonal`): a statistic or inverse root is PSD with its largest entries on the
diagonal, and a triangular PSGD factor divides by its diagonal in every solve. With the diagonal
inside a block its absmax is the diagonal entry and the off-diagonal entries, often orders of
magnitude smaller, fall to the map's coarse low decades; apart, each row's off-diagonal entries
set their own scale, and a zero diagonal entry (a singular Kron factor) cannot happen. The cost
is b values per b^2. `distributed_shampoo` stores these matrices as int16 (linear, one scale per
column) in that mode and only the momenta in int8; 8 bits here rely on the dynamic map's
relative precision, and on the corrections below.

Rounding. A buffer that accumulates (`write(..., accumulated=True)`: Shampoo's and SOAP's EMA
statistics, PSGD's factors, each changed a little every step) is rounded stochastically in both
reduced formats: with beta2 = 0.999 a step changes a statistic by ~0.1% of its value, less than
half a bfloat16 ulp (0.2%) or an 8-bit code step, so nearest rounding would freeze it. A buffer
recomputed from scratch (roots, bases) is rounded to nearest, the smaller error.

Corrections on `read`, for the reduced formats only (float32 reads the stored array as is):
  - "symmetric" (statistics, roots): (A + A^T) / 2. Entries (i, j) and (j, i) sit in different
    blocks and round differently; the average halves the variance of the error and gives eigh
    and the mode products the symmetric matrix the algorithm assumes.
  - "orthogonal" (SOAP's eigenbases): one Newton-Schulz (Bjorck) step Q (3 I - Q^T Q) / 2 back
    towards the nearest orthogonal matrix. A rounded basis is no longer orthogonal, and SOAP
    rotates into the basis with Q^T and back with Q: with Q^T Q = I + E the rotated-back
    direction is distorted by E, on every step until the next refresh. The step takes the
    error from E to O(E^2) (measured on random 128 x 128 bases:
    |Q^T Q - I|_max from 7e-3 to 2e-4 at 8 bits, from 1e-3 to 7e-6 in bfloat16). This is
    what "4-bit Shampoo" (Wang et al. 2024, arXiv:2405.18144) does to its quantized eigenvector
    matrices (Bjorck orthonormalization) before using them.
  - "triangular" (PSGD factors): none needed; zeros stay exactly zero in both formats.

Measured cost (benchmarks/preconditioner_storage.py, the compare suite's LM, 300 steps, one
seed): SOAP and Kron lose nothing measurable at 8 bits. Shampoo at its default matrix_epsilon
(1e-6, relative to lambda_max) loses 0.10 nats (bfloat16) and 0.25 (8 bits): its inverse root
resolves eigenvalues down to 1e-6 lambda_max, far below what a matrix stored to ~1e-3 relative
precision (bfloat16) or ~1e-2 of a row's scale (8 bits) still determines, and the 4th root
magnifies those directions. With matrix_epsilon = 1e-3 the reduced formats match float32 (on a
small regression: 9.251 / 9.251 / 9.247 after 150 steps, where 1e-6 gave 10.09 / 18.36 / 18.53;
the same at beta2 = 0.99, so it is not the rounding noise accumulated by the EMA). Use
matrix_epsilon >= 1e-3 with a reduced `preconditioner_storage` for Shampoo (on the LM: 2.3359,
2.3360, 2.3362 for float32, bfloat16, 8 bits at 1e-3; that epsilon itself costs 0.066 there
against the default's float32 run, 2.2700, and beats the reduced formats at 1e-6).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp

from optimkit.state import quantized as q
from optimkit.state.stochastic_rounding import round_to_bfloat16

FORMATS = ("float32", "bfloat16", "8bit")
KINDS = ("symmetric", "orthogonal", "triangular")
_HIGHEST = jax.lax.Precision.HIGHEST


class QuantizedMatrices(NamedTuple):
  """A stack of b x b matrices at 8 bits: the diagonal (n, b) in the compute dtype, and the
  off-diagonal entries as `optimkit.state.quantized.BlockQuantized` arrays of the (n, b, b)
  stack: uint8 codes and float32 absmax in that module's tile layout."""

  diagonal: jax.Array
  codes: jax.Array
  absmax: jax.Array


def _restore(stored: Any) -> Any:
  """A QuantizedMatrices again where a container handed it back as a mapping of its fields
  (Flax NNX's Optimizer state), as `optimkit.state.storage` restores its quantized leaves."""
  if isinstance(stored, QuantizedMatrices) or hasattr(stored, "astype"):
    return stored
  fields = dict(stored)
  return QuantizedMatrices(**{name: fields[name] for name in QuantizedMatrices._fields})


def _row_block(width: int) -> int:
  """The block size asked of the tile layout: 256 entries when they tile a row, else a row.
  The layout keeps factors of two of the stack axis (the one sharded) out of the tiles where
  it can, so a block rarely spans two matrices of the stack."""
  return 256 if width % 256 == 0 else width


class MatrixStorage:
  """One of `FORMATS` for stacks of matrices: `init`, `read`, `write` (see the module doc)."""

  min_size = 4096

  def __init__(self, name: str):
    if name not in FORMATS:
      raise ValueError(f"preconditioner_storage must be one of {list(FORMATS)}, got {name!r}")
    self.name = name
    self.table = q.dynamic_map(8, signed=True)

  @property
  def lossless(self) -> bool:
    return self.name == "float32"

  def _stored_reduced(self, shape: tuple[int, ...]) -> bool:
    """Whether a leaf of `shape` is kept in the reduced format: stacks of matrices only (PSGD's
    diagonal factors, O(d), stay as they are), and at 8 bits only from `min_size` entries."""
    if self.lossless or len(shape) != 3 or shape[-1] != shape[-2]:
      return False
    return self.name == "bfloat16" or int(shape[0] * shape[1] * shape[2]) >= self.min_size

  def init(self, value: jax.Array) -> Any:
    """`value` (the initial matrices, in the compute dtype) in this format."""
    if not self._stored_reduced(tuple(value.shape)):
      return self.write(value, value, accumulated=False)
    # Jitted: the transforms build initial matrices as constants (identities), which
    # `jax.eval_shape(tx.init, ...)` (optimkit.memory, the sharding specs) would otherwise
    # round and quantize eagerly, on a 7B tree gigabytes of them.
    return jax.jit(lambda v: self.write(v, v, accumulated=False))(value)

  def read(self, stored: Any, dtype: Any, kind: str) -> jax.Array:
    """The stored matrices in `dtype` (the compute dtype), corrected for their `kind`."""
    stored = _restore(stored)
    if not isinstance(stored, QuantizedMatrices):
      if stored.dtype != jnp.bfloat16:
        return stored  # float32 (or the compute dtype): exactly what was written
      value = stored.astype(dtype)
    else:
      n, b = stored.diagonal.shape
      off = q.dequantize_blockwise(q.BlockQuantized(stored.codes, stored.absmax), self.table,
                                   (n, b, b), _row_block(b), packed=False).astype(dtype)
      value = off + stored.diagonal.astype(dtype)[:, :, None] * jnp.eye(b, dtype=dtype)
    if kind == "symmetric":
      return (value + jnp.swapaxes(value, -1, -2)) / 2
    if kind == "orthogonal":
      gram = jnp.matmul(jnp.swapaxes(value, -1, -2), value, precision=_HIGHEST)
      eye = jnp.eye(value.shape[-1], dtype=dtype)
      return jnp.matmul(value, 1.5 * eye - 0.5 * gram, precision=_HIGHEST)
    if kind != "triangular":
      raise ValueError(f"MatrixStorage.read: kind must be one of {KINDS}, got {kind!r}")
    return value

  def write(self, value: jax.Array, stored: Any, accumulated: bool) -> Any:
    """`value` in this format; `stored` is the previous stored value (or, at init, `value`)."""
    stored = _restore(stored)
    if not self._stored_reduced(tuple(value.shape)):
      return value.astype(stored.dtype)  # the dtype `init` chose (as Float32Storage)
    if self.name == "bfloat16":
      # Nearest rounding for recomputed matrices; the stochastic rounding's hash is seeded by
      # the value itself (no gradient is shaped like a factor), which changes every step.
      return (round_to_bfloat16(value, entropy=value) if accumulated
              else value.astype(jnp.bfloat16))
    b = value.shape[-1]
    diagonal = jnp.diagonal(value, axis1=-2, axis2=-1)
    off = value * (1.0 - jnp.eye(b, dtype=value.dtype))
    quantized = q.quantize_blockwise(off, self.table, _row_block(b), packed=False,
                                     entropy=value if accumulated else None)
    dtype = stored.diagonal.dtype if isinstance(stored, QuantizedMatrices) else value.dtype
    return QuantizedMatrices(diagonal=diagonal.astype(dtype), codes=quantized.codes,
                             absmax=quantized.absmax)


StorageLike = Union[str, MatrixStorage]


def resolve(storage: StorageLike) -> MatrixStorage:
  """A MatrixStorage from its name (or the object itself)."""
  return storage if isinstance(storage, MatrixStorage) else MatrixStorage(storage)
