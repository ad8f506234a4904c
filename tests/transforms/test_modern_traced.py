"""The ADOPT, AdEMAMix, Simplified AdEMAMix, MARS and CAME primitives with every numeric
hyperparameter a traced array, the warmup lengths included (as the declaration layer hands them
to the body): the updates under jit equal those built from Python floats. Storage formats are
covered for the declared optimizers by tests/optimizers/test_contract.py."""

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

PARAMS = {"matrix": jnp.linspace(-1.0, 1.0, 48).reshape(8, 6),
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


def _traced_run(name):
  """The run with traced hyperparameters."""
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
