"""Optimizer state per device at real scale (issue 22): published model shapes (Llama-2-7B,
Llama-2-13B, Mistral-7B, GPT-2-XL, bfloat16 params), FSDP (8 x 1), tensor-parallel (1 x 8) and
FSDP x TP (2 x 4) meshes, with and without ZeRO-1 over the data axis. Each row is one device's
state bytes over an even share of the total (total / 8): 1.00 is perfect sharding. Nothing is
allocated: shapes from `jax.eval_shape`, layouts from `optimkit.sharding.state_specs`.

    python benchmarks/scale_memory.py [--trees llama-2-7b,...] [--optimizers adamw,adamw:8bit,...]

Target (issue 22): <= 1.05 for every storage on every tree and mesh.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import optimkit
from benchmarks.common import machine
from optimkit import memory

MESHES = {"fsdp 8x1": {"data": 8, "model": 1}, "tp 1x8": {"data": 1, "model": 8},
          "fsdp x tp 2x4": {"data": 2, "model": 4}}
DEFAULT_OPTIMIZERS = ("adamw,adamw:bfloat16,adamw:8bit,adamw:4bit,lion,lion:8bit,adafactor,"
                      "adam_mini,muon,muon:8bit,galore_adamw")


def rows(params, names: list[str]):
  specs = {mesh: memory.fsdp_tp_specs_for(params, shape) for mesh, shape in MESHES.items()}
  for spec in names:
    name, _, storage = spec.partition(":")
    tx = optimkit.registry.get(name).make(**({"state_storage": storage} if storage else {}))
    total = memory.state_bytes(tx, params)
    ratios = []
    for mesh, shape in MESHES.items():
      even = total / math.prod(shape.values())
      for zero in (None, "data") if shape["data"] > 1 else (None,):
        ratios.append(memory.state_bytes_per_device(tx, params, specs[mesh], shape, zero) / even)
    yield spec, total / memory.param_count(params), ratios


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--trees", default=",".join(memory.MODEL_SHAPES))
  parser.add_argument("--optimizers", default=DEFAULT_OPTIMIZERS)
  args = parser.parse_args()
  print(machine())
  columns = ["fsdp 8x1", "fsdp 8x1 +ZeRO-1", "tp 1x8", "2x4", "2x4 +ZeRO-1"]
  for tree in args.trees.split(","):
    start = time.perf_counter()
    params = memory.model_shaped_params(tree)
    print(f"\n### {tree} ({memory.param_count(params) / 1e9:.2f}B params): one device's state / "
          f"(total / 8)\n")
    print("| optimizer | B/param | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for spec, per_param, ratios in rows(params, args.optimizers.split(",")):
      print(f"| {spec} | {per_param:.3f} | " + " | ".join(f"{r:.3f}" for r in ratios) + " |",
            flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
  main()
