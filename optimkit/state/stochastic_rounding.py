"""Stochastic rounding from float32 to bfloat16, deterministic and keyless.

bfloat16 is float32 with the low 16 bits dropped. Adding a uniform random 16-bit integer to the
float32 bit pattern before dropping them rounds up with probability equal to the dropped
fraction, so the rounding is unbiased: E[round(x)] = x. That is what keeps a bfloat16 quantity
that receives many updates smaller than its resolution from stalling.

The random bits come from a hash of the element's position and of the bit patterns of two
arrays the caller supplies (the new value and, typically, the gradient that produced it), so no
PRNG key has to be threaded through optimizer states, the result is identical on every device
and every run, and it changes from step to step because the inputs do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _mix(bits: jax.Array) -> jax.Array:
  """A 32-bit integer hash (the "lowbias32" finaliser): cheap, well mixed, vectorisable."""
  bits = bits ^ (bits >> 16)
  bits = bits * jnp.uint32(0x7FEB352D)
  bits = bits ^ (bits >> 15)
  bits = bits * jnp.uint32(0x846CA68B)
  return bits ^ (bits >> 16)


def _as_bits(x: jax.Array) -> jax.Array:
  return jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)


def random_bits(value: jax.Array, entropy: jax.Array) -> jax.Array:
  """Deterministic pseudo-random uint32 per element from position, value and entropy bits."""
  position = jnp.arange(value.size, dtype=jnp.uint32).reshape(value.shape)
  seed = _as_bits(value) ^ _mix(_as_bits(entropy) + jnp.uint32(0x9E3779B9))
  return _mix(seed ^ _mix(position))


def round_to_bfloat16(value: jax.Array, entropy: jax.Array) -> jax.Array:
  """Unbiased stochastic rounding of `value` to bfloat16 (non-finite values round to nearest)."""
  bits = _as_bits(value)
  noise = random_bits(value, entropy) & jnp.uint32(0xFFFF)
  rounded = jax.lax.bitcast_convert_type((bits + noise) & jnp.uint32(0xFFFF0000), jnp.float32)
  nearest = value.astype(jnp.float32)
  return jnp.where(jnp.isfinite(nearest) & jnp.isfinite(rounded), rounded, nearest).astype(
      jnp.bfloat16)
