"""SOAP against pytorch-optimizer 4.1.0 `SOAP` (the authors' code, ported), float64, 100 steps,
on a matrix, a matrix with one dim above max_precondition_dim, a rank-3 leaf (merged and not),
a rotated vector and a scalar (plain-Adam vectors in the paper test); blocking, padding
included, against the reference run on the blocks as separate parameters; the paper's
Algorithms 3-4 (no eigenvalue ordering before the QR) against a NumPy transcription."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from optimkit.transforms.soap import SOAPState, scale_by_soap
from tests.parity import Problem, assert_parity, run_optax, run_torch

STEPS, LR = 100, 0.01


@pytest.fixture
def reference_soap(monkeypatch):
  """pytorch-optimizer's SOAP with its QR run in the working dtype: the reference casts the
  power-iteration product to float32 before `torch.linalg.qr` (its float32 stands for
  "at least float32" on GPUs); the proxy module hands it float64 under that name."""
  from pytorch_optimizer.optimizer import soap as module

  proxy = types.SimpleNamespace(**{name: getattr(torch, name) for name in dir(torch)
                                   if not name.startswith("__")})
  proxy.float32 = torch.float64
  monkeypatch.setattr(module, "torch", proxy)
  threads = torch.get_num_threads()
  # One intra-op thread: on a shared 2-core machine torch's pool spins (3x the CPU time).
  torch.set_num_threads(1)
  yield module.SOAP
  torch.set_num_threads(threads)


CASES = {
    "rotated_1d": (dict(b1=0.95, b2=0.95, precondition_frequency=3, max_precondition_dim=10,
                        precondition_1d=True),
                   {"matrix": (6, 5), "wide": (4, 12), "stack": (3, 4, 5), "vector": (2,)}),
    # The reference cannot merge a vector (it reshapes a fully merged leaf to [1]): no vector.
    # (2, 3, 6) merges into (6, 6).
    "merged": (dict(b1=0.9, b2=0.99, shampoo_beta=0.8, eps=1e-6, precondition_frequency=4,
                    max_precondition_dim=6, merge_dims=True, correct_bias=False,
                    normalize_gradient=True),
               {"matrix": (6, 5), "stack": (2, 3, 6), "scalar": ()}),
}
# Every shape here gives first statistics G G^T with at most a one-dimensional null space (so a
# rotated vector has 2 entries: g g^T has rank 1). The
# first basis is an eigendecomposition of that rank-deficient matrix: a larger null space has no
# preferred basis, each eigh solver returns its own, and since Adam's v is per coordinate, the
# trajectories then differ (by ~1e-2 for a (12, 5) unfolding), in the reference as much as here.


def _torch_kwargs(options):
  options = dict(options)
  b1, b2 = options.pop("b1"), options.pop("b2")
  return dict(betas=(b1, b2), weight_decay=0.0, **options)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_pytorch_optimizer_soap(case, reference_soap):
  options, shapes = CASES[case]
  problem = Problem(seed=6, shapes=shapes, steps=STEPS)
  reference = run_torch(lambda p: reference_soap(p, lr=LR, **_torch_kwargs(options)), problem)
  ours = run_optax(optax.chain(scale_by_soap(**options), optax.scale_by_learning_rate(LR)),
                   problem)
  assert_parity(ours, reference, label=f"soap/{case} vs pytorch-optimizer")


def test_blocks_are_separate_soap_parameters(reference_soap):
  # Blocking (9, 9) by 5 gives a 2 x 2 grid of blocks with their own bases, the last row and
  # column padded: exactly SOAP on the four slices as separate parameters (the gradient is
  # elementwise).
  slices = {"g": {f"g{i}{j}": (slice(5 * i, 5 * i + 5), slice(5 * j, 5 * j + 5))
                  for i in (0, 1) for j in (0, 1)}}
  whole = Problem(seed=7, shapes={"g": (9, 9)}, steps=STEPS)
  pieces = Problem(seed=7, shapes={"w0": (1,)}, steps=STEPS)
  pick = lambda tree: {piece: tree[leaf][s] for leaf, parts in slices.items()
                       for piece, s in parts.items()}
  pieces.shapes = {k: v.shape for k, v in pick(whole.init).items()}
  for name in ("init", "target", "curvature"):
    setattr(pieces, name, pick(getattr(whole, name)))
  pieces.noise = [pick(n) for n in whole.noise]
  options = dict(b1=0.9, b2=0.95, precondition_frequency=2)
  reference = run_torch(lambda p: reference_soap(p, lr=LR, **_torch_kwargs(options)), pieces)
  ours = run_optax(optax.chain(scale_by_soap(**options, block_size=5),
                               optax.scale_by_learning_rate(LR)), whole)
  reassembled = []
  for r in reference:
    out = {leaf: np.zeros(whole.shapes[leaf]) for leaf in slices}
    for leaf, parts in slices.items():
      for piece, s in parts.items():
        out[leaf][s] = r[piece]
    reassembled.append(out)
  assert_parity(ours, reassembled, label="soap blocks vs pytorch-optimizer on the blocks")


def _paper_soap(problem, lr, b1, b2, eps, frequency):
  """Algorithms 3 and 4 of Vyas et al. 2024 in NumPy, for matrices (vectors: plain Adam):
  M, V, L, R per layer; the first gradient sets L, R and Q = eigh (descending) without an
  update, as the authors' code initializes; then each step rotates, runs Adam in the
  eigenbasis, rotates back, updates L and R, and every f steps Q <- QR(P Q) (Algorithm 4, no
  reordering)."""
  params = {k: v.copy() for k, v in problem.init.items()}
  state = {k: dict(m=np.zeros_like(v), v=np.zeros_like(v)) for k, v in params.items()}
  trajectory = []
  for step in range(problem.steps):
    grads = problem.grad(step, params)
    for k, g in grads.items():
      s = state[k]
      if g.ndim == 2 and step == 0:
        s["L"], s["R"] = (1 - b2) * g @ g.T, (1 - b2) * g.T @ g
        s["QL"] = np.linalg.eigh(s["L"])[1][:, ::-1]
        s["QR"] = np.linalg.eigh(s["R"])[1][:, ::-1]
        continue
      if step == 0:
        continue
      t = step
      if g.ndim == 2:
        rotate = lambda x: s["QL"].T @ x @ s["QR"]
        back = lambda x: s["QL"] @ x @ s["QR"].T
      else:
        rotate = back = lambda x: x
      s["m"] = b1 * s["m"] + (1 - b1) * g
      s["v"] = b2 * s["v"] + (1 - b2) * rotate(g) ** 2
      n = back(rotate(s["m"]) / (np.sqrt(s["v"]) + eps))
      params[k] = params[k] - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * n
      if g.ndim == 2:
        s["L"] = b2 * s["L"] + (1 - b2) * g @ g.T
        s["R"] = b2 * s["R"] + (1 - b2) * g.T @ g
        if t % frequency == 0:
          s["QL"] = np.linalg.qr(s["L"] @ s["QL"])[0]
          s["QR"] = np.linalg.qr(s["R"] @ s["QR"])[0]
    trajectory.append({k: v.copy() for k, v in params.items()})
  return trajectory


def test_paper_version_matches_numpy_transcription():
  problem = Problem(seed=9, shapes={"matrix": (6, 5), "small": (4, 3), "vector": (4,)},
                    steps=STEPS)
  b1, b2, eps, frequency = 0.9, 0.95, 1e-8, 5
  expected = _paper_soap(problem, LR, b1, b2, eps, frequency)
  ours = run_optax(optax.chain(
      scale_by_soap(b1=b1, b2=b2, eps=eps, precondition_frequency=frequency,
                    sort_eigenbasis=False),
      optax.scale_by_learning_rate(LR)), problem)
  assert_parity(ours, expected, label="soap paper (unsorted QR) vs NumPy Algorithms 3-4")


def test_state_shapes_storage_and_one_compile():
  params = {"w": jnp.ones((12, 6), jnp.float32), "b": jnp.ones((5,), jnp.float32)}
  tx = scale_by_soap(block_size=8, state_storage="bfloat16", precondition_frequency=2)
  state = tx.init(params)
  assert isinstance(state, SOAPState)
  assert state.mu["w"].shape == (12, 6) and state.nu["w"].dtype == jnp.bfloat16
  assert [s.shape for s in state.statistics["w"]] == [(2, 8, 8), (2, 6, 6)]
  assert state.bases["b"] == ()
  grads = jax.tree.map(lambda p: jnp.sin(jnp.arange(p.size, dtype=p.dtype)).reshape(p.shape),
                       params)
  step = jax.jit(tx.update)
  updates, state = step(grads, state, params)
  assert all(not np.any(u) for u in jax.tree.leaves(updates))  # first step: bases only
  # Padding of the second row-block stays its own identity block in the basis.
  basis = np.asarray(state.bases["w"][0][1])
  np.testing.assert_allclose(basis[4:, 4:], np.eye(4))
  assert not np.any(basis[:4, 4:]) and not np.any(basis[4:, :4])
  for _ in range(3):
    updates, state = step(grads, state, params)
  assert step._cache_size() == 1
  assert all(u.dtype == jnp.float32 and np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))


def test_bad_arguments_name_themselves():
  for kwargs, name in [(dict(b1=1.0), "b1"), (dict(shampoo_beta=-0.1), "shampoo_beta"),
                       (dict(precondition_frequency=0), "precondition_frequency"),
                       (dict(block_size=0), "block_size"), (dict(eps=-1.0), "eps")]:
    with pytest.raises(ValueError, match=name):
      scale_by_soap(**kwargs)
