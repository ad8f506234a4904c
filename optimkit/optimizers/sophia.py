"""Second-order clipping: Sophia (Sophia-G and Sophia-H)."""

from __future__ import annotations

from typing import Any, Union

import optax

from optimkit.optimizers._declare import (
  Mask,
  ScalarOrSchedule,
  mu_storage_of,
  optimizer,
)
from optimkit.state.storage import StorageLike
from optimkit.transforms.hessian import HessianEstimator, scale_by_sophia

_GAMMA = {"gnb": 0.04, "hutchinson": 0.01}


@optimizer(family="second_order", typical_lr=3e-4, optax="contrib.sophia",
           optax_differs="optax estimates the Hessian with its own Hutchinson probes (other "
                         "random draws); defaults differ (see the docstring)",
           reference="sophia-opt 0.2.2 (the authors' SophiaG), same sampled labels",
           ranges={"gamma": dict(low=0.0, low_inclusive=False)}, needs=("logits_fn", "key"))
def sophia(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-15,
    weight_decay: float = 0.1,
    weight_decay_mask: Mask = None,
    gamma: float | None = None,
    clip_threshold: float = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: Any = None,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
    *,
    estimator: Union[str, HessianEstimator] = "gnb",
    seed: int | None = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Sophia (Liu et al. 2023): momentum preconditioned by a clipped diagonal Hessian estimate.

      m_t = b1 m_{t-1} + (1 - b1) g_t
      h_t = b2 h + (1 - b2) h_hat(w)   every update_interval steps (h_hat: the estimator)
      w_t = w_{t-1} - lr (clip(m_t / max(gamma h_t, eps), clip_threshold) + weight_decay w_{t-1})

  Sophia-G (`estimator="gnb"`, Gauss-Newton-Bartlett) needs `logits_fn=` passed to `update`
  (params -> logits, with labels sampled from the model); Sophia-H (`"hutchinson"`) needs
  `loss_fn=` (params -> loss). Randomness comes from `key=` passed to `update`, or from `seed=`.

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-4.
    b1: momentum decay. Default 0.965.
    b2: Hessian EMA decay. Default 0.99.
    eps: floor of the denominator, >= 0. Default 1e-15 (the authors'; optax's is 1e-8).
    weight_decay: decoupled decay, >= 0. Default 0.1 (the authors'; optax's is 1e-4).
    weight_decay_mask: the leaves that decay.
    gamma: rho of the authors' code, > 0. Default: 0.04 for GNB (the authors' code), 0.01 for
      Hutchinson (the paper; optax's default).
    clip_threshold: bound of the clipped ratio, > 0. Default 1.
    update_interval: k, steps between Hessian refreshes, integer >= 1. Default 10.
    hessian_diagonal_fn: a callable `(params, key, **extra_args) -> diagonal estimate` used in
      place of `estimator` (optax's argument; optax's own estimator transformations are not
      accepted: pass estimator="hutchinson").
    mu_dtype: optax's dtype of the momentum (bfloat16: optimkit's bfloat16 storage).
    verbose: print the unclipped fraction every `print_win_rate_every_n_steps` steps.
    print_win_rate_every_n_steps: see `verbose`, integer >= 0. Default 0.
    estimator: "gnb" (Sophia-G, needs `logits_fn=`), "hutchinson" (Sophia-H, needs `loss_fn=`)
      or a callable as `hessian_diagonal_fn`.
    seed: seed of the state's PRNG key; None: pass `key=` to every update.
    state_storage: storage format of m and h.

  Returns:
    An `optax.GradientTransformationExtraArgs`; `state` holds `unclipped_fraction`, the
    tuning signal the authors recommend (measured at each refresh).

  Example:
    >>> tx = optimkit.sophia(2e-4, seed=0)
    >>> updates, state = tx.update(grads, state, params, logits_fn=lambda p: model(p, x))

  Where optimkit differs from optax.contrib.sophia: the authors' defaults (eps, weight decay,
  gamma) and estimator (Gauss-Newton-Bartlett by default); optax's draws its own probes.
  """
  if hessian_diagonal_fn is not None:
    if isinstance(hessian_diagonal_fn, optax.GradientTransformation) or \
        not callable(hessian_diagonal_fn):
      raise ValueError("sophia: hessian_diagonal_fn must be a callable (params, key, "
                       "**extra_args) -> diagonal estimate; for Hutchinson's estimator pass "
                       f"estimator='hutchinson'. Got {hessian_diagonal_fn!r}")
    estimator = hessian_diagonal_fn
  if gamma is None:
    gamma = _GAMMA.get(estimator, 0.04) if isinstance(estimator, str) else 0.04
  direction = scale_by_sophia(
      b1, b2, gamma, eps, update_interval, estimator, seed, state_storage=state_storage,
      clip_threshold=clip_threshold,
      mu_storage=mu_storage_of("sophia", mu_dtype),
      print_win_rate_every_n_steps=print_win_rate_every_n_steps if verbose else 0)
  return optax.chain(direction, optax.add_decayed_weights(weight_decay, weight_decay_mask),
                     optax.scale_by_learning_rate(learning_rate))
