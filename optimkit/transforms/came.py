"""CAME: confidence-guided adaptive memory-efficient optimization (Luo, Ren, Zheng, Jiang, Jiang
& You 2023, "CAME: Confidence-guided Adaptive Memory Efficient Optimization", ACL 2023,
arXiv:2307.02047, Algorithm 1).

Adafactor's factored second moment and update clipping, plus a momentum whose step is
divided by the (factored) root of its own instability, the EMA of (u_t - m_t)^2: coordinates
whose update keeps disagreeing with the momentum take smaller steps.

For a leaf of rank >= 2, with rows and columns its last two dimensions (any leading dimensions
are a stack, each slice with its own statistics):

    R_t = b2 R_{t-1} + (1 - b2) mean_cols(g_t^2 + eps1)      C_t likewise over the rows
    V_t = R_t C_t / mean(R_t)
    u_t = g_t / sqrt(V_t),   u_t <- u_t / max(1, RMS(u_t) / clipping_threshold)
    m_t = b1 m_{t-1} + (1 - b1) u_t
    U_t = (u_t - m_t)^2 + eps2
    Q_t = b3 Q_{t-1} + (1 - b3) mean_cols(U_t)               P_t likewise over the rows
    S_t = Q_t P_t / mean(Q_t)
    direction = m_t / sqrt(S_t)

Vectors and scalars keep a full second moment V_t = EMA of g^2 + eps1 and step along m_t (the
confidence factor is defined for matrices only). There is no bias correction and b2 is
constant (not Adafactor's 1 - t^-0.8).

Defaults: b1 = 0.9, b2 = 0.999, b3 = 0.9999, eps1 = 1e-30, eps2 = 1e-16, clipping_threshold = 1
(the paper's and the authors' `came-pytorch`).

Checked against `came-pytorch` 0.1.3 `CAME` (the authors' package), which follows the paper:
tests/transforms/test_came.py. optax has no CAME. Differences from Adafactor's factoring in
`optimkit.transforms.factored`: CAME factors every leaf of rank >= 2 over its *last two*
dimensions whatever their size, as the authors' code does (Adafactor: the two largest, when
both are >= min_dim_size_to_factor). Empty leaves keep an (empty) full moment.

State: the momentum `mu` and the full second moment of unfactored leaves are params-shaped and
stored through `state_storage`; the factored row/column statistics are small and stay in at
least float32.

Example:
    >>> import optax
    >>> from optimkit.transforms.came import scale_by_came
    >>> tx = optax.chain(scale_by_came(), optax.scale_by_learning_rate(2e-4))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, compute_dtype, resolve
from optimkit.transforms._util import unzip_leaf


class CAMEState(NamedTuple):
  """State of `scale_by_came`.

  For each leaf either the factored statistics (`v_row`, `v_col`, `res_row`, `res_col`) or the
  full second moment `v` are real; the others hold a one-element filler so every state leaf is
  an array.
    mu:      momentum of the clipped update, shaped like the params.
    v_row:   row means of g^2 + eps1 (the leaf's shape without its last dimension).
    v_col:   column means (the shape without the second-to-last dimension).
    res_row, res_col: the same statistics of the instability (u - m)^2 + eps2.
    v:       full second moment of an unfactored leaf.
  """

  mu: Any
  v_row: Any
  v_col: Any
  res_row: Any
  res_col: Any
  v: Any


def is_factored(shape: tuple[int, ...]) -> bool:
  """CAME factors leaves of rank >= 2 (over the last two dims); not empty ones."""
  return len(shape) >= 2 and 0 not in shape


def _rms(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.mean(jnp.square(x)))


def _inverse_root_factored(row: jax.Array, col: jax.Array) -> jax.Array:
  """1 / sqrt(R C / mean(R)) broadcast to the leaf's shape."""
  row_factor = jax.lax.rsqrt(row / jnp.mean(row, axis=-1, keepdims=True))
  return row_factor[..., :, None] * jax.lax.rsqrt(col)[..., None, :]


def scale_by_came(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: float = 0.9999,
    eps1: float = 1e-30,
    eps2: float = 1e-16,
    clipping_threshold: float = 1.0,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """CAME's direction m_t / sqrt(S_t) (factored leaves) or m_t (the others).

  Args:
    b1: decay of the momentum, [0, 1). Default 0.9.
    b2: decay of the squared-gradient statistics, [0, 1). Default 0.999.
    b3: decay of the instability statistics, [0, 1). Default 0.9999.
    eps1: added to g^2, >= 0. Default 1e-30.
    eps2: added to the instability (u - m)^2, >= 0. Default 1e-16.
    clipping_threshold: d, the largest RMS of u_t before it is scaled down, > 0. Default 1.
    state_storage: how the params-shaped moments are stored (see `optimkit.state`).
  """
  owner = "scale_by_came"
  for name, value in (("b1", b1), ("b2", b2), ("b3", b3)):
    _checks.check_beta(owner, name, value)
  _checks.check_non_negative(owner, "eps1", eps1)
  _checks.check_non_negative(owner, "eps2", eps2)
  _checks.check_range(owner, "clipping_threshold", clipping_threshold, 0.0,
                      low_inclusive=False)
  store = resolve(state_storage)

  def init_fn(params):
    def init_leaf(p):
      dtype = compute_dtype(p)
      filler = lambda: jnp.zeros((1,), dtype)  # a fresh array each: no two state leaves alias
      mu = store.init_leaf(p, signed=True)
      if not is_factored(p.shape):
        return mu, filler(), filler(), filler(), filler(), store.init_leaf(p, signed=False)
      rows, cols = p.shape[:-1], p.shape[:-2] + p.shape[-1:]
      return (mu, jnp.zeros(rows, dtype), jnp.zeros(cols, dtype), jnp.zeros(rows, dtype),
              jnp.zeros(cols, dtype), filler())

    leaves = jax.tree.map(init_leaf, params)
    return CAMEState(*(unzip_leaf(params, leaves, i) for i in range(6)))

  def update_fn(updates, state, params=None):
    del params

    def update_leaf(g, mu, v_row, v_col, res_row, res_col, v):
      # The statistics keep the dtype init gave them (at least float32) even when a float64
      # hyperparameter promotes the arithmetic.
      factored_stats = (v_row, v_col, res_row, res_col)
      g32 = g.astype(compute_dtype(g))
      squared = jnp.square(g32) + eps1
      if is_factored(g.shape):
        v_row = b2 * v_row + (1.0 - b2) * jnp.mean(squared, axis=-1)
        v_col = b2 * v_col + (1.0 - b2) * jnp.mean(squared, axis=-2)
        u = g32 * _inverse_root_factored(v_row, v_col)
      else:
        v_full = b2 * store.read_leaf(v, g, signed=False) + (1.0 - b2) * squared
        u = g32 * jax.lax.rsqrt(v_full)
        v = store.write_leaf(v_full, g, v, signed=False)
      if u.size:
        u = u / jnp.maximum(1.0, _rms(u) / clipping_threshold)
      m = b1 * store.read_leaf(mu, g, signed=True) + (1.0 - b1) * u
      if is_factored(g.shape):
        instability = jnp.square(u - m) + eps2
        res_row = b3 * res_row + (1.0 - b3) * jnp.mean(instability, axis=-1)
        res_col = b3 * res_col + (1.0 - b3) * jnp.mean(instability, axis=-2)
        direction = m * _inverse_root_factored(res_row, res_col)
      else:
        direction = m
      return (direction.astype(g.dtype), store.write_leaf(m, g, mu, signed=True),
              *(new.astype(old.dtype) for new, old in zip(
                  (v_row, v_col, res_row, res_col), factored_stats)), v)

    results = jax.tree.map(update_leaf, updates, state.mu, state.v_row, state.v_col,
                           state.res_row, state.res_col, state.v)
    pick = lambda i: unzip_leaf(updates, results, i)
    return pick(0), CAMEState(*(pick(i) for i in range(1, 7)))

  return optax.GradientTransformation(init_fn, update_fn)

