"""The teacher stage: a network trained on the full training split, cached and reused.

Soft-label protocols need a teacher. It is trained once per (dataset content, model, seed,
recipe, resolution, normalisation), saved with orbax under the teacher cache directory, and
reused by every later run with the same key. Training it is resumable like any student run.

With `teacher.weights` set to a torchvision `.pth` state dict, the teacher is imported instead
of trained (`dcjax.data.torch_import`, in torchvision's layout): converted once, tested on the test
split like a trained teacher, and cached the same way, keyed by the file's sha256 in place of
the seed and recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dcjax import augment, models, training
from dcjax.data import sources, torch_import
from dcjax.protocols import Recipe
from dcjax.runners import student as train
from dcjax.runners.checkpoint import Checkpointer
from dcjax.errors import UserError
from dcjax.data.files import (cache_dir, cache_fill_lock, file_sha256, fill_lock_file,
                              write_json_atomic)


def default_cache_dir() -> str:
  return cache_dir("teachers")


def teacher_spec(*, dataset_fingerprint: str, model: str, model_kwargs: Mapping[str, Any],
                 image_shape: tuple, mean, std, seed: int = 0, recipe: Recipe | None = None,
                 weights: str | None = None) -> dict:
  """Everything that determines the teacher's weights (and its recorded test accuracy); its
  hash names the cache entry. ConvNet's `impl` is recorded as the path it runs here
  (`models.key_kwargs`). An imported teacher (`weights`) is keyed by its file's content
  instead of the seed and recipe it would be trained with."""
  spec = dict(dataset_fingerprint=dataset_fingerprint, model=model,
              model_kwargs=models.key_kwargs(model, model_kwargs),
              image_shape=list(image_shape), mean=list(mean), std=list(std))
  if weights:
    # The weights fix the architecture (torchvision's): model_kwargs such as the default
    # teacher's ConvNet width do not apply.
    spec.update(model_kwargs={}, weights=dict(format="torchvision", sha256=_file_sha256(weights)))
  else:
    if recipe is None:
      raise ValueError("teacher_spec: a trained teacher needs its recipe")
    spec.update(seed=int(seed), recipe=recipe.to_dict())
  return spec


def _file_sha256(path: str) -> str:
  if not os.path.isfile(path):
    raise UserError(f"teacher.weights: no such file: {path}")
  return file_sha256(path)


def teacher_dir(cache_dir: str, dataset: str, spec: dict) -> str:
  digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
  slug = "".join(c if c.isalnum() else "_" for c in dataset)[:60]
  return os.path.join(cache_dir, f"{slug}-{spec['model']}-{digest}")


def _legacy_dir(cache_dir: str, dataset: str, spec: dict,
                model_kwargs: Mapping[str, Any]) -> str | None:
  """The finished cache entry `spec` had under the key of before 2026-12-07, if one exists."""
  old = dict(spec, model_kwargs=models.legacy_key_kwargs(model_kwargs))
  if "weights" in spec or old == spec:
    return None
  path = teacher_dir(cache_dir, dataset, old)
  return path if os.path.exists(os.path.join(path, "teacher.json")) else None


def _teacher_student(spec: dict, num_classes: int, mesh) -> train.Student:
  if "weights" in spec:  # imported: torchvision's layout whatever the resolution
    model = torch_import.torchvision_model(spec["model"], num_classes)
    recipe = None  # an imported teacher is only tested, never trained
  else:
    model = models.get_model(spec["model"], num_classes, spec["image_shape"][0],
                             **spec["model_kwargs"])
    recipe = Recipe(**spec["recipe"])
  aug = augment.get_augmentation(recipe.augment) if recipe else augment.get_augmentation("none")
  return train.Student(model, recipe, aug, tuple(spec["mean"]), tuple(spec["std"]), mesh)


def get_teacher(train_src: sources.Source, test_images: np.ndarray, test_labels: np.ndarray, *,
                dataset: str, model: str, model_kwargs: Mapping[str, Any], mean, std, mesh,
                seed: int = 0, recipe: Recipe | None = None, weights: str | None = None,
                cache_dir: str | None = None, allow_train: bool = True,
                train_images: Callable[[], np.ndarray] | None = None,
                test_batch_size: int = 1000, progress: bool = True) -> tuple[Any, Any, dict]:
  """(teacher module, variables, info): the network `model` trained with `recipe` from `seed`
  on the whole of `train_src` (or imported from torchvision `weights`), loaded from the cache
  under `cache_dir` (default $DCJAX_CACHE/teachers), else trained (when `allow_train`) and
  cached. `train_images()` returns the decoded training split uint8 [N, H, W, C] (asked for
  only when training); the teacher is tested on (test_images, test_labels).
  info = {dir, top1, top5, param_bytes, spec, ...}."""
  image_shape = tuple(test_images.shape[1:])
  spec = teacher_spec(dataset_fingerprint=sources.fingerprint(train_src), model=model,
                      model_kwargs=model_kwargs, image_shape=image_shape, mean=mean, std=std,
                      seed=seed, recipe=recipe, weights=weights)
  path = teacher_dir(cache_dir or default_cache_dir(), dataset, spec)
  student = _teacher_student(spec, train_src.num_classes, mesh)
  done_file = os.path.join(path, "teacher.json")
  finish = dict(test_images=test_images, test_labels=test_labels, path=path, spec=spec,
                test_batch_size=test_batch_size)
  if not os.path.exists(done_file):
    # Runs side by side on one machine (the grid's --workers) train it once: the second
    # waits for the lock and then finds teacher.json.
    with cache_fill_lock(fill_lock_file(path), enabled=jax.process_count() == 1):
      if not os.path.exists(done_file):
        legacy = _legacy_dir(cache_dir or default_cache_dir(), dataset, spec, model_kwargs)
        if weights:
          _import_teacher(student, weights, **finish)
        elif not allow_train:
          raise UserError(
              f"no teacher for {dataset} / {model} (seed {seed}) in {path}"
              + (f" ({legacy} {models.LEGACY_NOTE})" if legacy else "") + "; "
              "allow training one with --config.teacher.allow_train=True, point "
              "--config.teacher.cache_dir at a directory holding it, or import torchvision "
              "weights with --config.teacher.weights=PATH.pth")
        else:
          if train_images is None:
            raise ValueError("get_teacher: training a teacher needs train_images")
          print(f"teacher: training {model} on all {len(train_src)} {dataset} training images "
                f"for {recipe.epochs} epochs -> {path}"
                + (f" ({legacy} {models.LEGACY_NOTE})" if legacy else ""), file=sys.stderr,
                flush=True)
          _train_teacher(student, train_images(), train_src.labels, seed, progress, **finish)
  with open(done_file, encoding="utf-8") as f:
    info = json.load(f)
  with Checkpointer(os.path.join(path, "final")) as ckpt:
    variables = _abstract_variables(student, image_shape)
    variables, _ = ckpt.restore(ckpt.latest_step(), variables)
  return student.model, variables, dict(info, dir=path)


def _abstract_variables(student: train.Student, image_shape: tuple):
  variables = jax.eval_shape(lambda: student.model.init(
      jax.random.key(0), jnp.zeros((1, *image_shape), jnp.float32), train=False))
  replicated = jax.sharding.NamedSharding(student.mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                      variables)


def _import_teacher(student: train.Student, weights: str, *, spec: dict, **finish) -> None:
  print(f"teacher: importing {spec['model']} from {weights} (torchvision) -> {finish['path']}",
        file=sys.stderr, flush=True)
  variables = torch_import.load_torchvision(weights, spec["model"], student.model.num_classes,
                                            in_channels=spec["image_shape"][-1],
                                            model=student.model)
  replicated = jax.sharding.NamedSharding(student.mesh, jax.sharding.PartitionSpec())
  variables = jax.device_put(variables, replicated)
  _finish_teacher(student, variables, spec=spec, step=0,
                  extra=dict(weights=os.path.abspath(weights)), **finish)


def _finish_teacher(student: train.Student, variables, *, test_images, test_labels, path: str,
                    spec: dict, test_batch_size: int, step: int, extra: dict) -> None:
  """Test `variables` on the test split, save them under `path` and mark the teacher done."""
  top1, top5 = train.evaluate(student, student.eval_fn(), variables, test_images, test_labels,
                              test_batch_size)
  os.makedirs(path, exist_ok=True)
  with Checkpointer(os.path.join(path, "final"), max_to_keep=1) as ckpt:
    ckpt.save(step, variables, dict(top1=top1, top5=top5))
  param_bytes = int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(variables)))
  info = dict(top1=top1, top5=top5, param_bytes=param_bytes, **extra, spec=spec)
  # teacher.json is written last: its presence marks a finished teacher.
  write_json_atomic(os.path.join(path, "teacher.json"), info)
  print(f"teacher: top-1 {top1:.2f}% top-5 {top5:.2f}% on the test split",
        file=sys.stderr, flush=True)


def _train_teacher(student: train.Student, images: np.ndarray, labels: np.ndarray, seed: int,
                   progress: bool, *, path: str, **finish) -> None:
  os.makedirs(path, exist_ok=True)
  variables, stats = train.train_student(
      student, images, np.asarray(labels), int(seed), checkpoint_dir=os.path.join(path, "progress"),
      checkpoint_every=1, progress=progress, desc="teacher")
  print(f"teacher: trained in {stats['train_seconds']:.0f} s", file=sys.stderr, flush=True)
  _finish_teacher(student, variables, path=path, step=student.recipe.epochs,
                  extra=dict(train_seconds=stats["train_seconds"]), **finish)
  if jax.process_index() == 0:  # final/ and teacher.json are what is kept
    shutil.rmtree(os.path.join(path, "progress"), ignore_errors=True)


def features(model, variables, images: np.ndarray, mean, std,
             batch_size: int = 1000) -> np.ndarray:
  """Penultimate-layer features float32 [N, D] of a network on images uint8 [N, H, W, C]."""
  fn = jax.jit(lambda v, x: models.features(model, v, training.normalise(x, mean, std)))
  out = [np.asarray(fn(variables, images[i:i + batch_size]), np.float32)
         for i in range(0, len(images), batch_size)]
  return np.concatenate(out)
