"""Sign-based optimizers: Lion."""

from __future__ import annotations

from typing import Any

import optax

from optimkit.optimizers._declare import Mask, ScalarOrSchedule, optimizer, shortcut, storage_of
from optimkit.state.storage import StorageLike
from optimkit.transforms._util import uses_previous_ema
from optimkit.transforms.sign_momentum import scale_by_sign_momentum


@optimizer(family="sign", typical_lr=1e-4, optax="lion", reference="lion-pytorch; optax.lion",
           derive={"one_pass": lambda args: uses_previous_ema(args["b2"], args["one_pass"])})
def lion(
    learning_rate: ScalarOrSchedule = 1e-4,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any = None,
    weight_decay: float = 1e-3,
    mask: Mask = None,
    *,
    one_pass: bool | None = None,
    state_storage: StorageLike = "float32",
) -> optax.GradientTransformation:
  """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

      d_t = sign(b1 m_{t-1} + (1 - b1) g_t);   m_t = b2 m_{t-1} + (1 - b2) g_t
      w_t = w_{t-1} - lr (d_t + weight_decay w_{t-1})

  Args:
    learning_rate: a float >= 0 or a schedule. Default 1e-4 (3-10x below AdamW's).
    b1: interpolation of the step, [0, 1). Default 0.9.
    b2: momentum decay, [0, 1). Default 0.99.
    mu_dtype: optax's dtype of the momentum (bfloat16: optimkit's bfloat16 storage).
    weight_decay: decoupled decay, >= 0. Default 1e-3 (optax's; 3-10x AdamW's, as the paper).
    mask: the leaves that decay.
    one_pass: update the momentum in place in one pass, reading m_{t-1} recovered from m_t;
      None (default): on when b2 >= 0.5 as given at construction (see
      `optimkit.transforms.sign_momentum`).
    state_storage: storage format of the momentum.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Example:
    >>> tx = optimkit.lion(3e-4, weight_decay=0.1)

  Equals lion-pytorch and optax.lion.
  """
  return optax.chain(
      scale_by_sign_momentum(b1, b2,
                             state_storage=storage_of("lion", "mu_dtype", mu_dtype, state_storage),
                             one_pass=one_pass),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate))


lion_8bit = shortcut(lion, "lion_8bit", state_storage="8bit", doc="""Lion with a blockwise 8-bit
momentum, about 1 byte of state per parameter: `lion(..., state_storage="8bit")`, with every
other argument of `lion`.""")
