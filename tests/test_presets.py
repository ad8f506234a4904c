"""Every preset builds and takes real steps on a small transformer-like tree; the documented
numbers (GPT-3 peak rates, Lion's kept lr * wd, warmup) are what the optimizer does."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optimkit
from optimkit import presets

PARAMS = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)},
          "norm": {"scale": jnp.ones(3)}}


def _loss(params):
  return sum(jnp.sum(jnp.sin(x) ** 2) for x in jax.tree.leaves(params))


def _steps(tx, n=3, **extra):
  params, state = PARAMS, tx.init(PARAMS)
  for _ in range(n):
    updates, state = tx.update(jax.grad(_loss)(params), state, params, **extra)
    params = optax.apply_updates(params, updates)
  return params, state


PRESETS = {
    "llm_125M": lambda: presets.llm_pretraining_adamw("125M", total_steps=100),
    "llm_175B": lambda: presets.llm_pretraining_adamw("175B", total_steps=100, warmup_steps=2),
    "finetune": lambda: presets.finetuning_adamw(total_steps=50),
    "lion": lambda: presets.lion_from_adamw(6e-4, 0.1),
    "adam_mini_4bit": lambda: presets.adam_mini_4bit_from_adamw(6e-4, 0.1),
    "sophia": lambda: presets.sophia_from_adamw(6e-4, total_steps=100),
    "schedule_free": lambda: presets.schedule_free_from_adamw(6e-4, warmup_steps=5),
    "shampoo": lambda: presets.shampoo_from_adamw(1e-3, block_size=2,
                                                  preconditioning_compute_steps=1),
    "soap": lambda: presets.soap_from_adamw(6e-4, total_steps=100, warmup_steps=1,
                                            precondition_frequency=2),
    "kron": lambda: presets.kron_from_adamw(6e-4, 0.1, seed=0),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_and_steps(name):
  extra = {}
  if name == "sophia":
    extra = {"key": jax.random.key(0),
             "logits_fn": lambda p: jnp.stack([p["dense"]["kernel"].sum(0), p["dense"]["bias"]])}
  params, _ = _steps(PRESETS[name](), **extra)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))
  assert not np.allclose(params["dense"]["kernel"], PARAMS["dense"]["kernel"])


def test_llm_preset_follows_gpt3_peak_and_warmup():
  tx = presets.llm_pretraining_adamw("350M", total_steps=1000, warmup_steps=10)
  state = tx.init(PARAMS)
  adamw_state = state[1]
  assert float(adamw_state.hyperparams["learning_rate"]) == 0.0  # step 0 of the warmup
  assert float(adamw_state.hyperparams["b2"]) == pytest.approx(0.95)
  assert float(adamw_state.hyperparams["weight_decay"]) == pytest.approx(0.1)
  _, state = _steps(tx, n=11)
  assert float(state[1].hyperparams["learning_rate"]) == pytest.approx(3e-4, rel=1e-3)


def test_lion_from_adamw_keeps_lr_times_wd():
  tx = presets.lion_from_adamw(1e-3, 0.1, factor=5.0, clip_norm=None)
  hyper = tx.init(PARAMS).hyperparams
  assert float(hyper["learning_rate"]) == pytest.approx(2e-4)
  assert float(hyper["weight_decay"]) == pytest.approx(0.5)
  assert float(hyper["learning_rate"] * hyper["weight_decay"]) == pytest.approx(1e-4)


def test_adam_mini_4bit_from_adamw_keeps_adamws_settings_at_4bit():
  """The frontier's winner: AdamW's rate, betas and decay unchanged, the first moment 4-bit."""
  tx = presets.adam_mini_4bit_from_adamw(1e-3, 0.1, b2=0.95, clip_norm=None)
  state = tx.init(PARAMS)
  hyper = state.hyperparams
  assert float(hyper["learning_rate"]) == pytest.approx(1e-3)
  assert float(hyper["weight_decay"]) == pytest.approx(0.1)
  assert float(hyper["b2"]) == pytest.approx(0.95)
  big = tx.init({"kernel": jnp.zeros((64, 128))})  # leaves this size are quantized
  assert any(leaf.dtype == jnp.uint8 for leaf in jax.tree.leaves(big))  # the 4-bit codes


def test_presets_reject_bad_arguments():
  with pytest.raises(ValueError, match="model_size must be one of"):
    presets.llm_pretraining_adamw("1T", total_steps=10)
  with pytest.raises(ValueError, match="factor must be"):
    presets.lion_from_adamw(1e-3, 0.1, factor=0.5)
  with pytest.raises(ValueError, match="weight_decay"):
    presets.adam_mini_4bit_from_adamw(1e-3, -0.1)
