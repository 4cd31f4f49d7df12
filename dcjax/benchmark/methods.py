"""Selection methods by name: which training examples a compressed set keeps.

Each method maps (training split, ipc, key, config, context) to source indices
int [num_classes * ipc], grouped by class. Score-based methods read per-example scores from a
score file (computed once by the training-dynamics runner and cached, or imported); geometry
methods (herding, k-center) use the teacher's penultimate features.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dcjax import augment, models, protocols, select, training
from dcjax.runners import dynamics, student as train
from dcjax.data import scorefile, sources, splits
from dcjax.errors import UserError, unknown_name
from dcjax.data.files import cache_dir

# name -> (score, rule). 'aum' is higher-is-easier, so it is negated into a difficulty first.
SCORE_METHODS: dict[str, tuple[str, str]] = {
    "el2n_easy": ("el2n", "easy"), "el2n_hard": ("el2n", "hard"),
    "forgetting_easy": ("forgetting", "easy"), "forgetting_hard": ("forgetting", "hard"),
    "aum_easy": ("aum", "easy"), "aum_hard": ("aum", "hard"),
}
FEATURE_METHODS = ("herding", "kcenter")
# Distillation methods build new images instead of selecting indices (dcjax.rded); the runner
# calls them in place of select_indices.
DISTILL_METHODS = ("rded",)
METHODS = ("random", *SCORE_METHODS, "ccs", *FEATURE_METHODS, *DISTILL_METHODS)


def check_method(name: str) -> None:
  if name not in METHODS:
    raise unknown_name("method", name, METHODS)


@dataclasses.dataclass
class Context:
  """What a method may need beyond the labels, computed lazily and at most once.

  scores(): {name: difficulty float32 [N]} of the training split (lower = easier).
  teacher_features(): float32 [N, D] penultimate features of the training split.
  """

  scores: Callable[[], dict[str, np.ndarray]]
  teacher_features: Callable[[], np.ndarray]


def difficulty(scores: dict[str, np.ndarray], name: str) -> np.ndarray:
  """Score `name` as a difficulty (lower = easier): AUM and margins are negated."""
  if name not in scores:
    raise UserError(f"score {name!r} is not in the score file (it has {', '.join(scores)})")
  return -scores[name] if name == "aum" else scores[name]


def select_indices(method: str, train_src: sources.Source, ipc: int, key: jax.Array, config,
                   ctx: Context) -> np.ndarray:
  """Source indices int32 [num_classes * ipc] chosen by `method`, grouped by class."""
  check_method(method)
  labels = np.asarray(train_src.labels)
  k = train_src.num_classes
  if method == "random":
    return np.asarray(select.class_balanced(jnp.zeros(labels.shape), jnp.asarray(labels), key,
                                            num_classes=k, ipc=ipc, rule="random"))
  if method in SCORE_METHODS:
    score, rule = SCORE_METHODS[method]
    d = difficulty(ctx.scores(), score)
    return np.asarray(select.class_balanced(jnp.asarray(d), jnp.asarray(labels), key,
                                            num_classes=k, ipc=ipc, rule=rule))
  if method == "ccs":
    d = difficulty(ctx.scores(), config.scores.ccs_score)
    return np.asarray(select.ccs(d, labels, key, num_classes=k, ipc=ipc,
                                 hard_cutoff=config.scores.ccs_hard_cutoff,
                                 bins=config.scores.ccs_bins))
  if method in DISTILL_METHODS:
    raise ValueError(f"{method!r} synthesizes images and selects no indices; it runs through "
                     f"dcjax.rded (benchmark.run does this)")
  feats = ctx.teacher_features()
  if method == "herding":
    return np.asarray(select.herding(feats, labels, num_classes=k, ipc=ipc))
  return np.asarray(select.kcenter(feats, labels, key, num_classes=k, ipc=ipc))


def needs_scores(method: str) -> bool:
  return method in SCORE_METHODS or method == "ccs"


def scores_config(scfg, image_shape: tuple, mean, std) -> dict[str, Any]:
  """Everything that determines the scores (it names and keys the score file)."""
  recipe = protocols.resolve(scfg.protocol, {f: scfg.get(f) for f in protocols.RECIPE_FIELDS})
  recipe = recipe.replace(epochs=int(scfg.epochs)).to_dict()
  return dict(scores=list(dynamics.SCORES), model=scfg.model,
              model_kwargs={k: v for k, v in scfg.model_kwargs.items() if v is not None},
              epochs=int(scfg.epochs), k=int(scfg.num_models), seed=int(scfg.seed),
              el2n_epoch=scfg.el2n_epoch, recipe=recipe, image_shape=list(image_shape),
              mean=list(mean), std=list(std))


def _cached_score_path(config, image_shape: tuple, mean, std) -> str:
  sc = scores_config(config.scores, image_shape, mean, std)
  return scorefile.score_path(config.scores.cache_dir or cache_dir("scores"), config.dataset,
                              "train", sc)


def dataset_scores(config, train_src: sources.Source, images: np.ndarray, mean, std,
                   mesh) -> tuple[dict[str, np.ndarray], str]:
  """The training split's scores: from `scores.file` (imported or earlier), from the cache,
  or computed by the dynamics runner (then cached). Returns (scores, path)."""
  scfg = config.scores
  if isinstance(train_src, splits.SubsetSource) and not scfg.file:
    # Validation mode (benchmark data.validation_per_class): scores are per-example properties
    # of the whole training split, so the subset reads its rows of the whole split's score
    # file (computed once, shared with test-mode runs). The scoring models have seen the
    # held-out examples; the students never do.
    base = train_src.base
    base_path = _cached_score_path(config, images.shape[1:], mean, std)
    base_images = images if os.path.exists(base_path) else sources.load_images(
        base, size=images.shape[1], progress=config.progress)[0]
    full, path = dataset_scores(config, base, base_images, mean, std, mesh)
    return {k: np.asarray(v)[train_src.indices] for k, v in full.items()}, path
  fp = sources.fingerprint(train_src)
  n = len(train_src)
  if scfg.file:
    loaded, _ = scorefile.load_scores(scfg.file, fingerprint=fp, n=n)
    return loaded, scfg.file
  sc = scores_config(scfg, images.shape[1:], mean, std)
  path = _cached_score_path(config, images.shape[1:], mean, std)
  if os.path.exists(path):
    loaded, _ = scorefile.load_scores(path, fingerprint=fp, n=n)
    return loaded, path
  if not scfg.allow_compute:
    raise UserError(f"no score file {path}; allow computing it with "
                    f"--config.scores.allow_compute=True or pass --config.scores.file")
  print(f"scores: training {scfg.num_models} x {scfg.model} for {scfg.epochs} epochs on all "
        f"{n} training images -> {path}", file=sys.stderr, flush=True)
  model = models.get_model(scfg.model, train_src.num_classes, images.shape[1],
                           **sc["model_kwargs"])
  out = dynamics.score_dynamics(
      images, train_src.labels, num_classes=train_src.num_classes, model=model,
      recipe=protocols.Recipe(**sc["recipe"]), mean=tuple(mean), std=tuple(std), num_models=sc["k"],
      epochs=sc["epochs"], seed=sc["seed"], mesh=mesh, el2n_epoch=scfg.el2n_epoch,
      checkpoint_dir=path + ".progress", progress=config.progress)
  if jax.process_index() == 0:  # every process holds the same scores
    scorefile.save_scores(path, out, dataset=config.dataset, split="train", fingerprint=fp,
                          score_config=sc)
  return out, path


def teacher_features(teacher_model, teacher_vars, images: np.ndarray, mean, std,
                     batch_size: int = 1000) -> np.ndarray:
  """Penultimate-layer features float32 [N, D] of the teacher on images uint8 [N, H, W, C]."""
  fn = jax.jit(lambda v, x: models.features(teacher_model, v, training.normalise(x, mean, std)))
  out = [np.asarray(fn(teacher_vars, images[i:i + batch_size]), np.float32)
         for i in range(0, len(images), batch_size)]
  return np.concatenate(out)
