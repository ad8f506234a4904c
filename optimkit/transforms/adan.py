"""Adan: adaptive Nesterov momentum (Xie, Zhou, Li, Lin & Yan 2022, "Adan: Adaptive Nesterov
Momentum Algorithm for Faster Optimizing Deep Models", arXiv:2208.06677, Algorithm 1), in the
usual beta convention of the authors' code (their paper writes 1 - beta):

    d_t = g_t - g_{t-1}                                  (0 at the first step)
    m_t = b1 m + (1 - b1) g_t
    v_t = b2 v + (1 - b2) d_t
    n_t = b3 n + (1 - b3) (g_t + b2 d_t)^2
    u_t = (m_hat + b2 v_hat) / (sqrt(n_hat) + eps)       (hats: bias-corrected by 1 - b^t)

The full optimizer applies the proximal weight decay of the paper:
w <- (w - lr u) / (1 + lr wd).

Reference: torch-optimi's Adan (which follows the authors' code). `adan-pytorch` differs: it
leaves all three moments at zero on the first step (no parameter change at step 1) and is not
used as the reference.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import bias_correction, ema, increment, leafwise, written_after


class AdanState(NamedTuple):
  """State of `scale_by_adan`: count, the three moments and the previous gradient."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  delta: Any
  nu: Any
  previous_grad: Any


def scale_by_adan(b1: float = 0.98, b2: float = 0.92, b3: float = 0.99,
                  eps: float = 1e-8, eps_root: float = 0.0,
                  state_storage: StorageLike = "float32") -> optax.GradientTransformation:
  """Adan's direction (m_hat + b2 v_hat) / (sqrt(n_hat + eps_root) + eps).

  Args:
    b1: decay of the gradient EMA, [0, 1). Default 0.98.
    b2: decay of the gradient-difference EMA, [0, 1). Default 0.92.
    b3: decay of the squared-direction EMA, [0, 1). Default 0.99.
    eps: added to the denominator, >= 0. Default 1e-8 (the authors').
    eps_root: added inside the root, >= 0. Default 0 (the authors'; optax's is 1e-8).
    state_storage: how the moments and the previous gradient are stored. Default "float32".
  """
  owner = "scale_by_adan"
  for name, value in (("b1", b1), ("b2", b2), ("b3", b3)):
    _checks.check_beta(owner, name, value)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_non_negative(owner, "eps_root", eps_root)

  store = resolve(state_storage)

  def init_fn(params):
    return AdanState(count=jnp.zeros([], jnp.int32), mu=store.init(params, signed=True),
                     delta=store.init(params, signed=True), nu=store.init(params, signed=False),
                     previous_grad=store.init(params, signed=True))

  def update_fn(updates, state, params=None):
    del params
    first = state.count == 0
    previous = store.read(state.previous_grad, updates, signed=True)
    # Per-leaf arithmetic through `leafwise`: traced once per leaf signature, not once per leaf.
    difference = jax.tree.map(leafwise(lambda g, p: jnp.where(first, 0.0, g - p)), updates,
                              previous)
    mu = ema(b1, updates, store.read(state.mu, updates, signed=True))
    delta = ema(b2, difference, store.read(state.delta, updates, signed=True))
    nu = ema(b3, jax.tree.map(leafwise(lambda g, d: jnp.square(g + b2 * d)), updates, difference),
             store.read(state.nu, updates, signed=False))
    count = increment(state.count)
    c1, c2, c3 = (bias_correction(b, count) for b in (b1, b2, b3))

    def leaf_direction(g, m, v, n):
      direction = (m / c1 + b2 * v / c2) / (jnp.sqrt(n / c3 + eps_root) + eps)
      return direction.astype(g.dtype)  # as map_like: in the gradient's dtype

    direction = jax.tree.map(leafwise(leaf_direction), updates, mu, delta, nu)
    stored_delta = store.write(delta, updates, state.delta, signed=True)
    stored_nu = store.write(nu, updates, state.nu, signed=False)
    # The gradient replaces the previous one only after both readers of the old one (the delta
    # and nu updates) have run; otherwise XLA copies the old buffer every step.
    previous_grad = written_after(updates, stored_delta, stored_nu)
    return direction, AdanState(
        count=count, mu=store.write(mu, updates, state.mu, signed=True), delta=stored_delta,
        nu=stored_nu,
        previous_grad=store.write(previous_grad, updates, state.previous_grad, signed=True))

  return optax.GradientTransformation(init_fn, update_fn)
