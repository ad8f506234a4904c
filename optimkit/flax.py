"""Flax helpers: sharded optimizer state for `flax.nnx.Optimizer`.

Flax NNX builds an optimizer's state with `tx.init(nnx.state(model, wrt))`, on the parameters'
`Variable`s, and then re-creates every state leaf that is a `Variable` with the parameter's
sharding metadata (`to_opt_state` in `flax/nnx/training/optimizer.py`, which shards each value
to the param's `out_sharding`). That assumes every state leaf is shaped like its parameter, and
raises `IndivisibleError` (or a rank error) for Adafactor's factored statistics and for
quantized moments when the params were made with `nnx.with_partitioning`. Every optimkit
optimizer therefore recognises `Variable`s in its `init` (`init_on_variables`): it computes the
state on the plain values and returns each sharded leaf as a `Variable` whose `out_sharding` is
the spec `optimkit.sharding` derives for it, so Flax places every leaf correctly, and
`nnx.get_partition_spec(nnx.state(optimizer))` gives those specs (the `nnx.jit` "create
sharded" pattern keeps them).

    with jax.set_mesh(mesh):
      model = Model(rngs)                        # params made with nnx.with_partitioning
      optimizer = nnx.Optimizer(model, optimkit.adafactor(1e-3), wrt=nnx.Param)   # sharded

    # ZeRO-1, any optax transformation (optax's own too), and the state kept in place through
    # nnx.jit steps, in one call:
    optimizer = optimkit.flax.optimizer(model, tx, wrt=nnx.Param, zero1_axis="data")

For a model whose parameters were put on the mesh by hand, `shard_optimizer` moves the state of
an existing `nnx.Optimizer` into the derived shardings (ZeRO-1 included):

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    optimkit.flax.shard_optimizer(optimizer, model, wrt=nnx.Param, zero1_axis="data")

A jitted train step (`nnx.jit`) then keeps the state in those shardings: the optimizer's
transformation is wrapped to constrain the new state to them, since `nnx.jit` cannot name output
shardings and XLA would otherwise lay quantized state out as it sees fit.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import jax
import optax
from jax.sharding import NamedSharding, PartitionSpec

from optimkit import sharding


def _variable_type():
  nnx = sys.modules.get("flax.nnx")  # no Variable can exist unless Flax NNX was imported
  return None if nnx is None else nnx.Variable


def holds_variables(tree: Any) -> bool:
  """Whether `tree` (e.g. `nnx.state(model, nnx.Param)`) holds Flax NNX `Variable`s."""
  variable = _variable_type()
  if variable is None:
    return False
  return any(isinstance(leaf, variable) for leaf in
             jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, variable)))


def values_of(tree: Any) -> Any:
  """`tree` with every Flax `Variable` replaced by its value (the containers kept)."""
  variable = _variable_type()
  if variable is None:
    return tree
  return jax.tree.map(lambda x: x.get_value() if isinstance(x, variable) else x, tree,
                      is_leaf=lambda x: isinstance(x, variable))


def like(structure_of: Any, values: Any) -> Any:
  """`values` (a tree of plain arrays) in the tree structure of `structure_of`, whose array
  leaves correspond one to one (a `Variable` there wraps exactly one array)."""
  return jax.tree.unflatten(jax.tree.structure(structure_of), jax.tree.leaves(values))


def _mesh_and_spec(variable: Any) -> tuple[Any, PartitionSpec]:
  """A parameter Variable's mesh (None if none is known) and spec: its `out_sharding` metadata
  (through the logical axis rules in force, as Flax reads it), else its value's sharding."""
  from flax.nnx import spmd

  value = variable.get_value()
  array_sharding = sharding._sharding_of(value)
  mesh = variable.get_metadata("mesh", None)
  if mesh is None and isinstance(array_sharding, NamedSharding) and \
      not array_sharding.mesh.empty:  # a tracer's type outside any mesh has an empty mesh
    mesh = array_sharding.mesh
  if mesh is None and not jax.sharding.get_abstract_mesh().empty:
    mesh = jax.sharding.get_abstract_mesh()
  if variable.get_metadata("out_sharding", None):
    spec = spmd.get_var_pspec(variable)
    return mesh, PartitionSpec() if spec is None else spec
  return mesh, PartitionSpec(*sharding._spec_of(value))


def init_on_variables(tx: optax.GradientTransformation, init: Callable[[Any], Any],
                      params: Any) -> Any:
  """`init` (the init of `tx`) on params that are Flax `Variable`s: the state of their plain
  values, with each leaf that derives a sharded spec returned as a `Variable` whose
  `out_sharding` is that spec (see the module doc); other leaves are plain arrays."""
  from flax import nnx

  is_variable = lambda x: isinstance(x, nnx.Variable)
  plain = jax.tree.map(lambda x: x.get_value() if is_variable(x) else x, params,
                       is_leaf=is_variable)
  state = init(plain)
  items = jax.tree.leaves(params, is_leaf=is_variable)
  found = [_mesh_and_spec(x) if is_variable(x) else (None, PartitionSpec(*sharding._spec_of(x)))
           for x in items]
  meshes = [mesh for mesh, spec in found if mesh is not None and any(spec)]
  if not meshes or len(items) != len(jax.tree.leaves(plain)):
    return state  # nothing sharded (or Variables holding trees): nothing for Flax to re-shard
  mesh = meshes[0]
  specs = jax.tree.unflatten(jax.tree.structure(plain), [spec for _, spec in found])
  derived = jax.tree.leaves(sharding.state_specs(tx, plain, specs=specs, mesh=mesh),
                            is_leaf=lambda x: isinstance(x, PartitionSpec))
  leaves, treedef = jax.tree.flatten(state)
  return jax.tree.unflatten(treedef, [
      nnx.Variable(leaf, out_sharding=spec, mesh=mesh) if any(spec) else leaf
      for leaf, spec in zip(leaves, derived)])


def _plain_init(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """`tx` whose init accepts `Variable` params (as optimkit's own optimizers do)."""
  tx = optax.with_extra_args_support(tx)

  def init_fn(params):
    if holds_variables(params):
      return init_on_variables(tx, tx.init, params)
    return tx.init(params)

  return optax.GradientTransformationExtraArgs(init_fn, tx.update)


def optimizer(model: Any, tx: optax.GradientTransformation, *, wrt: Any,
              zero1_axis: str | None = None) -> Any:
  """An `nnx.Optimizer(model, tx, wrt=wrt)` whose state is in the shardings `optimkit.sharding`
  derives from the model's parameters (ZeRO-1 over `zero1_axis` if given) and stays there
  through `nnx.jit` steps; for any optax transformation, optax's own included (whose factored
  or otherwise reshaped state Flax would fail to shard on `nnx.with_partitioning` params)."""
  from flax import nnx

  built = nnx.Optimizer(model, _plain_init(tx), wrt=wrt)
  return shard_optimizer(built, model, wrt=wrt, zero1_axis=zero1_axis)


def shard_optimizer(optimizer: Any, model: Any, wrt: Any = None,
                    zero1_axis: str | None = None) -> Any:
  """Moves `optimizer.opt_state` (an `nnx.Optimizer`) into derived shardings, in place, and
  makes its updates keep the state there (`optimkit.sharding.keep_state_shardings`)."""
  from flax import nnx

  wrt = nnx.Param if wrt is None else wrt
  params = nnx.to_pure_dict(nnx.state(model, wrt))
  shardings = sharding.state_shardings(optimizer.tx, params, zero1_axis=zero1_axis)
  targets = jax.tree.leaves(shardings)
  variables = jax.tree.leaves(optimizer.opt_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  position = 0
  for variable in variables:
    value = variable.get_value() if isinstance(variable, nnx.Variable) else variable
    leaves, treedef = jax.tree.flatten(value)
    placed = [jax.device_put(leaf, target)
              for leaf, target in zip(leaves, targets[position:position + len(leaves)])]
    position += len(leaves)
    if isinstance(variable, nnx.Variable):
      variable.set_value(jax.tree.unflatten(treedef, placed))
      if len(placed) == 1 and variable.get_metadata("out_sharding", None) is not None:
        # Keep the metadata telling the truth (nnx.get_partition_spec reads it).
        variable.set_metadata(out_sharding=placed[0].sharding.spec)
  if position != len(targets):
    raise ValueError(f"shard_optimizer: the optimizer state has {position} arrays but tx.init on "
                     f"the model's parameters gives {len(targets)}; was the optimizer built with "
                     f"wrt={wrt}?")
  # nnx.jit has no out_shardings for the state: the update itself keeps it in place.
  optimizer.tx = sharding.keep_state_shardings(optimizer.tx, shardings)
  return optimizer
