"""NAdam: Adam with Nesterov momentum (Dozat 2016, "Incorporating Nesterov Momentum into Adam",
ICLR 2016 workshop), with the momentum schedule that torch.optim.NAdam and Keras's Nadam keep.

The step looks one momentum step ahead: the first moment enters with the next step's momentum
coefficient, the current gradient with the current one, each debiased by the running product of
the coefficients:

    mu_t  = b1 (1 - 0.5 * 0.96^(t * momentum_decay))   (momentum schedule; mu_t = b1 without it)
    P_t   = mu_1 mu_2 ... mu_t                          (P_0 = 1, kept in the state)
    m_t   = b1 m_{t-1} + (1 - b1) g_t
    v_t   = b2 v_{t-1} + (1 - b2) g_t^2
    u_t   = [mu_{t+1} m_t / (1 - P_t mu_{t+1}) + (1 - mu_t) g_t / (1 - P_t)]
            / (sqrt(v_t / (1 - b2^t) + eps_root) + eps)

With the schedule (the default, `momentum_schedule=True`) this is torch.optim.NAdam step for
step. Without it mu_t = b1 for every t, P_t = b1^t, and the step is the simplified form of
`optax.nadam` / `optax.nadamw` (`optax.adam(..., nesterov=True)`), which is also the AlgoPerf
NAdamW baseline's:

    u_t = [b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)] / (sqrt(v_hat_t + eps_root) + eps)

The schedule starts the momentum at about b1 / 2 and raises it towards b1 over thousands of
steps (with momentum_decay = 4e-3, mu_t reaches 0.75 b1 after ~4,200 steps and 0.99 b1 after
~24,000), a warm-up of the momentum that the simplified form does not have.

Where the references differ from this module: torch keeps P_t in float32 by default (here it is
kept in the widest float dtype, float64 when x64 is on). optax's source notes that the paper's
Algorithm 2 also multiplies the debiased second moment by b2; neither torch nor optax does, and
neither does this module.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import bias_correction, ema, increment, map_like


class NadamState(NamedTuple):
  """State of `scale_by_nadam`.

    count: number of updates so far (t).
    mu_product: P_t, the product of the momentum coefficients mu_1 ... mu_t (a scalar).
    mu: first moment m_t, shaped like the params.
    nu: second moment v_t, shaped like the params.
  """

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu_product: jax.Array
  mu: Any
  nu: Any


def momentum_coefficient(b1: Any, step: jax.Array, momentum_decay: Any,
                         momentum_schedule: bool) -> jax.Array:
  """mu_step = b1 (1 - 0.5 * 0.96^(step * momentum_decay)), or b1 without the schedule."""
  if not momentum_schedule:
    return jnp.asarray(b1, step.dtype)
  return b1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


def scale_by_nadam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    momentum_decay: float = 4e-3,
    *,
    momentum_schedule: bool = True,
    state_storage: StorageLike = "float32",
    mu_storage: StorageLike | None = None,
) -> optax.GradientTransformation:
  """NAdam's direction: Adam's moments with a Nesterov look-ahead and a momentum schedule.

  Args:
    b1: first-moment decay, and the limit of the momentum schedule, [0, 1). Default 0.9.
    b2: second-moment decay, [0, 1). Default 0.999.
    eps: added to the denominator outside the root, >= 0. Default 1e-8.
    eps_root: added inside the root, >= 0. Default 0 (torch has no such term).
    momentum_decay: psi in mu_t = b1 (1 - 0.5 * 0.96^(t psi)), >= 0. Default 4e-3 (torch's,
      Keras's `schedule_decay`). Unused without the schedule.
    momentum_schedule: True (default): torch.optim.NAdam's scheduled momentum. False: mu_t = b1,
      the simplified form of optax.nadam(w) and the AlgoPerf baseline.
    state_storage: how m and v are stored (see `optimkit.state`). Default "float32".
    mu_storage: how m is stored, when it differs from v (optax's `mu_dtype`). Default: as
      `state_storage`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optimkit.transforms import scale_by_nadam
    >>> tx = optax.chain(scale_by_nadam(), optax.scale_by_learning_rate(2e-3))
    >>> params = {"w": jnp.ones(3)}
    >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)

  References:
    Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop track.
    torch.optim.NAdam; optax.nadam (the simplified form).
  """
  owner = "scale_by_nadam"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_non_negative(owner, "eps_root", eps_root)
  _checks.check_non_negative(owner, "momentum_decay", momentum_decay)
  store = resolve(state_storage)
  store_mu = store if mu_storage is None else resolve(mu_storage)

  def init_fn(params):
    # P_t is a product of hundreds of factors below 1: kept in the widest float dtype on hand.
    return NadamState(count=jnp.zeros([], jnp.int32),
                      mu_product=jnp.ones([], jnp.result_type(float)),
                      mu=store_mu.init(params, signed=True), nu=store.init(params, signed=False))

  def update_fn(updates, state, params=None):
    del params
    mu = ema(b1, updates, store_mu.read(state.mu, updates, signed=True))
    nu = ema(b2, jax.tree.map(lambda g: g * g, updates),
             store.read(state.nu, updates, signed=False))
    count = increment(state.count)
    step = count.astype(state.mu_product.dtype)
    mu_now = momentum_coefficient(b1, step, momentum_decay, momentum_schedule)
    mu_next = momentum_coefficient(b1, step + 1.0, momentum_decay, momentum_schedule)
    product = state.mu_product * mu_now
    moment_weight = mu_next / (1.0 - product * mu_next)
    gradient_weight = (1.0 - mu_now) / (1.0 - product)
    correction2 = bias_correction(b2, count)
    direction = map_like(
        lambda g, m, v: (moment_weight * m + gradient_weight * g)
        / (jnp.sqrt(v / correction2 + eps_root) + eps),
        updates, mu, nu)
    return direction, NadamState(
        count=count, mu_product=product.astype(state.mu_product.dtype),
        mu=store_mu.write(mu, updates, state.mu, signed=True),
        nu=store.write(nu, updates, state.nu, signed=False))

  return optax.GradientTransformation(init_fn, update_fn)
