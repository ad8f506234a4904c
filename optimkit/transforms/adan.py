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
from optimkit.transforms._util import bias_correction, increment, map_like, zeros_like


class AdanState(NamedTuple):
  """State of `scale_by_adan`: count, the three moments and the previous gradient."""

  count: jax.Array
  mu: Any
  delta: Any
  nu: Any
  previous_grad: Any


def scale_by_adan(b1: float = 0.98, b2: float = 0.92, b3: float = 0.99,
                  eps: float = 1e-8) -> optax.GradientTransformation:
  """Adan's direction (m_hat + b2 v_hat) / (sqrt(n_hat) + eps).

  Args:
    b1: decay of the gradient EMA, [0, 1). Default 0.98.
    b2: decay of the gradient-difference EMA, [0, 1). Default 0.92.
    b3: decay of the squared-direction EMA, [0, 1). Default 0.99.
    eps: added to the denominator, >= 0. Default 1e-8 (the authors').
  """
  owner = "scale_by_adan"
  for name, value in (("b1", b1), ("b2", b2), ("b3", b3)):
    _checks.check_beta(owner, name, value)
  _checks.check_non_negative(owner, "eps", eps)

  def init_fn(params):
    return AdanState(count=jnp.zeros([], jnp.int32), mu=zeros_like(params),
                     delta=zeros_like(params), nu=zeros_like(params),
                     previous_grad=zeros_like(params))

  def update_fn(updates, state, params=None):
    del params
    first = state.count == 0
    difference = map_like(lambda g, p: jnp.where(first, 0.0, g - p), updates, state.previous_grad)
    mu = map_like(lambda g, m: b1 * m + (1.0 - b1) * g, updates, state.mu)
    delta = map_like(lambda d, v: b2 * v + (1.0 - b2) * d, difference, state.delta)
    nu = map_like(lambda g, d, n: b3 * n + (1.0 - b3) * jnp.square(g + b2 * d),
                  updates, difference, state.nu)
    count = increment(state.count)
    c1, c2, c3 = (bias_correction(b, count) for b in (b1, b2, b3))
    direction = map_like(
        lambda g, m, v, n: (m / c1 + b2 * v / c2) / (jnp.sqrt(n / c3) + eps),
        updates, mu, delta, nu)
    return direction, AdanState(count=count, mu=mu, delta=delta, nu=nu, previous_grad=updates)

  return optax.GradientTransformation(init_fn, update_fn)
