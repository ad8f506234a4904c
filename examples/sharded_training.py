"""Train a small Flax NNX model on 8 simulated CPU devices with ZeRO-1 optimizer state and an
Orbax checkpoint/resume in the middle; the resumed run ends exactly where an uninterrupted one
does.

    python examples/sharded_training.py [--steps 40]

On a real TPU/GPU slice drop the XLA_FLAGS line: the same code uses the real devices.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import optimkit  # noqa: E402


class MLP(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(32, 256, rngs=rngs)
    self.out = nnx.Linear(256, 8, rngs=rngs)

  def __call__(self, x):
    return self.out(jax.nn.gelu(self.hidden(x)))


def main(steps: int) -> float:
  mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
  graphdef, params = nnx.split(MLP(nnx.Rngs(0)), nnx.Param)
  params = nnx.to_pure_dict(params)
  # Tensor parallel over "model" for the kernels; data parallel over "data".
  specs = {"hidden": {"kernel": P(None, "model"), "bias": P("model")},
           "out": {"kernel": P("model", None), "bias": P()}}
  params = jax.tree.map(lambda p, s: jax.device_put(p, NamedSharding(mesh, s)), params, specs,
                        is_leaf=lambda x: isinstance(x, P))
  x = jax.device_put(jax.random.normal(jax.random.key(1), (256, 32)),
                     NamedSharding(mesh, P("data")))
  y = jnp.tanh(x[:, :8] * 2.0)

  tx = optimkit.adamw(3e-3, weight_decay=0.01, mask=optimkit.weight_decay_mask)
  state_shardings = optimkit.sharding.state_shardings(tx, params, zero1_axis="data")
  param_shardings = jax.tree.map(lambda p: p.sharding, params)

  def loss_fn(params):
    model = nnx.merge(graphdef, nnx.State(params))
    return jnp.mean((model(x) - y) ** 2)

  def train_step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  train_step = jax.jit(train_step, out_shardings=(param_shardings, state_shardings, None))

  def train(params, state, n):
    for _ in range(n):
      params, state, loss = train_step(params, state)
    return params, state, float(loss)

  state = optimkit.sharding.sharded_init(tx, params, zero1_axis="data")
  per_device = optimkit.sharding.bytes_per_device(state)
  print(f"optimizer state per device with ZeRO-1: {max(per_device.values())} bytes "
        f"(of {sum(per_device.values())} in all)")
  straight, _, loss = train(params, state, steps)
  print(f"uninterrupted: loss {loss:.5f} after {steps} steps")

  half, state, _ = train(params, optimkit.sharding.sharded_init(tx, params, zero1_axis="data"),
                         steps // 2)
  with tempfile.TemporaryDirectory() as directory:
    optimkit.checkpoint.save(os.path.join(directory, "optimizer"), state)
    restored = optimkit.checkpoint.restore(os.path.join(directory, "optimizer"), tx, half,
                                           zero1_axis="data")
  resumed, _, loss = train(half, restored, steps - steps // 2)
  same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(straight),
                                                   jax.tree.leaves(resumed)))
  print(f"checkpointed at step {steps // 2} and resumed: loss {loss:.5f}; "
        f"bit-identical to uninterrupted: {same}")
  return loss


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=40)
  main(parser.parse_args().steps)
