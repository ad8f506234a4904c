"""The least memory traffic each optimizer's step can have, given what must be known before what.

One step of any optimizer at least streams once over its arrays: reads the gradient, the
params and the state, writes the params and the state. That is the *streaming bound*, the same
for every optimizer with the same state. Many steps cannot be done in one pass: a per-leaf norm,
a row/column statistic or a global sum has to be complete before any element of the update that
depends on it can be written, so the arrays it reads are read again afterwards (or a temporary is
written and read back, which costs at least as much). `PASSES` records, for every optimizer in
`optimkit.registry`, the extra reads its reduction dependencies force on top of the streaming
pass, assuming an ideal kernel (any number of outputs and reductions per pass): its *own bound*.
`benchmarks/step_time.py` divides both by the measured step time; `tests/test_bounds.py` fails
when a registry optimizer has no entry, so a new optimizer is not benchmarked against nothing.

Counts are in whole arrays: `grads` extra reads of the gradient, `params` of the params,
`state` of the whole state, `moment` of one params-sized state buffer in its stored format
(`state` / number of params-sized buffers). Matrix-product optimizers (`matmul=True`) are bound
by arithmetic, not traffic: their memory bounds are printed but are not what they can reach.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Passes:
  """Extra whole-array reads one step needs beyond the streaming pass, and why."""

  why: str
  grads: float = 0.0
  params: float = 0.0
  state: float = 0.0
  moment: float = 0.0
  moments_in_state: int = 1
  matmul: bool = False

  def streaming_bytes(self, grad_bytes: int, param_bytes: int, state_bytes: int) -> int:
    """Read g, p and the state once; write p and the state once."""
    return grad_bytes + 2 * param_bytes + 2 * state_bytes

  def own_bytes(self, grad_bytes: int, param_bytes: int, state_bytes: int) -> float:
    """The streaming bytes plus the extra reads the reduction dependencies force."""
    extra = (self.grads * grad_bytes + self.params * param_bytes + self.state * state_bytes
             + self.moment * state_bytes / self.moments_in_state)
    return self.streaming_bytes(grad_bytes, param_bytes, state_bytes) + extra


ELEMENTWISE = Passes("elementwise: every output element depends only on the same element of "
                     "g, p and the state (and on scalars known before the step), one pass")
_MATMUL = ("matrix products (Newton-Schulz / Kronecker preconditioners / projections) dominate: "
           "bound by arithmetic; the memory bounds are lower limits only")

PASSES: dict[str, Passes] = {
    "adabelief": ELEMENTWISE,
    "adadelta": ELEMENTWISE,
    "adafactor": Passes(
        "the row/column means of g^2 must be complete before g can be scaled (1 extra read of "
        "g); the update's RMS (clipping) needs the scaled g before any update is written (1 "
        "more); RMS(w) (parameter scale) needs a read of w before it is overwritten. The "
        "factored state is tiny", grads=2, params=1),
    "adagrad": ELEMENTWISE,
    "adam": ELEMENTWISE,
    "adam_mini": Passes("each block's mean of g^2 must be complete before the block is scaled "
                        "(1 extra read of g)", grads=1),
    "adam_mini_4bit": Passes("as adam_mini; each 4-bit block's absmax is a reduction over a "
                             "block that fits in cache, so no extra pass over memory", grads=1),
    "adamax": ELEMENTWISE,
    "adamaxw": ELEMENTWISE,
    "adams": ELEMENTWISE,
    "adamw": ELEMENTWISE,
    "adamw_4bit": Passes("elementwise; each quantization block's absmax is a reduction over a "
                         "block that fits in cache, so no extra pass over memory"),
    "adamw_8bit": Passes("elementwise; each quantization block's absmax is a reduction over a "
                         "block that fits in cache, so no extra pass over memory"),
    "adan": ELEMENTWISE,
    "ademamix": ELEMENTWISE,
    "adopt": ELEMENTWISE,
    "amsgrad": ELEMENTWISE,
    "came": Passes(
        "as Adafactor (row/column means of g^2, then the clipping RMS: 2 extra reads of g); the "
        "confidence statistics are row/column means of (u - m)^2 over the new m, complete "
        "before m is scaled, so m is read once more", grads=2, moment=1, moments_in_state=1),
    "cautious_adamw": Passes("the mask's normaliser (the fraction of coordinates where m and g "
                             "agree in sign) is a global reduction over the new m and g before "
                             "any update is written: g and m read once more", grads=1, moment=1,
                             moments_in_state=2),
    "cautious_lion": Passes("the mask's normaliser is a reduction over the new direction and g "
                            "before any update: g and m read once more", grads=1, moment=1),
    "dadapt_adamw": Passes("whether sum|s_t| > 0 (the authors' guard on the step) is a global "
                           "sum over the new s before any param is written: g and v read once "
                           "more", grads=1, moment=1, moments_in_state=3),
    "galore_adamw": Passes(_MATMUL, matmul=True),
    "kron": Passes(_MATMUL, matmul=True),
    "lamb": Passes("each leaf's ||u|| (u from the new m, v and w) must be complete before the "
                   "leaf is scaled: m, v and w read once more (or u written and read back, "
                   "the same bytes)", params=1, state=1),
    "lars": Passes("||g|| and ||w|| per leaf before the local rate scales it: g and w read once "
                   "more", grads=1, params=1),
    "lion": ELEMENTWISE,
    "lion_8bit": Passes("elementwise; the quantization block's absmax is a reduction in cache"),
    "mars": Passes("the corrected gradient's norm clips it before the moments read it: g and "
                   "the previous gradient read once more", grads=1, moment=1, moments_in_state=3),
    "muon": Passes(_MATMUL, matmul=True),
    "nadam": ELEMENTWISE,
    "nadamw": ELEMENTWISE,
    "novograd": Passes("each leaf's second moment is the EMA of ||g||^2, complete before the "
                       "leaf is scaled: g read once more", grads=1),
    "prodigy": Passes("d_{t+1} (in the step's eps term) needs the global sums r_t = "
                      "<g, x_0 - x> and sum|s_t| before any param is written: g and w read "
                      "once more", grads=1, params=1),
    "radam": ELEMENTWISE,
    "ranger": Passes("elementwise (RAdam's rectification is a scalar of t); Lookahead's slow "
                     "weights are part of the state's pass"),
    "rmsprop": ELEMENTWISE,
    "rprop": ELEMENTWISE,
    "schedule_free_adamw": ELEMENTWISE,
    "schedule_free_sgd": ELEMENTWISE,
    "sgd": ELEMENTWISE,
    "shampoo": Passes(_MATMUL, matmul=True),
    "sign_sgd": ELEMENTWISE,
    "signum": ELEMENTWISE,
    "simplified_ademamix": ELEMENTWISE,
    "sm3": Passes("the update reads min(row, col) of the old accumulators (elementwise); the new "
                  "accumulators are max-reductions of the same values, computed in the same "
                  "pass, so no extra read"),
    "soap": Passes(_MATMUL, matmul=True),
    "sophia": Passes("elementwise between Hessian refreshes (the refresh is a model evaluation, "
                     "timed off)"),
    "stable_adamw": Passes("the update clipping RMS(g^2 / v) per leaf is complete before the "
                           "leaf is scaled: g and v read once more", grads=1, moment=1,
                           moments_in_state=2),
    "yogi": ELEMENTWISE,
}
