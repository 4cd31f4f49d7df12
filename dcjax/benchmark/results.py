"""The schema of a run's `results.json`: one dataclass, written by the benchmark runner and read
back (validated) by `dcjax.benchmark.report`.

Field order is the file's key order. Types name what `report` checks when it loads a file, so a
malformed file fails naming itself rather than as a KeyError deep inside a plot.
"""

from __future__ import annotations

import dataclasses
from numbers import Real
from typing import Any

FILENAME = "results.json"


@dataclasses.dataclass(frozen=True)
class Run:
  """One student seed: test top-1 / top-5 (%) and how its training went."""

  seed: int
  top1: float
  top5: float
  train_seconds: float
  final_loss: float
  images_per_second: float
  # On the test split's down/up resampled copy (data.test_resample_size > 0), else absent.
  resampled_top1: float | None = None
  resampled_top5: float | None = None

  def to_json(self) -> dict[str, Any]:
    """As runs/seed_N.json and results.json store it: the resampled fields only when set."""
    d = dataclasses.asdict(self)
    return {k: v for k, v in d.items() if v is not None or k not in OPTIONAL_RUN_FIELDS}


@dataclasses.dataclass(frozen=True)
class Results:
  """What a finished benchmark run reports (`results.json`)."""

  method: str
  dataset: str
  ipc: int
  num_images: int            # stored images (ipc * num_classes)
  combine_k: int             # each stored image tiles k x k source images
  num_source_images: int     # training images behind the stored ones
  num_classes: int
  image_shape: list
  protocol: str
  model: str
  recipe: dict               # the resolved training recipe (protocols.Recipe as a dict)
  # Standard deviation over seeds with ddof=0, as the distillation literature's code does.
  top1_mean: float
  top1_std: float
  top5_mean: float
  top5_std: float
  runs: list                 # [Run as a dict], one per student seed
  storage: dict              # {image_bytes, soft_label_bytes, teacher_bytes}
  teacher: dict | None       # {dir, top1, top5, param_bytes, model} for soft labels
  test_examples: int
  test_split: str
  selection_seed: int
  score_file: str | None
  wall_seconds: float
  environment: dict
  created: str
  config: dict
  # An evaluated set (configs/evaluate.py): {path, kind, ...}; None for a benchmark method.
  given: dict | None = None
  # DD-Ranking's fairness scores of an evaluated set (dcjax.benchmark.fairness), or None.
  fairness: dict | None = None
  # data.test_resample_size > 0: {size, down, up, top1_mean, top1_std, top5_mean, top5_std} of
  # the students tested on the resampled copy of the test split; None otherwise.
  resampled_test: dict | None = None
  # {name, top1, top5} of the teacher whose features the method selected with (herding,
  # k-center, RDED, PCA with such a P); None when the method used none.
  feature_teacher: dict | None = None
  # Of wall_seconds, those before the first student started: splits, scores, teachers and the
  # method's compression (SRe2L's recover) and the set written. None in results written before
  # 2026-12-07.
  setup_seconds: float | None = None
  # The first 16 hex digits of the sha256 of score_file's bytes: two machines' score files
  # share a name (their config's key) but not always their numbers, and so their selections.
  # None where no score file was read, and in results written before 2026-12-07 (evening).
  score_sha256: str | None = None
  # {name, top1, top5} of the BatchNorm teacher SRe2L recovered its images from (config block
  # 'sre2l.teacher'); None for other methods, and in results written before 2026-12-07 (night).
  sre2l_teacher: dict | None = None

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


OPTIONAL_RUN_FIELDS = ("resampled_top1", "resampled_top5")

# Fields every results.json must have, with the type(s) report accepts. Older files (written
# before some fields existed) still load: only these are required.
REQUIRED: dict[str, Any] = dict(
    method=str, dataset=str, ipc=int, protocol=str, model=str, top1_mean=Real, top1_std=Real,
    top5_mean=Real, top5_std=Real, runs=list, storage=dict)

assert set(REQUIRED) <= {f.name for f in dataclasses.fields(Results)}
