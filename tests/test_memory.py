"""optimkit.memory and `optimkit memory`: measured without allocating, broken down by field."""

import jax
import jax.numpy as jnp
import pytest

import optimkit
from optimkit import cli, memory


def test_breakdown_names_fields_and_sums_to_total():
  params = {"w": jnp.zeros((64, 128), jnp.float32), "b": jnp.zeros(128, jnp.float32)}
  tx = optimkit.adamw(1e-3)
  fields = memory.state_breakdown(tx, params)
  assert fields["inner_state.mu"] == fields["inner_state.nu"] == 4 * (64 * 128 + 128)
  assert sum(fields.values()) == memory.state_bytes(tx, params)


def test_transformer_tree_is_abstract_and_near_the_target():
  tree = memory.transformer_shaped_params(7e9)
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(tree))
  assert abs(memory.param_count(tree) / 7e9 - 1) < 0.02
  with pytest.raises(ValueError, match="total_params must be"):
    memory.transformer_shaped_params(10)


def test_cli_memory_table_for_7b(capsys):
  assert cli.main(["memory", "--params", "7e9",
                   "--optimizers", "adamw,adamw:8bit,adamw:4bit,adafactor"]) == 0
  out = capsys.readouterr().out
  rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in out.splitlines()
          if line.startswith("| ") and "optimizer" not in line}
  per_param = lambda key: float(rows[key].split("|")[3])
  assert per_param(("adamw", "float32")) == 8.0
  assert per_param(("adamw", "8bit")) <= 2.1 and per_param(("adamw", "4bit")) <= 1.1
  assert per_param(("adafactor", "float32")) < 0.05
  assert cli.main(["memory", "--optimizers", "nope"]) == 2


@pytest.mark.parametrize("name, billions", [("llama-2-7b", 6.74), ("llama-2-13b", 13.02),
                                            ("mistral-7b", 7.24), ("gpt2-xl", 1.56)])
def test_model_shapes_have_the_published_parameter_counts(name, billions):
  tree = memory.model_shaped_params(name)
  assert abs(memory.param_count(tree) / 1e9 - billions) < 0.01
  specs = memory.fsdp_tp_specs(tree)
  # Every spec divides its dimension on the 2 x 4 mesh (state_specs checks it and would raise).
  memory.state_bytes_per_device(optimkit.sgd(1e-2, momentum=0.9), tree, specs,
                                {"data": 2, "model": 4})
  with pytest.raises(ValueError, match="unknown model"):
    memory.model_shaped_params("llama-1")


def test_float32_state_takes_an_even_share_per_device():
  """AdamW's float32 moments follow their parameters' shards: one device of 2 x 4 holds 1/8 of
  the state with ZeRO-1 over data, 1/4 without (params replicated over data, FSDP off), up
  to the replicated step counts."""
  tree = memory.model_shaped_params("llama-2-7b")
  tx = optimkit.adamw(1e-3)
  total = memory.state_bytes(tx, tree)
  mesh = {"data": 2, "model": 4}
  fsdp_tp = memory.fsdp_tp_specs(tree)
  assert memory.state_bytes_per_device(tx, tree, fsdp_tp, mesh, "data") / total == \
      pytest.approx(1 / 8, rel=1e-3)
  tp_only = memory.fsdp_tp_specs(tree, None, "model")
  assert memory.state_bytes_per_device(tx, tree, tp_only, mesh) / total == \
      pytest.approx(1 / 4, rel=1e-3)
  assert memory.state_bytes_per_device(tx, tree, tp_only, mesh, "data") / total == \
      pytest.approx(1 / 8, rel=1e-3)


def test_cli_memory_per_device_on_a_mesh(capsys):
  assert cli.main(["memory", "--params", "1e8", "--mesh", "2x4",
                   "--optimizers", "adamw,lion"]) == 0
  out = capsys.readouterr().out
  assert "2 (data) x 4 (model) mesh" in out
  rows = [line for line in out.splitlines() if line.startswith("| adamw") or
          line.startswith("| lion")]
  assert len(rows) == 2
  for row in rows:
    total_gb, device_gb, even = (float(row.split("|")[i]) for i in (4, 5, 6))
    assert even == pytest.approx(1.0, abs=0.01) and device_gb == pytest.approx(total_gb / 8,
                                                                               rel=0.02)
  assert cli.main(["memory", "--mesh", "2by4"]) == 2
  assert "--mesh must be DATAxMODEL" in capsys.readouterr().err


def test_mesh_specs_name_only_the_axes_that_split():
  """A spec naming an axis of size 1 shards nothing but keeps ZeRO-1 off that dim: on an 8 x 1
  mesh (FSDP alone) Adafactor's column statistics would stay whole on every device."""
  from jax.sharding import PartitionSpec as P

  tree = memory.model_shaped_params("llama-2-7b")
  specs = memory.fsdp_tp_specs_for(tree, {"data": 8, "model": 1})
  assert specs["layer_000"]["mlp"]["up"]["kernel"] == P("data", None)
  tx = optimkit.adafactor(1e-3)
  per_device = memory.state_bytes_per_device(tx, tree, specs, {"data": 8, "model": 1}, "data")
  assert per_device / (memory.state_bytes(tx, tree) / 8) < 1.01


@pytest.mark.parametrize("name", ["llama-2-7b", "llama-2-13b", "mistral-7b", "gpt2-xl"])
def test_quantized_state_shards_to_an_even_share(name):
  """Issue 22's target: 8-bit and 4-bit AdamW state per device <= 1.05 x total / 8 on 8-way
  FSDP, 8-way TP and 2 x 4 FSDP x TP, with and without ZeRO-1 over data. Blocks that straddle
  shards are replicated over that axis: with blocks of consecutive values, Llama-2-7B's 11008
  and GPT-2-XL's 1600 and 6400 widths gave up to 6.7 x (abstract params, nothing allocated)."""
  tree = memory.model_shaped_params(name)
  meshes = ({"data": 8, "model": 1}, {"data": 1, "model": 8}, {"data": 2, "model": 4})
  for storage in ("8bit", "4bit"):
    tx = optimkit.adamw(1e-3, state_storage=storage)
    even = memory.state_bytes(tx, tree) / 8
    for mesh in meshes:
      specs = memory.fsdp_tp_specs_for(tree, mesh)
      for zero in (None, "data") if mesh["data"] > 1 else (None,):
        ratio = memory.state_bytes_per_device(tx, tree, specs, mesh, zero) / even
        assert ratio <= 1.05, (storage, mesh, zero, ratio)
