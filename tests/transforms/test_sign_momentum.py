"""Lion against the authors' PyTorch port (lion-pytorch) and optax.lion, 120 steps; its step
compiles to one in-place pass."""

import jax
import jax.numpy as jnp
import optax
import pytest

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch


# b2 = 0.99: the direction reads m_{t-1} recovered from m_t (one pass); b2 = 0.3: below
# PREVIOUS_EMA_MIN_DECAY the direction reads the stored m_{t-1} directly.
@pytest.mark.parametrize("b1, b2", [(0.9, 0.99), (0.6, 0.3)])
def test_lion_matches_lion_pytorch_and_optax(b1, b2):
  from lion_pytorch import Lion

  problem = Problem(seed=2)
  ours = run_optax(optimkit.lion(3e-3, b1=b1, b2=b2, weight_decay=0.5), problem)
  ref = run_torch(lambda p: Lion(p, lr=3e-3, betas=(b1, b2), weight_decay=0.5), problem)
  assert_parity(ours, ref, label=f"lion{(b1, b2)} vs lion-pytorch")
  other = run_optax(optax.lion(3e-3, b1=b1, b2=b2, weight_decay=0.5), problem)
  assert_parity(ours, other, label=f"lion{(b1, b2)} vs optax")


@pytest.mark.parametrize("make", [lambda: optimkit.lion(1e-4), lambda: optimkit.adams(1e-3)],
                         ids=["lion", "adams"])
def test_donated_step_updates_the_momentum_in_place(make):
  # Reading m_{t-1} in two places made XLA copy every donated momentum buffer before writing it
  # (3.5x the step time of Lion on 25M parameters); the compiled step must have no such copy.
  tx = make()
  params = {"w": jax.ShapeDtypeStruct((256, 512), jnp.float32),
            "b": jax.ShapeDtypeStruct((512,), jnp.float32)}
  state = jax.eval_shape(tx.init, params)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  hlo = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile().as_text()
  entry = hlo[hlo.index("ENTRY"):]
  copies = [line for line in entry.splitlines() if " copy(" in line and "f32[]" not in line]
  assert not copies, copies
