"""Sharpness-aware minimization (Foret, Kleiner, Mobahi & Neyshabur 2021, "Sharpness-Aware
Minimization for Efficiently Improving Generalization", ICLR 2021, arXiv:2010.01412,
Algorithm 1; the adaptive form of Kwon, Kim, Park & Choi 2021, "ASAM", arXiv:2102.11600).

SAM minimises the loss at the worst point of a small neighbourhood: it takes the gradient at
the adversarially perturbed parameters w + e(w) and hands it to the outer optimizer, which
updates the unperturbed w:

    e(w)  = rho T_w^2 g / (||T_w g||_2 + eps)    T_w = 1 (SAM) or |w| (adaptive, ASAM);
                                                 the norm is global, over every leaf
    g_SAM = grad L(w + e(w))                     (a second gradient, same batch)
    w    <- w + optimizer(g_SAM)

`sam` takes optax.contrib.sam's arguments in its order (an outer optimizer, an adversarial
optimizer whose negated update is the perturbation, a sync period, ...), and by default uses
the paper's perturbation as the adversarial optimizer (`sam_perturbation(rho, adaptive)`).

How the second gradient gets in - two modes, as in optax:

  * transparent (`opaque_mode=False`, default): one `update` call per gradient. Calls cycle
    through `sync_period` phases: the first `sync_period - 1` return the adversarial step
    (the parameters move to w + e), and the last returns the outer step *from the cached w*
    (the update undoes the perturbation and applies the optimizer's step). With
    sync_period = 2 two consecutive calls are one SAM step; compute each gradient at the
    parameters the previous call produced, on the same batch for the paper's algorithm.
  * opaque (`opaque_mode=True`): one `update` call per SAM step. Pass the gradient function
    as an extra argument, `update(grads, state, params, grad_fn=grad_fn)` with
    `grad_fn(params, i) -> grads` (i: the adversarial step, 0 for plain SAM); it is called
    `sync_period - 1` times inside the step, so the step needs no outside loop. This is
    pytorch-optimizer's `SAM.step(closure)` form. Under `pmap`, `batch_axis_name` averages the
    adversarial gradients over the devices.

Defaults: rho = 0.05, perturb_eps = 1e-12 (pytorch-optimizer's SAM), sync_period = 2,
reset_state = True, opaque_mode = False (optax's).

Checked against pytorch-optimizer 4.1.0 `SAM` (plain and adaptive; its global norm is taken in
float32, which bounds the agreement near 1e-7) and `optax.contrib.sam` (transparent and opaque):
tests/transforms/test_sam.py. Where this differs from optax:
  - with sync_period = 1 optax's transparent mode applies each outer update from the
    *previous* call's parameters, undoing the last step; here the outer step starts from the
    parameters it is given, so sync_period = 1 is the plain optimizer;
  - phases are selected with `where`, not optax's `c * a + (1 - c) * b`, so a NaN in the
    branch not taken (the normalised zero gradient of a converged run) does not leak, and
    integer or quantized states keep their dtypes;
  - the cached parameters are a fresh copy (optax's init stores the params themselves in the
    state, which breaks donated train steps).

Example (opaque mode, one call per SAM step):
    >>> import jax, jax.numpy as jnp, optax, optimkit
    >>> loss = lambda w: jnp.sum((w - 1.0) ** 2)
    >>> tx = optimkit.sam(optax.sgd(0.1), rho=0.05, opaque_mode=True)
    >>> w = jnp.zeros(3); state = tx.init(w)
    >>> grad_fn = lambda params, i: jax.grad(loss)(params)
    >>> updates, state = tx.update(jax.grad(loss)(w), state, w, grad_fn=grad_fn)
    >>> w = optax.apply_updates(w, updates)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks


class SAMState(NamedTuple):
  """State of `sam`.

    steps_since_sync: phase of the transparent cycle (0 .. sync_period - 1); 0 in opaque mode.
    opt_state: the outer optimizer's state.
    adv_state: the adversarial optimizer's state.
    cache: the unperturbed parameters (transparent mode; None in opaque mode).
  """

  steps_since_sync: jax.Array
  opt_state: Any
  adv_state: Any
  cache: Any


def sam_perturbation(rho: float = 0.05, adaptive: bool = False, eps: float = 1e-12
                     ) -> optax.GradientTransformation:
  """The paper's adversarial step as an adversarial optimizer for `sam`: returns -e(w), with
  e(w) = rho T_w^2 g / (||T_w g|| + eps), T_w = |w| if `adaptive` else 1.

  It is descent-signed, like `optax.chain(optax.contrib.normalize(), optax.sgd(rho))`,
  because `sam` (like optax.contrib.sam) negates the adversarial optimizer's update.

  Args:
    rho: radius of the neighbourhood, >= 0. Default 0.05.
    adaptive: scale by |w| (ASAM; needs params in `update`). Default False.
    eps: added to the norm, >= 0. Default 1e-12.
  """
  owner = "sam_perturbation"
  _checks.check_non_negative(owner, "rho", rho)
  _checks.check_non_negative(owner, "eps", eps)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if adaptive:
      if params is None:
        raise ValueError(f"{owner}: adaptive=True needs params in update().")
      scaled = jax.tree.map(lambda g, w: g * jnp.abs(w), updates, params)
      squared = jax.tree.map(lambda g, w: g * jnp.square(w), updates, params)
    else:
      scaled, squared = updates, updates
    scale = rho / (optax.tree.norm(scaled) + eps)
    return jax.tree.map(lambda s: (-scale * s).astype(s.dtype), squared), state

  return optax.GradientTransformation(init_fn, update_fn)


def _select(condition: jax.Array, if_true: Any, if_false: Any) -> Any:
  return jax.tree.map(lambda a, b: jnp.where(condition, a, b).astype(b.dtype), if_true,
                      if_false)


def _negate(tree: Any) -> Any:
  return jax.tree.map(lambda x: -x, tree)


def sam(
    optimizer: optax.GradientTransformation,
    adv_optimizer: optax.GradientTransformation | None = None,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: str | None = None,
    *,
    rho: float = 0.05,
    adaptive: bool = False,
    perturb_eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
  """Sharpness-aware minimization around any optimizer (see the module docstring for the two
  ways the perturbed gradient comes in).

  Args:
    optimizer: the outer optimizer, updated with the gradient at the perturbed parameters.
    adv_optimizer: the adversarial optimizer, whose negated update is the perturbation; None
      (default): `sam_perturbation(rho, adaptive, perturb_eps)`, the paper's.
    sync_period: calls per SAM step: sync_period - 1 adversarial steps, then one outer step;
      an integer >= 1. Default 2.
    reset_state: reinitialise the adversarial optimizer's state after every outer step.
    opaque_mode: run the adversarial steps inside one `update` call through the `grad_fn`
      extra argument instead of across calls.
    batch_axis_name: opaque mode under pmap: the axis to average adversarial gradients over.
    rho: the radius of the default perturbation, >= 0. Default 0.05.
    adaptive: ASAM's |w|-scaled default perturbation. Default False.
    perturb_eps: added to the norm in the default perturbation, >= 0. Default 1e-12.

  Returns:
    A transformation whose `update` accepts `grad_fn` (opaque mode); other extra arguments are
    passed on to `optimizer`.
  """
  _checks.check_int_at_least("sam", "sync_period", sync_period, 1)
  if adv_optimizer is None:
    adv_optimizer = sam_perturbation(rho, adaptive, perturb_eps)
  outer = optax.with_extra_args_support(optimizer)

  def init_fn(params):
    return SAMState(
        steps_since_sync=jnp.zeros([], jnp.int32), opt_state=outer.init(params),
        adv_state=adv_optimizer.init(params),
        cache=None if opaque_mode else jax.tree.map(lambda p: jnp.array(p, copy=True), params))

  def transparent_update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    del grad_fn
    if params is None:
      raise ValueError("sam: update() needs params.")
    first = state.steps_since_sync == 0
    last = state.steps_since_sync == sync_period - 1
    cache = _select(first, params, state.cache)

    adv_updates, adv_state = adv_optimizer.update(updates, state.adv_state, params)
    adv_updates = _negate(adv_updates)
    # The outer step from the unperturbed parameters, expressed as an update of the current
    # (perturbed) ones.
    opt_updates, opt_state = outer.update(updates, state.opt_state, cache, **extra_args)
    opt_updates = jax.tree.map(lambda c, p, u: (c - p + u).astype(u.dtype), cache, params,
                               opt_updates)

    new_updates = _select(last, opt_updates, adv_updates)
    if reset_state:
      adv_state = _select(last, adv_optimizer.init(params), adv_state)
    else:
      adv_state = _select(last, state.adv_state, adv_state)
    opt_state = _select(last, opt_state, state.opt_state)
    return new_updates, SAMState(steps_since_sync=(state.steps_since_sync + 1) % sync_period,
                                 opt_state=opt_state, adv_state=adv_state, cache=cache)

  def opaque_update_fn(updates, state, params=None, *,
                       grad_fn: Callable[[Any, int], Any] | None = None, **extra_args):
    if grad_fn is None:
      raise ValueError("sam: opaque_mode=True needs the gradient function: "
                       "update(grads, state, params, grad_fn=lambda params, i: grads).")
    if params is None:
      raise ValueError("sam: update() needs params.")
    adv_params, adv_grads, adv_state = params, updates, state.adv_state
    for i in range(sync_period - 1):
      adv_updates, adv_state = adv_optimizer.update(adv_grads, adv_state, adv_params)
      adv_params = optax.apply_updates(adv_params, _negate(adv_updates))
      adv_grads = grad_fn(adv_params, i)
      if batch_axis_name is not None:
        adv_grads = jax.lax.pmean(adv_grads, axis_name=batch_axis_name)
    if reset_state:
      adv_state = adv_optimizer.init(params)
    new_updates, opt_state = outer.update(adv_grads, state.opt_state, params, **extra_args)
    return new_updates, SAMState(steps_since_sync=jnp.zeros([], jnp.int32),
                                 opt_state=opt_state, adv_state=adv_state, cache=None)

  return optax.GradientTransformationExtraArgs(
      init_fn, opaque_update_fn if opaque_mode else transparent_update_fn)
