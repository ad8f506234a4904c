"""Moment estimates: heavy-ball momentum, Adam's two moments, RMSprop and AdaGrad.

Each transform turns raw gradients into a step *direction*; the learning rate and the sign are
applied later in the chain (`optax.scale_by_learning_rate`), so every transform here composes
with any schedule, weight decay or clipping.

References checked against (see tests/transforms/test_moments.py):
  - `scale_by_momentum`: torch.optim.SGD (dampening=0), optax.trace.
  - `scale_by_adam`: torch.optim.Adam / AdamW, optax.scale_by_adam.
  - `scale_by_rms`: torch.optim.RMSprop (eps_in_sqrt=False), optax.rmsprop (eps_in_sqrt=True).
  - `scale_by_adagrad`: torch.optim.Adagrad (eps_in_sqrt=False), optax.adagrad (True).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StateStorage, StorageLike, compute_dtype, resolve
from optimkit.transforms._util import bias_correction, ema, increment, leafwise, map_like
from optimkit.transforms._util import (
    bias_correction as debias,  # scale_by_rms has an argument named bias_correction
)

# ----------------------------------------------------------------------------------------------
# Heavy-ball momentum (SGD).


class MomentumState(NamedTuple):
  """State of `scale_by_momentum`: the velocity buffer, shaped like the params."""

  velocity: Any


def scale_by_momentum(momentum: float = 0.9, nesterov: bool = False,
                      state_storage: StorageLike = "float32") -> optax.GradientTransformation:
  """Heavy-ball momentum as in PyTorch's SGD (Polyak 1964; Sutskever et al. 2013).

      v_t = momentum * v_{t-1} + g_t                      (v_0 = 0, so v_1 = g_1)
      u_t = v_t                   (heavy ball)
      u_t = g_t + momentum * v_t  (Nesterov)

  Args:
    momentum: decay of the velocity, in [0, 1). Default 0.9.
    nesterov: use Nesterov's look-ahead form.
    state_storage: how the velocity is stored (see `optimkit.state`). Default "float32".
  """
  _checks.check_beta("scale_by_momentum", "momentum", momentum)
  store = resolve(state_storage)

  def init_fn(params):
    return MomentumState(velocity=store.init(params, signed=True))

  def update_fn(updates, state, params=None):
    del params
    old = store.read(state.velocity, updates, signed=True)
    velocity = jax.tree.map(lambda g, v: momentum * v + g, updates, old)
    if nesterov:
      direction = map_like(lambda g, v: g + momentum * v, updates, velocity)
    else:
      direction = map_like(lambda g, v: v, updates, velocity)
    return direction, MomentumState(
        velocity=store.write(velocity, updates, state.velocity, signed=True))

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# Exponential moving average (Adafactor's optional momentum).


class EmaState(NamedTuple):
  """State of `scale_by_ema`: the average, shaped like the params."""

  ema: Any


def scale_by_ema(decay: float = 0.9, state_storage: StorageLike = "float32"
                 ) -> optax.GradientTransformation:
  """e <- decay e + (1 - decay) u, output e (no debiasing), as optax.ema(debias=False)."""
  _checks.check_beta("scale_by_ema", "decay", decay)
  store = resolve(state_storage)

  def init_fn(params):
    return EmaState(ema=store.init(params, signed=True))

  def update_fn(updates, state, params=None):
    del params
    average = ema(decay, updates, store.read(state.ema, updates, signed=True))
    return (map_like(lambda g, e: e, updates, average),
            EmaState(ema=store.write(average, updates, state.ema, signed=True)))

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# Adam's first and second moments.


class AdamState(NamedTuple):
  """State of `scale_by_adam`: step count, first moment `mu`, second moment `nu`."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  nu: Any


def init_adam_state(store: StateStorage, params: Any, keep_mu: bool = True) -> AdamState:
  """Zero Adam moments in `store` (no first moment when `keep_mu` is False)."""
  return AdamState(count=jnp.zeros([], jnp.int32),
                   mu=store.init(params, signed=True) if keep_mu else None,
                   nu=store.init(params, signed=False))


def next_adam_moments(store: StateStorage, updates: Any, state: AdamState, b1: Any, b2: Any,
                      keep_mu: bool = True, store_mu: StateStorage | None = None
                      ) -> tuple[Any, Any, jax.Array]:
  """(m_t, v_t, t): the EMAs of g and g^2 after this step, in the compute dtype, and the new
  count. Without a first moment, m_t is the gradient itself. Shared by Adam, RAdam and
  StableAdamW, which differ only in how they turn the moments into a direction."""
  store_mu = store if store_mu is None else store_mu
  mu = ema(b1, updates, store_mu.read(state.mu, updates, signed=True)) if keep_mu else updates
  nu = ema(b2, jax.tree.map(lambda g: g * g, updates),
           store.read(state.nu, updates, signed=False))
  return mu, nu, increment(state.count)


def store_adam_state(store: StateStorage, updates: Any, state: AdamState, mu: Any, nu: Any,
                     count: jax.Array, keep_mu: bool = True,
                     store_mu: StateStorage | None = None) -> AdamState:
  """The new AdamState with m_t and v_t written back in `store`'s format (m_t in `store_mu`'s
  when given)."""
  store_mu = store if store_mu is None else store_mu
  return AdamState(count=count,
                   mu=store_mu.write(mu, updates, state.mu, signed=True) if keep_mu else None,
                   nu=store.write(nu, updates, state.nu, signed=False))


def adam_direction(updates: Any, mu: Any, nu: Any, count: jax.Array, b1: Any, b2: Any,
                   eps: Any, eps_root: Any) -> Any:
  """m_hat / (sqrt(v_hat + eps_root) + eps) from the moments after step `count`."""
  correction1 = bias_correction(b1, count)
  correction2 = bias_correction(b2, count)
  return jax.tree.map(leafwise(
      lambda g, m, v: adam_ratio(g, m, v, correction1, correction2, eps, eps_root)),
      updates, mu, nu)


def adam_ratio(g: jax.Array, m: jax.Array, v: jax.Array, correction1: Any, correction2: Any,
               eps: Any, eps_root: Any) -> jax.Array:
  """One leaf's m_hat / (sqrt(v_hat + eps_root) + eps), given the bias corrections 1 - b^t,
  in the gradient's dtype."""
  return ((m / correction1) / (jnp.sqrt(v / correction2 + eps_root) + eps)).astype(g.dtype)


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    nesterov: bool = False,
    state_storage: StorageLike = "float32",
    mu_storage: StorageLike | None = None,
) -> optax.GradientTransformation:
  """Adam's bias-corrected moment ratio (Kingma & Ba 2015, Algorithm 1).

      m_t = b1 m_{t-1} + (1 - b1) g_t
      v_t = b2 v_{t-1} + (1 - b2) g_t^2
      u_t = m_hat / (sqrt(v_hat + eps_root) + eps),
      m_hat = m_t / (1 - b1^t),  v_hat = v_t / (1 - b2^t)

  Nesterov (Dozat 2016, as optax's `nesterov=True`): the first moment in the ratio is replaced by
  m_hat = b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t).

  With b1 = 0 the first moment is the gradient itself (used by schedule-free AdamW); given as a
  plain 0 at construction, no first-moment buffer is allocated (`mu` is None).

  Args:
    b1: first-moment decay, [0, 1). Default 0.9.
    b2: second-moment decay, [0, 1). Default 0.999.
    eps: added to the denominator outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0.
    nesterov: use the Nesterov form of the first moment. Default False.
    state_storage: how mu and nu are stored (see `optimkit.state`). Default "float32".
    mu_storage: how mu is stored, when it differs from nu (optax's `mu_dtype`). Default: as
      `state_storage`.
  """
  owner = "scale_by_adam"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_non_negative(owner, "eps_root", eps_root)

  # b1 = 0 given as a plain number (schedule-free AdamW) needs no first-moment buffer.
  keep_mu = not _is_zero(b1)
  store = resolve(state_storage)
  store_mu = store if mu_storage is None else resolve(mu_storage)

  def init_fn(params):
    return init_adam_state(store, params, keep_mu)._replace(
        mu=store_mu.init(params, signed=True) if keep_mu else None)

  def update_fn(updates, state, params=None):
    del params
    mu, nu, count = next_adam_moments(store, updates, state, b1, b2, keep_mu, store_mu)
    if nesterov:
      # optax's form: the next step's bias correction on m_t plus this step's on g_t.
      correction1 = bias_correction(b1, count)
      next_correction1 = bias_correction(b1, increment(count))
      correction2 = bias_correction(b2, count)
      direction = map_like(
          lambda g, m, v: (b1 * m / next_correction1 + (1.0 - b1) * g / correction1)
          / (jnp.sqrt(v / correction2 + eps_root) + eps), updates, mu, nu)
    else:
      direction = adam_direction(updates, mu, nu, count, b1, b2, eps, eps_root)
    return direction, store_adam_state(store, updates, state, mu, nu, count, keep_mu, store_mu)

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# RMSprop.


class RMSPropState(NamedTuple):
  """State of `scale_by_rms`: EMA of g^2 (`nu`), of g when centered (`mu`), momentum buffer,
  and the step count (for `bias_correction`)."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  nu: Any
  mu: Any
  velocity: Any


def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float = 0.0,
    nesterov: bool = False,
    bias_correction: bool = False,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """RMSprop (Hinton 2012; Graves 2013 for the centered form), with optional momentum.

      nu_t = decay nu_{t-1} + (1 - decay) g^2             (nu_0 = initial_scale)
      mu_t = decay mu_{t-1} + (1 - decay) g               (centered only)
      s_t  = nu_t - mu_t^2  (centered)  or  nu_t
      d_t  = g / sqrt(s_t + eps)  (eps_in_sqrt, optax)  or  g / (sqrt(s_t) + eps)  (PyTorch)
      with momentum: b_t = momentum b_{t-1} + d_t and the direction is b_t (or d_t + momentum b_t
      with Nesterov).
      bias_correction (optax's option): nu_t / (1 - decay^t) in place of nu_t in d_t.

  The momentum buffer accumulates the normalised gradient *before* the learning rate, as
  PyTorch's RMSprop does; optax multiplies by the learning rate first. The two agree for a
  constant learning rate and differ under a schedule, where PyTorch's form is the published one.

  Args:
    decay: EMA decay of the squared gradient, [0, 1). Default 0.9 (optax; PyTorch uses 0.99).
    eps: stabiliser, >= 0. Default 1e-8.
    initial_scale: initial value of nu, >= 0. Default 0.
    eps_in_sqrt: where eps goes (True: optax's default; False: PyTorch's).
    centered: divide by the variance instead of the raw second moment.
    momentum: momentum on the normalised gradient, [0, 1). Default 0 (off).
    nesterov: Nesterov form of that momentum.
    bias_correction: debias nu as Adam does (optax's `bias_correction`). Default False.
    state_storage: how the buffers are stored (see `optimkit.state`). Default "float32".
  """
  owner = "scale_by_rms"
  _checks.check_beta(owner, "decay", decay)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_non_negative(owner, "initial_scale", initial_scale)
  _checks.check_beta(owner, "momentum", momentum)

  store = resolve(state_storage)
  use_momentum = momentum is not None and not _is_zero(momentum)

  def init_fn(params):
    initial = jax.tree.map(lambda p: jnp.full(p.shape, initial_scale, compute_dtype(p)), params)
    return RMSPropState(
        count=jnp.zeros([], jnp.int32),
        nu=store.write(initial, params, store.init(params, signed=False), signed=False),
        mu=store.init(params, signed=True) if centered else None,
        velocity=store.init(params, signed=True) if use_momentum else None,
    )

  def update_fn(updates, state, params=None):
    del params
    nu = ema(decay, jax.tree.map(lambda g: g * g, updates),
             store.read(state.nu, updates, signed=False))
    mu = ema(decay, updates, store.read(state.mu, updates, signed=True)) if centered else None
    count = increment(state.count)
    # Debiased as optax does: each EMA divided by 1 - decay^t before the variance is formed.
    correction = debias(decay, count) if bias_correction else 1.0
    if centered:
      # nu - mu^2 >= 0 in exact arithmetic; rounding makes it slightly negative when the
      # gradient has been constant (at the first debiased step always), and sqrt would be NaN.
      second = jax.tree.map(
          lambda v, m: jnp.maximum(v / correction - (m / correction) ** 2, 0.0), nu, mu)
    else:
      second = jax.tree.map(lambda v: v / correction, nu) if bias_correction else nu
    if eps_in_sqrt:
      normalised = jax.tree.map(lambda g, s: g * jax.lax.rsqrt(s + eps), updates, second)
    else:
      normalised = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps), updates, second)
    velocity = None
    if use_momentum:
      velocity = jax.tree.map(lambda d, b: momentum * b + d, normalised,
                              store.read(state.velocity, updates, signed=True))
      if nesterov:
        normalised = jax.tree.map(lambda d, b: d + momentum * b, normalised, velocity)
      else:
        normalised = velocity
    return map_like(lambda g, d: d, updates, normalised), RMSPropState(
        count=count,
        nu=store.write(nu, updates, state.nu, signed=False),
        mu=store.write(mu, updates, state.mu, signed=True) if centered else None,
        velocity=store.write(velocity, updates, state.velocity, signed=True)
        if use_momentum else None)

  return optax.GradientTransformation(init_fn, update_fn)


def _is_zero(value: Any) -> bool:
  """A literal Python zero. Arrays never count, even concrete ones: a hyperparameter injected as
  data is concrete in an eager `init` but traced under `jit`, and the state's structure must not
  depend on which (the property tests caught this)."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


# ----------------------------------------------------------------------------------------------
# AdaGrad.


class AdaGradState(NamedTuple):
  """State of `scale_by_adagrad`: the running sum of squared gradients."""

  sum_of_squares: Any


def scale_by_adagrad(
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    eps_in_sqrt: bool = True,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """AdaGrad (Duchi, Hazan & Singer 2011).

      s_t = s_{t-1} + g_t^2                               (s_0 = initial_accumulator_value)
      d_t = g_t / sqrt(s_t + eps)   (eps_in_sqrt, optax; 0 where s_t + eps = 0)
      d_t = g_t / (sqrt(s_t) + eps) (PyTorch)

  Defaults follow optax (initial 0.1, eps 1e-7, eps inside the root) so that switching imports
  keeps behaviour; `initial_accumulator_value=0, eps=1e-10, eps_in_sqrt=False` is PyTorch's.
  """
  owner = "scale_by_adagrad"
  _checks.check_non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
  _checks.check_non_negative(owner, "eps", eps)

  store = resolve(state_storage)

  def init_fn(params):
    initial = jax.tree.map(
        lambda p: jnp.full(p.shape, initial_accumulator_value, compute_dtype(p)), params)
    return AdaGradState(sum_of_squares=store.write(
        initial, params, store.init(params, signed=False), signed=False))

  def update_fn(updates, state, params=None):
    del params
    sums = jax.tree.map(lambda g, s: s + g * g, updates,
                        store.read(state.sum_of_squares, updates, signed=False))
    if eps_in_sqrt:
      direction = map_like(
          lambda g, s: jnp.where(s + eps > 0, g * jax.lax.rsqrt(s + eps), 0.0), updates, sums)
    else:
      direction = map_like(lambda g, s: g / (jnp.sqrt(s) + eps), updates, sums)
    return direction, AdaGradState(
        sum_of_squares=store.write(sums, updates, state.sum_of_squares, signed=False))

  return optax.GradientTransformation(init_fn, update_fn)
