"""Optimizer trajectories on the saddle f(x, y) = x^2 - y^2, drawn to a PNG: from just off the
saddle point, which optimizers escape along y and how fast.

    python examples/saddle_trajectories.py [--steps 60] [--out saddle.png]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimkit

OPTIMIZERS = {
    "SGD": optimkit.sgd(0.05),
    "momentum": optimkit.sgd(0.05, momentum=0.9),
    "Nesterov": optimkit.sgd(0.05, momentum=0.9, nesterov=True),
    "AdaGrad": optimkit.adagrad(0.3),
    "RMSprop": optimkit.rmsprop(0.05),
    "Adam": optimkit.adam(0.1),
    "AdamW": optimkit.adamw(0.1, weight_decay=0.1),
    "Lion": optimkit.lion(0.05, weight_decay=0.0),
    "Adafactor": optimkit.adafactor(0.1, relative_step=False, multiply_by_parameter_scale=False),
}


def saddle(params):
  x, y = params["xy"]
  return x ** 2 - y ** 2


def trajectory(tx, steps: int) -> np.ndarray:
  params = {"xy": jnp.asarray([0.7, 1e-3])}
  state = tx.init(params)
  points = [np.asarray(params["xy"])]
  update = jax.jit(lambda p, s: tx.update(jax.grad(saddle)(p), s, p))
  for _ in range(steps):
    updates, state = update(params, state)
    params = optax.apply_updates(params, updates)
    points.append(np.asarray(params["xy"]))
  return np.stack(points)


def main(steps: int, out: str) -> dict:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  paths = {name: trajectory(tx, steps) for name, tx in OPTIMIZERS.items()}
  grid = np.linspace(-1.0, 1.0, 200)
  gx, gy = np.meshgrid(grid, grid)
  figure, axis = plt.subplots(figsize=(7, 6))
  axis.contour(gx, gy, gx ** 2 - gy ** 2, levels=20, cmap="gray", alpha=0.4)
  for name, path in paths.items():
    axis.plot(path[:, 0], path[:, 1], marker=".", markersize=3, label=name)
  axis.set_xlim(-1, 1)
  axis.set_ylim(-1, 1)
  axis.set_xlabel("x")
  axis.set_ylabel("y")
  axis.set_title(f"f(x, y) = x^2 - y^2, start (0.7, 0.001), {steps} steps")
  axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(out, dpi=110)
  for name, path in paths.items():
    print(f"{name:<10} final (x, y) = ({path[-1, 0]:+.3f}, {path[-1, 1]:+.3f})")
  print(f"wrote {out}")
  return paths


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--out", default="saddle.png")
  args = parser.parse_args()
  main(args.steps, args.out)
