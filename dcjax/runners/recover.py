"""SRe2L's recover over a whole synthetic set, resumable and cached.

The set is ipc x ceil(num_classes / classes_per_batch) batches; batch (i, j) holds image i of
every class of class chunk j and is one compiled optimisation (`dcjax.sre2l.recover_steps`,
run in chunks of at most `chunk` iterations for the progress bar). Each finished batch is
written to the cache directory as an .npz (uint8 images and labels, no pickle), so a killed
run resumes at the first unfinished batch and another run with the same teacher and settings
(the hard- and soft-label cells of a grid) reuses the set. done.json marks a complete set.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from dcjax import sre2l
from dcjax.data.files import cache_dir as _cache_dir
from dcjax.data.files import cache_fill_lock, fill_lock_file, write_atomic, write_json_atomic

# The recover settings: SRe2L's CIFAR values (VILA-Lab/SRe2L's small_dataset recover_cifar.sh:
# 1000 iterations, lr 0.25, r_bn 0.01; the first BN layer weighted 10, jitter 4 px) and a flip
# per batch, which its ImageNet recovery has and that script does not (flip=False is it).
DEFAULTS = dict(iterations=1000, lr=0.25, r_bn=0.01, first_bn_multiplier=10.0, jitter=4,
                flip=True, classes_per_batch=None)


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
  """The recover settings with defaults filled in; ValueError naming a bad one."""
  s = dict(DEFAULTS, **{k: v for k, v in settings.items() if k in DEFAULTS})
  for name in ("iterations", "jitter"):
    v = s[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "iterations" else 0):
      raise ValueError(f"sre2l.{name} must be an integer >= {1 if name == 'iterations' else 0}, "
                       f"got {v!r}")
  for name in ("lr", "r_bn", "first_bn_multiplier"):
    v = s[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0 \
        or (name == "lr" and v == 0):
      raise ValueError(f"sre2l.{name} must be a finite number "
                       f"{'> 0' if name == 'lr' else '>= 0'}, got {v!r}")
  cpb = s["classes_per_batch"]
  if cpb is not None and (isinstance(cpb, bool) or not isinstance(cpb, int) or cpb < 1):
    raise ValueError(f"sre2l.classes_per_batch must be an integer >= 1 (or None: all classes), "
                     f"got {cpb!r}")
  if not isinstance(s["flip"], bool):
    raise ValueError(f"sre2l.flip must be True or False, got {s['flip']!r}")
  return s


def set_dir(cache_dir: str | None, teacher_dir: str, *, ipc: int, num_classes: int,
            image_shape: tuple, mean, std, key_data: list, settings: Mapping[str, Any]) -> str:
  """The cache entry of one recovered set: keyed by the teacher (its cache directory names its
  spec's hash), the random key's data and everything else that determines the images."""
  key = dict(teacher=os.path.basename(os.path.normpath(teacher_dir)), ipc=int(ipc),
             num_classes=int(num_classes), image_shape=list(image_shape), mean=list(mean),
             std=list(std), key=list(key_data), settings=dict(settings), version=1)
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  return os.path.join(cache_dir or _cache_dir("sre2l"), f"ipc{ipc}-{digest}")


def recover_set(model, variables, key: jax.Array, *, ipc: int, num_classes: int,
                image_shape: tuple, mean, std, settings: Mapping[str, Any], path: str,
                chunk: int = 100, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [num_classes * ipc, H, W, C], labels int32), grouped by class (class c's
  images are rows c*ipc ... c*ipc + ipc - 1), recovered from the BatchNorm teacher
  (model, variables) or read from `path` where earlier batches finished."""
  s = check_settings(settings)
  cpb = s["classes_per_batch"] or num_classes
  chunks = [list(range(j, min(j + cpb, num_classes))) for j in range(0, num_classes, cpb)]
  batches = [(i, j) for i in range(ipc) for j in range(len(chunks))]
  os.makedirs(path, exist_ok=True)
  step_kw = dict(iterations=s["iterations"], lr=float(s["lr"]), r_bn=float(s["r_bn"]),
                 first_multiplier=float(s["first_bn_multiplier"]), max_shift=s["jitter"],
                 flip=s["flip"], mean=tuple(mean), std=tuple(std))

  @functools.partial(jax.jit, static_argnames=("num_steps",))
  def steps(state, batch_key, labels, num_steps):
    return sre2l.recover_steps(state, batch_key, labels, model, variables, num_steps=num_steps,
                               **step_kw)

  # Runs side by side on one machine (the grid's hard and soft cells of one set, --workers)
  # recover it once: the second waits for the lock and then finds every batch done.
  with cache_fill_lock(fill_lock_file(path), enabled=jax.process_count() == 1):
    done = [b for b in batches if os.path.exists(_batch_file(path, *b))]
    todo = [b for b in batches if b not in done]
    if todo:
      print(f"sre2l: recovering {len(todo)} of {len(batches)} batches ({cpb} classes each, "
            f"{s['iterations']} iterations) -> {path}", file=sys.stderr, flush=True)
    bar = tqdm(total=len(todo) * s["iterations"], desc="sre2l recover", unit="it",
               disable=not progress or not todo, leave=False)
    last = None
    for b in todo:
      i, j = b
      labels = jnp.asarray(chunks[j], jnp.int32)
      k_init, k_steps = jax.random.split(jax.random.fold_in(key, i * len(chunks) + j))
      state = sre2l.init(k_init, len(chunks[j]), tuple(image_shape), lr=step_kw["lr"],
                         iterations=s["iterations"])
      while int(state.step) < s["iterations"]:
        n = min(chunk, s["iterations"] - int(state.step))
        state, last = steps(state, k_steps, labels, num_steps=n)
        bar.update(n)
        bar.set_postfix(ce=f"{float(last[0]):.3f}", bn=f"{float(last[1]):.3f}")
      images = np.asarray(sre2l.to_uint8(state.images, mean, std))
      write_atomic(_batch_file(path, i, j),
                   lambda f, images=images, labels=labels: np.savez(
                       f, images=images, labels=np.asarray(labels)))
    bar.close()
  out_images = np.zeros((num_classes, ipc, *image_shape), np.uint8)
  for i, j in batches:
    with np.load(_batch_file(path, i, j), allow_pickle=False) as z:
      out_images[z["labels"], i] = z["images"]
  if not os.path.exists(os.path.join(path, "done.json")):
    write_json_atomic(os.path.join(path, "done.json"),
                      dict(settings=s, ipc=ipc, num_classes=num_classes,
                           final_loss=None if last is None else
                           dict(ce=float(last[0]), bn=float(last[1]))))
  labels = np.repeat(np.arange(num_classes, dtype=np.int32), ipc)
  return out_images.reshape(num_classes * ipc, *image_shape), labels


def _batch_file(path: str, i: int, j: int) -> str:
  return os.path.join(path, f"batch_{i:05d}_{j:04d}.npz")
