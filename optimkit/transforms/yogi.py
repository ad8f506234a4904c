"""Yogi: Adam with an additive second-moment update that grows or shrinks by at most
(1 - b2) g^2 per step (Zaheer, Reddi, Sachan, Kale & Kumar 2018, "Adaptive Methods for
Nonconvex Optimization", NeurIPS 2018).

Adam's v_t - v_{t-1} = (1 - b2)(g_t^2 - v_{t-1}) can fall quickly when the gradients become
small, so the effective learning rate jumps; Yogi moves v by (1 - b2) g_t^2 in the direction of
g_t^2, which changes v slowly when v is far above g^2:

    m_t = b1 m_{t-1} + (1 - b1) g_t                       (m_0 = initial_accumulator_value)
    v_t = v_{t-1} - (1 - b2) sign(v_{t-1} - g_t^2) g_t^2  (v_0 = initial_accumulator_value)
    u_t = (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t) + eps_root) + eps)

This is optax.scale_by_yogi step for step, and pytorch-optimizer's Yogi; both debias the two
moments as Adam does, and both start the first moment, not only the second, at
initial_accumulator_value (1e-6), a negligible offset kept here so that the trajectories agree.
Defaults are optax's (eps = 1e-3, much larger than Adam's). v_t stays >= 0: it only falls while
v_{t-1} > g_t^2, and then by less than g_t^2.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, compute_dtype, resolve
from optimkit.transforms._util import bias_correction, ema, increment, map_like


class YogiState(NamedTuple):
  """State of `scale_by_yogi`: step count, first moment `mu`, second moment `nu`."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  nu: Any


def scale_by_yogi(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
    *,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Yogi's direction m_hat_t / (sqrt(v_hat_t + eps_root) + eps), v updated additively.

  Args:
    b1: first-moment decay, [0, 1). Default 0.9.
    b2: rate of the additive second-moment update, [0, 1). Default 0.999.
    eps: added to the denominator outside the root, >= 0. Default 1e-3.
    eps_root: added inside the root, >= 0. Default 0.
    initial_accumulator_value: the starting value of both moments, >= 0. Default 1e-6.
    state_storage: how mu and nu are stored (see `optimkit.state`). Default "float32".

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optimkit.transforms import scale_by_yogi
    >>> tx = optax.chain(scale_by_yogi(), optax.scale_by_learning_rate(1e-2))
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

  References:
    Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018.
    optax.scale_by_yogi; pytorch-optimizer's Yogi.
  """
  owner = "scale_by_yogi"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_non_negative(owner, "eps_root", eps_root)
  _checks.check_non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
  store = resolve(state_storage)

  def filled(params):
    # zeros + value, not jnp.full: a new buffer per call (jnp.full of a rank-0 leaf can return
    # the hyperparameter array itself, which optax.inject_hyperparams also keeps in its state,
    # and a donated step would donate it twice).
    return jax.tree.map(lambda p: (jnp.zeros(p.shape, compute_dtype(p))
                                   + initial_accumulator_value).astype(compute_dtype(p)), params)

  def init_fn(params):
    # Each filled tree is also the `like` of its write: unsharded like the zeros the storage
    # makes (the params may be sharded over Explicit mesh axes, which a bfloat16 or quantized
    # write would have to mix with the unsharded fill).
    mu, nu = filled(params), filled(params)
    return YogiState(count=jnp.zeros([], jnp.int32),
                     mu=store.write(mu, mu, store.init(params, signed=True), signed=True),
                     nu=store.write(nu, nu, store.init(params, signed=False), signed=False))

  def update_fn(updates, state, params=None):
    del params
    mu = ema(b1, updates, store.read(state.mu, updates, signed=True))
    nu = jax.tree.map(
        lambda g, v: v - (1.0 - b2) * jnp.sign(v - g * g) * (g * g), updates,
        store.read(state.nu, updates, signed=False))
    count = increment(state.count)
    correction1 = bias_correction(b1, count)
    correction2 = bias_correction(b2, count)
    direction = map_like(
        lambda g, m, v: (m / correction1) / (jnp.sqrt(v / correction2 + eps_root) + eps),
        updates, mu, nu)
    return direction, YogiState(count=count, mu=store.write(mu, updates, state.mu, signed=True),
                                nu=store.write(nu, updates, state.nu, signed=False))

  return optax.GradientTransformation(init_fn, update_fn)
