"""PSGD Kron against kron-torch 0.3.3 `Kron`, fed the same random vectors V, float64, 100 steps,
on a matrix, a matrix with a dim above max_size_triangular (diagonal factor), a rank-3 leaf
(merged into a matrix, and not merged with one diagonal dim), a vector and a scalar; updates
every step and every 2nd (the reference's counter); blocks (padding included) against the
reference on the blocks as separate parameters; the paper's update (the undamped momentum
preconditioned) against a NumPy transcription; the seed's key."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from optimkit.transforms.kron import KronState, kron_layout, scale_by_kron
from tests.parity import Problem, assert_parity, run_optax, run_torch

STEPS, LR = 100, 0.02


def _key(step):
  return jax.random.key(1000 + step)


def _noise(step, shapes):
  """The V that scale_by_kron draws at `step` for leaves of these block-stack shapes (tree
  order): one normal draw of all their entries, split."""
  sizes = [int(np.prod(s)) for s in shapes]
  flat = np.asarray(jax.random.normal(_key(step), (sum(sizes),), jnp.float64))
  offsets = np.cumsum([0] + sizes)
  return [flat[a:b].reshape(s) for a, b, s in zip(offsets[:-1], offsets[1:], shapes)]


@pytest.fixture
def reference_kron(monkeypatch):
  """kron-torch's Kron, eager (torch.compile off), its triangular solve in the working dtype
  (it casts to float32), and its torch.randn_like serving the V that optimkit draws."""
  import torch._dynamo
  from kron_torch import kron as module

  monkeypatch.setattr(torch._dynamo.config, "disable", True)
  pending = []
  proxy = types.SimpleNamespace(**{name: getattr(torch, name) for name in dir(torch)
                                   if not name.startswith("__")})
  proxy.randn_like = lambda g: torch.tensor(pending.pop(0), dtype=g.dtype).reshape(g.shape)
  monkeypatch.setattr(module, "torch", proxy)

  def solve_right(x, a):  # X inv(A), A upper triangular, without the float32 round trip
    return torch.linalg.solve_triangular(a, x.reshape(-1, x.size(-1)), upper=True,
                                         left=False).reshape_as(x)

  monkeypatch.setattr(module, "_solve_triangular_right", solve_right)

  class Fed:
    """Before each step, queue that step's V for every leaf in parameter order."""

    def __init__(self, params, noise, **kwargs):
      self.optimizer = module.Kron(params, **kwargs)
      self.noise, self.step_count = noise, 0

    def step(self):
      pending[:] = self.noise(self.step_count)
      self.optimizer.step()
      self.step_count += 1

  threads = torch.get_num_threads()
  # One intra-op thread: on a shared 2-core machine torch's pool spins (3x the CPU time).
  torch.set_num_threads(1)
  yield Fed
  torch.set_num_threads(threads)


def _as_reference_problem(problem):
  """The same problem with 0-d leaves as (1,) leaves (kron-torch cannot take 0-d params)."""
  lift = lambda tree: {k: np.reshape(v, (1,)) if np.ndim(v) == 0 else v for k, v in tree.items()}
  twin = Problem(seed=0, shapes={"x": (1,)}, steps=problem.steps)
  twin.shapes = {k: (1,) if s == () else s for k, s in problem.shapes.items()}
  for name in ("init", "target", "curvature"):
    setattr(twin, name, lift(getattr(problem, name)))
  twin.noise = [lift(n) for n in problem.noise]
  return twin


# Leaf names sorted, so the reference's parameter order is the tree order (the V order).
CASES = {
    "every_step": (dict(b1=0.9, preconditioner_update_probability=1.0, max_size_triangular=11,
                        precond_lr=0.1),
                   {"a_matrix": (6, 5), "b_wide": (4, 12), "c_stack": (3, 4, 5),
                    "d_vector": (7,), "e_scalar": ()}),
    "every_2nd": (dict(b1=0.95, preconditioner_update_probability=0.5,
                       memory_save_mode="one_diag", momentum_into_precond_update=False,
                       precond_lr=0.2, precond_init_scale=0.5, merge_dims=False),
                  {"c_stack": (3, 4, 5)}),
}


@pytest.mark.parametrize("cache", [False, True], ids=["", "cached"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_kron_torch(case, cache, reference_kron):
  # cache_preconditioner: Q^T Q kept between updates ("every_2nd" reads it on the other steps).
  options, shapes = CASES[case]
  problem = Problem(seed=10, shapes=shapes, steps=STEPS)
  layouts = [kron_layout(s, options.get("max_size_triangular", 8192), 2,
                         options.get("memory_save_mode"), options.get("merge_dims", True), None)
             for _, s in sorted(shapes.items())]
  noise = lambda step: _noise(step, [lay.merged for lay in layouts])
  reference = run_torch(
      lambda p: reference_kron(p, noise, lr=LR, precond_dtype=torch.float64, **options),
      _as_reference_problem(problem))
  reference = [{k: v.reshape(shapes[k]) for k, v in r.items()} for r in reference]
  ours = run_optax(optax.chain(scale_by_kron(precondition_damped=True,
                                             cache_preconditioner=cache, **options),
                               optax.scale_by_learning_rate(LR)), problem,
                   extra_args=lambda step, params: {"key": _key(step)})
  assert_parity(ours, reference, label=f"kron/{case} cache={cache} vs kron-torch")


@pytest.mark.parametrize("cache", [False, True], ids=["", "cached"])
def test_blocks_are_separate_kron_parameters(cache, reference_kron):
  # (9, 9) in blocks of 5: a 2 x 2 grid, the last row and column padded; each block is its own
  # parameter (factors, damping mean, RMS clipping). The pieces get the V of the blocks.
  whole = Problem(seed=11, shapes={"g": (9, 9)}, steps=STEPS)
  corners = {f"g{i}{j}": (slice(5 * i, 5 * i + 5), slice(5 * j, 5 * j + 5))
             for i in (0, 1) for j in (0, 1)}
  pieces = Problem(seed=0, shapes={"x": (1,)}, steps=STEPS)
  pieces.shapes = {k: whole.init["g"][s].shape for k, s in corners.items()}
  for name in ("init", "target", "curvature"):
    setattr(pieces, name, {k: getattr(whole, name)["g"][s] for k, s in corners.items()})
  pieces.noise = [{k: n["g"][s] for k, s in corners.items()} for n in whole.noise]

  def noise(step):  # the V of the four blocks, without their padding
    # Blocked: block j draws its own V from fold_in(fold_in(key, leaves + 1), j) (one leaf).
    spread = jax.random.fold_in(_key(step), 2)
    draws = [np.asarray(jax.random.normal(jax.random.fold_in(spread, j), (5, 5), jnp.float64))
             for j in range(4)]
    return [d[:shape[0], :shape[1]] for d, shape in zip(draws, pieces.shapes.values())]

  reference = run_torch(lambda p: reference_kron(p, noise, lr=LR, precond_dtype=torch.float64,
                                                 preconditioner_update_probability=1.0),
                        pieces)
  ours = run_optax(optax.chain(scale_by_kron(precondition_damped=True, block_size=5,
                                             preconditioner_update_probability=1.0,
                                             cache_preconditioner=cache),
                               optax.scale_by_learning_rate(LR)), whole,
                   extra_args=lambda step, params: {"key": _key(step)})
  reassembled = []
  for r in reference:
    g = np.zeros((9, 9))
    for k, s in corners.items():
      g[s] = r[k]
    reassembled.append({"g": g})
  assert_parity(ours, reassembled, label="kron blocks vs kron-torch on the blocks")


def _lower_bound(s):
  a = s / np.abs(s).max()
  x = a[:, np.argmax((a * a).sum(axis=0))] @ a
  return np.linalg.norm(a @ (x / np.linalg.norm(x))) * np.abs(s).max()


def _paper_kron(problem, lr, b1, precond_lr):
  """PSGD Kron in NumPy for matrices (two triangular factors) and vectors (one diagonal):
  momentum, debiasing, one whitening step of the factors per step from (V, m_hat + damping V),
  then the undamped m_hat preconditioned by Q1^T Q1 (.) Q2^T Q2 and its RMS clipped at 1.1."""
  damping = np.sqrt(np.finfo(np.float32).eps)
  params = {k: v.copy() for k, v in problem.init.items()}
  names = sorted(params)
  state = {k: dict(m=np.zeros_like(v),
                   q=[np.eye(d) for d in v.shape] if v.ndim == 2 else [np.ones(v.shape)])
           for k, v in params.items()}
  trajectory = []
  for step in range(problem.steps):
    grads = problem.grad(step, params)
    for k in names:
      g, s = grads[k], state[k]
      s["m"] = b1 * s["m"] + (1 - b1) * g
      m_hat = s["m"] / (1 - b1 ** (step + 1))
      v = _noise(step, [params[n].shape for n in names])[names.index(k)]
      h = m_hat + damping * np.abs(m_hat).mean() * v
      if g.ndim == 2:
        q1, q2 = s["q"]
        a = q1 @ h @ q2.T
        b = np.linalg.inv(q1).T @ v @ np.linalg.inv(q2)
        new = []
        for q, aa, bb in ((q1, a @ a.T, b @ b.T), (q2, a.T @ a, b.T @ b)):
          new.append(q - precond_lr * np.triu(aa - bb) @ q / _lower_bound(aa + bb))
        s["q"] = new
        q1, q2 = s["q"]
        u = q1.T @ q1 @ m_hat @ q2.T @ q2
      else:
        (q,) = s["q"]
        a, b = q * h, v / q
        s["q"] = [q - precond_lr * (a * a - b * b) * q / np.abs(a * a + b * b).max()]
        u = s["q"][0] ** 2 * m_hat
      u = u * min(1.0, 1.1 / (np.sqrt(np.mean(u * u)) + 1e-12))
      params[k] = params[k] - lr * u
    trajectory.append({k: v.copy() for k, v in params.items()})
  return trajectory


def test_paper_update_matches_numpy_transcription():
  problem = Problem(seed=12, shapes={"matrix": (6, 5), "vector": (4,)}, steps=STEPS)
  expected = _paper_kron(problem, LR, 0.9, 0.1)
  ours = run_optax(optax.chain(scale_by_kron(b1=0.9, preconditioner_update_probability=1.0),
                               optax.scale_by_learning_rate(LR)), problem,
                   extra_args=lambda step, params: {"key": _key(step)})
  assert_parity(ours, expected, label="kron paper (undamped m_hat preconditioned) vs NumPy")


def test_seed_key_state_and_dtypes():
  # The key passed to update is covered by the parity tests; here the seed's key in the state.
  tx = scale_by_kron(seed=3, state_storage="bfloat16")  # default schedule: p = 1 at first
  assert [f.shape for f in tx.init({"b": jnp.ones((3,))}).factors["b"]] == [(1, 3)]
  params = {"w": jnp.ones((6, 5), jnp.float32)}
  grads = {"w": jnp.cos(jnp.arange(30, dtype=jnp.float32)).reshape(6, 5)}
  with pytest.raises(ValueError, match="key"):
    scale_by_kron().update(grads, scale_by_kron().init(params), params)
  state = tx.init(params)
  assert isinstance(state, KronState) and state.mu["w"].dtype == jnp.bfloat16
  assert [f.shape for f in state.factors["w"]] == [(1, 6, 6), (1, 5, 5)]
  step = jax.jit(tx.update)
  u1, s1 = step(grads, state, params)
  u1_again, _ = step(grads, state, params)
  np.testing.assert_array_equal(u1["w"], u1_again["w"])  # same seed and count: same draw
  _, s2 = step(grads, s1, params)
  assert not np.allclose(s1.factors["w"][0], state.factors["w"][0])
  assert not np.allclose(s2.factors["w"][0], s1.factors["w"][0])
  assert np.allclose(np.tril(np.asarray(s2.factors["w"][0][0]), -1), 0.0)  # stays triangular
  assert int(s2.count) == 2 and int(s2.update_counter) == 0
  assert u1["w"].dtype == jnp.float32


def test_cached_preconditioner_is_the_factors_product_and_is_counted():
  # cache_preconditioner keeps P_i = Q_i^T Q_i of each triangular factor (none for diagonal
  # ones), refreshed with the factors; the default state has none; optimkit.memory counts them.
  from optimkit import memory

  params = {"w": jnp.ones((6, 5), jnp.float32), "b": jnp.ones((7,), jnp.float32)}
  grads = {"w": jnp.cos(jnp.arange(30, dtype=jnp.float32)).reshape(6, 5),
           "b": jnp.sin(jnp.arange(7, dtype=jnp.float32))}
  plain = scale_by_kron(seed=0, preconditioner_update_probability=0.5)
  cached = scale_by_kron(seed=0, preconditioner_update_probability=0.5,
                         cache_preconditioner=True)
  assert jax.tree.leaves(plain.init(params).preconditioners) == []
  state = cached.init(params)
  assert [p.shape for p in state.preconditioners["w"]] == [(1, 6, 6), (1, 5, 5)]
  assert state.preconditioners["b"] == ()
  assert memory.state_bytes(cached, params) - memory.state_bytes(plain, params) == 4 * (36 + 25)
  step = jax.jit(cached.update)
  for _ in range(4):  # updates on every 2nd step: P read back on the others
    before = state
    _, state = step(grads, state, params)
    for q, p in zip(state.factors["w"], state.preconditioners["w"]):
      np.testing.assert_allclose(p, jnp.swapaxes(q, 1, 2) @ q, rtol=1e-6, atol=1e-7)
    if int(state.update_counter):  # no update this step: the stored P unchanged
      np.testing.assert_array_equal(state.preconditioners["w"][0],
                                    before.preconditioners["w"][0])
  small = scale_by_kron(seed=0, cache_preconditioner=True, preconditioner_storage="bfloat16")
  state = small.init(params)
  assert all(p.dtype == jnp.bfloat16 for p in state.preconditioners["w"])
  updates, state = jax.jit(small.update)(grads, state, params)
  assert all(p.dtype == jnp.bfloat16 for p in state.preconditioners["w"])
  assert np.all(np.isfinite(updates["w"]))


def test_bad_arguments_name_themselves():
  for kwargs, name in [(dict(b1=1.0), "b1"), (dict(preconditioner_update_probability=0.0),
                                               "preconditioner_update_probability"),
                       (dict(memory_save_mode="half"), "memory_save_mode"),
                       (dict(precond_lr=0.0), "precond_lr"),
                       (dict(precond_init_scale=-1.0), "precond_init_scale")]:
    with pytest.raises(ValueError, match=name):
      scale_by_kron(**kwargs)
