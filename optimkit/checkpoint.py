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

Whose hyperparameters win. Hyperparameters live in the state as arrays (the `hyperparams` dict
of every `optax.InjectStatefulHyperparamsState` in it: optimkit's optimizers, optax's
`inject_hyperparams`, wherever they sit in chains, `skip_nonfinite`, `masked`,
`multi_transform`, ...), so a checkpoint carries its own. By default the optimizer as
constructed wins: `restore(path, adamw(1e-4), params)` steps at 1e-4 whatever the checkpoint
holds, as in optax, where hyperparameters are code. `hyperparams="checkpoint"` keeps the
checkpoint's instead (as `torch.optim.Optimizer.load_state_dict` does, and as a run that changed
them with `set_hyperparams` may want). Either way a `UserWarning` names every hyperparameter
whose values differ, with both values. A hyperparameter the optimizer takes from a schedule
(named in that state's `hyperparams_states`, as optax's `inject_hyperparams` records it) is not
compared: its schedule state and step count are restored, and the schedule recomputes it at the
next step. Everything else in the state (moments, step counts, schedule states) is always the
checkpoint's.

The target structure comes from `tx.init` (evaluated abstractly), so NamedTuples come back as
NamedTuples, quantized moments as their quantized types, and each leaf is read directly into the
sharding `optimkit.sharding` derives for the *current* params, whatever mesh the checkpoint was
written from. Orbax ships with Flax; nothing else is needed.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
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
  if mesh is None and not any(
      isinstance(getattr(leaf, "sharding", None), jax.sharding.NamedSharding)
      for leaf in jax.tree.leaves(params)):
    # Params on one device (no mesh): the state goes to the default device.
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                          sharding=_default_device()), shapes)
  shardings = sharding_lib.state_shardings(tx, params, mesh, specs, zero1_axis)
  return jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                      shapes, shardings)


HyperparamsChoice = Literal["optimizer", "checkpoint"]


def restore(path: str, tx: optax.GradientTransformation, params: Any, mesh=None,
            specs: Any = None, zero1_axis: str | None = None, *,
            hyperparams: HyperparamsChoice = "optimizer") -> Any:
  """Reads the optimizer state saved at `path` for `tx` and `params`, sharded like `params`
  (or `specs` on `mesh`), with ZeRO-1 over `zero1_axis` if given.

  `hyperparams`: "optimizer" (default) gives the restored state the hyperparameters `tx` was
  constructed with; "checkpoint" keeps the checkpoint's. A `UserWarning` names each one whose
  values differ (see the module docstring)."""
  _check_hyperparams_choice("restore", hyperparams)
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint.restore: no checkpoint directory at {path}")
  target = abstract_state(tx, params, mesh, specs, zero1_axis)
  checkpointer = ocp.StandardCheckpointer()
  _check_fits(path, checkpointer.metadata(path).item_metadata.tree, target)
  restored = checkpointer.restore(path, target)
  return _settle_hyperparams("restore", path, restored, tx, params, hyperparams)


def _check_hyperparams_choice(owner: str, hyperparams: Any) -> None:
  if hyperparams not in ("optimizer", "checkpoint"):
    raise ValueError(f"checkpoint.{owner}: hyperparams must be \"optimizer\" (the optimizer's "
                     f"as constructed win) or \"checkpoint\" (the checkpoint's win), got "
                     f"{hyperparams!r}")


def _path_name(path: tuple) -> str:
  return ".".join(_checks.key_name(key) for key in path)


def _hyperparam_leaves(state: Any, prefix: tuple = ()) -> dict[str, tuple[str, Any]]:
  """{leaf name: (hyperparameter name, value)} for every constant hyperparameter of every
  `InjectStatefulHyperparamsState` in `state`, nested ones included (an optax wrapper around an
  optimkit optimizer holds one inside the other). Scheduled ones are left out."""
  found = {}
  is_hyperparams_state = lambda x: isinstance(x, optax.InjectStatefulHyperparamsState)
  for path, node in jax.tree_util.tree_flatten_with_path(state, is_leaf=is_hyperparams_state)[0]:
    if not is_hyperparams_state(node):
      continue
    here = prefix + tuple(path)
    scheduled = set(node.hyperparams_states or {})
    for name, value in node.hyperparams.items():
      if name not in scheduled:
        found[_path_name(here) + (".hyperparams." if here else "hyperparams.") + name] = (
            name, value)
    found.update(_hyperparam_leaves(node.inner_state,
                                    here + (jax.tree_util.GetAttrKey("inner_state"),)))
  return found


def _constructed_hyperparams(tx: optax.GradientTransformation, params: Any) -> dict:
  """The hyperparameters `tx.init` gives these params, as host values. Only the small dict
  leaves the compiled init: XLA drops the moments, which nothing reads."""
  def hyperparams_of_init():
    zeros = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), params)
    return {name: value for name, (_, value) in _hyperparam_leaves(tx.init(zeros)).items()}
  return jax.device_get(jax.jit(hyperparams_of_init)())


def _format(value: Any) -> str:
  value = np.asarray(value)
  # str of a NumPy scalar is the shortest repr in its own dtype: float32 1e-4 prints 1e-04.
  return str(value[()]) if value.ndim == 0 else np.array2string(value, threshold=8)


def _settle_hyperparams(owner: str, path: str, restored: Any, tx: optax.GradientTransformation,
                        params: Any, hyperparams: HyperparamsChoice) -> Any:
  """`restored` with the winning hyperparameters, and a warning naming those that differ."""
  saved = _hyperparam_leaves(restored)
  if not saved:
    return restored
  constructed = _constructed_hyperparams(tx, params)
  differ = {}
  for leaf, (name, value) in saved.items():
    mine = np.asarray(constructed[leaf], dtype=value.dtype)
    if not np.array_equal(mine, np.asarray(value)):
      differ[leaf] = (name, mine, value)
  if not differ:
    return restored
  kept = ("the optimizer's as constructed (pass hyperparams=\"checkpoint\" to keep the "
          "checkpoint's)" if hyperparams == "optimizer" else
          "the checkpoint's (hyperparams=\"checkpoint\"; the default keeps the optimizer's)")
  listed = "; ".join(f"{name}: optimizer {_format(mine)}, checkpoint {_format(value)} (at {leaf})"
                     for leaf, (name, mine, value) in differ.items())
  warnings.warn(f"checkpoint.{owner}: the checkpoint at {path} holds hyperparameters that "
                f"differ from this optimizer's: {listed}. Using {kept}.", UserWarning,
                stacklevel=3)
  if hyperparams == "checkpoint":
    return restored

  def settle(leaf_path, leaf):
    entry = differ.get(_path_name(leaf_path))
    if entry is None:
      return leaf
    # A fresh buffer on the restored leaf's sharding (no leaf may alias another).
    return jax.device_put(np.array(entry[1], dtype=leaf.dtype), leaf.sharding)
  return jax.tree_util.tree_map_with_path(settle, restored)


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
                   specs: Any = None, zero1_axis: str | None = None, *,
                   hyperparams: HyperparamsChoice = "optimizer"
                   ) -> tuple[int, Any, Any] | None:
  """(step, params, state) of the newest complete step under `directory`, or None. `params`
  gives the shapes and shardings to restore into (the initial params serve). `hyperparams` as
  in `restore`: "optimizer" (default) or "checkpoint", with a warning naming those that
  differ."""
  _check_hyperparams_choice("restore_latest", hyperparams)
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
  state = _settle_hyperparams("restore_latest", path, restored["opt_state"], tx, params,
                              hyperparams)
  return steps[-1], restored["params"], state
