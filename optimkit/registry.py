"""Every public optimizer, with what the rest of optimkit needs to know about it.

    info = optimkit.registry.get("adamw")
    info.make(1e-3, weight_decay=0.1)      # the optimizer function itself
    optimkit.registry.names(family="sign")

An optimizer enters the registry by being declared (`optimkit.optimizers._declare.optimizer`);
nothing is listed by hand. The CLI, the compare job, the property tests, the bad-input
catalogue, the optax-signature test and the sharding tests all iterate over it, so declaring an
optimizer is enough for it to be tested everywhere.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping

import optax
from optax import GradientTransformation


@dataclasses.dataclass(frozen=True)
class OptimizerInfo:
  """What is known about one public optimizer.

  Attributes:
    name: the public name (`optimkit.<name>`).
    make: the optimizer function.
    family: "classic", "adaptive", "sign", "factored", "trust_ratio", "second_order",
      "schedule_free", "matrix", "lr_free", ...
    reference: the implementation(s) it is tested against.
    typical_lr: a learning rate that works for a small transformer (the compare job's start).
    optax: optax's name for the same optimizer ("adamw", "contrib.muon"), or None.
    optax_mode: the arguments that make optimkit's trajectory equal optax's where optimkit
      follows the authors instead (empty when the defaults already agree).
    optax_differs: why the trajectory still differs from optax's with `optax_mode` ("" when it
      does not), e.g. random probes drawn differently.
    ranges: the numeric arguments that are validated, with their ranges (see `optimkit._checks`).
    structural: arguments that decide the state's structure or the compiled program.
    needs: extra arguments `update` needs with the default construction ("logits_fn", "key").
    shortcut_of: for a name that fixes an argument of another optimizer (adamw_8bit), that
      optimizer's name.
  """

  name: str
  make: Callable[..., optax.GradientTransformationExtraArgs]
  family: str
  reference: str
  typical_lr: float
  optax: str | None = None
  optax_mode: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  optax_differs: str = ""
  ranges: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  structural: tuple[str, ...] = ()
  needs: tuple[str, ...] = ()
  shortcut_of: str | None = None

  # The field `optax` shadows the module in this class body, hence the imported name.
  def optax_function(self) -> Callable[..., GradientTransformation] | None:
    """optax's function of the same name, or None."""
    if self.optax is None:
      return None
    module = optax
    *packages, function = self.optax.split(".")
    for package in packages:
      module = getattr(module, package)
    return getattr(module, function)


OPTIMIZERS: dict[str, OptimizerInfo] = {}


def register(info: OptimizerInfo) -> None:
  if info.name in OPTIMIZERS and OPTIMIZERS[info.name].make is not info.make:
    raise ValueError(f"registry: an optimizer named {info.name!r} is already declared")
  OPTIMIZERS[info.name] = info


def _populate() -> None:
  # The declarations register themselves on import; importing the package here means a caller
  # that imported only `optimkit.registry` still sees every optimizer.
  importlib.import_module("optimkit.optimizers")


def get(name: str) -> OptimizerInfo:
  """The optimizer called `name`; ValueError listing the valid names otherwise."""
  _populate()
  if not isinstance(name, str) or not name.strip():
    raise ValueError(f"no optimizer name given; choose from {', '.join(sorted(OPTIMIZERS))}")
  if name not in OPTIMIZERS:
    raise ValueError(f"{name!r} is not an optimkit optimizer; choose from "
                     f"{', '.join(sorted(OPTIMIZERS))}")
  return OPTIMIZERS[name]


def names(family: str | None = None) -> list[str]:
  """Sorted names of every optimizer (of one family)."""
  _populate()
  return sorted(name for name, info in OPTIMIZERS.items()
                if family is None or info.family == family)
