"""A training run that checkpoints every SAVE_EVERY steps and can be killed (SIGKILL, by itself)
in the middle of a chosen save; run by tests/test_checkpoint_faults.py.

    python checkpoint_fault_worker.py OPTIMIZER DIRECTORY TOTAL_STEPS [KILL_AT_STEP FAULT]

It resumes from the newest complete checkpoint in DIRECTORY if there is one, trains to
TOTAL_STEPS and writes the final params and state to DIRECTORY/final.npz. FAULT is where in the
save at KILL_AT_STEP the process dies:
  after_tmp_dir   Orbax has created the temporary directory, no array written yet;
  while_writing   after the third array is written, the others not yet;
  before_commit   every array and the metadata written, just before the atomic rename.
"""

import os
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from orbax.checkpoint._src.path import atomicity
from orbax.checkpoint._src.serialization import serialization

import optimkit
from optimkit import checkpoint

SAVE_EVERY = 2
OPTIMIZERS = {
    "adamw": lambda: optimkit.adamw(1e-2, weight_decay=0.1),
    "adamw_4bit": lambda: optimkit.adamw_4bit(1e-2),  # quantized state (the 64 x 128 kernel)
    "sophia": lambda: optimkit.sophia(1e-3, estimator="hutchinson", seed=0),  # random key state
}


def die(where: str) -> None:
  print(f"KILLED {where}", flush=True)
  os.kill(os.getpid(), signal.SIGKILL)


def arm(fault: str) -> None:
  """Makes the next save kill this process at the chosen point."""
  if fault == "after_tmp_dir":
    original = atomicity._create_tmp_directory  # pylint: disable=protected-access

    async def create_then_die(*args, **kwargs):
      path = await original(*args, **kwargs)
      die(f"after creating {os.path.basename(str(path))}")
    atomicity._create_tmp_directory = create_then_die  # pylint: disable=protected-access
  elif fault == "before_commit":
    async def rename_never(source, destination):
      die(f"before renaming {os.path.basename(str(source))}")
    atomicity.async_path.rename = rename_never
  elif fault == "while_writing":
    original = serialization.async_serialize_from_host
    written = []

    async def write_then_maybe_die(*args, **kwargs):
      await original(*args, **kwargs)
      written.append(1)
      if len(written) == 3:
        die("after writing 3 arrays")
    serialization.async_serialize_from_host = write_then_maybe_die
  else:
    raise SystemExit(f"unknown fault {fault}")


def main(name: str, directory: str, total_steps: int, kill_at: int | None, fault: str | None):
  rng = np.random.default_rng(0)
  inputs = jnp.asarray(rng.normal(size=(64, 32)), jnp.float32)
  targets = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
  params = {"hidden": jnp.asarray(rng.normal(size=(32, 128)) * 0.1, jnp.float32),
            "kernel": jnp.asarray(rng.normal(size=(128, 8)) * 0.1, jnp.float32),
            "wide": jnp.asarray(rng.normal(size=(64, 128)) * 0.1, jnp.float32)}

  def loss_fn(p):
    hidden = jnp.tanh(inputs @ p["hidden"] + jnp.mean(p["wide"]))
    return jnp.mean((hidden @ p["kernel"] - targets) ** 2)

  tx = OPTIMIZERS[name]()

  @jax.jit
  def step(p, s):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, s = tx.update(grads, s, p, loss_fn=loss_fn)
    return optax.apply_updates(p, updates), s, loss

  state = tx.init(params)
  done = 0
  found = checkpoint.restore_latest(directory, tx, params)
  if found is not None:
    done, params, state = found
    print(f"RESUMED from step {done}", flush=True)
  for number in range(done + 1, total_steps + 1):
    params, state, _ = step(params, state)
    if number % SAVE_EVERY == 0:
      if number == kill_at:
        arm(fault)
      checkpoint.save_step(directory, number, params, state)
      print(f"SAVED step {number}", flush=True)
  leaves = jax.tree.leaves({"params": params, "opt_state": state})
  np.savez(os.path.join(directory, "final.npz"),
           *[np.asarray(jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
                        else leaf) for leaf in leaves])
  print("FINISHED", flush=True)


if __name__ == "__main__":
  arguments = sys.argv[1:]
  main(arguments[0], arguments[1], int(arguments[2]),
       int(arguments[3]) if len(arguments) > 3 else None,
       arguments[4] if len(arguments) > 4 else None)
