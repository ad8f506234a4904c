"""bfloat16 (or float16) parameters that train like float32.

`optax.apply_updates` adds the update and rounds to the parameter's dtype to nearest. bfloat16
has 8 bits of mantissa: once |update| < ulp(w) / 2 (for w near 1, below 0.002) the parameter
never changes again and training silently stalls. Two cures, both wrapping any optimizer:

  "kahan"       Kahan-compensated summation (as torch-optimi does): the rounding error of each
                step is kept in a compensation buffer c (the param's dtype, part of the state and
                so checkpointed) and added to the next update:
                    y = u + c;  w' = round(w + y);  c' = (w + y) - w'
  "stochastic"  stochastic rounding of w + u to bfloat16 (unbiased; no extra state).

The returned update is w' - w, so `optax.apply_updates` lands exactly on w'. float32 and float64
leaves pass through untouched.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit.state.stochastic_rounding import round_to_bfloat16

LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
METHODS = ("kahan", "stochastic")


class CompensatedState(NamedTuple):
  """State of `compensated_updates`: the inner state and, per leaf, the Kahan compensation
  (a scalar filler for float32/float64 leaves and for the stochastic method)."""

  inner_state: Any
  compensation: Any


def _is_low_precision(leaf) -> bool:
  return jnp.dtype(leaf.dtype) in LOW_PRECISION


def compensated_updates(inner: optax.GradientTransformation,
                        method: str = "kahan") -> optax.GradientTransformationExtraArgs:
  """Wraps `inner` so that low-precision params follow the float32 trajectory."""
  if method not in METHODS:
    raise ValueError(f"compensated_updates: method must be one of {METHODS}, got {method!r}")
  inner = optax.with_extra_args_support(inner)

  def check_dtypes(params):
    if method != "stochastic":
      return
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
      if jnp.dtype(leaf.dtype) == jnp.dtype(jnp.float16):
        raise ValueError(
            f"compensated_updates: method='stochastic' supports bfloat16 params, but the "
            f"parameter at {jax.tree_util.keystr(path) or '<root>'} is float16; use "
            f"method='kahan' for float16")

  def init_fn(params):
    check_dtypes(params)  # the earliest point the dtypes are known

    def buffer(p):
      if method == "kahan" and _is_low_precision(p):
        return jnp.zeros(p.shape, p.dtype)
      return jnp.zeros([], jnp.float32)

    return CompensatedState(inner_state=inner.init(params),
                            compensation=jax.tree.map(buffer, params))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError("compensated_updates: update() needs params.")
    check_dtypes(params)
    # The inner optimizer sees float32 gradients, so its update keeps float32 precision (an
    # optimkit optimizer returns updates in the gradient's dtype): the part of it below the
    # params' precision is exactly what the compensation carries.
    wide = jax.tree.map(
        lambda g: g.astype(jnp.float32) if _is_low_precision(g) else g, updates)
    updates, inner_state = inner.update(wide, state.inner_state, params, **extra_args)

    def apply(u, p, c):
      if not _is_low_precision(p):
        return u, c
      exact = p.astype(jnp.float32) + u.astype(jnp.float32)
      if method == "stochastic":
        target = round_to_bfloat16(exact, entropy=u)
        return (target.astype(jnp.float32) - p.astype(jnp.float32)).astype(p.dtype), c
      exact = exact + c.astype(jnp.float32)
      step = (exact.astype(p.dtype).astype(jnp.float32) - p.astype(jnp.float32)).astype(p.dtype)
      applied = (p + step).astype(p.dtype)  # exactly what optax.apply_updates will produce
      return step, (exact - applied.astype(jnp.float32)).astype(p.dtype)

    pairs = jax.tree.map(apply, updates, params, state.compensation)
    new_updates = jax.tree.map(lambda _, pair: pair[0], updates, pairs)
    compensation = jax.tree.map(lambda _, pair: pair[1], updates, pairs)
    return new_updates, CompensatedState(inner_state=inner_state, compensation=compensation)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
