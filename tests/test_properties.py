"""Property-based tests (hypothesis) over every public optimizer, the core primitives and every
state storage format: random pytrees (nested dicts, lists and tuples; scalars, zero-size arrays,
rank 0 to 4; float16, bfloat16, float32, float64 mixed in one tree) and random valid
hyperparameters.

Invariants checked on each example:
  - updates have the params' tree structure, shapes and dtypes; every optimizer with
    per-parameter state (all but plain SGD and Adafactor's factored statistics) holds a subtree
    with the params' structure and shapes;
  - finite gradients give finite updates and a finite state;
  - `init` and `update` give the same state structure, shapes and dtypes outside and under
    `jit`, and the state after a step has exactly the structure, shapes and dtypes `init` gave
    (eager `init` on every example; eager `update`, which compiles every op anew for each new
    shape, on the first EAGER_UPDATES examples of each test, to keep the suite fast);
  - a jitted step compiles once for a shape signature (three steps, one compilation).

Examples are derandomized (the same ones on every run) so CI is reproducible; each test prints
nothing and the counts are in `EXAMPLES`.
"""

import inspect
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import optimkit
from optimkit import registry
from optimkit.state import storage

EXAMPLES = {"optimizers": 10, "primitives": 6, "storage": 10}
EAGER_UPDATES = 2
FLOAT_DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64]
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------------------------
# Random pytrees and gradients.


@st.composite
def arrays(draw):
  rank = draw(st.integers(0, 4))
  shape = tuple(draw(st.lists(st.integers(0, 5), min_size=rank, max_size=rank)))
  dtype = draw(st.sampled_from(FLOAT_DTYPES))
  seed = draw(st.integers(0, 2 ** 16))
  values = np.random.default_rng(seed).normal(size=shape)
  return jnp.asarray(values, dtype)


def _containers(children):
  keys = st.text("abcdefgh", min_size=1, max_size=3)
  return st.one_of(st.dictionaries(keys, children, min_size=1, max_size=3),
                   st.lists(children, min_size=1, max_size=3),
                   st.lists(children, min_size=1, max_size=3).map(tuple))


pytrees = st.recursive(arrays(), _containers, max_leaves=6)


def _gradients(params, seed):
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(treedef, [jnp.asarray(rng.normal(size=leaf.shape), leaf.dtype)
                                      for leaf in leaves])


def _loss_fn(params):  # for Sophia's Hessian estimator
  return sum(jnp.sum(leaf.astype(jnp.float32) ** 2) for leaf in jax.tree.leaves(params))


# ----------------------------------------------------------------------------------------------
# Random valid hyperparameters, per optimizer.

beta = st.floats(0.0, 0.999)
positive_beta = st.floats(0.01, 0.999)
rate = st.floats(1e-5, 1e-1)
decay = st.floats(0.0, 0.1)
eps = st.sampled_from([1e-8, 1e-6, 1e-3])
storages = st.sampled_from(["float32", "bfloat16", "8bit", "4bit"])

def _around(info, name, parameter):
  """Valid values of one numeric argument, drawn from its declared range around its default:
  the property tests' strategies come from the registry, not from a hand copy of the ranges."""
  spec = dict(info.ranges[name])
  integer = spec.pop("integer", False)
  low, high = spec.get("low", -math.inf), spec.get("high", math.inf)
  default = parameter.default
  default = getattr(default, "value", default)  # structural(...)
  if name == "learning_rate":
    return st.floats(info.typical_lr / 10, info.typical_lr)
  if integer:
    start = int(default) if isinstance(default, (int, float)) else int(max(low, 0))
    top = start + 2 if not math.isfinite(high) else min(int(high), start + 2)
    return st.integers(max(int(low) if math.isfinite(low) else start, start), max(start, top))
  if math.isfinite(high) and high <= 1.0:  # a decay rate
    bottom = max(low, 0.0) if spec.get("low_inclusive", True) else max(low, 0.0) + 1e-3
    return st.floats(max(bottom, 0.5 if isinstance(default, float) and default >= 0.5 else
                         bottom), high * 0.999)
  if isinstance(default, (int, float)) and not isinstance(default, bool) and default > 0:
    return st.floats(max(default / 2, low), default * 2 if not math.isfinite(high)
                     else min(high, default * 2))
  return st.just(default)


def _hyperparameters(name):
  """A strategy of valid keyword arguments for `registry.get(name).make`."""
  info = registry.get(name)
  parameters = inspect.signature(info.make).parameters
  fields = {}
  for argument, parameter in parameters.items():
    if argument in info.ranges:
      values = _around(info, argument, parameter)
      fields[argument] = st.none() | values if parameter.default is None else values
    elif argument == "state_storage":
      fields[argument] = storages
    elif isinstance(parameter.default, bool):
      fields[argument] = st.booleans()
  if "seed" in parameters:
    fields["seed"] = st.integers(0, 9)
  if "estimator" in parameters:  # the harness's loss_fn serves Hutchinson on any tree
    fields["estimator"] = st.just("hutchinson")
  return st.fixed_dictionaries(fields)


OPTIMIZERS = {name: _hyperparameters(name) for name in registry.names()}


# ----------------------------------------------------------------------------------------------
# The invariants.


def _signature(tree):
  return jax.tree.structure(tree), [(leaf.shape, jnp.dtype(leaf.dtype))
                                     for leaf in jax.tree.leaves(tree)]


def _all_finite(tree):
  return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree)
             if jnp.issubdtype(leaf.dtype, jnp.inexact))


def _holds_params_shaped_state(state, params):
  """Some subtree of the state has the params' tree structure and, leaf for leaf, their shapes
  (a moment, a momentum, a base sequence ...)."""
  params_def = jax.tree.structure(params)
  shapes = [leaf.shape for leaf in jax.tree.leaves(params)]
  subtrees = jax.tree.leaves(state, is_leaf=lambda x: jax.tree.structure(x) == params_def)
  return any(jax.tree.structure(subtree) == params_def
             and [leaf.shape for leaf in jax.tree.leaves(subtree)] == shapes
             for subtree in subtrees)


def check_invariants(tx, params, seed, eager_update=True, params_shaped_state=False):
  tx = optax.with_extra_args_support(tx)
  state = tx.init(params)
  assert _signature(jax.jit(tx.init)(params)) == _signature(state)
  if params_shaped_state:
    assert _holds_params_shaped_state(state, params)

  @jax.jit
  def step(grads, state, params):
    return tx.update(grads, state, params, loss_fn=_loss_fn, key=jax.random.key(0))

  for i in range(3):
    grads = _gradients(params, seed + i)
    updates, new_state = step(grads, state, params)
    assert _signature(updates) == _signature(params)
    assert _signature(new_state) == _signature(state)
    assert _all_finite(updates) and _all_finite(new_state)
    if i == 0 and eager_update:  # outside jit: the same structure, shapes and dtypes
      eager_updates, eager_state = tx.update(grads, state, params, loss_fn=_loss_fn,
                                             key=jax.random.key(0))
      assert _signature(eager_updates) == _signature(updates)
      assert _signature(eager_state) == _signature(new_state)
    params, state = optax.apply_updates(params, updates), new_state
  assert step._cache_size() == 1


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_invariants(name):
  @settings(max_examples=EXAMPLES["optimizers"], **SETTINGS)
  @given(params=pytrees, hyperparameters=OPTIMIZERS[name], seed=st.integers(0, 2 ** 16))
  def run(params, hyperparameters, seed):
    examples.append(seed)
    # An optimizer that keeps a params-shaped subtree of state (a moment, a momentum ...) for a
    # small reference tree keeps one for every tree (not all do: plain SGD, Adafactor's and
    # CAME's factored statistics). Small trees keep quantized leaves in float32 (`min_size`).
    tx = registry.get(name).make(**hyperparameters)
    reference = {"a": jnp.zeros((3, 2)), "b": jnp.zeros(4)}
    params_shaped = _holds_params_shaped_state(jax.eval_shape(tx.init, reference), reference)
    check_invariants(tx, params, seed,
                     eager_update=len(examples) <= EAGER_UPDATES,
                     params_shaped_state=params_shaped)

  examples = []
  run()


PRIMITIVES = {
    "scale_by_adam": lambda draw: optimkit.scale_by_adam(b1=draw(beta), b2=draw(positive_beta)),
    "scale_by_sign_momentum": lambda draw: optimkit.scale_by_sign_momentum(
        b1=draw(beta), b2=draw(beta)),
    "scale_by_factored_rms": lambda draw: optimkit.scale_by_factored_rms(
        min_dim_size_to_factor=draw(st.integers(0, 4))),
    "scale_by_trust_ratio": lambda draw: optimkit.scale_by_trust_ratio(),
    "scale_by_lars": lambda draw: optimkit.scale_by_lars(
        trust_coefficient=draw(st.floats(0.001, 1.0))),
    "scale_by_adan": lambda draw: optimkit.scale_by_adan(),
    "scale_by_radam": lambda draw: optimkit.scale_by_radam(),
    "scale_by_stable_adam": lambda draw: optimkit.scale_by_stable_adam(),
    "scale_by_adams": lambda draw: optimkit.scale_by_adams(),
    "scale_by_adam_mini": lambda draw: optimkit.scale_by_adam_mini(),
    "schedule_free": lambda draw: optax.chain(
        optax.scale_by_adam(b1=0.0),
        optimkit.schedule_free(learning_rate=draw(rate), b1=draw(positive_beta))),
    "lookahead": lambda draw: optimkit.lookahead(optax.sgd(draw(rate)),
                                                 sync_period=draw(st.integers(1, 3))),
    "skip_nonfinite": lambda draw: optimkit.skip_nonfinite(optimkit.adamw(draw(rate))),
    "compensated_updates_kahan": lambda draw: optimkit.compensated_updates(
        optimkit.adamw(draw(rate)), "kahan"),
    "compensated_updates_stochastic": lambda draw: optimkit.compensated_updates(
        optimkit.adamw(draw(rate)), "stochastic"),
}
# Trees a primitive rejects by design, with the documented error: stochastic rounding is defined
# for bfloat16 (and wider) params, not float16.
REJECTED = {
    "compensated_updates_stochastic": (
        lambda params: any(leaf.dtype == jnp.float16 for leaf in jax.tree.leaves(params)),
        "method='stochastic' supports bfloat16"),
}


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_primitive_invariants(name):
  @settings(max_examples=EXAMPLES["primitives"], **SETTINGS)
  @given(params=pytrees, data=st.data(), seed=st.integers(0, 2 ** 16))
  def run(params, data, seed):
    tx = PRIMITIVES[name](data.draw)
    rejects, message = REJECTED.get(name, (lambda params: False, ""))
    if rejects(params):
      with pytest.raises(ValueError, match=re.escape(message)):
        check_invariants(tx, params, seed)
    else:
      examples.append(seed)
      check_invariants(tx, params, seed, eager_update=len(examples) <= EAGER_UPDATES)

  examples = []

  run()


def _format_error_bound(store, signed):
  """The largest error of one write and read, relative to the largest magnitude in the block (or
  row/column for rank-1): half the widest gap between adjacent codes of the format's map, or,
  for a zero-free map, its smallest code (what zero becomes)."""
  if store.name == "float32":
    return 0.0
  if store.name == "bfloat16":
    return 2 ** -7  # stochastic rounding: below one unit in the last place, 8 bits of mantissa
  tables = ([store.tables[signed]] if store.name == "8bit" else
            [store.signed_table] if signed else [store.second_moment_table])
  bound = 0.0
  for table in tables:
    codes = np.sort(np.asarray(table, np.float64))
    bound = max(bound, float(np.max(np.diff(codes))) / 2,
                1.0 - codes.max(),                            # the block's largest value
                codes.min() + 1.0 if signed else codes.min())  # its most negative, or zero
  return bound + 2 ** -20  # plus float32 rounding of the scale and the decode


@pytest.mark.parametrize("fmt", sorted(storage.FORMATS))
@pytest.mark.parametrize("signed", [True, False])
def test_storage_round_trip(fmt, signed):
  """Any leaf, written and read back: the same shape and compute dtype, finite, and within the
  format's resolution of the value (quantized formats forced on small leaves)."""
  store = storage.resolve(fmt)
  if hasattr(store, "min_size"):
    store.min_size = 1
  relative = _format_error_bound(store, signed)

  @settings(max_examples=EXAMPLES["storage"], **SETTINGS)
  @given(like=arrays(), seed=st.integers(0, 2 ** 16))
  def run(like, seed):
    value = jnp.asarray(np.random.default_rng(seed).normal(size=like.shape),
                        storage.compute_dtype(like))
    value = value if signed else value ** 2
    stored = store.write_leaf(value, like, store.init_leaf(like, signed), signed)
    assert _signature(stored) == _signature(store.init_leaf(like, signed))
    back = store.read_leaf(stored, like, signed)
    assert back.shape == like.shape and back.dtype == storage.compute_dtype(like)
    assert _all_finite(back)
    if like.size:
      scale = float(jnp.max(jnp.abs(value)))
      assert float(jnp.max(jnp.abs(back - value))) <= relative * scale + 1e-30

  run()
