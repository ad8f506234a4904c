"""Adafactor's factored second moment, update clipping and relative step size (Shazeer & Stern
2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", arXiv:1804.04235,
Algorithms 4 and 5).

For a leaf whose two largest dimensions (n, m) are both >= `min_dim_size_to_factor`, keep the
row and column means of g^2 (any other dimensions are batch/stack dimensions, each slice gets
its own statistics):

    beta2_t = 1 - t^(-decay_rate)                         (0 at t = 1: the first step is exact)
    R_t = beta2_t R_{t-1} + (1 - beta2_t) mean_cols(g^2 + eps)
    C_t = beta2_t C_{t-1} + (1 - beta2_t) mean_rows(g^2 + eps)
    V_t = R_t C_t / mean(R_t)
    U_t = g / sqrt(V_t)                                   (unfactored leaves: V_t = EMA of g^2)
    U_t <- U_t / max(1, RMS(U_t) / clipping_threshold)    (update clipping, per leaf)

The step size is then either fixed, or relative (the paper's default):

    rho_t   = min(learning_rate, 1 / sqrt(t))
    alpha_t = max(eps_scale, RMS(w_{t-1})) * rho_t        (parameter scaling)

Where optax differs: optax has no relative step size, and `decay_offset > 0` gives NaN for the
first `decay_offset` steps (a negative base raised to -0.8). Here the step count used by the
decay is clamped at 1, so a fine-tuning run restarted with an offset starts from beta2 = 0.

Checked against torch.optim.Adafactor (relative step, parameter scaling, weight decay) and
optax.adafactor (fixed learning rate, momentum, the two-largest-dims rule on rank-3 leaves).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optimkit import _checks
from optimkit.transforms._util import increment, unzip_leaf


class FactoredRMSState(NamedTuple):
  """State of `scale_by_factored_rms`.

  For each leaf exactly one of (`v_row`, `v_col`) and `v` is real; the other holds a
  one-element filler array so that every leaf of the state is an array.
    count: number of updates so far.
    v_row: row statistics, the leaf's shape without its largest factored dimension.
    v_col: column statistics, the leaf's shape without its second-largest factored dimension.
    v:     full second moment for leaves that are not factored.
  """

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  v_row: Any
  v_col: Any
  v: Any


def factored_dims(shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int):
  """(second-largest, largest) dimension indices to factor, or None to keep a full moment."""
  if not factored or len(shape) < 2 or 0 in shape:
    return None  # an empty leaf keeps its (empty) full moment: a mean over zero rows is NaN
  order = np.argsort(shape, kind="stable")
  if shape[order[-2]] < min_dim_size_to_factor:
    return None
  return int(order[-2]), int(order[-1])


def _stat_dtype(dtype) -> jnp.dtype:
  # Statistics are tiny when factored; keep them at least float32 so that eps = 1e-30 and the
  # squared gradients of bfloat16/float16 params do not underflow.
  return jnp.promote_types(dtype, jnp.float32)


def _rms(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.mean(jnp.square(x)))


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    eps: float = 1e-30,
    clipping_threshold: float | None = 1.0,
) -> optax.GradientTransformation:
  """g / sqrt(V) with Adafactor's factored V, then update clipping by RMS.

  Args:
    factored: factor the second moment of matrices (and higher-rank leaves).
    decay_rate: exponent of beta2_t = 1 - t^-decay_rate, > 0. Default 0.8.
    decay_offset: steps to subtract from t (fine-tuning restarts), integer >= 0. Default 0.
    min_dim_size_to_factor: factor only if the two largest dims are both at least this. Default 128.
    eps: eps1 of the paper, added to g^2, >= 0. Default 1e-30.
    clipping_threshold: d of the paper, > 0, or None for no clipping. Default 1.0.
  """
  owner = "scale_by_factored_rms"
  _checks.check_range(owner, "decay_rate", decay_rate, 0.0, low_inclusive=False)
  _checks.check_int_at_least(owner, "decay_offset", decay_offset, 0)
  _checks.check_int_at_least(owner, "min_dim_size_to_factor", min_dim_size_to_factor, 0)
  _checks.check_non_negative(owner, "eps", eps)
  if clipping_threshold is not None:
    _checks.check_range(owner, "clipping_threshold", clipping_threshold, 0.0, low_inclusive=False)

  def dims_of(leaf):
    return factored_dims(tuple(leaf.shape), factored, min_dim_size_to_factor)

  def init_fn(params):
    def init_leaf(p):
      dtype = _stat_dtype(p.dtype)
      filler = jnp.zeros((1,), dtype)
      dims = dims_of(p)
      if dims is None:
        return filler, filler, jnp.zeros(p.shape, dtype)
      second, largest = dims
      row_shape = tuple(np.delete(p.shape, largest))
      col_shape = tuple(np.delete(p.shape, second))
      return jnp.zeros(row_shape, dtype), jnp.zeros(col_shape, dtype), filler

    triples = jax.tree.map(init_leaf, params)
    pick = lambda i: unzip_leaf(params, triples, i)
    return FactoredRMSState(
        count=jnp.zeros([], jnp.int32), v_row=pick(0), v_col=pick(1), v=pick(2)
    )

  def update_fn(updates, state, params=None):
    del params
    count = increment(state.count)
    step = jnp.maximum(count - decay_offset, 1).astype(jnp.result_type(float))
    beta2 = 1.0 - step ** (-decay_rate)

    def update_leaf(g, v_row, v_col, v):
      dtype = _stat_dtype(g.dtype)
      g32 = g.astype(dtype)
      # Each full-size reduction below reads g itself. Written plainly, XLA merges their common
      # g^2 (and the direction the clipping RMS and the update share) into one value with
      # several consumers, and writes it out as a params-sized temporary that every consumer
      # reads back (a new buffer each step). Seen through an optimization barrier, g is a
      # different value to each reduction, so each fuses its own square into one read of g.
      g_apart = jax.lax.optimization_barrier(g32)
      dims = dims_of(g)
      if dims is None:
        v = (beta2 * v + (1.0 - beta2) * (jnp.square(g32) + eps)).astype(dtype)
        # v itself (a state output, in memory anyway), not its full-size rsqrt, is what
        # passes the barrier below.
        factors: tuple[jax.Array, ...] = (v,)
        scale = lambda x, factors: x * jax.lax.rsqrt(factors[0])
      else:
        second, largest = dims
        # mean(g^2 + eps) as mean(g^2) + eps: equal up to rounding, and the eps is added to
        # the small statistic rather than to every element before the reduction.
        row_stat = jnp.mean(jnp.square(g32), axis=largest) + eps
        col_stat = jnp.mean(jnp.square(g_apart), axis=second) + eps
        v_row = (beta2 * v_row + (1.0 - beta2) * row_stat).astype(dtype)
        v_col = (beta2 * v_col + (1.0 - beta2) * col_stat).astype(dtype)
        # In v_row the largest dim is gone, so `second` shifts left if it came after it.
        second_in_row = second if second < largest else second - 1
        row_mean = jnp.mean(v_row, axis=second_in_row, keepdims=True)
        factors = (jax.lax.rsqrt(v_row / row_mean), jax.lax.rsqrt(v_col))
        scale = lambda x, factors: (x * jnp.expand_dims(factors[0], largest)
                                    * jnp.expand_dims(factors[1], second))
      direction = scale(g32, factors)
      if clipping_threshold is not None and direction.size:
        # The RMS of the direction recomputed from g in its own reduction (see g_apart), so the
        # update below is written straight from g instead of from a stored direction. The
        # factors pass the barrier too: a broadcast of them shared with the update would be
        # written out at full size.
        rms = _rms(scale(g_apart, jax.lax.optimization_barrier(factors)))
        direction = direction / jnp.maximum(1.0, rms / clipping_threshold)
      return direction.astype(g.dtype), v_row, v_col, v

    results = jax.tree.map(update_leaf, updates, state.v_row, state.v_col, state.v)
    pick = lambda i: unzip_leaf(updates, results, i)
    return pick(0), FactoredRMSState(count=count, v_row=pick(1), v_col=pick(2), v=pick(3))

  return optax.GradientTransformation(init_fn, update_fn)


class RelativeStepState(NamedTuple):
  """State of `scale_by_relative_step_size`: the step count."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax


def scale_by_relative_step_size(
    learning_rate: float | Callable[[jax.Array], jax.Array] | None = 1e-2,
    relative_step: bool = True,
    multiply_by_parameter_scale: bool = True,
    eps_scale: float = 1e-3,
) -> optax.GradientTransformation:
  """Adafactor's step size alpha_t = max(eps_scale, RMS(w)) * rho_t (positive; no sign flip).

      rho_t = min(learning_rate, 1 / sqrt(t))  if relative_step else learning_rate
      (learning_rate None: rho_t = 1 / sqrt(t), the paper's, or 1 without relative_step, optax's)
      alpha_t = max(eps_scale, RMS(w_{t-1})) * rho_t  if multiply_by_parameter_scale else rho_t

  Args:
    learning_rate: the cap on rho_t (a float or a schedule of the step count). Default 1e-2.
    relative_step: use min(learning_rate, 1/sqrt(t)) (paper, PyTorch) instead of learning_rate.
    multiply_by_parameter_scale: scale by each leaf's RMS (floored at eps_scale).
    eps_scale: eps2 of the paper, >= 0. Default 1e-3.
  """
  owner = "scale_by_relative_step_size"
  if learning_rate is not None:
    _checks.check_learning_rate(owner, learning_rate)
  _checks.check_non_negative(owner, "eps_scale", eps_scale)

  def init_fn(params):
    del params
    return RelativeStepState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    count = increment(state.count)
    rate = learning_rate(state.count) if callable(learning_rate) else learning_rate
    if relative_step:
      relative = jax.lax.rsqrt(count.astype(jnp.result_type(float)))
      rate = relative if rate is None else jnp.minimum(rate, relative)
    elif rate is None:
      rate = 1.0
    if multiply_by_parameter_scale:
      if params is None:
        raise ValueError(f"{owner}: multiply_by_parameter_scale=True needs params in update().")
      updates = jax.tree.map(
          lambda u, p: (u * (rate * jnp.maximum(eps_scale, _rms(p) if p.size else 0.0))).astype(
              u.dtype),
          updates,
          params,
      )
    else:
      updates = jax.tree.map(lambda u: (u * rate).astype(u.dtype), updates)
    return updates, RelativeStepState(count=count)

  return optax.GradientTransformation(init_fn, update_fn)
