"""A Flax NNX training loop with an optimkit chain: clipping, AdamW with a warmup-cosine
schedule, weight decay kept off biases and norms, and non-finite steps skipped.

    python examples/nnx_training.py [--steps 300]
"""

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import optimkit


class MLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(2, 64, rngs=rngs)
    self.norm = nnx.LayerNorm(64, rngs=rngs)
    self.out = nnx.Linear(64, 1, rngs=rngs)

  def __call__(self, x):
    return self.out(self.norm(jax.nn.gelu(self.hidden(x))))


def main(steps: int) -> float:
  x = jax.random.uniform(jax.random.key(0), (512, 2), minval=-2, maxval=2)
  y = jnp.sin(x[:, :1] * 2) * jnp.cos(x[:, 1:])  # a smooth 2-D target

  model = MLP(nnx.Rngs(0))
  schedule = optimkit.schedules.warmup_cosine(0.0, 3e-3, steps // 10, steps, end_value=3e-4)
  tx = optimkit.skip_nonfinite(optax.chain(
      optax.clip_by_global_norm(1.0),
      optimkit.adamw(schedule, weight_decay=0.01, mask=optimkit.weight_decay_mask)))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  for step in range(steps):
    loss = train_step(model, optimizer)
    if step % max(1, steps // 5) == 0 or step == steps - 1:
      print(f"step {step:4d}  loss {float(loss):.5f}")
  return float(loss)


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=300)
  main(parser.parse_args().steps)
