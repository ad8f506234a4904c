"""Decoupled weight decay (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization",
arXiv:1711.05101) and the mask that keeps it off biases and normalisation scales.

    u <- u + weight_decay * w          (before the learning rate: the step is lr * (u + wd * w))

`optax.add_decayed_weights` does this and is reused as is; this module adds the mask that
every published recipe uses and optax leaves to the user.
"""

from __future__ import annotations

from typing import Any

import jax

from optimkit.transforms._util import path_keys

#: Leaf names that are never decayed: biases and the scales/offsets of normalisation layers.
NO_DECAY_NAMES = frozenset({"bias", "b", "scale", "gamma", "beta", "embedding_norm"})


def weight_decay_mask(params: Any) -> Any:
  """True for leaves to decay: rank >= 2 and not named like a bias or a norm scale.

  Rank-1 leaves (biases, LayerNorm/RMSNorm scales) and scalars are excluded, and so are leaves
  named in `NO_DECAY_NAMES` whatever their rank (scan-stacked norm scales are rank 2). Use it as
  `mask=optimkit.weight_decay_mask` in any optimizer.
  """

  def decide(path, leaf):
    names = path_keys(path)
    return getattr(leaf, "ndim", 0) >= 2 and (not names or names[-1] not in NO_DECAY_NAMES)

  return jax.tree_util.tree_map_with_path(decide, params)
