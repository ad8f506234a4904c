"""Lookahead (Zhang, Lucas, Hinton & Ba 2019, "Lookahead Optimizer: k steps forward, 1 step
back", arXiv:1907.08610, Algorithm 1) on an ordinary parameter tree.

The inner optimizer moves the fast weights (the params) for k steps; then the slow weights move
towards them and the fast weights are reset onto the slow ones:

    every k-th step:  slow <- slow + alpha (fast - slow);  fast <- slow

What optax lacks: `optax.lookahead` needs its special `LookaheadParams` (fast and slow weights
inside the params), so it cannot be dropped into `nnx.Optimizer` or a `TrainState`. Here the
slow weights live in the state and the params tree is the model's own.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.transforms._util import increment, map_like


class LookaheadState(NamedTuple):
  """State of `lookahead`: the inner state, the slow weights and the step count."""

  inner_state: Any
  slow: Any
  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax


def lookahead(inner: optax.GradientTransformation, sync_period: int = 6,
              alpha: float = 0.5) -> optax.GradientTransformationExtraArgs:
  """Wraps `inner` (a full optimizer, learning rate included) with Lookahead.

  Args:
    inner: the fast optimizer.
    sync_period: k, steps between synchronisations, integer >= 1. Default 6 (Ranger's).
    alpha: slow-weights step size, in [0, 1]. Default 0.5.
  """
  owner = "lookahead"
  _checks.check_int_at_least(owner, "sync_period", sync_period, 1)
  _checks.check_range(owner, "alpha", alpha, 0.0, 1.0)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return LookaheadState(inner_state=inner.init(params),
                          slow=jax.tree.map(jnp.array, params),
                          count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(f"{owner}: update() needs params (the fast weights).")
    fast_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    count = increment(state.count)
    sync = count % sync_period == 0
    # On a sync step the params jump to slow + alpha (fast - slow); otherwise they take the fast
    # step. The new slow weights are then the new params (p + update, as optax.apply_updates
    # computes them: one value, a buffer the step returns), read back instead of the fast update:
    # an update that divides is not computed twice, so with two readers XLA wrote it out.
    new_updates = map_like(
        lambda u, p, s: jnp.where(sync, s + alpha * ((p + u) - s) - p, u),
        fast_updates, params, state.slow)
    slow = map_like(lambda s, p, u: jnp.where(sync, p + u, s), state.slow, params, new_updates)
    return new_updates, LookaheadState(inner_state=inner_state, slow=slow, count=count)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
