"""The reference model: a small decoder-only transformer (pre-norm, causal self-attention,
GELU MLP, learned positions, tied input/output embedding) in Flax NNX, over bytes."""

from __future__ import annotations

from dataclasses import dataclass

import jax
from flax import nnx


@dataclass(frozen=True)
class ModelConfig:
  vocab_size: int = 256
  seq_len: int = 64
  d_model: int = 128
  num_heads: int = 4
  num_layers: int = 2
  mlp_ratio: int = 4


class Block(nnx.Module):
  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    d = config.d_model
    self.attention_norm = nnx.LayerNorm(d, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(
        num_heads=config.num_heads, in_features=d, qkv_features=d, decode=False, rngs=rngs)
    self.mlp_norm = nnx.LayerNorm(d, rngs=rngs)
    self.mlp_in = nnx.Linear(d, config.mlp_ratio * d, rngs=rngs)
    self.mlp_out = nnx.Linear(config.mlp_ratio * d, d, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    x = x + self.attention(self.attention_norm(x), mask=mask)
    return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(x))))


class TinyTransformer(nnx.Module):
  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    self.config = config
    self.embedding = nnx.Embed(config.vocab_size, config.d_model, rngs=rngs)
    self.positions = nnx.Param(
        0.02 * jax.random.normal(rngs.params(), (config.seq_len, config.d_model)))
    self.blocks = nnx.List([Block(config, rngs) for _ in range(config.num_layers)])
    self.final_norm = nnx.LayerNorm(config.d_model, rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    length = tokens.shape[-1]
    x = self.embedding(tokens) + self.positions[...][:length]
    mask = nnx.make_causal_mask(tokens)
    for block in self.blocks:
      x = block(x, mask)
    return self.embedding.attend(self.final_norm(x))  # logits [..., vocab]
