"""AdaMax: Adam with the infinity norm in place of the second moment (Kingma & Ba 2015, "Adam: A
Method for Stochastic Optimization", ICLR 2015, Section 7.1 and Algorithm 2).

    m_t = b1 m_{t-1} + (1 - b1) g_t
    u_t = max(b2 u_{t-1}, |g_t| + eps)                  (u_0 = 0; needs no bias correction)
    d_t = (m_t / (1 - b1^t)) / u_t

The exponentially weighted infinity norm u_t is the limit of Adam's (b2 v + (1 - b2) |g|^p)^(1/p)
as p grows. torch.optim.Adamax and optax.scale_by_adamax compute exactly this, eps included; the
paper has no eps (u_t = max(b2 u_{t-1}, |g_t|)), which divides by zero on a coordinate whose
gradients have all been zero. Defaults are the paper's, torch's and optax's (b1 0.9, b2 0.999,
eps 1e-8).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import bias_correction, ema, increment, map_like


class AdamaxState(NamedTuple):
  """State of `scale_by_adamax`: step count, first moment `mu`, infinity norm `nu` (u_t)."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  nu: Any


def scale_by_adamax(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """AdaMax's direction m_hat_t / max(b2 u_{t-1}, |g_t| + eps).

  Args:
    b1: first-moment decay, [0, 1). Default 0.9.
    b2: decay of the infinity norm, [0, 1). Default 0.999.
    eps: added to |g_t| before the maximum, >= 0. Default 1e-8.
    state_storage: how mu and nu are stored (see `optimkit.state`). Default "float32".

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optimkit.transforms import scale_by_adamax
    >>> tx = optax.chain(scale_by_adamax(), optax.scale_by_learning_rate(2e-3))
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

  References:
    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Algorithm 2.
    torch.optim.Adamax; optax.scale_by_adamax.
  """
  owner = "scale_by_adamax"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "eps", eps)
  store = resolve(state_storage)

  def init_fn(params):
    return AdamaxState(count=jnp.zeros([], jnp.int32), mu=store.init(params, signed=True),
                       nu=store.init(params, signed=False))

  def update_fn(updates, state, params=None):
    del params
    mu = ema(b1, updates, store.read(state.mu, updates, signed=True))
    nu = jax.tree.map(lambda g, u: jnp.maximum(b2 * u, jnp.abs(g) + eps), updates,
                      store.read(state.nu, updates, signed=False))
    count = increment(state.count)
    correction1 = bias_correction(b1, count)
    direction = map_like(lambda g, m, u: (m / correction1) / u, updates, mu, nu)
    return direction, AdamaxState(count=count, mu=store.write(mu, updates, state.mu, signed=True),
                                  nu=store.write(nu, updates, state.nu, signed=False))

  return optax.GradientTransformation(init_fn, update_fn)
