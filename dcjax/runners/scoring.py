"""The scoring stage: per-example training-dynamics scores of a training split, computed once
by the dynamics runner and cached as a score file, or read from a given score file.

  scores, path = dataset_scores(train_src, load, dataset="fashion_mnist", model="convnet",
                                model_kwargs={"width": 32}, recipe=recipe, epochs=3,
                                num_models=2, seed=0, mean=mean, std=std, mesh=mesh)

The cache key (`score_key`) is everything that determines the scores; it names the file. It
does not change when a score is added to `dynamics.SCORES`: the key names the score set of
format 1 (`KEY_SCORES`), and a cached file that lacks a score the runner now computes is
recomputed in place.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Callable, Mapping

import jax
import numpy as np

from dcjax import models
from dcjax.data import scorefile, sources, splits
from dcjax.data.files import cache_dir, cache_fill_lock
from dcjax.errors import UserError
from dcjax.protocols import Recipe
from dcjax.runners import dynamics

# The score names the cache key has always carried. Frozen: adding a score to dynamics.SCORES
# must not rename (invalidate) every cached score file.
KEY_SCORES = ("el2n", "forgetting", "aum")


def score_key(*, model: str, model_kwargs: Mapping[str, Any], recipe: Recipe, epochs: int,
              num_models: int, seed: int, el2n_epoch: int | None, image_shape: tuple, mean,
              std) -> dict[str, Any]:
  """Everything that determines the scores (it names and keys the score file); ConvNet's `impl`
  is recorded as the path it runs here (`models.key_kwargs`)."""
  return dict(scores=list(KEY_SCORES), model=model,
              model_kwargs=models.key_kwargs(model, model_kwargs), epochs=int(epochs),
              k=int(num_models), seed=int(seed), el2n_epoch=el2n_epoch,
              recipe=recipe.replace(epochs=int(epochs)).to_dict(),
              image_shape=list(image_shape), mean=list(mean), std=list(std))


def default_cache_dir() -> str:
  return cache_dir("scores")


def dataset_scores(train_src: sources.Source, load: Callable[[sources.Source], np.ndarray], *,
                   dataset: str, model: str, model_kwargs: Mapping[str, Any], recipe: Recipe,
                   epochs: int, num_models: int, seed: int, mean, std, mesh,
                   image_shape: tuple, el2n_epoch: int | None = None, file: str | None = None,
                   file_score: str | None = None, file_indices: str | None = None,
                   cache_dir: str | None = None, allow_compute: bool = True,
                   progress: bool = True) -> tuple[dict[str, np.ndarray], str]:
  """The training split's scores {name: float32 [N]}, and the file they came from.

  From `file` when given: a dcjax score file (.npz, checked against the split's fingerprint),
  or, with `file_score` naming it, one plain per-example array (.npy, .npz, .txt, .csv; row r
  scores example r, or `file_indices[r]`; `scorefile.import_scores`); else from the cache under
  `cache_dir` (default $DCJAX_CACHE/scores); else computed by `dynamics.score_dynamics` (k =
  `num_models` `model`s trained with `recipe` for `epochs`) and cached. `load(source)` decodes
  a whole split uint8 [N, H, W, C] at `image_shape`; it is called only to compute.

  A held-out subset (`splits.SubsetSource`, validation mode) reads its rows of the whole split's
  scores: scores are per-example properties of the split, computed once and shared with test
  runs (the scoring models have seen the held-out examples; the students never do).
  """
  key = score_key(model=model, model_kwargs=model_kwargs, recipe=recipe, epochs=epochs,
                  num_models=num_models, seed=seed, el2n_epoch=el2n_epoch,
                  image_shape=image_shape, mean=mean, std=std)
  if isinstance(train_src, splits.SubsetSource) and not file:
    full, path = dataset_scores(
        train_src.base, load, dataset=dataset, model=model, model_kwargs=model_kwargs,
        recipe=recipe, epochs=epochs, num_models=num_models, seed=seed, mean=mean, std=std,
        mesh=mesh, image_shape=image_shape, el2n_epoch=el2n_epoch, cache_dir=cache_dir,
        allow_compute=allow_compute, progress=progress)
    return {k: np.asarray(v)[train_src.indices] for k, v in full.items()}, path
  fp = sources.fingerprint(train_src)
  n = len(train_src)
  if file:
    if file.endswith(".npz") and file_score is None:
      loaded, _ = scorefile.load_scores(file, fingerprint=fp, n=n)
      return loaded, file
    if file_score is None:
      raise UserError(f"scores.file {file} is a plain array of one score; name it with "
                      f"--config.scores.file_score=el2n (or forgetting, aum, ...)")
    return {file_score: scorefile.import_scores(file, file_indices, n=n, fingerprint=fp,
                                                name=file_score)}, file
  path = scorefile.score_path(cache_dir or default_cache_dir(), dataset, "train", key)
  # Runs side by side on one machine (the grid's --workers) compute it once: the second waits
  # for the lock and then reads the file.
  lock = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")
  with cache_fill_lock(lock, enabled=jax.process_count() == 1):
    if os.path.exists(path):
      loaded, _ = scorefile.load_scores(path, fingerprint=fp, n=n)
      if set(dynamics.SCORES) <= set(loaded):
        return loaded, path
      print(f"scores: {path} lacks {', '.join(sorted(set(dynamics.SCORES) - set(loaded)))}; "
            f"recomputing it", file=sys.stderr, flush=True)
    old = scorefile.score_path(cache_dir or default_cache_dir(), dataset, "train",
                              dict(key, model_kwargs=models.legacy_key_kwargs(model_kwargs)))
    legacy = f" ({old} {models.LEGACY_NOTE})" if old != path and os.path.exists(old) else ""
    if not allow_compute:
      raise UserError(f"no score file {path}{legacy}; allow computing it with "
                      f"--config.scores.allow_compute=True or pass --config.scores.file")
    print(f"scores: training {num_models} x {model} for {epochs} epochs on all {n} training "
          f"images -> {path}{legacy}", file=sys.stderr, flush=True)
    net = models.get_model(model, train_src.num_classes, image_shape[0], **key["model_kwargs"])
    out = dynamics.score_dynamics(
        load(train_src), train_src.labels, num_classes=train_src.num_classes, model=net,
        recipe=Recipe(**key["recipe"]), mean=tuple(mean), std=tuple(std), num_models=key["k"],
        epochs=key["epochs"], seed=key["seed"], mesh=mesh, el2n_epoch=el2n_epoch,
        checkpoint_dir=path + ".progress", progress=progress)
    if jax.process_index() == 0:  # every process holds the same scores
      scorefile.save_scores(path, out, dataset=dataset, split="train", fingerprint=fp,
                            score_config=key)
      shutil.rmtree(path + ".progress", ignore_errors=True)  # the score file is what is kept
    return out, path
