"""GaLore around Adam against galore-torch 1.0 `GaLoreAdamW` (float64, 200 steps, projector
refreshed every 10 steps, a tall and a wide matrix projected, a rank-3 stack, a vector and a
scalar passed through), both sides projecting with a float64 SVD whose singular vectors have the
same sign convention; then optax.contrib.galore's side, storage, dtypes and bad input."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from galore_torch import GaLoreAdamW
from galore_torch.galore_projector import GaLoreProjector

import optimkit
from optimkit.state import Blockwise8BitStorage
from optimkit.transforms.galore import GaLoreState, galore
from tests.parity import Problem, assert_parity, max_relative_error, run_optax, run_torch

SHAPES = {"tall": (8, 5), "wide": (4, 9), "stack": (3, 4, 5), "vector": (7,), "scalar": ()}
STEPS = 200


def _sign_fixed(vectors, dim):
  index = torch.argmax(vectors.abs(), dim=dim, keepdim=True)
  sign = torch.sign(torch.gather(vectors, dim, index))
  return vectors * torch.where(sign == 0, torch.ones_like(sign), sign)


def _float64_orthogonal_matrix(self, weights, rank, type):
  """galore-torch's projector from a float64 SVD (it computes one in float32), each singular
  vector's largest entry made positive (the convention optimkit uses)."""
  u, _, vh = torch.linalg.svd(weights.double(), full_matrices=False)
  if type == "right":
    return _sign_fixed(vh[:rank, :], dim=1)
  if type == "left":
    return _sign_fixed(u[:, :rank], dim=0)
  raise ValueError(type)


@pytest.fixture
def deterministic_reference(monkeypatch):
  monkeypatch.setattr(GaLoreProjector, "get_orthogonal_matrix", _float64_orthogonal_matrix)


def _reference(rank, gap, scale, lr, betas, proj_type="std"):
  def make(tensors):
    projected = [t for t in tensors if t.ndim == 2]
    others = [t for t in tensors if t.ndim != 2]
    return GaLoreAdamW([{"params": others},
                        {"params": projected, "rank": rank, "update_proj_gap": gap,
                         "scale": scale, "proj_type": proj_type}],
                       lr=lr, betas=betas, eps=0.0, weight_decay=0.0,
                       no_deprecation_warning=True)
  return make


@pytest.mark.parametrize("rank, proj_type", [(2, "std"), (3, "reverse_std")])
def test_galore_adam_matches_galore_torch(deterministic_reference, rank, proj_type):
  """galore-torch's Adam adds eps before the bias correction: at eps = 0 it is scale_by_adam."""
  problem = Problem(seed=6, steps=STEPS, shapes=SHAPES)
  tx = optax.chain(galore(optax.scale_by_adam(b1=0.8, b2=0.99, eps=0.0), rank,
                          update_proj_gap=10, scale=0.25, proj_type=proj_type),
                   optax.scale(-0.05))
  ours = run_optax(tx, problem)
  reference = run_torch(_reference(rank, 10, 0.25, 0.05, (0.8, 0.99), proj_type), problem)
  assert_parity(ours, reference, label=f"galore(scale_by_adam) rank {rank} {proj_type} vs "
                                       f"GaLoreAdamW")


def test_state_is_in_the_projected_space():
  params = {k: jnp.zeros(s) for k, s in SHAPES.items()}
  state = galore(optimkit.scale_by_adam(), rank=2).init(params)
  assert isinstance(state, GaLoreState)
  mu = state.inner_state.mu
  assert mu["tall"].shape == (8, 2) and mu["wide"].shape == (2, 9)  # std: the shorter side goes
  assert mu["stack"].shape == (3, 4, 5) and mu["scalar"].shape == ()  # passed through
  assert state.projectors["tall"].shape == (2, 5) and state.projectors["wide"].shape == (4, 2)
  assert state.projectors["stack"] is None and state.projectors["vector"] is None
  reverse = galore(optimkit.scale_by_adam(), rank=2, proj_type="reverse_std").init(params)
  assert reverse.inner_state.mu["tall"].shape == (2, 5)
  assert reverse.projectors["tall"].shape == (8, 2)


def test_reverse_std_takes_optax_contrib_galores_side():
  """optax.contrib.scale_by_galore projects the longer side away. Compared over one projector's
  lifetime: optax computes the SVD in float32 and keeps LAPACK's signs, which (unlike a sign
  inside one lifetime) matter at a refresh, where the carried moments meet the new basis."""
  problem = Problem(seed=7, steps=40, shapes={"tall": (8, 5), "wide": (4, 9)})
  ours = run_optax(optax.chain(
      galore(optax.scale_by_adam(), 2, update_proj_gap=1000, proj_type="reverse_std"),
      optax.scale(-0.05)), problem)
  theirs = run_optax(optax.chain(
      optax.contrib.scale_by_galore(2, update_proj_gap=1000,
                                    base_optimizer=optax.scale_by_adam()),
      optax.scale(-0.05)), problem)
  assert max_relative_error(ours, theirs) < 1e-5  # float32 SVD on optax's side
  assert max_relative_error(ours[-1:], [problem.init]) > 1e-2  # and the params moved


# The primitives' storage argument is being renamed from `storage` to `state_storage`.
_STORAGE_ARG = ("state_storage" if "state_storage" in
                inspect.signature(optimkit.scale_by_adam).parameters else "storage")


def test_every_storage_of_the_inner_optimizer_and_a_donated_step():
  rng = np.random.default_rng(0)
  # A rank-4 target from zero: rank-4 gradients, which a rank-4 projection holds whole.
  params = {"w": jnp.zeros((32, 16), jnp.float32), "b": jnp.zeros(16, jnp.float32)}
  target = {"w": jnp.asarray(rng.normal(size=(32, 4)) @ rng.normal(size=(4, 16)) / 2,
                             jnp.float32),
            "b": jnp.ones(16, jnp.float32)}
  loss = lambda p: sum(jnp.sum((p[k] - target[k]) ** 2) for k in p)
  for storage in ("float32", "bfloat16", Blockwise8BitStorage(min_size=0)):
    tx = optax.chain(galore(optimkit.scale_by_adam(**{_STORAGE_ARG: storage}), rank=4,
                            update_proj_gap=25), optax.scale(-0.05))

    def step(params, state):
      updates, state = tx.update(jax.grad(loss)(params), state, params)
      return optax.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    p, s = jax.tree.map(jnp.copy, params), tx.init(params)
    for _ in range(150):
      p, s = step(p, s)
    assert float(loss(p)) < 0.05 * float(loss(params)), storage


def test_bfloat16_params_project_in_float32_and_return_bfloat16():
  params = {"w": jnp.asarray(np.random.default_rng(1).normal(size=(6, 4)), jnp.bfloat16)}
  tx = galore(optimkit.scale_by_adam(), rank=2)
  state = tx.init(params)
  assert state.projectors["w"].dtype == jnp.float32
  updates, state = jax.jit(tx.update)(params, state)
  assert updates["w"].dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(updates["w"].astype(jnp.float32))))


@pytest.mark.parametrize("make, message", [
    (lambda: galore(optax.scale_by_adam(), rank=0), "galore: rank must be an integer >= 1, got 0"),
    (lambda: galore(optax.scale_by_adam(), 2, update_proj_gap=0),
     "galore: update_proj_gap must be an integer >= 1, got 0"),
    (lambda: galore(optax.scale_by_adam(), 2, scale=0.0),
     "galore: scale must be in (0.0, inf], got 0.0"),
    (lambda: galore(optax.scale_by_adam(), 2, proj_type="full"),
     "galore: proj_type must be one of ('std', 'reverse_std', 'left', 'right'), got 'full'"),
])
def test_bad_arguments_raise_naming_them(make, message):
  with pytest.raises(ValueError) as raised:
    make()
  assert str(raised.value) == message


def test_mask_selecting_a_leaf_that_is_not_a_matrix_is_refused():
  tx = galore(optax.scale_by_adam(), 2, mask={"w": True, "v": True})
  with pytest.raises(ValueError, match=r"mask selects \['v'\] of shape \(3,\); only 2-D"):
    tx.init({"w": jnp.zeros((3, 3)), "v": jnp.zeros(3)})
