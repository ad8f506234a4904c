"""Flax helpers: sharded optimizer state for `flax.nnx.Optimizer`.

`nnx.Optimizer(model, tx)` creates its state with `tx.init` on the model's parameters, which
makes fresh (replicated) arrays; and Flax's own sharding metadata for optimizer state assumes
every state leaf is shaped like its parameter, which breaks for Adafactor's factored statistics
and for quantized moments. `shard_optimizer` puts every state leaf of an existing
`nnx.Optimizer` in the sharding `optimkit.sharding` derives from the model's (sharded)
parameters, ZeRO-1 included, for every optimkit optimizer:

    model = ...                                   # parameters already on the mesh
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    optimkit.flax.shard_optimizer(optimizer, model, wrt=nnx.Param, zero1_axis="data")

A jitted train step (`nnx.jit`) then keeps the state in those shardings: the optimizer's
transformation is wrapped to constrain the new state to them, since `nnx.jit` cannot name output
shardings and XLA would otherwise lay quantized state out as it sees fit.
"""

from __future__ import annotations

from typing import Any

import jax

from optimkit import sharding


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
  if position != len(targets):
    raise ValueError(f"shard_optimizer: the optimizer state has {position} arrays but tx.init on "
                     f"the model's parameters gives {len(targets)}; was the optimizer built with "
                     f"wrt={wrt}?")
  # nnx.jit has no out_shardings for the state: the update itself keeps it in place.
  optimizer.tx = sharding.keep_state_shardings(optimizer.tx, shardings)
  return optimizer
