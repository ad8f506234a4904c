"""Image classification on the 8x8 digits that ship with scikit-learn (no download): a small
Flax NNX MLP trained with several optimkit optimizers, test accuracy for each.

    python examples/digits_classification.py [--steps 300]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import optimkit


class MLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(64, 128, rngs=rngs)
    self.out = nnx.Linear(128, 10, rngs=rngs)

  def __call__(self, x):
    return self.out(jax.nn.relu(self.hidden(x)))


def train(tx, x_train, y_train, x_test, y_test, steps: int) -> float:
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, batch):
    loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(
        m(x_train[batch]), y_train[batch]).mean()
    grads = nnx.grad(loss_fn)(model)
    optimizer.update(model, grads)

  rng = np.random.default_rng(0)
  for _ in range(steps):
    train_step(model, optimizer, jnp.asarray(rng.integers(0, len(x_train), 64)))
  return float(jnp.mean(jnp.argmax(model(x_test), -1) == y_test))


def main(steps: int) -> dict:
  digits = load_digits()
  x = jnp.asarray(digits.data / 16.0, jnp.float32)
  y = jnp.asarray(digits.target)
  order = np.random.default_rng(0).permutation(len(x))
  train_idx, test_idx = order[:1400], order[1400:]
  optimizers = {
      "adamw": optimkit.adamw(3e-3),
      "lion": optimkit.lion(3e-4),
      "adafactor": optimkit.adafactor(1e-2),
      "sgd+nesterov": optimkit.sgd(0.1, momentum=0.9, nesterov=True),
      "adamw 4-bit state": optimkit.adamw_4bit(3e-3),
  }
  accuracy = {}
  for name, tx in optimizers.items():
    accuracy[name] = train(tx, x[train_idx], y[train_idx], x[test_idx], y[test_idx], steps)
    print(f"{name:<20} test accuracy {accuracy[name]:.3f}")
  return accuracy


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=300)
  main(parser.parse_args().steps)
