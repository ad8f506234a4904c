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
  - quantized moments (`optimkit.state`): blockwise scales are shaped like the param's grid of
    tiles and codes like the param with each dim split into (tiles, within a tile), so both
    take the param's spec on every dim whose shards hold whole tiles (`_block_specs`); ZeRO-1
    splits codes and scales on the same dim;
  - everything else (step counts, hyperparameters, keys, fillers): replicated.

A per-parameter quantity is found as optax lays it out: in a subtree of the state with the
params' own containers, where `optax.masked` (and `multi_transform`/`partition`, which mask each
label's params) may hold an `optax.MaskedNode` in place of a parameter or a whole subtree. So
the state of an optimizer inside `masked`, `multi_transform`, `partition`, `MultiSteps`, `chain`,
`inject_hyperparams`, `apply_if_finite` or `optimkit.skip_nonfinite` takes the same specs, leaf
for leaf, as without the wrapper. A leaf found outside such a subtree that has a sharded
parameter's exact shape (or is quantized blocks of one) still takes that parameter's spec: a
wrapper that lays its state out otherwise may cost a minimal layout, never replicated moments.

Under Explicit mesh axes (sharding in types) every optimkit optimizer places its state in these
specs from a plain `tx.init(params)` and keeps them through `update` (`with_explicit_axes`).

What optax lacks: `optax.tree_map_params` gives wrong-rank specs for factored statistics and
fails on masked/partitioned states, and `jax.jit(tx.init)` without `out_shardings` replicates
state made of fresh zeros (nothing ties it to the params' sharding).
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from optimkit.state import quantized as q


def _sharding_of(leaf: Any) -> Any:
  """A leaf's sharding: the concrete one of an array or ShapeDtypeStruct, else (a tracer under
  Explicit mesh axes) the one in its type."""
  sharding = getattr(leaf, "sharding", None)
  if sharding is None and isinstance(leaf, jax.core.Tracer):
    sharding = jax.typeof(leaf).sharding
  return sharding


def _spec_of(leaf: Any) -> tuple:
  sharding = _sharding_of(leaf)
  if isinstance(sharding, NamedSharding):
    spec = tuple(sharding.spec)
    return spec + (None,) * (len(leaf.shape) - len(spec))
  return (None,) * len(leaf.shape)


def _mesh_of(params: Any):
  for leaf in jax.tree.leaves(params):
    sharding = _sharding_of(leaf)
    if isinstance(sharding, NamedSharding):
      return sharding.mesh
  raise ValueError("state_shardings: no parameter carries a NamedSharding; put the params on a "
                   "mesh (jax.device_put with NamedSharding) or pass mesh= and specs=")


def check_specs(params: Any, specs: Any, mesh) -> None:
  """ValueError naming the parameter path and the axis for a spec that names a missing mesh
  axis or does not divide the dimension it shards."""
  spec_items = jax.tree_util.tree_flatten_with_path(
      specs, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]
  spec_leaves = [spec for _, spec in spec_items]
  param_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  spec_paths = [jax.tree_util.keystr(path) for path, _ in spec_items]
  param_paths = [jax.tree_util.keystr(path) for path, _ in param_leaves]
  if spec_paths != param_paths:
    missing = [path for path in param_paths if path not in spec_paths]
    extra = [path for path in spec_paths if path not in param_paths]
    where = (f"parameter {missing[0]} has no PartitionSpec" if missing else
             f"specs has {extra[0]}, which is not a parameter" if extra else
             "the specs list the parameters in another order or container")
    raise ValueError(f"specs does not match the params tree: {where}; give one PartitionSpec "
                     f"per parameter leaf, in a tree shaped like the params")
  for path, spec in spec_items:
    if not isinstance(spec, PartitionSpec):
      raise ValueError(f"specs{jax.tree_util.keystr(path)} must be a PartitionSpec, got {spec!r}")
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
  if len(shape) == len(param_shape) and any(s == p for s, p in zip(shape, param_shape)):
    # Broadcast statistics (a size-1 dim) and projections (GaLore's m x r moments of an m x n
    # param) keep the param's spec on every dim they share with it.
    return tuple(None if s != p else spec for s, p, spec in zip(shape, param_shape, param_spec))
  if len(shape) == len(param_shape) - 1:
    # A factored statistic: the param's spec without the dropped dim. When several dims could
    # have been dropped (a square matrix) and they disagree, replicate: correct, if not minimal.
    candidates = {param_spec[:d] + param_spec[d + 1:] for d in range(len(param_shape))
                  if shape == param_shape[:d] + param_shape[d + 1:]}
    if len(candidates) == 1:
      return candidates.pop()
  return (None,) * len(shape)


def _axis_size(entry: Any, axis_sizes: dict) -> int:
  size = 1
  for axis in entry if isinstance(entry, tuple) else (entry,):
    size *= axis_sizes.get(axis, 1) if axis is not None else 1
  return size


def _block_specs(stored: Any, param_shape: tuple, param_spec: tuple, axis_sizes: dict) -> Any:
  """Specs of a blockwise-quantized leaf's (codes, absmax).

  The scales are shaped like the param's grid of tiles and the codes like the param with each
  dim split into (tiles, within a tile) (`q.BlockLayout.blocked`), so both take the param's
  spec on each dim whose shards hold whole tiles (the grid dim divisible by the shard count),
  codes on that dim's grid axis: every device then quantizes its own blocks and no step moves
  state. On a dim whose shards would split tiles, both stay unsharded: a spec that splits a tile
  is correct, but its step must gather the tile's values. Packed 4-bit codes whose last axis is
  a grid axis also need whole bytes per shard. The flat fallback (no tile divides the param) is
  unsharded.
  """
  layout, _ = q.stored_layout(stored, param_shape)
  codes: list = [None] * stored.codes.ndim
  if layout.flat:
    return q.BlockQuantized(codes=tuple(codes), absmax=(None,))  # type: ignore[arg-type]
  entries = tuple(entry if entry is not None and g % _axis_size(entry, axis_sizes) == 0
                  else None for entry, g in zip(param_spec, layout.grid))
  for axis, entry, g in zip(layout.grid_axes, entries, layout.grid):
    if stored.codes.shape[axis] == g or stored.codes.shape[axis] % _axis_size(entry,
                                                                              axis_sizes) == 0:
      codes[axis] = entry
  # The stored leaf's own NamedTuple, holding a spec per array (hence the type: ignores).
  return q.BlockQuantized(codes=tuple(codes), absmax=entries)  # type: ignore[arg-type]


def _zero1_blocks(specs: Any, stored: Any, param_shape: tuple, axis: str,
                  axis_size: int) -> Any:
  """ZeRO-1 for a blockwise-quantized leaf: the first grid dim that is unsharded and that the
  axis divides (also in the codes) takes it in both arrays, so each device keeps whole tiles
  with their scales. Without one, each array takes it where its own size allows (fewer bytes,
  at the price of moving codes in the step)."""
  layout, _ = q.stored_layout(stored, param_shape)
  codes, absmax = list(specs.codes), tuple(specs.absmax)
  if not _uses(tuple(codes) + absmax, axis):
    for dim, (entry, g) in enumerate(zip(absmax, layout.grid)):
      code_axis = layout.grid_axes[dim] if not layout.flat else 0
      if entry is None and codes[code_axis] is None and g and g % axis_size == 0 and \
          stored.codes.shape[code_axis] % axis_size == 0:
        codes[code_axis] = axis
        return type(specs)(codes=tuple(codes), absmax=absmax[:dim] + (axis,) + absmax[dim + 1:])
  return type(specs)(*(tuple(zero1(PartitionSpec(*spec), tuple(array.shape), axis, axis_size))
                       for spec, array in zip(specs, stored)))


def _quantized_specs(stored: Any, param_shape: tuple, param_spec: tuple,
                     axis_sizes: dict) -> Any:
  """Specs for the arrays of a quantized leaf. Blockwise: `_block_specs`. Rank-1: codes keep the
  param's spec (the packed last dim too when each shard holds whole bytes), row maxima the
  leading spec, column maxima the last dim's."""
  if isinstance(stored, q.Rank1Quantized):
    last = param_spec[-1]
    packed_last = last if (param_shape[-1] // _axis_size(last, axis_sizes)) % 2 == 0 else None
    # The stored leaf's own NamedTuple, holding a spec per array (hence the type: ignores).
    return q.Rank1Quantized(codes=param_spec[:-1] + (packed_last,),  # type: ignore[arg-type]
                            row_max=param_spec[:-1],  # type: ignore[arg-type]
                            col_max=(last,))  # type: ignore[arg-type]
  return _block_specs(stored, param_shape, param_spec, axis_sizes)


def _state_leaf(x: Any) -> bool:
  """Leaves of a state tree as far as layouts go: arrays, quantized tensors (whole), and
  `optax.MaskedNode` (a masked-out parameter, or a whole masked-out subtree)."""
  return q.is_quantized(x) or isinstance(x, optax.MaskedNode)


def _state_leaf_or_none(x: Any) -> bool:
  """Also None: a per-parameter tree that holds nothing for some params (GaLore's projectors of
  the leaves it does not project) is still laid out like the params."""
  return x is None or _state_leaf(x)


def _laid_out_like_params(node: Any, param_indices: Any) -> list | None:
  """For a state subtree laid out like the params, the parameter index of each of its leaves
  (None for a MaskedNode); None when `node` is not laid out like the params.

  "Laid out like the params" is the params' own containers down to the leaves, where a leaf may
  be an array or a quantized tensor standing for one parameter, or a MaskedNode standing for a
  parameter or a whole subtree that `optax.masked` (and so `multi_transform`/`partition`, which
  mask each label's params) left out. This is how every per-parameter quantity sits in an optax
  state: `tree_map` over the params (or over the masked params) made it.
  """
  if node is None:
    return None
  try:
    structure = jax.tree.structure(node, is_leaf=_state_leaf_or_none)
    groups = structure.flatten_up_to(param_indices)  # type: ignore[attr-defined]  # jaxlib stub
  except (ValueError, TypeError):
    return None
  leaves = jax.tree.leaves(node, is_leaf=_state_leaf_or_none)
  indices: list[int | None] = []
  for leaf, group in zip(leaves, groups):
    if leaf is None or isinstance(leaf, optax.MaskedNode):
      indices.append(None)
    elif isinstance(group, int):
      indices.append(group)
    else:  # an array where the params hold a subtree
      return None
  return indices


def _is_array_leaf(node: Any) -> bool:
  leaves = jax.tree.leaves(node)
  return len(leaves) == 1 and leaves[0] is node


def _fits(leaf: Any, shape: tuple) -> bool:
  """Whether a state leaf has the layout of some state of a parameter of `shape`."""
  if isinstance(leaf, q.BlockQuantized):
    try:
      q.stored_layout(leaf, shape)
      return True
    except ValueError:
      return False
  if isinstance(leaf, q.Rank1Quantized):
    return tuple(leaf.row_max.shape) == shape[:-1] and tuple(leaf.col_max.shape) == shape[-1:]
  return len(shape) > 0 and tuple(leaf.shape) == shape


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
  `zero1_axis` names the data-parallel mesh axis to shard the per-parameter state over as well
  (ZeRO stage 1), where a leaf's size allows; step counts, keys and hyperparameters stay
  replicated.
  """
  abstract_state = jax.eval_shape(tx.init, params)
  params_def = jax.tree.structure(params)
  param_shapes = [tuple(p.shape) for p in jax.tree.leaves(params)]
  if specs is None:
    param_specs = [_spec_of(p) for p in jax.tree.leaves(params)]
    if mesh is None and (zero1_axis is not None or any(any(s) for s in param_specs)):
      mesh = _mesh_of(params)
  else:
    mesh = mesh if mesh is not None else _mesh_of(params)
    check_specs(params, specs, mesh)
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    param_specs = [tuple(s) + (None,) * (len(shape) - len(tuple(s)))
                   for s, shape in zip(spec_leaves, param_shapes)]
  axis_sizes = dict(mesh.shape) if mesh is not None else {}
  if zero1_axis is not None and zero1_axis not in axis_sizes:
    raise ValueError(f"state_specs: zero1_axis {zero1_axis!r} is not an axis of the mesh "
                     f"{axis_sizes}")

  def per_parameter(leaf, index):
    shape, spec = param_shapes[index], param_specs[index]
    if q.is_quantized(leaf):
      if not _fits(leaf, shape):
        # Quantized blocks of another shape than the param's (GaLore's projected moments): no
        # block maps onto the param's shards, so only ZeRO-1 splits them.
        return type(leaf)(*(finish(PartitionSpec(), array) for array in leaf))
      parts = _quantized_specs(leaf, shape, spec, axis_sizes)
      if zero1_axis is not None and isinstance(leaf, q.BlockQuantized):
        parts = _zero1_blocks(parts, leaf, shape, zero1_axis, axis_sizes[zero1_axis])
        return type(parts)(*(PartitionSpec(*part) for part in parts))
      return type(parts)(*(finish(PartitionSpec(*part), array)
                           for part, array in zip(parts, leaf)))
    return finish(PartitionSpec(*_leaf_spec(leaf, shape, spec)), leaf)

  def finish(spec, leaf):
    if zero1_axis is None:
      return spec
    return zero1(spec, tuple(leaf.shape), zero1_axis, axis_sizes[zero1_axis])

  param_indices = jax.tree.unflatten(params_def, range(len(param_shapes)))

  def assign(node):
    indices = _laid_out_like_params(node, param_indices)
    if indices is not None:
      leaves, node_def = jax.tree.flatten(node, is_leaf=_state_leaf_or_none)
      return jax.tree.unflatten(node_def, [
          leaf if leaf is None else optax.MaskedNode() if index is None
          else per_parameter(leaf, index) for leaf, index in zip(leaves, indices)])
    if _state_leaf(node) or _is_array_leaf(node):
      return unrelated(node)
    children, node_def = jax.tree.flatten(node, is_leaf=lambda child: child is not node)
    return jax.tree.unflatten(node_def, [assign(child) for child in children])

  def unrelated(leaf):
    # A leaf no params-shaped subtree accounts for. A step count, key or hyperparameter is
    # replicated; but one that could be a parameter's state (its exact shape, or quantized
    # blocks of it) takes that parameter's spec, so that a wrapper laying its state out in a
    # way not foreseen above can cost layout minimality, never replicated moments.
    if isinstance(leaf, optax.MaskedNode):
      return leaf
    for index, (shape, spec) in enumerate(zip(param_shapes, param_specs)):
      if any(entry is not None for entry in spec) and _fits(leaf, shape):
        return per_parameter(leaf, index)
    if q.is_quantized(leaf):
      return type(leaf)(*(PartitionSpec() for _ in leaf))
    # Arrays of the optimizer's own layout (Shampoo's, SOAP's and Kron's stacked per-block
    # matrices) are state too: ZeRO-1 splits them as well; scalars stay replicated.
    return finish(PartitionSpec(), leaf) if leaf.ndim else PartitionSpec()

  return assign(abstract_state)


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


def _explicitly_sharded(tree: Any) -> bool:
  """Whether some leaf's type is sharded over an Explicit mesh axis."""
  for leaf in jax.tree.leaves(tree):
    sharding = jax.typeof(leaf).sharding
    if isinstance(sharding, NamedSharding) and any(sharding.spec) and \
        AxisType.Explicit in sharding.mesh.axis_types:
      return True
  return False


def with_explicit_axes(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """`tx` made to work under Explicit mesh axes (sharding in types), unchanged otherwise.

  With Explicit axes every operation must have a well-defined output sharding, and an
  optimizer's arithmetic mixes leaves sharded differently (ZeRO-1 state against replicated
  gradients, factored statistics against matrices, quantized blocks against their tensor). So
  `init` returns the state in its derived specs (`state_specs` from the params' types), and
  `update` runs the algorithm with the mesh axes in Auto mode (`jax.sharding.auto_axes`),
  returning updates sharded like the gradients and the state sharded as it came in. Every
  optimkit optimizer is built with it.
  """
  tx = optax.with_extra_args_support(tx)

  def init_fn(params):
    from optimkit import flax as flax_support  # imports no Flax itself

    if flax_support.holds_variables(params):
      # nnx.Optimizer: Flax re-shards each Variable leaf of the state as its param; give each
      # its own derived spec instead (optimkit.flax.init_on_variables).
      return flax_support.init_on_variables(tx, init_fn, params)
    if not _explicitly_sharded(params):
      return tx.init(params)
    mesh = _mesh_of(params)
    shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), state_specs(tx, params),
                             is_leaf=lambda x: isinstance(x, PartitionSpec))
    return jax.sharding.auto_axes(tx.init, out_sharding=shardings)(params)

  def update_fn(updates, state, params=None, **extra_args):
    from optimkit import flax as flax_support  # imports no Flax itself

    if flax_support.holds_variables((updates, state, params)):
      # Gradients and params as `nnx.split` returns them (Variables): the algorithm runs on the
      # values, so the state is the one `init` made from the values whatever the caller holds;
      # the updates and state come back in the containers they came in.
      new_updates, new_state = update_fn(
          flax_support.values_of(updates), flax_support.values_of(state),
          flax_support.values_of(params), **extra_args)
      return flax_support.like(updates, new_updates), flax_support.like(state, new_state)
    if not _explicitly_sharded((updates, state, params)):
      return tx.update(updates, state, params, **extra_args)
    types = jax.tree.map(lambda leaf: jax.typeof(leaf).sharding, (updates, state))
    run = jax.sharding.auto_axes(lambda u, s, p: tx.update(u, s, p, **extra_args),
                                 out_sharding=types)
    return run(updates, state, params)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def keep_state_shardings(tx: optax.GradientTransformation,
                         shardings: Any) -> optax.GradientTransformationExtraArgs:
  """`tx` whose update constrains the new state to `shardings` (from `state_shardings`).

  For jitted steps that cannot name the state's output shardings (`nnx.jit` around an
  `nnx.Optimizer`, or a `jax.jit` without `out_shardings`): XLA's sharding propagation is then
  free to lay the new state out differently from the old, e.g. following the gradients.
  Leaves are matched in order, so containers may differ in type (Flax hands the state over as
  `nnx.State` mappings where `tx.init` made dicts).
  """
  tx = optax.with_extra_args_support(tx)
  targets = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))

  def update_fn(updates, state, params=None, **extra_args):
    updates, state = tx.update(updates, state, params, **extra_args)
    leaves, treedef = jax.tree.flatten(state)
    if len(leaves) != len(targets):
      raise ValueError(f"keep_state_shardings: the state has {len(leaves)} arrays, the "
                       f"shardings {len(targets)}; derive them from the same optimizer")
    return updates, jax.tree.unflatten(
        treedef, [jax.lax.with_sharding_constraint(leaf, target)
                  for leaf, target in zip(leaves, targets)])

  return optax.GradientTransformationExtraArgs(tx.init, update_fn)


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
