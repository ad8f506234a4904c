"""Skipping steps with non-finite gradients, leaving parameters and state bit-identical.

What happens without it: every optimizer here propagates a NaN or Inf gradient into its state
(a moment EMA that has seen NaN stays NaN forever), and Lion, Sophia and the sign-based steps
turn it into a NaN parameter. `skip_nonfinite` checks the incoming gradients and the outgoing
updates; if any element is not finite, the update is all zeros and the inner state is the
previous one, unchanged to the bit. It counts skipped steps.

Where optax differs: `optax.apply_if_finite` applies the non-finite update anyway after
`max_consecutive_errors` bad steps, corrupting the run; this wrapper never does. With
`max_consecutive_skips=N` it gives up instead: the N-th bad step in a row raises an error (from
inside the compiled step, surfacing as JAX's runtime error carrying the message below) while
params and state are still the last good ones.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks


class SkipNonFiniteState(NamedTuple):
  """State of `skip_nonfinite`.

    inner_state: the wrapped optimizer's state.
    skipped_steps: total number of steps skipped.
    consecutive_skips: steps skipped in a row up to now (0 after a good step).
  """

  inner_state: Any
  skipped_steps: jax.Array
  consecutive_skips: jax.Array


def _all_finite(tree: Any) -> jax.Array:
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def _give_up(consecutive, limit) -> None:
  raise FloatingPointError(
      f"skip_nonfinite: {int(consecutive)} consecutive steps had non-finite gradients or "
      f"updates (max_consecutive_skips={int(limit)}); the run is diverging. Params and "
      f"optimizer state are the last finite ones: lower the learning rate, look for log(0) or "
      f"division by zero in the loss, or restore the last checkpoint.")


def skip_nonfinite(inner: optax.GradientTransformation,
                   max_consecutive_skips: int | None = None
                   ) -> optax.GradientTransformationExtraArgs:
  """Wraps `inner` so that a step with a non-finite gradient or update changes nothing.

  Args:
    inner: the optimizer to protect.
    max_consecutive_skips: give up with an error at this many bad steps in a row (>= 1);
      None (default) skips forever.
  """
  if max_consecutive_skips is not None:
    _checks.check_int_at_least("skip_nonfinite", "max_consecutive_skips",
                               max_consecutive_skips, 1)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return SkipNonFiniteState(
        inner_state=inner.init(params),
        skipped_steps=jnp.zeros([], jnp.int32),
        consecutive_skips=jnp.zeros([], jnp.int32),
    )

  def update_fn(updates, state, params=None, **extra_args):
    new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
    finite = jnp.logical_and(_all_finite(updates), _all_finite(new_updates))
    new_updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), new_updates)
    inner_state = jax.tree.map(
        lambda new, old: jnp.where(finite, new, old), new_inner, state.inner_state)
    skipped = jnp.where(finite, 0, 1).astype(jnp.int32)
    consecutive = jnp.where(finite, 0, state.consecutive_skips + 1).astype(jnp.int32)
    if max_consecutive_skips is not None:
      jax.lax.cond(consecutive >= max_consecutive_skips,
                   lambda: jax.debug.callback(_give_up, consecutive, max_consecutive_skips),
                   lambda: None)
    return new_updates, SkipNonFiniteState(
        inner_state=inner_state,
        skipped_steps=state.skipped_steps + skipped,
        consecutive_skips=consecutive,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
