"""DD-Ranking's fairness scores beside top-1 (DD-Ranking 0.2.0, `ddranking/metrics/`):

  IOR = acc(set) - acc(random subset of the same size, same protocol and labels)
  HLR = acc(full training split, hard labels) - acc(set, hard labels)
  LRS = (e^alpha - e^-1) / (e - e^-1),  alpha = lambda * IOR - (1 - lambda) * HLR, lambda = 0.5

IOR and HLR are reported in percentage points. DD-Ranking 0.2.0's code feeds those points
straight into alpha, so its exponent saturates (an IOR of 5 points gives e^2.5); dcjax follows
the formula of the DD-Ranking paper, with accuracies as fractions in [0, 1] inside alpha, so
LRS lies in [0, 1] when IOR and HLR lie in [-1, 1] (1: the set beats random by everything and
matches the full split). The random baseline and the full-split run are ordinary benchmark
runs (method random; the full split is random at the smallest class's size, i.e. every image
of a balanced dataset), made once under the cache directory, keyed by their whole config, and
reused by every later evaluation with the same key; the full-split accuracy may be given as a
number instead (config.fairness.full_top1), as DD-Ranking does for ImageNet.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from typing import Any, Callable

import numpy as np

from dcjax import models
from dcjax.data import files
from dcjax.errors import UserError

# Tiled augmentations of a set map to the same augmentation on whole images for its baselines.
_UNTILED = {"tile_dsa": "dsa", "tile_dsa_pixel": "dsa_pixel", "tile_dsa_noflip": "dsa",
            "tile_crop": "rrc_flip"}
# Fields that do not change what a baseline run computes.
_KEY_IGNORES = ("progress", "checkpoint_every", "overwrite", "compressed", "test_dataset",
                "fairness", "job", "distributed")


def lrs(ior_points: float, hlr_points: float, lam: float = 0.5) -> float:
  """Label-robust score from IOR and HLR in percentage points (see the module docstring)."""
  alpha = lam * ior_points / 100 - (1 - lam) * hlr_points / 100
  return (math.exp(alpha) - math.exp(-1)) / (math.e - math.exp(-1))


def baseline_config(config, ipc: int, *, hard: bool):
  """The benchmark config of a random subset of `ipc` images per class, trained as `config`
  trains its set (hard labels when `hard`)."""
  b = config.copy_and_resolve_references()
  with b.unlocked():
    b.job = "benchmark"
    b.method = "random"
    b.ipc = int(ipc)
    b.combine.k = 1
    b.overwrite = False
    if b.eval.augment in _UNTILED:
      b.eval.augment = _UNTILED[b.eval.augment]
    if b.eval.labels == "stored" or hard:
      b.eval.labels = "hard"
      if b.eval.protocol == "soft":
        b.eval.protocol = "hard"
    if "fairness" in b:
      b.fairness.enabled = False
  b.lock()
  return b


def baseline_dir(b, cache_dir: str | None = None) -> str:
  cfg = {k: v for k, v in json.loads(b.to_json()).items() if k not in _KEY_IGNORES}
  # The students' ConvNet path as it runs here, not as configured ('auto'): see key_kwargs.
  cfg["eval"]["model_kwargs"] = models.key_kwargs(b.eval.model, cfg["eval"]["model_kwargs"])
  digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
  slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", b.dataset).strip("._")[:40]
  return os.path.join(cache_dir or files.cache_dir("baselines"),
                      f"{slug}-random-ipc{b.ipc}-{digest}")


def baseline_top1(b, run: Callable[[Any, str], dict], what: str,
                  cache_dir: str | None = None) -> tuple[float, str]:
  """Mean top-1 of the baseline run `b` (run, or resumed, once; reused when finished)."""
  path = baseline_dir(b, cache_dir)
  results = os.path.join(path, "results.json")
  if os.path.isfile(results):
    with open(results, encoding="utf-8") as f:
      r = json.load(f)
  else:
    print(f"fairness: training the {what} ({b.ipc}/class, {b.seeds} seed"
          f"{'s' * (b.seeds > 1)}) -> {path}", file=sys.stderr, flush=True)
    r = run(b, path)
  return float(r["top1_mean"]), path


def scores(config, set_top1: np.ndarray, hard_top1: float | None, ipc: int, min_class: int,
           run: Callable[[Any, str], dict]) -> dict[str, Any]:
  """{ior, hlr, lrs, random_top1, full_top1, ...} for a set of `ipc` images per class whose
  students scored `set_top1` (per seed). `hard_top1` is the set's mean hard-label accuracy,
  None when it was trained on soft labels (HLR and LRS are then left out: evaluate it again
  with eval.labels=hard). `min_class` is the smallest class of the training split (the full
  split's per-class size). `run` is the benchmark runner."""
  fc = config.fairness
  lam = float(fc.lrs_lambda)
  if not 0 <= lam <= 1:
    raise UserError(f"fairness.lrs_lambda must lie in [0, 1], got {lam}")
  random_top1, random_dir = baseline_top1(
      baseline_config(config, ipc, hard=False), run, "matched random baseline", fc.cache_dir)
  out = dict(random_top1=random_top1, random_workdir=random_dir,
             ior=float(np.mean(set_top1)) - random_top1, lrs_lambda=lam)
  full = fc.full_top1
  if full is None and fc.compute_full:
    full, out["full_workdir"] = baseline_top1(
        baseline_config(config, min_class, hard=True), run, "full training split", fc.cache_dir)
  if full is not None and hard_top1 is not None:
    out.update(full_top1=float(full), hlr=float(full) - hard_top1)
    out["lrs"] = lrs(out["ior"], out["hlr"], lam)
  return out
