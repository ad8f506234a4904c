"""One training run of the suite, and the compiled step it runs on.

A `Trainer` compiles one train step per (problem, candidate): the learning rate reaches the
optimizer through `optax.inject_hyperparams` (it lives in the optimizer state), and the seed's
initial parameters, batches and PRNG key are arguments, so every learning rate and seed of a
sweep runs the same executable. The steps between two evaluations run as one `lax.scan`, so the
host waits once per evaluation, not once per step.

A run records what the suite reports: the test metrics at step 0 and every `eval_every` steps,
the training seconds up to each evaluation (excluding compilation and evaluation), the training
loss of every step (for loss spikes), the validation metrics at the end (for choosing the
learning rate), the median step time, the skipped (non-finite) steps and the optimizer state's
bytes per parameter.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optimkit.comparison.tasks import Candidate
from optimkit.transforms._util import find_state
from optimkit.transforms.nonfinite import skip_nonfinite
from optimkit.transforms.schedule_free import ScheduleFreeState, schedule_free_eval_params


@dataclass
class RunRecord:
  """One (task problem, candidate, learning rate, seed) run; JSON-serialisable."""

  candidate: str
  learning_rate: float
  seed: int
  eval_steps: list[int]
  test: dict[str, list[float]]  # metric -> value at each of eval_steps (step 0 first)
  train_seconds: list[float]  # cumulative training time at each of eval_steps
  train_loss: list[float]  # every step's training loss
  validation: dict[str, float]  # at the end: what the learning rate is chosen on
  median_step_ms: float
  skipped_steps: int
  state_bytes_per_param: float
  compile_seconds: float  # 0 when the run reused a compiled step
  extra: dict = field(default_factory=dict)

  def to_json(self) -> dict:
    return asdict(self)

  @classmethod
  def from_json(cls, data: dict) -> "RunRecord":
    return cls(**data)

  def final(self, metric: str) -> float:
    return self.test[metric][-1]


def array_state_bytes_per_param(tx: optax.GradientTransformation, params: Any) -> float:
  """Bytes per parameter of the optimizer's state (without the suite's wrappers), counting
  the leaves that grow with the model (moments, quantization scales, factored statistics) and
  not scalars such as step counts and hyperparameters, a few bytes whatever the model."""
  shapes = jax.eval_shape(tx.init, params)
  total = sum(leaf.size * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(shapes)
              if leaf.ndim > 0)
  return total / max(sum(leaf.size for leaf in jax.tree.leaves(params)), 1)


def _eval_params(state: Any, params: Any) -> Any:
  """Schedule-free optimizers are evaluated at their averaged point x, the others at params."""
  if find_state(state, ScheduleFreeState) is not None:
    return schedule_free_eval_params(find_state(state, ScheduleFreeState), params)
  return params


def _slice(batches: Any, start: int, stop: int) -> Any:
  """Steps [start, stop) of every leaf of `batches` (leading axis: steps), as device arrays."""
  return jax.tree.map(lambda b: jnp.asarray(b[start:stop]), batches)


class Trainer:
  """The compiled train and evaluation steps of one candidate on one problem."""

  def __init__(self, problem: Any, candidate: Candidate):
    self.problem, self.candidate = problem, candidate
    steps = problem.steps
    factory = lambda learning_rate: candidate.build(learning_rate, steps)
    self.make_tx: Callable[[float], optax.GradientTransformation] = (
        lambda lr: skip_nonfinite(optax.inject_hyperparams(factory)(learning_rate=lr)))
    tx = self.make_tx(candidate.learning_rate)  # the update reads the rate from the state

    def chunk(params, state, batches, first_step, key):
      def body(carry, inputs):
        params, state = carry
        batch, step = inputs
        loss, grads = jax.value_and_grad(problem.loss)(params, batch)
        extra = {"key": jax.random.fold_in(key, step),
                 "loss_fn": lambda p: problem.loss(p, batch),
                 "logits_fn": lambda p: problem.logits(p, batch)}
        updates, state = tx.update(grads, state, params, **extra)
        return (optax.apply_updates(params, updates), state), loss

      length = jax.tree.leaves(batches)[0].shape[0]
      (params, state), losses = jax.lax.scan(
          body, (params, state), (batches, first_step + jnp.arange(length)))
      return params, state, losses

    def evaluate(state, params, data):
      return problem.metrics(_eval_params(state, params), data)

    # Initialised under jit: one compilation instead of an eager dispatch per state leaf.
    self._init = jax.jit(lambda params, lr: self.make_tx(lr).init(params))
    self._chunk = jax.jit(chunk, donate_argnums=(0, 1))
    self._evaluate = jax.jit(evaluate)
    self._compiled: dict[int, Any] = {}
    self.bytes_per_param: float | None = None

  def _compile(self, params, state, batches, key) -> float:
    """Compiles the chunk for this chunk length once; returns the seconds it took."""
    length = jax.tree.leaves(batches)[0].shape[0]
    if length in self._compiled:
      return 0.0
    start = time.perf_counter()
    self._compiled[length] = self._chunk.lower(params, state, batches, jnp.asarray(0),
                                               key).compile()
    return time.perf_counter() - start

  def run(self, learning_rate: float, seed: int,
          on_progress: Callable[[int, float | None], None] | None = None) -> RunRecord:
    """Trains from `seed`'s initialisation on `seed`'s batches at `learning_rate`."""
    problem = self.problem
    steps, every = problem.steps, problem.eval_every
    params = problem.init(seed)
    if self.bytes_per_param is None:
      self.bytes_per_param = array_state_bytes_per_param(
          self.candidate.build(learning_rate, steps), params)
    state = self._init(params, jnp.asarray(learning_rate, jnp.float32))
    key = jax.random.key(seed)
    batches = problem.train_batches(seed)
    chunks = [(start, min(start + every, steps)) for start in range(0, steps, every)]
    compile_seconds = 0.0
    for start, stop in {chunks[0], chunks[-1]}:  # at most two chunk lengths
      piece = _slice(batches, start, stop)
      compile_seconds += self._compile(params, state, piece, key)

    def measure(params, state, data):
      return {k: float(v) for k, v in self._evaluate(state, params, data).items()}

    test = {k: [v] for k, v in measure(params, state, problem.test).items()}
    eval_steps, seconds = [0], [0.0]
    train_loss: list[float] = []
    step_seconds: list[float] = []
    # Donated buffers may not alias (jit forwards an input it returns unchanged, e.g. a copy of
    # the params in the state): copy both once.
    params, state = jax.tree.map(jnp.copy, (params, state))
    elapsed = 0.0
    for start, stop in chunks:
      piece = _slice(batches, start, stop)
      begin = time.perf_counter()
      params, state, losses = self._compiled[stop - start](params, state, piece,
                                                           jnp.asarray(start), key)
      losses = np.asarray(losses)  # waits for the chunk: the time is the real training time
      took = time.perf_counter() - begin
      elapsed += took
      step_seconds.append(took / (stop - start))
      train_loss.extend(float(x) for x in losses)
      for k, v in measure(params, state, problem.test).items():
        test[k].append(v)
      eval_steps.append(stop)
      seconds.append(elapsed)
      if on_progress is not None:
        on_progress(stop, test[problem.metric_names[0]][-1])
    timed = step_seconds[1:] or step_seconds  # the first chunk after compiling runs cold
    return RunRecord(
        candidate=self.candidate.label, learning_rate=float(learning_rate), seed=seed,
        eval_steps=eval_steps, test=test, train_seconds=seconds, train_loss=train_loss,
        validation=measure(params, state, problem.validation),
        median_step_ms=1000.0 * float(np.median(timed)),
        skipped_steps=int(state.skipped_steps),
        state_bytes_per_param=float(self.bytes_per_param),
        compile_seconds=compile_seconds)
