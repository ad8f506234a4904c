"""signSGD and Signum: steps of the sign of the gradient, or of its momentum (Bernstein, Wang,
Azizzadenesheli & Anandkumar 2018, "signSGD: Compressed Optimisation for Non-Convex Problems",
ICML 2018).

    signSGD:  u_t = sign(g_t)
    Signum:   m_t = beta m_{t-1} + (1 - beta) g_t,   u_t = sign(m_t)      (m_0 = 0)

and the parameters move by -learning_rate * u_t: every coordinate moves by exactly the learning
rate (or 0 where the sign is 0). The momentum needs no debiasing, a positive factor does not
change a sign. signSGD is optax's `scale_by_sign` (stateless; `optimkit.sign_sgd` uses it), so
this module holds Signum's momentum. Both equal optax.sign_sgd / optax.signum, which follow the
paper; Signum with beta = 0 is signSGD. Lion (`optimkit.transforms.sign_momentum`) is the sign
of an interpolation between the momentum and the gradient instead.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import ema, map_like


class SignumState(NamedTuple):
  """State of `scale_by_signum`: the momentum `mu`, shaped like the params."""

  mu: Any


def scale_by_signum(beta: float = 0.9, *,
                    state_storage: StorageLike = "float32") -> optax.GradientTransformation:
  """Signum's direction sign(m_t), m_t the EMA of the gradients at rate beta.

  Args:
    beta: decay of the momentum, [0, 1). Default 0.9 (the paper's and optax's).
    state_storage: how the momentum is stored (see `optimkit.state`). Default "float32".

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optimkit.transforms import scale_by_signum
    >>> tx = optax.chain(scale_by_signum(), optax.scale_by_learning_rate(1e-4))
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

  References:
    Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems", ICML 2018.
    optax.signum.
  """
  _checks.check_beta("scale_by_signum", "beta", beta)
  store = resolve(state_storage)

  def init_fn(params):
    return SignumState(mu=store.init(params, signed=True))

  def update_fn(updates, state, params=None):
    del params
    mu = ema(beta, updates, store.read(state.mu, updates, signed=True))
    return map_like(lambda g, m: jnp.sign(m), updates, mu), SignumState(
        mu=store.write(mu, updates, state.mu, signed=True))

  return optax.GradientTransformation(init_fn, update_fn)
