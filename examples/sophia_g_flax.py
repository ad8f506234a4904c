"""Sophia-G in a Flax NNX train step: the logits function goes to the optimizer through extra
arguments, so every 10 steps it can sample labels from the model and estimate the Hessian
diagonal (Gauss-Newton-Bartlett). The key is the step's, identical on every device.

    python examples/sophia_g_flax.py [--steps 200]
"""

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import optimkit


class Classifier(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(16, 64, rngs=rngs)
    self.out = nnx.Linear(64, 4, rngs=rngs)

  def __call__(self, x):
    return self.out(jax.nn.relu(self.hidden(x)))


def main(steps: int) -> float:
  x = jax.random.normal(jax.random.key(0), (512, 16))
  labels = jnp.argmax(x[:, :4] + 0.3 * x[:, 4:8], axis=-1)
  model = Classifier(nnx.Rngs(0))
  tx = optimkit.sophia(3e-3, gamma=0.05, weight_decay=0.01, update_interval=10)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)

  @nnx.jit
  def train_step(model, optimizer, step):
    loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    logits_fn = lambda params: nnx.merge(graphdef, params, rest)(x)
    optimizer.update(model, grads, logits_fn=logits_fn,
                     key=jax.random.fold_in(jax.random.key(42), step))
    return loss

  for step in range(steps):
    loss = train_step(model, optimizer, step)
    if step % max(1, steps // 5) == 0 or step == steps - 1:
      fraction = optax.tree_utils.tree_get(optimizer.opt_state, "unclipped_fraction")
      print(f"step {step:4d}  loss {float(loss):.4f}  unclipped {float(fraction[...]):.2f}")
  return float(loss)


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=200)
  main(parser.parse_args().steps)
