"""Where the time of an 8-bit or 4-bit AdamW step goes on this CPU: each pass such a step needs,
timed alone and in place (donated, so no pass pays for fresh memory), against the float32
AdamW step, in one run.

    python benchmarks/quantized_passes.py [--format 8bit|4bit] [--params 25e6] [--repeats 7]

A quantized moment cannot be written until the scales of its new values are known (the absmax
of each block; at 4 bits, the row and column maxima of the second moment), so the step XLA
compiles is at least these passes over the leaf:

    scales    per moment: decode, update, reduce the new moment to its scales, either fused
              (XLA's own reduction loop) or with the new moment written out in float32 and
              reduced by XLA's reduction library, which only reads materialised arrays;
    encode    per moment: decode, update, divide by the new scales, encode into the codes;
    update    decode both moments, Adam's direction, weight decay, write the params.

XLA's CPU backend emits one loop per output array (the float32 AdamW step is three loops: new m,
new v, new params) and never merges a reduction with its consumers, so each pass is a loop of
its own. Each is timed alone (inside the step XLA may share work between them, e.g. by writing
a decoded moment out once), beside the float32 step and the actual quantized step, with the
cost of one params-sized float32 output written fresh rather than in place (what a kernel that
returned the update as a new array, instead of writing the params, would pay on this machine).

The last table does not depend on how the passes are scheduled: mapping float32 values already
in memory to their nearest codes, in place, with nothing else (no decode, update, scales or
params), against a plain in-place byte pass, and summed over the two moments of the format.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Callable, NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import optimkit  # noqa: E402
from benchmarks.common import machine, time_in_place, time_step  # noqa: E402
from optimkit.state import quantized as q  # noqa: E402
from optimkit.state.storage import Blockwise8BitStorage, FourBitStorage  # noqa: E402

B1, B2, EPS, LR, WEIGHT_DECAY = 0.9, 0.999, 1e-8, 1e-3, 1e-2
ENCODERS_OF = {"8bit": ("8-bit signed dynamic map", "8-bit unsigned dynamic map"),
               "4bit": ("4-bit signed dynamic map", "4-bit zero-free linear map")}


class Moment(NamedTuple):
  """One stored moment of a format: its initial stored value and how to read it, compute its
  new scales (the reduction) and write its codes given those scales (the encode)."""

  stored: Any
  read: Callable[[Any], jax.Array]
  scales: Callable[[jax.Array], Any]
  encode: Callable[[jax.Array, Any], jax.Array]


def blockwise_moment(value: jax.Array, table: Any, block: int, packed: bool) -> Moment:
  shape = value.shape
  layout = q.block_layout(shape, block)
  return Moment(
      stored=q.quantize_blockwise(value, table, block, packed),
      read=lambda stored: q.dequantize_blockwise(stored, table, shape, block, packed),
      scales=lambda new: q.block_scales(new, layout),
      encode=lambda new, absmax: q.encode_blocks(new, absmax, layout, table, packed))


def rank1_moment(value: jax.Array, table: Any) -> Moment:
  def encode(new, maxima):
    return q._pack4(q._encode(new / q._rank1_normalizer(*maxima), table))
  return Moment(
      stored=q.quantize_rank1(value, table),
      read=lambda stored: q.dequantize_rank1(stored, table, value.shape),
      scales=lambda new: (jnp.max(new, axis=-1), jnp.max(new, axis=0)),
      encode=encode)


def formats(grads: jax.Array) -> dict[str, tuple[Moment, Moment]]:
  """(first moment, second moment) of AdamW in each format, with the maps and block sizes of
  optimkit's storage formats, holding the moments after a few steps."""
  first, second = 0.5 * grads, grads * grads
  eight, four = Blockwise8BitStorage(), FourBitStorage()
  return {
      "8bit": (blockwise_moment(first, eight.tables[True], eight.block_size, False),
               blockwise_moment(second, eight.tables[False], eight.block_size, False)),
      "4bit": (blockwise_moment(first, four.signed_table, four.block_size, True),
               rank1_moment(second, four.second_moment_table)),
  }


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--params", type=float, default=25e6)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--format", choices=("8bit", "4bit"), default="8bit")
  args = parser.parse_args()
  shape = (max(1, round(args.params / 4096)), 4096)
  keys = jax.random.split(jax.random.key(0), 3)
  params = 0.02 * jax.random.normal(keys[0], shape)
  grads = 0.01 * jax.random.normal(keys[1], shape)
  mu, nu = formats(grads)[args.format]

  def new_moments(mu_stored, nu_stored, g):
    return B1 * mu.read(mu_stored) + (1 - B1) * g, B2 * nu.read(nu_stored) + (1 - B2) * g * g

  def scales_pass(index, written_out):
    def reduce(mu_stored, nu_stored, g):
      new = new_moments(mu_stored, nu_stored, g)[index]
      if written_out:  # the barrier makes XLA write `new` out and reduce it with its library
        new = jax.lax.optimization_barrier(new)
      return (mu, nu)[index].scales(new)
    return reduce

  def encode_pass(index):
    moment = (mu, nu)[index]

    def encode(codes, mu_stored, nu_stored, g, new_scales):
      stored = (mu_stored, nu_stored)[index]._replace(codes=codes)
      both = (stored, nu_stored) if index == 0 else (mu_stored, stored)
      return moment.encode(new_moments(*both, g)[index], new_scales)
    return encode

  def update_pass(p, mu_stored, nu_stored, g):
    m, v = new_moments(mu_stored, nu_stored, g)
    direction = (m / (1 - B1)) / (jnp.sqrt(v / (1 - B2)) + EPS)
    return p - LR * (direction + WEIGHT_DECAY * p)

  r = args.repeats
  state = (mu.stored, nu.stored, grads)
  passes = {}
  for index, moment in enumerate(("first moment", "second moment")):
    new_scales = jax.jit(scales_pass(index, False))(*state)
    codes = state[index].codes
    passes[f"encode ({moment})"] = time_in_place(encode_pass(index),
                                                 (codes,) + state + (new_scales,), 0, r)
  passes["update (params)"] = time_in_place(update_pass, (params,) + state, 0, r)
  scales_passes = {
      f"scales ({moment}, {how})": time_in_place(scales_pass(index, written_out), state,
                                                 None, r)
      for index, moment in enumerate(("first moment", "second moment"))
      for how, written_out in (("fused reduction", False), ("moment written out", True))}
  tree = {"w": params}
  float32_step, _ = time_step(optimkit.adamw(LR, weight_decay=WEIGHT_DECAY), tree, {"w": grads},
                              r)
  quantized = optimkit.adamw_8bit if args.format == "8bit" else optimkit.adamw_4bit
  quantized_step, _ = time_step(quantized(LR, weight_decay=WEIGHT_DECAY), tree, {"w": grads}, r)

  blocked = (shape[0], shape[1] // 256, 256)
  signed, unsigned = q.dynamic_map(8, signed=True), q.dynamic_map(8, signed=False)
  values = jax.random.uniform(keys[2], blocked, minval=-1.0, maxval=1.0)
  zeros = jnp.zeros(blocked, jnp.uint8)
  encode_only = {
      "byte pass (codes + (x > 0))": lambda c, x: c + (x > 0).astype(jnp.uint8),
      "8-bit signed dynamic map": lambda c, x: c + q._encode(x, signed),
      "8-bit unsigned dynamic map": lambda c, x: c + q._encode(jnp.abs(x), unsigned),
      "4-bit signed dynamic map": lambda c, x: c + q._encode(x, q.dynamic_map(4, signed=True)),
      "4-bit zero-free linear map": lambda c, x: c + q._encode(jnp.abs(x),
                                                               q.linear_nonzero_map(4)),
  }
  n = math.prod(shape)
  print(f"# {args.format} AdamW passes: one {shape} float32 leaf ({n / 1e6:.1f}M params); "
        f"{machine()}")
  print("| pass (alone, in place) | ms | x float32 AdamW step |")
  print("|---|---|---|")
  for name, seconds in {**passes, **scales_passes}.items():
    print(f"| {name} | {1000 * seconds:.1f} | {seconds / float32_step:.2f} |")
  encode_and_update = sum(passes.values())
  print(f"| encode + update passes, summed (scales not counted) | "
        f"{1000 * encode_and_update:.1f} | {encode_and_update / float32_step:.2f} |")
  print(f"| float32 AdamW step | {1000 * float32_step:.1f} | 1.00 |")
  print(f"| adamw_{args.format} step | {1000 * quantized_step:.1f} | "
        f"{quantized_step / float32_step:.2f} |")
  scaled = lambda x: 2.0 * x
  print(f"| params-sized float32 output, in place | "
        f"{1000 * time_in_place(scaled, (params,), 0, r):.1f} | |")
  print(f"| params-sized float32 output, fresh (not donated) | "
        f"{1000 * time_in_place(scaled, (params,), None, r):.1f} | |")
  print()
  print("| encode only, float32 values -> codes, in place | ms | x float32 AdamW step |")
  print("|---|---|---|")
  encode_times = {}
  for name, fn in encode_only.items():
    encode_times[name] = time_in_place(fn, (zeros, values), 0, r)
    print(f"| {name} | {1000 * encode_times[name]:.1f} | "
          f"{encode_times[name] / float32_step:.2f} |")
  both = sum(encode_times[name] for name in ENCODERS_OF[args.format])
  print(f"| **both moments' maps of {args.format}, summed** | {1000 * both:.1f} | "
        f"{both / float32_step:.2f} |")


if __name__ == "__main__":
  main()
