"""Every optimizer with every storage format trains the quadratic and Rosenbrock problems;
stochastic rounding is unbiased; 8-bit and 4-bit AdamW track float32 AdamW on a small model;
the state really is ~2 and ~1 bytes per parameter."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optimkit
from optimkit.state import Blockwise8BitStorage, FourBitStorage, resolve
from optimkit.state.stochastic_rounding import round_to_bfloat16
from tests.test_optimizers import OPTIMIZERS, ROSENBROCK, _quadratic, _rosenbrock, _train

# The test problems are tiny; quantize them anyway (the real threshold is 4096 elements).
STORAGES = {
    "bfloat16": "bfloat16",
    "8bit": Blockwise8BitStorage(min_size=0),
    "4bit": FourBitStorage(min_size=0),
}


@pytest.mark.parametrize("storage", sorted(STORAGES))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_and_storage_trains_a_quadratic(name, storage):
  params = {"x": jnp.zeros(3), "m": jnp.ones((3, 2))}
  start = float(_quadratic(params))
  tx = OPTIMIZERS[name](state_storage=STORAGES[storage])
  params, state = _train(tx, _quadratic, params, 400)
  if name.startswith("schedule_free"):
    params = optimkit.schedule_free_eval_params(state, params)
  assert float(_quadratic(params)) < 3e-2 * start


@pytest.mark.parametrize("storage", sorted(STORAGES))
@pytest.mark.parametrize("name", sorted(ROSENBROCK))
def test_every_optimizer_and_storage_makes_progress_on_rosenbrock(name, storage):
  params = {"xy": jnp.asarray([-1.0, 1.0])}
  tx = ROSENBROCK[name](state_storage=STORAGES[storage])
  params, state = _train(tx, _rosenbrock, params, 3000)
  if name.startswith("schedule_free"):
    params = optimkit.schedule_free_eval_params(state, params)
  assert float(_rosenbrock(params)) < 0.1 * 4.0


def test_quantized_state_has_quantized_leaves_and_keeps_small_ones_float():
  params = {"big": jnp.zeros((64, 128), jnp.float32), "small": jnp.zeros((10,), jnp.float32)}
  state = optimkit.adamw(1e-3, state_storage="8bit").init(params)
  adam = state.inner_state[0]
  # (64, 128) in 8 x 16 tiles (a row of 128 keeps 2^3 for an 8-way split, and gives 16 to a
  # block): codes (row tiles, rows in a tile, column tiles, columns in a tile), a scale per tile.
  assert adam.mu["big"].codes.dtype == jnp.uint8 and adam.mu["big"].codes.shape == (8, 8, 8, 16)
  assert adam.mu["big"].absmax.shape == (8, 8)
  assert adam.mu["small"].dtype == jnp.float32
  state4 = optimkit.adamw(1e-3, state_storage="4bit").init(params)
  nu = state4.inner_state[0].nu["big"]
  assert type(nu).__name__ == "Rank1Quantized" and nu.codes.shape == (64, 64)


def test_stochastic_rounding_is_unbiased_and_between_neighbours():
  x = jnp.full((200_000,), 1.0 + 2.0 ** -10, jnp.float32)  # a quarter of the way to the next bf16
  entropy = jnp.arange(x.size, dtype=jnp.float32)
  rounded = round_to_bfloat16(x, entropy).astype(jnp.float32)
  assert set(np.unique(np.asarray(rounded))) <= {1.0, 1.0 + 2.0 ** -7}
  np.testing.assert_allclose(float(jnp.mean(rounded)), 1.0 + 2.0 ** -10, rtol=2e-5)
  assert float(round_to_bfloat16(jnp.asarray([jnp.inf]), jnp.zeros(1))[0]) == np.inf


def test_unknown_storage_is_rejected():
  with pytest.raises(ValueError, match="state_storage must be one of"):
    resolve("3bit")
  with pytest.raises(ValueError, match="state_storage must be one of"):
    optimkit.adamw(1e-3, state_storage="fp8")


def _transformer_tree(d=256, layers=2, vocab=1000):
  tree = {"embedding": jnp.zeros((vocab, d))}
  for i in range(layers):
    tree[f"layer{i}"] = {"qkv": jnp.zeros((d, 3 * d)), "out": jnp.zeros((d, d)),
                         "mlp_in": jnp.zeros((d, 4 * d)), "mlp_out": jnp.zeros((4 * d, d)),
                         "norm": jnp.zeros((d,)), "bias": jnp.zeros((4 * d,))}
  return tree


@pytest.mark.parametrize("storage,limit", [("8bit", 2.1), ("4bit", 1.1), ("bfloat16", 4.01)])
def test_adamw_state_bytes_per_param(storage, limit):
  tree = _transformer_tree()
  per_param = optimkit.memory.state_bytes_per_param(optimkit.adamw(1e-3, state_storage=storage),
                                                    tree)
  print(f"MEASURE adamw {storage}: {per_param:.3f} bytes/param")
  assert per_param <= limit


def test_8bit_and_4bit_adamw_track_float32_on_a_small_model():
  """1,000 steps of a 3-layer MLP regression (~12k params, quantized leaves) per storage,
  compared on held-out data (the noise floor is 0.0025): quantized state costs at most the
  tolerance. One-sided: here 4-bit moments land below float32 by an amount that depends on how
  w2's (128, 32) first moment is tiled (measured: 4 x 32 tiles -1.1%, 2 x 32 -12%, 16 x 4 (the
  layout since issue 22) -14.6%), so a two-sided bound would test the tiling's luck on this
  task, not the storage."""
  rng = np.random.default_rng(0)
  teacher = rng.normal(size=(64, 1)) / 8.0
  def data(n):
    x = rng.normal(size=(n, 64))
    return (jnp.asarray(x, jnp.float32),
            jnp.asarray(np.tanh(x @ teacher) + 0.05 * rng.normal(size=(n, 1)), jnp.float32))
  (x, y), (x_val, y_val) = data(2048), data(1024)
  params = {"w1": jnp.asarray(rng.normal(size=(64, 128)) / 8.0, jnp.float32),
            "b1": jnp.zeros(128, jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(128, 32)) / 11.0, jnp.float32),
            "w3": jnp.asarray(rng.normal(size=(32, 1)) / 6.0, jnp.float32)}
  predict = lambda p, x: jnp.tanh(jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]) @ p["w3"]
  loss_fn = lambda p: jnp.mean((predict(p, x) - y) ** 2)
  val_loss = lambda p: float(jnp.mean((predict(p, x_val) - y_val) ** 2))

  def final_loss(storage):
    schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 50, 1000, 3e-4)
    trained, _ = _train(optimkit.adamw(schedule, weight_decay=0.0, state_storage=storage),
                        loss_fn, jax.tree.map(jnp.array, params), 1000)
    return val_loss(trained)

  reference, start = final_loss("float32"), val_loss(params)
  assert reference < 0.2 * start
  for storage, tolerance in (("8bit", 0.02), ("4bit", 0.05), ("bfloat16", 0.02)):
    loss = final_loss(storage)
    print(f"MEASURE small-model val loss after 1000 steps: float32 {reference:.5f}, "
          f"{storage} {loss:.5f} ({100 * (loss / reference - 1):+.2f}%; start {start:.4f})")
    assert loss - reference <= tolerance * reference
