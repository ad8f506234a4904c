"""StableAdamW, Adan, RAdam, Ranger, Adam-mini and AdamS against their references, 120 steps
in float64 (tests for transforms/update_clipping, adan, rectified, lookahead, adam_mini, adams)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import optax
import torch

import optimkit
from tests.parity import Problem, assert_parity, run_optax, run_torch


def test_stable_adamw_matches_optimi():
  import optimi

  # Large noise early makes the update clipping (RMS > 1) actually trigger.
  problem = Problem(seed=11, noise=3.0)
  ours = run_optax(optimkit.stable_adamw(0.01, weight_decay=0.05), problem)
  ref = run_torch(lambda p: optimi.StableAdamW(p, lr=0.01, weight_decay=0.05, foreach=False),
                  problem)
  assert_parity(ours, ref, label="stable_adamw vs optimi")
  plain = run_optax(optimkit.adamw(0.01, b2=0.99, eps=1e-6, weight_decay=0.05), problem)
  assert np.max(np.abs(plain[-1]["matrix"] - ours[-1]["matrix"])) > 1e-6  # clipping mattered


def test_adan_matches_optimi():
  import optimi

  problem = Problem(seed=12)
  ours = run_optax(optimkit.adan(0.01, eps=1e-6, weight_decay=0.02), problem)
  ref = run_torch(lambda p: optimi.Adan(p, lr=0.01, eps=1e-6, weight_decay=0.02, foreach=False),
                  problem)
  assert_parity(ours, ref, label="adan vs optimi")


def test_radam_matches_torch_and_optax():
  problem = Problem(seed=13)
  ours = run_optax(optimkit.radam(0.01, eps=1e-10), problem)
  ref = run_torch(lambda p: torch.optim.RAdam(p, lr=0.01, eps=1e-10), problem)
  assert_parity(ours, ref, label="radam vs torch")
  assert_parity(ours, run_optax(optax.radam(0.01, eps=1e-10), problem), label="radam vs optax")


def test_radam_decoupled_decay_matches_torch():
  problem = Problem(seed=13)
  ours = run_optax(optimkit.radam(0.01, eps=1e-10, weight_decay=0.1), problem)
  ref = run_torch(lambda p: torch.optim.RAdam(p, lr=0.01, eps=1e-10, weight_decay=0.1,
                                              decoupled_weight_decay=True), problem)
  assert_parity(ours, ref, label="radam decoupled wd vs torch")


def test_ranger_matches_optimi():
  import optimi

  problem = Problem(seed=14)
  ours = run_optax(optimkit.ranger(0.01, weight_decay=0.01), problem)
  ref = run_torch(lambda p: optimi.Ranger(p, lr=0.01, weight_decay=0.01, foreach=False), problem)
  assert_parity(ours, ref, label="ranger vs optimi")


# Adam-mini: a transformer-shaped dict in PyTorch's layout, names the package recognises.
DIM, HEADS, VOCAB = 8, 2, 11
MINI_SHAPES = {
    "embed_tokens.weight": (VOCAB, DIM),
    "layers.0.self_attn.q_proj.weight": (DIM, DIM),
    "layers.0.self_attn.k_proj.weight": (DIM, DIM),
    "layers.0.self_attn.v_proj.weight": (DIM, DIM),
    "layers.0.self_attn.o_proj.weight": (DIM, DIM),
    "layers.0.mlp.up_proj.weight": (3 * DIM, DIM),
    "layers.0.mlp.up_proj.bias": (3 * DIM,),
    "layers.0.norm.weight": (DIM,),
    "lm_head.weight": (VOCAB, DIM),
}
# The same blocks expressed as axes for optimkit (torch layout: rows are output neurons).
MINI_BLOCKS = {
    "embed_tokens.weight": (1,), "layers.0.self_attn.v_proj.weight": (1,),
    "layers.0.self_attn.o_proj.weight": (1,), "layers.0.mlp.up_proj.weight": (1,),
    "layers.0.mlp.up_proj.bias": (), "layers.0.norm.weight": (0,), "lm_head.weight": (1,),
}


def _per_head(x):  # q/k: one block per head of DIM * DIM / HEADS elements
  return x.reshape(HEADS, -1)


def test_adam_mini_matches_authors_package():
  from adam_mini import Adam_mini

  problem = Problem(seed=15, shapes=MINI_SHAPES)
  # q/k per head: view each (DIM, DIM) leaf as (HEADS, DIM*DIM/HEADS) for both sides.
  shapes = dict(MINI_SHAPES)
  for name in ("layers.0.self_attn.q_proj.weight", "layers.0.self_attn.k_proj.weight"):
    shapes[name] = (HEADS, DIM * DIM // HEADS)
  blocks = dict(MINI_BLOCKS, **{"layers.0.self_attn.q_proj.weight": (1,),
                                "layers.0.self_attn.k_proj.weight": (1,)})

  class Reshaped(Problem):
    pass

  reshaped = Reshaped(seed=15, shapes=shapes)
  for attribute in ("init", "target", "curvature"):
    setattr(reshaped, attribute, {k: v.reshape(shapes[k]) for k, v in getattr(problem, attribute).items()})
  reshaped.noise = [{k: v.reshape(shapes[k]) for k, v in n.items()} for n in problem.noise]
  # The package never decays norms and biases.
  no_decay = {k: not ("norm" in k or "bias" in k) for k in shapes}
  ours = run_optax(optimkit.adam_mini(0.01, weight_decay=0.1, blocks=blocks, mask=no_decay),
                   reshaped)
  ours = [{k: v.reshape(MINI_SHAPES[k]) for k, v in step.items()} for step in ours]

  tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
             for k, v in problem.init.items()}
  optimizer = Adam_mini(list(tensors.items()), lr=0.01, weight_decay=0.1, dim=DIM,
                        n_heads=HEADS, verbose=False)
  ref = []
  for step in range(problem.steps):
    grads = problem.grad(step, {k: t.detach().numpy() for k, t in tensors.items()})
    for k, t in tensors.items():
      t.grad = torch.tensor(grads[k], dtype=torch.float64)
    optimizer.step()
    ref.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
  assert_parity(ours, ref, label="adam_mini vs adam-mini package")


def test_adam_mini_default_blocks_on_a_flax_transformer_shrink_state():
  from flax import nnx

  from optimkit.comparison.model import ModelConfig, TinyTransformer

  model = TinyTransformer(ModelConfig(d_model=32, num_heads=4, num_layers=1), nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  blocks = optimkit.adam_mini_blocks(params)
  layer = blocks["blocks"][0]
  assert layer["attention"]["query"]["kernel"] == (0, 2)  # per head
  assert layer["attention"]["value"]["kernel"] == (0,)  # per output neuron
  assert layer["attention"]["out"]["kernel"] == (0, 1)
  assert layer["mlp_in"]["kernel"] == (0,) and layer["mlp_in"]["bias"] == ()
  assert blocks["embedding"]["embedding"] == (1,)  # per token
  assert layer["attention_norm"]["scale"] == (0,)  # one per tensor
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  state = optimkit.scale_by_adam_mini().init(params)
  adam_state = optimkit.scale_by_adam().init(params)
  ratio = count(state.nu) / count(adam_state.nu)
  print(f"MEASURE adam_mini second-moment elements / Adam's = {ratio:.4f}")
  assert ratio < 0.25  # the biases and per-row/-neuron/-head values left of a full v


@pytest.mark.parametrize("b1", [0.9, 0.3])  # 0.9: one pass (m_{t-1} recovered); 0.3: read twice
def test_adams_matches_equations_and_keeps_one_moment(b1):
  problem = Problem(seed=16)
  ours = run_optax(optimkit.adams(0.01, b1=b1, b2=0.95, eps=1e-8, weight_decay=0.1), problem)
  # NumPy transcription of the paper's update (v from the previous momentum, no bias correction).
  params = {k: v.copy() for k, v in problem.init.items()}
  momentum = {k: np.zeros_like(v) for k, v in params.items()}
  ref = []
  for step in range(problem.steps):
    grads = problem.grad(step, params)
    for k in params:
      v = 0.95 * momentum[k] ** 2 + 0.05 * grads[k] ** 2
      momentum[k] = b1 * momentum[k] + (1 - b1) * grads[k]
      params[k] = params[k] - 0.01 * (momentum[k] / (np.sqrt(v) + 1e-8) + 0.1 * params[k])
    ref.append({k: v.copy() for k, v in params.items()})
  assert_parity(ours, ref, label=f"adams(b1={b1}) vs equations")
  params0 = {k: jnp.asarray(v) for k, v in problem.init.items()}
  size = lambda tx: optimkit.memory.state_bytes(tx, params0)
  assert abs(size(optimkit.scale_by_adams()) - size(optimkit.scale_by_momentum())) == 0


def test_adam_mini_blocks_see_through_nnx_variables():
  from flax import nnx

  from optimkit.comparison.model import ModelConfig, TinyTransformer

  model = TinyTransformer(ModelConfig(d_model=32, num_heads=4, num_layers=1), nnx.Rngs(0))
  with_variables = optimkit.adam_mini_blocks(nnx.state(model, nnx.Param))
  assert with_variables["blocks"][0]["attention"]["out"]["kernel"].get_value() == (0, 1)
  mask = optimkit.weight_decay_mask(nnx.state(model, nnx.Param))
  assert mask["final_norm"]["scale"].get_value() is False
  assert mask["blocks"][0]["mlp_in"]["kernel"].get_value() is True
