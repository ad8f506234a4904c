"""Hessian-diagonal clipping: Sophia (Liu, Li, Hall, Liang & Ma 2023, "Sophia: A Scalable
Stochastic Second-order Optimizer for Language Model Pre-training", arXiv:2305.14342,
Algorithm 3), with both of the paper's diagonal-Hessian estimators.

    every `update_interval` steps (t = 0, k, 2k, ...):  h <- b2 h + (1 - b2) h_hat
    m <- b1 m + (1 - b1) g
    u  = clip(m / max(gamma * h, eps), -1, 1)

Estimators h_hat of diag(H):
  - Hutchinson (Sophia-H): u ~ Rademacher, h_hat = u * (H u), with H u a Hessian-vector product
    of `loss_fn(params) -> scalar` passed to `update` as an extra argument.
  - Gauss-Newton-Bartlett (Sophia-G): sample labels y_hat ~ softmax(logits) from
    `logits_fn(params) -> logits[..., vocab]` (an extra argument), take the gradient g_hat of the
    mean cross-entropy against y_hat, and h_hat = B * g_hat^2 with B the number of label positions.

The denominator is the paper's max(gamma * h, eps); the authors' code writes gamma * h + eps
(eps = 1e-15, our default too). For h >= 0, which the Gauss-Newton-Bartlett estimate always is,
the two differ by at most eps in the denominator (far below float64 resolution of the result),
and parity with the authors' code holds; Hutchinson estimates can be negative on non-convex
losses, where gamma * h + eps flips the sign of the step (ascent) while max(gamma * h, eps) gives
a clipped sign step, as the paper intends. The batch factor B is part of h (the authors multiply
by the batch size at step time, the same for a fixed batch size). The authors' nanoGPT script
first refreshes h after k steps; here the first refresh is at step 0 as in the paper's
Algorithm 3, so that the first k steps are not pure sign descent.
Checked against `sophia-opt` (the authors' SophiaG) driven with the same labels.

Randomness: the estimators need a PRNG key. Pass `key=` to `update` (the caller's key, which
must be the same on every device), or construct with `seed=` and the state carries the key,
folded with the step count at each refresh. There is no fixed default key.

The state's `unclipped_fraction` is the share of coordinates where |m| < max(gamma * h, eps), the
tuning signal the authors recommend watching (aim for roughly 0.1 - 0.5 by tuning gamma). It is
measured at each Hessian refresh (every `update_interval` steps) and held in between: counting
on every step costs a full extra pass over the state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import ema, increment, map_like

HessianEstimator = Callable[..., Any]


class SophiaState(NamedTuple):
  """State of `scale_by_sophia`.

    count: updates so far.
    mu: EMA of gradients (m).
    hessian: EMA of diagonal-Hessian estimates (h).
    key: raw PRNG key data (uint32) used when no key is passed to update; zeros without a seed.
    unclipped_fraction: share of coordinates not clipped, measured at the last Hessian refresh.
  """

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  mu: Any
  hessian: Any
  key: jax.Array
  unclipped_fraction: jax.Array


def hutchinson(params: Any, key: jax.Array, *, loss_fn: Callable[[Any], jax.Array],
               **unused) -> Any:
  """Hutchinson's estimate u * (H u) of diag(H) of `loss_fn` at `params`, u ~ Rademacher."""
  del unused
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, max(len(leaves), 1))
  probes = jax.tree.unflatten(treedef, [
      jax.random.rademacher(k, leaf.shape, dtype=leaf.dtype) for k, leaf in zip(keys, leaves)
  ])
  _, hessian_probe = jax.jvp(jax.grad(loss_fn), (params,), (probes,))
  return jax.tree.map(lambda u, hu: u * hu, probes, hessian_probe)


def sample_labels(key: jax.Array, logits: jax.Array) -> jax.Array:
  """Labels drawn from the model's own predictive distribution softmax(logits)."""
  return jax.random.categorical(key, jax.lax.stop_gradient(logits), axis=-1)


def gauss_newton_bartlett(params: Any, key: jax.Array, *,
                          logits_fn: Callable[[Any], jax.Array], **unused) -> Any:
  """Gauss-Newton-Bartlett estimate B * g_hat^2 of diag(H) for a softmax cross-entropy model.

  g_hat is the gradient of mean_i CE(logits_i, y_hat_i) with y_hat sampled from the model, B the
  number of label positions (all leading dims of the logits). One forward and one backward pass.
  """
  del unused
  logits, pullback = jax.vjp(logits_fn, params)
  labels = sample_labels(key, logits)
  positions = logits.size // logits.shape[-1]
  # d mean CE / d logits = (softmax - onehot) / B
  probabilities = jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)))
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=probabilities.dtype)
  cotangent = ((probabilities - onehot) / positions).astype(logits.dtype)
  (sampled_grad,) = pullback(cotangent)
  return jax.tree.map(lambda g: positions * g * g, sampled_grad)


ESTIMATORS: dict[str, Callable[..., Any]] = {"hutchinson": hutchinson, "gnb": gauss_newton_bartlett}
# The extra argument each built-in estimator needs, who needs it, and what it is.
_NEEDS = {
    "gnb": ("logits_fn", "the Gauss-Newton-Bartlett estimator (estimator='gnb', Sophia-G)",
            "a function params -> logits (or use estimator='hutchinson' with loss_fn=)"),
    "hutchinson": ("loss_fn", "the Hutchinson estimator (estimator='hutchinson', Sophia-H)",
                   "a function params -> scalar loss"),
}


def scale_by_sophia(
    b1: float = 0.965,
    b2: float = 0.99,
    gamma: float = 0.04,
    eps: float = 1e-15,
    update_interval: int = 10,
    estimator: Union[str, HessianEstimator] = "gnb",
    seed: int | None = None,
    state_storage: StorageLike = "float32",
    *,
    clip_threshold: float = 1.0,
    mu_storage: StorageLike | None = None,
    print_win_rate_every_n_steps: int = 0,
) -> optax.GradientTransformationExtraArgs:
  """Sophia's clipped, Hessian-preconditioned momentum direction.

      m_t = b1 m_{t-1} + (1 - b1) g_t
      h_t = b2 h_{t-k} + (1 - b2) estimate(w)   every update_interval (k) steps, else h_{t-1}
      d_t = clip(m_t / max(gamma h_t, eps), -clip_threshold, clip_threshold)

  Args:
    b1: momentum decay, [0, 1). Default 0.965.
    b2: decay of the Hessian EMA, [0, 1). Default 0.99.
    gamma: rho of the authors' code, > 0. Default 0.04 (theirs for Sophia-G; the paper uses
      0.01 with Hutchinson).
    eps: floor of the denominator, >= 0. Default 1e-15 (the authors' code).
    update_interval: refresh h every this many steps, integer >= 1. Default 10.
    estimator: "gnb" (needs `logits_fn=` in update), "hutchinson" (needs `loss_fn=`), or a
      callable `(params, key, **extra_args) -> tree of diag-Hessian estimates`.
    seed: seed of the state's PRNG key; if None, pass `key=` to every update.
    state_storage: how m and h are stored (see `optimkit.state`). Default "float32".
    clip_threshold: bound of the clipped ratio, > 0. Default 1 (the authors'; optax's argument).
    mu_storage: how m is stored when it differs from h (optax's `mu_dtype`).
    print_win_rate_every_n_steps: print the unclipped fraction (optax's "win rate", measured at
      each Hessian refresh) every this many steps with `jax.debug.print`; 0: never.
  """
  owner = "scale_by_sophia"
  _checks.check_beta(owner, "b1", b1)
  _checks.check_beta(owner, "b2", b2)
  _checks.check_range(owner, "gamma", gamma, 0.0, low_inclusive=False)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_int_at_least(owner, "update_interval", update_interval, 1)
  if isinstance(estimator, str):
    if estimator not in ESTIMATORS:
      raise ValueError(
          f"{owner}: estimator must be one of {sorted(ESTIMATORS)} or a callable, "
          f"got {estimator!r}")
    estimate = ESTIMATORS[estimator]
  elif callable(estimator):
    estimate = estimator
  else:
    raise ValueError(f"{owner}: estimator must be a string or a callable, got {estimator!r}")

  _checks.check_range(owner, "clip_threshold", clip_threshold, 0.0, low_inclusive=False)
  store = resolve(state_storage)
  store_mu = store if mu_storage is None else resolve(mu_storage)

  def init_fn(params):
    if seed is None:
      key = jnp.zeros((2,), jnp.uint32)
    else:
      key = jax.random.key_data(jax.random.key(seed))
    return SophiaState(
        count=jnp.zeros([], jnp.int32),
        mu=store_mu.init(params, signed=True),
        hessian=store.init(params, signed=True),
        key=key,
        unclipped_fraction=jnp.zeros([], jnp.float32),
    )

  def update_fn(updates, state, params=None, *, key=None, **extra_args):
    if params is None:
      raise ValueError(f"{owner}: update() needs params to estimate the Hessian.")
    if key is None:
      if seed is None:
        raise ValueError(
            f"{owner}: the Hessian estimator needs randomness: pass key=... to update() "
            f"(the same key on every device), or construct the optimizer with seed=...")
      key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.count)

    needed = _NEEDS.get(estimator) if isinstance(estimator, str) else None
    if needed is not None and needed[0] not in extra_args:
      raise ValueError(f"{owner}: {needed[1]} needs {needed[0]}= passed to update(): "
                       f"{needed[2]}")
    # Hutchinson estimates can be negative: h is stored as a signed quantity.
    old_hessian = store.read(state.hessian, updates, signed=True)

    def refreshed_hessian():
      estimated = estimate(params, key, **extra_args)
      return jax.tree.map(lambda h, e: (b2 * h + (1.0 - b2) * e).astype(h.dtype), old_hessian,
                          estimated)

    refresh = state.count % update_interval == 0
    hessian = jax.lax.cond(refresh, refreshed_hessian, lambda: old_hessian)
    mu = ema(b1, updates, store_mu.read(state.mu, updates, signed=True))
    ratios = jax.tree.map(lambda m, h: m / jnp.maximum(gamma * h, eps), mu, hessian)
    direction = map_like(lambda g, r: jnp.clip(r, -clip_threshold, clip_threshold), updates,
                         ratios)

    def measured_fraction():
      # From m and h (kept in memory as state anyway), not from `ratios`: reading the ratios
      # here would make XLA write them out instead of fusing them into the update.
      leaves = jax.tree.leaves(jax.tree.map(
          lambda m, h: jnp.abs(m) < clip_threshold * jnp.maximum(gamma * h, eps), mu, hessian))
      total = sum(leaf.size for leaf in leaves)
      unclipped = sum(jnp.sum(leaf, dtype=jnp.float32) for leaf in leaves)
      return (unclipped / max(total, 1)).astype(jnp.float32)

    # Measured on refresh steps only: a reduction over the ratios on every step kept XLA from
    # fusing the update into one pass and tripled the step time (benchmarks/step_time.py).
    fraction = jax.lax.cond(refresh, measured_fraction,
                            lambda: state.unclipped_fraction.astype(jnp.float32))
    if not (isinstance(print_win_rate_every_n_steps, int) and print_win_rate_every_n_steps == 0):
      every = jnp.maximum(print_win_rate_every_n_steps, 1)
      jax.lax.cond((print_win_rate_every_n_steps > 0) & (state.count % every == 0),
                   lambda: jax.debug.print("sophia: step {step}, unclipped fraction {fraction}",
                                           step=state.count, fraction=fraction),
                   lambda: None)
    new_state = SophiaState(
        count=increment(state.count), mu=store_mu.write(mu, updates, state.mu, signed=True),
        hessian=store.write(hessian, updates, state.hessian, signed=True), key=state.key,
        unclipped_fraction=fraction)
    return direction, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
