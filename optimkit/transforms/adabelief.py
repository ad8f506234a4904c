"""AdaBelief: Adam with the variance of the gradient around its EMA in place of the raw second
moment (Zhuang et al. 2020, "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
Gradients", NeurIPS 2020, Algorithm 2).

The step is large where the gradient agrees with its prediction m_t (high "belief") and small
where it does not:

    m_t = b1 m_{t-1} + (1 - b1) g_t
    s_t = b2 s_{t-1} + (1 - b2) (g_t - m_t)^2 + eps_root
    u_t = (m_t / (1 - b1^t)) / (sqrt(s_t / (1 - b2^t)) + eps)

eps_root is added to the *state* every step, as in the authors' adabelief-pytorch (its
`exp_avg_var.add_(eps)`) and optax.scale_by_belief; eps outside the root as in both. With
`nesterov=True` the numerator is optax's Nesterov look-ahead, b1 m_t / (1 - b1^(t+1)) +
(1 - b1) g_t / (1 - b1^t).

Defaults are optax's (eps = eps_root = 1e-16). The authors' adabelief-pytorch (0.2) uses one
eps for both places, and defaults to a rectified, RAdam-style step (`rectify=True`) with
decoupled weight decay; this module is the unrectified update of the paper's Algorithm 2, which
is what optax implements and what adabelief-pytorch computes with `rectify=False`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import bias_correction, ema, increment, map_like


class AdaBeliefState(NamedTuple):
  """State of `scale_by_adabelief`: step count, first moment `mu`, belief variance `nu` (s_t)."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  nu: Any


def scale_by_adabelief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """AdaBelief's direction m_hat_t / (sqrt(s_hat_t) + eps) (optax's `scale_by_belief`).

  Args:
    b1: first-moment decay, [0, 1). Default 0.9.
    b2: decay of the belief variance, [0, 1). Default 0.999.
    eps: added to the denominator outside the root, >= 0. Default 1e-16.
    eps_root: added to the variance state every step, >= 0. Default 1e-16.
    nesterov: Nesterov look-ahead numerator, as optax.adabelief(nesterov=True). Default False.
    state_storage: how mu and nu are stored (see `optimkit.state`). Default "float32".

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optimkit.transforms import scale_by_adabelief
    >>> tx = optax.chain(scale_by_adabelief(), optax.scale_by_learning_rate(1e-3))
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

  References:
    Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
    Gradients", NeurIPS 2020. optax.scale_by_belief.
  """
  owner = "scale_by_adabelief"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_non_negative(owner, "eps_root", eps_root)
  store = resolve(state_storage)

  def init_fn(params):
    return AdaBeliefState(count=jnp.zeros([], jnp.int32), mu=store.init(params, signed=True),
                          nu=store.init(params, signed=False))

  def update_fn(updates, state, params=None):
    del params
    mu = ema(b1, updates, store.read(state.mu, updates, signed=True))
    surprise = jax.tree.map(lambda g, m: (g - m) * (g - m), updates, mu)
    # eps_root joins the new term before the decayed moment does: `(...) + eps_root` last is an
    # add of a scalar, which XLA's CPU fusion duplicates into the direction, recomputing the new
    # nu there from the old one and so copying the donated nu buffer every step.
    nu = jax.tree.map(lambda s, old: b2 * old + ((1.0 - b2) * s + eps_root), surprise,
                      store.read(state.nu, updates, signed=False))
    count = increment(state.count)
    correction1 = bias_correction(b1, count)
    correction2 = bias_correction(b2, count)
    if nesterov:
      next_correction1 = bias_correction(b1, increment(count))
      numerator = jax.tree.map(
          lambda g, m: b1 * m / next_correction1 + (1.0 - b1) * g / correction1, updates, mu)
    else:
      numerator = jax.tree.map(lambda m: m / correction1, mu)
    direction = map_like(lambda g, n, s: n / (jnp.sqrt(s / correction2) + eps),
                         updates, numerator, nu)
    return direction, AdaBeliefState(
        count=count, mu=store.write(mu, updates, state.mu, signed=True),
        nu=store.write(nu, updates, state.nu, signed=False))

  return optax.GradientTransformation(init_fn, update_fn)
