"""Sign momentum: the update rule of Lion (Chen et al. 2023, "Symbolic Discovery of
Optimization Algorithms", arXiv:2302.06675, Program 1).

    c_t = b1 m_{t-1} + (1 - b1) g_t        (interpolation used for the step)
    u_t = sign(c_t)
    m_t = b2 m_{t-1} + (1 - b2) g_t        (momentum tracked with a slower decay)

Every coordinate moves by exactly the learning rate, so Lion wants a learning rate 3-10x smaller
than AdamW's and a weight decay 3-10x larger (the paper, Section 5). Checked against
`lion-pytorch` (the authors' port) and `optax.lion`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import ema, map_like, previous_ema, uses_previous_ema


class SignMomentumState(NamedTuple):
  """State of `scale_by_sign_momentum`: the momentum `mu`, shaped like the params."""

  mu: Any


def scale_by_sign_momentum(b1: float = 0.9, b2: float = 0.99,
                           state_storage: StorageLike = "float32",
                           one_pass: bool | None = None) -> optax.GradientTransformation:
  """Lion's direction sign(b1 m + (1 - b1) g), with m an EMA of g at rate b2.

  Args:
    b1: interpolation factor for the step, [0, 1). Default 0.9.
    b2: decay of the momentum, [0, 1). Default 0.99.
    state_storage: how the momentum is stored (see `optimkit.state`). Default "float32".
    one_pass: compute the direction from the new momentum, with m_{t-1} recovered as
      (m_t - (1 - b2) g_t) / b2, so that the momentum is updated in place in one pass (XLA
      otherwise copies it every step). None (default): on when b2 is a number >= 0.5; the
      recovery loses precision as b2 nears 0. `lion` decides it from its b2 at construction.
  """
  _checks.check_beta("scale_by_sign_momentum", "b1", b1)
  _checks.check_beta("scale_by_sign_momentum", "b2", b2)

  store = resolve(state_storage)
  recover_previous = uses_previous_ema(b2, one_pass)

  def init_fn(params):
    return SignMomentumState(mu=store.init(params, signed=True))

  def update_fn(updates, state, params=None):
    del params
    old = store.read(state.mu, updates, signed=True)
    mu = ema(b2, updates, old)
    if recover_previous:
      old = previous_ema(b2, mu, updates)
    direction = map_like(lambda g, m: jnp.sign(b1 * m + (1.0 - b1) * g), updates, old)
    return direction, SignMomentumState(mu=store.write(mu, updates, state.mu, signed=True))

  return optax.GradientTransformation(init_fn, update_fn)
