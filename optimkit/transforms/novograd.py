"""NovoGrad: momentum on gradients normalised by a per-leaf (layer-wise) second moment, with
weight decay inside the momentum (Ginsburg et al. 2019, "Stochastic Gradient Methods with
Layer-wise Adaptive Moments for Training of Deep Networks", arXiv:1905.11286, Algorithm 1).

One scalar second moment per leaf instead of one per coordinate, so the state is the momentum
plus one number per leaf (about half of Adam's):

    v_1 = ||g_1||^2,   v_t = b2 v_{t-1} + (1 - b2) ||g_t||^2     (one scalar per leaf)
    m_t = b1 m_{t-1} + g_t / (sqrt(v_t + eps_root) + eps) + weight_decay * w_t   (m_0 = 0)

and the parameters move by -learning_rate * m_t. Neither moment is debiased: v starts at the
first squared norm instead, and m_1 is the first normalised gradient. This is
optax.scale_by_novograd step for step (its `learning_rate`, `b1 = 0.9`, `b2 = 0.25`,
`eps = 1e-6` defaults are optax.novograd's), and pytorch-optimizer's NovoGrad with
`grad_averaging=False`. The `grad_averaging` variant of NVIDIA's implementations, which scales
each normalised gradient after the first by (1 - b1), is not offered.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, compute_dtype, resolve
from optimkit.transforms._util import increment, map_like


class NovogradState(NamedTuple):
  """State of `scale_by_novograd`: step count, momentum `mu` (shaped like the params) and `nu`,
  one float32 (or float64) scalar per leaf: too small to be worth quantizing."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  nu: Any


def scale_by_novograd(
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """NovoGrad's momentum of layer-normalised gradients (plus weight decay), as a direction.

  Args:
    b1: momentum, [0, 1). Default 0.9.
    b2: decay of the per-leaf squared gradient norm, [0, 1). Default 0.25.
    eps: added to the denominator outside the root, >= 0. Default 1e-6.
    eps_root: added inside the root, >= 0. Default 0.
    weight_decay: weight decay added to each normalised gradient inside the momentum, >= 0.
      Default 0. Needs `params` in `update`.
    state_storage: how the momentum is stored (see `optimkit.state`). Default "float32".

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optimkit.transforms import scale_by_novograd
    >>> tx = optax.chain(scale_by_novograd(), optax.scale_by_learning_rate(1e-3))
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

  References:
    Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments for Training
    of Deep Networks", arXiv:1905.11286, 2019. optax.scale_by_novograd.
  """
  owner = "scale_by_novograd"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_non_negative(owner, "eps_root", eps_root)
  _checks.check_non_negative(owner, "weight_decay", weight_decay)
  store = resolve(state_storage)

  def init_fn(params):
    return NovogradState(count=jnp.zeros([], jnp.int32), mu=store.init(params, signed=True),
                         nu=jax.tree.map(lambda p: jnp.zeros([], compute_dtype(p)), params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(f"{owner}: update() needs `params` (NovoGrad's weight decay is part of "
                       f"its momentum); pass them as tx.update(grads, state, params).")
    count = increment(state.count)
    # The first step sets v to the squared norm itself (decay 0), later steps average it.
    decay = jnp.where(count == 1, 0.0, b2)
    nu = jax.tree.map(lambda g, v: (decay * v + (1.0 - decay) * jnp.sum(
        jnp.square(g.astype(v.dtype)))).astype(v.dtype), updates, state.nu)
    old_mu = store.read(state.mu, updates, signed=True)
    mu = jax.tree.map(
        lambda g, w, m, v: b1 * m + g / (jnp.sqrt(v + eps_root) + eps) + weight_decay * w,
        updates, params, old_mu, nu)
    return map_like(lambda g, m: m, updates, mu), NovogradState(
        count=count, mu=store.write(mu, updates, state.mu, signed=True), nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)
