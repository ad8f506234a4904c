"""What the shared tests need to run any optimizer in `optimkit.registry`: a small problem whose
gradients depend on the params, and the extra arguments an optimizer's `update` asks for
(`info.needs`). A new optimizer is covered by being declared; nothing here lists optimizers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import optimkit

# A matrix big enough to be quantized (>= 4096 elements) and factored, a rank-3 stack, a vector,
# a scalar: every relation a state leaf can have to its param.
SHAPES = {"matrix": (64, 128), "stack": (2, 8, 16), "vector": (16,), "scalar": ()}
STORAGES = ("float32", "bfloat16", "8bit", "4bit")
_X = np.random.default_rng(7).normal(size=(4, 64))


def names() -> list[str]:
  return optimkit.registry.names()


def make(name: str, **kwargs):
  """The optimizer at its typical learning rate (or the given arguments)."""
  info = optimkit.registry.get(name)
  if "learning_rate" not in kwargs:
    kwargs["learning_rate"] = info.typical_lr
  return info.make(**kwargs)


def supports_storage(name: str) -> bool:
  import inspect
  return "state_storage" in inspect.signature(optimkit.registry.get(name).make).parameters


def lr_is_schedulable(name: str) -> bool:
  """Whether the optimizer's learning_rate may be a schedule (typed ScalarOrSchedule). Rprop's
  is the initial per-coordinate step size, a number, as in optax."""
  import inspect
  annotation = inspect.signature(optimkit.registry.get(name).make).parameters["learning_rate"]
  return "Schedule" in str(annotation.annotation)


def params(dtype=jnp.float32, seed: int = 0, scale: float = 1.0) -> dict:
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(scale * rng.normal(size=s), dtype) for k, s in SHAPES.items()}


def target(seed: int = 1, scale: float = 1.0) -> dict:
  rng = np.random.default_rng(seed)
  return {k: scale * rng.normal(size=s) for k, s in SHAPES.items()}


def loss(params: dict, goal: dict) -> jax.Array:
  return sum(jnp.sum((params[k].astype(jnp.float32) - goal[k]) ** 2) for k in params) / 2


def logits_fn_for(params_like):
  del params_like

  def logits_fn(p):
    # Every leaf the optimizer holds takes part (inside optax.masked, the others are
    # MaskedNodes, which jax.tree.leaves skips).
    logits = jnp.zeros((4, 10), jnp.float32)
    if hasattr(p["matrix"], "astype"):
      logits = jnp.asarray(_X, jnp.float32) @ p["matrix"].astype(jnp.float32)[:, :10]
    for leaf in jax.tree.leaves(p):
      logits = logits + jnp.tanh(jnp.mean(leaf.astype(jnp.float32) ** 2))
    return jnp.tanh(logits)
  return logits_fn


def extra_args(name: str, params_value: dict, goal: dict, step: int) -> dict:
  """The extra arguments `update` needs for this optimizer, for one step."""
  info = optimkit.registry.get(name)
  extra = {}
  for need in info.needs:
    if need == "logits_fn":
      extra["logits_fn"] = logits_fn_for(params_value)
    elif need == "loss_fn":
      extra["loss_fn"] = lambda p: loss(p, goal)
    elif need == "key":
      extra["key"] = jax.random.key(step)
    else:
      raise AssertionError(f"registry_harness: {name} needs {need!r}, which this harness does not "
                           f"know how to give; teach it in tests/registry_harness.py")
  return extra


def grads(params_value: dict, goal: dict) -> dict:
  return jax.grad(loss)(params_value, goal)
