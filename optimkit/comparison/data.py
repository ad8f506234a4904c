"""Text for the reference task that is on every machine with Python: the documentation topics
that CPython ships in `pydoc_data.topics` (about 460 KB of English prose and grammar about the
language), or a file of the user's. Byte-level tokens; a deterministic split (the last 10% of
the text is validation) and a deterministic batch order from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB_SIZE = 256  # bytes


def builtin_text() -> str:
  from pydoc_data import topics  # part of CPython's standard library

  return "\n\n".join(topics.topics[name] for name in sorted(topics.topics))


@dataclass(frozen=True)
class TextData:
  train: np.ndarray  # uint8 tokens
  validation: np.ndarray
  source: str

  @classmethod
  def load(cls, path: str | None = None, validation_fraction: float = 0.1) -> "TextData":
    if path is None:
      raw, source = builtin_text().encode("utf-8"), "pydoc_data.topics (CPython)"
    else:
      raw, source = Path(path).read_bytes(), str(path)
    tokens = np.frombuffer(raw, dtype=np.uint8)
    split = int(len(tokens) * (1.0 - validation_fraction))
    if split < 2 or len(tokens) - split < 2:
      raise ValueError(f"compare: the text in {source} is too short ({len(tokens)} bytes)")
    return cls(train=tokens[:split], validation=tokens[split:], source=source)

  def train_batches(self, seed: int, batch_size: int, seq_len: int, steps: int) -> np.ndarray:
    """[steps, batch, seq_len + 1] windows at random offsets: the same for every optimizer."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(self.train) - seq_len - 1, size=(steps, batch_size))
    return self.train[starts[..., None] + np.arange(seq_len + 1)].astype(np.int32)

  def validation_batches(self, batch_size: int, seq_len: int, batches: int) -> np.ndarray:
    """Evenly spaced windows over the validation text, fixed for the whole comparison."""
    last = len(self.validation) - seq_len - 1
    starts = np.linspace(0, last, batches * batch_size).astype(np.int64).reshape(
        batches, batch_size)
    return self.validation[starts[..., None] + np.arange(seq_len + 1)].astype(np.int32)
