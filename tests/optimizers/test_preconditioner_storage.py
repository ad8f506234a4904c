"""`preconditioner_storage`: Shampoo's statistics and roots, SOAP's statistics and eigenbases and
Kron's triangular factors in bfloat16 or 8 bits (`optimkit.state.matrices`).

The default ("float32") is the code path the parity tests run (tests/transforms/test_shampoo.py,
test_soap.py, test_kron.py, tests/optimizers/test_kronecker.py, unchanged): the stored matrices
are the arrays the algorithms compute with. Here: the formats' round trips (diagonal exact,
zeros exact, unbiased stochastic rounding, a basis re-orthogonalized on read), and that each
optimizer with each reduced format trains under a donated jit, inside optax's wrappers, with the
state in the dtypes and bytes claimed, its sharding specs derived, and `optimkit memory` rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from optimkit import cli, memory, sharding
from optimkit.state import matrices
from optimkit.state.matrices import QuantizedMatrices
from tests import registry_harness as h
from tests.optimizers.test_contract import _buffers, _composite, _donated_steps

NAMES = ("shampoo", "soap", "kron")
REDUCED = ("bfloat16", "8bit")
# Small blocks keep the harness's (64, 128) matrix quick; its factors are 32 x 32 stacks of
# 8 blocks (8192 entries, above the 8-bit threshold of 4096).
OPTIONS = {"shampoo": dict(block_size=32, preconditioning_compute_steps=2),
           "soap": dict(block_size=32, precondition_frequency=2),
           "kron": dict(block_size=32)}
MATRIX_FIELDS = {"shampoo": ("statistics", "roots"), "soap": ("statistics", "bases"),
                 "kron": ("factors",)}


# Rates at which 12 steps of the harness's quadratic show (its typical rates move it < 1%).
RATES = {"shampoo": 0.1, "soap": 0.1, "kron": 0.1}


def _make(name, fmt, **kwargs):
  return h.make(name, preconditioner_storage=fmt, **OPTIONS[name], **kwargs)


def _direction_state(state):
  """The primitive's state inside the optimizer's chain (the first element)."""
  return state.inner_state[0]


# ----------------------------------------------------------------------------------------------
# The formats.


def _spd(n, b, seed=0):
  x = np.random.default_rng(seed).normal(size=(n, b, 3 * b))
  return jnp.asarray(x @ np.swapaxes(x, 1, 2) / (3 * b), jnp.float32)


def test_8bit_keeps_the_diagonal_and_reads_a_symmetric_matrix():
  store = matrices.resolve("8bit")
  a = _spd(4, 64)
  stored = store.write(a, store.init(a), accumulated=False)
  assert isinstance(stored, QuantizedMatrices)
  assert stored.codes.dtype == jnp.uint8 and stored.codes.size == 4 * 64 * 64  # a byte an entry
  back = store.read(stored, jnp.float32, "symmetric")
  np.testing.assert_array_equal(np.diagonal(back, axis1=1, axis2=2),
                                np.diagonal(a, axis1=1, axis2=2))
  np.testing.assert_array_equal(back, np.swapaxes(back, 1, 2))
  off = np.asarray(a) * (1 - np.eye(64))
  assert np.max(np.abs(back - a)) < 0.01 * np.max(np.abs(off))
  # Small stacks stay in the compute dtype; the bfloat16 format stores every matrix stack.
  small = jnp.eye(8, dtype=jnp.float32)[None]
  assert store.init(small).dtype == jnp.float32
  assert matrices.resolve("bfloat16").init(small).dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="preconditioner_storage must be one of"):
    matrices.resolve("4bit")


def test_zeros_stay_zero_and_triangular_factors_keep_their_diagonal():
  store = matrices.resolve("8bit")
  upper = jnp.triu(_spd(2, 64, seed=1)) + 3 * jnp.eye(64, dtype=jnp.float32)
  for fmt in REDUCED:
    store = matrices.resolve(fmt)
    back = store.read(store.write(upper, store.init(upper), accumulated=True), jnp.float32,
                      "triangular")
    assert np.all(np.tril(np.asarray(back), -1) == 0)
  back = matrices.resolve("8bit").read(matrices.resolve("8bit").init(upper), jnp.float32,
                                       "triangular")
  np.testing.assert_array_equal(np.diagonal(back, axis1=1, axis2=2),
                                np.diagonal(upper, axis1=1, axis2=2))


@pytest.mark.parametrize("fmt", REDUCED)
def test_accumulated_writes_round_unbiased(fmt):
  """A change below half a rounding step (an EMA step at beta2 = 0.999) survives stochastic
  rounding on average; nearest rounding loses it."""
  store = matrices.resolve(fmt)
  # 64 copies of two matrices, stacked: each position draws its own rounding.
  noise = np.random.default_rng(2).normal(size=(2, 64, 64)).astype(np.float32)
  base = np.asarray(store.read(store.init(jnp.tile(jnp.asarray(noise), (64, 1, 1))),
                               jnp.float32, "triangular"))
  row_max = np.max(np.abs(base * (1 - np.eye(64))), axis=-1, keepdims=True)  # (8 bits' scale)
  # Entries at a quarter to half their row's maximum (the row's scale does not move), nudged
  # by a tenth (8 bits) or a hundredth (bfloat16) of half a rounding step there.
  chosen = ((np.abs(base) > 0.25 * row_max) & (np.abs(base) < 0.5 * row_max)
            & ~np.eye(64, dtype=bool))
  delta = (1e-3 if fmt == "8bit" else 1e-4) * row_max * chosen
  nudged = jnp.asarray(base + delta)
  draws = np.asarray(store.read(store.write(nudged, store.init(nudged), accumulated=True),
                                jnp.float32, "triangular"))
  nearest = np.asarray(store.read(store.write(nudged, store.init(nudged), accumulated=False),
                                  jnp.float32, "triangular"))
  assert chosen.sum() > 10_000
  moved = lambda x: np.sum((x - base)[chosen]) / np.sum(delta[chosen])
  assert abs(moved(draws) - 1) < 0.25
  assert abs(moved(nearest)) < 0.1


@pytest.mark.parametrize("fmt", REDUCED)
def test_a_rounded_basis_is_read_back_nearly_orthogonal(fmt):
  store = matrices.resolve(fmt)
  q = jnp.asarray(np.linalg.qr(np.random.default_rng(3).normal(size=(4, 64, 64)))[0],
                  jnp.float32)
  stored = store.write(q, store.init(q), accumulated=False)
  eye = np.eye(64)
  raw = store.read(stored, jnp.float32, "triangular")  # no correction
  fixed = store.read(stored, jnp.float32, "orthogonal")
  error = lambda x: np.max(np.abs(np.swapaxes(x, 1, 2) @ x - eye))
  assert error(np.asarray(fixed)) < error(np.asarray(raw)) / 5
  assert error(np.asarray(fixed)) < 2e-3


# ----------------------------------------------------------------------------------------------
# The optimizers.


@pytest.mark.parametrize("fmt", REDUCED)
@pytest.mark.parametrize("name", NAMES)
def test_trains_under_a_donated_jit_with_the_state_as_claimed(name, fmt):
  tx = _make(name, fmt, learning_rate=RATES[name])
  reference = _make(name, "float32", learning_rate=RATES[name])
  params, goal = h.params(), h.target()
  state = tx.init(params)
  assert len(set(_buffers(state)) | set(_buffers(params))) == \
      len(_buffers(state)) + len(_buffers(params)), "init shares a buffer"
  fields = _direction_state(state)
  for field in MATRIX_FIELDS[name]:
    stacks = [leaf for leaf in jax.tree.leaves(getattr(fields, field),
                                               is_leaf=lambda x: isinstance(x, QuantizedMatrices))
              if isinstance(leaf, QuantizedMatrices) or leaf.ndim == 3]
    assert stacks, field
    for leaf in stacks:
      if fmt == "bfloat16":
        assert leaf.dtype == jnp.bfloat16
      elif isinstance(leaf, QuantizedMatrices):
        assert leaf.codes.dtype == jnp.uint8
        assert leaf.diagonal.dtype == leaf.absmax.dtype == jnp.float32
      else:  # a stack under the 8-bit threshold
        assert leaf.size < 4096 and leaf.dtype == jnp.float32
    if fmt == "8bit":
      assert any(isinstance(leaf, QuantizedMatrices) for leaf in stacks), field
  assert memory.state_bytes(tx, params) < memory.state_bytes(reference, params)

  start = float(h.loss(params, goal))
  params, state = _donated_steps(name, tx, params, state, 12)
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves((params, state)))
  assert float(h.loss(params, goal)) < 0.9 * start
  # The state keeps its structure and dtypes through the steps (no silent promotion).
  assert jax.tree.structure(state) == jax.tree.structure(tx.init(h.params()))
  assert [x.dtype for x in jax.tree.leaves(state)] == \
      [x.dtype for x in jax.tree.leaves(tx.init(h.params()))]


def test_inside_every_optax_wrapper():
  """SOAP (the one of the three that also sits inside MultiSteps and apply_if_finite: Kron needs
  a key, and Shampoo stores through the same `read_factors` / `write_factors`)."""
  name = "soap"
  tx = _composite(name, "8bit", preconditioner_storage="8bit")
  params = h.params()
  state = tx.init(params)
  start = jax.tree.map(np.asarray, params)
  params, state = _donated_steps(name, tx, params, state, 3)
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves((params, state)))
  assert all(np.max(np.abs(np.asarray(params[k]) - start[k])) > 0
             for k in ("matrix", "vector", "stack"))


@pytest.mark.parametrize("name", NAMES)
def test_state_specs_for_the_stored_matrices(name):
  """Specs are derived, leaf for leaf, from abstract params on a 2 x 4 mesh (with ZeRO-1)."""
  mesh = AbstractMesh((2, 4), ("data", "model"))
  params = {"matrix": jax.ShapeDtypeStruct((64, 128), jnp.float32),
            "vector": jax.ShapeDtypeStruct((128,), jnp.float32)}
  specs = {"matrix": P("data", "model"), "vector": P("model")}
  for fmt in ("float32",) + REDUCED:
    tx = _make(name, fmt, **({"seed": 0} if name == "kron" else {}))
    abstract = jax.eval_shape(tx.init, params)
    for zero1 in (None, "data"):
      got = sharding.state_specs(tx, params, specs=specs, mesh=mesh, zero1_axis=zero1)
      leaves = jax.tree.leaves(abstract)
      got_leaves = jax.tree.leaves(got, is_leaf=lambda x: isinstance(x, P))
      assert len(leaves) == len(got_leaves)
      for leaf, spec in zip(leaves, got_leaves):
        assert len(tuple(spec)) <= leaf.ndim
    # The params-shaped moments keep the params' specs, whatever the matrices' format.
    moments = _direction_state(got)
    first = moments.momentum if name == "shampoo" else moments.mu
    assert first["matrix"] == P("data", "model")


def test_optimkit_memory_rows(capsys):
  assert cli.main(["memory", "--params", "1e8", "--optimizers",
                   "soap,soap::bfloat16,soap::8bit,kron,kron:8bit:8bit"]) == 0
  out = capsys.readouterr().out
  rows = {tuple(c.strip() for c in line.split("|")[1:3]): float(line.split("|")[3])
          for line in out.splitlines() if line.startswith("| ") and "optimizer" not in line}
  assert rows[("soap", "float32")] > rows[("soap", "float32/bfloat16")] > \
      rows[("soap", "float32/8bit")] > 8.0
  assert rows[("kron", "8bit/8bit")] < rows[("kron", "float32")] / 2
  message = cli.main(["memory", "--optimizers", "adamw::8bit"])
  assert message == 2 and "no preconditioner_storage" in capsys.readouterr().err


def test_bad_format_names_the_argument():
  for name in NAMES:
    with pytest.raises(ValueError, match=f"{name}.*preconditioner_storage must be one of"):
      h.make(name, preconditioner_storage="4bit")
