"""Compression methods by name: the one registry the benchmark dispatches through.

A method is a function `(inputs: Inputs) -> Compressed`: the stored images, their labels and
the training-split indices behind every stored image. Selection methods only choose indices;
`selection(choose)` turns a chooser `(inputs, per_class) -> indices` into a method that
decodes the chosen images and, with `inputs.k > 1`, tiles every k x k same-class group into one
stored image (PCA's Combine). Distillation methods (RDED) build their images themselves.

Adding a method is one function and one line:

  def my_method(inputs, per_class):          # -> int [num_classes * per_class], by class
    ...
  methods.register("my_method", methods.selection(my_method))

then `--config.method=my_method`. Its settings are the config block of the same name, if the
config has one (`inputs.options`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dcjax import combine, rded, select
from dcjax.data.sources import Source
from dcjax.runners import recover

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What a method may use. The expensive parts are functions, computed at most once and only
  when a method calls them.

  train: the training split (labels, class names; images via `load`).
  ipc: stored images per class; k: the Combine factor (k x k sources per stored image).
  key: the selection key (from the config's selection seed).
  options: this method's settings (plain values).
  load(indices): training images uint8 [n, H, W, C] at the run's resolution, in that order.
  scores(): {name: float32 [N]} per-example scores of the training split.
  teacher(): (module, variables, info) of the benchmark's teacher.
  teacher_from(name): the same for the teacher recipe block `name` of the config (e.g.
    'sre2l.teacher'), trained once and cached like the benchmark's.
  features(): float32 [N, D] teacher features of the whole training split.
  mean, std: the students' normalisation; progress: show progress bars.
  """

  train: Source
  ipc: int
  k: int
  key: Array
  options: Mapping[str, Any]
  load: Callable[[np.ndarray], np.ndarray]
  scores: Callable[[], dict[str, np.ndarray]]
  teacher: Callable[[], tuple]
  features: Callable[[], np.ndarray]
  teacher_from: Callable[[str], tuple] | None = None
  mean: tuple = (0.5,)
  std: tuple = (0.5,)
  progress: bool = False
  resample: str = "linear"  # Combine's downscale into a tile (dcjax.resample.METHODS)


@dataclasses.dataclass(frozen=True)
class Compressed:
  """A compressed set: images uint8 [M, H, W, C] (float32 pixels in [0, 1] units for an
  evaluated set distilled as floats), labels int32 [M], and behind int [M, k*k] (the
  training-split indices each stored image is made of, tile order row-major)."""

  images: np.ndarray
  labels: np.ndarray
  behind: np.ndarray

  @property
  def num_sources(self) -> int:
    return int(np.asarray(self.behind).size)


Method = Callable[[Inputs], Compressed]
METHODS: dict[str, Method] = {}


def register(name: str, method: Method) -> Method:
  """Make `method` available as `--config.method=name` (replaces an earlier one of the name)."""
  METHODS[name] = method
  return method


def get(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
  return METHODS[name]


def selection(choose: Callable[[Inputs, int], np.ndarray]) -> Method:
  """A method from an index chooser: `choose(inputs, per_class)` returns int
  [num_classes * per_class] training indices grouped by class, per_class = k²·ipc; they are
  decoded and, for k > 1, tiled k x k (consecutive groups of k² become one stored image)."""

  @functools.wraps(choose)
  def method(inputs: Inputs) -> Compressed:
    k = inputs.k
    indices = np.asarray(choose(inputs, k * k * inputs.ipc))
    images = inputs.load(indices)
    labels = np.asarray(inputs.train.labels)[indices].astype(np.int32)
    behind = np.asarray(combine.tile_sources(indices, k), np.int64).reshape(-1, k * k)
    if k > 1:
      combine.check_tile_labels(labels, k)
      labels = np.asarray(combine.tile_labels(labels, k), np.int32)
      images = np.asarray(combine.tile(images, k, inputs.resample))
    return Compressed(images, labels, behind)

  return method


def difficulty(scores: Mapping[str, np.ndarray], name: str) -> np.ndarray:
  """Score `name` as a difficulty (lower = easier): AUM (a margin) is negated."""
  if name not in scores:
    raise ValueError(f"score {name!r} is not in the score file (it has {', '.join(scores)})")
  return -scores[name] if name == "aum" else scores[name]


def _labels(inputs: Inputs) -> np.ndarray:
  return np.asarray(inputs.train.labels)


def random(inputs: Inputs, per_class: int) -> np.ndarray:
  labels = _labels(inputs)
  return np.asarray(select.class_balanced(jnp.zeros(labels.shape), jnp.asarray(labels),
                                          inputs.key, num_classes=inputs.train.num_classes,
                                          ipc=per_class, rule="random"))


def by_score(inputs: Inputs, per_class: int, *, score: str, rule: str) -> np.ndarray:
  """The `rule` ('easy' | 'hard') end of each class by `score`."""
  d = difficulty(inputs.scores(), score)
  select.check_scores(d)
  return np.asarray(select.class_balanced(jnp.asarray(d), jnp.asarray(_labels(inputs)),
                                          inputs.key, num_classes=inputs.train.num_classes,
                                          ipc=per_class, rule=rule))


def ccs(inputs: Inputs, per_class: int) -> np.ndarray:
  """Coverage-centric selection over options['score'] (options: score, hard_cutoff, bins)."""
  o = inputs.options
  d = difficulty(inputs.scores(), o["score"])
  return np.asarray(select.ccs(d, _labels(inputs), inputs.key,
                               num_classes=inputs.train.num_classes, ipc=per_class,
                               hard_cutoff=o["hard_cutoff"], bins=o["bins"]))


def herding(inputs: Inputs, per_class: int) -> np.ndarray:
  return np.asarray(select.herding(inputs.features(), _labels(inputs),
                                   num_classes=inputs.train.num_classes, ipc=per_class))


def kcenter(inputs: Inputs, per_class: int) -> np.ndarray:
  return np.asarray(select.kcenter(inputs.features(), _labels(inputs), inputs.key,
                                   num_classes=inputs.train.num_classes, ipc=per_class))


def rded_method(inputs: Inputs) -> Compressed:
  """RDED (dcjax.rded) with the teacher as observer; options: candidates_per_class,
  crops_per_image, scale, ratio, batch_size."""
  o = inputs.options
  train = inputs.train
  kw = dict(ipc=inputs.ipc, k=inputs.k, candidates_per_class=o["candidates_per_class"],
            crops_per_image=o["crops_per_image"], scale=tuple(o["scale"]),
            ratio=tuple(o["ratio"]), batch_size=o["batch_size"])
  # Settings first: a bad one is refused before the teacher is trained.
  rded.check_settings(train.labels, train.num_classes, class_names=train.class_names, **kw)
  inputs.load(np.zeros(1, np.int64))  # the image shape check, before the teacher
  model, variables, _ = inputs.teacher()
  images, labels, behind = rded.distill(
      np.asarray(train.labels), inputs.load, inputs.key,
      rded.teacher_observer(model, inputs.mean, inputs.std), variables,
      num_classes=train.num_classes, class_names=train.class_names, progress=inputs.progress,
      **kw)
  return Compressed(images, labels, behind)


def sre2l_method(inputs: Inputs) -> Compressed:
  """SRe2L (dcjax.sre2l): ipc images per class recovered from the BatchNorm teacher of the
  config block 'sre2l.teacher' (options: dcjax.runners.recover.DEFAULTS and cache_dir). No
  training image is behind a recovered one."""
  if inputs.k != 1:
    raise ValueError("sre2l synthesises whole images: use combine.k=1")
  settings = recover.check_settings(inputs.options)  # before the teacher is trained
  image_shape = inputs.load(np.zeros(1, np.int64)).shape[1:]
  model, variables, info = inputs.teacher_from("sre2l.teacher")
  train = inputs.train
  path = recover.set_dir(inputs.options.get("cache_dir"), info["dir"], ipc=inputs.ipc,
                         num_classes=train.num_classes, image_shape=image_shape,
                         mean=inputs.mean, std=inputs.std,
                         key_data=np.asarray(jax.random.key_data(inputs.key)).tolist(),
                         settings=settings)
  images, labels = recover.recover_set(
      model, variables, inputs.key, ipc=inputs.ipc, num_classes=train.num_classes,
      image_shape=image_shape, mean=inputs.mean, std=inputs.std, settings=settings, path=path,
      progress=inputs.progress)
  return Compressed(images, labels, np.zeros((len(labels), 0), np.int64))


def pca(inputs: Inputs) -> Compressed:
  """PCA's Prune + Combine: the selection method named options['prune'] (default el2n_easy,
  with its own settings options['prune_options']) chooses k²·ipc images per class, tiled k x k
  (inputs.k: config combine.k)."""
  name = inputs.options.get("prune", "el2n_easy")
  if name in ("pca", "rded", "sre2l"):
    raise ValueError(f"pca.prune must be a selection method, got {name!r}")
  return get(name)(dataclasses.replace(inputs, options=inputs.options.get("prune_options", {})))


# name -> (score, rule). 'aum' is higher-is-easier; `difficulty` negates it.
SCORE_METHODS: dict[str, tuple[str, str]] = {
    "el2n_easy": ("el2n", "easy"), "el2n_hard": ("el2n", "hard"),
    "forgetting_easy": ("forgetting", "easy"), "forgetting_hard": ("forgetting", "hard"),
    "aum_easy": ("aum", "easy"), "aum_hard": ("aum", "hard"),
}

register("random", selection(random))
for _name, (_score, _rule) in SCORE_METHODS.items():
  register(_name, selection(functools.partial(by_score, score=_score, rule=_rule)))
register("ccs", selection(ccs))
register("herding", selection(herding))
register("kcenter", selection(kcenter))
register("rded", rded_method)
register("sre2l", sre2l_method)
register("pca", pca)
