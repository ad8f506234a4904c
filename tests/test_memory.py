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
