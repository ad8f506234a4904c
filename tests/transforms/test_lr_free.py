"""Prodigy and D-Adaptation Adam against the authors' packages (prodigyopt 1.1.2 `Prodigy`,
dadaptation 3.2 `DAdaptAdam`) and, with `bias_correction=True`, against optax.contrib's
`prodigy` and `dadapt_adamw`: float64, 200 steps, a matrix, a rank-3 stack, a vector and a
scalar (tests/parity.py), max relative error <= 1e-6. Then every state storage, the skipped
steps (lr = 0, no gradient yet), dtypes, fresh buffers and bad input."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from dadaptation import DAdaptAdam
from prodigyopt import Prodigy

from optimkit.state import Blockwise8BitStorage, FourBitStorage
from optimkit.state import quantized
from optimkit.transforms.lr_free import (
    DAdaptAdamState, ProdigyState, scale_by_dadapt_adam, scale_by_prodigy)
from tests.parity import Problem, assert_parity, max_relative_error, run_optax, run_torch

STEPS = 200


# The optimizers' chains, as optimkit/optimizers/lr_free.py will declare them: decoupled weight
# decay lives in the primitive (it is scaled by d lr), coupled (L2) decay is added to the
# gradient first.
def prodigy_chain(learning_rate=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, estim_lr0=1e-6,
                  estim_lr_coef=1.0, weight_decay=0.0, safeguard_warmup=False, *,
                  bias_correction=False, growth_rate=math.inf, decouple=True,
                  state_storage="float32"):
  return optax.chain(
      optax.add_decayed_weights(0.0 if decouple else weight_decay),
      scale_by_prodigy(learning_rate, betas, beta3, eps, estim_lr0, estim_lr_coef,
                       weight_decay if decouple else 0.0, safeguard_warmup,
                       bias_correction=bias_correction, growth_rate=growth_rate,
                       state_storage=state_storage))


def dadapt_adamw_chain(learning_rate=1.0, betas=(0.9, 0.999), eps=1e-8, estim_lr0=1e-6,
                       weight_decay=0.0, *, bias_correction=False, growth_rate=math.inf,
                       decouple=True, state_storage="float32"):
  return optax.chain(
      optax.add_decayed_weights(0.0 if decouple else weight_decay),
      scale_by_dadapt_adam(learning_rate, betas, eps, estim_lr0,
                           weight_decay if decouple else 0.0, bias_correction=bias_correction,
                           growth_rate=growth_rate, state_storage=state_storage))


PRODIGY_CASES = {
    "defaults": ({}, {}),
    "decoupled_decay_bias_correction": ({"weight_decay": 0.1, "bias_correction": True},
                                        {"weight_decay": 0.1, "use_bias_correction": True}),
    "coupled_decay_growth": ({"weight_decay": 0.05, "decouple": False, "growth_rate": 1.05},
                             {"weight_decay": 0.05, "decouple": False, "growth_rate": 1.05}),
    "safeguard_beta3_coef_d0_lr": (
        {"learning_rate": 0.5, "betas": (0.8, 0.99), "beta3": 0.95, "estim_lr_coef": 2.0,
         "estim_lr0": 1e-4, "eps": 1e-6, "safeguard_warmup": True},
        {"lr": 0.5, "betas": (0.8, 0.99), "beta3": 0.95, "d_coef": 2.0, "d0": 1e-4,
         "eps": 1e-6, "safeguard_warmup": True}),
}


@pytest.mark.parametrize("case", sorted(PRODIGY_CASES))
def test_prodigy_matches_prodigyopt(case):
  ours_kwargs, torch_kwargs = PRODIGY_CASES[case]
  problem = Problem(seed=1, steps=STEPS)
  ours = run_optax(prodigy_chain(**ours_kwargs), problem)
  reference = run_torch(lambda p: Prodigy(p, **torch_kwargs), problem)
  assert_parity(ours, reference, label=f"prodigy {case} vs prodigyopt")


def test_prodigy_bias_correction_is_optax_contrib_prodigy():
  problem = Problem(seed=2, steps=STEPS)
  ours = run_optax(prodigy_chain(weight_decay=0.1, bias_correction=True), problem)
  reference = run_optax(optax.contrib.prodigy(weight_decay=0.1), problem)
  assert_parity(ours, reference, label="prodigy(bias_correction=True) vs optax.contrib.prodigy")


def test_optax_prodigy_is_not_the_authors():
  """The deviation the docstring states: optax always bias-corrects, the authors do not."""
  problem = Problem(seed=1, steps=STEPS)
  optax_run = run_optax(optax.contrib.prodigy(), problem)
  authors = run_torch(lambda p: Prodigy(p), problem)
  error = max_relative_error(optax_run[-1:], authors[-1:])
  print(f"optax.contrib.prodigy vs prodigyopt after {STEPS} steps: {error:.3f}")
  assert error > 0.1


DADAPT_CASES = {
    "defaults": ({}, {}),
    "decoupled_decay_bias_correction": ({"weight_decay": 0.1, "bias_correction": True},
                                        {"weight_decay": 0.1, "use_bias_correction": True}),
    "coupled_decay_growth": ({"weight_decay": 0.05, "decouple": False, "growth_rate": 1.05},
                             {"weight_decay": 0.05, "decouple": False, "growth_rate": 1.05}),
    "betas_d0_lr_eps": ({"learning_rate": 0.5, "betas": (0.8, 0.99), "estim_lr0": 1e-4,
                         "eps": 1e-6},
                        {"lr": 0.5, "betas": (0.8, 0.99), "d0": 1e-4, "eps": 1e-6}),
}


@pytest.mark.parametrize("case", sorted(DADAPT_CASES))
def test_dadapt_adamw_matches_dadaptation(case):
  ours_kwargs, torch_kwargs = DADAPT_CASES[case]
  torch_kwargs = {"decouple": True, **torch_kwargs}  # dadapt_adamw: decoupled unless told
  problem = Problem(seed=3, steps=STEPS)
  ours = run_optax(dadapt_adamw_chain(**ours_kwargs), problem)
  reference = run_torch(lambda p: DAdaptAdam(p, **torch_kwargs), problem)
  assert_parity(ours, reference, label=f"dadapt_adamw {case} vs DAdaptAdam")


def test_dadapt_bias_correction_is_optax_contrib_dadapt_adamw():
  problem = Problem(seed=4, steps=STEPS)
  ours = run_optax(dadapt_adamw_chain(weight_decay=0.1, bias_correction=True), problem)
  reference = run_optax(optax.contrib.dadapt_adamw(weight_decay=0.1), problem)
  assert_parity(ours, reference,
                label="dadapt_adamw(bias_correction=True) vs optax.contrib.dadapt_adamw")


# ----------------------------------------------------------------------------------------------
# Skipped steps: a learning rate of 0 (warmup from 0) and gradients that are all zero.


class _QuietStart(Problem):
  """The parity problem with all-zero gradients for the first `quiet` steps."""

  def __init__(self, quiet, **kwargs):
    super().__init__(**kwargs)
    self.quiet = quiet

  def grad(self, step, params):
    grads = super().grad(step, params)
    return {k: 0.0 * g for k, g in grads.items()} if step < self.quiet else grads


def _run_torch_scheduled(make_optimizer, problem, schedule):
  """run_torch with the group's lr set from `schedule(step)` before each step."""
  tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in problem.init.items()}
  optimizer = make_optimizer(list(tensors.values()))
  # The values the jitted step sees: optax computes them in float32 from an int32 count, and
  # eagerly they can differ from the jitted ones by an ulp.
  schedule = jax.jit(schedule)
  trajectory = []
  for step in range(problem.steps):
    grads = problem.grad(step, {k: t.numpy() for k, t in tensors.items()})
    for k, t in tensors.items():
      t.grad = torch.tensor(grads[k], dtype=torch.float64)
    optimizer.param_groups[0]["lr"] = float(schedule(jnp.asarray(step, jnp.int32)))
    optimizer.step()
    trajectory.append({k: t.numpy().copy() for k, t in tensors.items()})
  return trajectory


WARMUP = optax.join_schedules(
    [optax.linear_schedule(0.0, 1.0, 20), optax.linear_schedule(1.0, 0.05, STEPS - 20)], [20])


@pytest.mark.parametrize("name", ["prodigy", "dadapt_adamw"])
def test_warmup_from_zero_and_zero_gradients_skip_as_the_authors_do(name):
  """lr = 0 at the first step changes nothing; zero gradients at the next two update the
  moments but not the estimate, the step count or the params; then training proceeds. With
  bias correction on, so that the step count shows. (optax gives NaN here: 0 / 0.)"""
  problem = _QuietStart(quiet=3, seed=5, steps=STEPS)
  if name == "prodigy":
    tx = prodigy_chain(WARMUP, weight_decay=0.01, bias_correction=True)
    make = lambda p: Prodigy(p, weight_decay=0.01, use_bias_correction=True)
  else:
    tx = dadapt_adamw_chain(WARMUP, weight_decay=0.01, bias_correction=True)
    make = lambda p: DAdaptAdam(p, weight_decay=0.01, use_bias_correction=True, decouple=True)
  ours = run_optax(tx, problem)
  reference = _run_torch_scheduled(make, problem, WARMUP)
  for step in range(3):
    for k in problem.init:
      np.testing.assert_array_equal(ours[step][k], problem.init[k])
  assert_parity(ours, reference, label=f"{name} warmup from 0 and zero gradients")


def test_a_step_at_lr_zero_leaves_the_state_as_it_was():
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
  grads = {"w": jnp.ones((2, 3))}
  for tx in (scale_by_prodigy(learning_rate=0.0), scale_by_dadapt_adam(learning_rate=0.0)):
    state = tx.init(params)
    updates, new_state = jax.jit(tx.update)(grads, state, params)
    np.testing.assert_array_equal(updates["w"], np.zeros((2, 3)))
    for name in new_state._fields:
      if name != "count":
        for a, b in zip(jax.tree.leaves(getattr(new_state, name)),
                        jax.tree.leaves(getattr(state, name))):
          np.testing.assert_array_equal(a, b)
    assert int(new_state.count) == 1 and int(new_state.steps) == 0


# ----------------------------------------------------------------------------------------------
# Storage formats, dtypes, buffers, transformations, bad input.


def _quadratic_problem():
  rng = np.random.default_rng(0)
  params = {"m": jnp.asarray(rng.normal(size=(16, 8)), jnp.float32),
            "v": jnp.asarray(rng.normal(size=(8,)), jnp.float32),
            "s": jnp.asarray(0.5, jnp.float32)}
  target = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)

  def loss(params):
    return sum(jnp.sum((p - t) ** 2) for p, t in zip(jax.tree.leaves(params),
                                                     jax.tree.leaves(target)))
  return params, loss


def _train(tx, params, loss, steps):
  def step(_, carry):
    params, state = carry
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  return jax.jit(lambda params: jax.lax.fori_loop(0, steps, step, (params, tx.init(params))))(
      params)


STORAGES = {"float32": "float32", "bfloat16": "bfloat16",
            "8bit": Blockwise8BitStorage(min_size=0), "4bit": FourBitStorage(min_size=0)}
CHAINS = {"prodigy": lambda **kw: prodigy_chain(weight_decay=1e-3, **kw),
          "dadapt_adamw": lambda **kw: dadapt_adamw_chain(weight_decay=1e-3, **kw)}


@functools.cache
def _float32_run(name):
  params, loss = _quadratic_problem()
  return _train(CHAINS[name](), params, loss, 300)


@pytest.mark.parametrize("storage", sorted(STORAGES))
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_every_storage_trains_and_stores_the_statistics_in_its_format(name, storage):
  params, loss = _quadratic_problem()
  start = float(loss(params))
  _, reference_state = _float32_run(name)
  tx = CHAINS[name](state_storage=STORAGES[storage])
  trained, state = _train(tx, params, loss, 300)
  assert float(loss(trained)) < 1e-2 * start
  inner = state[1]
  reference_inner = reference_state[1]
  for field in ("exp_avg", "exp_avg_sq", "grad_sum"):
    stored = getattr(inner, field)["m"]
    if storage in ("8bit", "4bit"):
      assert quantized.is_quantized(stored), field
    else:
      assert stored.dtype == jnp.dtype(storage), field
  assert inner.estim_lr.dtype == jnp.float32 and inner.numerator_weighted.dtype == jnp.float32
  # The estimate of D is close to the float32 run's.
  np.testing.assert_allclose(float(inner.estim_lr), float(reference_inner.estim_lr), rtol=0.2)
  if name == "prodigy":
    assert inner.params0["m"].dtype == jnp.float32  # a copy of the params, not a statistic
    np.testing.assert_array_equal(inner.params0["m"], params["m"])


@pytest.mark.parametrize("make", [scale_by_prodigy, scale_by_dadapt_adam])
def test_low_precision_params_keep_float32_statistics_and_return_their_dtype(make):
  """A mixed tree: bfloat16, float16 and float32 leaves."""
  params32, loss = _quadratic_problem()
  dtypes = {"m": jnp.bfloat16, "v": jnp.float16, "s": jnp.float32}
  params = {k: p.astype(dtypes[k]) for k, p in params32.items()}
  tx = make(weight_decay=1e-3)
  state = tx.init(params)
  assert state.estim_lr.dtype == jnp.float32
  grads = jax.grad(lambda p: loss(jax.tree.map(lambda x: x.astype(jnp.float32), p)))(params)
  update = jax.jit(tx.update)
  for _ in range(3):
    updates, state = update(grads, state, params)
    assert {k: u.dtype for k, u in updates.items()} == {k: jnp.dtype(d) for k, d in dtypes.items()}
    params = optax.apply_updates(params, updates)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.exp_avg_sq))
  assert float(state.numerator_weighted) != 0.0  # the estimate is being computed


@pytest.mark.parametrize("make", [scale_by_prodigy, scale_by_dadapt_adam])
def test_init_returns_fresh_buffers_and_a_donated_vmapped_step_runs(make):
  params, loss = _quadratic_problem()
  tx = make()
  state = tx.init(params)
  pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves((params, state))]
  assert len(set(pointers)) == len(pointers)

  def step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  donated = jax.jit(step, donate_argnums=(0, 1))
  new_params, new_state = donated(jax.tree.map(jnp.copy, params), state)
  assert int(new_state.steps) == 1
  stacked = jax.tree.map(lambda p: jnp.stack([p, 2 * p]), params)
  batched = jax.jit(jax.vmap(step))(stacked, jax.vmap(tx.init)(stacked))
  assert batched[1].estim_lr.shape == (2,)


def test_states_are_the_named_tuples():
  params, _ = _quadratic_problem()
  assert isinstance(scale_by_prodigy().init(params), ProdigyState)
  assert isinstance(scale_by_dadapt_adam().init(params), DAdaptAdamState)


BAD = [
    (lambda: scale_by_prodigy(betas=(0.9, 1.0)), "scale_by_prodigy: betas[1] must be in [0.0, "
                                                  "1.0), got 1.0"),
    (lambda: scale_by_prodigy(betas=0.9), "scale_by_prodigy: betas must be a pair (b1, b2), "
                                          "got 0.9"),
    (lambda: scale_by_prodigy(beta3=-0.1), "scale_by_prodigy: beta3 must be in [0.0, 1.0), "
                                           "got -0.1"),
    (lambda: scale_by_prodigy(eps=0.0), "scale_by_prodigy: eps must be in (0.0, inf], got 0.0"),
    (lambda: scale_by_prodigy(estim_lr0=0.0), "scale_by_prodigy: estim_lr0 must be in (0.0, "
                                              "inf], got 0.0"),
    (lambda: scale_by_prodigy(estim_lr_coef=-1.0), "scale_by_prodigy: estim_lr_coef must be in "
                                                   "(0.0, inf], got -1.0"),
    (lambda: scale_by_prodigy(growth_rate=0.5), "scale_by_prodigy: growth_rate must be in "
                                                "[1.0, inf], got 0.5"),
    (lambda: scale_by_dadapt_adam(learning_rate=-1.0), "scale_by_dadapt_adam: learning_rate "
                                                       "must be in [0.0, inf], got -1.0"),
    (lambda: scale_by_dadapt_adam(weight_decay=None), "scale_by_dadapt_adam: weight_decay "
                                                      "must be a number in [0.0, inf], got "
                                                      "None"),
]


@pytest.mark.parametrize("make, message", BAD)
def test_bad_hyperparameters_raise_naming_the_argument(make, message):
  with pytest.raises(ValueError) as raised:
    make()
  assert str(raised.value) == message


@pytest.mark.parametrize("make", [scale_by_prodigy, scale_by_dadapt_adam])
def test_update_without_params_says_they_are_needed(make):
  params, _ = _quadratic_problem()
  tx = make()
  with pytest.raises(ValueError, match="update\\(\\) needs params"):
    tx.update(params, tx.init(params))
