"""Switching from optax is one import: every optimizer optax also has takes optax's arguments
under optax's names, binds optax's positional order to the same names, and with optax's
defaults steps exactly as optax does (or `info.optax_mode` makes it, where optimkit follows the
authors instead). optax's signatures are read at run time, so a drift in optax fails here."""

import inspect

import numpy as np
import optax
import pytest

from optimkit import registry
from tests import parity

SHARED = [name for name in registry.names() if registry.get(name).optax is not None]


def _positional(signature):
  return [p.name for p in signature.parameters.values()
          if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


@pytest.mark.parametrize("name", SHARED)
def test_every_optax_argument_is_accepted_in_optax_order(name):
  info = registry.get(name)
  theirs = inspect.signature(info.optax_function())
  ours = inspect.signature(info.make)
  their_positional = _positional(theirs)
  assert _positional(ours)[:len(their_positional)] == their_positional, (
      f"{name}: optax's positional order {their_positional} is not optimkit's "
      f"{_positional(ours)}")
  missing = set(theirs.parameters) - set(ours.parameters)
  assert not missing, f"{name} does not accept optax's arguments {sorted(missing)}"


def test_shared_optimizers_are_the_ones_optax_has():
  """Every optimkit optimizer whose name optax also uses says so in the registry."""
  for name in registry.names():
    info = registry.get(name)
    if info.shortcut_of is None and info.optax is None:
      assert not hasattr(optax, name) and not hasattr(optax.contrib, name), name


def test_optax_positional_call_binds_the_same_names():
  """optax.adamw(lr, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask): the issue's example
  bound weight_decay=None, mask=0.1 and failed inside update."""
  from optimkit import adamw
  mask = {"matrix": True, "vector": False}
  tx = adamw(1e-3, 0.9, 0.999, 1e-8, 0.0, None, 0.1, mask)
  reference = optax.adamw(1e-3, 0.9, 0.999, 1e-8, 0.0, None, 0.1, mask)
  problem = parity.Problem(shapes={"matrix": (4, 3), "vector": (5,)}, steps=20)
  ours, theirs = parity.run_optax(tx, problem), parity.run_optax(reference, problem)
  np.testing.assert_allclose(ours[-1]["vector"], theirs[-1]["vector"], rtol=1e-12)
  np.testing.assert_allclose(ours[-1]["matrix"], theirs[-1]["matrix"], rtol=1e-12)


TRAJECTORIES = [name for name in SHARED if not registry.get(name).optax_differs]


@pytest.mark.parametrize("name", TRAJECTORIES)
def test_optax_defaults_give_optax_trajectory(name):
  info = registry.get(name)
  lr = info.typical_lr / 10
  problem = parity.Problem(seed=3, steps=100)
  ours = parity.run_optax(info.make(lr, **info.optax_mode), problem)
  theirs = parity.run_optax(info.optax_function()(lr), problem)
  error = parity.max_relative_error(ours, theirs)
  print(f"PARITY {name} vs optax.{info.optax} ({info.optax_mode or 'defaults'}): {error:.1e}")
  assert error < 1e-6


def test_every_deviation_from_optax_is_explained():
  for name in SHARED:
    info = registry.get(name)
    if info.optax_differs:
      assert len(info.optax_differs) > 20, name
