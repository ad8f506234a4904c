"""The documentation site (docs/): it builds with warnings as errors, every Python sample in its
pages and the README runs (and prints what the page shows), and every public name of optimkit
is in the API reference.

The site is built once (`sphinx-build -W -b html docs <tmp>`, in a subprocess so that Sphinx's
imports and the docstring processing cannot leak into other tests). A ```python
block followed directly by a ```text block must print exactly that text; the blocks of one page
run in order in one namespace, as a reader would run them.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import os
import pathlib
import pkgutil
import re
import subprocess
import sys
import types

import jax
import pytest

import optimkit

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# The written pages (the API pages hold docstrings, which autodoc renders, and no samples).
PAGES = [DOCS / "index.md"] + sorted((DOCS / "guides").glob("*.md"))
# The README's samples use what the reader brings: a model, a loss, batches, sharded params, a
# checkpoint path. This is a small instance of each; the samples then run exactly as written.
READERS_OBJECTS = """
import tempfile
import optimkit
import jax, jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
mesh = jax.make_mesh((len(jax.devices()),), ("data",))
params = {"w": jax.device_put(jnp.ones((8, 4)), NamedSharding(mesh, P("data", None)))}
loss_fn = lambda p, batch: jnp.mean((batch @ p["w"]) ** 2)
batches = [jnp.full((2, 8), 0.1 * i) for i in range(2)]
validation_loss = lambda p: float(loss_fn(p, jnp.ones((2, 8))))
model = nnx.Linear(8, 4, rngs=nnx.Rngs(0))
_run = tempfile.mkdtemp()
path, directory, step = _run + "/state", _run + "/steps", 1
"""
BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.S | re.M)


def _build_site(out: pathlib.Path) -> None:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  result = subprocess.run(
      [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
       str(out)], capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
  assert result.returncode == 0, (f"sphinx-build -W failed:\n{result.stderr[-6000:]}"
                                  f"{result.stdout[-2000:]}")


def test_the_site(tmp_path):
  """One test, so that `pytest -n 2` builds the site once (a module fixture would build it in
  each worker that runs one of its tests)."""
  pytest.importorskip("sphinx", reason="the docs extra (pip install -e '.[docs]')")
  _build_site(tmp_path)
  for page in ("index.html", "api/index.html", "api/optimizers/index.html",
               "guides/from_optax.html", "guides/from_torch.html"):
    assert (tmp_path / page).is_file(), page
  _check_every_public_name_is_in_the_api_reference(tmp_path)
  _check_every_optimizer_has_a_page_from_the_registry(tmp_path)


def _samples(text: str) -> list[tuple[str, str | None]]:
  """(code, expected output or None) for each ```python block of a page."""
  blocks = [(m.group(1), m.group(2), m.start(), m.end()) for m in BLOCK.finditer(text)]
  samples = []
  for index, (language, body, _, end) in enumerate(blocks):
    if language != "python":
      continue
    expected = None
    if index + 1 < len(blocks):
      next_language, next_body, next_start, _ = blocks[index + 1]
      if next_language == "text" and not text[end:next_start].strip():
        expected = next_body
    samples.append((body, expected))
  return samples


def _run_page(path: pathlib.Path, prelude: str = "") -> int:
  # As a reader runs them: JAX's default float32 (the suite's conftest turns on float64).
  x64 = jax.config.read("jax_enable_x64")
  jax.config.update("jax_enable_x64", False)
  try:
    return _run_samples(path, prelude)
  finally:
    jax.config.update("jax_enable_x64", x64)


def _run_samples(path: pathlib.Path, prelude: str) -> int:
  namespace: dict = {"__name__": f"docs_sample_{path.stem}"}
  exec(prelude, namespace)
  ran = 0
  for number, (code, expected) in enumerate(_samples(path.read_text()), 1):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
      try:
        exec(compile(code, f"{path.relative_to(ROOT)} sample {number}", "exec"), namespace)
      except Exception as error:
        raise AssertionError(f"{path.relative_to(ROOT)}, sample {number} raised "
                             f"{type(error).__name__}: {error}\n{code}") from error
    if expected is not None:
      assert printed.getvalue().strip() == expected.strip(), (
          f"{path.relative_to(ROOT)}, sample {number} printed\n{printed.getvalue()}\n"
          f"but the page shows\n{expected}")
    ran += 1
  return ran


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_every_sample_on_the_page_runs(page):
  assert _run_page(page) >= 1, f"{page} shows no Python sample"


def test_the_readme_samples_run():
  assert _run_page(ROOT / "README.md", prelude=READERS_OBJECTS) >= 3


def _documented_objects(site: pathlib.Path) -> tuple[set[int], set[str]]:
  """The ids of every Python object the site documents, and the modules it documents."""
  from sphinx.util.inventory import InventoryFile
  with open(site / "objects.inv", "rb") as stream:
    inventory = InventoryFile.load(stream, "", lambda *parts: "/".join(parts))
  objects, modules = set(), set()
  for role, entries in inventory.data.items() if hasattr(inventory, "data") else inventory.items():
    if not role.startswith("py:"):
      continue
    for name in entries:
      if role == "py:module":
        modules.add(name)
        continue
      module_name, _, attribute = name.rpartition(".")
      obj = None
      while module_name:
        try:
          obj = importlib.import_module(module_name)
          break
        except ImportError:
          module_name, _, head = module_name.rpartition(".")
          attribute = f"{head}.{attribute}"
      for part in attribute.split("."):
        obj = getattr(obj, part, None)
      if obj is not None:
        objects.add(id(obj))
  return objects, modules


def _public(module: types.ModuleType, top_level: bool) -> dict[str, object]:
  """A module's public names: at the top level everything it exports; in a submodule what it
  defines (its imports are documented where they are defined)."""
  names = {}
  for name, obj in vars(module).items():
    if name.startswith("_") or isinstance(obj, types.ModuleType):
      continue
    if top_level or getattr(obj, "__module__", None) == module.__name__:
      names[name] = obj
  return names


SUBPACKAGES = ("transforms", "state", "schedules", "presets", "sharding", "checkpoint", "flax",
               "comparison", "hyperparams", "registry", "memory", "matrix_work")


def _check_every_public_name_is_in_the_api_reference(site: pathlib.Path) -> None:
  objects, modules = _documented_objects(site)
  missing = [f"optimkit.{name}" for name, obj in _public(optimkit, True).items()
             if id(obj) not in objects and not isinstance(obj, str)]
  for package in SUBPACKAGES:
    module = importlib.import_module(f"optimkit.{package}")
    exported = _public(module, top_level=hasattr(module, "__path__"))
    missing += [f"optimkit.{package}.{name}" for name, obj in exported.items()
                if id(obj) not in objects and callable(obj)]
  assert not missing, f"not in the API reference: {sorted(missing)}"
  undocumented_modules = [f"optimkit.{m}" for m in SUBPACKAGES if f"optimkit.{m}" not in modules
                          and m != "transforms"]
  assert not undocumented_modules, undocumented_modules


def _check_every_optimizer_has_a_page_from_the_registry(site: pathlib.Path) -> None:
  for name in optimkit.registry.names():
    page = (site / "api" / "optimizers" / f"{name}.html").read_text()
    info = optimkit.registry.get(name)
    assert f'id="optimkit.{name}"' in page, name
    assert "tested against" in page and "valid range" in page, name
    if info.optax:
      assert f"optax.{info.optax}" in page, name


# Names a docstring example may use without defining, because the reader brings them (a model,
# its params and gradients, the optimizer state): such an example is shown, not run.
READERS_NAMES = {"model", "params", "grads", "state", "x", "batch", "loss_fn", "logits_fn"}


class _ExampleRunner(doctest.DocTestRunner):
  """Records failures; an example that stops only at a reader's name is left alone."""

  def __init__(self):
    super().__init__(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    self.problems: list[str] = []

  def report_failure(self, out, test, example, got):
    self.problems.append(f"{test.name}: {example.source.strip()} printed {got!r}, the "
                         f"docstring shows {example.want!r}")

  def report_unexpected_exception(self, out, test, example, exc_info):
    error = exc_info[1]
    if isinstance(error, NameError) and getattr(error, "name", None) in READERS_NAMES:
      return
    self.problems.append(f"{test.name}: {example.source.strip()} raised "
                         f"{type(error).__name__}: {error}")


def _documented_modules() -> list[types.ModuleType]:
  modules = [optimkit]
  for package in SUBPACKAGES:
    module = importlib.import_module(f"optimkit.{package}")
    modules.append(module)
    if hasattr(module, "__path__"):  # its implementation modules hold the docstrings
      modules += [importlib.import_module(f"{module.__name__}.{m.name}")
                  for m in pkgutil.iter_modules(module.__path__) if not m.name.startswith("_")]
  return modules


def test_the_docstring_examples_run():
  """The `>>>` examples the API reference shows, run with what their modules import."""
  import numpy as np
  import optax
  from flax import nnx
  common = {"optimkit": optimkit, "jax": jax, "jnp": jax.numpy, "optax": optax, "np": np,
            "nnx": nnx}
  finder = doctest.DocTestFinder(recurse=False)
  runner = _ExampleRunner()
  seen: set[int] = set()
  ran = 0
  x64 = jax.config.read("jax_enable_x64")
  jax.config.update("jax_enable_x64", False)
  try:
    for module in _documented_modules():
      for obj in [module] + list(_public(module, top_level=module is optimkit).values()):
        if id(obj) in seen:
          continue
        seen.add(id(obj))
        name = f"{module.__name__}.{getattr(obj, '__name__', '')}"
        home = sys.modules.get(getattr(obj, "__module__", None) or "", module)
        globs = {**vars(home), **common}
        for test in finder.find(obj, name, module=False, globs=globs):
          if test.examples:
            runner.run(test, out=lambda text: None, clear_globs=True)
            ran += 1
  finally:
    jax.config.update("jax_enable_x64", x64)
  assert ran >= 40, f"only {ran} docstrings with examples found"
  assert not runner.problems, "\n".join(runner.problems)
