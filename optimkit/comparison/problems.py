"""The training problems the suite's tasks are built on, each from data that ships with a
package: a byte-level transformer LM on CPython's `pydoc_data.topics` (or a user's text), and a
small CNN on scikit-learn's 8x8 handwritten digits.

A problem owns its data split, its model and its metrics, and is the same for every optimizer:

  init(seed)            the initial parameters (the seed picks the initialisation)
  loss(params, batch)   the training loss; `logits(params, batch)` for Sophia-G
  train_batches(seed)   [steps, ...] batches: the seed picks the order (and augmentation)
  metrics(params, data) {"loss": ..., ("error": ...)} on `self.validation` or `self.test`,
                        jittable. Learning rates are chosen on validation; everything reported
                        is measured on test, which no choice has seen.
  describe()            the settings as plain data (the suite's cache key hashes it)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from optimkit.comparison.data import TextData
from optimkit.comparison.model import ModelConfig, TinyTransformer


@dataclass(frozen=True)
class LMSetting:
  model: ModelConfig
  batch_size: int
  steps: int
  eval_every: int
  eval_batches: int  # of `batch_size` windows, for validation and for test each


class LanguageModel:
  """Next-byte prediction with the compare job's decoder-only transformer. The text's last 10%
  is held out: its first half is validation, its second half test."""

  kind = "lm"
  metric_names = ("loss",)

  def __init__(self, setting: LMSetting, data_path: str | None = None):
    self.setting = setting
    self.steps, self.eval_every = setting.steps, setting.eval_every
    self.data = TextData.load(data_path)
    self.graphdef = _graphdef(lambda: TinyTransformer(setting.model, nnx.Rngs(0)))
    held_out = self.data.validation
    half = len(held_out) // 2
    length = setting.model.seq_len
    self.validation = jnp.asarray(_windows(held_out[:half], setting.batch_size, length,
                                           setting.eval_batches))
    self.test = jnp.asarray(_windows(held_out[half:], setting.batch_size, length,
                                     setting.eval_batches))

  def init(self, seed: int) -> Any:
    return nnx.split(TinyTransformer(self.setting.model, nnx.Rngs(seed)), nnx.Param)[1]

  def logits(self, params: Any, batch: jax.Array) -> jax.Array:
    return nnx.merge(self.graphdef, params)(batch[:, :-1])

  def loss(self, params: Any, batch: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(
        self.logits(params, batch), batch[:, 1:]).mean()

  def train_batches(self, seed: int) -> np.ndarray:
    return self.data.train_batches(seed, self.setting.batch_size, self.setting.model.seq_len,
                                   self.steps)

  def metrics(self, params: Any, data: jax.Array) -> dict[str, jax.Array]:
    return {"loss": jnp.mean(jax.lax.map(lambda batch: self.loss(params, batch), data))}

  def describe(self) -> dict:
    return {"problem": "lm", "data": self.data.source, "train_bytes": int(len(self.data.train)),
            **asdict(self.setting)}

  def summary(self, params: Any) -> str:
    m = self.setting.model
    return (f"byte-level decoder-only transformer ({m.num_layers} layers, d_model {m.d_model}, "
            f"{m.num_heads} heads, context {m.seq_len}; {_count(params):,} parameters) on "
            f"{self.data.source}; batch {self.setting.batch_size} x {m.seq_len} bytes, "
            f"{self.steps} steps")


def _graphdef(make: Any) -> Any:
  """The model's structure, from shapes only (no parameters computed)."""
  return nnx.split(nnx.eval_shape(make), nnx.Param)[0]


def _windows(tokens: np.ndarray, batch_size: int, length: int, batches: int) -> np.ndarray:
  """Evenly spaced windows of `length + 1` tokens: [batches, batch_size, length + 1]."""
  last = len(tokens) - length - 1
  if last < 0:
    raise ValueError(f"compare: {len(tokens)} held-out bytes are fewer than one window of "
                     f"{length + 1}")
  starts = np.linspace(0, last, batches * batch_size).astype(np.int64)
  return tokens[starts.reshape(batches, batch_size, 1) + np.arange(length + 1)].astype(np.int32)


def _count(params: Any) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


# ----------------------------------------------------------------------------------------------
# Digits: scikit-learn's copy of the UCI optical-recognition test set (1,797 images, 8x8, 17
# grey levels), read from the file inside the package (no download).


@dataclass(frozen=True)
class DigitsSetting:
  batch_size: int
  steps: int
  eval_every: int
  channels: tuple[int, ...] = (16, 32)
  validation_size: int = 360
  test_size: int = 360
  shift: int = 1  # training images are randomly translated by up to this many pixels


def load_digits() -> tuple[np.ndarray, np.ndarray]:
  """Images [1797, 8, 8, 1] scaled to [0, 1] and labels [1797] from scikit-learn."""
  try:
    from sklearn.datasets import load_digits as sklearn_digits
  except ImportError:
    raise ImportError("the digits task reads scikit-learn's bundled 8x8 digits: "
                      "pip install scikit-learn (or 'optimkit[suite]')") from None
  digits = sklearn_digits()
  return (digits.images[..., None] / 16.0).astype(np.float32), digits.target.astype(np.int32)


class DigitsCNN(nnx.Module):
  """Two 3x3 convolutions (the second with stride 2), ReLU, global average pooling, a linear
  classifier: small enough for CPU, deep enough to need a tuned optimizer."""

  def __init__(self, channels: tuple[int, ...], rngs: nnx.Rngs):
    sizes = (1,) + tuple(channels)
    self.convs = nnx.List([
        nnx.Conv(sizes[i], sizes[i + 1], (3, 3), strides=(1, 1) if i == 0 else (2, 2),
                 rngs=rngs) for i in range(len(channels))])
    self.head = nnx.Linear(sizes[-1], 10, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    x = images
    for conv in self.convs:
      x = jax.nn.relu(conv(x))
    return self.head(jnp.mean(x, axis=(1, 2)))


class Digits:
  """10-way classification of 8x8 digits. A fixed split (the same for every seed and
  optimizer): 360 validation, 360 test, the rest (1,077) train; training batches are random
  translations of the training images."""

  kind = "digits"
  metric_names = ("loss", "error")

  def __init__(self, setting: DigitsSetting):
    self.setting = setting
    self.steps, self.eval_every = setting.steps, setting.eval_every
    images, labels = load_digits()
    order = np.random.default_rng(20240801).permutation(len(labels))
    held = setting.validation_size + setting.test_size
    val, test, train = (order[:setting.validation_size],
                        order[setting.validation_size:held], order[held:])
    self.train_images, self.train_labels = images[train], labels[train]
    self.validation = (jnp.asarray(images[val]), jnp.asarray(labels[val]))
    self.test = (jnp.asarray(images[test]), jnp.asarray(labels[test]))
    self.graphdef = _graphdef(lambda: DigitsCNN(setting.channels, nnx.Rngs(0)))

  def init(self, seed: int) -> Any:
    return nnx.split(DigitsCNN(self.setting.channels, nnx.Rngs(seed)), nnx.Param)[1]

  def logits(self, params: Any, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    return nnx.merge(self.graphdef, params)(batch[0])

  def loss(self, params: Any, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(
        self.logits(params, batch), batch[1]).mean()

  def train_batches(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
    s = self.setting
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(self.train_labels), size=(s.steps, s.batch_size))
    padded = np.pad(self.train_images, ((0, 0), (s.shift, s.shift), (s.shift, s.shift), (0, 0)))
    dy, dx = rng.integers(0, 2 * s.shift + 1, size=(2, s.steps, s.batch_size))
    rows = dy[..., None] + np.arange(8)  # [steps, batch, 8]
    cols = dx[..., None] + np.arange(8)
    images = padded[index[..., None, None], rows[..., :, None], cols[..., None, :]]
    return images.astype(np.float32), self.train_labels[index]

  def metrics(self, params: Any, data: tuple[jax.Array, jax.Array]) -> dict[str, jax.Array]:
    logits = self.logits(params, data)
    return {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, data[1]).mean(),
            "error": 100.0 * jnp.mean(jnp.argmax(logits, -1) != data[1])}

  def describe(self) -> dict:
    return {"problem": "digits", **asdict(self.setting)}

  def summary(self, params: Any) -> str:
    s = self.setting
    return (f"CNN (3x3 convolutions {'-'.join(map(str, s.channels))}, global pooling; "
            f"{_count(params):,} parameters) on scikit-learn's 8x8 digits "
            f"({len(self.train_labels)} train images shifted by up to {s.shift} px, "
            f"{s.validation_size} validation, {s.test_size} test); batch {s.batch_size}, "
            f"{self.steps} steps")
