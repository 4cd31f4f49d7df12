"""The benchmark runner: compress a training split, train fresh students on it, test them.

source -> select (methods: random, score-based, geometry) -> combine (PCA tiles, optional) ->
store -> train students (one per seed, hard or teacher labels) -> test on the real test split
-> results.json. Every user mistake is caught before anything is written; `results.json` is the
last file written (atomically), so a workdir either holds a finished run or none.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import dcjax
from dcjax import augment, combine, models, protocols, select
from dcjax.benchmark import methods
from dcjax.data import sources, splits, store
from dcjax.runners import tensorboard, student as train
from dcjax.runners import teacher as teacher_lib
from dcjax import rded
from dcjax.benchmark import results as results_schema
from dcjax.data.files import write_json_atomic
from dcjax.errors import UserError, unknown_name

RESULTS = results_schema.FILENAME
COMPRESSED = "compressed"
CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
RUNS = "runs"

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Per-dataset normalisation (mean, std) used when config.data.mean/std are unset.
NORMALISATION = {
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "tfds:imagenet2012": (IMAGENET_MEAN, IMAGENET_STD),
}


def normalisation(config, channels: int) -> tuple[tuple, tuple]:
  """(mean, std) per channel: config.data.mean/std, else the dataset's known statistics, else
  ImageNet's (3 channels) or 0.5 / 0.5 (1 channel)."""
  if config.data.mean is not None and config.data.std is not None:
    mean, std = tuple(config.data.mean), tuple(config.data.std)
  elif config.dataset in NORMALISATION:
    mean, std = NORMALISATION[config.dataset]
  else:
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
  if len(mean) not in (1, channels) or len(std) not in (1, channels):
    raise UserError(f"data.mean/std have {len(mean)}/{len(std)} entries; images have "
                    f"{channels} channels")
  return mean, std


def _model_kwargs(config) -> dict[str, Any]:
  return {k: v for k, v in config.eval.model_kwargs.items() if v is not None}


def eval_recipe(config) -> protocols.Recipe:
  """config.eval's recipe (its protocol preset with the block's overrides), or UserError."""
  try:
    return protocols.resolve(config.eval.protocol, dict(config.eval))
  except ValueError as e:
    raise UserError(f"eval: {e}") from None


def build_student(config, num_classes: int, image_shape: tuple, mesh=None) -> train.Student:
  """The Student for config.eval (protocol preset + overrides) on images of `image_shape`."""
  recipe = eval_recipe(config)
  aug = augment.get_augmentation(recipe.augment, tiles=config.combine.k,
                                 crop_scale=config.eval.crop_scale)
  kwargs = _model_kwargs(config)
  if config.eval.dtype not in ("float32", "bfloat16"):
    raise UserError(f"eval.dtype must be float32 or bfloat16, got {config.eval.dtype!r}")
  kwargs["dtype"] = jnp.dtype(config.eval.dtype)
  try:
    model = models.get_model(config.eval.model, num_classes, image_shape[0], **kwargs)
  except TypeError as e:
    raise UserError(f"eval.model_kwargs do not fit model {config.eval.model!r}: {e}") from None
  mean, std = normalisation(config, image_shape[-1])
  return train.Student(model, recipe, aug, mean, std,
                       mesh or train.make_mesh(config.eval.num_devices))


def _check_names(config) -> None:
  """Fail fast, before any data is read, on names that do not exist."""
  methods.check_method(config.method)
  if config.eval.model not in models.MODELS:
    raise unknown_name("model", config.eval.model, models.MODELS)
  recipe = eval_recipe(config)
  if config.combine.k < 1:
    raise UserError(f"combine.k must be >= 1, got {config.combine.k}")
  augment.get_augmentation(recipe.augment, tiles=config.combine.k,
                           crop_scale=config.eval.crop_scale)
  if config.seeds < 1:
    raise UserError(f"seeds must be >= 1, got {config.seeds}")


def _check_workdir(workdir: str, config) -> None:
  """A finished run is replaced only with --config.overwrite=True, or extended: the same
  config with more seeds keeps the finished seeds and trains the new ones."""
  if os.path.exists(os.path.join(workdir, RESULTS)) and not config.overwrite:
    finished = json.load(open(os.path.join(workdir, RESULTS)))
    saved = os.path.join(workdir, CONFIG)
    old = json.load(open(saved)) if os.path.exists(saved) else {}
    new = json.loads(config.to_json())
    diff = _run_differences(old, new)
    if diff or config.seeds <= len(finished["runs"]):
      raise UserError(f"workdir {workdir} already holds a finished run ({RESULTS}, "
                      f"{len(finished['runs'])} seeds"
                      + (f"; config differs: {'; '.join(diff)}" if diff else "")
                      + "); pass --config.overwrite=True to replace it, the same config with "
                      "more --config.seeds to extend it, or choose another --workdir")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir} exists and is not a directory")


def open_splits(config) -> tuple[sources.Source, sources.Source]:
  """(train, test). With data.validation_per_class = N > 0: (train minus N held-out examples
  per class, those held-out examples), so settings can be chosen without the test split."""
  kw = dict(data_dir=config.data.dir, synthetic=dict(config.data.synthetic))
  train_src = sources.open_source(config.dataset, "train", **kw)
  if config.data.validation_per_class:
    return splits.holdout(train_src, config.data.validation_per_class,
                          config.data.validation_seed)
  return train_src, sources.open_source(config.dataset, "test", **kw)


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
  """Dotted names of the fields that differ between two config dicts."""
  out = []
  for k in sorted(set(old) | set(new)):
    a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
    if isinstance(a, dict) and isinstance(b, dict):
      out += config_differences(a, b, f"{prefix}{k}.")
    elif a != b:
      out.append(f"{prefix}{k} ({a!r} -> {b!r})")
  return out


# Fields that may change between a run and its resumption.
_RESUMABLE_CHANGES = ("overwrite", "progress", "seeds", "distributed")


def _run_differences(old: dict, new: dict) -> list[str]:
  """Config differences that make two runs different runs (not overwrite, progress, seeds,
  distributed), as config_differences names them."""
  return config_differences({k: v for k, v in old.items() if k not in _RESUMABLE_CHANGES},
                            {k: v for k, v in new.items() if k not in _RESUMABLE_CHANGES})


def _is_writer() -> bool:
  """Multi-process runs share one workdir (a shared filesystem): process 0 writes it."""
  return jax.process_index() == 0


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"dcjax.benchmark.{name}")


def _prepare_workdir(workdir: str, config_json: dict, overwrite: bool) -> None:
  """Create the workdir, or check that the unfinished run in it has the same config."""
  saved = os.path.join(workdir, CONFIG)
  if overwrite:
    for name in (CHECKPOINTS, RUNS):
      shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
  elif os.path.exists(saved):
    old = json.load(open(saved))
    diff = _run_differences(old, config_json)
    if diff:
      raise UserError(f"workdir {workdir} holds an unfinished run with a different config "
                      f"({'; '.join(diff)}); rerun with the same config to resume it, pass "
                      f"--config.overwrite=True to start over, or choose another --workdir")
  os.makedirs(workdir, exist_ok=True)
  write_json_atomic(saved, config_json)


def storage_costs(recipe: protocols.Recipe, num_images: int, num_classes: int, image_bytes: int,
                  teacher_param_bytes: int) -> dict[str, int]:
  """What each way of using the compressed set costs to store.

  soft_label_bytes is what pre-computed soft labels would take, as the FKD-style label files of
  the distillation literature store them: one fp16 vector per image per epoch.
  """
  soft = recipe.labels == "teacher"
  return dict(image_bytes=int(image_bytes),
              soft_label_bytes=recipe.epochs * num_images * num_classes * 2 if soft else 0,
              teacher_bytes=int(teacher_param_bytes) if soft else 0)


def run(config, workdir: str) -> dict[str, Any]:
  """Run the benchmark described by `config`, writing into `workdir`; returns results.json's
  content. Raises UserError for bad input, with nothing written. Rerunning the same command
  after an interruption resumes it: finished seeds are kept, the running seed continues from
  its last checkpoint."""
  t_start = time.perf_counter()
  _check_workdir(workdir, config)
  _check_names(config)
  train_src, test_src = open_splits(config)
  # Combine (PCA): every stored image tiles k*k selected same-class images, so k*k*ipc source
  # images per class are selected for ipc stored images per class.
  k = config.combine.k
  per_class = config.ipc * k * k
  if config.ipc < 1:
    raise UserError(f"ipc must be >= 1, got {config.ipc}")
  select.check_ipc(train_src.labels, train_src.num_classes, per_class, train_src.class_names)

  load = dict(size=config.data.image_size, resize=config.data.resize,
              num_threads=config.data.num_threads, progress=config.progress)
  cache = None
  if config.data.cache_dir:
    os.makedirs(config.data.cache_dir, exist_ok=True)
    cache = os.path.join(config.data.cache_dir,
                         f"{_slug(test_src.name)}-{test_src.split}-{config.data.image_size}.npz")
  test_images, test_labels = sources.load_images(
      test_src, crop_ratio=config.data.test_crop_ratio, cache_path=cache, **load)
  image_shape = test_images.shape[1:]
  student = build_student(config, train_src.num_classes, image_shape)
  config_json = json.loads(config.to_json())

  # The teacher (soft labels, herding, k-center), the whole training split and its scores
  # (score-based methods) are computed only when needed, and at most once.
  lazy: dict[str, Any] = {}

  def teacher():
    if "teacher" not in lazy:
      lazy["teacher"] = teacher_lib.get_teacher(config, train_src, test_images, test_labels,
                                                student.mean, student.std, student.mesh)
    return lazy["teacher"]

  def all_train_images(size=config.data.image_size):
    """The whole training split at `size`, decoded once (cached in data.cache_dir if set)."""
    if ("train_images", size) not in lazy:
      path = None
      if config.data.cache_dir:
        path = os.path.join(config.data.cache_dir,
                            f"{_slug(train_src.name)}-{train_src.split}-{size}.npz")
      lazy["train_images", size] = sources.load_images(
          train_src, **(load | dict(size=size)), cache_path=path)[0]
    return lazy["train_images", size]

  def scores():
    if "scores" not in lazy:
      lazy["scores"], lazy["score_file"] = methods.dataset_scores(
          config, train_src, all_train_images(config.scores.image_size or config.data.image_size),
          student.mean, student.std, student.mesh)
    return lazy["scores"]

  def features():
    model, variables, _ = teacher()
    return methods.teacher_features(model, variables, all_train_images(), student.mean,
                                    student.std, config.eval.test_batch_size)

  if config.method == "rded":  # distilled from the teacher's best real crops, already tiled
    images, labels, behind = rded.distill_from_config(
        config, train_src, teacher, student.mean, student.std, load, image_shape)
    indices = behind.reshape(-1)
  else:
    indices = methods.select_indices(config.method, train_src, per_class,
                                     jax.random.key(config.seed), config,
                                     methods.Context(scores=scores, teacher_features=features))
    images, labels = sources.load_images(train_src, indices, **load)
    if images.shape[1:] != image_shape:
      raise UserError(f"train images {images.shape[1:]} and test images {image_shape} "
                      f"differ in shape; set --config.data.image_size")
    behind = combine.tile_sources(indices, k)  # source indices behind each stored image
    if k > 1:
      labels = np.asarray(combine.tile_labels(labels, k), np.int32)
      images = np.asarray(combine.tile(images, k))
  teacher_vars, teacher_info = None, None
  if student.recipe.labels == "teacher":
    teacher_model, teacher_vars, teacher_info = teacher()
    student = dataclasses.replace(student, teacher=teacher_model)

  # Inputs are valid: from here on the workdir is written (by process 0 of a multi-process
  # run; the others wait for it and read the same files).
  if _is_writer():
    _prepare_workdir(workdir, config_json, config.overwrite)
    store.write_compressed(
        os.path.join(workdir, COMPRESSED), images, labels, behind,
        dataset=config.dataset, split="train", method=config.method, config=config_json,
        class_names=train_src.class_names, num_classes=train_src.num_classes,
        source_fingerprint=sources.fingerprint(train_src), overwrite=True)
  _barrier("compressed")
  manifest = store.read_manifest(os.path.join(workdir, COMPRESSED))
  storage = storage_costs(student.recipe, len(labels), train_src.num_classes,
                          manifest["image_bytes"],
                          teacher_info["param_bytes"] if teacher_info else 0)
  _log(f"compressed set: {len(labels)} images ({config.ipc}/class"
       + (f", each tiling {k}x{k} source images" if k > 1 else "") + "), "
       f"{manifest['image_bytes'] / 1e3:.1f} KB -> {os.path.join(workdir, COMPRESSED)}")

  runs = []
  eval_batch = student.eval_fn()
  os.makedirs(os.path.join(workdir, RUNS), exist_ok=True)
  for i in range(config.seeds):
    seed = config.seed + i
    run_file = os.path.join(workdir, RUNS, f"seed_{seed}.json")
    if os.path.exists(run_file):  # finished before an interruption
      runs.append(json.load(open(run_file)))
      _log(f"seed {seed}: top-1 {runs[-1]['top1']:.2f}% (finished earlier)")
      continue
    tb_dir = os.path.join(workdir, "tensorboard", f"seed_{seed}")
    with (tensorboard.SummaryWriter(tb_dir) if _is_writer() else _NoSummary()) as tb:
      def log_epoch(epoch, info, tb=tb):
        tb.scalar("train/loss", info["loss"], epoch + 1)
        tb.scalar("train/lr", info["lr"], epoch + 1)
      variables, stats = train.train_student(
          student, images, labels, seed, teacher_variables=teacher_vars,
          checkpoint_dir=os.path.join(workdir, CHECKPOINTS, f"seed_{seed}"),
          checkpoint_every=config.checkpoint_every, on_epoch=log_epoch,
          progress=config.progress, desc=f"seed {seed} ({i + 1}/{config.seeds})")
      top1, top5 = train.evaluate(student, eval_batch, variables, test_images, test_labels,
                                  config.eval.test_batch_size)
      tb.scalar("test/top1", top1, student.recipe.epochs)
      tb.scalar("test/top5", top5, student.recipe.epochs)
    runs.append(dict(seed=seed, top1=top1, top5=top5, train_seconds=stats["train_seconds"],
                     final_loss=stats["final_loss"],
                     images_per_second=stats["images_per_second"]))
    if _is_writer():
      write_json_atomic(run_file, runs[-1])
    _log(f"seed {seed}: top-1 {top1:.2f}%  top-5 {top5:.2f}%  "
         f"({stats['train_seconds']:.0f} s, {stats['images_per_second']:.0f} img/s)")

  top1s = np.array([r["top1"] for r in runs])
  top5s = np.array([r["top5"] for r in runs])
  results = dict(
      method=config.method, dataset=config.dataset, ipc=config.ipc, num_images=len(labels),
      combine_k=k, num_source_images=len(indices),
      num_classes=train_src.num_classes, image_shape=list(images.shape[1:]),
      protocol=student.recipe.protocol, model=config.eval.model, recipe=student.recipe.to_dict(),
      # Standard deviation over seeds with ddof=0, as the distillation literature's code does.
      top1_mean=float(top1s.mean()), top1_std=float(top1s.std()),
      top5_mean=float(top5s.mean()), top5_std=float(top5s.std()),
      runs=runs, storage=storage,
      teacher=({k: teacher_info[k] for k in ("dir", "top1", "top5", "param_bytes")}
               | {"model": config.teacher.model} if teacher_info else None),
      test_examples=len(test_labels), test_split=f"{test_src.name} {test_src.split}",
      selection_seed=config.seed,
      score_file=lazy.get("score_file"),
      wall_seconds=time.perf_counter() - t_start, environment=_environment(),
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      config=config_json)
  if _is_writer():
    write_json_atomic(os.path.join(workdir, RESULTS), results)
    print(summary_line(results), flush=True)
  _barrier("results")
  return results


class _NoSummary:
  """A SummaryWriter that writes nothing (processes other than 0)."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def scalar(self, *args):
    pass


def summary_line(r: dict) -> str:
  """The one line a run ends with: what ran, top-1 / top-5 (mean ± std over seeds when there
  are several) and what the compressed set costs to store."""
  k = r.get("combine_k", 1)
  n = len(r["runs"])
  top1 = f"{r['top1_mean']:.2f}" + (f" ± {r['top1_std']:.2f}" if n > 1 else "")
  return (f"{r['method']}{f' k={k}' if k > 1 else ''} ipc={r['ipc']} {r['dataset']} "
          f"{r['protocol']} {r['model']}: top-1 {top1} %, top-5 {r['top5_mean']:.2f} % "
          f"({n} seed{'s' * (n > 1)}), {r['num_images']} images"
          + (f" tiling {r['num_source_images']} sources" if k > 1 else "")
          + f", {_kb(r['storage']['image_bytes'])} images"
          + (f" + {_kb(r['storage']['soft_label_bytes'])} soft labels"
             if r["storage"].get("soft_label_bytes") else "") + " stored")


def _kb(n: int) -> str:
  return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def _environment() -> dict[str, Any]:
  import flax
  return dict(dcjax=dcjax.__version__, jax=jax.__version__, flax=flax.__version__,
              python=platform.python_version(), backend=jax.default_backend(),
              devices=[d.device_kind for d in jax.devices()][:1], device_count=jax.device_count(),
              machine=platform.machine())


def _slug(name: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in name)[:80]
