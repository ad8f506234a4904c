"""The problem shared by the multi-process test and its single-process reference."""

import jax.numpy as jnp
import numpy as np

import optimkit

STEPS_BEFORE, STEPS_AFTER = 3, 3


def host_params():
  rng = np.random.default_rng(0)
  return {"w": rng.normal(size=(16, 64)).astype(np.float32),
          "v": rng.normal(size=(32,)).astype(np.float32),
          "emb": rng.normal(size=(128, 64)).astype(np.float32)}


def loss_fn(params):
  return sum(jnp.sum(jnp.sin(x) ** 2) for x in params.values())


def make_tx():
  return optimkit.adamw(1e-2, weight_decay=0.1)
