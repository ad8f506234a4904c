"""RAdam: Adam with the variance of its adaptive learning rate rectified (Liu, Jiang, He, Chen,
Liu, Gao & Han 2020, "On the Variance of the Adaptive Learning Rate and Beyond",
arXiv:1908.03265, Algorithm 2).

    rho_inf = 2 / (1 - b2) - 1
    rho_t   = rho_inf - 2 t b2^t / (1 - b2^t)
    if rho_t > threshold:  u = r_t * m_hat / (sqrt(v_hat) + eps),
                           r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf
                                      / ((rho_inf - 4)(rho_inf - 2) rho_t))
    else:                  u = m_hat                      (SGD with momentum while v is unreliable)

eps is added to sqrt(v_hat), as in Adam here and in torch-optimi; torch.optim.RAdam adds it to
sqrt(v) before bias correction (eps / sqrt(1 - b2^t) in this form), a difference of order eps.
References: torch.optim.RAdam, optax.radam, torch-optimi's RAdam/Ranger.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import bias_correction, increment, map_like
from optimkit.transforms.moments import init_adam_state, next_adam_moments, store_adam_state


def scale_by_radam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   eps_root: float = 0.0, threshold: float = 5.0, *, nesterov: bool = False,
                   state_storage: StorageLike = "float32") -> optax.GradientTransformation:
  """RAdam's rectified direction.

  Args:
    b1, b2: moment decays, [0, 1). Defaults 0.9, 0.999.
    eps: stabiliser outside the root, >= 0. Default 1e-8.
    eps_root: stabiliser inside the root, >= 0. Default 0 (optax's argument).
    threshold: rectify only when rho_t exceeds it. Default 5 (PyTorch, optimi; optax's default).
    nesterov: optax's Nesterov form of the first moment (see `scale_by_adam`). Default False.
    state_storage: how the moments are stored (see `optimkit.state`). Default "float32".
  """
  owner = "scale_by_radam"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_non_negative(owner, "eps_root", eps_root)
  rho_inf = 2.0 / (1.0 - b2) - 1.0

  store = resolve(state_storage)

  def init_fn(params):
    return init_adam_state(store, params)

  def update_fn(updates, state, params=None):
    del params
    mu, nu, count = next_adam_moments(store, updates, state, b1, b2)
    t = count.astype(jnp.result_type(float))
    c1, c2 = bias_correction(b1, count), bias_correction(b2, count)
    mu_hat = mu  # m_hat * c1: the direction divides by c1
    if nesterov:
      next_c1 = bias_correction(b1, increment(count))
      mu_hat = jax.tree.map(lambda m, g: (b1 * m / next_c1 + (1.0 - b1) * g / c1) * c1, mu,
                            updates)
    rho = rho_inf - 2.0 * t * b2 ** t / c2
    rectified = rho > threshold
    safe_rho = jnp.where(rectified, rho, rho_inf)  # keeps the unused branch finite
    ratio = jnp.sqrt((safe_rho - 4.0) * (safe_rho - 2.0) * rho_inf
                     / ((rho_inf - 4.0) * (rho_inf - 2.0) * safe_rho))
    direction = map_like(
        lambda g, m, v: jnp.where(rectified,
                                  ratio * (m / c1) / (jnp.sqrt(v / c2 + eps_root) + eps), m / c1),
        updates, mu_hat, nu)
    return direction, store_adam_state(store, updates, state, mu, nu, count)

  return optax.GradientTransformation(init_fn, update_fn)
