"""AdEMAMix: Adam with a second, slow momentum added to the fast one (Pagliardini, Ablin &
Grangier 2024, "The AdEMAMix Optimizer: Better, Faster, Older", arXiv:2409.03137,
Algorithm 1), and Simplified AdEMAMix (Morwani, Vyas, Zhang & Kakade 2025, "Connections
between Schedule-Free Optimizers, AdEMAMix, and Accelerated SGD Variants", arXiv:2502.02431).

AdEMAMix (`scale_by_ademamix`), at step t = 1, 2, ...:

    m1_t = b1 m1_{t-1} + (1 - b1) g_t                   (fast EMA, bias-corrected)
    m2_t = b3_t m2_{t-1} + (1 - b3_t) g_t               (slow EMA, *not* bias-corrected: it is
                                                         meant to fill slowly)
    nu_t = b2 nu_{t-1} + (1 - b2) g_t^2
    u_t  = (m1_t / (1 - b1^t) + alpha_t m2_t) / (sqrt(nu_t / (1 - b2^t) + eps_root) + eps)

The paper warms alpha and b3 up over T_alpha and T_b3 steps, because a slow EMA with a large
weight destabilises the start of training:

    alpha_t = min(t alpha / T_alpha, alpha)
    b3_t    = min(exp(ln(b1) ln(b3) / ((1 - t/T_b3) ln(b3) + (t/T_b3) ln(b1))), b3)

b3_t grows from b1 to b3 with the half-life 1/ln(1/b3_t) rising linearly in t. `alpha_warmup`
and `b3_warmup` switch these on (None: off, the default, as in optax). They are evaluated at
the paper's t (1 at the first step) and may be traced arrays. `alpha` and `b3` may instead be
schedules (callables of the step count), evaluated like optax's at the count of previous
updates (0 at the first step); a warmup on top of a schedule warms up to the schedule's value.

Simplified AdEMAMix (`scale_by_simplified_ademamix`) keeps one momentum, accumulated as a sum
("theory style") rather than an EMA, and adds the current gradient with weight alpha:

    b1_t = b1, or warmed up from `min_b1` to b1 over `b1_warmup` steps (the authors' code; the
           same half-life rule as b3_t above)
    m_t  = b1_t m_{t-1} + g_t
    nu_t = b2 nu_{t-1} + (1 - b2) g_t^2
    u_t  = (m_t + alpha_t g_t) / (sqrt(nu_t / (1 - b2^t) + eps_root) + eps)

Defaults: AdEMAMix b1 = 0.9, b2 = 0.999, b3 = 0.9999, alpha = 5, eps = 1e-8 (paper;
pytorch-optimizer; optax's `ademamix`); simplified b1 = 0.99, b2 = 0.95, alpha = 0 (the
authors' code and optax).

Checked against (tests/transforms/test_ademamix.py): pytorch-optimizer 4.1.0 `AdEMAMix` (with
and without its `t_alpha_beta3` warmup, which is `alpha_warmup = b3_warmup`), optax's
`ademamix` and `simplified_ademamix`, and a NumPy transcription of the authors' Simplified
AdEMAMix code (DepenM/Simplified-AdEMAMix) with its b1 warmup.

Where this module differs:
  - from optax: `scale_by_ademamix`'s default alpha is 5 (optax's primitive says 6 while its
    optimizer says 5); one step counter instead of optax's two equal ones; the warmups are
    built in (optax leaves them to user schedules); moments stored through `state_storage`.
  - from the references: pytorch-optimizer's `AdEMAMix` follows the paper. The authors' AdEMAMix
    code (apple/ml-ademamix) computes the b3 warmup in half-life form with logs of (b + 1e-8),
    which moves b3_t by ~1e-8; the paper's closed form is used here. pytorch-optimizer's
    `SimplifiedAdEMAMix` is *not* the authors' algorithm: it keeps m as an EMA
    (b1 m + (1 - b1) g), and after dividing by sqrt(nu) + eps sqrt(1 - b2^t) it divides by
    sqrt(1 - b2^t) where the authors multiply by it, so its step is larger by 1/(1 - b2^t)
    (20x at the first step for b2 = 0.95); it is not used as a reference.

Example:
    >>> import optax
    >>> from optimkit.transforms.ademamix import scale_by_ademamix
    >>> tx = optax.chain(scale_by_ademamix(alpha=8.0, alpha_warmup=10_000, b3_warmup=10_000),
    ...                  optax.scale_by_learning_rate(1e-3))
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import bias_correction, ema, increment, map_like

ScalarOrSchedule = Union[float, jax.Array, Callable[[jax.Array], jax.Array]]


def linear_warmup(step: jax.Array, end: Any, warmup: Any) -> jax.Array:
  """end * step / warmup until `warmup`, then `end` (AdEMAMix's alpha_t)."""
  step = jnp.asarray(step, jnp.result_type(float))
  return jnp.where(step < warmup, step * end / warmup, end)


def half_life_warmup(step: jax.Array, start: Any, end: Any, warmup: Any) -> jax.Array:
  """A decay rate going from `start` to `end` over `warmup` steps with its half-life rising
  linearly (AdEMAMix's b3_t, Simplified AdEMAMix's b1_t); `end` from `warmup` on.

      b(step) = exp(ln(start) ln(end) / ((1 - a) ln(end) + a ln(start))),  a = step / warmup

  `start` = 0 is read as the smallest positive float (a zero decay has no logarithm).
  """
  dtype = jnp.result_type(float)
  step = jnp.asarray(step, dtype)
  fraction = step / warmup
  log_start = jnp.log(jnp.maximum(jnp.asarray(start, dtype), jnp.finfo(dtype).tiny))
  log_end = jnp.log(jnp.asarray(end, dtype))
  warming = jnp.exp(log_start * log_end / ((1.0 - fraction) * log_end + fraction * log_start))
  return jnp.where(step < warmup, warming, end)


def _value(hyperparameter: Any, count: jax.Array) -> Any:
  return hyperparameter(count) if callable(hyperparameter) else hyperparameter


def _check_warmup(owner: str, name: str, warmup: Any) -> None:
  if warmup is not None:
    _checks.check_range(owner, name, warmup, 0.0, low_inclusive=False)


# ----------------------------------------------------------------------------------------------
# AdEMAMix.


class AdEMAMixState(NamedTuple):
  """State of `scale_by_ademamix`: updates so far, fast EMA `m1`, slow EMA `m2`, second moment
  `nu` (each shaped like the params)."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  m1: Any
  m2: Any
  nu: Any


def scale_by_ademamix(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    alpha_warmup: float | None = None,
    b3_warmup: float | None = None,
    state_storage: StorageLike = "float32",
    mu_storage: StorageLike | None = None,
) -> optax.GradientTransformation:
  """AdEMAMix's direction (m1_hat + alpha_t m2) / (sqrt(nu_hat + eps_root) + eps).

  Args:
    b1: decay of the fast EMA, [0, 1). Default 0.9.
    b2: decay of the second moment, [0, 1). Default 0.999.
    b3: decay of the slow EMA, [0, 1), or a schedule of the step count. Default 0.9999.
    alpha: weight of the slow EMA, >= 0, or a schedule of the step count. Default 5.
    eps: added to the denominator outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0.
    alpha_warmup: T_alpha, steps over which alpha rises linearly from 0, > 0; None (default):
      no warmup.
    b3_warmup: T_b3, steps over which b3 rises from b1 (half-life linear), > 0; None
      (default): no warmup. The paper sets both to the length of the run.
    state_storage: how m1, m2 and nu are stored (see `optimkit.state`). Default "float32".
    mu_storage: how the two first moments m1 and m2 are stored, when it differs from nu
      (optax's `mu_dtype`, which optax also applies to nu). Default: as `state_storage`.
  """
  owner = "scale_by_ademamix"
  for name, value in (("b1", b1), ("b2", b2), ("b3", b3)):
    _checks.check_beta(owner, name, value)
  _checks.check_non_negative(owner, "alpha", alpha)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_non_negative(owner, "eps_root", eps_root)
  _check_warmup(owner, "alpha_warmup", alpha_warmup)
  _check_warmup(owner, "b3_warmup", b3_warmup)
  store = resolve(state_storage)
  store_mu = store if mu_storage is None else resolve(mu_storage)

  def init_fn(params):
    return AdEMAMixState(count=jnp.zeros([], jnp.int32), m1=store_mu.init(params, signed=True),
                         m2=store_mu.init(params, signed=True),
                         nu=store.init(params, signed=False))

  def update_fn(updates, state, params=None):
    del params
    count = increment(state.count)
    alpha_t, b3_t = _value(alpha, state.count), _value(b3, state.count)
    if alpha_warmup is not None:
      alpha_t = linear_warmup(count, alpha_t, alpha_warmup)
    if b3_warmup is not None:
      b3_t = half_life_warmup(count, b1, b3_t, b3_warmup)
    m1 = ema(b1, updates, store_mu.read(state.m1, updates, signed=True))
    m2 = ema(b3_t, updates, store_mu.read(state.m2, updates, signed=True))
    nu = ema(b2, jax.tree.map(jnp.square, updates), store.read(state.nu, updates, signed=False))
    correction1 = bias_correction(b1, count)
    correction2 = bias_correction(b2, count)
    direction = map_like(
        lambda g, fast, slow, v: (fast / correction1 + alpha_t * slow)
        / (jnp.sqrt(v / correction2 + eps_root) + eps),
        updates, m1, m2, nu)
    return direction, AdEMAMixState(
        count=count, m1=store_mu.write(m1, updates, state.m1, signed=True),
        m2=store_mu.write(m2, updates, state.m2, signed=True),
        nu=store.write(nu, updates, state.nu, signed=False))

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# Simplified AdEMAMix.


class SimplifiedAdEMAMixState(NamedTuple):
  """State of `scale_by_simplified_ademamix`: updates so far, the momentum sum `mu` and the
  second moment `nu` (shaped like the params)."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  nu: Any


def scale_by_simplified_ademamix(
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    b1_warmup: float | None = None,
    min_b1: float = 0.9,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Simplified AdEMAMix's direction (m_t + alpha_t g_t) / (sqrt(nu_hat + eps_root) + eps),
  m_t = b1_t m_{t-1} + g_t.

  Args:
    b1: decay of the momentum sum, [0, 1). Default 0.99. The momentum is a sum, not an
      average: its scale grows to 1/(1 - b1), so the learning rate should shrink accordingly
      (the authors suggest lr_Adam * sqrt((1 - min_b1)(1 - b1))).
    b2: decay of the second moment, [0, 1). Default 0.95.
    alpha: weight of the current gradient, >= 0, or a schedule of the step count. Default 0.
    eps: added to the denominator outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0.
    b1_warmup: steps over which b1 rises from `min_b1` (half-life linear, evaluated at t = 1
      at the first step), > 0; None (default): no warmup. The authors set it to the run length.
    min_b1: the starting b1 of the warmup, [0, 1). Default 0.9 (the authors').
    state_storage: how mu and nu are stored (see `optimkit.state`). Default "float32".
  """
  owner = "scale_by_simplified_ademamix"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_beta(owner, "min_b1", min_b1)
  _checks.check_non_negative(owner, "alpha", alpha)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_non_negative(owner, "eps_root", eps_root)
  _check_warmup(owner, "b1_warmup", b1_warmup)
  store = resolve(state_storage)

  def init_fn(params):
    return SimplifiedAdEMAMixState(count=jnp.zeros([], jnp.int32),
                                   mu=store.init(params, signed=True),
                                   nu=store.init(params, signed=False))

  def update_fn(updates, state, params=None):
    del params
    count = increment(state.count)
    alpha_t = _value(alpha, state.count)
    b1_t = b1 if b1_warmup is None else half_life_warmup(count, min_b1, b1, b1_warmup)
    mu = jax.tree.map(lambda g, m: b1_t * m + g, updates,
                      store.read(state.mu, updates, signed=True))
    nu = ema(b2, jax.tree.map(jnp.square, updates), store.read(state.nu, updates, signed=False))
    correction2 = bias_correction(b2, count)
    direction = map_like(
        lambda g, m, v: (m + alpha_t * g) / (jnp.sqrt(v / correction2 + eps_root) + eps),
        updates, mu, nu)
    return direction, SimplifiedAdEMAMixState(
        count=count, mu=store.write(mu, updates, state.mu, signed=True),
        nu=store.write(nu, updates, state.nu, signed=False))

  return optax.GradientTransformation(init_fn, update_fn)
