"""Save and restore optimizer state with Orbax, onto any mesh.

    optimkit.checkpoint.save(path, state)
    state = optimkit.checkpoint.restore(path, tx, params)            # params' mesh and shardings
    state = optimkit.checkpoint.restore(path, tx, params, zero1_axis="data")

For a training loop that may be killed at any moment (pre-emption), save params and state of a
step together and resume from the newest complete step:

    optimkit.checkpoint.save_step(directory, step, params, state)
    found = optimkit.checkpoint.restore_latest(directory, tx, params)   # None if nothing saved
    if found: step, params, state = found

Each step is one directory written under a temporary name and renamed when complete (Orbax's
atomic rename), so a process killed mid-save leaves the previous step intact and the partial one
invisible: `restore_latest` only sees `step_<N>` directories that finished.

The target structure comes from `tx.init` (evaluated abstractly), so NamedTuples come back as
NamedTuples, quantized moments as their quantized types, and each leaf is read directly into the
sharding `optimkit.sharding` derives for the *current* params, whatever mesh the checkpoint was
written from. Orbax ships with Flax; nothing else is needed.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import optax
import orbax.checkpoint as ocp

from optimkit import _checks
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


def _default_device() -> jax.sharding.Sharding:
  return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def abstract_state(tx: optax.GradientTransformation, params: Any, mesh=None, specs: Any = None,
                   zero1_axis: str | None = None) -> Any:
  """ShapeDtypeStructs of `tx.init(params)`, each carrying its derived sharding."""
  shapes = jax.eval_shape(tx.init, params)
  if mesh is None and not any(isinstance(getattr(leaf, "sharding", None), jax.sharding.NamedSharding)
                              for leaf in jax.tree.leaves(params)):
    # Params on one device (no mesh): the state goes to the default device.
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                          sharding=_default_device()), shapes)
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
  checkpointer = ocp.StandardCheckpointer()
  _check_fits(path, checkpointer.metadata(path).item_metadata.tree, target)
  return checkpointer.restore(path, target)


def _leaves_by_name(tree: Any) -> dict[str, tuple[int, ...]]:
  """Leaf shapes by Orbax's dotted names ("inner_state.0.mu.w"), whatever the containers."""
  def name(path):
    return ".".join(_checks.key_name(key) for key in path)
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, "shape") and not isinstance(x, (dict, list, tuple)))[0]
  return {name(path): tuple(leaf.shape) for path, leaf in leaves}


def _check_fits(path: str, saved: Any, target: Any) -> None:
  """Names the first leaf where the checkpoint and this optimizer's state differ, instead of
  Orbax's dump of every mismatching leaf deep in its reader."""
  have, want = _leaves_by_name(saved), _leaves_by_name(target)
  problem = None
  for name in want:
    if name not in have:
      problem = f"at {name}: this optimizer's state has a leaf the checkpoint does not have"
    elif have[name] != want[name]:
      problem = (f"at {name}: the checkpoint holds shape {have[name]} but this optimizer's state "
                 f"for these parameters has shape {want[name]}")
    if problem:
      break
  else:
    extra = [name for name in have if name not in want]
    if extra:
      problem = f"at {extra[0]}: the checkpoint has a leaf this optimizer's state does not have"
  if problem:
    raise ValueError(f"checkpoint.restore: the checkpoint at {path} does not hold this "
                     f"optimizer's state for these parameters {problem}. Restore with the "
                     f"optimizer and parameter shapes it was saved with.")


_STEP = re.compile(r"step_(\d+)")


def save_step(directory: str, step: int, params: Any, state: Any) -> str:
  """Writes params and optimizer state of `step` as one checkpoint, `directory/step_<step>`."""
  return save(os.path.join(directory, f"step_{step:08d}"),
              {"params": params, "opt_state": state})


def complete_steps(directory: str) -> list[int]:
  """The steps saved completely under `directory`, oldest first. An interrupted save's
  temporary directory does not match the `step_<N>` name and is never listed."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(match.group(1)) for name in os.listdir(directory)
                if (match := _STEP.fullmatch(name)))


def restore_latest(directory: str, tx: optax.GradientTransformation, params: Any, mesh=None,
                   specs: Any = None, zero1_axis: str | None = None
                   ) -> tuple[int, Any, Any] | None:
  """(step, params, state) of the newest complete step under `directory`, or None. `params`
  gives the shapes and shardings to restore into (the initial params serve)."""
  steps = complete_steps(directory)
  if not steps:
    return None
  path = os.path.abspath(os.path.join(directory, f"step_{steps[-1]:08d}"))
  param_target = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(
          leaf.shape, leaf.dtype, sharding=getattr(leaf, "sharding", None) or _default_device()),
      params)
  target = {"params": param_target,
            "opt_state": abstract_state(tx, params, mesh, specs, zero1_axis)}
  checkpointer = ocp.StandardCheckpointer()
  _check_fits(path, checkpointer.metadata(path).item_metadata.tree, target)
  restored = checkpointer.restore(path, target)
  return steps[-1], restored["params"], restored["opt_state"]
