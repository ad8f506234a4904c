"""Prints the declared minimum of every dependency in pyproject.toml as an exact pin.

    python .ci/minimum_requirements.py > minimum.txt     # "jax==0.6.0", ...

`.ci/run` installs these (plus nothing newer of them) into the minimum environment, so the floors
in pyproject.toml are the versions CI proves. Every dependency must be written `name>=version`;
anything else is an error here rather than a floor nobody tests.
"""

from __future__ import annotations

import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FLOOR = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][0-9A-Za-z.+!-]*)$")


def minimum_pins(pyproject: pathlib.Path = ROOT / "pyproject.toml") -> list[str]:
  dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
  pins = []
  for requirement in dependencies:
    match = FLOOR.match(requirement.strip())
    if match is None:
      raise ValueError(f"pyproject.toml: dependency {requirement!r} is not 'name>=version', so it "
                       f"has no single floor the minimum environment can pin")
    pins.append(f"{match.group(1)}=={match.group(2)}")
  return pins


if __name__ == "__main__":
  try:
    print("\n".join(minimum_pins()))
  except ValueError as error:
    print(error, file=sys.stderr)
    sys.exit(1)
