"""The benchmark runner: compress a training split, train fresh students on it, test them.

source -> select -> store -> train students (one per seed) -> test on the real test split ->
results.json. Every user mistake is caught before anything is written; `results.json` is the
last file written (atomically), so a workdir either holds a finished run or none.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import dcjax
from dcjax import augment, models, protocols, select, sources, store, train
from dcjax.errors import UserError, unknown_name

RESULTS = "results.json"
COMPRESSED = "compressed"

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Per-dataset normalisation (mean, std) used when config.data.mean/std are unset.
NORMALISATION = {
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "tfds:imagenet2012": (IMAGENET_MEAN, IMAGENET_STD),
}


def _random_method(train_source: sources.Source, ipc: int, key: jax.Array, config) -> np.ndarray:
  """Class-balanced uniform random subset."""
  del config
  labels = jnp.asarray(train_source.labels)
  return np.asarray(select.class_balanced(jnp.zeros(labels.shape), labels, key,
                                          num_classes=train_source.num_classes, ipc=ipc,
                                          rule="random"))


# name -> (train source, ipc, key, config) -> source indices int [num_classes * ipc]
METHODS: dict[str, Callable[..., np.ndarray]] = {"random": _random_method}


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


def build_student(config, num_classes: int, image_shape: tuple, mesh=None) -> train.Student:
  """The Student for config.eval (protocol preset + overrides) on images of `image_shape`."""
  recipe = protocols.resolve(config.eval.protocol, dict(config.eval))
  aug = augment.get_augmentation(recipe["augment"])
  kwargs = _model_kwargs(config)
  if config.eval.dtype not in ("float32", "bfloat16"):
    raise UserError(f"eval.dtype must be float32 or bfloat16, got {config.eval.dtype!r}")
  kwargs["dtype"] = jnp.dtype(config.eval.dtype)
  try:
    model = models.get_model(config.eval.model, num_classes, image_shape[0], **kwargs)
  except TypeError as e:
    raise UserError(f"eval.model_kwargs do not fit model {config.eval.model!r}: {e}") from None
  mean, std = normalisation(config, image_shape[-1])
  return train.Student(model, recipe, aug, mean, std, mesh or train.make_mesh(config.eval.num_devices))


def _check_names(config) -> None:
  """Fail fast, before any data is read, on names that do not exist."""
  if config.method not in METHODS:
    raise unknown_name("method", config.method, METHODS)
  if config.eval.model not in models.MODELS:
    raise unknown_name("model", config.eval.model, models.MODELS)
  recipe = protocols.resolve(config.eval.protocol, dict(config.eval))
  augment.get_augmentation(recipe["augment"])
  if config.seeds < 1:
    raise UserError(f"seeds must be >= 1, got {config.seeds}")


def _check_workdir(workdir: str, overwrite: bool) -> None:
  if os.path.exists(os.path.join(workdir, RESULTS)) and not overwrite:
    raise UserError(f"workdir {workdir} already holds a finished run ({RESULTS}); pass "
                    f"--config.overwrite=True to replace it, or choose another --workdir")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir} exists and is not a directory")


def write_json_atomic(path: str, obj: Any) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=False)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def open_splits(config) -> tuple[sources.Source, sources.Source]:
  kw = dict(data_dir=config.data.dir, synthetic=dict(config.data.synthetic))
  return (sources.open_source(config.dataset, "train", **kw),
          sources.open_source(config.dataset, "test", **kw))


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def run(config, workdir: str) -> dict[str, Any]:
  """Run the benchmark described by `config`, writing into `workdir`; returns results.json's
  content. Raises UserError for bad input, with nothing written."""
  t_start = time.perf_counter()
  _check_workdir(workdir, config.overwrite)
  _check_names(config)
  train_src, test_src = open_splits(config)
  select.check_ipc(train_src.labels, train_src.num_classes, config.ipc, train_src.class_names)

  key = jax.random.key(config.seed)
  indices = METHODS[config.method](train_src, config.ipc, key, config)
  load = dict(size=config.data.image_size, resize=config.data.resize,
              num_threads=config.data.num_threads, progress=config.progress)
  images, labels = sources.load_images(train_src, indices, **load)
  cache = None
  if config.data.cache_dir:
    os.makedirs(config.data.cache_dir, exist_ok=True)
    cache = os.path.join(config.data.cache_dir,
                         f"{_slug(config.dataset)}-test-{config.data.image_size}.npz")
  test_images, test_labels = sources.load_images(
      test_src, crop_ratio=config.data.test_crop_ratio, cache_path=cache, **load)
  if test_images.shape[1:] != images.shape[1:]:
    raise UserError(f"train images {images.shape[1:]} and test images {test_images.shape[1:]} "
                    f"differ in shape; set --config.data.image_size")
  student = build_student(config, train_src.num_classes, images.shape[1:])

  # Inputs are valid: from here on the workdir is written.
  os.makedirs(workdir, exist_ok=True)
  config_json = json.loads(config.to_json())
  manifest = store.write_compressed(
      os.path.join(workdir, COMPRESSED), images, labels, [[int(i)] for i in indices],
      dataset=config.dataset, split="train", method=config.method, config=config_json,
      class_names=train_src.class_names, num_classes=train_src.num_classes,
      source_fingerprint=sources.fingerprint(train_src), overwrite=True)
  _log(f"compressed set: {len(labels)} images ({config.ipc}/class), "
       f"{manifest['image_bytes'] / 1e3:.1f} KB -> {os.path.join(workdir, COMPRESSED)}")

  runs = []
  eval_batch = student.eval_fn()
  for i in range(config.seeds):
    seed = config.seed + i
    variables, stats = train.train_student(student, images, labels, seed,
                                           progress=config.progress,
                                           desc=f"seed {seed} ({i + 1}/{config.seeds})")
    top1, top5 = train.evaluate(student, eval_batch, variables, test_images, test_labels,
                                config.eval.test_batch_size)
    runs.append(dict(seed=seed, top1=top1, top5=top5, train_seconds=stats["train_seconds"],
                     final_loss=stats["final_loss"],
                     images_per_second=stats["images_per_second"]))
    _log(f"seed {seed}: top-1 {top1:.2f}%  top-5 {top5:.2f}%  "
         f"({stats['train_seconds']:.0f} s, {stats['images_per_second']:.0f} img/s)")

  top1s = np.array([r["top1"] for r in runs])
  top5s = np.array([r["top5"] for r in runs])
  results = dict(
      method=config.method, dataset=config.dataset, ipc=config.ipc, num_images=len(labels),
      num_classes=train_src.num_classes, image_shape=list(images.shape[1:]),
      protocol=student.recipe["protocol"], model=config.eval.model, recipe=student.recipe,
      # Standard deviation over seeds with ddof=0, as the distillation literature's code does.
      top1_mean=float(top1s.mean()), top1_std=float(top1s.std()),
      top5_mean=float(top5s.mean()), top5_std=float(top5s.std()),
      runs=runs, storage=dict(image_bytes=manifest["image_bytes"]),
      test_examples=len(test_labels), selection_seed=config.seed,
      wall_seconds=time.perf_counter() - t_start, environment=_environment(),
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      config=config_json)
  write_json_atomic(os.path.join(workdir, RESULTS), results)
  print(summary_line(results), flush=True)
  return results


def summary_line(r: dict) -> str:
  return (f"{r['method']} ipc={r['ipc']} {r['dataset']} {r['protocol']} {r['model']}: "
          f"top-1 {r['top1_mean']:.2f} ± {r['top1_std']:.2f} %, top-5 {r['top5_mean']:.2f} % "
          f"({len(r['runs'])} seed{'s' * (len(r['runs']) > 1)}), {r['num_images']} images, "
          f"{r['storage']['image_bytes'] / 1e3:.1f} KB stored")


def _environment() -> dict[str, Any]:
  import flax
  return dict(dcjax=dcjax.__version__, jax=jax.__version__, flax=flax.__version__,
              python=platform.python_version(), backend=jax.default_backend(),
              devices=[d.device_kind for d in jax.devices()][:1], device_count=jax.device_count(),
              machine=platform.machine())


def _slug(name: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in name)[:80]
