"""ADOPT: Adam with the current gradient left out of its own normaliser (Taniguchi et al. 2024,
"ADOPT: Modified Adam Can Converge with Any beta2 with the Optimal Rate", NeurIPS 2024,
arXiv:2411.02853, with the clipping of its later revisions and the authors' code).

Adam divides g_t by a second moment that already contains g_t^2, which correlates the two and
is what lets Adam diverge for small beta2. ADOPT normalises with the *previous* second moment
and applies the momentum after the normalisation:

    t = 0:   v_0 = g_0^2,  m_0 = 0,  u_0 = 0           (the first gradient only initialises v)
    t >= 1:  n_t = clip(g_t / max(sqrt(v_{t-1}), eps), -c_t, c_t),   c_t = clip_value_fn(t)
             m_t = b1 m_{t-1} + (1 - b1) n_t
             u_t = m_t              (Nesterov: b1 m_t + (1 - b1) n_t)
             v_t = b2 v_{t-1} + (1 - b2) g_t^2

`t` counts the updates before this one, so the default c_t = t^(1/4) is 1 at the second step.
There is no bias correction: v starts at g_0^2, not at zero, and m's start is the first
parameter move.

Defaults: b1 = 0.9, b2 = 0.9999, eps = 1e-6, clipping on with c_t = t^0.25 (the authors' and
optax's).

Checked against `torch-adopt` 0.1.0 `ADOPT` (the authors' package) and `optax.contrib.adopt`;
the two agree with the paper and with each other (tests/transforms/test_adopt.py). Where this
module differs:
  - from optax: the moments are stored through `state_storage` (bf16 / 8-bit / 4-bit);
    optax's `mu_dtype` is `mu_storage` here (the full optimizer takes `mu_dtype`).
  - from torch-adopt: nothing in the direction. Its decoupled weight decay (`decouple=True`)
    is not applied on the first step, the one that only initialises v; the full optimizer
    reproduces that with `add_decayed_weights_after_first_step`.

Example:
    >>> import jax.numpy as jnp, optax
    >>> from optimkit.transforms.adopt import scale_by_adopt
    >>> tx = optax.chain(scale_by_adopt(), optax.scale_by_learning_rate(1e-3))
    >>> state = tx.init(jnp.zeros(3))
    >>> updates, state = tx.update(jnp.ones(3), state)   # first step: initialises v only
    >>> float(abs(updates).max()), state[0].nu.tolist()
    (0.0, [1.0, 1.0, 1.0])
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import ema, increment, leafwise, map_like, written_after


class AdoptState(NamedTuple):
  """State of `scale_by_adopt`: updates so far, momentum `mu` of the normalised gradient and
  second moment `nu` (shaped like the params)."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  nu: Any


def _default_clip_value(count: jax.Array) -> jax.Array:
  return count ** 0.25


def scale_by_adopt(
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] | jax.Array = _default_clip_value,
    state_storage: StorageLike = "float32",
    mu_storage: StorageLike | None = None,
) -> optax.GradientTransformation:
  """ADOPT's direction: momentum of g_t / max(sqrt(v_{t-1}), eps), clipped, zero at t = 0.

  Args:
    b1: decay of the momentum of the normalised gradient, [0, 1). Default 0.9.
    b2: decay of the second moment, [0, 1). Default 0.9999.
    eps: floor of sqrt(v) in the normaliser, >= 0. Default 1e-6.
    nesterov: return b1 m_t + (1 - b1) n_t instead of m_t (optax's option).
    use_clipping: clip the normalised gradient to [-c_t, c_t]. Default True.
    clip_value_fn: c_t as a function of the step count t (an int32 array, 1 at the second
      step), or c_t itself as an array: `optax.inject_hyperparams` treats every callable
      argument as a schedule and hands in its value at the same count. Default t^0.25.
    state_storage: how mu and nu are stored (see `optimkit.state`). Default "float32".
    mu_storage: how mu is stored, when it differs from nu (optax's `mu_dtype`). Default: as
      `state_storage`.
  """
  owner = "scale_by_adopt"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "eps", eps)
  store = resolve(state_storage)
  store_mu = store if mu_storage is None else resolve(mu_storage)

  def init_fn(params):
    return AdoptState(count=jnp.zeros([], jnp.int32), mu=store_mu.init(params, signed=True),
                      nu=store.init(params, signed=False))

  def update_fn(updates, state, params=None):
    del params
    first = state.count == 0
    old_nu = store.read(state.nu, updates, signed=False)
    old_mu = store_mu.read(state.mu, updates, signed=True)
    # At t = 0 the clip bound is c_0 = 0 under the default, but a custom clip_value_fn (or no
    # clipping) need not be, so the first step is masked explicitly rather than by the clip.
    if not use_clipping:
      clip = None
    elif callable(clip_value_fn):
      clip = clip_value_fn(state.count)
    else:
      clip = clip_value_fn

    def normalised(g, v):
      n = g / jnp.maximum(jnp.sqrt(v), eps)
      return n if clip is None else jnp.clip(n, -clip, clip)

    # Per-leaf arithmetic through `leafwise`: traced once per leaf signature, not once per leaf.
    normalised_grad = jax.tree.map(leafwise(normalised), updates, old_nu)
    # b1 -> 1 at the first step keeps m_0 = 0 (optax's form; torch-adopt skips the update).
    decay = jnp.where(first, 1.0, b1)
    complement = 1.0 - decay
    mu = jax.tree.map(leafwise(lambda n, m: jnp.where(first, m, decay * m + complement * n)),
                      normalised_grad, old_mu)
    if nesterov:
      direction = map_like(leafwise(lambda g, m, n: jnp.where(first, 0.0, b1 * m + (1.0 - b1) * n)),
                           updates, mu, normalised_grad)
    else:
      direction = map_like(lambda g, m: m, updates, mu)
    # v_0 = g_0^2 exactly: the EMA with b2 -> 0 at the first step.
    nu = ema(jnp.where(first, 0.0, b2), jax.tree.map(leafwise(jnp.square), updates), old_nu)
    stored_mu = store_mu.write(mu, updates, state.mu, signed=True)
    # v_t replaces v_{t-1} only after the momentum update, which divides by v_{t-1}, has run;
    # otherwise XLA copies the old nu buffer every step.
    nu = written_after(nu, stored_mu)
    return direction, AdoptState(count=increment(state.count), mu=stored_mu,
                                 nu=store.write(nu, updates, state.nu, signed=False))

  return optax.GradientTransformation(init_fn, update_fn)


class FirstStepGateState(NamedTuple):
  """State of `add_decayed_weights_after_first_step`: updates so far and the decay's state."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  inner: Any


def add_decayed_weights_after_first_step(weight_decay: Any = 0.0, mask: Any = None
                                         ) -> optax.GradientTransformation:
  """u + weight_decay * w from the second step on; u unchanged at the first.

  ADOPT's first step only initialises its second moment and does not move the parameters;
  torch-adopt's decoupled weight decay (`decouple=True`) is skipped on that step too, so the
  parameters do not shrink before the optimizer has taken a step. `mask` as in
  `optax.add_decayed_weights`.
  """
  _checks.check_non_negative("add_decayed_weights_after_first_step", "weight_decay",
                             weight_decay)
  decay = optax.add_decayed_weights(weight_decay, mask)

  def init_fn(params):
    return FirstStepGateState(count=jnp.zeros([], jnp.int32), inner=decay.init(params))

  def update_fn(updates, state, params=None):
    decayed, inner = decay.update(updates, state.inner, params)
    first = state.count == 0
    gated = jax.tree.map(lambda u, d: jnp.where(first, u, d).astype(u.dtype), updates, decayed)
    return gated, FirstStepGateState(count=increment(state.count), inner=inner)

  return optax.GradientTransformation(init_fn, update_fn)
