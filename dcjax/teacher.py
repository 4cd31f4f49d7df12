"""The teacher stage: a network trained on the full training split, cached and reused.

Soft-label protocols need a teacher. It is trained once per (dataset content, model, seed,
recipe, resolution, normalisation), saved with orbax under the teacher cache directory, and
reused by every later run with the same key. Training it is resumable like any student run.
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

from dcjax import augment, models, protocols, sources, train
from dcjax.checkpoint import Checkpointer
from dcjax.errors import UserError
from dcjax.files import cache_dir, write_json_atomic


def default_cache_dir() -> str:
  return cache_dir("teachers")


def teacher_recipe(tcfg) -> dict:
  """The teacher's training recipe from config.teacher (every field explicit)."""
  return protocols.resolve(tcfg.protocol, {k: tcfg.get(k) for k in protocols.RECIPE_FIELDS})


def teacher_spec(tcfg, dataset_fingerprint: str, image_shape: tuple, mean, std) -> dict:
  """Everything that determines the teacher's weights; its hash names the cache entry."""
  return dict(dataset_fingerprint=dataset_fingerprint, model=tcfg.model,
              model_kwargs={k: v for k, v in tcfg.model_kwargs.items() if v is not None},
              seed=int(tcfg.seed), recipe=teacher_recipe(tcfg), image_shape=list(image_shape),
              mean=list(mean), std=list(std))


def teacher_dir(cache_dir: str, dataset: str, spec: dict) -> str:
  digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
  slug = "".join(c if c.isalnum() else "_" for c in dataset)[:60]
  return os.path.join(cache_dir, f"{slug}-{spec['model']}-{digest}")


def _teacher_student(tcfg, spec: dict, num_classes: int, mesh) -> train.Student:
  model = models.get_model(tcfg.model, num_classes, spec["image_shape"][0], **spec["model_kwargs"])
  recipe = spec["recipe"]
  return train.Student(model, recipe, augment.get_augmentation(recipe["augment"]),
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
    if not tcfg.allow_train:
      raise UserError(
          f"no teacher for {config.dataset} / {tcfg.model} (seed {tcfg.seed}) in {path}; "
          f"allow training one with --config.teacher.allow_train=True, or point "
          f"--config.teacher.cache_dir at a directory holding it")
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
  top1, top5 = train.evaluate(student, student.eval_fn(), variables, test_images, test_labels,
                              config.eval.test_batch_size)
  with Checkpointer(os.path.join(path, "final"), max_to_keep=1) as ckpt:
    ckpt.save(spec["recipe"]["epochs"], variables, dict(top1=top1, top5=top5))
  param_bytes = int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(variables)))
  info = dict(top1=top1, top5=top5, param_bytes=param_bytes, train_seconds=stats["train_seconds"],
              spec=spec)
  # teacher.json is written last: its presence marks a finished teacher.
  write_json_atomic(os.path.join(path, "teacher.json"), info)
  print(f"teacher: top-1 {top1:.2f}% top-5 {top5:.2f}% on the test split "
        f"({stats['train_seconds']:.0f} s)", file=sys.stderr, flush=True)
