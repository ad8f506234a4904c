"""Save and restore optimizer state with Orbax, onto any mesh.

    optimkit.checkpoint.save(path, state)
    state = optimkit.checkpoint.restore(path, tx, params)            # params' mesh and shardings
    state = optimkit.checkpoint.restore(path, tx, params, zero1_axis="data")

The target structure comes from `tx.init` (evaluated abstractly), so NamedTuples come back as
NamedTuples, quantized moments as their quantized types, and each leaf is read directly into the
sharding `optimkit.sharding` derives for the *current* params, whatever mesh the checkpoint was
written from. Orbax ships with Flax; nothing else is needed.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import optax
import orbax.checkpoint as ocp

from optimkit import sharding as sharding_lib


def save(path: str, state: Any, force: bool = False) -> str:
  """Writes `state` (any pytree of arrays) to the directory `path` and waits until it is
  complete. Orbax writes to a temporary directory and renames it at the end, so an interrupted
  save never leaves a half-written checkpoint at `path`."""
  path = os.path.abspath(path)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, state, force=force)
  checkpointer.wait_until_finished()
  return path


def abstract_state(tx: optax.GradientTransformation, params: Any, mesh=None, specs: Any = None,
                   zero1_axis: str | None = None) -> Any:
  """ShapeDtypeStructs of `tx.init(params)`, each carrying its derived sharding."""
  shapes = jax.eval_shape(tx.init, params)
  shardings = sharding_lib.state_shardings(tx, params, mesh, specs, zero1_axis)
  return jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                      shapes, shardings)


def restore(path: str, tx: optax.GradientTransformation, params: Any, mesh=None,
            specs: Any = None, zero1_axis: str | None = None) -> Any:
  """Reads the optimizer state saved at `path` for `tx` and `params`, sharded like `params`
  (or `specs` on `mesh`), with ZeRO-1 over `zero1_axis` if given."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint.restore: no checkpoint directory at {path}")
  target = abstract_state(tx, params, mesh, specs, zero1_axis)
  return ocp.StandardCheckpointer().restore(path, target)
