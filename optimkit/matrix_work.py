"""Where per-matrix work runs: apply a function of one matrix to many matrices, each computed
once, spread over the devices of the mesh.

    results = map_matrices(f, [a, b, c])        # f(matrix) -> matrix, for every matrix

Muon's Newton-Schulz iteration, Shampoo's inverse roots and SOAP's eigenbases are functions of
one matrix. Left to GSPMD, a matrix sharded over the mesh makes every matmul of such a function
a collective (Gram matrices all-reduced, `A @ A` replicated), and a replicated matrix is
orthogonalized by every device. Here the algorithm says only "apply f to each of these
matrices"; this module decides who computes what:

  - matrices of the same shape and dtype are stacked into one (count, rows, cols) array;
  - the stack is padded with zero matrices to a multiple of the device count and its stack axis
    sharded over all (Auto) mesh axes, so each device holds ceil(count / devices) whole
    matrices: XLA moves them there with one all-to-all per mesh axis (a local slice when the
    inputs are replicated);
  - f runs under `vmap` on each device's share (on CPU, an f that calls LAPACK runs one matrix
    at a time instead: see `_batched`);
  - each result goes back to the layout its consumer needs through the same hops (an
    all-gather when that layout is replicated, as in data parallelism: the authors'
    distributed Muon).

Per-device FLOPs are then total / devices up to the padding of each group, instead of GSPMD's
per-iteration collectives or every device repeating everything. A group with fewer matrices
than devices still costs every device one matrix (the padding): no worse than replicating it,
but no gain either; transformers have dozens of same-shape matrices per group.

Which mesh: the one given (`mesh=`), else the mesh of explicitly sharded inputs (Explicit
axes), else the context mesh (`jax.set_mesh(mesh)`, which JAX asks sharded programs to use).
With no mesh, or a mesh of one device, f is simply vmapped over each input's leading axes where
it lies. Under Explicit axes each result is returned in its input's sharding (for outputs shaped
like their inputs; other outputs keep the sharding of the leading batch axes). Under Auto axes
the results are left to XLA's sharding propagation, which gives them the layout of their
consumers (in an optimizer step: the parameter's); only the work layout is constrained.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.extend.core import jaxpr_as_fun
from jax.sharding import AxisType, NamedSharding, PartitionSpec

MatrixFn = Callable[[jax.Array], jax.Array]


def map_matrices(f: MatrixFn, matrices: Sequence[jax.Array], *, mesh=None) -> list[jax.Array]:
  """`[f(x) for x in matrices]`, each matrix computed once somewhere on the mesh.

  Args:
    f: a function of one matrix (a 2-D array) returning one array (usually a matrix, of the
      same or another shape); traceable, and the same function for every matrix.
    matrices: arrays of rank >= 2. The last two axes are the matrix; leading axes index a
      batch of matrices (scanned layers, heads, experts), each of which f sees alone.
    mesh: the mesh to spread the work over (a `Mesh` or `AbstractMesh`). Default: the mesh of
      explicitly sharded inputs, else the context mesh, else none (local vmap).

  Returns:
    A list with, for each input of shape `batch + (m, n)`, the array of shape
    `batch + f_shape` holding f of each of its matrices.
  """
  matrices = list(matrices)
  for index, x in enumerate(matrices):
    if getattr(x, "ndim", 0) < 2:
      raise ValueError(f"map_matrices: input {index} has shape {getattr(x, 'shape', None)}; "
                       f"every input must be a matrix or a batch of matrices (rank >= 2)")
  if not matrices:
    return []
  mesh, explicit = _work_mesh(matrices, mesh)
  axes = _spread_axes(mesh)
  if not axes:
    return [_local(f, x) for x in matrices]
  if not explicit:
    return _spread(f, matrices, mesh, axes)

  # Sharding in types: run the layout with the axes in Auto mode and hand every result back in
  # its input's type, so the caller's types stay well defined.
  outputs = [_output_struct(f, x) for x in matrices]
  targets = []
  for x, out in zip(matrices, outputs):
    spec = tuple(jax.typeof(x).sharding.spec) + (None,) * x.ndim
    if out.shape == x.shape:
      targets.append(NamedSharding(mesh, PartitionSpec(*spec[:x.ndim])))
    else:
      batch = spec[:x.ndim - 2]
      targets.append(NamedSharding(mesh, PartitionSpec(*batch, *(None,) * (len(out.shape)
                                                                           - len(batch)))))
  run = jax.sharding.auto_axes(lambda *xs: tuple(_spread(f, list(xs), mesh, axes)),
                               out_sharding=tuple(targets))
  return list(run(*matrices))


def _work_mesh(matrices: list, mesh):
  """(mesh, whether the inputs are explicitly sharded)."""
  for x in matrices:
    sharding = jax.typeof(x).sharding
    if isinstance(sharding, NamedSharding) and AxisType.Explicit in sharding.mesh.axis_types \
        and any(entry is not None for entry in sharding.spec):
      return (mesh if mesh is not None else sharding.mesh), True
  if mesh is None:
    mesh = jax.sharding.get_abstract_mesh()
  if getattr(mesh, "empty", False):
    # Eager calls on arrays placed on a mesh: their (concrete) mesh.
    for x in matrices:
      sharding = getattr(x, "sharding", None) if not isinstance(x, jax.core.Tracer) else None
      if isinstance(sharding, NamedSharding) and sharding.mesh.size > 1:
        return sharding.mesh, False
  return mesh, False


def _spread_axes(mesh) -> tuple[str, ...]:
  """The mesh axes the stack axis is sharded over: every axis not under manual control
  (inside `shard_map` the manual axes are already split by the user)."""
  if mesh is None or getattr(mesh, "empty", False) or mesh.size == 1:
    return ()
  return tuple(name for name, kind in zip(mesh.axis_names, mesh.axis_types)
               if kind != AxisType.Manual and mesh.shape[name] > 1)


def _output_struct(f: MatrixFn, x: jax.Array) -> jax.ShapeDtypeStruct:
  one = jax.eval_shape(f, jax.ShapeDtypeStruct(x.shape[-2:], x.dtype))
  return jax.ShapeDtypeStruct(x.shape[:-2] + tuple(one.shape), one.dtype)


def _local(f: MatrixFn, x: jax.Array) -> jax.Array:
  """f on every matrix of `x` where `x` lies: no stacking, no copies."""
  if x.ndim == 2:
    return f(x)
  batch = x.shape[:-2]
  out = _batched(f, x.reshape((1, -1) + x.shape[-2:]))[0]
  return out.reshape(batch + out.shape[1:])


def _batched(f: MatrixFn, chunks: jax.Array) -> jax.Array:
  """f on every matrix of `chunks`, shaped (devices, per_device, rows, cols), the leading axis
  the one that may be sharded: `vmap`, except on CPU for an f that calls a LAPACK routine.

  jaxlib 0.10's CPU LAPACK kernels (eigh, QR, triangular solves, ...) split a batch over XLA's
  intra-op thread pool and block a pool thread until the pieces are done. Several devices (or
  independent thunks) running a batched decomposition at once then hold every thread of the pool
  and wait on each other forever: Shampoo on 8 simulated CPU devices hung in
  `jax::ParallelBatchMap` (the fix in jaxlib 0.11 is not on PyPI). There, each device runs its
  matrices one at a time (`lax.map` over the second axis), which calls LAPACK without a batch.
  Matmul-only work (Newton-Schulz) stays batched everywhere. f is traced once, here."""
  one = jax.ShapeDtypeStruct(chunks.shape[2:], chunks.dtype)
  traced, out_shape = jax.make_jaxpr(f, return_shape=True)(one)
  run = jaxpr_as_fun(traced)
  one_matrix = lambda matrix: jax.tree.unflatten(jax.tree.structure(out_shape), run(matrix))
  if jax.default_backend() == "cpu" and _has_primitive(traced.jaxpr, _LAPACK_PRIMITIVES):
    return jax.vmap(lambda chunk: jax.lax.map(one_matrix, chunk))(chunks)
  return jax.vmap(jax.vmap(one_matrix))(chunks)


# Primitives that jaxlib lowers to its CPU LAPACK kernels.
_LAPACK_PRIMITIVES = frozenset({"eigh", "eig", "qr", "geqrf", "geqp3", "householder_product",
                                "triangular_solve", "cholesky", "lu", "svd", "schur",
                                "hessenberg", "tridiagonal", "tridiagonal_solve"})


def _has_primitive(jaxpr, names: frozenset) -> bool:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in names:
      return True
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
        if hasattr(inner, "eqns") and _has_primitive(inner, names):
          return True
  return False


def _spread(f: MatrixFn, matrices: list, mesh, axes: tuple[str, ...]) -> list[jax.Array]:
  """Stack same-shape matrices, shard the stack axis over `axes`, vmap f, unstack."""
  devices = math.prod(mesh.shape[name] for name in axes)
  hops = _hops(axes)
  groups: dict[tuple, list[int]] = {}
  for index, x in enumerate(matrices):
    groups.setdefault((x.shape[-2:], jnp.dtype(x.dtype)), []).append(index)

  results: list = [None] * len(matrices)
  for (shape, _), members in groups.items():
    pieces = [matrices[i].reshape((-1,) + shape) for i in members]
    count = sum(piece.shape[0] for piece in pieces)
    padding = -count % devices
    if padding:
      # Zero matrices fill the last round; every f used here maps them to finite values.
      pieces.append(jnp.zeros((padding,) + shape, pieces[0].dtype))
    stack = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces)
    stack = _constrain(stack, mesh, (), False)
    for hop in hops:
      stack = _constrain(stack, mesh, *hop)
    out = _batched(f, stack.reshape((devices, -1) + shape))
    out = out.reshape((-1,) + out.shape[2:])
    for hop in reversed(hops):
      out = _constrain(out, mesh, *hop)
    # Last hop: the stack axis unsharded, the matrix axes free, so that XLA gives each result
    # its consumer's layout in one collective (an all-gather when that is replicated) and the
    # slices below are local.
    out = _constrain(out, mesh, (), False)
    start = 0
    for i, piece in zip(members, pieces):
      size = piece.shape[0]
      batch = matrices[i].shape[:-2]
      results[i] = out[start:start + size].reshape(batch + out.shape[1:])
      start += size
  return results


def _hops(axes: tuple[str, ...]) -> list[tuple]:
  """The stack's shardings on the way to whole matrices on each device, one mesh axis at a time,
  as (mesh axes of the stack axis, whether the other axes are pinned unsharded).

  XLA reshards a matrix split over two mesh axes into a stack split over both by replicating
  it first (an all-gather of everything: "involuntary full rematerialization"), but moves one
  axis at a time with an all-to-all. So the stack axis takes the mesh axes one by one, the
  matrix axes left free in between (XLA keeps the remaining mesh axes where they were), and
  only the last hop pins the matrix axes unsharded. Results go back through the same hops.
  """
  return [(axes[:k], k == len(axes)) for k in range(1, len(axes) + 1)]


def _constrain(x: jax.Array, mesh, stack_axes: tuple[str, ...], pinned: bool) -> jax.Array:
  rest = None if pinned else PartitionSpec.UNCONSTRAINED
  stack = stack_axes if len(stack_axes) > 1 else stack_axes[0] if stack_axes else None
  spec = PartitionSpec(stack, *(rest,) * (x.ndim - 1))
  if isinstance(mesh, jax.sharding.Mesh):
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
  return jax.lax.with_sharding_constraint(x, spec)  # an abstract (context) mesh
