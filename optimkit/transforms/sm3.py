"""SM3: AdaGrad with sublinear memory, one accumulator per slice along each axis instead of one
per coordinate (Anil, Gupta, Koren & Singer 2019, "Memory-Efficient Adaptive Optimization",
NeurIPS 2019, SM3-II).

For an n x m matrix the state is a row vector (n) and a column vector (m), not an n x m sum of
squares; a rank-k tensor keeps one vector per axis. Each coordinate's sum of squares is bounded
above by the smallest accumulator of the slices it lies in, and the accumulators are kept as the
maxima over their slices, so the bound stays valid (SM3-II, the paper's tighter variant):

    nu_t(i)   = min over axes a of acc_{t-1}^a(i_a)  +  g_t(i)^2
    acc_t^a   = max of nu_t over all axes but a           (acc_0 = 0)
    d_t(i)    = g_t(i) / sqrt(nu_t(i) + eps)               (0 where nu_t(i) = 0)
    m_t       = momentum m_{t-1} + (1 - momentum) d_t      (m_0 = 0)

and the parameters move by -learning_rate * m_t. A vector's only cover is each coordinate (its
accumulator is AdaGrad's sum of squares), and a scalar's is itself.

Checked against optax.sm3 and pytorch-optimizer's SM3. Where optax differs: `optax.sm3` fails
on a scalar (rank-0) leaf, whose list of per-axis accumulators is empty; here a scalar has one
accumulator of shape (). The paper has no eps (the step is 0 where nu_t = 0); eps = 1e-8 inside
the root is optax's. Memory: the per-axis accumulators (n + m numbers for an n x m matrix) are
kept in float32 whatever `state_storage`, which applies to the momentum, the only buffer of the
parameters' size for rank >= 2 leaves; the accumulator of a rank-1 leaf has the leaf's size and
stays in float32 too (vectors are biases and scales: small).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimkit import _checks
from optimkit.state.storage import StorageLike, compute_dtype, resolve
from optimkit.transforms._util import map_like, unzip_leaf


class SM3State(NamedTuple):
  """State of `scale_by_sm3`.

    accumulators: per leaf, a tuple with one array per axis, shaped like the leaf with every
      other axis of size 1 (an n x m leaf: (n, 1) and (1, m)); a scalar leaf: one array ().
    momentum: the momentum m_t, shaped like the params.
  """

  accumulators: Any
  momentum: Any


def cover_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
  """The shapes of a leaf's per-axis accumulators: axis a keeps its size, the others become 1."""
  if not shape:
    return [()]
  return [tuple(n if axis == a else 1 for axis, n in enumerate(shape)) for a in range(len(shape))]


def scale_by_sm3(momentum: float = 0.9, eps: float = 1e-8, *,
                 state_storage: StorageLike = "float32") -> optax.GradientTransformation:
  """SM3-II's direction: g over the root of the per-axis cover bound, with momentum.

  Args:
    momentum: decay of the momentum on the normalised gradient, [0, 1). Default 0.9 (optax's).
    eps: added inside the root, >= 0. Default 1e-8 (optax's; the paper has none).
    state_storage: how the momentum is stored (see `optimkit.state`). Default "float32".

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optimkit.transforms import scale_by_sm3
    >>> tx = optax.chain(scale_by_sm3(), optax.scale_by_learning_rate(0.1))
    >>> params = {"w": jnp.ones((4, 3))}
    >>> updates, state = tx.update({"w": jnp.ones((4, 3))}, tx.init(params), params)

  References:
    Anil, Gupta, Koren & Singer, "Memory-Efficient Adaptive Optimization", NeurIPS 2019.
    optax.sm3; pytorch-optimizer's SM3.
  """
  owner = "scale_by_sm3"
  _checks.check_beta(owner, "momentum", momentum)
  _checks.check_non_negative(owner, "eps", eps)
  store = resolve(state_storage)

  def init_fn(params):
    accumulators = jax.tree.map(
        lambda p: tuple(jnp.zeros(s, compute_dtype(p)) for s in cover_shapes(p.shape)), params)
    return SM3State(accumulators=accumulators, momentum=store.init(params, signed=True))

  def leaf_update(g, covers):
    g = g.astype(covers[0].dtype)
    if g.size == 0:  # a maximum over no elements has no value; nothing to accumulate
      return covers, g
    bound = functools.reduce(jnp.minimum, covers)  # broadcasts to the leaf's shape
    nu = bound + g * g
    axes = range(g.ndim)
    new_covers = tuple(
        jnp.max(nu, axis=tuple(b for b in axes if b != a), keepdims=True) for a in axes) or (nu,)
    normalised = jnp.where(nu > 0, g * jax.lax.rsqrt(nu + eps), 0.0)
    return new_covers, normalised

  def update_fn(updates, state, params=None):
    del params
    results = jax.tree.map(leaf_update, updates, state.accumulators)
    accumulators = unzip_leaf(updates, results, 0)
    normalised = unzip_leaf(updates, results, 1)
    velocity = jax.tree.map(lambda d, m: momentum * m + (1.0 - momentum) * d, normalised,
                            store.read(state.momentum, updates, signed=True))
    return map_like(lambda g, m: m, updates, velocity), SM3State(
        accumulators=accumulators,
        momentum=store.write(velocity, updates, state.momentum, signed=True))

  return optax.GradientTransformation(init_fn, update_fn)
