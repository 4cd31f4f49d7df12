"""Compressed sets made elsewhere, read for evaluation (`configs/evaluate.py`).

`read_given(path, ...)` reads any of:
  - a class-folder set: dcjax's own `compressed/` (its manifest.json gives the classes, the
    dataset and the source indices), or anyone's folder of PNG/JPEG class subfolders (the
    released sets of SRe2L, CDA, G-VBSM, RDED, ...): classes are the sorted subfolder names;
  - a Hugging Face-layout parquet file or folder (`image` bytes + `label` / `class_id`, as
    the rethinkdc benchmark's released subsets);
  - an `.npz` with `images` uint8 [N, H, W, C] and `labels` int [N], optionally
    `soft_labels` float [N, K] (probabilities, or logits) and `class_names` [K] (strings);
    or with float `images`: pixels distilled as floats (DC, DSA, DM, MTT, DATM, ...), in [0, 1]
    units, or normalised when the .npz also holds that normalisation's `mean` and `std` [C]
    (they are undone); [N, C, H, W] as torch saves them is transposed. Float pixels are
    evaluated as given (float32, never clipped or rounded to 8 bits);
  - an index file (`.npy`, `.txt` one index per line, or `.json` list) of training-split
    indices, decoded from the training split the caller opens.
It returns a `GivenSet`: images, labels, the set's own class names (None: labels are already
class ids of the test split), soft labels, and the bytes its files take (what storing it costs).
`align_to_test` maps its classes onto the test split's and resizes images to the test
resolution. Host-side data code: no JAX. No pickle: `.npz` / `.npy` are read with
allow_pickle=False.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Callable, Sequence

import numpy as np

from dcjax.data import sources, store
from dcjax.errors import UserError

INDEX_SUFFIXES = (".npy", ".txt", ".json")
KINDS = ("dcjax", "folder", "parquet", "npz", "indices")


@dataclasses.dataclass(frozen=True)
class GivenSet:
  """A compressed set read from `path`.

  images: uint8 [N, H, W, C] (float32 in [0, 1] units for a float set); labels: int32 [N],
  ids into `class_names` (or, when that is None, into the test split's classes);
  soft_labels: float32 [N, K] or None, as stored (probabilities or logits); kind: one of
  KINDS; image_bytes / soft_label_bytes: the bytes of the given files that hold them; dataset:
  the dataset a dcjax manifest names (else None); indices: training-split indices behind each
  image, int [N, k*k] ([N, 0]: unknown).
  """

  path: str
  kind: str
  images: np.ndarray
  labels: np.ndarray
  class_names: list[str] | None
  soft_labels: np.ndarray | None
  image_bytes: int
  soft_label_bytes: int
  dataset: str | None
  indices: np.ndarray


def kind_of(path: str) -> str:
  """Which reader `path` needs (UserError for a path that is none of them)."""
  if os.path.isdir(path):
    if store.is_compressed_set(path):
      return "dcjax"
    names = os.listdir(path)
    if any(n.endswith(".parquet") for n in names) or os.path.isdir(os.path.join(path, "data")):
      return "parquet"
    return "folder"
  if not os.path.exists(path):
    raise UserError(f"compressed set {path} does not exist")
  lower = path.lower()
  if lower.endswith(".parquet"):
    return "parquet"
  if lower.endswith(".npz"):
    return "npz"
  if lower.endswith(INDEX_SUFFIXES):
    return "indices"
  raise UserError(f"cannot read compressed set {path}: give a folder of class subfolders, a "
                  f".parquet file or folder, an .npz (images, labels[, soft_labels]) or an "
                  f"index file ({', '.join(INDEX_SUFFIXES)})")


def read_given(path: str, *, train_source: Callable[[], sources.Source] | None = None,
               load_train: Callable[[np.ndarray], np.ndarray] | None = None,
               num_threads: int = 8) -> GivenSet:
  """Read the compressed set at `path` (see the module docstring). Index files need
  `train_source()` (the training split) and `load_train(indices)` (its images uint8 at the
  run's resolution)."""
  kind = kind_of(path)
  if kind == "dcjax":
    images, labels, manifest = store.read_compressed(path)
    behind = [f.get("source_indices") or [] for f in manifest["files"]]
    indices = (np.asarray(behind, np.int64).reshape(len(labels), -1)
               if all(len(x) == len(behind[0]) for x in behind)
               else np.zeros((len(labels), 0), np.int64))
    return GivenSet(path, kind, images, labels, list(manifest.get("class_names") or []) or None,
                    None, int(manifest["image_bytes"]), 0, manifest.get("dataset"), indices)
  if kind in ("folder", "parquet"):
    src = sources.open_source(f"{kind}:{path}", "train")
    images, labels = sources.load_images(src, num_threads=num_threads, progress=False)
    files = ([os.path.join(src.root, f) for f in src.files] if kind == "folder"
             else list(src.files))
    names = list(src.class_names) if src.class_names else None
    return GivenSet(path, kind, images, labels.astype(np.int32), names, None,
                    sum(os.path.getsize(f) for f in files), 0, None,
                    np.zeros((len(labels), 0), np.int64))
  if kind == "npz":
    return _read_npz(path)
  if train_source is None or load_train is None:
    raise UserError(f"{path} is an index list: name the training split it indexes with "
                    "--config.dataset")
  src = train_source()
  idx = read_indices(path, len(src))
  return GivenSet(path, kind, load_train(idx), np.asarray(src.labels)[idx].astype(np.int32),
                  None, None, os.path.getsize(path), 0, None, idx.reshape(-1, 1))


def read_indices(path: str, n: int) -> np.ndarray:
  """Training-split indices int64 [M] from .npy / .txt / .json, checked against n examples."""
  try:
    if path.lower().endswith(".npy"):
      idx = np.load(path, allow_pickle=False)
    elif path.lower().endswith(".json"):
      with open(path, encoding="utf-8") as f:
        idx = np.asarray(json.load(f))
    else:
      with open(path, encoding="utf-8") as f:
        idx = np.asarray([line.split("#")[0].strip() for line in f
                          if line.split("#")[0].strip()], dtype=np.float64)
  except (OSError, ValueError, json.JSONDecodeError) as e:
    raise UserError(f"cannot read index file {path}: {e}") from None
  if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.number):
    raise UserError(f"index file {path} must hold a non-empty 1-D list of integers, got shape "
                    f"{idx.shape} of {idx.dtype}")
  if not np.all(np.mod(idx, 1) == 0):
    raise UserError(f"index file {path} holds non-integer values")
  idx = idx.astype(np.int64)
  if idx.min() < 0 or idx.max() >= n:
    raise UserError(f"index file {path} holds indices {idx.min()}..{idx.max()}; the training "
                    f"split has {n} examples (0..{n - 1})")
  if len(np.unique(idx)) != len(idx):
    raise UserError(f"index file {path} repeats indices; a compressed set holds each training "
                    "image once")
  return idx


def _read_npz(path: str) -> GivenSet:
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read {path} as an .npz of arrays (no pickled objects): {e}") from None
  missing = [k for k in ("images", "labels") if k not in arrays]
  if missing:
    raise UserError(f"{path} has no {' / '.join(missing)} array (it has "
                    f"{', '.join(sorted(arrays)) or 'none'}); an .npz set holds images uint8 "
                    "(or float) [N, H, W, C] and labels [N], optionally soft_labels [N, K]")
  images, labels = arrays["images"], arrays["labels"]
  floats = np.issubdtype(images.dtype, np.floating)
  if (floats and images.ndim == 4 and images.shape[1] in (1, 3)
      and images.shape[-1] not in (1, 3)):
    images = images.transpose(0, 2, 3, 1)  # torch's [N, C, H, W]
  if (not (floats or images.dtype == np.uint8) or images.ndim != 4
      or images.shape[-1] not in (1, 3)):
    raise UserError(f"{path}: images must be uint8 or float [N, H, W, C] with C = 1 or 3, got "
                    f"{images.dtype} {images.shape}")
  image_bytes = int(arrays["images"].nbytes)  # what the given array costs, as stored
  if floats:
    images = _float_pixels(path, images, arrays.get("mean"), arrays.get("std"))
  elif "mean" in arrays or "std" in arrays:
    raise UserError(f"{path}: mean / std describe normalised float images; these images are "
                    "uint8 pixels")
  if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype,
                                                                         np.integer):
    raise UserError(f"{path}: labels must be integers [N] with N = {len(images)}, got "
                    f"{labels.dtype} {labels.shape}")
  soft = arrays.get("soft_labels")
  soft_bytes = 0
  if soft is not None:
    if soft.ndim != 2 or len(soft) != len(images) or not np.issubdtype(soft.dtype, np.floating) \
        or not np.isfinite(soft).all():
      raise UserError(f"{path}: soft_labels must be finite floats [N, K] with N = {len(images)},"
                      f" got {soft.dtype} {soft.shape}")
    soft_bytes = int(soft.nbytes)
  names = arrays.get("class_names")
  if names is not None:
    if names.ndim != 1 or names.dtype.kind not in "US":
      raise UserError(f"{path}: class_names must be a 1-D array of strings")
    names = [str(n) for n in names.tolist()]
  return GivenSet(path, "npz", np.ascontiguousarray(images), labels.astype(np.int32), names,
                  None if soft is None else soft.astype(np.float32),
                  image_bytes, soft_bytes, None, np.zeros((len(labels), 0), np.int64))


def _float_pixels(path: str, images: np.ndarray, mean, std) -> np.ndarray:
  """float32 [N, H, W, C] pixels in [0, 1] units from an .npz's float images: normalised ones
  (with that normalisation's mean and std [C]) are un-normalised; nothing is clipped."""
  c = images.shape[-1]
  if (mean is None) != (std is None):
    raise UserError(f"{path}: give both mean and std (the normalisation of the images), or "
                    "neither (images in [0, 1] pixel units)")
  x = images.astype(np.float64)
  if mean is not None:
    mean, std = np.asarray(mean, np.float64).reshape(-1), np.asarray(std, np.float64).reshape(-1)
    if mean.shape != (c,) or std.shape != (c,) or not (std > 0).all():
      raise UserError(f"{path}: mean and std must be [C] = [{c}] (std > 0), got "
                      f"{list(mean.shape)} and {list(std.shape)}")
    x = x * std + mean
  if not np.isfinite(x).all():
    raise UserError(f"{path}: images hold NaN or infinite pixels")
  return x.astype(np.float32)


def align_to_test(given: GivenSet, test_class_names: Sequence[str],
                  test_shape: tuple[int, int, int], *,
                  log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> GivenSet:
  """The set with labels as ids of the test split's classes and images at the test
  resolution. Classes are matched by name (case-insensitive); folder names that are all digits
  (dcjax's zero-padded ids) are class ids. UserError for a class the test split lacks, a label
  out of range, soft labels of another width, or another channel count."""
  k = len(test_class_names)
  labels = given.labels
  if given.class_names is not None:
    lookup = {str(n).lower(): i for i, n in enumerate(test_class_names)}
    ids = []
    for name in given.class_names:
      if str(name).lower() in lookup:
        ids.append(lookup[str(name).lower()])
      elif str(name).isdigit() and int(name) < k:
        ids.append(int(name))
      else:
        raise UserError(f"class {name!r} of {given.path} is not a class of the test split "
                        f"({k} classes: {', '.join(map(str, list(test_class_names)[:5]))}, ...)")
    if len(set(ids)) != len(ids):
      raise UserError(f"two classes of {given.path} map to one test class: "
                      f"{given.class_names}")
    labels = np.asarray(ids, np.int32)[labels] if len(labels) else labels
  if len(labels) and (labels.min() < 0 or labels.max() >= k):
    raise UserError(f"labels of {given.path} lie in {labels.min()}..{labels.max()}; the test "
                    f"split has {k} classes")
  missing = sorted(set(range(k)) - set(labels.tolist()))
  if missing:
    log(f"evaluate: {given.path} has no images of {len(missing)} of the {k} test classes "
        f"({', '.join(str(test_class_names[i]) for i in missing[:5])})")
  if given.soft_labels is not None and given.soft_labels.shape[1] != k:
    raise UserError(f"soft_labels of {given.path} have {given.soft_labels.shape[1]} columns; "
                    f"the test split has {k} classes")
  images = given.images
  h, w, c = test_shape
  if images.shape[-1] != c:
    raise UserError(f"images of {given.path} have {images.shape[-1]} channels, the test split "
                    f"{c}")
  if images.shape[1:3] != (h, w) and images.dtype != np.uint8:
    raise UserError(f"the float images of {given.path} are {images.shape[1]}x{images.shape[2]}, "
                    f"the test split {h}x{w}: give them at the test resolution (a distilled "
                    "set's pixels are evaluated as given, not resampled)")
  if images.shape[1:3] != (h, w):
    log(f"evaluate: resizing the {len(images)} images of {given.path} from "
        f"{images.shape[1]}x{images.shape[2]} to the test resolution {h}x{w}")
    images = np.stack([sources.resize_image(im, h) for im in images])
  return dataclasses.replace(given, images=images, labels=labels.astype(np.int32),
                             class_names=list(test_class_names))


def soft_targets(soft_labels: np.ndarray, temperature: float) -> np.ndarray:
  """Training targets [N, K] from stored soft labels: rows that are already probabilities
  (non-negative, summing to 1) are used as they are; otherwise the rows are logits and become
  softmax(logits / temperature)."""
  s = np.asarray(soft_labels, np.float64)
  if (s >= 0).all() and np.allclose(s.sum(1), 1.0, atol=1e-3):
    return (s / s.sum(1, keepdims=True)).astype(np.float32)
  z = s / temperature
  z = np.exp(z - z.max(1, keepdims=True))
  return (z / z.sum(1, keepdims=True)).astype(np.float32)
