"""The composition contract of `optimkit.optimizers._declare`, checked for every optimizer in
the registry (and every storage format where the contract concerns state):

  - optax's wrappers: `optax.inject_hyperparams(optimkit.X)(learning_rate=schedule)` steps
    exactly as `optimkit.X(learning_rate=schedule)` does (the wrapper's values drive the step);
  - a donated jitted step runs on an eager `init` inside chain, masked, multi_transform
    (partition), MultiSteps, inject_hyperparams, apply_if_finite and skip_nonfinite, and
    `set_hyperparams` reaches every optimizer inside them;
  - eager `init` returns fresh buffers (no leaf aliases another leaf or a param);
  - float16 params train like float32 params (statistics computed in float32).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optimkit
from optimkit import registry
from tests import registry_harness as h

NAMES = h.names()
WITH_STORAGE = [(name, fmt) for name in NAMES if h.supports_storage(name)
                for fmt in h.STORAGES if registry.get(name).shortcut_of is None]


def _trajectories(name, transforms, steps, dtype=jnp.float32, scale=1.0):
  """Final params after `steps` jitted steps (one lax.scan, one compile) for each transform."""
  goal = h.target(scale=scale)

  def run(tx):
    params = h.params(dtype, scale=scale)
    state = tx.init(params)

    def step(carry, t):
      params, state = carry
      g = h.grads(params, goal)
      updates, state = tx.update(g, state, params, **h.extra_args(name, params, goal, t))
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, state), jnp.arange(steps))
    return params

  return jax.jit(lambda: [run(tx) for tx in transforms])()


def _max_relative(a, b):
  worst = 0.0
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    worst = max(worst, float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-30)))
  return worst


# The exact comparison at float32 and 8-bit (the injection does not depend on the format); every
# format runs under optax.inject_hyperparams inside the composite of the donation test below.
@pytest.mark.parametrize("name,fmt", [(n, f) for n, f in WITH_STORAGE if f in ("float32", "8bit")])
def test_optax_inject_hyperparams_drives_the_step(name, fmt):
  info = registry.get(name)
  lr = info.typical_lr / 10  # small enough that no run reaches the optimum within the steps
  if h.lr_is_schedulable(name):
    schedule = optax.linear_schedule(lr, lr / 10, 6)
    native = info.make(schedule, state_storage=fmt)
    wrapped = optax.inject_hyperparams(info.make)(learning_rate=schedule, state_storage=fmt)
  else:
    # A learning rate that is a number only: Rprop's initial per-coordinate step size, read once
    # by init (as in optax); the wrapper's value, not the declaration's default, sets it.
    native = info.make(lr / 3, state_storage=fmt)
    wrapped = optax.inject_hyperparams(info.make)(learning_rate=lr / 3, state_storage=fmt)
  constant = info.make(lr, state_storage=fmt)
  ours, theirs, fixed = _trajectories(name, [native, wrapped, constant], 8)
  assert _max_relative(theirs, ours) < 1e-6, "optax.inject_hyperparams' value was not used"
  # The schedule changed the run by a good part of how far the params moved (learning-rate-free
  # optimizers move little in 8 steps): otherwise the test could not fail.
  moved = _max_relative(ours, h.params())
  assert _max_relative(fixed, ours) > 1e-2 * moved, "the schedule changed nothing"


def _composite(name, fmt, **options):
  """Every optax wrapper around the optimizer at once, in one transformation (`options`: more
  arguments of the optimizer, e.g. the Kronecker ones' preconditioner_storage)."""
  info = registry.get(name)
  storage = {"state_storage": fmt} if h.supports_storage(name) else {}
  storage.update(options)
  make = lambda: h.make(name, **storage)
  scheduled = h.lr_is_schedulable(name)
  injected = optax.inject_hyperparams(info.make)(
      learning_rate=optax.linear_schedule(info.typical_lr, info.typical_lr / 10, 4)
      if scheduled else info.typical_lr, **storage)
  labels = {"matrix": "a", "stack": "b", "vector": "a", "scalar": "b"}
  groups = {
      "a": optimkit.skip_nonfinite(injected),
      # partition hands each group the whole tree with MaskedNodes elsewhere: masks cover it all.
      "b": optax.masked(make(), {"matrix": False, "stack": True, "vector": False,
                                 "scalar": False}),
  }
  if not registry.get(name).needs:
    # optax.MultiSteps and optax.apply_if_finite are plain GradientTransformations: optax drops
    # update's extra arguments (logits_fn, key) on the way in, so optimizers that need them
    # cannot sit inside either (an optax limitation).
    groups["a"] = optax.MultiSteps(groups["a"], every_k_schedule=1)
    groups["b"] = optax.apply_if_finite(groups["b"], 3)
  return optax.chain(optax.clip_by_global_norm(10.0), optax.partition(groups, labels))


def _donated_steps(name, tx, params, state, steps):
  """`steps` steps of `tx` on the harness's problem, jitted with params and state donated (as a
  training loop runs them); the final params and state."""
  goal = h.target()

  def step(params, state, t):
    g = h.grads(params, goal)
    updates, state = tx.update(g, state, params, **h.extra_args(name, params, goal, t))
    return optax.apply_updates(params, updates), state

  donated = jax.jit(step, donate_argnums=(0, 1))
  for t in range(steps):
    params, state = donated(params, state, jnp.asarray(t))
  return params, state


@pytest.mark.parametrize("name,fmt", WITH_STORAGE + [(n, None) for n in NAMES
                                                     if not h.supports_storage(n)])
def test_donated_step_inside_every_optax_wrapper(name, fmt):
  tx = _composite(name, fmt)
  params = h.params()
  state = tx.init(params)  # eager: the case that used to alias buffers
  start = jax.tree.map(np.asarray, params)
  params, state = _donated_steps(name, tx, params, state, 3)
  moved = {k: float(np.max(np.abs(np.asarray(params[k]) - start[k]))) for k in start}
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves((params, state)))
  # (the scalar is masked out inside group "b": optax.masked passes its raw gradient through)
  assert moved["matrix"] > 0 and moved["vector"] > 0 and moved["stack"] > 0
  # set_hyperparams reaches the optimizer in every wrapper: group "a"'s learning rate follows
  # optax's schedule and is refused, saying so (a number-only learning rate is set everywhere).
  if h.lr_is_schedulable(name):
    with pytest.raises(ValueError, match="follows a schedule"):
      optimkit.set_hyperparams(state, learning_rate=0.0)
  else:
    zeroed = optimkit.set_hyperparams(state, learning_rate=0.0)
    values = [float(np.asarray(v)) for v in _learning_rates(zeroed)]
    assert len(values) == 2 and values == [0.0, 0.0], values


def _learning_rates(tree):
  """Every learning_rate value held in a hyperparams dict of the state."""
  found = []

  def visit(node):
    if hasattr(node, "hyperparams") and isinstance(node.hyperparams, dict):
      if "learning_rate" in node.hyperparams:
        found.append(node.hyperparams["learning_rate"])
    if isinstance(node, (tuple, list)):
      for child in node:
        visit(child)
    elif isinstance(node, dict):
      for child in node.values():
        visit(child)

  visit(tree)
  return found


def _buffers(tree):
  return [shard.data.unsafe_buffer_pointer() for leaf in jax.tree.leaves(tree)
          for shard in leaf.addressable_shards]


@pytest.mark.parametrize("name,fmt", WITH_STORAGE)
def test_eager_init_returns_fresh_buffers(name, fmt):
  params = h.params()
  for tx in (h.make(name, state_storage=fmt),
             optax.inject_hyperparams(registry.get(name).make)(
                 learning_rate=registry.get(name).typical_lr, state_storage=fmt)):
    state = tx.init(params)
    pointers = _buffers(state)
    assert len(pointers) == len(set(pointers)), "two state leaves share a buffer"
    assert not set(pointers) & set(_buffers(params)), "a state leaf is a param's buffer"


@pytest.mark.parametrize("name", [n for n in NAMES if registry.get(n).shortcut_of is None])
def test_float16_params_track_float32(name):
  """Params of scale 0.01, where float16 resolves steps of 1e-5: what differs between the two runs
  is the rounding of the params themselves, not the optimizer's statistics (before they were
  computed in float32, AdamW's float16 run diverged)."""
  scale = 0.01
  goal = h.target(scale=scale)
  tx = h.make(name)
  losses = {}
  for dtype in (jnp.float32, jnp.float16):
    final = _trajectories(name, [tx], 30, dtype, scale)[0]
    losses[dtype] = float(h.loss(final, goal))
  start = float(h.loss(h.params(scale=scale), goal))
  progress = start - losses[jnp.float32]
  assert np.isfinite(losses[jnp.float16]) and progress > 0
  assert abs(losses[jnp.float16] - losses[jnp.float32]) <= 0.05 * progress, losses


def test_adamw_float16_small_gradients_step_like_float32():
  """The issue's example: g*g underflowed in float16 and gave updates of -10."""
  tx = optimkit.adamw(1e-3, weight_decay=0.0)
  out = {}
  for dtype in (jnp.float32, jnp.float16):
    params = jnp.zeros(4, dtype)
    grads = jnp.asarray([1e-3, 1e-4, 3e-5, 1e-5], dtype)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert updates.dtype == dtype
    out[dtype] = np.asarray(updates, np.float64)
  np.testing.assert_allclose(out[jnp.float16], out[jnp.float32], rtol=2e-3)
  np.testing.assert_allclose(out[jnp.float32], -1e-3, rtol=2e-3)  # g / (|g| + eps), eps 1e-8
