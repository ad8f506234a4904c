"""A Flax Linen `TrainState` loop with optimkit's Lion, and a learning-rate change mid-run
without recompiling (hyperparameters live in the optimizer state).

    python examples/linen_train_state.py [--steps 300]
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.training import train_state

import optimkit


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(jax.nn.gelu(nn.Dense(64)(x)))


def main(steps: int) -> float:
  x = jax.random.normal(jax.random.key(0), (256, 4))
  y = jnp.tanh(x @ jnp.asarray([[1.0], [-2.0], [0.5], [0.0]]))
  model = MLP()
  state = train_state.TrainState.create(
      apply_fn=model.apply, params=model.init(jax.random.key(1), x)["params"],
      tx=optimkit.lion(3e-4, weight_decay=0.1, mask=optimkit.weight_decay_mask))

  @jax.jit
  def train_step(state):
    loss_fn = lambda p: jnp.mean((state.apply_fn({"params": p}, x) - y) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  compiled_before_change = None
  for step in range(steps):
    if step == steps // 2:  # anneal by hand: no recompilation, the rate is state
      compiled_before_change = train_step._cache_size()
      state = state.replace(opt_state=optimkit.set_hyperparams(state.opt_state,
                                                               learning_rate=1e-4))
    state, loss = train_step(state)
    if step % max(1, steps // 5) == 0 or step == steps - 1:
      print(f"step {step:4d}  loss {float(loss):.5f}")
  # (TrainState.create starts `step` as a Python int, so the second call compiles once more.)
  print(f"compilations of train_step before the learning-rate change: {compiled_before_change}, "
        f"at the end: {train_step._cache_size()}")
  return float(loss)


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=300)
  main(parser.parse_args().steps)
