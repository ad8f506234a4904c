"""Skipping steps with non-finite gradients, leaving parameters and state bit-identical.

What happens without it: every optimizer here propagates a NaN or Inf gradient into its state
(a moment EMA that has seen NaN stays NaN forever), and Lion, Sophia and the sign-based steps
turn it into a NaN parameter. `skip_nonfinite` checks the incoming gradients and the outgoing
updates; if any element is not finite, the update is all zeros and the inner state is the
previous one, unchanged to the bit. It counts skipped steps.

Giving up (`max_consecutive_skips=N`). The N-th bad step in a row does not raise inside the
compiled step. It completes like every skip: its update is zero and the inner state is the one
it was given, so the params and state it returns are the last good ones, also when the step
donates its inputs (`jax.jit(step, donate_argnums=(0, 1))`). From then on the wrapper is
latched: every later step is skipped as well, whatever its gradients, so steps dispatched
before the host hears of the give-up cannot move anything. The give-up is recorded in the
state (`consecutive_skips >= N`) and `NonFiniteStepsError` (a `FloatingPointError`) is raised on
the host at the next call of the jitted step (or the next eager `update`), before that call
runs. What you hold when you catch it:
  - the params and state from the last call that returned, both valid (not deleted by
    donation) and equal to the bit to those after the last good step (`skipped_steps` and
    `consecutive_skips` excepted: they count the skipped steps);
  - the call that raised did not run and consumed nothing.
To go on (say after lowering the learning rate) reset the counter, e.g.
`optax.tree_utils.tree_set(state, consecutive_skips=jnp.zeros([], jnp.int32))`; a restored
checkpoint carries its own counter.

Why not raise from inside the step: in JAX 0.10.2 an exception raised in a host callback
(`jax.debug.callback` or `io_callback`, ordered or not) fails the whole execution, reaches
Python as `JaxRuntimeError: INTERNAL: CpuCallback error ...` (the original exception is neither
re-raised nor chained, and `jax.effects_barrier()` does not bring it back), and the step's
donated inputs are already deleted while it returns no outputs: the user is left with nothing.
So the compiled step only records the give-up, and its host callback (which raises nothing)
hands the error to the host and clears JAX's compilation caches (`jax.clear_caches()`, once
per give-up: every jitted function compiles again on its next call) so the next call of the
step traces `update` again, which raises before anything is dispatched. A step that is never
traced again, compiled ahead of time (`jax.jit(step).lower(...).compile()`), cannot raise:
there read `state.consecutive_skips` (latched, nothing changes meanwhile). On a multi-process
run the callback runs on the process that holds device 0, so only that process raises.

Where optax differs: `optax.apply_if_finite` applies the non-finite update anyway after
`max_consecutive_errors` bad steps, corrupting the run; this wrapper never does.

Example:
  tx = optimkit.skip_nonfinite(optimkit.adamw(1e-3), max_consecutive_skips=10)
  step = jax.jit(train_step, donate_argnums=(0, 1))
  try:
    for batch in batches:
      params, state = step(params, state, batch)
  except optimkit.NonFiniteStepsError:
    optimkit.checkpoint.save_step(directory, i, params, state)   # the last good ones
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks


class NonFiniteStepsError(FloatingPointError):
  """`skip_nonfinite` gave up: `max_consecutive_skips` steps in a row had non-finite gradients
  or updates. The params and state from the last call that returned are the last good ones."""

  def __init__(self, consecutive_skips: int, max_consecutive_skips: int, skipped_steps: int):
    self.consecutive_skips = consecutive_skips
    self.max_consecutive_skips = max_consecutive_skips
    self.skipped_steps = skipped_steps
    super().__init__(
        f"skip_nonfinite: {consecutive_skips} consecutive steps had non-finite gradients or "
        f"updates (max_consecutive_skips={max_consecutive_skips}, {skipped_steps} skipped in "
        f"all); the run is diverging. This call did not run; the params and optimizer state "
        f"you hold (from the last call that returned) are the last finite ones, valid also "
        f"under donation. Lower the learning rate, look for log(0) or a division by zero in "
        f"the loss, or restore the last checkpoint; to go on with this state, reset its "
        f"consecutive_skips to 0.")


class SkipNonFiniteState(NamedTuple):
  """State of `skip_nonfinite`.

    inner_state: the wrapped optimizer's state.
    skipped_steps: total number of steps skipped.
    consecutive_skips: steps skipped in a row up to now (0 after a good step); at or above
      `max_consecutive_skips` the wrapper has given up and skips every step.
  """

  inner_state: Any
  skipped_steps: jax.Array
  consecutive_skips: jax.Array


def _all_finite(tree: Any) -> jax.Array:
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


class _PendingGiveUp:
  """Carries a give-up from the compiled step (a host callback, on a runtime thread) to the
  next trace or eager call of `update` (the user's thread), where it is raised."""

  def __init__(self, limit: int):
    self._limit = limit
    self._error: NonFiniteStepsError | None = None
    self._lock = threading.Lock()

  def record(self, gave_up, consecutive, skipped) -> None:
    # Called through jax.debug.callback; must not raise (that would fail the step and lose
    # its donated inputs). Under vmap the callback runs per example: check the flag here.
    if not bool(gave_up):
      return
    with self._lock:
      self._error = NonFiniteStepsError(int(consecutive), self._limit, int(skipped))
    # The next call of the jitted step must trace `update` again to raise; jit has no narrower
    # way to drop one function's compiled version than clearing every cache.
    jax.clear_caches()

  def raise_if_pending(self) -> None:
    with self._lock:
      error, self._error = self._error, None
    if error is not None:
      raise error


def skip_nonfinite(inner: optax.GradientTransformation,
                   max_consecutive_skips: int | None = None
                   ) -> optax.GradientTransformationExtraArgs:
  """Wraps `inner` so that a step with a non-finite gradient or update changes nothing.

  Args:
    inner: the optimizer to protect.
    max_consecutive_skips: give up at this many bad steps in a row (an integer >= 1): that
      step is skipped too, every later step is skipped, and `NonFiniteStepsError` is raised
      at the next call (see the module docstring for what remains valid). None (default)
      skips forever.

  Returns:
    An `optax.GradientTransformationExtraArgs` whose state is a `SkipNonFiniteState`.
  """
  if max_consecutive_skips is not None:
    _checks.check_int_at_least("skip_nonfinite", "max_consecutive_skips",
                               max_consecutive_skips, 1)
  inner = optax.with_extra_args_support(inner)
  pending = None if max_consecutive_skips is None else _PendingGiveUp(max_consecutive_skips)

  def init_fn(params):
    return SkipNonFiniteState(
        inner_state=inner.init(params),
        skipped_steps=jnp.zeros([], jnp.int32),
        consecutive_skips=jnp.zeros([], jnp.int32),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if pending is not None:
      pending.raise_if_pending()  # at trace time under jit; every call when eager
    new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
    apply = jnp.logical_and(_all_finite(updates), _all_finite(new_updates))
    if max_consecutive_skips is not None:
      apply = jnp.logical_and(apply, state.consecutive_skips < max_consecutive_skips)
    new_updates = jax.tree.map(lambda u: jnp.where(apply, u, jnp.zeros_like(u)), new_updates)
    inner_state = jax.tree.map(
        lambda new, old: jnp.where(apply, new, old), new_inner, state.inner_state)
    skipped_steps = state.skipped_steps + jnp.where(apply, 0, 1).astype(jnp.int32)
    consecutive = jnp.where(apply, 0, state.consecutive_skips + 1).astype(jnp.int32)
    if pending is not None:
      # Only the step that reaches the limit reports (latched steps beyond it stay silent);
      # the cond keeps the host callback off every other step.
      gave_up = consecutive == max_consecutive_skips
      jax.lax.cond(gave_up,
                   lambda: jax.debug.callback(pending.record, gave_up, consecutive,
                                              skipped_steps),
                   lambda: None)
    return new_updates, SkipNonFiniteState(
        inner_state=inner_state,
        skipped_steps=skipped_steps,
        consecutive_skips=consecutive,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
