"""ADOPT, AdEMAMix, Simplified AdEMAMix, MARS and CAME with every numeric hyperparameter a traced
array (as the declaration layer hands them to the body) and with each storage format: the
trajectory under jit equals the one built from Python floats, and quantized / bfloat16 states
keep their formats."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optimkit.transforms.adopt import scale_by_adopt
from optimkit.transforms.ademamix import scale_by_ademamix, scale_by_simplified_ademamix
from optimkit.transforms.came import scale_by_came
from optimkit.transforms.mars import scale_by_mars

# name -> (factory(**numbers, state_storage=...), numbers)
PRIMITIVES = {
    "adopt": (lambda state_storage="float32", **h: scale_by_adopt(
        **h, state_storage=state_storage), dict(b1=0.9, b2=0.99, eps=1e-6)),
    "ademamix": (lambda state_storage="float32", **h: scale_by_ademamix(
        **h, state_storage=state_storage),
        dict(b1=0.9, b2=0.999, b3=0.999, alpha=5.0, eps=1e-8, eps_root=0.0, alpha_warmup=7.0,
             b3_warmup=9.0)),
    "simplified_ademamix": (lambda state_storage="float32", **h: scale_by_simplified_ademamix(
        **h, state_storage=state_storage),
        dict(b1=0.99, b2=0.95, alpha=1.0, eps=1e-8, b1_warmup=6.0, min_b1=0.9)),
    "mars": (lambda state_storage="float32", **h: scale_by_mars(
        **h, state_storage=state_storage), dict(b1=0.95, b2=0.99, gamma=0.025, eps=1e-8)),
    "came": (lambda state_storage="float32", **h: scale_by_came(
        **h, state_storage=state_storage),
        dict(b1=0.9, b2=0.999, b3=0.9999, eps1=1e-30, eps2=1e-16, clipping_threshold=1.0)),
}

PARAMS = {"matrix": jnp.linspace(-1.0, 1.0, 96 * 64).reshape(96, 64),
          "vector": jnp.linspace(0.5, -0.5, 7), "scalar": jnp.array(0.3)}


def _grads(step):
  return jax.tree.map(lambda p: jnp.cos(3.0 * p + step) - 0.2 * p, PARAMS)


def _run(make, hyperparams, state_storage="float32", steps=12):
  """Build the transform inside the jitted step from array hyperparameters, every step."""

  @jax.jit
  def step_fn(state, step, numbers):
    tx = make(state_storage=state_storage, **numbers)
    return tx.update(_grads(step), state, PARAMS)

  numbers = {k: jnp.asarray(v) for k, v in hyperparams.items()}
  state = make(state_storage=state_storage, **hyperparams).init(PARAMS)
  out = []
  for step in range(steps):
    updates, state = step_fn(state, step, numbers)
    out.append(updates)
  return out, state


@functools.lru_cache(maxsize=None)
def _traced_run(name):
  """The float32-storage run with traced hyperparameters, shared by both tests."""
  make, hyperparams = PRIMITIVES[name]
  return _run(make, hyperparams)[0]


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_traced_hyperparameters_match_python_numbers(name):
  make, hyperparams = PRIMITIVES[name]
  traced = _traced_run(name)
  tx = make(**hyperparams)  # Python-float hyperparameters, constants in the compiled step
  state, update = tx.init(PARAMS), jax.jit(lambda g, state: tx.update(g, state, PARAMS))
  for step, expected in enumerate(traced):
    updates, state = update(_grads(step), state)
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
      np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


# Every primitive in 8-bit (signed and unsigned maps); bfloat16 and 4-bit (rank-1 second
# moments) on one each, to keep the file cheap.
STORAGE_CASES = [(name, "8bit") for name in sorted(PRIMITIVES)] + [
    ("came", "bfloat16"), ("adopt", "4bit")]


@pytest.mark.parametrize("name, state_storage", STORAGE_CASES)
def test_storage_formats(name, state_storage):
  make, hyperparams = PRIMITIVES[name]
  exact = _traced_run(name)[:4]
  stored, state = _run(make, hyperparams, state_storage, steps=4)
  dtypes = {jnp.dtype(leaf.dtype) for leaf in jax.tree.leaves(state)}
  expected = jnp.dtype(jnp.bfloat16 if state_storage == "bfloat16" else jnp.uint8)
  assert expected in dtypes, f"{name}: no {state_storage} leaf in the state ({dtypes})"
  # Lossy, but the same optimizer: close to the float32 run on the large leaf. MARS-Lion and
  # the clipped directions are bounded; a relative tolerance on the norm is enough to catch a
  # moment read with the wrong sign convention or never written back.
  for a, b in zip(jax.tree.leaves(stored[-1]), jax.tree.leaves(exact[-1])):
    assert np.all(np.isfinite(a))
    assert a.dtype == b.dtype
  a, b = np.asarray(stored[-1]["matrix"]), np.asarray(exact[-1]["matrix"])
  assert np.linalg.norm(a - b) <= 0.2 * np.linalg.norm(b)
