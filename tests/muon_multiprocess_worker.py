"""One of two processes (4 CPU devices each) of the multi-process Muon test in
tests/test_matrix_work.py: `optimkit.muon` steps on a global 2 x 4 mesh, the Newton-Schulz work
laid out over both processes' devices by `map_matrices`; process 0 writes the final params."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax  # noqa: E402

process_id, port, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=process_id)

import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402

import optimkit  # noqa: E402
from tests.muon_multiprocess_problem import (  # noqa: E402
    SPECS, STEPS, grads_at, host_params, make_tx)

assert jax.device_count() == 8 and jax.local_device_count() == 4
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
host = host_params()
place = lambda tree: {k: jax.make_array_from_callback(v.shape, NamedSharding(mesh, SPECS[k]),
                                                      lambda index, v=v: v[index])
                      for k, v in tree.items()}
params = place(host)
tx = make_tx()
shardings = optimkit.sharding.state_shardings(tx, params)
param_shardings = jax.tree.map(lambda p: p.sharding, params)


def step(params, state, grads):
  updates, state = tx.update(grads, state, params)
  return optax.apply_updates(params, updates), state


with jax.set_mesh(mesh):
  run = jax.jit(step, out_shardings=(param_shardings, shardings))
  state = optimkit.sharding.sharded_init(tx, params)
  for t in range(STEPS):
    params, state = run(params, state, place(grads_at(t)))
  hlo = run.lower(params, state, place(grads_at(0))).compile().as_text()
gathered = multihost_utils.process_allgather(params, tiled=True)
if process_id == 0:
  np.savez(os.path.join(out_dir, "params.npz"), **{k: np.asarray(v) for k, v in gathered.items()})
  with open(os.path.join(out_dir, "collectives.txt"), "w") as f:
    f.write("all-to-all" if "all-to-all" in hlo else "none")
print(f"process {process_id} done", flush=True)
