"""Optimizer-state shardings derived from parameter shardings, for every optimkit optimizer and
for optax combinators around them.

    shardings = optimkit.sharding.state_shardings(tx, params)          # params carry shardings
    state = optimkit.sharding.sharded_init(tx, params)                 # jit(init, out_shardings)
    state = optimkit.sharding.sharded_init(tx, params, zero1_axis="data")   # ZeRO-1
    init, update = optimkit.sharding.offloaded_update(tx, params)      # state in host memory

Each state leaf is related to a parameter in one of a few known ways, and takes its sharding
from that relation:
  - shaped like the param (moments, z, slow weights, compensation): the param's spec;
  - Adafactor's factored row/column statistics (the param's shape with one dim removed): the
    param's spec without that dim;
  - Adam-mini's per-block second moment (some dims reduced to 1): the spec with those dims
    unsharded;
  - quantized moments (`optimkit.state`): blocks run along the trailing dims, so codes and
    scales keep the spec of the param's leading dims and leave the block dims unsharded;
  - everything else (step counts, hyperparameters, keys, fillers): replicated.

What optax lacks: `optax.tree_map_params` gives wrong-rank specs for factored statistics and
fails on masked/partitioned states, and `jax.jit(tx.init)` without `out_shardings` replicates
state made of fresh zeros (nothing ties it to the params' sharding).
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from jax.sharding import NamedSharding, PartitionSpec

from optimkit.state import quantized as q


def _spec_of(leaf: Any) -> tuple:
  sharding = getattr(leaf, "sharding", None)
  if isinstance(sharding, NamedSharding):
    spec = tuple(sharding.spec)
    return spec + (None,) * (len(leaf.shape) - len(spec))
  return (None,) * len(leaf.shape)


def _mesh_of(params: Any):
  for leaf in jax.tree.leaves(params):
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, NamedSharding):
      return sharding.mesh
  raise ValueError("state_shardings: no parameter carries a NamedSharding; put the params on a "
                   "mesh (jax.device_put with NamedSharding) or pass mesh= and specs=")


def check_specs(params: Any, specs: Any, mesh) -> None:
  """ValueError naming the parameter path and the axis for a spec that names a missing mesh
  axis or does not divide the dimension it shards."""
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
  param_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  if len(spec_leaves) != len(param_leaves):
    raise ValueError(f"specs has {len(spec_leaves)} PartitionSpecs for {len(param_leaves)} "
                     f"parameters; give one per parameter leaf")
  for (path, leaf), spec in zip(param_leaves, spec_leaves):
    where = jax.tree_util.keystr(path) or "<root>"
    if len(tuple(spec)) > len(leaf.shape):
      raise ValueError(f"spec {spec} for parameter {where} has more entries than its rank "
                       f"{len(leaf.shape)}")
    for dim, entry in enumerate(tuple(spec)):
      axes = entry if isinstance(entry, tuple) else (entry,)
      size = 1
      for axis in axes:
        if axis is None:
          continue
        if axis not in mesh.shape:
          raise ValueError(f"spec {spec} for parameter {where} names mesh axis {axis!r}, which "
                           f"the mesh does not have (axes: {dict(mesh.shape)})")
        size *= mesh.shape[axis]
      if leaf.shape[dim] % size:
        raise ValueError(f"spec {spec} for parameter {where}: dimension {dim} of size "
                         f"{leaf.shape[dim]} is not divisible by mesh axis {entry!r} of size "
                         f"{size}")


def _leaf_spec(state_leaf: Any, param_shape: tuple, param_spec: tuple) -> tuple:
  """The spec of one state leaf that sits where a parameter sits in the state tree."""
  shape = tuple(state_leaf.shape)
  if shape == param_shape:
    return param_spec
  if len(shape) == len(param_shape) and all(s in (1, p) for s, p in zip(shape, param_shape)):
    return tuple(None if s != p else spec for s, p, spec in zip(shape, param_shape, param_spec))
  if len(shape) == len(param_shape) - 1:
    # A factored statistic: the param's spec without the dropped dim. When several dims could
    # have been dropped (a square matrix) and they disagree, replicate: correct, if not minimal.
    candidates = {param_spec[:d] + param_spec[d + 1:] for d in range(len(param_shape))
                  if shape == param_shape[:d] + param_shape[d + 1:]}
    if len(candidates) == 1:
      return candidates.pop()
  return (None,) * len(shape)


def _quantized_specs(stored: Any, param_shape: tuple, param_spec: tuple) -> Any:
  """Specs for the arrays of a quantized leaf: the param's leading dims keep their spec."""
  def leading(array):
    kept = 0
    while kept < min(len(array.shape), len(param_shape)) and \
        array.shape[kept] == param_shape[kept]:
      kept += 1
    return param_spec[:kept] + (None,) * (len(array.shape) - kept)
  if isinstance(stored, q.Rank1Quantized):
    return q.Rank1Quantized(codes=leading(stored.codes), row_max=leading(stored.row_max),
                            col_max=(None,))
  return q.BlockQuantized(codes=leading(stored.codes), absmax=leading(stored.absmax))


def _matches_params(node: Any, params_def) -> bool:
  try:
    return jax.tree.structure(node, is_leaf=q.is_quantized) == params_def
  except Exception:  # pylint: disable=broad-except
    return False


def _uses(spec: tuple, axis: str) -> bool:
  return any(entry == axis or (isinstance(entry, tuple) and axis in entry) for entry in spec)


def zero1(spec: PartitionSpec, shape: tuple, axis: str, axis_size: int) -> PartitionSpec:
  """ZeRO-1: additionally shard a state leaf over the data-parallel `axis`, on its first
  unsharded dim that the axis size divides; leaves where none does stay as they are."""
  entries = tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))
  if _uses(entries, axis):
    return spec
  for dim, (entry, size) in enumerate(zip(entries, shape)):
    if entry is None and size % axis_size == 0 and size >= axis_size:
      return PartitionSpec(*entries[:dim], axis, *entries[dim + 1:])
  return spec


def state_specs(tx: optax.GradientTransformation, params: Any,
                specs: Any = None, zero1_axis: str | None = None, mesh=None) -> Any:
  """A tree of PartitionSpecs matching `tx.init(params)` leaf for leaf.

  `specs` is a tree of PartitionSpecs for the params; without it, each param's own
  NamedSharding is used (params may be arrays or ShapeDtypeStructs with a sharding).
  `zero1_axis` names the data-parallel mesh axis to shard every state leaf over as well (ZeRO
  stage 1), where the leaf's size allows.
  """
  abstract_state = jax.eval_shape(tx.init, params)
  params_def = jax.tree.structure(params)
  param_shapes = [tuple(p.shape) for p in jax.tree.leaves(params)]
  if specs is None:
    param_specs = [_spec_of(p) for p in jax.tree.leaves(params)]
  else:
    check_specs(params, specs, mesh if mesh is not None else _mesh_of(params))
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    param_specs = [tuple(s) + (None,) * (len(shape) - len(tuple(s)))
                   for s, shape in zip(spec_leaves, param_shapes)]

  def assign(node):
    if _matches_params(node, params_def):
      leaves = jax.tree.leaves(node, is_leaf=q.is_quantized)
      out = []
      for leaf, shape, spec in zip(leaves, param_shapes, param_specs):
        if q.is_quantized(leaf):
          specs_of_parts = _quantized_specs(leaf, shape, spec)
          out.append(type(specs_of_parts)(*(PartitionSpec(*part) for part in specs_of_parts)))
        else:
          out.append(PartitionSpec(*_leaf_spec(leaf, shape, spec)))
      return jax.tree.unflatten(params_def, out)
    if isinstance(node, (tuple, list)) and not q.is_quantized(node):
      children = [assign(child) for child in node]
      return type(node)(*children) if hasattr(node, "_fields") else type(node)(children)
    if isinstance(node, dict):
      return type(node)({k: assign(v) for k, v in node.items()})
    return jax.tree.map(lambda leaf: PartitionSpec(), node)

  result = assign(abstract_state)
  if zero1_axis is None:
    return result
  mesh = mesh if mesh is not None else _mesh_of(params)
  if zero1_axis not in mesh.shape:
    raise ValueError(f"state_specs: zero1_axis {zero1_axis!r} is not an axis of the mesh "
                     f"{dict(mesh.shape)}")
  size = mesh.shape[zero1_axis]
  return jax.tree.map(lambda spec, leaf: zero1(spec, tuple(leaf.shape), zero1_axis, size),
                      result, abstract_state, is_leaf=lambda x: isinstance(x, PartitionSpec))


def state_shardings(tx: optax.GradientTransformation, params: Any, mesh=None,
                    specs: Any = None, zero1_axis: str | None = None) -> Any:
  """A tree of NamedShardings matching `tx.init(params)` leaf for leaf (see module doc)."""
  mesh = mesh if mesh is not None else _mesh_of(params)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec),
                      state_specs(tx, params, specs, zero1_axis, mesh),
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def sharded_init(tx: optax.GradientTransformation, params: Any, mesh=None,
                 specs: Any = None, zero1_axis: str | None = None) -> Any:
  """`tx.init(params)` with every state leaf created directly in its derived sharding."""
  shardings = state_shardings(tx, params, mesh, specs, zero1_axis)
  return jax.jit(tx.init, out_shardings=shardings)(params)


def with_memory_kind(shardings: Any, memory_kind: str) -> Any:
  """The same shardings in another memory (e.g. "pinned_host" to keep state off the device)."""
  return jax.tree.map(lambda s: s.with_memory_kind(memory_kind), shardings,
                      is_leaf=lambda x: isinstance(x, NamedSharding))


def offloaded_update(tx: optax.GradientTransformation, params: Any, mesh=None,
                     specs: Any = None, zero1_axis: str | None = None):
  """Host offload: (init, update) where the optimizer state lives in pinned host memory and is
  brought to the devices only inside the jitted update.

      init, update = offloaded_update(tx, params)
      state = init(params)                       # on the host
      params, state = update(grads, state, params, **extra_args)   # jitted, donates state
  """
  device_shardings = state_shardings(tx, params, mesh, specs, zero1_axis)
  host_shardings = with_memory_kind(device_shardings, "pinned_host")
  param_shardings = jax.tree.map(lambda p: p.sharding, params)

  def init(params):
    return jax.jit(tx.init, out_shardings=host_shardings)(params)

  def step(grads, state, params, **extra_args):
    state = jax.device_put(state, device_shardings)  # host -> device, inside the program
    updates, state = tx.update(grads, state, params, **extra_args)
    return optax.apply_updates(params, updates), state

  compiled = jax.jit(step, out_shardings=(param_shardings, host_shardings), donate_argnums=(1,))
  return init, compiled


def bytes_per_device(tree: Any) -> dict:
  """Bytes of `tree` held by each device (addressable shards), keyed by device id."""
  totals: dict = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      totals[shard.device.id] = totals.get(shard.device.id, 0) + shard.data.nbytes
  return totals
