"""The teacher stage: a network trained on the full training split, cached and reused.

Soft-label protocols need a teacher. It is trained once per (dataset content, model, seed,
recipe, resolution, normalisation), saved with orbax under the teacher cache directory, and
reused by every later run with the same key. Training it is resumable like any student run.

With `teacher.weights` set to a torchvision `.pth` state dict, the teacher is imported instead
of trained (`dcjax.torch_import`, in torchvision's layout): converted once, tested on the test
split like a trained teacher, and cached the same way, keyed by the file's sha256 in place of
the seed and recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dcjax import augment, models, protocols
from dcjax.data import sources, torch_import
from dcjax.runners import student as train
from dcjax.runners.checkpoint import Checkpointer
from dcjax.errors import UserError
from dcjax.data.files import cache_dir, write_json_atomic


def default_cache_dir() -> str:
  return cache_dir("teachers")


def teacher_recipe(tcfg) -> protocols.Recipe:
  """The teacher's training recipe from config.teacher (every field explicit)."""
  return protocols.resolve(tcfg.protocol, {k: tcfg.get(k) for k in protocols.RECIPE_FIELDS})


def teacher_spec(tcfg, dataset_fingerprint: str, image_shape: tuple, mean, std) -> dict:
  """Everything that determines the teacher's weights (and its recorded test accuracy); its
  hash names the cache entry. An imported teacher is keyed by its file's content instead of
  the seed and recipe it would be trained with."""
  spec = dict(dataset_fingerprint=dataset_fingerprint, model=tcfg.model,
              model_kwargs={k: v for k, v in tcfg.model_kwargs.items() if v is not None},
              image_shape=list(image_shape), mean=list(mean), std=list(std))
  if tcfg.get("weights"):
    # The weights fix the architecture (torchvision's): model_kwargs such as the default
    # teacher's ConvNet width do not apply.
    spec.update(model_kwargs={},
                weights=dict(format="torchvision", sha256=_file_sha256(tcfg.weights)))
  else:
    spec.update(seed=int(tcfg.seed), recipe=teacher_recipe(tcfg).to_dict())
  return spec


def _file_sha256(path: str) -> str:
  if not os.path.isfile(path):
    raise UserError(f"teacher.weights: no such file: {path}")
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def teacher_dir(cache_dir: str, dataset: str, spec: dict) -> str:
  digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
  slug = "".join(c if c.isalnum() else "_" for c in dataset)[:60]
  return os.path.join(cache_dir, f"{slug}-{spec['model']}-{digest}")


def _teacher_student(tcfg, spec: dict, num_classes: int, mesh) -> train.Student:
  if "weights" in spec:  # imported: torchvision's layout whatever the resolution
    model = torch_import.torchvision_model(tcfg.model, num_classes)
  else:
    model = models.get_model(tcfg.model, num_classes, spec["image_shape"][0],
                             **spec["model_kwargs"])
  recipe = (protocols.Recipe(**spec["recipe"]) if "recipe" in spec
            else teacher_recipe(tcfg))  # an imported teacher is only tested
  return train.Student(model, recipe, augment.get_augmentation(recipe.augment),
                       tuple(spec["mean"]), tuple(spec["std"]), mesh)


def find_teacher(config, train_src: sources.Source, image_shape: tuple, mean, std) -> str | None:
  """The cache directory of a finished teacher for this config, or None."""
  tcfg = config.teacher
  spec = teacher_spec(tcfg, sources.fingerprint(train_src), image_shape, mean, std)
  path = teacher_dir(tcfg.cache_dir or default_cache_dir(), config.dataset, spec)
  return path if os.path.exists(os.path.join(path, "teacher.json")) else None


def get_teacher(config, train_src: sources.Source, test_images: np.ndarray,
                test_labels: np.ndarray, mean, std, mesh) -> tuple[Any, Any, dict]:
  """(teacher module, variables, info) for config.teacher: loaded from the cache, or trained
  on the full training split when allowed. info = {dir, top1, top5, param_bytes, spec}."""
  tcfg = config.teacher
  image_shape = tuple(test_images.shape[1:])
  spec = teacher_spec(tcfg, sources.fingerprint(train_src), image_shape, mean, std)
  path = teacher_dir(tcfg.cache_dir or default_cache_dir(), config.dataset, spec)
  student = _teacher_student(tcfg, spec, train_src.num_classes, mesh)
  done_file = os.path.join(path, "teacher.json")
  if not os.path.exists(done_file):
    if "weights" in spec:
      _import_teacher(config, student, test_images, test_labels, path, spec)
    elif not tcfg.allow_train:
      raise UserError(
          f"no teacher for {config.dataset} / {tcfg.model} (seed {tcfg.seed}) in {path}; "
          f"allow training one with --config.teacher.allow_train=True, point "
          f"--config.teacher.cache_dir at a directory holding it, or import torchvision "
          f"weights with --config.teacher.weights=PATH.pth")
    else:
      _train_teacher(config, student, train_src, test_images, test_labels, path, spec)
  info = json.load(open(done_file))
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


def _import_teacher(config, student: train.Student, test_images, test_labels, path: str,
                    spec: dict) -> None:
  tcfg = config.teacher
  print(f"teacher: importing {tcfg.model} from {tcfg.weights} (torchvision) -> {path}",
        file=sys.stderr, flush=True)
  variables = torch_import.load_torchvision(tcfg.weights, tcfg.model, student.model.num_classes,
                                            in_channels=spec["image_shape"][-1],
                                            model=student.model)
  replicated = jax.sharding.NamedSharding(student.mesh, jax.sharding.PartitionSpec())
  variables = jax.device_put(variables, replicated)
  _finish_teacher(config, student, variables, test_images, test_labels, path, spec, step=0,
                  extra=dict(weights=os.path.abspath(tcfg.weights)))


def _finish_teacher(config, student: train.Student, variables, test_images, test_labels,
                    path: str, spec: dict, step: int, extra: dict) -> None:
  """Test `variables` on the test split, save them under `path` and mark the teacher done."""
  top1, top5 = train.evaluate(student, student.eval_fn(), variables, test_images, test_labels,
                              config.eval.test_batch_size)
  os.makedirs(path, exist_ok=True)
  with Checkpointer(os.path.join(path, "final"), max_to_keep=1) as ckpt:
    ckpt.save(step, variables, dict(top1=top1, top5=top5))
  param_bytes = int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(variables)))
  info = dict(top1=top1, top5=top5, param_bytes=param_bytes, **extra, spec=spec)
  # teacher.json is written last: its presence marks a finished teacher.
  write_json_atomic(os.path.join(path, "teacher.json"), info)
  print(f"teacher: top-1 {top1:.2f}% top-5 {top5:.2f}% on the test split",
        file=sys.stderr, flush=True)


def _train_teacher(config, student: train.Student, train_src, test_images, test_labels,
                   path: str, spec: dict) -> None:
  tcfg = config.teacher
  print(f"teacher: training {tcfg.model} on all {len(train_src)} {config.dataset} training "
        f"images for {spec['recipe']['epochs']} epochs -> {path}", file=sys.stderr, flush=True)
  images, labels = sources.load_images(train_src, size=config.data.image_size,
                                       resize=config.data.resize,
                                       num_threads=config.data.num_threads,
                                       progress=config.progress)
  os.makedirs(path, exist_ok=True)
  variables, stats = train.train_student(
      student, images, labels, int(tcfg.seed), checkpoint_dir=os.path.join(path, "progress"),
      checkpoint_every=1, progress=config.progress, desc="teacher")
  print(f"teacher: trained in {stats['train_seconds']:.0f} s", file=sys.stderr, flush=True)
  _finish_teacher(config, student, variables, test_images, test_labels, path, spec,
                  step=spec["recipe"]["epochs"], extra=dict(train_seconds=stats["train_seconds"]))
