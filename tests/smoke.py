"""The smoke subset: does optimkit, as installed, work end to end?

    python tests/smoke.py [--installed]

Run as a script, so that it imports whatever `optimkit` the interpreter finds (`tests/` is put
on the path, not the project root). `.ci/run` runs it in two environments besides the full
suite: one built with exactly the declared minimum dependency versions, and a clean one with
the built wheel installed; `--installed` fails if `optimkit` was imported from a source tree
instead of an installation. The checks, cheap enough for both environments (a few minutes):

  1. import optimkit and report the versions it runs on;
  2. one jitted step of every optimizer in `optimkit.registry`, each from its defaults, on a
     small softmax regression (every extra argument an optimizer may need - `key`, `loss_fn`,
     `logits_fn` - is passed); the step must return finite updates of the params' structure,
     shapes and dtypes and a state of the initial state's, and lower the loss after 3 steps;
  3. `optimkit compare --quick --steps 12` into a temporary directory, with its reports;
  4. a checkpoint round trip (save / restore and save_step / restore_latest) of a quantized
     AdamW state, restored leaf for leaf.

It prints one line per check and ends with the plain 'N passed, N failed' line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import traceback
from importlib import metadata
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _optimizers() -> dict[str, Callable[[], optax.GradientTransformation]]:
  """Every optimizer in the registry, by name, as a constructor taking no argument."""
  from optimkit import registry

  return {name: registry.get(name).make for name in registry.names()}


def _problem() -> tuple[dict, Callable, Callable]:
  """Softmax regression: 32 points in 8 dimensions, 5 classes. Returns params, loss_fn and
  logits_fn (Sophia-G's estimator differentiates the logits)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(32, 8)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 5, size=32))
  params = {"w": jnp.asarray(0.1 * rng.normal(size=(8, 5)), jnp.float32),
            "b": jnp.zeros((5,), jnp.float32)}

  def logits_fn(p):
    return x @ p["w"] + p["b"]

  def loss_fn(p):
    return optax.softmax_cross_entropy_with_integer_labels(logits_fn(p), labels).mean()

  return params, loss_fn, logits_fn


def _signature(tree: Any) -> tuple:
  return jax.tree.structure(tree), [(leaf.shape, jnp.dtype(leaf.dtype))
                                     for leaf in jax.tree.leaves(tree)]


def check_optimizer(name: str, make: Callable[[], optax.GradientTransformation]) -> str:
  params, loss_fn, logits_fn = _problem()
  tx = optax.with_extra_args_support(make())
  state = tx.init(params)

  @jax.jit
  def step(params, state, key):
    grads = jax.grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params, key=key, loss_fn=loss_fn,
                               logits_fn=logits_fn)
    return updates, state

  start_loss = float(loss_fn(params))
  for i in range(3):
    updates, new_state = step(params, state, jax.random.key(i))
    if _signature(updates) != _signature(params):
      raise AssertionError(f"{name}: updates {_signature(updates)} do not match the params")
    if _signature(new_state) != _signature(state):
      raise AssertionError(f"{name}: the state changed structure, shapes or dtypes in a step")
    for leaf in jax.tree.leaves((updates, new_state)):
      if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(leaf))):
        raise AssertionError(f"{name}: non-finite values after step {i}")
    params, state = optax.apply_updates(params, updates), new_state
  end_loss = float(loss_fn(params))
  if not end_loss < start_loss:
    raise AssertionError(f"{name}: loss {start_loss:.6f} -> {end_loss:.6f} after 3 steps")
  return f"loss {start_loss:.4f} -> {end_loss:.4f}"


def check_compare(directory: str) -> str:
  from optimkit.cli import main

  out = os.path.join(directory, "compare")
  code = main(["compare", "--quick", "--steps", "12", "--out", out])
  if code != 0:
    raise AssertionError(f"optimkit compare exited {code}")
  from optimkit.comparison import DEFAULT_OPTIMIZERS

  with open(os.path.join(out, "compare.json")) as f:
    rows = json.load(f)["results"]
  names = [row["optimizer"] for row in rows]
  if names != list(DEFAULT_OPTIMIZERS):
    raise AssertionError(f"compare.json has results for {names}, not {list(DEFAULT_OPTIMIZERS)}")
  losses = [row["final_loss"] for row in rows]
  if not all(np.isfinite(loss) for loss in losses):
    raise AssertionError(f"non-finite final losses {losses}")
  if not os.path.getsize(os.path.join(out, "compare.md")):
    raise AssertionError("compare.md is empty")
  return f"{len(rows)} optimizers, reports in {out}"


def check_checkpoint(directory: str) -> str:
  import optimkit

  params, loss_fn, _ = _problem()
  params = {**params, "big": jnp.arange(512, dtype=jnp.float32).reshape(16, 32) / 512}
  tx = optimkit.adamw(1e-3, state_storage="8bit")
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  for _ in range(2):
    updates, state = jax.jit(tx.update)(grads, state, params)
    params = optax.apply_updates(params, updates)

  def same(a: Any, b: Any, what: str) -> None:
    if jax.tree.structure(a) != jax.tree.structure(b):
      raise AssertionError(f"{what}: restored structure {jax.tree.structure(b)} differs")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      if x.dtype != y.dtype or not np.array_equal(np.asarray(x), np.asarray(y)):
        raise AssertionError(f"{what}: a restored leaf differs")

  restored = optimkit.checkpoint.restore(
      optimkit.checkpoint.save(os.path.join(directory, "state"), state), tx, params)
  same(state, restored, "save/restore")
  optimkit.checkpoint.save_step(os.path.join(directory, "run"), 7, params, state)
  found = optimkit.checkpoint.restore_latest(os.path.join(directory, "run"), tx, params)
  if found is None or found[0] != 7:
    raise AssertionError(f"restore_latest found {found and found[0]}, expected step 7")
  same(params, found[1], "restore_latest params")
  same(state, found[2], "restore_latest state")
  return f"{len(jax.tree.leaves(state))} state leaves"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--installed", action="store_true",
                      help="fail unless optimkit is imported from an installation")
  parser.add_argument("--checks", default="steps,checkpoint,compare",
                      help="which checks to run (default: steps,checkpoint,compare)")
  args = parser.parse_args(argv)

  import optimkit

  location = os.path.dirname(optimkit.__file__)
  print(f"smoke: optimkit {optimkit.__version__} from {location}")
  print(f"smoke: Python {sys.version.split()[0]}, {_versions()}")
  passed, failed = 0, 0

  def run(label: str, check: Callable[..., str], *check_args: Any) -> None:
    nonlocal passed, failed
    start = time.perf_counter()
    try:
      detail = check(*check_args)
    except Exception:  # a smoke run reports every failing check, not only the first
      failed += 1
      print(f"FAIL {label} ({time.perf_counter() - start:.1f}s)")
      traceback.print_exc(file=sys.stdout)
    else:
      passed += 1
      print(f"ok   {label} ({time.perf_counter() - start:.1f}s): {detail}")
    sys.stdout.flush()

  if args.installed:
    run("installed, not a source tree", _check_installed, location)
  checks = set(args.checks.split(","))
  if "steps" in checks:
    optimizers = _optimizers()
    if not optimizers:
      failed += 1
      print("FAIL no optimizers found")
    for name, make in optimizers.items():
      run(f"step {name}", check_optimizer, name, make)
  with tempfile.TemporaryDirectory(prefix="optimkit-smoke-") as directory:
    if "checkpoint" in checks:
      run("checkpoint round trip", check_checkpoint, directory)
    if "compare" in checks:
      run("optimkit compare --quick --steps 12", check_compare, directory)
  print(f"{passed} passed, {failed} failed")
  return 1 if failed else 0


def _versions() -> str:
  """The installed versions of optimkit's declared dependencies (a fixed list from a source tree
  that is not installed)."""
  try:
    names = [re.split(r"[ <>=!~;\[]", r, maxsplit=1)[0] for r in metadata.requires("optimkit") or ()
             if "extra ==" not in r]
  except metadata.PackageNotFoundError:
    names = ["jax", "jaxlib", "optax", "flax", "numpy", "orbax-checkpoint"]
  found = []
  for name in names:
    try:
      found.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
      found.append(f"{name} (not installed)")
  return ", ".join(found)


def _check_installed(location: str) -> str:
  # An installed package lives in site-packages and has no pyproject.toml beside it.
  root = os.path.dirname(location)
  if os.path.basename(root) != "site-packages" or os.path.exists(
      os.path.join(root, "pyproject.toml")):
    raise AssertionError(f"optimkit was imported from {location}, not from an installation")
  if not os.path.exists(os.path.join(location, "py.typed")):
    raise AssertionError(f"the installation at {location} has no py.typed marker")
  return location


if __name__ == "__main__":
  sys.exit(main())
