"""A validation split held out of the training split, for choosing settings without the test set.

`holdout(train, per_class, seed)` splits a training Source into (train_rest, validation): per
class, `per_class` examples chosen by a seeded permutation go to validation, the rest stay for
training. Both are Sources over the original one (index order kept), so everything downstream —
scores, selection, teachers, caches — sees an ordinary, smaller dataset with its own
fingerprint. The benchmark uses it through `--config.data.validation_per_class=N`, which
tests on the held-out examples instead of the test split.
"""

from __future__ import annotations

import hashlib

import numpy as np

from dcjax.errors import UserError
from dcjax.data.sources import Source


class SubsetSource(Source):
  """Examples `indices` of `base`, renumbered 0..len-1."""

  def __init__(self, base: Source, indices: np.ndarray, split: str, tag: str):
    self.base = base
    self.indices = np.asarray(indices, np.int64)
    super().__init__(f"{base.name}{tag}", split, base.class_names, base.labels[self.indices])

  def _image(self, i: int) -> np.ndarray:
    return self.base[int(self.indices[i])]["image"]

  def content_digest(self) -> str:
    digest = hashlib.sha256(self.base.content_digest().encode())
    digest.update(np.ascontiguousarray(self.indices, "<i8").tobytes())
    return digest.hexdigest()

  def describe(self, i: int) -> str:
    return f"{self.name} {self.split}[{i}] = {self.base.describe(int(self.indices[i]))}"


def holdout(train: Source, per_class: int, seed: int = 0) -> tuple[SubsetSource, SubsetSource]:
  """(train minus the held-out examples, the held-out validation examples)."""
  labels = np.asarray(train.labels)
  counts = np.bincount(labels, minlength=train.num_classes)
  if per_class < 1 or per_class >= counts.min():
    raise UserError(f"validation_per_class must lie in 1..{counts.min() - 1} (the smallest "
                    f"class of {train.name} train has {counts.min()} examples), got {per_class}")
  rng = np.random.default_rng(seed)
  held = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                         for c in range(train.num_classes)])
  mask = np.zeros(len(labels), bool)
  mask[held] = True
  tag = f"[holdout {per_class}/class seed {seed}]"
  return (SubsetSource(train, np.flatnonzero(~mask), "train", tag),
          SubsetSource(train, np.flatnonzero(mask), "validation", tag))
