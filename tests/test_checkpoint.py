"""Whose hyperparameters a restored state carries: by default the optimizer's as constructed,
with `hyperparams="checkpoint"` the checkpoint's; a warning names every one that differs, with
both values, wherever the hyperparameter dict sits in the state tree."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optimkit
from optimkit import checkpoint


def _params():
  return {"w": jnp.asarray(np.random.default_rng(0).normal(size=(3, 2))), "b": jnp.zeros(2)}


def _grads(params, i):
  return jax.tree.map(lambda p: jnp.sin(p + 0.3 * i) + 0.1, params)


def _trained_state(tx, params, steps=3):
  state = tx.init(params)
  for i in range(steps):
    _, state = tx.update(_grads(params, i), state, params)
  return state


def _restore(restore, *args, **kwargs):
  """Calls `restore`, returning its result and the messages of the warnings it gave."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = restore(*args, **kwargs)
  return result, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def _named(message):
  """{(name, path): (optimizer's value, checkpoint's value)} as the warning lists them."""
  found = re.findall(r"(\w+): optimizer ([^,]+), checkpoint ([^ ]+) \(at ([\w.]+)\)", message)
  return {(name, at): (float(mine), float(saved)) for name, mine, saved, at in found}


def _assert_trees_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)


def test_the_optimizer_as_constructed_wins_by_default_with_a_warning(tmp_path):
  params = _params()
  saved_state = _trained_state(optimkit.adamw(1e-2, weight_decay=0.1), params)
  path = checkpoint.save(str(tmp_path / "ckpt"), saved_state)
  tx = optimkit.adamw(1e-4, weight_decay=0.1)

  restored, messages = _restore(checkpoint.restore, path, tx, params)

  assert len(messages) == 1
  assert messages[0].startswith(f"checkpoint.restore: the checkpoint at {path} holds "
                                f"hyperparameters that differ from this optimizer's: ")
  assert messages[0].endswith('Using the optimizer\'s as constructed (pass '
                              'hyperparams="checkpoint" to keep the checkpoint\'s).')
  # Only the one that differs is named (weight_decay, b1, ... agree).
  assert _named(messages[0]) == {("learning_rate", "hyperparams.learning_rate"): (1e-4, 1e-2)}
  assert float(restored.hyperparams["learning_rate"]) == pytest.approx(1e-4)
  # Everything but the hyperparameter is the checkpoint's: the same state with lr = 1e-4.
  expected = optimkit.set_hyperparams(saved_state, learning_rate=1e-4)
  _assert_trees_equal(restored, expected)
  # ... and the next step is that state's step.
  grads = _grads(params, 7)
  _assert_trees_equal(tx.update(grads, restored, params), tx.update(grads, expected, params))


def test_hyperparams_checkpoint_keeps_the_checkpoints_with_a_warning(tmp_path):
  params = _params()
  saved_state = _trained_state(optimkit.adamw(1e-2, weight_decay=0.1), params)
  path = checkpoint.save(str(tmp_path / "ckpt"), saved_state)

  restored, messages = _restore(checkpoint.restore, path, optimkit.adamw(1e-4, weight_decay=0.3),
                                params, hyperparams="checkpoint")

  assert len(messages) == 1
  assert _named(messages[0]) == {("learning_rate", "hyperparams.learning_rate"): (1e-4, 1e-2),
                                 ("weight_decay", "hyperparams.weight_decay"): (0.3, 0.1)}
  assert 'Using the checkpoint\'s (hyperparams="checkpoint"' in messages[0]
  _assert_trees_equal(restored, saved_state)


def test_no_warning_when_the_hyperparameters_agree(tmp_path):
  params = _params()
  tx = optimkit.skip_nonfinite(optimkit.lion(3e-4, weight_decay=0.01))
  saved_state = _trained_state(tx, params)
  path = checkpoint.save(str(tmp_path / "ckpt"), saved_state)
  for choice in ("optimizer", "checkpoint"):
    restored, messages = _restore(checkpoint.restore, path, tx, params, hyperparams=choice)
    assert messages == []
    _assert_trees_equal(restored, saved_state)


def test_hyperparameters_found_wherever_they_sit_in_the_state(tmp_path):
  """skip_nonfinite around a chain holding a multi_transform of two optimkit optimizers, an
  optax.masked optimkit optimizer and optax's own inject_hyperparams around optimkit's (one
  hyperparameter dict inside another): each
  differing value is named at its path and replaced; the others are the checkpoint's."""
  params = _params()

  def build(lr_w, lr_b, wd, sgd_lr, rms_lr):
    return optimkit.skip_nonfinite(optax.chain(
        optax.multi_transform({"w": optimkit.adamw(lr_w, weight_decay=wd),
                               "b": optimkit.lion(lr_b)},
                              {"w": "w", "b": "b"}),
        optax.masked(optimkit.sgd(sgd_lr), {"w": True, "b": False}),
        optax.inject_hyperparams(optimkit.rmsprop)(learning_rate=rms_lr)))

  saved_state = _trained_state(build(1e-2, 1e-3, 0.1, 0.2, 0.5), params)
  path = checkpoint.save(str(tmp_path / "ckpt"), saved_state)
  tx = build(1e-4, 1e-3, 0.05, 0.3, 0.25)

  restored, messages = _restore(checkpoint.restore, path, tx, params)

  assert len(messages) == 1
  adamw_at = "inner_state.0.inner_states.w.inner_state.hyperparams."
  assert _named(messages[0]) == {
      ("learning_rate", adamw_at + "learning_rate"): (1e-4, 1e-2),
      ("weight_decay", adamw_at + "weight_decay"): (0.05, 0.1),
      ("learning_rate", "inner_state.1.inner_state.hyperparams.learning_rate"): (0.3, 0.2),
      # optax's wrapper holds it; the optimkit optimizer inside (a hyperparameter dict inside
      # another) takes every value from the wrapper and stores none of its own.
      ("learning_rate", "inner_state.2.hyperparams.learning_rate"): (0.25, 0.5)}
  # The constructed optimizer's state with the checkpoint's moments and counts.
  expected_hyperparams = jax.tree.map(np.asarray, jax.tree.leaves(tx.init(params)))
  for got, want, saved in zip(jax.tree.leaves(restored), expected_hyperparams,
                              jax.tree.leaves(saved_state)):
    assert np.array_equal(got, saved) or np.array_equal(got, want)
  w_state = restored.inner_state[0].inner_states["w"].inner_state
  assert float(w_state.hyperparams["learning_rate"]) == pytest.approx(1e-4)
  assert float(w_state.hyperparams["weight_decay"]) == pytest.approx(0.05)
  assert float(restored.inner_state[1].inner_state.hyperparams["learning_rate"]) == (
      pytest.approx(0.3))
  saved_w = saved_state.inner_state[0].inner_states["w"].inner_state
  _assert_trees_equal(w_state.inner_state, saved_w.inner_state)  # moments: the checkpoint's


def test_a_scheduled_hyperparameter_is_not_compared_and_resumes_its_schedule(tmp_path):
  """The schedule's value in the state is the one at the checkpoint's step (not at step 0 as a
  fresh init has it): not a difference. The schedule state is restored, so the next step uses
  the schedule's value at the restored count."""
  params = _params()
  schedule = optax.linear_schedule(1.0, 0.0, 10)
  tx = optax.inject_hyperparams(optax.adamw)(learning_rate=schedule, weight_decay=0.1)
  saved_state = _trained_state(tx, params, steps=4)
  path = checkpoint.save(str(tmp_path / "ckpt"), saved_state)
  other = optax.inject_hyperparams(optax.adamw)(learning_rate=schedule, weight_decay=0.2)

  restored, messages = _restore(checkpoint.restore, path, other, params)

  assert len(messages) == 1
  assert _named(messages[0]) == {("weight_decay", "hyperparams.weight_decay"): (0.2, 0.1)}
  np.testing.assert_array_equal(restored.hyperparams["learning_rate"],
                                saved_state.hyperparams["learning_rate"])
  assert int(restored.hyperparams_states["learning_rate"].count) == 4
  _, next_state = other.update(_grads(params, 5), restored, params)
  assert float(next_state.hyperparams["learning_rate"]) == pytest.approx(float(schedule(4)))


@pytest.mark.parametrize("choice", ["optimizer", "checkpoint"])
def test_restore_latest_decides_the_same_way(tmp_path, choice):
  params = _params()
  saved_state = _trained_state(optimkit.adamw(1e-2), params)
  checkpoint.save_step(str(tmp_path), 3, params, saved_state)

  (step, restored_params, restored), messages = _restore(
      checkpoint.restore_latest, str(tmp_path), optimkit.adamw(1e-4), params, hyperparams=choice)

  assert step == 3
  _assert_trees_equal(restored_params, params)
  assert len(messages) == 1 and messages[0].startswith("checkpoint.restore_latest: ")
  assert _named(messages[0]) == {("learning_rate", "hyperparams.learning_rate"): (1e-4, 1e-2)}
  expected = 1e-4 if choice == "optimizer" else 1e-2
  assert float(restored.hyperparams["learning_rate"]) == pytest.approx(expected)


def test_restored_state_runs_a_donated_step(tmp_path):
  """The replaced hyperparameters are fresh buffers: no leaf aliases another."""
  params = _params()
  path = checkpoint.save(str(tmp_path / "ckpt"), _trained_state(optimkit.adamw(1e-2), params))
  tx = optimkit.adamw(1e-4)
  restored, _ = _restore(checkpoint.restore, path, tx, params)
  pointers = [leaf.unsafe_buffer_pointer() for leaf in jax.tree.leaves(restored)]
  assert len(set(pointers)) == len(pointers)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(_grads(params, 0), state, params)
    return optax.apply_updates(params, updates), state

  donated = jax.jit(step, donate_argnums=(0, 1))
  new_params, new_state = donated(jax.tree.map(jnp.copy, params), restored)
  assert int(new_state.count) == 4


@pytest.mark.parametrize("restore", [checkpoint.restore, checkpoint.restore_latest])
def test_hyperparams_choice_is_validated(tmp_path, restore):
  with pytest.raises(ValueError, match=re.escape(
      'hyperparams must be "optimizer" (the optimizer\'s as constructed win) or "checkpoint" '
      "(the checkpoint's win), got 'ckpt'")):
    restore(str(tmp_path), optimkit.adamw(1e-3), _params(), hyperparams="ckpt")
