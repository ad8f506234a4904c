"""Optimizers that treat weight matrices as matrices: Muon."""

from __future__ import annotations

from typing import Any

import jax
import optax
from optax.contrib import MuonDimensionNumbers

from optimkit.optimizers._declare import (
  Mask,
  ScalarOrSchedule,
  mu_storage_of,
  optimizer,
  storage_of,
  structural,
)
from optimkit.state.storage import StorageLike
from optimkit.transforms.moments import scale_by_adam
from optimkit.transforms.muon import JORDAN_COEFFS, muon_labels, rank2_labels, scale_by_muon

_BETA = dict(low=0.0, high=1.0, high_inclusive=False)
_NON_NEGATIVE = dict(low=0.0)


def _labels(muon_mask: Mask, dimension_numbers: Any):
  """params -> a tree of "muon" / "adam" labels, from the first of: `muon_mask` (bools or
  labels, a tree - prefixes allowed - or a callable), optax's dimension numbers (None entries
  are AdamW's), the default rule `muon_labels`."""

  def to_label(entry):
    if isinstance(entry, str):
      if entry not in ("muon", "adam"):
        raise ValueError(f"muon: muon_mask labels must be 'muon' or 'adam', got {entry!r}")
      return entry
    return "muon" if entry else "adam"

  def labels(params):
    if muon_mask is not None:
      given = muon_mask(params) if callable(muon_mask) else muon_mask
      return jax.tree.map(lambda entry, sub: jax.tree.map(lambda _: to_label(entry), sub),
                          given, params, is_leaf=lambda x: x is None or isinstance(x, str))
    if dimension_numbers is not None:
      given = dimension_numbers(params) if callable(dimension_numbers) else dimension_numbers
      is_dims = lambda x: x is None or isinstance(x, (MuonDimensionNumbers, optax.MaskedNode))
      return jax.tree.map(
          lambda dims, sub: jax.tree.map(lambda _: "adam" if dims is None else "muon", sub),
          given, params, is_leaf=is_dims)
    return muon_labels(params)

  return labels


@optimizer(
    family="matrix", typical_lr=0.02, optax="contrib.muon",
    reference="muon-optimizer 0.1.0 (SingleDeviceMuon, SingleDeviceMuonWithAuxAdam); "
              "optax.contrib.muon",
    optax_mode=dict(eps=1e-8, bias_correction=True, ns_dtype=None, adam_b2=0.999, adam_eps=None,
                    adam_nesterov=None, adam_learning_rate=None, muon_mask=rank2_labels),
    ranges={"ns_steps": dict(low=1, integer=True), "beta": _BETA,
            "consistent_rms": _NON_NEGATIVE, "adam_b1": _BETA, "adam_b2": _BETA,
            "adam_eps_root": _NON_NEGATIVE, "adam_weight_decay": _NON_NEGATIVE,
            "adam_learning_rate": dict(low=0.0), "adam_eps": _NON_NEGATIVE})
def muon(
    learning_rate: ScalarOrSchedule = 0.02,
    ns_coeffs: Any = JORDAN_COEFFS,
    ns_steps: int = structural(5),
    beta: float = 0.95,
    eps: float = 1e-7,
    weight_decay: float = 0.0,
    weight_decay_mask: Mask = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: float = 0.9,
    adam_b2: float = 0.95,
    adam_eps_root: float = 0.0,
    adam_weight_decay: float = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = 3e-4,
    muon_weight_dimension_numbers: Any = None,
    consistent_rms: float | None = None,
    adam_eps: float | None = 1e-10,
    adam_nesterov: bool | None = False,
    bias_correction: bool = False,
    ns_dtype: Any = "bfloat16",
    muon_mask: Mask = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Muon (Jordan et al. 2024) for hidden weight matrices, AdamW for every other parameter, as
  the authors' `SingleDeviceMuonWithAuxAdam`.

  Muon part (see `optimkit.transforms.muon` for the equations), each matrix W:
      m_t = beta m_{t-1} + (1 - beta) g_t;   u_t = (1 - beta) g_t + beta m_t   (Nesterov)
      W_t = W_{t-1} - lr (s NewtonSchulz(u_t) + weight_decay W_{t-1}),
      s = sqrt(max(1, fan_out / fan_in))   (or consistent_rms sqrt(max(fan_in, fan_out)))
  AdamW part, every other leaf w:
      w_t = w_{t-1} - adam_lr (m_hat / (sqrt(v_hat + adam_eps_root) + adam_eps)
                               + adam_weight_decay w_{t-1})

  Which leaves are Muon's: `muon_mask` if given, else optax's `muon_weight_dimension_numbers`
  (None entries are AdamW's), else `optimkit.transforms.muon.muon_labels`: rank >= 2 kernels of
  a Flax NNX / Linen tree that are not embeddings or the output head (in other trees, rank >= 2
  leaves not named like biases, norms, embeddings or heads). Flax attention kernels (in, heads,
  head_dim) are one (in, heads head_dim) matrix; rank-3 kernels are stacks of matrices (scanned
  layers, experts); rank-4 are convolutions, flattened.

  On a mesh (`jax.set_mesh`), each matrix's Newton-Schulz runs once, on one device
  (`optimkit.map_matrices`), instead of GSPMD's collectives in every iteration.

  Args (optax.contrib.muon's, in its order):
    learning_rate: Muon's learning rate, a float >= 0 or a schedule. Default 0.02 (the
      authors'; optax has no default).
    ns_coeffs: Newton-Schulz coefficients: (a, b, c) for every step, one row per step, or a
      preset "standard", "dion", "polar_express". Default Jordan's (3.4445, -4.7750, 2.0315).
    ns_steps: Newton-Schulz iterations, >= 1 (structural). Default 5.
    beta: Muon's momentum, [0, 1). Default 0.95.
    eps: added to the norm before Newton-Schulz, >= 0. Default 1e-7 (authors; optax 1e-8, which
      optax also uses as Adam's eps).
    weight_decay: Muon's decoupled weight decay (times the learning rate), >= 0. Default 0.
    weight_decay_mask: which Muon leaves decay (tree of bools or callable). Default all.
    mu_dtype: optax's dtype of both first moments (bfloat16: optimkit's bfloat16 storage).
    nesterov: Nesterov momentum for Muon. Default True.
    adaptive: optax's dual-norm scaling of the Muon update. Default False.
    preconditioning: "frobenius" (default), "spectral", "aol", "schatten" (optax's options).
    adam_b1, adam_b2: AdamW's moment decays, [0, 1). Defaults 0.9 and 0.95 (the authors';
      optax's b2 is 0.999).
    adam_eps_root: AdamW's eps inside the root, >= 0. Default 0.
    adam_weight_decay: AdamW's decoupled weight decay, >= 0. Default 0.
    adam_learning_rate: AdamW's learning rate (float >= 0 or schedule). Default 3e-4 (the
      authors'); None: the Muon learning rate, as optax.
    muon_weight_dimension_numbers: optax's tree (or callable) of `MuonDimensionNumbers` saying
      which axes form each matrix; None entries route leaves to AdamW. Default: the Flax rule.
    consistent_rms: None for the authors' shape scale, 0.2 for Moonlight's (Liu et al. 2025).
  Args (optimkit's):
    adam_eps: AdamW's eps, >= 0. Default 1e-10 (the authors'); None: `eps`, as optax.
    adam_nesterov: Nesterov first moment for AdamW. Default False (the authors'); None:
      `nesterov`, as optax.
    bias_correction: debias Muon's momentum as optax does. Default False (the authors').
    ns_dtype: dtype of the Newton-Schulz iteration. Default "bfloat16" (the authors'); None:
      the momentum's (at least float32), as optax.
    muon_mask: which leaves Muon takes: a tree (prefixes allowed) or callable params -> tree of
      bools (True: Muon) or of "muon" / "adam" labels. Overrides the rules above.
    state_storage: storage of every moment ("float32", "bfloat16", "8bit", "4bit"): Muon's
      momentum is 4 bytes per parameter in float32, about 1 in 8-bit.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.muon(0.02, weight_decay=0.1, adam_learning_rate=3e-4)
    >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)   # Flax NNX

  Equals muon-optimizer's `SingleDeviceMuonWithAuxAdam` (Muon group: lr, momentum=beta,
  weight_decay; Adam group: adam_learning_rate, (adam_b1, adam_b2), adam_eps,
  adam_weight_decay). `optax.contrib.muon`'s trajectory with `eps=1e-8, bias_correction=True,
  ns_dtype=None, adam_b2=0.999, adam_eps=None, adam_nesterov=None, adam_learning_rate=None,
  muon_mask=optimkit.transforms.muon.rank2_labels` (optax bias-corrects the momentum and runs
  Newton-Schulz in float32; its Adam shares Muon's eps, Nesterov flag and learning rate; it
  routes every rank-2 leaf, and only those, to Muon). Optax runs every row of a coefficient
  schedule whatever `ns_steps`; here `ns_steps` rows run (pass ns_steps=len(rows)).

  References:
    Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024.
    Liu et al., "Muon is Scalable for LLM Training", arXiv:2502.16982, 2025.
  """
  muon_storage = storage_of("muon", "mu_dtype", mu_dtype, state_storage)
  adam_mu_storage = mu_storage_of("muon", mu_dtype)
  matrices = optax.chain(
      scale_by_muon(ns_coeffs, ns_steps, beta, eps, nesterov=nesterov, ns_dtype=ns_dtype,
                    consistent_rms=consistent_rms, bias_correction=bias_correction,
                    adaptive=adaptive, preconditioning=preconditioning,
                    weight_dimension_numbers=muon_weight_dimension_numbers,
                    state_storage=muon_storage),
      optax.add_decayed_weights(weight_decay, weight_decay_mask),
      optax.scale_by_learning_rate(learning_rate))
  others = optax.chain(
      scale_by_adam(adam_b1, adam_b2, eps if adam_eps is None else adam_eps, adam_eps_root,
                    nesterov=nesterov if adam_nesterov is None else adam_nesterov,
                    state_storage=state_storage, mu_storage=adam_mu_storage),
      optax.add_decayed_weights(adam_weight_decay),
      optax.scale_by_learning_rate(learning_rate if adam_learning_rate is None
                                   else adam_learning_rate))
  return optax.partition({"muon": matrices, "adam": others},
                         _labels(muon_mask, muon_weight_dimension_numbers))
