"""The problem shared by the multi-process Muon test and its single-process reference."""

import numpy as np
from jax.sharding import PartitionSpec as P

import optimkit

STEPS = 3
SPECS = {"q": P("data", "model"), "up": P("data", "model"), "down": P("model", "data"),
         "stack": P(None, "data", "model"), "bias": P("model")}


def host_params():
  rng = np.random.default_rng(0)
  shapes = {"q": (32, 32), "up": (32, 128), "down": (128, 32), "stack": (6, 32, 32),
            "bias": (128,)}
  return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def grads_at(step):
  return {k: np.cos(v * (step + 1)).astype(np.float32) for k, v in host_params().items()}


def make_tx():
  return optimkit.muon(0.02, ns_dtype=None, weight_decay=0.1)
