"""What the built distributions hold: the wheel ships the package, its py.typed marker and its
metadata and nothing else (no tests, benchmarks or examples); the sdist holds what builds that
wheel; the metadata says what pyproject.toml says; the version is one number everywhere.

The wheel and sdist are the ones `.ci/run` built (it passes their folder in OPTIMKIT_DIST);
without it the test builds them itself (`python -m build --no-isolation`, a few seconds).
"""

from __future__ import annotations

import email.parser
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile

import pytest

import optimkit

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = optimkit.__version__

sys.path.insert(0, str(ROOT / ".ci"))
from minimum_requirements import minimum_pins  # noqa: E402


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> pathlib.Path:
  given = os.environ.get("OPTIMKIT_DIST")
  if given:
    return pathlib.Path(given)
  out = tmp_path_factory.mktemp("dist")
  # Without isolation: the setuptools already installed builds it, nothing is downloaded.
  # `build` makes the sdist and then the wheel from the unpacked sdist, so a file missing
  # from the sdist is missing from the wheel too.
  result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                           str(ROOT)], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return out


def _only(directory: pathlib.Path, pattern: str) -> pathlib.Path:
  found = sorted(directory.glob(pattern))
  assert len(found) == 1, f"expected one {pattern} in {directory}, found {found}"
  return found[0]


def _package_sources() -> set[str]:
  """Every file of the package in the source tree, relative to the project root."""
  return {str(path.relative_to(ROOT)) for path in (ROOT / "optimkit").rglob("*")
          if path.is_file() and path.suffix in (".py", ".typed")
          and "__pycache__" not in path.parts}


def test_wheel_holds_the_package_and_nothing_else(dist):
  wheel = _only(dist, f"optimkit-{VERSION}-py3-none-any.whl")
  names = set(zipfile.ZipFile(wheel).namelist())
  info = f"optimkit-{VERSION}.dist-info/"
  strays = sorted(n for n in names if not n.startswith(("optimkit/", info)))
  assert not strays, f"the wheel ships files outside the package: {strays}"
  package = {n for n in names if n.startswith("optimkit/")}
  assert package == _package_sources(), (
      f"missing from the wheel: {sorted(_package_sources() - package)}; "
      f"in the wheel but not the source tree: {sorted(package - _package_sources())}")
  assert "optimkit/py.typed" in package
  assert not [n for n in names if n.endswith((".pyc", ".pyo"))]


def _metadata(dist: pathlib.Path):
  wheel = _only(dist, f"optimkit-{VERSION}-py3-none-any.whl")
  text = zipfile.ZipFile(wheel).read(f"optimkit-{VERSION}.dist-info/METADATA").decode()
  return email.parser.Parser().parsestr(text)


def test_wheel_metadata_is_pyproject(dist):
  metadata = _metadata(dist)
  assert metadata["Version"] == VERSION
  assert metadata["Requires-Python"] == PYPROJECT["project"]["requires-python"]
  assert metadata["License-Expression"] == PYPROJECT["project"]["license"]
  required = sorted(r.replace(" ", "") for r in metadata.get_all("Requires-Dist")
                    if "extra ==" not in r)
  assert required == sorted(d.replace(" ", "") for d in PYPROJECT["project"]["dependencies"])
  wheel = _only(dist, f"optimkit-{VERSION}-py3-none-any.whl")
  entry_points = zipfile.ZipFile(wheel).read(
      f"optimkit-{VERSION}.dist-info/entry_points.txt").decode()
  assert "optimkit = optimkit.cli:main" in entry_points


def test_sdist_holds_what_builds_the_wheel(dist):
  sdist = _only(dist, f"optimkit-{VERSION}.tar.gz")
  prefix = f"optimkit-{VERSION}/"
  with tarfile.open(sdist) as archive:
    names = {m.name.removeprefix(prefix) for m in archive.getmembers() if m.isfile()}
  for needed in ("pyproject.toml", "README.md", "CHANGELOG.md", "PKG-INFO", "MANIFEST.in"):
    assert needed in names
  assert _package_sources() <= names, sorted(_package_sources() - names)
  top = {name.split("/")[0] for name in names}
  assert not top & {"tests", "benchmarks", "examples", ".ci"}, sorted(top)


def test_one_version_everywhere():
  assert "version" in PYPROJECT["project"]["dynamic"]
  assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
      "attr": "optimkit.__version__"}
  changelog = (ROOT / "CHANGELOG.md").read_text()
  released = re.findall(r"^## \[?(\d+\.\d+\.\d+)\]?", changelog, flags=re.M)
  assert released and released[0] == VERSION, (
      f"CHANGELOG.md's newest entry is {released[:1]}, optimkit.__version__ is {VERSION}")


def test_every_dependency_has_the_floor_ci_installs():
  pins = minimum_pins()
  names = [pin.split("==")[0] for pin in pins]
  assert len(pins) == len(PYPROJECT["project"]["dependencies"])
  # Orbax is imported by optimkit.checkpoint, so it is declared, not left to arrive with Flax.
  assert {"jax", "jaxlib", "optax", "flax", "numpy", "orbax-checkpoint"} <= set(names)
  assert PYPROJECT["project"]["requires-python"] == ">=3.11"  # every flax >= 0.11 needs it


def test_minimum_requirements_rejects_a_dependency_without_a_floor(tmp_path):
  pyproject = tmp_path / "pyproject.toml"
  pyproject.write_text('[project]\ndependencies = ["jax>=0.7.1", "numpy"]\n')
  with pytest.raises(ValueError, match="'numpy' is not 'name>=version'"):
    minimum_pins(pyproject)
  pyproject.write_text('[project]\ndependencies = ["jax>=0.7.1,<0.9", "optax>=0.2.6"]\n')
  with pytest.raises(ValueError, match="jax>=0.7.1,<0.9"):
    minimum_pins(pyproject)
  pyproject.write_text('[project]\ndependencies = ["jax >= 0.7.1", "orbax-checkpoint>=0.11.22"]\n')
  assert minimum_pins(pyproject) == ["jax==0.7.1", "orbax-checkpoint==0.11.22"]
