"""The benchmark runner: compress a training split, train fresh students on it, test them.

`run` reads top to bottom in the data's order: open the splits -> (scores / the teacher, only
when the method or the labels need them) -> select or distill -> combine -> store -> train one
student per seed -> test -> results.json. Every stage below takes plain values; the config is
read by `config_args` only. Bad input is refused before the workdir is written; `results.json`
is written last, so a workdir holds a finished run or none (`workdir`).
"""

from __future__ import annotations

import datetime
import errno
import functools
import hashlib
import json
import os
import platform
import sys
import time
from typing import Any

import jax
import numpy as np

import dcjax
from dcjax import layers, resample
from dcjax.benchmark import config_args, fairness, methods
from dcjax.benchmark.results import Results, Run
from dcjax.benchmark.workdir import COMPRESSED, Workdir, barrier, is_writer
from dcjax.data import files, given, sources, splits, store
from dcjax.errors import UserError, user_input
from dcjax.protocols import Recipe
from dcjax.runners import scoring, tensorboard
from dcjax.runners import student as student_lib
from dcjax.runners import teacher as teacher_lib


def run(config, workdir: str) -> dict[str, Any]:
  """Run the benchmark described by `config`, writing into `workdir`; returns results.json's
  content. Raises UserError for bad input, with nothing written. Rerunning the same command
  after an interruption resumes it: finished seeds are kept, the running seed continues from
  its last checkpoint. A config with job 'evaluate' (configs/evaluate.py) trains on the set
  at config.compressed instead of compressing the training split."""
  if config.get("job") == "evaluate":
    config = config_args.resolve_evaluate(config)
  wd = Workdir(workdir, json.loads(config.to_json()), seeds=config.seeds,
               overwrite=config.overwrite)
  try:
    return _run(config, wd)
  except (OSError, ValueError) as e:
    # A full disk, a read-only or forbidden directory: what finished is kept (every file is
    # written atomically, checkpoints by orbax), and the same command resumes once there is
    # room. Orbax reports a full disk as a ValueError from tensorstore.
    if isinstance(e, OSError) and e.errno in _WRITE_ERRORS:
      where, why = e.filename or workdir, e.strerror
    elif isinstance(e, ValueError) and "No space left on device" in str(e):
      where, why = f"a checkpoint in {workdir}", "No space left on device"
    else:
      raise
    raise UserError(f"cannot write {where}: {why}; free space or fix the permissions, then "
                    f"rerun the same command to resume") from e
  finally:
    wd.release()


_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _teacher_summary(teacher: tuple) -> dict:
  """{name (its cache folder's name: dataset, model, config hash), top1, top5} of a teacher."""
  info = teacher[2]
  return {"name": os.path.basename(os.path.normpath(info["dir"])), "top1": info["top1"],
          "top5": info["top5"]}


def _run(config, wd: Workdir) -> dict[str, Any]:
  t_start = time.perf_counter()
  wd.check()
  config_args.check(config)
  train_src, test_src = open_splits(config)
  evaluating = config.job == "evaluate"
  if not evaluating:
    check_ipc(train_src, config.ipc, config.combine.k)
  test_images, test_labels = load_test(config, test_src)
  resampled_images = resampled_test_images(config, test_images)
  data = Stages(config, train_src, test_images, test_labels)
  recipe = config_args.eval_recipe(config)
  given_set = None
  if evaluating:
    compressed, given_set = read_given_set(config, data, train_src, recipe)
  else:
    compressed = compress(config, data)
  # The teachers the method read (the features herding, k-center, RDED select with; the
  # BatchNorm teacher SRe2L recovers from): recorded, so two runs of the same selection on
  # different machines can be told apart.
  read = {name: _teacher_summary(t) for name, t in data.teachers_read.items()}
  feature_teacher, sre2l_teacher = read.get("teacher"), read.get("sre2l.teacher")
  soft = recipe.labels == "teacher"
  teacher_model, teacher_vars, teacher_info = data.teacher if soft else (None, None, None)
  student = config_args.student(config, train_src.num_classes, data.image_shape, data.mesh,
                                teacher=teacher_model)

  # Inputs are valid: from here on the workdir is written (by process 0 of a multi-process
  # run; the others wait for it and read the same files).
  wd.prepare()
  image_bytes = write_set(wd.join(COMPRESSED), compressed, config, wd.config, train_src, wd)
  storage = storage_costs(recipe, len(compressed.labels), train_src.num_classes, image_bytes,
                          teacher_info["param_bytes"] if teacher_info else 0)
  k = config.combine.k
  if given_set is not None:  # what the given files cost, not dcjax's PNG copy of them
    storage["image_bytes"] = given_set.image_bytes
    storage["soft_label_bytes"] = given_set.soft_label_bytes if recipe.labels == "stored" else 0
    _log(f"evaluate: {len(compressed.labels)} images from {given_set.path} "
         f"({given_set.kind}), {given_set.image_bytes / 1e3:.1f} KB"
         + (f" + {given_set.soft_label_bytes / 1e3:.1f} KB soft labels"
            if storage["soft_label_bytes"] else "") + f" -> copied to {wd.join(COMPRESSED)}")
  else:
    _log(f"compressed set: {len(compressed.labels)} images ({config.ipc}/class"
         + (f", each tiling {k}x{k} source images" if k > 1 else "") + "), "
         f"{image_bytes / 1e3:.1f} KB -> {wd.join(COMPRESSED)}")

  setup_seconds = time.perf_counter() - t_start
  seeds = range(config.seed, config.seed + config.seeds)
  targets = None
  if recipe.labels == "stored":
    targets = given.soft_targets(given_set.soft_labels, recipe.temperature)
  runs = [train_and_test(wd, student, compressed, seed, i, config, test_images, test_labels,
                         teacher_vars, targets, resampled_images)
          for i, seed in enumerate(seeds)]
  ipc = config.ipc
  if given_set is not None:
    ipc = max(1, round(len(compressed.labels) / train_src.num_classes))
  top1s, top5s = np.array([r.top1 for r in runs]), np.array([r.top5 for r in runs])
  fair = None
  if evaluating and config.fairness.enabled:
    counts = np.bincount(np.asarray(train_src.labels), minlength=train_src.num_classes)
    fair = fairness.scores(config, top1s, float(top1s.mean()) if recipe.labels == "hard" else
                           None, ipc, int(counts.min()), run)
  results = Results(
      method="evaluate" if evaluating else config.method, dataset=config.dataset, ipc=ipc,
      num_images=len(compressed.labels), combine_k=k, num_source_images=compressed.num_sources,
      num_classes=train_src.num_classes, image_shape=list(compressed.images.shape[1:]),
      protocol=recipe.protocol, model=config.eval.model, recipe=recipe.to_dict(),
      top1_mean=float(top1s.mean()), top1_std=float(top1s.std()),
      top5_mean=float(top5s.mean()), top5_std=float(top5s.std()),
      runs=[r.to_json() for r in runs], storage=storage,
      teacher=({k: teacher_info[k] for k in ("dir", "top1", "top5", "param_bytes")}
               | {"model": config.teacher.model} if teacher_info else None),
      test_examples=len(test_labels), test_split=f"{test_src.name} {test_src.split}",
      resampled_test=_resampled_summary(config, runs) if resampled_images is not None else None,
      selection_seed=config.seed, score_file=data.score_file, feature_teacher=feature_teacher,
      score_sha256=files.file_sha256(data.score_file)[:16] if data.score_file else None,
      sre2l_teacher=sre2l_teacher,
      wall_seconds=time.perf_counter() - t_start, setup_seconds=setup_seconds,
      environment=_environment(config),
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      config=wd.config,
      given=(dict(path=given_set.path, kind=given_set.kind, num_images=len(compressed.labels),
                  image_bytes=given_set.image_bytes, soft_label_bytes=given_set.soft_label_bytes,
                  has_soft_labels=given_set.soft_labels is not None)
             if given_set is not None else None),
      fairness=fair).to_json()
  wd.save_results(results)
  if is_writer():
    print(summary_line(results), flush=True)
  barrier("results")
  return results


def open_splits(config) -> tuple[sources.Source, sources.Source]:
  """(train, test). With data.validation_per_class = N > 0: (train minus N held-out examples
  per class, those held-out examples), so settings can be chosen without the test split."""
  kw = dict(data_dir=config.data.dir, synthetic=dict(config.data.synthetic))
  train_src = sources.open_source(config.dataset, "train", **kw)
  if config.data.validation_per_class:
    return splits.holdout(train_src, config.data.validation_per_class,
                          config.data.validation_seed)
  test_src = sources.open_source(config.dataset, "test", **kw)
  check_splits(train_src, test_src, config.dataset)
  return train_src, test_src


def _origin(src: sources.Source):
  """Where a source's examples come from (a folder's root and files, parquet files), or None."""
  if hasattr(src, "files"):
    return getattr(src, "root", None), tuple(src.files)
  return None


def check_splits(train_src: sources.Source, test_src: sources.Source, dataset: str) -> None:
  """UserError unless the test split is a different set of examples with the same classes."""
  if _origin(train_src) is not None and _origin(train_src) == _origin(test_src):
    raise UserError(f"dataset {dataset} has no separate test split (the same files would be "
                    f"trained and tested on); give a folder with train/ and test/ (or val/) "
                    f"subfolders, or parquet files named train-*/test-*")
  if list(train_src.class_names) != list(test_src.class_names):
    only_train = sorted(set(train_src.class_names) - set(test_src.class_names))
    only_test = sorted(set(test_src.class_names) - set(train_src.class_names))
    detail = "; ".join(f"only in {split}: {', '.join(map(str, names[:5]))}"
                       for split, names in (("train", only_train), ("test", only_test)) if names)
    raise UserError(f"the train and test splits of {dataset} have different classes "
                    f"({len(train_src.class_names)} vs {len(test_src.class_names)}"
                    + (f"; {detail}" if detail else "; the same names in another order")
                    + "): test labels would name the wrong classes")


def check_ipc(train_src: sources.Source, ipc: int, k: int) -> None:
  """UserError unless every class holds the k²·ipc source images the set needs."""
  counts = np.bincount(np.asarray(train_src.labels), minlength=train_src.num_classes)
  c = int(counts.argmin())
  if counts[c] >= ipc * k * k:
    return
  name = f" ({train_src.class_names[c]})" if train_src.class_names else ""
  tiles = f" with combine.k={k} ({k * k} source images per stored image)" if k > 1 else ""
  if counts[c] < k * k:
    raise UserError(f"class {c}{name} has {counts[c]} training examples, fewer than one stored "
                    f"image needs{tiles}; remove the class or use a smaller combine.k")
  raise UserError(f"ipc={ipc} is larger than the smallest class allows{tiles}: class {c}{name} "
                  f"has {counts[c]} examples; use --config.ipc <= {counts[c] // (k * k)}")


def _cache_path(config, src: sources.Source, size) -> str | None:
  """The decode cache of a whole split (data.cache_dir), or None."""
  if not config.data.cache_dir:
    return None
  os.makedirs(config.data.cache_dir, exist_ok=True)
  return os.path.join(config.data.cache_dir, f"{_slug(src.name)}-{src.split}-{size}.npz")


def resampled_test_images(config, test_images: np.ndarray) -> np.ndarray | None:
  """The test split passed through a tile's down/up resampling (data.test_resample_size > 0),
  or None."""
  size = config.data.test_resample_size
  if not size:
    return None
  height, width = test_images.shape[1:3]
  if size >= min(height, width):
    raise UserError(f"data.test_resample_size={size} must be below the test images' size "
                    f"{height}x{width}")
  down_up = jax.jit(functools.partial(resample.down_up, size=size, down=config.combine.resample,
                                      up=config.eval.resample))
  out = np.concatenate([np.asarray(down_up(test_images[i:i + 2048]))
                        for i in range(0, len(test_images), 2048)])
  _log(f"test split also resampled {height}->{size}->{height} px "
       f"({config.combine.resample} down, {config.eval.resample} up)")
  return out


def _resampled_summary(config, runs: list[Run]) -> dict[str, Any]:
  top1 = np.array([r.resampled_top1 for r in runs])
  top5 = np.array([r.resampled_top5 for r in runs])
  return dict(size=config.data.test_resample_size, down=config.combine.resample,
              up=config.eval.resample, top1_mean=float(top1.mean()), top1_std=float(top1.std()),
              top5_mean=float(top5.mean()), top5_std=float(top5.std()))


def load_test(config, test_src: sources.Source) -> tuple[np.ndarray, np.ndarray]:
  return sources.load_images(test_src, crop_ratio=config.data.test_crop_ratio,
                             cache_path=_cache_path(config, test_src, config.data.image_size),
                             **config_args.load_options(config))


class Stages:
  """What the methods and the soft labels may need of the training split, each computed at
  most once and only when first asked for: the decoded split, its scores, the teacher and the
  teacher's features. Plain values in, plain values out (the config is read here once)."""

  def __init__(self, config, train_src, test_images, test_labels):
    self.config, self.train_src = config, train_src
    self.test_images, self.test_labels = test_images, test_labels
    self.image_shape = tuple(test_images.shape[1:])
    self.mean, self.std = config_args.normalisation(config, self.image_shape[-1])
    self.mesh = student_lib.make_mesh(config.eval.num_devices)
    self.load_options = config_args.load_options(config)
    self._decoded: dict = {}
    self.score_file = None
    self.teachers_read: dict[str, tuple] = {}  # config block name -> teacher, as read

  def split_images(self, src: sources.Source, size) -> np.ndarray:
    """The whole split `src` at `size`, decoded once (cached in data.cache_dir if set)."""
    if (src.name, src.split, size) not in self._decoded:
      self._decoded[src.name, src.split, size] = sources.load_images(
          src, **(self.load_options | dict(size=size)),
          cache_path=_cache_path(self.config, src, size))[0]
    return self._decoded[src.name, src.split, size]

  def load(self, indices) -> np.ndarray:
    """Training images `indices` at the run's resolution, checked against the test images."""
    images = sources.load_images(self.train_src, np.asarray(indices),
                                 **(self.load_options | dict(progress=False)))[0]
    if images.shape[1:] != self.image_shape:
      raise UserError(f"train images {images.shape[1:]} and test images {self.image_shape} "
                      f"differ in shape; set --config.data.image_size")
    return images

  @functools.cached_property
  def teacher(self) -> tuple:
    return self.teacher_from("teacher")

  def teacher_from(self, name: str) -> tuple:
    """The teacher of config block `name` ('teacher', 'sre2l.teacher'): cached or trained, once
    per run (teachers_read holds it)."""
    if name not in self.teachers_read:
      self.teachers_read[name] = teacher_lib.get_teacher(
          self.train_src, self.test_images, self.test_labels, mean=self.mean, std=self.std,
          mesh=self.mesh, **config_args.teacher_args(self.config, name),
          train_images=lambda: self.split_images(self.train_src, self.config.data.image_size))
    return self.teachers_read[name]

  @functools.cached_property
  def scores(self) -> dict[str, np.ndarray]:
    size = config_args.score_image_size(self.config)
    shape = (size, size, self.image_shape[-1]) if size else self.image_shape
    out, self.score_file = scoring.dataset_scores(
        self.train_src, lambda src: self.split_images(src, size), mean=self.mean, std=self.std,
        mesh=self.mesh, image_shape=shape, **config_args.score_args(self.config))
    return out

  @functools.cached_property
  def features(self) -> np.ndarray:
    model, variables, _ = self.teacher
    return teacher_lib.features(model, variables,
                                self.split_images(self.train_src, self.config.data.image_size),
                                self.mean, self.std, self.config.eval.test_batch_size)


def compress(config, data: Stages) -> methods.Compressed:
  """The method's compressed set (selected and combined, or distilled)."""
  inputs = methods.Inputs(
      train=data.train_src, ipc=config.ipc, k=config.combine.k,
      key=jax.random.key(config.seed), options=config_args.method_options(config, config.method),
      load=data.load, scores=lambda: data.scores, teacher=lambda: data.teacher,
      features=lambda: data.features, teacher_from=data.teacher_from, mean=data.mean,
      std=data.std, progress=config.progress,
      resample=config.combine.resample)
  with user_input():
    return methods.get(config.method)(inputs)


def read_given_set(config, data: Stages, train_src: sources.Source, recipe: Recipe
                   ) -> tuple[methods.Compressed, given.GivenSet]:
  """The set at config.compressed, with the test split's classes and resolution."""
  g = given.read_given(config.compressed, train_source=lambda: train_src, load_train=data.load,
                       num_threads=config.data.num_threads)
  g = given.align_to_test(g, train_src.class_names, data.image_shape, log=_log)
  if recipe.labels == "stored" and g.soft_labels is None:
    raise UserError(f"eval.labels=stored but {config.compressed} stores no soft labels (an .npz "
                    "with a soft_labels array has them); use eval.labels=hard or teacher")
  return methods.Compressed(g.images, g.labels, g.indices), g


def write_set(path: str, c: methods.Compressed, config, config_json: dict,
              train_src: sources.Source, wd: Workdir | None = None) -> int:
  """Store the set (process 0; the others wait and read its manifest); its image bytes. With
  `wd`, students of the workdir that trained on another set are dropped before the others
  read them (Workdir.drop_students_of_another_set)."""
  manifest = None
  if is_writer():
    previous = wd.trained_set() if wd is not None else None
    manifest = store.write_compressed(
        path, c.images, c.labels, c.behind, dataset=config.dataset, split="train",
        method=config.method, config=config_json, class_names=train_src.class_names,
        num_classes=train_src.num_classes, source_fingerprint=sources.fingerprint(train_src),
        overwrite=True)
    dropped = wd.drop_students_of_another_set(previous, manifest) if wd is not None else 0
    if dropped:
      _log(f"the set came out different from the one this workdir's {dropped} finished seed(s) "
           f"trained on (another machine or code); they are trained again on this one")
  barrier("compressed")
  return (manifest or store.read_manifest(path))["image_bytes"]


def train_and_test(wd: Workdir, student: student_lib.Student, c: methods.Compressed, seed: int,
                   i: int, config, test_images, test_labels, teacher_vars,
                   targets: np.ndarray | None = None,
                   resampled_images: np.ndarray | None = None) -> Run:
  """One fresh student from `seed`: trained on the set (resuming from its checkpoint), tested
  on the test split (and on its resampled copy when given), saved as runs/seed_N.json; or read
  back if it finished earlier."""
  done = wd.finished_seed(seed)
  if done is not None:  # finished before an interruption
    _log(f"seed {seed}: top-1 {done['top1']:.2f}% (finished earlier)")
    return Run(**done)
  with (tensorboard.SummaryWriter(wd.join("tensorboard", f"seed_{seed}")) if is_writer()
        else _NoSummary()) as tb:
    def log_epoch(epoch, info):
      tb.scalar("train/loss", info["loss"], epoch + 1)
      tb.scalar("train/lr", info["lr"], epoch + 1)
      tb.flush()  # per epoch: a killed run keeps its curve (a resumed one adds a file)
    variables, stats = student_lib.train_student(
        student, c.images, c.labels if targets is None else targets, seed,
        teacher_variables=teacher_vars,
        checkpoint_dir=wd.join("checkpoints", f"seed_{seed}"),
        checkpoint_every=config.checkpoint_every, on_epoch=log_epoch,
        progress=config.progress, desc=f"seed {seed} ({i + 1}/{config.seeds})")
    top1, top5 = student_lib.evaluate(student, student.eval_fn(), variables, test_images,
                                      test_labels, config.eval.test_batch_size)
    tb.scalar("test/top1", top1, student.recipe.epochs)
    tb.scalar("test/top5", top5, student.recipe.epochs)
    r_top1 = r_top5 = None
    if resampled_images is not None:
      r_top1, r_top5 = student_lib.evaluate(student, student.eval_fn(), variables,
                                            resampled_images, test_labels,
                                            config.eval.test_batch_size)
      tb.scalar("test_resampled/top1", r_top1, student.recipe.epochs)
  result = Run(seed=seed, top1=top1, top5=top5, train_seconds=stats["train_seconds"],
               final_loss=stats["final_loss"], images_per_second=stats["images_per_second"],
               **(dict(resampled_top1=r_top1, resampled_top5=r_top5) if r_top1 is not None
                  else {}))
  wd.save_seed(seed, result.to_json())
  _log(f"seed {seed}: top-1 {top1:.2f}%  top-5 {top5:.2f}%  "
       + (f"(resampled test split: top-1 {r_top1:.2f}%)  " if r_top1 is not None else "")
       + f"({stats['train_seconds']:.0f} s, {stats['images_per_second']:.0f} img/s)")
  return result


def soft_label_bytes(epochs: int, num_images: int, num_classes: int) -> int:
  """Pre-computed soft labels as FKD-style label files store them: one fp16 vector of
  num_classes per image per epoch."""
  return epochs * num_images * num_classes * 2


def storage_costs(recipe: Recipe, num_images: int, num_classes: int, image_bytes: int,
                  teacher_param_bytes: int) -> dict[str, int]:
  """What each way of using the compressed set costs to store.

  soft_label_bytes is what pre-computed soft labels would take, as the FKD-style label files of
  the distillation literature store them: one fp16 vector per image per epoch.
  """
  soft = recipe.labels == "teacher"
  return dict(image_bytes=int(image_bytes),
              soft_label_bytes=soft_label_bytes(recipe.epochs, num_images, num_classes)
              if soft else 0,
              teacher_bytes=int(teacher_param_bytes) if soft else 0)


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


class _NoSummary:
  """A SummaryWriter that writes nothing (processes other than 0)."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def scalar(self, *args):
    pass

  def flush(self):
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
          + (f" tiling {r['num_source_images']} sources"
             if k > 1 and r.get("num_source_images") else "")  # a given set may not say
          + f", {_kb(r['storage']['image_bytes'])} images"
          + (f" + {_kb(r['storage']['soft_label_bytes'])} soft labels"
             if r["storage"].get("soft_label_bytes") else "") + " stored"
          + _fairness_text(r.get("fairness")) + _resampled_text(r.get("resampled_test")))


def _resampled_text(t: dict | None) -> str:
  if not t:
    return ""
  return f"; on the {t['size']} px resampled test split: top-1 {t['top1_mean']:.2f} %"


def _fairness_text(f: dict | None) -> str:
  if not f:
    return ""
  text = f"; IOR {f['ior']:+.2f} (random {f['random_top1']:.2f} %)"
  if "hlr" in f:
    text += f", HLR {f['hlr']:.2f} (full {f['full_top1']:.2f} %), LRS {f['lrs']:.3f}"
  return text


def _kb(n: int) -> str:
  return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def _environment(config) -> dict[str, Any]:
  import flax
  env = dict(dcjax=dcjax.__version__, jax=jax.__version__, flax=flax.__version__,
             python=platform.python_version(), backend=jax.default_backend(),
             devices=[d.device_kind for d in jax.devices()][:1], device_count=jax.device_count(),
             machine=platform.machine())
  if env["backend"] == "cpu":  # CPU kinds and thread counts differ in float rounding
    env["cpu"] = cpu_model()
    # A VM may name two CPU kinds alike ('AMD EPYC'); their vector units tell them apart.
    env["cpu_simd"], env["cpu_fingerprint"] = cpu_simd(), cpu_fingerprint()
    if hasattr(os, "sched_getaffinity"):
      env["cpu_threads"] = len(os.sched_getaffinity(0))
  if config.eval.model == "convnet":  # the students' convolution path (dcjax.layers)
    env["conv_path"] = layers.conv_path(config.eval.model_kwargs.get("impl"))
  return env


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo; the platform's processor string elsewhere)."""
  lines = _cpuinfo_lines("model name")
  return lines[0].split(":", 1)[1].strip() if lines else platform.processor()


def _cpuinfo_lines(*prefixes: str) -> list[str]:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      return sorted({line for line in f if line.startswith(prefixes)})
  except OSError:
    return []


def cpu_fingerprint() -> str:
  """A short hash of this machine's CPU model and instruction-set flags (/proc/cpuinfo; the
  platform's processor string elsewhere). Two machines with one model name but other vector
  units (an AMD EPYC with and one without AVX-512) train to other float rounding, and their
  teachers to other selections; JAX's compilation cache key names neither."""
  lines = _cpuinfo_lines("model name", "flags")
  text = "".join(lines) if lines else platform.processor() + platform.machine()
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def cpu_simd() -> str | None:
  """The widest x86 vector extension the CPU reports ('avx512f', 'avx2', 'avx', 'sse4_2'),
  else None (another architecture, or no /proc/cpuinfo)."""
  flags = set(" ".join(line.split(":", 1)[-1] for line in _cpuinfo_lines("flags")).split())
  return next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), None)


def _slug(name: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in name)[:80]
