"""Schedule-free AdamW: no learning-rate schedule, train on y, evaluate on the averaged x.

    python examples/schedule_free_training.py [--steps 1000]
"""

import argparse

import jax
import jax.numpy as jnp
import optax

import optimkit


def main(steps: int) -> tuple[float, float]:
  key_x, key_w, key_n = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(key_x, (1024, 32))
  true_w = jax.random.normal(key_w, (32,))
  y = x @ true_w + 0.5 * jax.random.normal(key_n, (1024,))  # noisy: averaging pays off
  loss_fn = lambda params, xb, yb: jnp.mean((xb @ params["w"] - yb) ** 2)

  tx = optimkit.schedule_free_adamw(0.05, warmup_steps=steps // 20)
  params = {"w": jnp.zeros(32)}
  state = tx.init(params)

  @jax.jit
  def train_step(params, state, step):
    batch = jax.random.choice(jax.random.fold_in(jax.random.key(1), step), 1024, (32,))
    grads = jax.grad(loss_fn)(params, x[batch], y[batch])
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for step in range(steps):
    params, state = train_step(params, state, step)
  y_loss = float(loss_fn(params, x, y))
  x_loss = float(loss_fn(optimkit.schedule_free_eval_params(state, params), x, y))
  print(f"full-data loss at the training point y: {y_loss:.4f}")
  print(f"full-data loss at the averaged point x: {x_loss:.4f}  (evaluate and checkpoint this)")
  return y_loss, x_loss


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=1000)
  main(parser.parse_args().steps)
