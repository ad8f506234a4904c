"""Rprop: a per-coordinate step size that grows while the gradient keeps its sign and shrinks
when it flips; only the sign of the gradient is used (Riedmiller & Braun 1993, "A Direct
Adaptive Method for Faster Backpropagation Learning: The RPROP Algorithm"; the variant without
weight backtracking, iRprop-, of Igel & Huesken 2000).

    s_t     = g_t * g_{t-1}'                       (g_{t-1}' is the previous step's gradient,
                                                    zeroed where that step skipped; g_0' = 0)
    step_t  = clip(step_{t-1} * eta_plus,  min_step_size, max_step_size)   where s_t > 0
              clip(step_{t-1} * eta_minus, min_step_size, max_step_size)   where s_t < 0
              step_{t-1}                                    where s_t = 0   (step_0 = learning_rate)
    g_t'    = 0 where s_t < 0, else g_t            (after a sign flip, skip one move)
    u_t     = step_t * sign(g_t')

and the parameters move by -u_t: the learning rate is the initial step size, not a multiplier,
so Rprop ignores the gradient's scale entirely (full-batch methods; with noisy minibatch
gradients the signs flip at random and the step sizes collapse).

torch.optim.Rprop and optax.scale_by_rprop compute the same steps, with one difference at
s_t = 0, which happens on the first step and after every skip: torch clamps step_{t-1} into
[min_step_size, max_step_size] there too, optax and the paper leave it. They differ only when
the learning rate lies outside that interval; this module follows optax. (The paper bounds each
change on one side only, which is the same while the step sizes stay inside the interval.)

Only the sign of g_t' is needed for the next step, so it is kept as int8 (exact, one byte),
whatever `state_storage`, which applies to the step sizes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, compute_dtype, resolve
from optimkit.transforms._util import map_like


class RpropState(NamedTuple):
  """State of `scale_by_rprop`: per-coordinate `step_sizes`, and `prev_signs`, the sign of the
  previous step's (possibly zeroed) gradient as int8."""

  step_sizes: Any
  prev_signs: Any


def scale_by_rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Rprop's step step_t * sign(g_t') (the parameters move by minus it).

  Args:
    learning_rate: the initial step size of every coordinate, >= 0.
    eta_minus: factor on the step size after a sign flip, (0, 1). Default 0.5.
    eta_plus: factor on the step size while the sign holds, >= 1. Default 1.2.
    min_step_size: smallest step size, >= 0. Default 1e-6.
    max_step_size: largest step size, >= 0. Default 50.
    state_storage: how the step sizes are stored (see `optimkit.state`). Default "float32".

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optimkit.transforms import scale_by_rprop
    >>> tx = optax.chain(scale_by_rprop(1e-2), optax.scale(-1.0))
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

  References:
    Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning: The
    RPROP Algorithm", IEEE ICNN 1993. Igel & Huesken, "Improving the Rprop Learning
    Algorithm", NC 2000. torch.optim.Rprop; optax.scale_by_rprop.
  """
  owner = "scale_by_rprop"
  _checks.check_non_negative(owner, "learning_rate", learning_rate)
  _checks.check_range(owner, "eta_minus", eta_minus, 0.0, 1.0, low_inclusive=False,
                      high_inclusive=False)
  _checks.check_range(owner, "eta_plus", eta_plus, 1.0)
  _checks.check_non_negative(owner, "min_step_size", min_step_size)
  _checks.check_non_negative(owner, "max_step_size", max_step_size)
  low, high = _checks._concrete_float(min_step_size), _checks._concrete_float(max_step_size)
  if low is not None and high is not None and low > high:
    raise ValueError(f"{owner}: min_step_size must be <= max_step_size, got {min_step_size!r} "
                     f"and {max_step_size!r}")
  store = resolve(state_storage)

  def init_fn(params):
    # zeros + value, not jnp.full: a new buffer even for a rank-0 leaf (where jnp.full can return
    # the learning-rate array itself, which optax.inject_hyperparams also keeps in its state).
    # The fill is also the `like` of its write: unsharded like the zeros the storage makes (the
    # params may be sharded over Explicit mesh axes, which a bfloat16 or quantized write would
    # have to mix with the unsharded fill).
    initial = jax.tree.map(
        lambda p: (jnp.zeros(p.shape, compute_dtype(p)) + learning_rate).astype(compute_dtype(p)),
        params)
    return RpropState(
        step_sizes=store.write(initial, initial, store.init(params, signed=False), signed=False),
        prev_signs=jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.int8), params))

  def update_fn(updates, state, params=None):
    del params
    old_steps = store.read(state.step_sizes, updates, signed=False)
    # The sign of g_t * g_{t-1}': the product of the two signs (int8 * int8 stays exact).
    agreement = jax.tree.map(lambda g, prev: jnp.sign(g).astype(jnp.int8) * prev, updates,
                             state.prev_signs)
    steps = jax.tree.map(
        lambda s, step: jnp.where(
            s == 0, step,
            jnp.clip(step * jnp.where(s > 0, eta_plus, eta_minus), min_step_size, max_step_size)),
        agreement, old_steps)
    signs = jax.tree.map(
        lambda g, s: jnp.where(s < 0, 0, jnp.sign(g)).astype(jnp.int8), updates, agreement)
    direction = map_like(lambda g, sign, step: step * sign, updates, signs, steps)
    return direction, RpropState(
        step_sizes=store.write(steps, updates, state.step_sizes, signed=False), prev_signs=signs)

  return optax.GradientTransformation(init_fn, update_fn)
