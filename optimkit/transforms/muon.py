"""Muon: momentum orthogonalized by Newton-Schulz (Jordan et al. 2024), as its authors wrote it.

For each weight matrix G (its gradient), with step t = 1, 2, ...:

    m_t = lerp(m_{t-1}, g_t, 1 - beta) = beta m_{t-1} + (1 - beta) g_t      (m_0 = 0)
    u_t = lerp(g_t, m_t, beta) = (1 - beta) g_t + beta m_t     (Nesterov, the default)
    u_t = m_t                                                   (nesterov=False)
    X_0 = u_t / (||u_t||_F + eps)                 in ns_dtype (bfloat16, as the authors)
    X_k = a_k X + b_k (X X^T) X + c_k (X X^T)^2 X,  k = 1 .. ns_steps   (X wide: rows <= cols)
    d_t = sqrt(max(1, fan_out / fan_in)) X_{ns_steps}        (the authors' shape scale)
    d_t = consistent_rms sqrt(max(fan_in, fan_out)) X_{ns_steps}   (Moonlight's, 0.2)

The quintic coefficients (a, b, c) = (3.4445, -4.7750, 2.0315) are the same at every step by
default; a schedule gives one row per step (Polar Express, Amsel et al. 2025). The iteration
does not converge to the polar factor U V^T of u = U S V^T but to U S' V^T with S' roughly in
[0.7, 1.2]: steep at zero, so five steps suffice, which the authors found does not hurt training.

Which axes form the matrix: dimension numbers (optax's `MuonDimensionNumbers`: reduction = input
axes, output axes; every other axis is a batch of independent matrices). Flax kernels are
(in, out), so the default for a leaf of rank r is: input r-2, output r-1, leading axes batch
(scanned layers, experts); rank 4 is a convolution kernel (kh, kw, in, out) flattened to
(kh kw in, out), as the authors flatten 4-D weights; Flax attention kernels (`query`, `key`,
`value`: (in, heads, head_dim); `out`: (heads, head_dim, out), scanned or not) are the matrices
(in, heads head_dim) and (heads head_dim, out).

The per-matrix work goes through `optimkit.matrix_work.map_matrices`: on a mesh, each matrix is
orthogonalized once, on one device, instead of by GSPMD's collectives inside every iteration.

References:
  Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
    https://kellerjordan.github.io/posts/muon/ ; package `muon-optimizer` 0.1.0 (`muon.py`),
    against which tests/transforms/test_muon.py checks this module to 1e-6 over 200 steps.
  Liu et al., "Muon is Scalable for LLM Training" (Moonlight), arXiv:2502.16982, 2025.
  Amsel et al., "The Polar Express: Optimal Matrix Sign Methods and Their Application to the
    Muon Algorithm", arXiv:2505.16932, 2025.

Where it differs:
  - from optax (`optax.contrib.scale_by_muon`): optax bias-corrects the momentum (and its
    Nesterov term: beta m_t / (1 - beta^(t+1)) + (1 - beta) g_t / (1 - beta^t)), runs
    Newton-Schulz in the momentum's dtype, with eps 1e-8, and applies the shape scale in a
    separate transform. `bias_correction=True, ns_dtype=None, eps=1e-8` is optax's trajectory
    (tested); `adaptive` and `preconditioning` are optax's options, computed as optax does.
    Optax runs all rows of a coefficient schedule whatever `ns_steps`; here `ns_steps` rows run
    and the last row repeats when the schedule is shorter (Polar Express's convention).
  - from the authors' code: the Frobenius norm and the sums around the matmuls are computed
    in float32 (theirs round each bfloat16 op). Their 4-D (convolution) branch cannot run in
    `muon-optimizer` 0.1.0: it flattens the update to (out, in kh kw) and never reshapes it
    back, so `p.add_` fails with a shape error; here the flattened matrix is orthogonalized and
    reshaped back, scaled by its own sqrt(max(1, fan_out / fan_in)) (their line would read the
    kernel's kh / kw, a quirk of `grad.size(-2) / grad.size(-1)`; both are 1 for any conv
    with out <= in kh kw). The tests compare a conv kernel against their optimizer on the
    flattened weight.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax.contrib import MuonDimensionNumbers

from optimkit import _checks
from optimkit.matrix_work import map_matrices
from optimkit.state.storage import StorageLike, resolve
from optimkit.transforms._util import bias_correction as _debias
from optimkit.transforms._util import increment, path_keys

#: Jordan's quintic coefficients, the same at every step (optax's "standard").
JORDAN_COEFFS = (3.4445, -4.7750, 2.0315)

#: Dion's per-step schedule (Ahn et al. 2025), optax's "dion" preset.
DION_COEFFS = ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377), (3.7418, -5.5913, 2.3037),
               (2.8769, -3.1427, 1.2046), (2.8366, -3.0525, 1.2012))

# Polar Express's degree-5 schedule (Amsel et al. 2025, their published code), each polynomial
# but the last shrunk by the authors' safety factor 1.01 (p(x / 1.01)), which keeps bfloat16
# rounding from pushing singular values past the interval the polynomials were fitted on.
_POLAR_EXPRESS_RAW = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
POLAR_EXPRESS_COEFFS = tuple((a / 1.01, b / 1.01 ** 3, c / 1.01 ** 5)
                             for a, b, c in _POLAR_EXPRESS_RAW[:-1]) + _POLAR_EXPRESS_RAW[-1:]

#: Named schedules for `ns_coeffs`, with the factor the Frobenius norm is multiplied by before
#: dividing (Polar Express normalizes by 1.01 ||X||_F).
NS_PRESETS = {"standard": (JORDAN_COEFFS, 1.0), "dion": (DION_COEFFS, 1.0),
              "polar_express": (POLAR_EXPRESS_COEFFS, 1.01)}

PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")

# Flax attention projections (nnx.MultiHeadAttention, linen.MultiHeadDotProductAttention).
_ATTENTION_INPUTS = frozenset({"query", "key", "value"})
_ATTENTION_OUTPUT = "out"

DimensionNumbers = Any  # None | MuonDimensionNumbers | tree of them | callable tree -> tree


class MuonState(NamedTuple):
  """State of `scale_by_muon`: the step count and the momentum, shaped like the params."""

  count: jax.Array  # type: ignore[assignment]  # the field shadows tuple.count, as in optax
  momentum: Any


# ----------------------------------------------------------------------------------------------
# One matrix.


def newton_schulz(x: jax.Array, coeffs: Any = JORDAN_COEFFS, steps: int = 5, eps: Any = 1e-7,
                  *, preconditioning: str = "frobenius", norm_margin: float = 1.0) -> jax.Array:
  """Orthogonalize one matrix with `steps` quintic Newton-Schulz iterations, in x's dtype.

      X <- X / (norm_margin ||X||_F + eps)                 (preconditioning="frobenius")
      X <- a_k X + (b_k A + c_k A A) X,  A = X X^T,   k = 1 .. steps

  A tall matrix is transposed first (A is then the smaller Gram matrix) and back at the end,
  which gives the same result: the iteration commutes with transposition. `coeffs` is one
  (a, b, c) or a sequence of rows, row k at step k and the last row repeated past its end.
  Norms and the sums around the matmuls are computed in at least float32. "spectral" divides by
  the largest singular value instead; "aol" and "schatten" (optax's) rescale inside the first step
  instead of dividing.
  """
  transposed = x.shape[-2] > x.shape[-1]
  if transposed:
    x = x.T
  dtype = x.dtype
  # Matmuls run in x's dtype; the sums around them in at least float32, so that in bfloat16
  # the coefficients keep their value (as PyTorch's bfloat16 ops do with Python scalars)
  # instead of being rounded to 8 bits, which would change the polynomial.
  wide = jnp.promote_types(dtype, jnp.float32)
  rows = jnp.asarray(coeffs)
  rows = (rows if rows.ndim == 2 else rows[None]).astype(wide)
  if preconditioning == "frobenius":
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(wide))))
    x = (x.astype(wide) / (norm_margin * norm + eps)).astype(dtype)
  elif preconditioning == "spectral":
    norm = jnp.linalg.norm(x.astype(wide), ord=2)
    x = (x.astype(wide) / (norm_margin * norm + eps)).astype(dtype)
  for step in range(steps):
    a, b, c = rows[min(step, rows.shape[0] - 1)]
    gram = x @ x.T
    if step == 0 and preconditioning == "aol":
      # Almost-orthogonal-layer rescaling (Boissin et al. 2025): rows scaled by the inverse
      # root of the Gram matrix's absolute row sums.
      wide_gram = gram.astype(wide)
      scale = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(wide_gram), axis=-1), eps))[:, None]
      x = (x.astype(wide) * scale).astype(dtype)
      gram = (wide_gram * scale * scale.T).astype(dtype)
    elif step == 0 and preconditioning == "schatten":
      # Divide by the Schatten-4 norm, ||A||_F^(1/2) (Grishina et al. 2025).
      wide_gram = gram.astype(wide)
      scale = jax.lax.rsqrt(jnp.maximum(jnp.linalg.norm(wide_gram), eps))
      x = (x.astype(wide) * scale).astype(dtype)
      gram = (wide_gram * scale ** 2).astype(dtype)
    poly = (b * gram.astype(wide) + c * (gram @ gram).astype(wide)).astype(dtype)
    x = (a * x.astype(wide) + (poly @ x).astype(wide)).astype(dtype)
  return x.T if transposed else x


# ----------------------------------------------------------------------------------------------
# Which axes form the matrix.


def default_dimension_numbers(path: tuple, leaf: Any) -> MuonDimensionNumbers | None:
  """The matrix view of a Flax parameter (see the module docstring); None below rank 2."""
  ndim = len(leaf.shape)
  if ndim < 2:
    return None
  names = path_keys(path)
  module = names[-2].lower() if len(names) >= 2 else ""
  if ndim >= 3 and names and names[-1] == "kernel":
    if module in _ATTENTION_INPUTS:  # (..., in, heads, head_dim)
      return MuonDimensionNumbers(ndim - 3, (ndim - 2, ndim - 1))
    if module == _ATTENTION_OUTPUT:  # (..., heads, head_dim, out)
      return MuonDimensionNumbers((ndim - 3, ndim - 2), ndim - 1)
  if ndim == 4:  # a 2-D convolution kernel (kh, kw, in, out)
    return MuonDimensionNumbers((0, 1, 2), 3)
  return MuonDimensionNumbers(ndim - 2, ndim - 1)


def _is_dims_leaf(x: Any) -> bool:
  return x is None or isinstance(x, (MuonDimensionNumbers, optax.MaskedNode))


def resolve_dimension_numbers(option: DimensionNumbers, tree: Any) -> list:
  """Dimension numbers for each leaf of `tree`, in leaf order.

  `option` is None (the default rule), one `MuonDimensionNumbers` for every leaf, a tree of
  them matched to `tree` by path (a prefix tree applies an entry to the subtree below it; None
  entries take the default rule), or a callable tree -> such a tree.
  """
  if callable(option) and not isinstance(option, MuonDimensionNumbers):
    option = option(tree)
  items = jax.tree_util.tree_flatten_with_path(tree)[0]
  if option is None or isinstance(option, MuonDimensionNumbers):
    return [option or default_dimension_numbers(path, leaf) for path, leaf in items]
  table = {tuple(path_keys(path)): dims for path, dims in
           jax.tree_util.tree_flatten_with_path(option, is_leaf=_is_dims_leaf)[0]}
  chosen = []
  for path, leaf in items:
    names = tuple(path_keys(path))
    dims = next((table[names[:k]] for k in range(len(names), -1, -1) if names[:k] in table),
                None)
    if not isinstance(dims, MuonDimensionNumbers):
      dims = default_dimension_numbers(path, leaf)
    chosen.append(dims)
  return chosen


class MatrixView(NamedTuple):
  """How a leaf is read as a batch of (fan_in, fan_out) matrices and written back."""

  perm: tuple[int, ...]
  shape: tuple[int, ...]  # (count, fan_in, fan_out), or (fan_in, fan_out) with no batch axes
  fan_in: int
  fan_out: int

  def to_matrices(self, x: jax.Array) -> jax.Array:
    if self.perm != tuple(range(x.ndim)):
      x = x.transpose(self.perm)
    return x.reshape(self.shape)

  def from_matrices(self, x: jax.Array, leaf_shape: tuple[int, ...]) -> jax.Array:
    permuted = tuple(leaf_shape[axis] for axis in self.perm)
    x = x.reshape(permuted)
    if self.perm != tuple(range(len(leaf_shape))):
      x = x.transpose(np.argsort(self.perm))
    return x


def matrix_view(shape: tuple[int, ...], dims: MuonDimensionNumbers, where: str = "") -> MatrixView:
  """The `MatrixView` of a leaf of `shape` under `dims`; ValueError for invalid axes."""
  ndim = len(shape)
  if ndim < 2:
    raise ValueError(f"scale_by_muon: parameter {where or '<root>'} has shape {shape}; Muon "
                     f"orthogonalizes matrices (rank >= 2): route it to another optimizer (in "
                     f"`optimkit.muon` the default rule sends it to AdamW)")

  def axes(entry, name):
    entry = (entry,) if isinstance(entry, int) else tuple(entry)
    if not entry or any(not -ndim <= axis < ndim for axis in entry):
      raise ValueError(f"scale_by_muon: {name} {entry} of {dims} is not a non-empty set of axes "
                       f"of parameter {where or '<root>'} with shape {shape}")
    return tuple(axis % ndim for axis in entry)

  reduction = axes(dims.reduction_axis, "reduction_axis")
  output = axes(dims.output_axis, "output_axis")
  if set(reduction) & set(output) or len(set(reduction)) < len(reduction) or \
      len(set(output)) < len(output):
    raise ValueError(f"scale_by_muon: {dims} for parameter {where or '<root>'} with shape "
                     f"{shape} names an axis twice; reduction and output axes must be disjoint")
  batch = tuple(axis for axis in range(ndim) if axis not in reduction + output)
  fan_in = math.prod(shape[axis] for axis in reduction)
  fan_out = math.prod(shape[axis] for axis in output)
  flat = (fan_in, fan_out) if not batch else (math.prod(shape[a] for a in batch), fan_in, fan_out)
  return MatrixView(batch + reduction + output, flat, fan_in, fan_out)


def _views(option: DimensionNumbers, tree: Any) -> list[MatrixView]:
  items = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [matrix_view(tuple(leaf.shape), dims, jax.tree_util.keystr(path))
          for (path, leaf), dims in zip(items, resolve_dimension_numbers(option, tree))]


# ----------------------------------------------------------------------------------------------
# The transform.


def _coefficients(ns_coeffs: Any) -> tuple[Any, float]:
  """(coefficient rows, norm margin) from a preset name, one (a, b, c) or a schedule."""
  if isinstance(ns_coeffs, str):
    if ns_coeffs not in NS_PRESETS:
      raise ValueError(f"scale_by_muon: ns_coeffs {ns_coeffs!r} is not a preset; use one of "
                       f"{sorted(NS_PRESETS)}, an (a, b, c) triple or a sequence of them")
    return NS_PRESETS[ns_coeffs]
  shape = np.shape(ns_coeffs)
  if len(shape) not in (1, 2) or shape[-1] != 3 or (len(shape) == 2 and shape[0] < 1):
    raise ValueError(f"scale_by_muon: ns_coeffs must be an (a, b, c) triple or a non-empty "
                     f"sequence of them (shape (3,) or (k, 3)), got shape {shape}")
  return ns_coeffs, 1.0


def scale_by_muon(
    ns_coeffs: Any = JORDAN_COEFFS,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-7,
    *,
    nesterov: bool = True,
    ns_dtype: Any = "bfloat16",
    consistent_rms: float | None = None,
    bias_correction: bool = False,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    weight_dimension_numbers: DimensionNumbers = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Muon's direction for hidden weight matrices (see the module docstring for the equations).

  Every leaf it sees must be a matrix or a batch of them (rank >= 2); `optimkit.muon` routes
  the other leaves (and embeddings, output heads) to AdamW.

  Args:
    ns_coeffs: Newton-Schulz coefficients: one (a, b, c) for every step (default Jordan's
      (3.4445, -4.7750, 2.0315)), a sequence of rows (one per step; the last repeats), or a
      preset name: "standard", "dion", "polar_express" (which also normalizes by 1.01 ||X||_F,
      as its authors do).
    ns_steps: Newton-Schulz iterations, an integer >= 1. Default 5.
    beta: momentum decay, [0, 1). Default 0.95 (the authors' `momentum`).
    eps: added to the norm before dividing, >= 0. Default 1e-7 (the authors'; optax 1e-8).
    nesterov: orthogonalize (1 - beta) g + beta m instead of m. Default True.
    ns_dtype: dtype the iteration runs in. Default bfloat16, as the authors; None runs it in
      the momentum's dtype (the params' dtype, at least float32), as optax does.
    consistent_rms: None for the authors' scale sqrt(max(1, fan_out / fan_in)); a number k for
      Moonlight's k sqrt(max(fan_in, fan_out)), which gives updates of RMS about k (0.2 matches
      AdamW's).
    bias_correction: divide the momentum by 1 - beta^t as optax does (its Nesterov form too).
    adaptive: optax's option: scale the result by <u, O> (Bernstein et al. 2024).
    preconditioning: "frobenius" (default), "spectral", "aol" or "schatten", as in optax.
    weight_dimension_numbers: which axes form each matrix: None for the default rule, one
      `optax.contrib.MuonDimensionNumbers` for every leaf, a tree of them (by path; prefixes
      and None entries allowed) or a callable params -> tree.
    state_storage: how the momentum is stored (see `optimkit.state`). Default "float32".

  Returns:
    An `optax.GradientTransformation` whose updates are the scaled orthogonalized momenta (the
    learning rate and sign come later in the chain).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> from optimkit.transforms import scale_by_muon
    >>> tx = optax.chain(scale_by_muon(), optax.scale_by_learning_rate(0.02))
    >>> params = {"kernel": jnp.ones((4, 8))}
    >>> updates, state = tx.update({"kernel": jnp.eye(4, 8)}, tx.init(params))
  """
  owner = "scale_by_muon"
  _checks.check_beta(owner, "beta", beta)
  _checks.check_non_negative(owner, "eps", eps)
  _checks.check_int_at_least(owner, "ns_steps", ns_steps, 1)
  if consistent_rms is not None:
    _checks.check_non_negative(owner, "consistent_rms", consistent_rms)
  if preconditioning not in PRECONDITIONINGS:
    raise ValueError(f"{owner}: preconditioning must be one of {PRECONDITIONINGS}, got "
                     f"{preconditioning!r}")
  if ns_dtype is not None:
    try:
      ns_dtype = jnp.dtype(ns_dtype)
    except TypeError:
      raise ValueError(f"{owner}: ns_dtype must be a floating dtype or None, got "
                       f"{ns_dtype!r}") from None
    if not jnp.issubdtype(ns_dtype, jnp.floating):
      raise ValueError(f"{owner}: ns_dtype must be a floating dtype or None, got {ns_dtype}")
  coeffs, norm_margin = _coefficients(ns_coeffs)
  store = resolve(state_storage)

  def init_fn(params):
    _views(weight_dimension_numbers, params)  # ValueError now for leaves Muon cannot take
    return MuonState(count=jnp.zeros([], jnp.int32),
                     momentum=store.init(params, signed=True))

  def update_fn(updates, state, params=None):
    del params
    count = increment(state.count)
    complement = 1.0 - beta
    previous = store.read(state.momentum, updates, signed=True)
    momentum = jax.tree.map(lambda g, m: m + complement * (g - m), updates, previous)
    if bias_correction:
      # optax: both terms of the Nesterov sum debiased, the momentum one a step ahead.
      now, ahead = _debias(beta, count), _debias(beta, increment(count))
      if nesterov:
        directions = jax.tree.map(lambda g, m: beta * m / ahead + complement * g / now,
                                  updates, momentum)
      else:
        directions = jax.tree.map(lambda m: m / now, momentum)
    elif nesterov:
      directions = jax.tree.map(lambda g, m: g + beta * (m - g), updates, momentum)
    else:
      directions = momentum

    leaves, treedef = jax.tree.flatten(directions)
    views = _views(weight_dimension_numbers, directions)
    matrices = []
    for leaf, view in zip(leaves, views):
      matrix = view.to_matrices(leaf)
      if ns_dtype is not None:
        matrix = matrix.astype(ns_dtype)
      if view.fan_in > view.fan_out:  # wide, so that same-shape groups meet in one stack
        matrix = jnp.swapaxes(matrix, -1, -2)
      matrices.append(matrix)

    def orthogonalize(matrix):
      return newton_schulz(matrix, coeffs, ns_steps, eps, preconditioning=preconditioning,
                           norm_margin=norm_margin)

    results = map_matrices(orthogonalize, matrices)
    outputs = []
    for leaf, view, result, grad in zip(leaves, views, results, jax.tree.leaves(updates)):
      if view.fan_in > view.fan_out:
        result = jnp.swapaxes(result, -1, -2)
      result = view.from_matrices(result, leaf.shape).astype(leaf.dtype)
      if adaptive:
        result = jnp.sum(leaf * result) * result
      if consistent_rms is None:
        # (an empty matrix has nothing to scale; fan_in may be 0)
        result = result * math.sqrt(max(1.0, view.fan_out / max(view.fan_in, 1)))
      else:
        result = result * (consistent_rms * math.sqrt(max(view.fan_in, view.fan_out)))
      outputs.append(result.astype(grad.dtype))
    return jax.tree.unflatten(treedef, outputs), MuonState(
        count=count, momentum=store.write(momentum, updates, state.momentum, signed=True))

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# Which parameters Muon takes (used by `optimkit.muon`).

#: Path names of embeddings (any name containing "embed" counts too) and of output heads:
#: matrices that Muon's authors keep on AdamW.
EMBEDDING_NAMES = frozenset({"wte", "wpe", "positions", "position", "pos", "tokens"})
HEAD_NAMES = frozenset({"lm_head", "head", "output_head", "unembed", "unembedding", "classifier",
                        "logits", "readout"})
#: Leaf names of biases and normalization parameters.
NON_MATRIX_NAMES = frozenset({"bias", "b", "scale", "gamma", "beta", "embedding_norm"})


def muon_labels(params: Any) -> Any:
  """"muon" for hidden weight matrices, "adam" for the rest, by path and shape.

  A leaf goes to Muon when it has rank >= 2, no name on its path is an embedding's (contains
  "embed", or is one of `EMBEDDING_NAMES`) or an output head's (`HEAD_NAMES`), and - in a Flax
  tree, recognized by having leaves named "kernel" - it is a kernel (Linear, Conv, Einsum,
  attention projections; `nnx.Embed`'s "embedding", norms' "scale", biases and free-standing
  `nnx.Param`s such as learned positions are not); in other trees it is not named like a bias or
  a norm scale (`NON_MATRIX_NAMES`). Everything else goes to AdamW, as the authors prescribe:
  embeddings, the output head (tied or not), norms, biases, scalars.
  """
  items = jax.tree_util.tree_flatten_with_path(params)[0]
  flax_tree = any(path_keys(path)[-1:] == ["kernel"] for path, _ in items)

  def label(path, leaf):
    names = [name.lower() for name in path_keys(path)]
    if len(getattr(leaf, "shape", ())) < 2:
      return "adam"
    if any("embed" in name or name in EMBEDDING_NAMES or name in HEAD_NAMES for name in names):
      return "adam"
    if flax_tree:
      return "muon" if names[-1:] == ["kernel"] else "adam"
    return "adam" if names[-1:] and names[-1] in NON_MATRIX_NAMES else "muon"

  return jax.tree_util.tree_map_with_path(label, params)


def rank2_labels(params: Any) -> Any:
  """`optax.contrib.muon`'s rule: every rank-2 leaf to Muon, every other leaf to AdamW."""
  return jax.tree.map(lambda leaf: "muon" if len(leaf.shape) == 2 else "adam", params)
