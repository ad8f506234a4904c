"""Adadelta: a per-coordinate step whose units come from the past steps themselves (Zeiler 2012,
"ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, Algorithm 1).

AdaGrad's step size falls forever; RMSprop's needs a learning rate in the units of the
parameters. Adadelta divides the RMS of the recent steps by the RMS of the recent gradients, so
the step has the units of the parameters and needs no learning rate (1.0 in the paper):

    E[g^2]_t  = rho E[g^2]_{t-1} + (1 - rho) g_t^2
    d_t       = sqrt(E[dx^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) * g_t
    E[dx^2]_t = rho E[dx^2]_{t-1} + (1 - rho) d_t^2

and the parameters move by -learning_rate * d_t. The step is accumulated before the learning
rate, as in torch.optim.Adadelta and optax.scale_by_adadelta (the paper has no learning rate);
with eps = 1e-6 the first steps are about sqrt(eps) = 1e-3 per coordinate and grow from there.
Defaults rho = 0.9 and eps = 1e-6 are torch's and optax's (the paper used rho = 0.95).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import ema, leafwise, map_like


class AdadeltaState(NamedTuple):
  """State of `scale_by_adadelta`: the EMAs of the squared gradients `e_g` and of the squared
  steps `e_x`, shaped like the params."""

  e_g: Any
  e_x: Any


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6, *,
                      state_storage: StorageLike = "float32") -> optax.GradientTransformation:
  """Adadelta's step sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g.

  Args:
    rho: decay of both averages, [0, 1]. Default 0.9 (the paper used 0.95).
    eps: added inside both roots, >= 0; also sets the size of the first steps. Default 1e-6.
    state_storage: how e_g and e_x are stored (see `optimkit.state`). Default "float32".

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optimkit.transforms import scale_by_adadelta
    >>> tx = optax.chain(scale_by_adadelta(), optax.scale_by_learning_rate(1.0))
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

  References:
    Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012.
    torch.optim.Adadelta; optax.scale_by_adadelta.
  """
  owner = "scale_by_adadelta"
  _checks.check_range(owner, "rho", rho, 0.0, 1.0)
  _checks.check_non_negative(owner, "eps", eps)
  store = resolve(state_storage)

  def init_fn(params):
    return AdadeltaState(e_g=store.init(params, signed=False), e_x=store.init(params, signed=False))

  def update_fn(updates, state, params=None):
    del params
    e_g = ema(rho, jax.tree.map(lambda g: g * g, updates),
              store.read(state.e_g, updates, signed=False))
    e_x = store.read(state.e_x, updates, signed=False)
    # E[dx^2]_t = rho E[dx^2]_{t-1} + (1 - rho) (E[dx^2]_{t-1} + eps) g^2 / (E[g^2]_t + eps),
    # i.e. d_t^2 written without its root.
    e_x = jax.tree.map(leafwise(lambda g, eg, ex: rho * ex + (1.0 - rho) * (ex + eps) * (g * g)
                                / (eg + eps)), updates, e_g, e_x)
    # d_t from the new E[dx^2] (exact algebra: E[dx^2]_{t-1} + eps = (E[dx^2]_t + rho eps) /
    # (rho + (1 - rho) g^2 / (E[g^2]_t + eps)), a sum of non-negative terms, no cancellation).
    # Read from the old one, the update and the accumulator write are two readers of the old
    # buffer and XLA copies it every step; the roots of the direct form were written out as
    # temporaries. A zero denominator (rho = 0 and g = 0) is a zero step, where the direct
    # form gives 0/0.
    def step_of(g, eg, ex):
      denominator = rho * (eg + eps) + (1.0 - rho) * (g * g)
      safe = jnp.where(denominator > 0, denominator, 1.0)
      return jnp.where(denominator > 0, jnp.sqrt((ex + rho * eps) / safe) * g, 0.0)
    step = jax.tree.map(leafwise(step_of), updates, e_g, e_x)
    return map_like(lambda g, d: d, updates, step), AdadeltaState(
        e_g=store.write(e_g, updates, state.e_g, signed=False),
        e_x=store.write(e_x, updates, state.e_x, signed=False))

  return optax.GradientTransformation(init_fn, update_fn)
