"""One of two processes (4 CPU devices each) of the multi-process test in tests/test_sharding.py:
sharded AdamW steps with ZeRO-1 on a global 2 x 4 mesh, an Orbax save and restore in the middle,
then the final params written by process 0."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax  # noqa: E402

process_id, port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=process_id)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import optimkit  # noqa: E402
from tests.multiprocess_problem import STEPS_BEFORE, STEPS_AFTER, host_params, loss_fn, make_tx  # noqa: E402

assert jax.device_count() == 8 and jax.local_device_count() == 4
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
specs = {"w": P("data", "model"), "v": P("model"), "emb": P(None, "model")}
host = host_params()
params = {k: jax.make_array_from_callback(v.shape, NamedSharding(mesh, specs[k]),
                                          lambda index, v=v: v[index])
          for k, v in host.items()}
tx = make_tx()
shardings = optimkit.sharding.state_shardings(tx, params, zero1_axis="data")
param_shardings = jax.tree.map(lambda p: p.sharding, params)


def step(params, state):
  grads = jax.grad(loss_fn)(params)
  updates, state = tx.update(grads, state, params)
  return optax.apply_updates(params, updates), state


run = jax.jit(step, out_shardings=(param_shardings, shardings))
state = optimkit.sharding.sharded_init(tx, params, zero1_axis="data")
for _ in range(STEPS_BEFORE):
  params, state = run(params, state)
path = os.path.join(out_dir, "checkpoint")
optimkit.checkpoint.save(path, state)
state = optimkit.checkpoint.restore(path, tx, params, zero1_axis="data")
for _ in range(STEPS_AFTER):
  params, state = run(params, state)
gathered = multihost_utils.process_allgather(params, tiled=True)
if process_id == 0:
  np.savez(os.path.join(out_dir, "params.npz"), **{k: np.asarray(v) for k, v in gathered.items()})
print(f"process {process_id} done", flush=True)
