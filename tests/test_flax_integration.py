"""Every optimizer inside flax.nnx.Optimizer(model, tx, wrt=nnx.Param) and a Flax Linen
TrainState, training a small MLP; Sophia-G with its logits function passed as an extra arg."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import optimkit

MAKERS = {
    "sgd": lambda: optimkit.sgd(0.05, momentum=0.9),
    "adagrad": lambda: optimkit.adagrad(0.1),
    "rmsprop": lambda: optimkit.rmsprop(3e-3),
    "adam": lambda: optimkit.adam(1e-2),
    "adamw": lambda: optimkit.adamw(1e-2, mask=optimkit.weight_decay_mask),
    "lion": lambda: optimkit.lion(1e-3),
    "adafactor": lambda: optimkit.adafactor(1e-2, min_dim_size_to_factor=8),
    "lamb": lambda: optimkit.lamb(1e-2),
    "lars": lambda: optimkit.lars(0.5, trust_coefficient=0.05),
    "sophia": lambda: optimkit.sophia(3e-3, weight_decay=0.0, seed=0),
    "schedule_free_adamw": lambda: optimkit.schedule_free_adamw(1e-2),
    "schedule_free_sgd": lambda: optimkit.schedule_free_sgd(0.1),
    "stable_adamw": lambda: optimkit.stable_adamw(1e-2),
    "adan": lambda: optimkit.adan(1e-2),
    "radam": lambda: optimkit.radam(1e-2),
    "ranger": lambda: optimkit.ranger(1e-2),
    "adam_mini": lambda: optimkit.adam_mini(1e-2),
    "adams": lambda: optimkit.adams(1e-2),
}

rng = np.random.default_rng(0)
X = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
Y = jnp.asarray((rng.normal(size=(64,)) > 0).astype(np.int32) + (X[:, 0] > 0.5))


class NNXModel(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(8, 16, rngs=rngs)
    self.norm = nnx.LayerNorm(16, rngs=rngs)
    self.out = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x):
    return self.out(self.norm(jax.nn.relu(self.hidden(x))))


def _ce(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_nnx_optimizer_trains(name):
  model = NNXModel(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, MAKERS[name](), wrt=nnx.Param)
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: _ce(m(X), Y))(model)

    def logits_fn(params):  # for Sophia-G: the model's logits as a function of its params
      return nnx.merge(graphdef, params, rest)(X)

    optimizer.update(model, grads, logits_fn=logits_fn)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(60)]
  assert np.isfinite(losses).all()
  assert losses[-1] < losses[0]


class LinenModel(linen.Module):
  @linen.compact
  def __call__(self, x):
    x = jax.nn.relu(linen.Dense(16)(x))
    return linen.Dense(3)(linen.LayerNorm()(x))


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_linen_train_state_trains(name):
  model = LinenModel()
  params = model.init(jax.random.key(0), X)["params"]
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=MAKERS[name]())

  @jax.jit
  def train_step(state):
    loss_fn = lambda p: _ce(state.apply_fn({"params": p}, X), Y)
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    if name == "sophia":  # TrainState.apply_gradients does not forward extra args to tx.update
      updates, opt_state = state.tx.update(
          grads, state.opt_state, state.params,
          logits_fn=lambda p: state.apply_fn({"params": p}, X))
      state = state.replace(step=state.step + 1, opt_state=opt_state,
                            params=optax.apply_updates(state.params, updates))
    else:
      state = state.apply_gradients(grads=grads)
    return state, loss

  losses = []
  for _ in range(60):
    state, loss = train_step(state)
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert losses[-1] < losses[0]


@pytest.mark.parametrize("storage", ["bfloat16", "8bit", "4bit"])
def test_nnx_optimizer_with_quantized_state(storage):
  """NNX turns NamedTuples nested in its optimizer state into mappings; quantized moments must
  survive that round trip (leaves here are big enough to be quantized)."""

  class Wide(nnx.Module):
    def __init__(self, rngs):
      self.hidden = nnx.Linear(8, 512, rngs=rngs)
      self.out = nnx.Linear(512, 3, rngs=rngs)

    def __call__(self, x):
      return self.out(jax.nn.relu(self.hidden(x)))

  model = Wide(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optimkit.adamw(3e-3, state_storage=storage), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: _ce(m(X), Y))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(40)]
  assert np.isfinite(losses).all() and losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["adamw", "adafactor", "schedule_free_adamw", "sophia"])
def test_params_as_nnx_split_returns_them_step_like_their_values(name):
  """`graphdef, params = nnx.split(model, nnx.Param)` gives a State of Param Variables, and
  gradients of the same shape: a jitted, donated step on those (the compare job's setting, under
  skip_nonfinite) equals the step on the plain values, and schedule-free's averaged point comes
  back in the params' containers."""
  graphdef, params = nnx.split(NNXModel(nnx.Rngs(0)), nnx.Param)
  values = jax.tree.map(lambda v: v.get_value(), params,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))

  def loss(p):
    return _ce(nnx.merge(graphdef, p)(X), Y)

  def train(start):
    tx = optimkit.skip_nonfinite(MAKERS[name]())

    def step(p, state, t):
      grads = jax.grad(loss)(p)
      updates, state = tx.update(grads, state, p, key=jax.random.key(t),
                                 logits_fn=lambda q: nnx.merge(graphdef, q)(X))
      return optax.apply_updates(p, updates), state

    p, state = jax.tree.map(jnp.copy, (start, tx.init(start)))
    run = jax.jit(step, donate_argnums=(0, 1))
    for t in range(5):
      p, state = run(p, state, t)
    return p, state

  trained, state = train(params)
  plain, _ = train(values)
  assert jax.tree.structure(trained) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(plain)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  assert float(loss(trained)) < float(loss(params))
  if name == "schedule_free_adamw":
    averaged = optimkit.schedule_free_eval_params(state, trained)
    assert jax.tree.structure(averaged) == jax.tree.structure(params)
