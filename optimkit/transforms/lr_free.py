"""Learning-rate-free Adam: D-Adaptation (Defazio & Mishchenko 2023) and Prodigy (Mishchenko &
Defazio 2024). Both estimate D, the distance from the initial point to a solution, while they
train, and step with Adam's direction scaled by d_t * lr_t, so `learning_rate` is a multiplier
of the estimate (1.0 by default; a schedule on top, such as linear decay to 0, is recommended).

Unlike the moment transforms, these return the step itself (sign and learning rate included):
D-Adaptation's first moment accumulates d_t * lr_t * g_t, so the learning rate cannot be applied
after the transform. Both need `params` in `update` (the estimate of D reads them).

Notation: g_t the gradient, lr_t the learning rate, d_t the estimate before step t (d_1 = d0 =
`estim_lr0`), k = t - 1 the steps taken before, bc_t = sqrt(1 - b2^t) / (1 - b1^t) with
`bias_correction=True`, else 1; sums run over every element of every leaf.

Prodigy (`scale_by_prodigy`; prodigyopt 1.1.2 `Prodigy`, the authors' code):

    dlr_t = d_t lr_t bc_t
    m_t = b1 m_{t-1} + (1 - b1) d_t g_t
    v_t = b2 v_{t-1} + (1 - b2) d_t^2 g_t^2
    s_t = b3 s_{t-1} + (d_t / d0) dlr_t g_t             (safeguard_warmup: (d_t / d0) d_t g_t)
    r_t = b3 r_{t-1} + (d_t / d0) dlr_t <g_t, x_0 - x_t>
    d_hat = estim_lr_coef * r_t / sum|s_t|
    d_max = max(d_max, d_hat);  d_{t+1} = min(d_max, growth_rate * (max(d_t, d_hat) if d_t = d0
                                                                      else d_t))
    step  = -dlr_t (m_t / (sqrt(v_t) + d_{t+1} eps) + weight_decay x_t)

D-Adaptation Adam (`scale_by_dadapt_adam`; dadaptation 3.2 `DAdaptAdam`, the authors' code),
with sb2 = sqrt(b2):

    dlr_t = d_t lr_t bc_t
    r_t = sb2 r_{t-1} + (1 - sb2) dlr_t <g_t, s_{t-1} / (sqrt(v_{t-1}) + eps)>
    m_t = b1 m_{t-1} + (1 - b1) dlr_t g_t
    v_t = b2 v_{t-1} + (1 - b2) g_t^2
    s_t = sb2 s_{t-1} + (1 - sb2) dlr_t g_t
    d_hat = r_t / ((1 - sb2) sum|s_t|);   d_{t+1} = max(d_t, min(d_hat, growth_rate d_t))
    step  = -(m_t / (sqrt(v_t) + eps) + dlr_t weight_decay x_t)

As in the authors' code, a step at lr_t = 0 changes nothing (the statistics are not touched and
k does not advance), and a step with sum|s_t| = 0 (no gradient seen yet) updates the moments
but neither the estimate, k nor the parameters. optax divides 0 by 0 there: its estimate
becomes NaN, also for a warmup that starts at lr = 0.

Where optax differs: `optax.contrib.prodigy` and `optax.contrib.dadapt_adamw` always apply
Adam's bias correction bc_t; the authors' default is off (`use_bias_correction=False`), and
after 200 float64 steps of tests/parity.py's noisy quadratic the two Prodigy trajectories are a
relative 0.40 apart. Here the default follows the authors; `bias_correction=True` gives optax's
trajectory (to 1e-15 in the tests), and is the one argument that differs.
optax also has no `growth_rate` (it is the authors' default, inf) and Prodigy's `d_coef` and
`d0` are optax's `estim_lr_coef` and `estim_lr0`. Coupled (L2) weight decay, the authors'
`decouple=False` (DAdaptAdam's default), is `optax.add_decayed_weights` chained before these
transforms with their `weight_decay=0` (the optimizers' `decouple=False` does that).

Not carried over from the references: prodigyopt's `slice_p` (statistics on every p-th element,
an approximation), DAdaptAdam's per-group `layer_scale`, per-group learning rates, and the FSDP
flag (under jit the sums over leaves are global already).

Storage: m, v and s are params-shaped statistics and go through `state_storage`; Prodigy's x_0
is a copy of the initial params kept in the params' own dtype (it is not a statistic, and
quantizing it would add a fixed error to <g, x_0 - x_t>, which starts at 0). The estimate and
the other scalars are kept in float32 (float64 with float64 params).

References:
  Defazio & Mishchenko, "Learning-Rate-Free Learning by D-Adaptation", ICML 2023,
  https://arxiv.org/abs/2301.07733 (Algorithm 4, Adam); code: facebookresearch/dadaptation.
  Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", ICML 2024,
  https://arxiv.org/abs/2306.06101 (Algorithm 4, Adam); code: konstmish/prodigy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, compute_dtype, resolve
from optimkit.transforms._util import increment, leafwise, unzip_leaf


def _scalar_dtype(params: Any) -> jnp.dtype:
  """float32, or float64 when any param is float64: the dtype of the estimate and its sums."""
  dtype = jnp.dtype(jnp.float32)
  for leaf in jax.tree.leaves(params):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      dtype = jnp.promote_types(dtype, leaf.dtype)
  return dtype


def _value(learning_rate: Any, count: jax.Array) -> Any:
  return learning_rate(count) if callable(learning_rate) else learning_rate


def _upcast(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.astype(compute_dtype(x)), tree)


def _total(fn, *trees: Any) -> jax.Array:
  """sum over leaves of fn(leaf, ...) (each a scalar; `fn` traced once per leaf signature)."""
  return _sum_leaves(jax.tree.map(leafwise(fn), *trees))


def _sum_leaves(partials: Any) -> jax.Array:
  """The sum of a tree of per-leaf scalars (0 if it has no leaves)."""
  return jnp.asarray(sum(jax.tree.leaves(partials), start=0.0))


def _positive(total: jax.Array) -> jax.Array:
  """total > 0 for a sum of absolute values (>= 0 or NaN), computed once for every leaf.

  XLA fuses cheap scalar ops into each consumer that reads them, so `total > 0` read by every
  leaf's step kernel carried the whole chain of per-leaf adds that makes `total` into each of
  them: N kernels of N operands, compile time quadratic in the leaves (dadapt_adamw 4.3x optax's
  at 100 leaves). XLA does not duplicate an expensive op (a square root) into several consumers,
  so the sum and the test are one scalar kernel whose one result the leaves read. sqrt(x) > 0
  exactly when x > 0 for x >= 0 (a subnormal's root is positive too), and is false on NaN as
  `x > 0` is.
  """
  return jnp.sqrt(total) > 0


def _abs_sum(x: jax.Array) -> jax.Array:
  return jnp.sum(jnp.abs(x))


def _unzip3(reference: Any, tuples: Any) -> tuple[Any, Any, Any]:
  """Three trees shaped like `reference` from one of per-leaf triples."""
  return (unzip_leaf(reference, tuples, 0), unzip_leaf(reference, tuples, 1),
          unzip_leaf(reference, tuples, 2))


def _needs_params(owner: str, params: Any) -> None:
  if params is None:
    raise ValueError(f"{owner}: update() needs params (the estimate of D reads them); call "
                     f"tx.update(grads, state, params)")


def _check_common(owner: str, learning_rate, betas, eps, estim_lr0, weight_decay,
                  growth_rate) -> None:
  _checks.check_learning_rate(owner, learning_rate)
  if not isinstance(betas, (tuple, list)) or len(betas) != 2:
    raise ValueError(f"{owner}: betas must be a pair (b1, b2), got {betas!r}")
  _checks.check_beta(owner, "betas[0]", betas[0])
  _checks.check_beta(owner, "betas[1]", betas[1])
  _checks.check_range(owner, "eps", eps, 0.0, low_inclusive=False)
  _checks.check_range(owner, "estim_lr0", estim_lr0, 0.0, low_inclusive=False)
  _checks.check_non_negative(owner, "weight_decay", weight_decay)
  if growth_rate is not None:
    _checks.check_range(owner, "growth_rate", growth_rate, 1.0)


def _bias_correction(enabled: bool, b1: Any, b2: Any, steps: jax.Array, dtype) -> Any:
  """Adam's sqrt(1 - b2^t) / (1 - b1^t) at t = steps + 1, or 1."""
  if not enabled:
    return 1.0
  t = (steps + 1).astype(dtype)
  return jnp.sqrt(1.0 - jnp.asarray(b2, dtype) ** t) / (1.0 - jnp.asarray(b1, dtype) ** t)


# ----------------------------------------------------------------------------------------------
# Prodigy.


class ProdigyState(NamedTuple):
  """State of `scale_by_prodigy` (optax.contrib's field names, plus `estim_lr_max`).

    count: calls of update (a schedule given as learning_rate is evaluated at it, as optax's).
    steps: steps taken (the authors' k, in the bias correction; a skipped step does not count).
    exp_avg: m, params-shaped, in the storage format.
    exp_avg_sq: v, params-shaped, in the storage format.
    grad_sum: s, params-shaped, in the storage format.
    params0: x_0, the initial params, in their own dtype.
    estim_lr: d, the current estimate of D.
    estim_lr_max: the largest estimate d_hat so far (bounds d under a finite growth_rate).
    numerator_weighted: r, the weighted sum of <g, x_0 - x>.
  """

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  steps: jax.Array
  exp_avg: Any
  exp_avg_sq: Any
  grad_sum: Any
  params0: Any
  estim_lr: jax.Array
  estim_lr_max: jax.Array
  numerator_weighted: jax.Array


def scale_by_prodigy(
    learning_rate: Any = 1.0,
    betas: tuple[Any, Any] = (0.9, 0.999),
    beta3: Any = None,
    eps: Any = 1e-8,
    estim_lr0: Any = 1e-6,
    estim_lr_coef: Any = 1.0,
    weight_decay: Any = 0.0,
    safeguard_warmup: bool = False,
    *,
    bias_correction: bool = False,
    growth_rate: Any = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Prodigy's step: Adam scaled by the running estimate of D (equations in the module doc).

  Args:
    learning_rate: multiplier of the estimate, >= 0, or a schedule of the step count. Default 1.
    betas: (b1, b2), Adam's decays, each in [0, 1). Default (0.9, 0.999).
    beta3: decay of the estimate's sums, in [0, 1); None (default) means sqrt(b2).
    eps: added to sqrt(v) after scaling by d, > 0. Default 1e-8.
    estim_lr0: d0, the initial (under-)estimate of D, > 0. Default 1e-6.
    estim_lr_coef: d_coef, multiplies every estimate, > 0. Default 1.
    weight_decay: decoupled weight decay, scaled by d lr, >= 0. Default 0.
    safeguard_warmup: leave lr out of s (the authors' remedy for warmup from lr = 0).
    bias_correction: Adam's bias correction in d lr (optax's behaviour); the authors' default
      is False.
    growth_rate: d grows by at most this factor a step, >= 1; None (default) is unbounded
      (the authors' inf).
    state_storage: how m, v and s are stored (see `optimkit.state`). Default "float32".

  Returns:
    An `optax.GradientTransformation` whose updates are the steps (add them to the params).

  Example:
    >>> tx = optimkit.transforms.scale_by_prodigy(weight_decay=0.01)
    >>> updates, state = tx.update(grads, state, params)  # params are required
  """
  owner = "scale_by_prodigy"
  _check_common(owner, learning_rate, betas, eps, estim_lr0, weight_decay, growth_rate)
  if beta3 is not None:
    _checks.check_beta(owner, "beta3", beta3)
  _checks.check_range(owner, "estim_lr_coef", estim_lr_coef, 0.0, low_inclusive=False)
  store = resolve(state_storage)

  def init_fn(params):
    dtype = _scalar_dtype(params)
    return ProdigyState(
        count=jnp.zeros([], jnp.int32),
        steps=jnp.zeros([], jnp.int32),
        exp_avg=store.init(params, signed=True),
        exp_avg_sq=store.init(params, signed=False),
        grad_sum=store.init(params, signed=True),
        params0=jax.tree.map(lambda p: jnp.array(p, copy=True), params),
        # Copies: estim_lr0 may be the very array the hyperparameters hold (no state leaf may
        # be another's buffer: a donated step would donate it twice).
        estim_lr=jnp.array(estim_lr0, dtype, copy=True),
        estim_lr_max=jnp.array(estim_lr0, dtype, copy=True),
        numerator_weighted=jnp.zeros([], dtype),
    )

  def update_fn(updates, state, params=None):
    _needs_params(owner, params)
    dtype = state.estim_lr.dtype
    b1, b2 = betas
    b3 = jnp.sqrt(jnp.asarray(b2, dtype)) if beta3 is None else beta3
    lr = jnp.asarray(_value(learning_rate, state.count), dtype)
    d, d0 = state.estim_lr, jnp.asarray(estim_lr0, dtype)
    dlr = d * lr * _bias_correction(bias_correction, b1, b2, state.steps, dtype)
    weight = d / d0  # the authors weight by d / d0 rather than d so the sums stay O(1)

    grads, x = _upcast(updates), _upcast(params)
    x0 = jax.tree.map(lambda p0, p: p0.astype(p.dtype), state.params0, x)
    progress = _total(lambda g, p0, p: jnp.sum(g * (p0 - p)), grads, x0, x)
    active = lr > 0
    # Per-leaf arithmetic is written once per leaf (`leafwise`); its scalars are computed here,
    # once, not in every leaf's copy.
    old_m = store.read(state.exp_avg, updates, signed=True)
    old_v = store.read(state.exp_avg_sq, updates, signed=False)
    old_s = store.read(state.grad_sum, updates, signed=True)
    # The moments are selected (kept at lr = 0) before the step and the sum read them, so those
    # read the values that are written: with the selection only on the write, XLA recomputed
    # the unselected moments from the old buffers inside the params update and copied all three
    # every step. The same results: at lr = 0 nothing moves and d is kept.
    m_scale, v_scale = (1 - b1) * d, (1 - b2) * d * d
    s_scale = weight * (d if safeguard_warmup else dlr)

    def moments(g, m, v, s):
      return (jnp.where(active, b1 * m + m_scale * g, m),
              jnp.where(active, b2 * v + v_scale * (g * g), v),
              jnp.where(active, b3 * s + s_scale * g, s))

    m, v, s = _unzip3(grads, jax.tree.map(leafwise(moments), grads, old_m, old_v, old_s))
    denominator = _total(_abs_sum, s).astype(dtype)
    numerator = b3 * state.numerator_weighted + weight * dlr * progress

    d_hat = estim_lr_coef * numerator / denominator
    d_max = jnp.maximum(state.estim_lr_max, d_hat)
    # The authors let the first estimate above d0 through whole, then cap growth by growth_rate.
    d_new = jnp.where(d == d0, jnp.maximum(d, d_hat), d)
    d_new = d_max if growth_rate is None else jnp.minimum(d_max, growth_rate * d_new)

    # lr = 0: nothing moves. sum|s| = 0 (no gradient yet): the moments move, nothing else.
    proceed = jnp.logical_and(active, _positive(denominator))
    step_scale, eps_scale = -dlr, d_new * eps

    def leaf_step(u, m, v, p):
      u_new = (step_scale * (m / (jnp.sqrt(v) + eps_scale) + weight_decay * p)).astype(u.dtype)
      return jnp.where(proceed, u_new, jnp.zeros_like(u_new))

    step = jax.tree.map(leafwise(leaf_step), updates, m, v, x)
    new_state = ProdigyState(
        count=increment(state.count),
        steps=jnp.where(proceed, increment(state.steps), state.steps),
        exp_avg=store.write(m, updates, state.exp_avg, signed=True),
        exp_avg_sq=store.write(v, updates, state.exp_avg_sq, signed=False),
        grad_sum=store.write(s, updates, state.grad_sum, signed=True),
        params0=state.params0,
        estim_lr=jnp.where(proceed, d_new, d).astype(dtype),
        estim_lr_max=jnp.where(proceed, d_max, state.estim_lr_max).astype(dtype),
        numerator_weighted=jnp.where(proceed, numerator, state.numerator_weighted).astype(dtype),
    )
    return step, new_state

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# D-Adaptation Adam.


class DAdaptAdamState(NamedTuple):
  """State of `scale_by_dadapt_adam` (optax.contrib's `DAdaptAdamWState` field names).

    count: calls of update (a schedule given as learning_rate is evaluated at it, as optax's).
    steps: steps taken (the authors' k, in the bias correction; a skipped step does not count).
    exp_avg: m (it carries d lr), params-shaped, in the storage format.
    exp_avg_sq: v, params-shaped, in the storage format.
    grad_sum: s, params-shaped, in the storage format.
    estim_lr: d, the current estimate of D.
    numerator_weighted: r, the weighted sum of <g, s / (sqrt(v) + eps)>.
  """

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  steps: jax.Array
  exp_avg: Any
  exp_avg_sq: Any
  grad_sum: Any
  estim_lr: jax.Array
  numerator_weighted: jax.Array


def scale_by_dadapt_adam(
    learning_rate: Any = 1.0,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    estim_lr0: Any = 1e-6,
    weight_decay: Any = 0.0,
    *,
    bias_correction: bool = False,
    growth_rate: Any = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """D-Adaptation's Adam step (equations in the module doc).

  Args:
    learning_rate: multiplier of the estimate, >= 0, or a schedule of the step count. Default 1.
    betas: (b1, b2), Adam's decays, each in [0, 1). Default (0.9, 0.999).
    eps: added to sqrt(v), > 0. Default 1e-8.
    estim_lr0: d0, the initial (under-)estimate of D, > 0. Default 1e-6.
    weight_decay: decoupled weight decay, scaled by d lr, >= 0. Default 0.
    bias_correction: Adam's bias correction in d lr (optax's behaviour); the authors' default
      is False.
    growth_rate: d grows by at most this factor a step, >= 1; None (default) is unbounded
      (the authors' inf).
    state_storage: how m, v and s are stored (see `optimkit.state`). Default "float32".

  Returns:
    An `optax.GradientTransformation` whose updates are the steps (add them to the params).

  Example:
    >>> tx = optimkit.transforms.scale_by_dadapt_adam(weight_decay=0.01)
    >>> updates, state = tx.update(grads, state, params)  # params are required
  """
  owner = "scale_by_dadapt_adam"
  _check_common(owner, learning_rate, betas, eps, estim_lr0, weight_decay, growth_rate)
  store = resolve(state_storage)

  def init_fn(params):
    dtype = _scalar_dtype(params)
    return DAdaptAdamState(
        count=jnp.zeros([], jnp.int32),
        steps=jnp.zeros([], jnp.int32),
        exp_avg=store.init(params, signed=True),
        exp_avg_sq=store.init(params, signed=False),
        grad_sum=store.init(params, signed=True),
        estim_lr=jnp.array(estim_lr0, dtype, copy=True),  # a copy, as in scale_by_prodigy
        numerator_weighted=jnp.zeros([], dtype),
    )

  def update_fn(updates, state, params=None):
    _needs_params(owner, params)
    dtype = state.estim_lr.dtype
    b1, b2 = betas
    sb2 = jnp.sqrt(jnp.asarray(b2, dtype))
    lr = jnp.asarray(_value(learning_rate, state.count), dtype)
    d = state.estim_lr
    dlr = d * lr * _bias_correction(bias_correction, b1, b2, state.steps, dtype)

    grads, x = _upcast(updates), _upcast(params)
    old_v = store.read(state.exp_avg_sq, updates, signed=False)
    old_s = store.read(state.grad_sum, updates, signed=True)
    old_m = store.read(state.exp_avg, updates, signed=True)
    leaf_progress = jax.tree.map(leafwise(lambda g, s, v: jnp.sum(g * (s / (jnp.sqrt(v) + eps)))),
                                 grads, old_s, old_v)
    progress = _sum_leaves(leaf_progress)
    # The moments are selected (kept at lr = 0) before the step and sum|s| read them, as in
    # scale_by_prodigy: with the selection only on the write, XLA recomputed the unselected
    # moments from the old buffers inside the params update and copied all three every step.
    # Each leaf's v and s are also selected on that leaf's share of the progress sum, a test that
    # is never false (the absolute value is not below -1; with a NaN it is not either): the sum
    # reads their old values, and without a data dependence on it XLA does not order their
    # in-place writes after it and copies both buffers. The leaf's own share, not the total: a
    # test on the total put the chain of per-leaf adds that makes it into every leaf's kernel
    # (XLA duplicates cheap scalar ops into each consumer), compile time quadratic in the leaves.
    # (transforms._util.written_after does the same as an extra select, which XLA then
    # duplicates into the params update, recomputing v from the old buffer.) The same results:
    # at lr = 0 nothing moves and d is kept. Per-leaf arithmetic is written once per leaf
    # (`leafwise`); its scalars are computed here, once, not in every leaf's copy.
    active = lr > 0
    m_scale, s_scale = (1 - b1) * dlr, (1 - sb2) * dlr

    def moments(g, m, v, s, share):
      after_progress = jnp.logical_and(active, jnp.logical_not(jnp.abs(share) < -1))
      return (jnp.where(active, b1 * m + m_scale * g, m),
              jnp.where(after_progress, b2 * v + (1 - b2) * (g * g), v),
              jnp.where(after_progress, sb2 * s + s_scale * g, s))

    m, v, s = _unzip3(grads, jax.tree.map(leafwise(moments), grads, old_m, old_v, old_s,
                                          leaf_progress))
    l1 = _total(_abs_sum, s).astype(dtype)
    numerator = sb2 * state.numerator_weighted + (1 - sb2) * dlr * progress

    d_hat = numerator / ((1 - sb2) * l1)
    d_new = jnp.maximum(d, d_hat if growth_rate is None else jnp.minimum(d_hat, growth_rate * d))

    # lr = 0: nothing moves. sum|s| = 0 (no gradient yet): the moments move, nothing else.
    proceed = jnp.logical_and(active, _positive(l1))
    decay_scale = dlr * weight_decay

    def leaf_step(u, m, v, p):
      u_new = (-(m / (jnp.sqrt(v) + eps) + decay_scale * p)).astype(u.dtype)
      return jnp.where(proceed, u_new, jnp.zeros_like(u_new))

    step = jax.tree.map(leafwise(leaf_step), updates, m, v, x)
    new_state = DAdaptAdamState(
        count=increment(state.count),
        steps=jnp.where(proceed, increment(state.steps), state.steps),
        exp_avg=store.write(m, updates, state.exp_avg, signed=True),
        exp_avg_sq=store.write(v, updates, state.exp_avg_sq, signed=False),
        grad_sum=store.write(s, updates, state.grad_sum, signed=True),
        estim_lr=jnp.where(proceed, d_new, d).astype(dtype),
        numerator_weighted=jnp.where(proceed, numerator, state.numerator_weighted).astype(dtype),
    )
    return step, new_state

  return optax.GradientTransformation(init_fn, update_fn)
