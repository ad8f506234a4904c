"""AdamS (Zhang, Wang & Chen 2025, "AdamS: Momentum Itself Can Be A Normalizer for LLM
Pretraining and Post-training", arXiv:2505.16363): Adam's step with the second moment replaced
by a weighted sum of squares of the previous momentum and the current gradient, so the only
state is the momentum (the memory of SGD with momentum).

    v_t = b2 m_{t-1}^2 + (1 - b2) g_t^2
    m_t = b1 m_{t-1} + (1 - b1) g_t
    u_t = m_t / (sqrt(v_t) + eps)                  (no bias correction)

Weight decay is decoupled, as in AdamW, whose hyperparameters AdamS inherits (the paper's
recommendation). No package implements it; the test checks the update against a NumPy
transcription of these equations and the state size against SGD with momentum.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import ema, map_like, previous_ema, uses_previous_ema


class AdamSState(NamedTuple):
  """State of `scale_by_adams`: the momentum only."""

  mu: Any


def scale_by_adams(b1: float = 0.9, b2: float = 0.95,
                   eps: float = 1e-8,
                   state_storage: StorageLike = "float32",
                   one_pass: bool | None = None) -> optax.GradientTransformation:
  """AdamS's direction m_t / (sqrt(b2 m_{t-1}^2 + (1 - b2) g_t^2) + eps).

  Args:
    b1: momentum decay, [0, 1). Default 0.9.
    b2: weight of the previous momentum in the normaliser, [0, 1). Default 0.95 (AdamW's LLM
      setting, which the paper inherits).
    eps: stabiliser, >= 0. Default 1e-8.
    state_storage: how the momentum is stored (see `optimkit.state`). Default "float32".
    one_pass: compute the normaliser from the new momentum, with m_{t-1} recovered as
      (m_t - (1 - b1) g_t) / b1, so that the momentum is updated in place in one pass (XLA
      otherwise copies it every step). None (default): on when b1 is a number >= 0.5; the
      recovery loses precision as b1 nears 0. `adams` decides it from its b1 at construction.
  """
  owner = "scale_by_adams"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "eps", eps)

  store = resolve(state_storage)
  recover_previous = uses_previous_ema(b1, one_pass)

  def init_fn(params):
    return AdamSState(mu=store.init(params, signed=True))

  def update_fn(updates, state, params=None):
    del params
    old = store.read(state.mu, updates, signed=True)
    mu = ema(b1, updates, old)
    if recover_previous:
      old = previous_ema(b1, mu, updates)
    normaliser = jax.tree.map(lambda g, m: b2 * m * m + (1.0 - b2) * g * g, updates, old)
    direction = map_like(lambda g, m, v: m / (jnp.sqrt(v) + eps), updates, mu, normaliser)
    return direction, AdamSState(mu=store.write(mu, updates, state.mu, signed=True))

  return optax.GradientTransformation(init_fn, update_fn)
