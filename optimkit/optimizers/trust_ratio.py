"""Layer-wise trust ratios: LAMB and LARS, the large-batch optimizers."""

from __future__ import annotations

import jax
import optax

from optimkit.optimizers._declare import Mask, ScalarOrSchedule, optimizer, structural
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import bias_correction, leaf_scalars, option_tree
from optimkit.transforms.moments import adam_ratio, scale_by_adam, scale_by_momentum
from optimkit.transforms.trust_ratio import (
  StackDims,
  scale_by_lars,
  trust_ratio_chain,
)


@optimizer(family="trust_ratio", typical_lr=3e-3, optax="lamb",
           reference="optax.lamb (the paper's algorithm); stacked layers against the unstacked "
                     "model")
def lamb(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: Mask = None,
    *,
    stack_dims: StackDims = structural(0),
    trust_ratio_mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """LAMB (You et al. 2019): Adam's ratio plus decay, scaled per layer by ||w|| / ||u||.

      u_t = m_hat / (sqrt(v_hat + eps_root) + eps) + weight_decay w_{t-1}
      w_t = w_{t-1} - lr (||w_{t-1}|| / ||u_t||) u_t        (ratio 1 where a norm is 0)

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-3.
    b1, b2: moment decays. Defaults 0.9, 0.999.
    eps, eps_root: stabilisers outside / inside the root. Defaults 1e-6, 0.
    weight_decay: decoupled decay, >= 0. Default 0.
    mask: the leaves that decay.
    stack_dims: leading dims of scan-stacked layers, one ratio per slice: an int for every
      leaf, a tree of ints, or a callable params -> tree. Default 0. Structural.
    trust_ratio_mask: the leaves that get a ratio (the others take the plain step). Default all.
    state_storage: storage format of the moments.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.lamb(2e-3, weight_decay=0.01, mask=optimkit.weight_decay_mask)

  Equals optax.lamb (per leaf; with `stack_dims`, equals it on the unstacked model).
  """
  store = resolve(state_storage)

  def again(grads, state, params):
    # Adam's ratio plus the decay, from the moments just written (see trust_ratio_chain).
    adam_state = state[0]
    # Adam's bias corrections once for every leaf (as adam_direction computes them), then made
    # each leaf's own: made per leaf before the powers, they were two scalar kernels a leaf.
    corrections = (bias_correction(b1, adam_state.count), bias_correction(b2, adam_state.count))

    def leaf(g, mu, nu, w, decay):
      # The scalars made the leaf's own, so that no broadcast of one is shared by the norms of
      # several same-shaped leaves (trust_ratio_chain).
      correction1, correction2, eps_, eps_root_, decay_rate = leaf_scalars(
          g, *corrections, eps, eps_root, weight_decay)
      u = adam_ratio(g, store.read_leaf(mu, g, signed=True), store.read_leaf(nu, g, signed=False),
                     correction1, correction2, eps_, eps_root_)
      return u + decay_rate * w if decay else u

    return jax.tree.map(leaf, grads, adam_state.mu, adam_state.nu, params,
                        option_tree(mask, params, True))

  # optax.chain(scale_by_adam, add_decayed_weights, scale_by_trust_ratio, learning rate), state
  # and all; the norms read the new moments instead of a stored update (trust_ratio_chain).
  return trust_ratio_chain(
      [scale_by_adam(b1, b2, eps, eps_root, state_storage=state_storage),
       optax.add_decayed_weights(weight_decay, mask)],
      [optax.scale_by_learning_rate(learning_rate)],
      again,
      stack_dims=stack_dims, mask=trust_ratio_mask)


@optimizer(family="trust_ratio", typical_lr=1.0, optax="lars",
           reference="pytorch-optimizer LARS (the paper's denominator)")
def lars(
    learning_rate: ScalarOrSchedule = 1e-1,
    weight_decay: float = 0.0,
    weight_decay_mask: Mask = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: Mask = True,
    momentum: float = 0.9,
    nesterov: bool = False,
    *,
    stack_dims: StackDims = structural(0),
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """LARS (You, Gitman & Ginsburg 2017, Algorithm 1).

      lambda = trust_coefficient ||w|| / (||g|| + weight_decay ||w|| + eps)   (1 if a norm is 0)
      v_t = momentum v_{t-1} + lr lambda (g_t + weight_decay w_{t-1});   w_t = w_{t-1} - v_t

  Args:
    learning_rate: a float >= 0 or a schedule. Default 0.1.
    weight_decay: beta, >= 0. Default 0.
    weight_decay_mask: the leaves that decay: True (all, optax's default), a tree of bools or a
      callable.
    trust_coefficient: eta, > 0. Default 0.001.
    eps: added to the denominator, >= 0. Default 0.
    trust_ratio_mask: the leaves that get the local rate (True: all). The usual practice
      excludes biases and norm scales from both masks (`optimkit.weight_decay_mask`).
    momentum: momentum of the scaled step, [0, 1). Default 0.9.
    nesterov: Nesterov momentum. Default False.
    stack_dims: leading stack dims with one rate per slice (see `lamb`). Structural.
    state_storage: storage format of the momentum.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.lars(1.0, weight_decay=1e-4, weight_decay_mask=optimkit.weight_decay_mask,
    ...                    trust_ratio_mask=optimkit.weight_decay_mask)

  Where optax differs: optax.lars divides by ||g + weight_decay w||; this follows the paper's
  ||g|| + weight_decay ||w||. The two agree without weight decay.
  """
  return optax.chain(
      scale_by_lars(trust_coefficient, weight_decay, eps, weight_decay_mask, trust_ratio_mask,
                    stack_dims),
      optax.scale_by_learning_rate(learning_rate),
      scale_by_momentum(momentum, nesterov, state_storage=state_storage))
