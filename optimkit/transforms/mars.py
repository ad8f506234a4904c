"""MARS: variance-reduced momentum for adaptive optimizers (Yuan, Liu, Wu, Zhou & Gu 2024,
"MARS: Unleashing the Power of Variance Reduction for Training Large Models",
arXiv:2411.10438: MARS-AdamW and MARS-Lion in the approximate form the authors train with).

MARS feeds the optimizer a gradient corrected by a scaled gradient difference (a STORM-like
variance reduction), clipped to unit norm per leaf:

    c_t  = g_t + gamma_t (b1 / (1 - b1)) (g_t - g_{t-1})        (g_0 = 0)
    c~_t = c_t / max(1, ||c_t||_2)                               (per leaf)
    m_t  = b1 m_{t-1} + (1 - b1) c~_t

then one of two flavours of direction:

    "adamw":  v_t = b2 v_{t-1} + (1 - b2) c~_t^2
              u_t = (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)
    "lion":   u_t = sign(m_t)

"Approximate" (MARS-approx, the default of both references) means g_{t-1} is the previous
step's gradient, taken at the previous parameters on the previous batch; exact MARS needs the
previous parameters' gradient on the *current* batch, a second backward pass, and is not
provided. The first step has no previous gradient and uses zero, as both references do, so
c_1 = (1 + gamma b1 / (1 - b1)) g_1 before the clipping.

The authors apply MARS to matrices only and train the other leaves with plain AdamW at their
own betas, learning rate and weight decay; `optimkit.mars` does that routing (this transform
applies MARS to every leaf it is given).

Defaults: b1 = 0.95, b2 = 0.99, gamma = 0.025, eps = 1e-8 (the authors' and pytorch-optimizer's).

Checked against pytorch-optimizer 4.1.0 `MARS` (both flavours) and a NumPy transcription of the
paper's Algorithm 2 / the authors' code (AGI-Arena/MARS), tests/transforms/test_mars.py.
optax has no MARS. Where this differs from pytorch-optimizer: its AdamW flavour adds eps
before dividing by sqrt(1 - b2^t), i.e. uses eps / sqrt(1 - b2^t) (10x eps at the first step
for b2 = 0.99) and a hidden 1e-15 inside the root; the paper and the authors' code add eps to
the bias-corrected root, as here. On the parity problem (120 steps, gradients of order one)
the two trajectories differ by 4e-7 relative, and by 2e-10 with eps = 0.

Example:
    >>> import optax
    >>> from optimkit.transforms.mars import scale_by_mars
    >>> tx = optax.chain(scale_by_mars(), optax.scale_by_learning_rate(3e-3))
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import bias_correction, ema, increment, map_like, written_after

ScalarOrSchedule = Union[float, jax.Array, Callable[[jax.Array], jax.Array]]
MARS_TYPES = ("adamw", "lion")


class MarsState(NamedTuple):
  """State of `scale_by_mars`: updates so far, momentum `mu`, second moment `nu` (None for
  the Lion flavour) and the previous gradient, each shaped like the params."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  nu: Any
  previous_grad: Any


def scale_by_mars(
    b1: float = 0.95,
    b2: float = 0.99,
    gamma: ScalarOrSchedule = 0.025,
    eps: float = 1e-8,
    *,
    mars_type: str = "adamw",
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """MARS-approx's direction from the variance-reduced, norm-clipped gradient c~_t.

  Args:
    b1: decay of the momentum, [0, 1); also sets the correction's weight b1 / (1 - b1).
      Default 0.95.
    b2: decay of the second moment ("adamw" flavour), [0, 1). Default 0.99.
    gamma: strength of the gradient correction, >= 0 (0 gives AdamW / sign momentum on the
      norm-clipped gradient), or a schedule of the step count. Default 0.025.
    eps: added to the bias-corrected root ("adamw" flavour), >= 0. Default 1e-8.
    mars_type: "adamw" (adaptive) or "lion" (sign of the momentum).
    state_storage: how mu, nu and the previous gradient are stored. Default "float32".
  """
  owner = "scale_by_mars"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_non_negative(owner, "gamma", gamma)
  _checks.check_non_negative(owner, "eps", eps)
  if mars_type not in MARS_TYPES:
    raise ValueError(f"{owner}: mars_type must be one of {MARS_TYPES}, got {mars_type!r}")
  adaptive = mars_type == "adamw"
  store = resolve(state_storage)

  def init_fn(params):
    return MarsState(count=jnp.zeros([], jnp.int32), mu=store.init(params, signed=True),
                     nu=store.init(params, signed=False) if adaptive else None,
                     previous_grad=store.init(params, signed=True))

  def update_fn(updates, state, params=None):
    del params
    gamma_t = gamma(state.count) if callable(gamma) else gamma
    weight = gamma_t * b1 / (1.0 - b1)

    def corrected(g, previous):
      g = g.astype(previous.dtype)
      c = g + weight * (g - previous)
      return c / jnp.maximum(1.0, jnp.sqrt(jnp.sum(jnp.square(c))))

    clipped = jax.tree.map(corrected, updates,
                           store.read(state.previous_grad, updates, signed=True))
    mu = ema(b1, clipped, store.read(state.mu, updates, signed=True))
    count = increment(state.count)
    nu = None
    if adaptive:
      nu = ema(b2, jax.tree.map(jnp.square, clipped),
               store.read(state.nu, updates, signed=False))
      correction1 = bias_correction(b1, count)
      correction2 = bias_correction(b2, count)
      direction = map_like(
          lambda g, m, v: (m / correction1) / (jnp.sqrt(v / correction2) + eps), updates, mu, nu)
    else:
      direction = map_like(lambda g, m: jnp.sign(m), updates, mu)
    stored_mu = store.write(mu, updates, state.mu, signed=True)
    stored_nu = store.write(nu, updates, state.nu, signed=False) if adaptive else None
    # The gradient replaces the previous one only after the moment updates that read the old one
    # (and the norm they divide by) have run; otherwise XLA copies the old buffer every step.
    previous_grad = written_after(updates, stored_mu, *([stored_nu] if adaptive else []))
    return direction, MarsState(
        count=count, mu=stored_mu, nu=stored_nu,
        previous_grad=store.write(previous_grad, updates, state.previous_grad, signed=True))

  return optax.GradientTransformation(init_fn, update_fn)
