"""The `optimkit` command line at tiny sizes, for the compare job's and the suite's end-to-end
tests:

    python -m tests.comparison.tiny_cli compare --quick --steps 12 ...
    python -m tests.comparison.tiny_cli compare --suite --tasks digits ...

is the command line with `compare --quick`'s setting replaced by `TINY_COMPARE` and the
suite's quick budget by `TINY` (seconds, not minutes; the real quick settings run in the wheel
smoke, tests/smoke.py, and in `optimkit compare --suite`). With KILL_AFTER_RUNS=N in the
environment the process SIGKILLs itself halfway through the suite run that follows the N-th
stored result: an interruption at a known point, in the middle of training.
"""

import os
import signal
import sys

import optimkit.comparison
from optimkit import cli
from optimkit.comparison import suite, tasks, training
from optimkit.comparison.model import ModelConfig
from optimkit.comparison.problems import DigitsSetting, LMSetting
from optimkit.comparison.task import TaskConfig

TINY_MODEL = ModelConfig(seq_len=16, d_model=16, num_heads=2, num_layers=1)
TINY_COMPARE = TaskConfig(steps=12, batch_size=4, eval_every=4, eval_batches=2, model=TINY_MODEL)
TINY = tasks.Budget(
    name="tiny",
    lm=LMSetting(TINY_MODEL, batch_size=4, steps=16, eval_every=4, eval_batches=2),
    digits=DigitsSetting(batch_size=8, steps=16, eval_every=4, channels=(4, 8)),
    large_batch_factor=4, grid_base=3.0, grid_exponents=(-1, 0), extensions=1, seeds=2)


def _kill_after(runs: int) -> None:
  stored = {"count": 0}
  store, run = suite.RunCache.store, training.Trainer.run

  def counting_store(self, *args, **kwargs):
    store(self, *args, **kwargs)
    stored["count"] += 1

  def run_then_die(self, learning_rate, seed, on_progress=None):
    def progress(step, metric):
      if stored["count"] >= runs and step >= self.problem.steps // 2:
        os.kill(os.getpid(), signal.SIGKILL)
      if on_progress is not None:
        on_progress(step, metric)
    return run(self, learning_rate, seed, progress)

  suite.RunCache.store = counting_store
  training.Trainer.run = run_then_die


if __name__ == "__main__":
  optimkit.comparison.QUICK = TINY_COMPARE  # the CLI reads it from the package at call time
  tasks.BUDGETS["quick"] = TINY
  if os.environ.get("KILL_AFTER_RUNS"):
    _kill_after(int(os.environ["KILL_AFTER_RUNS"]))
  sys.exit(cli.main(sys.argv[1:]))
