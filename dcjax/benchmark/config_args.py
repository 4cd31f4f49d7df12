"""Config -> plain arguments: the one place that reads a benchmark ConfigDict's blocks.

Everything below the runner (teacher, scoring, methods, RDED, the student runner) takes plain
arguments; these adapters turn `config.eval`, `config.teacher`, `config.scores`, `config.data`
and the methods' blocks into them, and `check` refuses a bad config before anything is read or
written.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from dcjax import augment, layers, models, protocols, resample
from dcjax.data import given, store
from dcjax.benchmark import methods
from dcjax.errors import UserError, unknown_name, user_input
from dcjax.runners import recover, scoring
from dcjax.runners import student as student_lib

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
# Per-dataset normalisation (mean, std) used when config.data.mean/std are unset.
NORMALISATION = {
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "tfds:imagenet2012": (IMAGENET_MEAN, IMAGENET_STD),
    # The DC/DSA code's CIFAR-10 statistics.
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "tfds:cifar10": (CIFAR10_MEAN, CIFAR10_STD),
}


def normalisation(config, channels: int) -> tuple[tuple, tuple]:
  """(mean, std) per channel: config.data.mean/std, else the dataset's known statistics, else
  ImageNet's (3 channels) or 0.5 / 0.5 (1 channel)."""
  if config.data.mean is not None and config.data.std is not None:
    mean, std = tuple(config.data.mean), tuple(config.data.std)
  elif config.dataset in NORMALISATION:
    mean, std = NORMALISATION[config.dataset]
  elif config.dataset.startswith("cifar10:"):
    mean, std = NORMALISATION["cifar10"]
  else:
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
  if len(mean) not in (1, channels) or len(std) not in (1, channels):
    raise UserError(f"data.mean/std have {len(mean)}/{len(std)} entries; images have "
                    f"{channels} channels")
  return mean, std


def recipe(block, name: str) -> protocols.Recipe:
  """The recipe of a config block with a `protocol` and recipe-field overrides (`eval`,
  `teacher`, `scores`)."""
  with user_input(f"{name}: "):
    return protocols.resolve(block.protocol, {f: block.get(f) for f in protocols.RECIPE_FIELDS})


def eval_recipe(config) -> protocols.Recipe:
  return recipe(config.eval, "eval")


def augmentation(config, r: protocols.Recipe):
  """The student's augmentation: the recipe's name with config.eval's crop_scale, resample and
  sharpen (the crop-resize of a tile is set by eval.resample, Combine's by combine.resample)."""
  return augment.get_augmentation(r.augment, tiles=config.combine.k,
                                  crop_scale=config.eval.crop_scale,
                                  resampling=config.eval.resample, sharpen=config.eval.sharpen)


def resolve_evaluate(config):
  """configs/evaluate.py: the config with `dataset` set to the split the set is tested on
  (config.test_dataset; else the dataset a dcjax manifest names; for an index list, the
  training split's dataset, config.dataset). UserError when none is known or when the set
  would be tested on itself."""
  path = config.get("compressed")
  if not path:
    raise UserError("evaluate needs the set: --config.compressed=PATH (a class-folder set, a "
                    ".parquet file or folder, an .npz, or an index file)")
  kind = given.kind_of(path)
  dataset = config.get("test_dataset")
  if kind == "indices":
    if dataset and config.dataset and dataset != config.dataset:
      raise UserError(f"an index list is tested on the dataset it indexes: config.dataset="
                      f"{config.dataset!r} and test_dataset={dataset!r} differ")
    dataset = dataset or config.dataset
    if not dataset:
      raise UserError(f"{path} is an index list: name the training split it indexes with "
                      "--config.dataset=NAME")
  elif not dataset and kind == "dcjax":
    dataset = store.read_manifest(path).get("dataset")
  if not dataset:
    raise UserError(f"say which test split to test {path} on: --config.test_dataset=NAME "
                    "(e.g. fashion_mnist, cifar10, tfds:imagenet2012, folder:/data/imagenet)")
  kind_name, _, where = dataset.partition(":")
  if kind_name in ("folder", "parquet") and where:
    a, b = os.path.realpath(where), os.path.realpath(path)
    if os.path.commonpath([a, b]) in (a, b):
      raise UserError(f"the set {path} and the test dataset {dataset} are the same files (or "
                      "one holds the other): a set is never tested on itself")
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.dataset = dataset
    c.test_dataset = dataset
  c.lock()
  return c


def model_kwargs(block) -> dict[str, Any]:
  return {k: v for k, v in block.model_kwargs.items() if v is not None}


def student(config, num_classes: int, image_shape: tuple, mesh=None,
            teacher=None) -> student_lib.Student:
  """The Student for config.eval (protocol preset + overrides) on images of `image_shape`."""
  r = eval_recipe(config)
  with user_input("eval: "):
    aug = augmentation(config, r)
  kwargs = dict(model_kwargs(config.eval), dtype=jnp.dtype(config.eval.dtype))
  try:
    model = models.get_model(config.eval.model, num_classes, image_shape[0], **kwargs)
    # Built abstractly (no compute): a bad kwarg value fails here, not after the workdir is
    # written.
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape)),
                                      train=False))
  except (TypeError, ValueError) as e:
    raise UserError(f"eval.model_kwargs do not fit model {config.eval.model!r}: {e}") from None
  mean, std = normalisation(config, image_shape[-1])
  return student_lib.Student(model, r, aug, mean, std,
                             mesh or student_lib.make_mesh(config.eval.num_devices),
                             teacher=teacher)


def load_options(config) -> dict[str, Any]:
  """`sources.load_images` options of the run's training images."""
  return dict(size=config.data.image_size, resize=config.data.resize,
              num_threads=config.data.num_threads, progress=config.progress)


def teacher_args(config, name: str = "teacher") -> dict[str, Any]:
  """`runners.teacher.get_teacher` keyword arguments from the teacher block `name`
  (config.teacher; 'sre2l.teacher' for SRe2L's BatchNorm teacher)."""
  t = config
  for part in name.split("."):
    t = t[part]
  return dict(dataset=config.dataset, model=t.model, model_kwargs=model_kwargs(t),
              seed=int(t.seed), recipe=None if t.get("weights") else recipe(t, name),
              weights=t.get("weights"), cache_dir=t.cache_dir, allow_train=t.allow_train,
              test_batch_size=config.eval.test_batch_size, progress=config.progress)


def score_args(config) -> dict[str, Any]:
  """`runners.scoring.dataset_scores` keyword arguments from config.scores."""
  s = config.scores
  return dict(dataset=config.dataset, model=s.model, model_kwargs=model_kwargs(s),
              recipe=recipe(s, "scores"), epochs=int(s.epochs), num_models=int(s.num_models),
              seed=int(s.seed), el2n_epoch=s.el2n_epoch, file=s.file,
              file_score=s.get("file_score"), file_indices=s.get("file_indices"),
              cache_dir=s.cache_dir,
              allow_compute=s.allow_compute, progress=config.progress)


def score_key(config, image_shape: tuple, mean, std) -> dict[str, Any]:
  """The score file's cache key (`runners.scoring.score_key`) of config.scores."""
  a = score_args(config)
  return scoring.score_key(model=a["model"], model_kwargs=a["model_kwargs"], recipe=a["recipe"],
                           epochs=a["epochs"], num_models=a["num_models"], seed=a["seed"],
                           el2n_epoch=a["el2n_epoch"], image_shape=image_shape, mean=mean,
                           std=std)


def score_image_size(config) -> int | None:
  return config.scores.image_size or config.data.image_size


def method_options(config, name: str) -> dict[str, Any]:
  """A method's settings: CCS's live in config.scores (ccs_*); PCA's in config.pca plus its
  prune method's; any other method's are the config block of its name, if there is one."""
  if name == "ccs":
    s = config.scores
    return dict(score=s.ccs_score, hard_cutoff=s.ccs_hard_cutoff, bins=s.ccs_bins)
  if name == "pca":
    o = dict(config.get("pca") or {})
    o.setdefault("prune", "el2n_easy")
    return dict(o, prune_options=method_options(config, o["prune"]))
  block = config.get(name)
  return dict(block) if hasattr(block, "items") else {}


def distributed_args(config) -> dict[str, Any]:
  """`runners.distributed.initialize` keyword arguments from config.distributed (none: a
  single-process run)."""
  block = config.get("distributed")
  return dict(block) if block is not None else {}


def _positive_int(value, name: str) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise UserError(f"{name} must be an integer >= 1, got {value!r}")


def check(config) -> None:
  """Refuse a bad config in one line (UserError) before any data is read: unknown names,
  out-of-range numbers, model kwargs that do not build."""
  if config.get("job") == "evaluate":
    if config.eval.labels == "stored" and config.eval.protocol == "soft":
      raise UserError("eval.labels=stored replaces the soft protocol's teacher; use "
                      "eval.protocol=hard (or small_data) with eval.labels=stored")
  elif config.method not in methods.METHODS:
    raise unknown_name("method", config.method, methods.METHODS)
  if config.get("job") != "evaluate" and config.eval.labels == "stored":
    raise UserError("eval.labels=stored trains on soft labels stored with a given set: use "
                    "configs/evaluate.py with --config.compressed=PATH")
  if config.method == "pca":
    prune = method_options(config, "pca")["prune"]
    if prune not in methods.METHODS or prune in ("pca", "rded", "sre2l"):
      raise UserError(f"pca.prune must be a selection method, got {prune!r}")
  if config.method == "sre2l":
    if config.combine.k != 1:
      raise UserError("sre2l synthesises whole images: use combine.k=1")
    with user_input(""):
      recover.check_settings(dict(config.sre2l))
    t = config.sre2l.teacher
    if not t.get("weights"):
      recipe(t, "sre2l.teacher")
      if t.model not in models.MODELS:
        raise unknown_name("sre2l.teacher.model", t.model, models.MODELS)
      try:  # built abstractly at 32 px: does the squeeze teacher have BatchNorm layers?
        net = models.get_model(t.model, 10, 32, **model_kwargs(t))
        shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                                 train=False))
      except (TypeError, ValueError) as e:
        raise UserError(f"sre2l.teacher.model_kwargs do not fit model {t.model!r}: {e}") from None
      if "batch_stats" not in shapes:
        raise UserError(f"sre2l.teacher ({t.model}, {model_kwargs(t)}) has no BatchNorm layer "
                        "to match; set --config.sre2l.teacher.model_kwargs.norm=batch")
  if config.eval.model not in models.MODELS:
    raise unknown_name("model", config.eval.model, models.MODELS)
  for name in ("ipc", "seeds", "combine.k", "eval.test_batch_size"):
    value = config
    for part in name.split("."):
      value = value[part]
    _positive_int(value, name)
  if config.eval.num_devices is not None:
    _positive_int(config.eval.num_devices, "eval.num_devices")
    if config.eval.num_devices > jax.device_count():
      raise UserError(f"eval.num_devices={config.eval.num_devices} but only "
                      f"{jax.device_count()} devices are visible")
  if isinstance(config.checkpoint_every, bool) or not isinstance(config.checkpoint_every, int) \
      or config.checkpoint_every < 0:
    raise UserError(f"checkpoint_every must be an integer >= 0 (0: only at the end), got "
                    f"{config.checkpoint_every!r}")
  if config.eval.dtype not in ("float32", "bfloat16"):
    raise UserError(f"eval.dtype must be float32 or bfloat16, got {config.eval.dtype!r}")
  r = eval_recipe(config)
  with user_input("eval: "):
    augmentation(config, r)
  with user_input("combine.resample: "):
    resample.check_method(config.combine.resample)
  size = config.data.test_resample_size
  if isinstance(size, bool) or not isinstance(size, int) or size < 0:
    raise UserError(f"data.test_resample_size must be an integer >= 0 (0: off), got {size!r}")
  recipe(config.scores, "scores")
  for name in ("eval", "teacher", "scores", "sre2l.teacher"):  # ConvNet's dcjax.layers path
    block = config
    for part in name.split("."):
      block = block.get(part) if block is not None else None
    impl = None if block is None else block.get("model_kwargs", {}).get("impl")
    if impl is not None and impl not in layers.IMPLS:
      raise UserError(f"{name}.model_kwargs.impl must be one of {', '.join(layers.IMPLS)}, "
                      f"got {impl!r}")
  if not config.teacher.get("weights"):
    recipe(config.teacher, "teacher")
