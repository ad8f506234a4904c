"""The suite's progress display on stderr: the current run's bar and the whole suite's, each
with its ETA, on one line rewritten in place on a terminal; on a pipe or a log file, a line per
quarter of each run and one when it ends. Plain text, no dependency.

The suite's ETA adds, for each task, its remaining runs times the mean time of that task's
runs so far (compilation included, so it errs long); tasks not started yet are costed at the
mean of all runs so far. Runs loaded from the cache take no time and do not enter the means.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from typing import TextIO


def format_duration(seconds: float | None) -> str:
  if seconds is None:
    return "--"
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _bar(fraction: float, width: int) -> str:
  filled = int(width * min(max(fraction, 0.0), 1.0))
  return "#" * filled + "-" * (width - filled)


class SuiteProgress:
  def __init__(self, planned: Counter, enabled: bool = True, stream: TextIO | None = None):
    self.planned = Counter(planned)  # task -> runs planned (grows when a sweep extends)
    self.done: Counter = Counter()
    self.cached = 0
    self.seconds: dict[str, list[float]] = defaultdict(list)
    self.enabled = enabled
    self.stream = stream or sys.stderr
    self.tty = getattr(self.stream, "isatty", lambda: False)()
    self.started = time.perf_counter()
    self._run: tuple[str, str, int, float] | None = None
    self._last_quarter = -1

  @property
  def total(self) -> int:
    return sum(self.planned.values())

  def plan_more(self, task: str, runs: int = 1) -> None:
    self.planned[task] += runs

  def eta(self) -> float | None:
    everything = [s for values in self.seconds.values() for s in values]
    if not everything:
      return None
    overall = sum(everything) / len(everything)
    remaining = 0.0
    for task, planned in self.planned.items():
      left = max(planned - self.done[task], 0)
      mean = (sum(self.seconds[task]) / len(self.seconds[task]) if self.seconds[task]
              else overall)
      remaining += left * mean
    if self._run is not None:  # the current run is counted in `left`: subtract its part done
      remaining -= min(time.perf_counter() - self._run[3], remaining)
    return remaining

  def _overall(self) -> str:
    done = sum(self.done.values())
    return (f"suite [{_bar(done / max(self.total, 1), 16)}] {done}/{self.total} runs, "
            f"{format_duration(time.perf_counter() - self.started)} elapsed, "
            f"ETA {format_duration(self.eta())}")

  def _write(self, line: str, final: bool = False) -> None:
    if not self.enabled:
      return
    if self.tty:
      self.stream.write("\r\033[K" + line + ("\n" if final else ""))
    else:
      self.stream.write(line + "\n")
    self.stream.flush()

  def start_run(self, task: str, label: str, steps: int) -> None:
    self._run = (task, label, steps, time.perf_counter())
    self._last_quarter = -1
    self.update(0, None)

  def update(self, step: int, metric: float | None) -> None:
    if self._run is None:
      return
    task, label, steps, start = self._run
    fraction = step / max(steps, 1)
    quarter = int(4 * fraction)
    if not self.tty and (quarter == self._last_quarter or step == steps):
      return  # on a pipe: a line per quarter; the end has its own line
    self._last_quarter = quarter
    elapsed = time.perf_counter() - start
    eta = elapsed / fraction - elapsed if fraction > 0 else None
    value = f" test {metric:.4f}" if metric is not None else ""
    self._write(f"{task} {label} [{_bar(fraction, 20)}] {step}/{steps}{value} "
                f"ETA {format_duration(eta)} | {self._overall()}")

  def finish_run(self, task: str, label: str, cached: bool, summary: str = "") -> None:
    if cached:
      self.cached += 1
    elif self._run is not None:
      self.seconds[task].append(time.perf_counter() - self._run[3])
    self.done[task] += 1
    self._run = None
    if not cached:
      self._write(f"{task} {label} done{summary} | {self._overall()}", final=True)

  def close(self) -> None:
    cached = f", {self.cached} from the cache" if self.cached else ""
    self._write(f"suite done: {sum(self.done.values())} runs{cached} in "
                f"{format_duration(time.perf_counter() - self.started)}", final=True)
