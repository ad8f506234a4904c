"""AMSGrad: Adam whose second moment never decreases (Reddi, Kale & Kumar 2018, "On the
Convergence of Adam and Beyond", ICLR 2018, Algorithm 2).

Adam can take large steps after a run of small gradients because v_t forgets; AMSGrad divides by
the running maximum of v_t instead, so each coordinate's effective step size only shrinks:

    m_t     = b1 m_{t-1} + (1 - b1) g_t
    v_t     = b2 v_{t-1} + (1 - b2) g_t^2
    vmax_t  = max(vmax_{t-1}, v_t)                                      (vmax_0 = 0)
    u_t     = (m_t / (1 - b1^t)) / (sqrt(vmax_t / (1 - b2^t) + eps_root) + eps)

This is torch.optim.Adam(amsgrad=True): the maximum of the *raw* second moment, debiased after.
optax.amsgrad takes the maximum of the *debiased* second moment instead,

    vmax_t  = max(vmax_{t-1}, v_t / (1 - b2^t)),     u_t = m_hat_t / (sqrt(vmax_t + eps_root) + eps)

(`debias_before_max=True` here). The two differ from the first steps on: early on, v_t / (1 -
b2^t) is large for the coordinates whose first gradients were large, and optax's maximum keeps
that value long after the raw maximum would have let it go. On the noisy quadratic of
tests/parity.py, with the default betas and a learning rate of 1e-2, the parameters of the two
after 200 float64 steps differ by 18% of their norm. The paper's Algorithm 2 has no bias
correction at all: `bias_correction_mu=False, bias_correction_nu=False` (optax's arguments,
with the same meaning here).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import bias_correction, ema, increment, map_like


class AmsgradState(NamedTuple):
  """State of `scale_by_amsgrad`: step count, moments `mu` and `nu`, and `nu_max`, the running
  maximum of `nu` (of `nu` debiased, with `debias_before_max=True`)."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  nu: Any
  nu_max: Any


def scale_by_amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    debias_before_max: bool = False,
    state_storage: StorageLike = "float32",
    mu_storage: StorageLike | None = None,
) -> optax.GradientTransformation:
  """AMSGrad's direction: Adam's ratio with the running maximum of the second moment.

  Args:
    b1: first-moment decay, [0, 1). Default 0.9.
    b2: second-moment decay, [0, 1). Default 0.999.
    eps: added to the denominator outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0.
    bias_correction_mu: divide m_t by 1 - b1^t. Default True (False: the paper).
    bias_correction_nu: divide the second moment by 1 - b2^t. Default True (False: the paper).
    debias_before_max: take the maximum of the debiased second moment, as optax.amsgrad does.
      Default False: the maximum of the raw one, debiased after, as torch.optim.Adam does.
    state_storage: how mu, nu and nu_max are stored (see `optimkit.state`). Default "float32".
    mu_storage: how mu is stored, when it differs from the others (optax's `mu_dtype`).
      Default: as `state_storage`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optimkit.transforms import scale_by_amsgrad
    >>> tx = optax.chain(scale_by_amsgrad(), optax.scale_by_learning_rate(1e-3))
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

  References:
    Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    torch.optim.Adam(amsgrad=True) (the default here); optax.amsgrad (debias_before_max=True).
  """
  owner = "scale_by_amsgrad"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_non_negative(owner, "eps_root", eps_root)
  store = resolve(state_storage)
  store_mu = store if mu_storage is None else resolve(mu_storage)

  def init_fn(params):
    return AmsgradState(count=jnp.zeros([], jnp.int32), mu=store_mu.init(params, signed=True),
                        nu=store.init(params, signed=False),
                        nu_max=store.init(params, signed=False))

  def update_fn(updates, state, params=None):
    del params
    mu = ema(b1, updates, store_mu.read(state.mu, updates, signed=True))
    nu = ema(b2, jax.tree.map(lambda g: g * g, updates),
             store.read(state.nu, updates, signed=False))
    count = increment(state.count)
    correction1 = bias_correction(b1, count) if bias_correction_mu else 1.0
    correction2 = bias_correction(b2, count) if bias_correction_nu else 1.0
    old_max = store.read(state.nu_max, updates, signed=False)
    if debias_before_max:
      nu_max = jax.tree.map(lambda v, top: jnp.maximum(top, v / correction2), nu, old_max)
      second = nu_max
    else:
      nu_max = jax.tree.map(jnp.maximum, old_max, nu)
      second = jax.tree.map(lambda top: top / correction2, nu_max)
    direction = map_like(lambda g, m, s: (m / correction1) / (jnp.sqrt(s + eps_root) + eps),
                         updates, mu, second)
    return direction, AmsgradState(
        count=count, mu=store_mu.write(mu, updates, state.mu, signed=True),
        nu=store.write(nu, updates, state.nu, signed=False),
        nu_max=store.write(nu_max, updates, state.nu_max, signed=False))

  return optax.GradientTransformation(init_fn, update_fn)
