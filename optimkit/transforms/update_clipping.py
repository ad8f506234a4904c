"""StableAdamW's update clipping (Wortsman, Dettmers, Zettlemoyer, Morcos, Farhadi & Schmidt
2023, "Stable and low-precision training for large-scale vision-language models",
arXiv:2304.13013, Algorithm 2): AdamW whose step is scaled down, per tensor, whenever the
gradient is large relative to the second moment (the "stuck" v that causes loss spikes).

    m_hat, v_hat as in Adam
    RMS_t = sqrt(mean(g_t^2 / max(v_hat_t, eps^2)))       (per tensor, on device: no host sync)
    u_t   = (m_hat / (sqrt(v_hat) + eps) + wd * w) / max(1, RMS_t)

The factor scales the whole step, weight decay included, as in the paper (its learning rate is
divided by max(1, RMS)), which is why the decay lives inside this primitive.
Reference: torch-optimi's StableAdamW.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import bias_correction, leaf_scalars, map_like, option_tree
from optimkit.transforms.moments import init_adam_state, next_adam_moments, store_adam_state


def scale_by_stable_adam(
    b1: float = 0.9,
    b2: float = 0.99,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    mask: Any = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Adam's ratio plus decoupled weight decay, divided per tensor by max(1, RMS(g/sqrt(v_hat))).

  Args:
    b1, b2: moment decays, [0, 1). Defaults 0.9, 0.99 (the paper's).
    eps: stabiliser, >= 0. Default 1e-6.
    weight_decay: decoupled decay, >= 0. Default 0.
    mask: tree of bools (or callable params -> tree) selecting the leaves to decay.
    state_storage: how the moments are stored (see `optimkit.state`). Default "float32".
  """
  owner = "scale_by_stable_adam"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_non_negative(owner, "weight_decay", weight_decay)

  store = resolve(state_storage)

  def init_fn(params):
    return init_adam_state(store, params)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(f"{owner}: update() needs params for the weight decay.")
    mu, nu, count = next_adam_moments(store, updates, state, b1, b2)
    c1, c2 = bias_correction(b1, count), bias_correction(b2, count)
    decays = option_tree(mask, params, True)

    def step(g, m, v, w, decay):
      v_hat = v / c2
      rms = 1.0
      if g.size:
        # g^2 / max(v_hat, eps^2) as (g * c2) g / max(v, eps^2 c2), with the leaf's own copy of
        # c2: written the direct way, g^2 (shared with v's update) and v_hat (shared with the
        # direction) each have two readers, and XLA writes both out as params-sized
        # temporaries (on CPU each is also page-faulted in every step).
        (own_c2,) = leaf_scalars(g, c2)
        rms = jnp.sqrt(jnp.mean((g * own_c2) * g / jnp.maximum(v, (eps * eps) * own_c2)))
      direction = (m / c1) / (jnp.sqrt(v_hat) + eps)
      if decay:
        direction = direction + weight_decay * w
      return direction / jnp.maximum(1.0, rms)

    direction = map_like(step, updates, mu, nu, params, decays)
    return direction, store_adam_state(store, updates, state, mu, nu, count)

  return optax.GradientTransformation(init_fn, update_fn)
