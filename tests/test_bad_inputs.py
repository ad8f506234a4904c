"""The catalogue of bad inputs: each case states the exact error a user sees.

Every message names the argument or tree path and says what is valid. The sections: ranged
hyperparameters of every public optimizer (generated from its signature, so a new optimizer is
covered the day it is added), arguments specific to one optimizer, schedules, primitives,
gradient trees that do not match the params, integer params, a state from another optimizer,
sharding specs that do not fit a mesh, and checkpoints from another optimizer.
"""

import inspect
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

import optimkit
from optimkit import _checks, checkpoint, registry, schedules, sharding

# ----------------------------------------------------------------------------------------------
# Ranged hyperparameters of every optimizer in the registry, from the ranges its declaration
# validates (no hand copy): values just outside the range, NaN, a string and None.


def _outside(spec):
  values = []
  low, high = spec.get("low", -math.inf), spec.get("high", math.inf)
  if math.isfinite(low):
    values.append(low if not spec.get("low_inclusive", True) else low - 1)
  if math.isfinite(high):
    values.append(high if not spec.get("high_inclusive", True) else high + 1)
  return values + [math.nan]


def _ranged_cases():
  cases = []
  for name in registry.names():
    info = registry.get(name)
    owner = info.shortcut_of or name
    parameters = inspect.signature(info.make).parameters
    for argument, spec in info.ranges.items():
      plain = {k: v for k, v in spec.items() if k != "integer"}
      valid = _checks.describe_range(**plain)
      for value in _outside(spec):
        cases.append((name, argument, value, f"{owner}: {argument} must be in {valid}, got "
                                             f"{value!r}"))
      cases.append((name, argument, "1e-3",
                    f"{owner}: {argument} must be a number in {valid}, got '1e-3'"))
      default = parameters[argument].default
      if default is not None and "None" not in str(parameters[argument].annotation):
        cases.append((name, argument, None,
                      f"{owner}: {argument} must be a number in {valid}, got None"))
  return cases


RANGED = _ranged_cases()


@pytest.mark.parametrize("name,argument,value,message", RANGED,
                         ids=[f"{n}-{a}-{v}" for n, a, v, _ in RANGED])
def test_out_of_range_hyperparameter(name, argument, value, message):
  with pytest.raises(ValueError) as raised:
    registry.get(name).make(**{argument: value})
  assert str(raised.value) == message


def test_every_optimizer_has_ranged_cases():
  assert {name for name, *_ in RANGED} == set(registry.names())


def test_every_public_optimizer_is_in_the_registry():
  public = {name for name in dir(optimkit) if callable(getattr(optimkit, name)) and
            getattr(getattr(optimkit, name), "__module__", "").startswith("optimkit.optimizers.")}
  assert public == set(registry.names())


# ----------------------------------------------------------------------------------------------
# Arguments specific to one optimizer, schedules and primitives: (thunk, exact message).

def _sophia_step(tx):
  params = {"w": jnp.ones(3)}
  tx.update({"w": jnp.ones(3)}, tx.init(params), params)


SPECIFIC = {
    "learning_rate None": (
        lambda: optimkit.adamw(learning_rate=None),
        "adamw: learning_rate must be a number in [0.0, inf], got None"),
    "learning_rate schedule negative at step 0": (
        lambda: optimkit.adamw(learning_rate=lambda step: -1.0 + 0 * step),
        "adamw: learning_rate (at step 0 of the schedule) must be in [0.0, inf], got -1.0"),
    "state_storage unknown": (
        lambda: optimkit.sgd(1e-2, momentum=0.9, state_storage="int3"),
        "sgd: state_storage must be one of ['4bit', '8bit', 'bfloat16', 'float32'] or a "
        "StateStorage, got 'int3'"),
    "sophia without its estimator's function": (
        lambda: _sophia_step(optimkit.sophia(1e-3, seed=0)),
        "scale_by_sophia: the Gauss-Newton-Bartlett estimator (estimator='gnb', "
        "Sophia-G) needs logits_fn= passed to update(): a function params -> logits (or use "
        "estimator='hutchinson' with loss_fn=)"),
    "sophia-h without loss_fn": (
        lambda: _sophia_step(optimkit.sophia(1e-3, seed=0, estimator="hutchinson")),
        "scale_by_sophia: the Hutchinson estimator (estimator='hutchinson', Sophia-H) "
        "needs loss_fn= passed to update(): a function params -> scalar loss"),
    "sophia update_interval": (
        lambda: optimkit.sophia(update_interval=0),
        "sophia: update_interval must be in [1, inf], got 0"),
    "sophia estimator": (
        lambda: optimkit.sophia(estimator="newton"),
        "sophia: scale_by_sophia: estimator must be one of ['gnb', 'hutchinson'] or a callable, "
        "got 'newton'"),
    "ranger sync_period": (
        lambda: optimkit.ranger(sync_period=0),
        "ranger: sync_period must be in [1, inf], got 0"),
    "ranger alpha": (
        lambda: optimkit.ranger(alpha=1.5),
        "ranger: alpha must be in [0.0, 1.0], got 1.5"),
    "adafactor min_dim_size_to_factor": (
        lambda: optimkit.adafactor(min_dim_size_to_factor=-1),
        "adafactor: min_dim_size_to_factor must be in [0, inf], got -1"),
    "adafactor decay_offset": (
        lambda: optimkit.adafactor(decay_offset=-1),
        "adafactor: decay_offset must be in [0, inf], got -1"),
    "schedule_free_adamw b1 zero": (
        lambda: optimkit.schedule_free_adamw(b1=0.0),
        "schedule_free_adamw: schedule_free: b1 must be in (0.0, 1.0), got 0.0"),
    "lamb stack_dims": (
        lambda: optimkit.lamb(stack_dims=-1),
        "lamb: scale_by_trust_ratio: stack_dims must be an integer >= 0, got -1"),
    "adam_mini blocks": (
        lambda: optimkit.adam_mini(blocks="heads"),
        "adam_mini: scale_by_adam_mini: blocks must be None, a tree of axis tuples shaped like "
        "the params or a callable params -> such a tree, got 'heads'"),
    # Schedules.
    "constant value": (lambda: schedules.constant(-1.0),
                       "constant: value must be in [0.0, inf], got -1.0"),
    "cosine decay_steps": (lambda: schedules.cosine(1.0, decay_steps=0),
                           "cosine: decay_steps must be an integer >= 1, got 0"),
    "cosine exponent": (lambda: schedules.cosine(1.0, 10, exponent=0.0),
                        "cosine: exponent must be in (0.0, inf], got 0.0"),
    "cosine_restarts period_mult": (
        lambda: schedules.cosine_restarts(1.0, 10, period_mult=0),
        "cosine_restarts: period_mult must be an integer >= 1, got 0"),
    "exponential gamma": (lambda: schedules.exponential(1.0, gamma=0.0),
                          "exponential: gamma must be in (0.0, inf], got 0.0"),
    "inverse_sqrt warmup_steps": (lambda: schedules.inverse_sqrt(1.0, warmup_steps=-1),
                                  "inverse_sqrt: warmup_steps must be an integer >= 1, got -1"),
    "join counts": (lambda: schedules.join([schedules.constant(1.0)], [5]),
                    "join: need one more schedule than boundaries, got 1 schedules and 1 "
                    "boundaries"),
    "join order": (lambda: schedules.join([schedules.constant(1.0)] * 3, [5, 3]),
                   "join: boundaries must be non-decreasing integers >= 0, got [5, 3]"),
    "linear transition_begin": (lambda: schedules.linear(1.0, 0.0, 10, transition_begin=-1),
                                "linear: transition_begin must be an integer >= 0, got -1"),
    "onecycle total_steps": (lambda: schedules.onecycle(1.0, total_steps=0),
                             "onecycle: total_steps must be an integer >= 2, got 0"),
    "onecycle pct_start": (lambda: schedules.onecycle(1.0, 10, pct_start=1.0),
                           "onecycle: pct_start must be in (0.0, 1.0), got 1.0"),
    "onecycle anneal_strategy": (lambda: schedules.onecycle(1.0, 10, anneal_strategy="exp"),
                                 "onecycle: anneal_strategy must be 'cos' or 'linear', got 'exp'"),
    "polynomial power": (lambda: schedules.polynomial(1.0, 0.0, power=0.0, decay_steps=10),
                         "polynomial: power must be in (0.0, inf], got 0.0"),
    "step_decay neither": (lambda: schedules.step_decay(1.0),
                           "step_decay: give exactly one of step_size and milestones"),
    "step_decay milestones": (lambda: schedules.step_decay(1.0, milestones=[5, 3]),
                              "step_decay: milestones must be increasing integers >= 1, got [5, 3]"),
    "warmup_cosine order": (
        lambda: schedules.warmup_cosine(0.0, 1.0, warmup_steps=20, total_steps=10),
        "warmup_cosine: total_steps must be > warmup_steps, got total_steps=10 and "
        "warmup_steps=20"),
    "wsd phases": (lambda: schedules.wsd(1.0, 100, warmup_steps=90, decay_steps=20),
                   "wsd: warmup_steps + decay_steps must be <= total_steps, got 90 + 20 > 100"),
    "wsd decay_fraction": (lambda: schedules.wsd(1.0, 100, decay_fraction=1.5),
                           "wsd: decay_fraction must be in (0.0, 1.0], got 1.5"),
    "wsd decay_shape": (lambda: schedules.wsd(1.0, 100, decay_shape="cubic"),
                        "wsd: decay_shape must be one of ('linear', 'cosine', '1-sqrt'), got "
                        "'cubic'"),
    # Primitives and wrappers.
    "skip_nonfinite max_consecutive_skips": (
        lambda: optimkit.skip_nonfinite(optimkit.adamw(), max_consecutive_skips=0),
        "skip_nonfinite: max_consecutive_skips must be an integer >= 1, got 0"),
    "compensated_updates method": (
        lambda: optimkit.compensated_updates(optimkit.adamw(), "round"),
        "compensated_updates: method must be one of ('kahan', 'stochastic'), got 'round'"),
    "scale_by_adam b1": (lambda: optimkit.scale_by_adam(b1=1.0),
                         "scale_by_adam: b1 must be in [0.0, 1.0), got 1.0"),
    "scale_by_sign_momentum b2": (lambda: optimkit.scale_by_sign_momentum(b2=-0.5),
                                  "scale_by_sign_momentum: b2 must be in [0.0, 1.0), got -0.5"),
    "scale_by_factored_rms decay_rate": (
        lambda: optimkit.scale_by_factored_rms(decay_rate=0.0),
        "scale_by_factored_rms: decay_rate must be in (0.0, inf], got 0.0"),
    "scale_by_sophia gamma": (lambda: optimkit.scale_by_sophia(gamma=0.0),
                              "scale_by_sophia: gamma must be in (0.0, inf], got 0.0"),
    "scale_by_lars trust_coefficient": (
        lambda: optimkit.scale_by_lars(trust_coefficient=0.0),
        "scale_by_lars: trust_coefficient must be in (0.0, inf], got 0.0"),
    "schedule_free b1": (lambda: optimkit.schedule_free(b1=1.0),
                         "schedule_free: b1 must be in (0.0, 1.0), got 1.0"),
    "lookahead sync_period": (lambda: optimkit.lookahead(optax.sgd(0.1), sync_period=0),
                              "lookahead: sync_period must be an integer >= 1, got 0"),
}


@pytest.mark.parametrize("case", sorted(SPECIFIC))
def test_specific_bad_argument(case):
  thunk, message = SPECIFIC[case]
  with pytest.raises(ValueError) as raised:
    thunk()
  assert str(raised.value) == message


# ----------------------------------------------------------------------------------------------
# Trees: gradients, params and states that do not fit.

PARAMS = {"encoder": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, "head": jnp.ones(3)}
TREE_CASES = {
    "gradient missing a leaf": (
        {"encoder": {"w": jnp.ones((2, 2))}, "head": jnp.ones(3)},
        "adamw: the gradient tree does not match the parameter tree at ['encoder']['b']: the "
        "parameter has a leaf the gradient does not have."),
    "gradient with an extra leaf": (
        {"encoder": {"w": jnp.ones((2, 2)), "b": jnp.ones(2), "c": jnp.ones(1)},
         "head": jnp.ones(3)},
        "adamw: the gradient tree does not match the parameter tree at ['encoder']['c']: the "
        "gradient has a leaf the parameter does not have."),
    "gradient of the wrong shape": (
        {"encoder": {"w": jnp.ones((2, 3)), "b": jnp.ones(2)}, "head": jnp.ones(3)},
        "adamw: the gradient tree does not match the parameter tree at ['encoder']['w']: the "
        "gradient has shape (2, 3) but the parameter has shape (2, 2)."),
}


@pytest.mark.parametrize("case", sorted(TREE_CASES))
@pytest.mark.parametrize("jit", [False, True])
def test_gradient_tree_mismatch_names_the_first_path(case, jit):
  grads, message = TREE_CASES[case]
  tx = optimkit.adamw(1e-3)
  update = jax.jit(tx.update) if jit else tx.update
  with pytest.raises(optimkit.TreeMismatchError) as raised:
    update(grads, tx.init(PARAMS), PARAMS)
  assert str(raised.value) == message


def test_container_type_mismatch_is_named():
  tx = optimkit.sgd(1e-2)
  params = [jnp.ones(2), jnp.ones(3)]
  with pytest.raises(optimkit.TreeMismatchError, match=re.escape(
      "sgd: the gradient tree does not match the parameter tree in the container types: the "
      "gradient tree is PyTreeDef((*, *)), the parameter tree is PyTreeDef([*, *]).")):
    tx.update(tuple(params), tx.init(params), params)


@pytest.mark.parametrize("name", ["adamw", "lion", "adafactor", "sophia", "adamw_8bit"])
def test_integer_params_are_rejected_at_init_naming_the_leaf(name):
  """Decision: integer and boolean leaves are a clear error at init (not silently skipped): an
  optimizer has nothing to do with them, and skipping would hide a model whose float weights
  were accidentally cast, and their float0 gradients would fail deep inside the step."""
  params = {"w": jnp.ones((4, 4)), "step": jnp.zeros((), jnp.int32)}
  with pytest.raises(TypeError) as raised:
    getattr(optimkit, name)(1e-3).init(params)
  owner = optimkit.registry.get(name).shortcut_of or name  # adamw_8bit is adamw's message
  assert str(raised.value) == (
      f"{owner}: the parameter at ['step'] has dtype int32; optimizers update floating-point "
      "parameters only. Keep non-float leaves out of the tree given to the optimizer (for Flax "
      "NNX: nnx.Optimizer(..., wrt=nnx.Param)).")


STATE_CASES = {
    # (optimizer stepped, optimizer whose state is passed, exact problem)
    "lion state into adamw": (
        "adamw", "lion",
        "at .hyperparams['eps']: the expected state has a leaf the given state does not have"),
    "adam state into radam": (
        "radam", "adam",
        "at .hyperparams['threshold']: the expected state has a leaf the given state does not have"),
    "adamw state into adamw_8bit": (
        "adamw_8bit", "adamw",
        "at .inner_state[0].mu['w']: the given state has a leaf the expected state does not "
        "have"),
    "sgd state into sophia": (
        "sophia", "sgd",
        "at .hyperparams['b1']: the expected state has a leaf the given state does not have"),
}


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_state_from_another_optimizer_is_named(case):
  stepped, other, problem = STATE_CASES[case]
  params = {"w": jnp.ones((64, 128))}
  tx = getattr(optimkit, stepped)(1e-3)
  owner = optimkit.registry.get(stepped).shortcut_of or stepped
  with pytest.raises(optimkit.TreeMismatchError) as raised:
    jax.jit(tx.update)(params, getattr(optimkit, other)(1e-3).init(params), params)
  assert str(raised.value) == (
      f"{owner}: the state passed to update() is not this optimizer's state for these "
      f"parameters {problem}. Pass the state that {owner}'s init() returned (a state from "
      "another optimizer, or one made for other parameters, does not fit).")


def test_state_made_for_other_params_is_named():
  tx = optimkit.adamw(1e-3)
  state = tx.init({"w": jnp.ones((2, 2)), "b": jnp.ones(2)})
  params = {"w": jnp.ones((2, 5)), "b": jnp.ones(2)}
  with pytest.raises(optimkit.TreeMismatchError, match=re.escape(
      "at .inner_state[0].mu['w']: the given state has shape (2, 2) but the expected state has "
      "shape (2, 5)")):
    tx.update(params, state, params)


# ----------------------------------------------------------------------------------------------
# Sharding specs that do not fit the mesh (an abstract 2 x 4 mesh: no devices needed).

MESH = AbstractMesh((2, 4), ("data", "model"))
HOST = {"w": np.zeros((16, 64), np.float32), "v": np.zeros((32,), np.float32)}
SPEC_CASES = {
    "missing mesh axis": (
        {"w": P("data", "model"), "v": P("pipeline")}, None,
        "spec P('pipeline',) for parameter ['v'] names mesh axis 'pipeline', which the mesh "
        "does not have (axes: {'data': 2, 'model': 4})"),
    "not divisible": (
        {"w": P("model", None), "v": P()}, {"w": np.zeros((6, 4), np.float32),
                                            "v": HOST["v"]},
        "spec P('model', None) for parameter ['w']: dimension 0 of size 6 is not divisible by "
        "mesh axis 'model' of size 4"),
    "more entries than the rank": (
        {"w": P(None, None, "model"), "v": P()}, None,
        "spec P(None, None, 'model') for parameter ['w'] has more entries than its rank 2"),
    "a parameter without a spec": (
        {"w": P()}, None,
        "specs does not match the params tree: parameter ['v'] has no PartitionSpec; give one "
        "PartitionSpec per parameter leaf, in a tree shaped like the params"),
    "a spec without a parameter": (
        {"w": P(), "v": P(), "u": P()}, None,
        "specs does not match the params tree: specs has ['u'], which is not a parameter; give "
        "one PartitionSpec per parameter leaf, in a tree shaped like the params"),
    "not a PartitionSpec": (
        {"w": P(), "v": "model"}, None, "specs['v'] must be a PartitionSpec, got 'model'"),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_sharding_spec_that_does_not_fit(case):
  specs, params, message = SPEC_CASES[case]
  with pytest.raises(ValueError) as raised:
    sharding.state_specs(optimkit.adamw(1e-2), params or HOST, specs=specs, mesh=MESH)
  assert str(raised.value) == message


def test_zero1_axis_not_in_the_mesh():
  with pytest.raises(ValueError) as raised:
    sharding.state_specs(optimkit.adamw(1e-2), HOST, specs={"w": P(), "v": P()}, mesh=MESH,
                         zero1_axis="dp")
  assert str(raised.value) == ("state_specs: zero1_axis 'dp' is not an axis of the mesh "
                               "{'data': 2, 'model': 4}")


# ----------------------------------------------------------------------------------------------
# Checkpoints from another optimizer or other parameters.

CHECKPOINT_CASES = {
    "another optimizer": (
        "adamw", {"w": (3, 4), "b": (4,)},
        "at hyperparams.eps: this optimizer's state has a leaf the checkpoint does not have"),
    "other parameter shapes": (
        "lion", {"w": (3, 5), "b": (4,)},
        "at inner_state.0.mu.w: the checkpoint holds shape (3, 4) but this optimizer's state "
        "for these parameters has shape (3, 5)"),
    "fewer parameters": (
        "lion", {"w": (3, 4)},
        "at inner_state.0.mu.b: the checkpoint has a leaf this optimizer's state does not have"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_checkpoint_that_does_not_fit(case, tmp_path):
  saved_params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
  path = checkpoint.save(str(tmp_path / "lion"), optimkit.lion(1e-3).init(saved_params))
  name, shapes, problem = CHECKPOINT_CASES[case]
  params = {key: jnp.ones(shape) for key, shape in shapes.items()}
  with pytest.raises(ValueError) as raised:
    checkpoint.restore(path, getattr(optimkit, name)(1e-3), params)
  assert str(raised.value) == (
      f"checkpoint.restore: the checkpoint at {path} does not hold this optimizer's state for "
      f"these parameters {problem}. Restore with the optimizer and parameter shapes it was "
      "saved with.")


def test_checkpoint_restores_on_one_device_without_a_mesh(tmp_path):
  params = {"w": jnp.arange(12.0).reshape(3, 4)}
  tx = optimkit.adamw_8bit(1e-3)
  state = tx.init(params)
  _, state = tx.update(params, state, params)
  restored = checkpoint.restore(checkpoint.save(str(tmp_path / "s"), state), tx, params)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
