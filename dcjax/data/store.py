"""The compressed-dataset format: a directory of PNGs in class folders plus `manifest.json`.

A compressed set (a pruned subset of real images, or synthesized / tiled images) is stored as

  <path>/manifest.json
  <path>/0000/000000.png, <path>/0000/000001.png, ...
  <path>/0001/...

The class folder is the zero-padded label and the file name is the image's position in the set
(its index in manifest order). Zero-padding makes a generic "class subfolders sorted by name"
reader (the `folder:<path>` source) recover label order exactly, so a set is usable by tools
that know nothing about dcjax. The manifest records where every image came from (its source
indices), a sha256 per file, and the total PNG bytes: the storage the set costs, which is what a
compression benchmark has to report.

A set of float pixels (distilled by gradient-based methods such as DC, DSA, DM or MTT, whose
pixels are learnt as floats and may leave [0, 1]) is stored losslessly as one float32 `.npy` per
image (`<label>/<index>.npy`, no pickle) instead of a PNG, with `"pixels": "float32"` and format
version 2 in its manifest (an older dcjax refuses it by version instead of misreading it); the
pixels are in [0, 1] units (0 = black, 1 = white) and are never clipped or rounded. uint8 sets
are written exactly as before (format 1).

Writes are atomic. Everything is written into a hidden temporary sibling `.<name>.tmp-<random>`
(manifest last, so a directory without `manifest.json` is never a complete set), fsync'd, and
then renamed into place. Replacing an existing set renames the old one to `.<name>.old-<random>`,
renames the new one in, and then deletes the old one, so a crash at any moment leaves `path`
either holding the old complete set, holding the new complete set, or missing with the old
complete set parked next to it; `read_*` and `write_compressed` repair that last state by
renaming the parked set back, and delete leftover temporary and parked directories.

One process at a time per path: reading or writing a path while another process is writing it
is not supported (the recovery step would treat the other writer's files as crash leftovers).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import dcjax
from dcjax.data.files import umask_mode
from dcjax.errors import UserError

FORMAT_VERSION = 2  # the newest this dcjax reads and writes; uint8 sets are still written as 1
_FLOAT_FORMAT_VERSION = 2  # float32 pixels (.npy files)
MANIFEST = "manifest.json"

# Minimum widths of the zero-padded folder / file names. They widen (never shrink) when a set has
# more than 10^4 classes or 10^6 images, so that sorting names as strings stays numeric order.
_LABEL_WIDTH = 4
_INDEX_WIDTH = 6
# zlib level for PNG; fixed so the same pixels always give the same bytes (and sha256).
_PNG_COMPRESS_LEVEL = 6
# Below this many images, threads cost more than they save.
_PARALLEL_MIN = 64
_FILE_RE = re.compile(r"^(\d+)/(\d+)\.(png|npy)$")
_MANIFEST_KEYS = (
    "format_version", "dcjax_version", "created", "dataset", "split", "source_fingerprint",
    "method", "config", "num_images", "num_classes", "class_names", "image_shape",
    "images_per_class", "image_bytes", "files", "extra")

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------
# Filesystem primitives. Every step that changes the disk goes through one of these, so tests can
# inject a crash at any of them.


def _write_file(path: Path, data: bytes) -> None:
  """Creates `path` (it must not exist) with `data` and fsyncs it."""
  with open(path, "xb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _rename(src: Path, dst: Path) -> None:
  """Renames a file or directory; atomic on one filesystem (siblings always are)."""
  os.rename(src, dst)


def _fsync_dir(path: Path) -> None:
  """Makes a directory's entries (creations, renames) durable; a no-op where unsupported."""
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:  # e.g. Windows cannot open directories
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _rmtree(path: Path) -> None:
  """Deletes a directory tree (or a symlink / file standing in its place)."""
  if path.is_symlink() or not path.is_dir():
    path.unlink()
  else:
    shutil.rmtree(path)


def _discard_set(path: Path) -> None:
  """Deletes a parked set, removing its manifest first so that a crash half-way through the
  deletion can never leave something that looks like a complete set. Errors are ignored: the next
  recovery retries."""
  try:
    manifest = path / MANIFEST
    if manifest.is_file() and not path.is_symlink():
      manifest.unlink()
      _fsync_dir(path)
    _rmtree(path)
  except OSError:
    pass


# ---------------------------------------------------------------------------------------------
# Crash recovery.


def _sibling_re(path: Path, kind: str) -> re.Pattern[str]:
  # The random part is [A-Za-z0-9_] only, so a set named e.g. "a.tmp-x" never has its own
  # temporaries mistaken for those of a set named "a".
  return re.compile(rf"^\.{re.escape(path.name)}\.{kind}-[A-Za-z0-9_]+$")


def _siblings(path: Path, kind: str) -> list[Path]:
  """The `.<name>.<kind>-<random>` siblings of `path` (kind is "tmp" or "old")."""
  try:
    names = os.listdir(path.parent)
  except OSError:
    return []
  pattern = _sibling_re(path, kind)
  return sorted(path.parent / n for n in names if pattern.match(n))


def _is_complete(path: Path) -> bool:
  """Whether `path` is a directory holding a manifest (written last, so: a complete set)."""
  return path.is_dir() and (path / MANIFEST).is_file()


def _parked_set(path: Path) -> Path | None:
  """The newest complete `.old` sibling of `path`, if any."""
  complete = [p for p in _siblings(path, "old") if _is_complete(p)]
  if not complete:
    return None
  return max(complete, key=lambda p: (p / MANIFEST).stat().st_mtime)


def _locate(path: Path) -> Path | None:
  """The directory holding the complete set that `path` names, without touching the disk: `path`
  itself, or (after a swap interrupted between its two renames) the parked old set."""
  if _is_complete(path):
    return path
  if not os.path.lexists(path):
    return _parked_set(path)
  return None


def _recover(path: Path, *, best_effort: bool) -> Path | None:
  """Repairs what an interrupted write can leave behind and returns where the set is now.

  If `path` is missing and a complete parked `.old` sibling exists (a crash between the two
  renames of a swap), it is renamed back to `path`; if that fails, writers (not `best_effort`)
  raise, while readers read the parked set where it is (e.g. on a read-only mount). Then leftover
  temporaries are deleted, and parked sets too once `path` is complete again; failures to delete
  are ignored (leftovers are hidden and never read).
  """
  if not os.path.lexists(path):
    parked = _parked_set(path)
    if parked is not None:
      try:
        _rename(parked, path)
        _fsync_dir(path.parent)
      except OSError:
        if not best_effort:
          raise
        return parked
  for tmp in _siblings(path, "tmp"):
    try:
      _rmtree(tmp)
    except OSError:
      pass  # harmless where it is (hidden, never read); a later recovery retries
  if _is_complete(path):
    for old in _siblings(path, "old"):
      _discard_set(old)
  else:
    # Never delete a complete parked set unless `path` holds a complete set to replace it.
    for old in _siblings(path, "old"):
      if not _is_complete(old):
        _discard_set(old)
  return path if _is_complete(path) else None


# ---------------------------------------------------------------------------------------------
# Validation.


def _json_problem(value: Any, where: str) -> str | None:
  """Where `value` stops being plain JSON (and why), or None if it is. Keys must be strings and
  floats finite, so that what is read back equals what was given (up to tuples becoming lists)."""
  if value is None or isinstance(value, (bool, int, str)):
    return None
  if isinstance(value, float):
    return None if math.isfinite(value) else f"{where} is {value!r}, which JSON cannot hold"
  if isinstance(value, (list, tuple)):
    for i, v in enumerate(value):
      if (problem := _json_problem(v, f"{where}[{i}]")) is not None:
        return problem
    return None
  if isinstance(value, Mapping):
    for k, v in value.items():
      if not isinstance(k, str):
        return f"{where} has key {k!r} of type {type(k).__name__}; JSON keys must be strings"
      if (problem := _json_problem(v, f"{where}[{k!r}]")) is not None:
        return problem
    return None
  return f"{where} is of type {type(value).__name__}, which is not JSON-serialisable"


def _plain_json(value: Any, name: str) -> Any:
  """`value` as it will read back from JSON; a UserError naming the offending key otherwise."""
  if (problem := _json_problem(value, name)) is not None:
    raise UserError(f"{problem}; convert it to plain JSON (str/int/float/bool/None/list/dict)")
  return json.loads(json.dumps(value, allow_nan=False))


def _is_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_images(images: Any) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype != np.uint8 and images.dtype != np.float32:
    raise UserError(f"images must be uint8 [N, H, W, C] (or float32 pixels in [0, 1] units), "
                    f"got dtype {images.dtype}; convert with np.clip(x, 0, 255).astype(np.uint8)"
                    " or x.astype(np.float32)")
  if images.dtype == np.float32 and not np.isfinite(images).all():
    raise UserError("float32 images hold NaN or infinite pixels; a stored set's pixels are "
                    "finite")
  if images.ndim != 4:
    raise UserError(f"images must be uint8 [N, H, W, C], got shape {images.shape} "
                    f"({images.ndim} dimensions); add the missing axes")
  n, h, w, c = images.shape
  if c not in (1, 3):
    raise UserError(f"images must have 1 (grayscale) or 3 (RGB) channels, got shape {images.shape}")
  if n == 0 or h == 0 or w == 0:
    raise UserError(f"images has shape {images.shape}; a compressed set needs at least one "
                    "non-empty image")
  return images


def _check_labels(labels: Any, n: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.dtype.kind not in "iu":
    raise UserError(f"labels must be a 1-D integer array [N], got dtype {labels.dtype} "
                    f"shape {labels.shape}")
  if len(labels) != n:
    raise UserError(f"got {n} images but {len(labels)} labels; pass one label per image")
  if labels.min() < 0:
    raise UserError(f"labels must be >= 0, got {int(labels.min())}")
  return labels.astype(np.int64)


def _check_source_indices(source_indices: Any, n: int) -> list[list[int]]:
  if isinstance(source_indices, (str, bytes)) or not hasattr(source_indices, "__len__"):
    raise UserError("source_indices must be a sequence with one list of source indices per "
                    "image")
  if len(source_indices) != n:
    raise UserError(f"got {n} images but {len(source_indices)} source_indices entries; pass one "
                    "list of source-dataset indices per image")
  out = []
  for i, entry in enumerate(source_indices):
    if isinstance(entry, (str, bytes)) or not hasattr(entry, "__iter__"):
      raise UserError(f"source_indices[{i}] must be a list of ints, got {entry!r}")
    row = list(entry)
    for x in row:
      if not _is_int(x) or x < 0:
        raise UserError(f"source_indices[{i}] must hold non-negative ints, got {x!r}")
    out.append([int(x) for x in row])
  return out


def _check_text(value: Any, name: str, *, optional: bool = False) -> str | None:
  if value is None and optional:
    return None
  if not isinstance(value, str) or not value:
    raise UserError(f"{name} must be a non-empty string, got {value!r}")
  return value


def _resolve_classes(labels: np.ndarray, class_names: Sequence[str] | None,
                     num_classes: int | None) -> tuple[int, list[str] | None]:
  """The number of classes and the class-name list, from whichever of them was given."""
  names = None
  if class_names is not None:
    if isinstance(class_names, str) or not all(isinstance(s, str) for s in class_names):
      raise UserError("class_names must be a list of strings, one per class")
    names = list(class_names)
  if num_classes is not None:
    if not _is_int(num_classes) or num_classes < 1:
      raise UserError(f"num_classes must be a positive int, got {num_classes!r}")
    num_classes = int(num_classes)
    if names is not None and len(names) != num_classes:
      raise UserError(f"num_classes={num_classes} but {len(names)} class_names; they must agree")
  elif names is not None:
    num_classes = len(names)
  else:
    num_classes = int(labels.max()) + 1
  if labels.max() >= num_classes:
    raise UserError(f"label {int(labels.max())} is out of range for {num_classes} classes; "
                    "labels must be in [0, num_classes)")
  return num_classes, names


# ---------------------------------------------------------------------------------------------
# PNG encoding / decoding.


def _encode_png(image: np.ndarray) -> bytes:
  """Lossless PNG bytes of one uint8 [H, W, C] image: mode "L" for C=1, "RGB" for C=3.

  No metadata (no timestamp) and a fixed compression level, so equal pixels give equal bytes.
  """
  pixels = np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG", compress_level=_PNG_COMPRESS_LEVEL,
                               optimize=False)
  return buf.getvalue()


def _encode_npy(image: np.ndarray) -> bytes:
  """Lossless .npy bytes of one float32 [H, W, C] image (little-endian, C order, no pickle):
  equal pixels give equal bytes."""
  buf = io.BytesIO()
  np.save(buf, np.ascontiguousarray(image, dtype="<f4"), allow_pickle=False)
  return buf.getvalue()


def _decode_npy(data: bytes, name: str, shape: tuple[int, int, int]) -> np.ndarray:
  """float32 [H, W, C] pixels of an .npy file that must have exactly `shape`."""
  try:
    pixels = np.load(io.BytesIO(data), allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise UserError(f"compressed-set file {name} cannot be decoded ({e}); rewrite the set") from e
  if pixels.dtype != np.float32 or pixels.shape != shape:
    raise UserError(f"compressed-set file {name} holds {pixels.dtype} {list(pixels.shape)} but "
                    f"the manifest says float32 {list(shape)}; rewrite the set")
  return pixels


def _decode_png(data: bytes, name: str, shape: tuple[int, int, int]) -> np.ndarray:
  """uint8 [H, W, C] pixels of a PNG that must have exactly `shape`; UserError naming `name`."""
  want_mode = "L" if shape[2] == 1 else "RGB"
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      if im.format != "PNG" or im.mode != want_mode:
        raise UserError(f"compressed-set file {name} is a {im.format} image of mode {im.mode}, "
                        f"expected a {want_mode} PNG; rewrite the set")
      pixels = np.asarray(im, dtype=np.uint8)
  except UserError:
    raise
  except Exception as e:  # PIL raises a zoo of types (OSError, SyntaxError, ValueError, ...)
    raise UserError(f"compressed-set file {name} cannot be decoded ({e}); rewrite the set") from e
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  if pixels.shape != shape:
    raise UserError(f"compressed-set file {name} has shape {list(pixels.shape)} but the manifest "
                    f"says image_shape {list(shape)}; rewrite the set")
  return pixels


def _parallel_map(fn: Callable[[int], Any], n: int) -> list[Any]:
  """[fn(0), ..., fn(n-1)] in order, on threads for large n (PIL and zlib release the GIL).

  The first exception (in index order) propagates; pending work is cancelled.
  """
  if n < _PARALLEL_MIN:
    return [fn(i) for i in range(n)]
  workers = min(8, os.cpu_count() or 1)
  ex = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
  try:
    return list(ex.map(fn, range(n)))
  finally:
    ex.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# Public API.


def _as_path(path: PathLike) -> Path:
  # Absolute, so the parent (where the temporary siblings live) is always well defined; not
  # resolved, so a symlinked parent directory is respected.
  p = Path(os.path.abspath(os.fspath(path)))
  if not p.name:
    raise UserError(f"{os.fspath(path)!r} cannot hold a compressed set; pass a directory path "
                    "with a name, e.g. workdirs/cifar10_ipc10")
  return p


def write_compressed(path: PathLike, images: np.ndarray, labels: np.ndarray,
                     source_indices: Sequence[Sequence[int]], *, dataset: str, split: str,
                     method: str, config: dict, class_names: Sequence[str] | None = None,
                     num_classes: int | None = None, source_fingerprint: str | None = None,
                     extra: dict | None = None, overwrite: bool = False) -> dict:
  """Writes a compressed set to directory `path` atomically and returns its manifest.

  Args:
    path: the directory to create (its parent is created if missing). If it already holds a set,
      `overwrite=True` replaces it; a non-empty directory that is not a set is never touched.
    images: uint8 [N, H, W, C], C in {1, 3}; N >= 1. Or float32 pixels in [0, 1] units
      (finite, not clipped): stored as .npy files, format 2 (see the module docstring).
    labels: int [N], in [0, num_classes).
    source_indices: N lists of source-dataset indices, one per stored image: [i] for a pruned
      image, [i1, i2, i3, i4] for a 2x2 tile of four sources, [] for a purely synthetic image.
    dataset, split: the source dataset and split the set was made from.
    method: the compression method's name; `config`: its settings (plain JSON, stored as given).
    class_names: optional names, one per class; `num_classes` defaults to len(class_names), else
      max(labels) + 1.
    source_fingerprint: optional identifier of the exact source data the indices refer to.
    extra: optional plain-JSON metadata stored as given.
    overwrite: replace an existing set at `path`.

  Returns:
    The manifest dict, equal to what `read_manifest(path)` returns.

  Raises:
    UserError: bad input, or `path` already holds a set (without overwrite) or other files; in
      all these cases nothing is written.
  """
  # Validate everything before touching the disk.
  images = _check_images(images)
  n, h, w, c = images.shape
  labels = _check_labels(labels, n)
  sources = _check_source_indices(source_indices, n)
  dataset = _check_text(dataset, "dataset")
  split = _check_text(split, "split")
  method = _check_text(method, "method")
  source_fingerprint = _check_text(source_fingerprint, "source_fingerprint", optional=True)
  if not isinstance(config, Mapping):
    raise UserError(f"config must be a dict, got {type(config).__name__}")
  config = _plain_json(config, "config")
  if extra is not None and not isinstance(extra, Mapping):
    raise UserError(f"extra must be a dict or None, got {type(extra).__name__}")
  extra = _plain_json(extra, "extra")
  num_classes, names = _resolve_classes(labels, class_names, num_classes)
  if not isinstance(overwrite, bool):
    raise UserError(f"overwrite must be True or False, got {overwrite!r}")

  path = _as_path(path)
  if path.parent.exists() and not path.parent.is_dir():
    raise UserError(f"cannot write a compressed set under {path.parent}: it is not a directory")
  # A crash during an earlier write may have left the old set parked; put it back first so that
  # the checks below see it.
  _recover(path, best_effort=False)
  replacing = False
  if os.path.lexists(path):
    if not path.is_dir():
      raise UserError(f"{path} exists and is not a directory; choose another path for the "
                      "compressed set")
    if _is_complete(path):
      if not overwrite:
        raise UserError(f"{path} already holds a compressed set; pass overwrite=True to replace "
                        "it, or choose another path")
      replacing = True
    elif any(path.iterdir()):
      raise UserError(f"{path} is a non-empty directory that is not a dcjax compressed set; "
                      "choose another path (its files are left alone)")

  label_width = max(_LABEL_WIDTH, len(str(num_classes - 1)))
  index_width = max(_INDEX_WIDTH, len(str(n - 1)))
  floats = images.dtype == np.float32
  suffix, encode = (".npy", _encode_npy) if floats else (".png", _encode_png)
  names_of = [f"{int(labels[i]):0{label_width}d}/{i:0{index_width}d}{suffix}" for i in range(n)]

  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
  os.chmod(tmp, umask_mode(0o777))  # mkdtemp makes it private; a set is as readable as results
  promoted = False
  try:
    folders = sorted({name.split("/")[0] for name in names_of})
    for folder in folders:
      (tmp / folder).mkdir()

    def write_one(i: int) -> tuple[str, int]:
      data = encode(images[i])
      _write_file(tmp / names_of[i], data)
      return hashlib.sha256(data).hexdigest(), len(data)

    written = _parallel_map(write_one, n)
    for folder in folders:
      _fsync_dir(tmp / folder)

    counts = np.bincount(labels, minlength=num_classes)
    manifest = {
        "format_version": _FLOAT_FORMAT_VERSION if floats else 1,
        "dcjax_version": dcjax.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset,
        "split": split,
        "source_fingerprint": source_fingerprint,
        "method": method,
        "config": config,
        "num_images": n,
        "num_classes": num_classes,
        "class_names": names,
        "image_shape": [h, w, c],
        "images_per_class": {str(k): int(counts[k]) for k in range(num_classes)},
        "image_bytes": sum(size for _, size in written),
        "files": [{"file": names_of[i], "label": int(labels[i]), "source_indices": sources[i],
                   "sha256": written[i][0], "bytes": written[i][1]} for i in range(n)],
        "extra": extra,
    }
    if floats:
      manifest["pixels"] = "float32"
    # Last inside the temporary directory: a directory with a manifest is a complete set.
    _write_file(tmp / MANIFEST, json.dumps(manifest, indent=1, allow_nan=False).encode())
    _fsync_dir(tmp)

    if replacing:
      old = path.parent / f".{path.name}.old-{secrets.token_hex(8)}"
      _rename(path, old)
      _fsync_dir(path.parent)
      # From here until the next rename `path` is missing; recovery renames `old` back.
      try:
        _rename(tmp, path)
      except BaseException:
        try:
          _rename(old, path)
        except OSError:
          pass  # left for the next _recover
        raise
      promoted = True
      _fsync_dir(path.parent)
      _discard_set(old)
    else:
      if path.is_dir():
        path.rmdir()  # empty (checked above); a directory cannot be renamed over it everywhere
      _rename(tmp, path)
      promoted = True
    _fsync_dir(path.parent)
  except BaseException:
    if not promoted:
      try:
        _rmtree(tmp)
      except OSError:
        pass  # a later _recover deletes it
    raise
  return manifest


def read_manifest(path: PathLike) -> dict:
  """The manifest of the compressed set at `path` (after repairing an interrupted write).

  Raises:
    UserError: `path` is not a compressed set, its manifest is corrupt, or it was written by a
      newer dcjax.
  """
  path = _as_path(path)
  where = _recover(path, best_effort=True)
  if where is None:
    raise UserError(f"{path} is not a dcjax compressed set (no {MANIFEST}); pass a directory "
                    "written by write_compressed")
  return _load_manifest(where, path)


def _load_manifest(where: Path, path: Path) -> dict:
  """Parses and sanity-checks `where/manifest.json`; errors name `path`."""
  try:
    manifest = json.loads((where / MANIFEST).read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"{path}/{MANIFEST} cannot be read ({e}); rewrite the set") from e
  if not isinstance(manifest, dict):
    raise UserError(f"{path}/{MANIFEST} is not a JSON object; rewrite the set")
  version = manifest.get("format_version")
  if not _is_int(version) or version < 1:
    raise UserError(f"{path}/{MANIFEST} has no valid format_version; rewrite the set")
  if version > FORMAT_VERSION:
    raise UserError(f"{path} uses compressed-set format {version}, newer than this dcjax "
                    f"({dcjax.__version__}) reads (format {FORMAT_VERSION}); upgrade dcjax")
  missing = [k for k in _MANIFEST_KEYS if k not in manifest]
  if missing:
    raise UserError(f"{path}/{MANIFEST} lacks {', '.join(missing)}; rewrite the set")
  if manifest.get("pixels", "uint8") not in ("uint8", "float32"):
    raise UserError(f"{path}/{MANIFEST} has invalid pixels {manifest.get('pixels')!r}; rewrite "
                    "the set")
  shape = manifest["image_shape"]
  if (not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(x) and x > 0 for x in shape)
      or shape[2] not in (1, 3)):
    raise UserError(f"{path}/{MANIFEST} has invalid image_shape {shape!r}; rewrite the set")
  files, num_classes = manifest["files"], manifest["num_classes"]
  if not isinstance(files, list) or len(files) != manifest["num_images"]:
    raise UserError(f"{path}/{MANIFEST} lists a different number of files than num_images; "
                    "rewrite the set")
  if not _is_int(num_classes) or num_classes < 1:
    raise UserError(f"{path}/{MANIFEST} has invalid num_classes {num_classes!r}; rewrite the set")
  for entry in files:
    ok = isinstance(entry, dict) and all(k in entry for k in ("file", "label", "sha256", "bytes"))
    match = _FILE_RE.match(entry["file"]) if ok and isinstance(entry["file"], str) else None
    # The pattern also keeps a crafted manifest from pointing outside the set's directory.
    suffix = "npy" if manifest.get("pixels") == "float32" else "png"
    if (match is None or match.group(3) != suffix or not _is_int(entry["label"])
        or int(match.group(1)) != entry["label"]
        or not 0 <= entry["label"] < num_classes):
      raise UserError(f"{path}/{MANIFEST} has an invalid files entry {entry!r}; rewrite the set")
  return manifest


def read_compressed(path: PathLike, *, verify: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, dict]:
  """Reads the compressed set at `path` (after repairing an interrupted write).

  Args:
    path: a directory written by `write_compressed`.
    verify: check every file's sha256 and byte count against the manifest. Decoded shapes are
      always checked (the images must stack).

  Returns:
    (images uint8 [N, H, W, C] (float32 for a float set), labels int32 [N], manifest), in
    manifest order; the pixels are exactly those that were written.

  Raises:
    UserError: not a compressed set, a newer format, or a missing / corrupt / modified file
      (named in the message).
  """
  path = _as_path(path)
  where = _recover(path, best_effort=True)
  if where is None:
    raise UserError(f"{path} is not a dcjax compressed set (no {MANIFEST}); pass a directory "
                    "written by write_compressed")
  manifest = _load_manifest(where, path)
  files = manifest["files"]
  shape = tuple(manifest["image_shape"])
  floats = manifest.get("pixels") == "float32"
  images = np.empty((len(files), *shape), dtype=np.float32 if floats else np.uint8)
  decode = _decode_npy if floats else _decode_png

  root = os.path.realpath(where)

  def read_one(i: int) -> None:
    entry = files[i]
    name = f"{path}/{entry['file']}"
    real = os.path.realpath(where / entry["file"])
    if os.path.commonpath([root, real]) != root:  # a symlink or '..' out of the set
      raise UserError(f"compressed-set file {name} leads outside the set (to {real}); a set "
                      "holds its own files only")
    try:
      data = (where / entry["file"]).read_bytes()
    except OSError as e:
      raise UserError(f"compressed-set file {name} cannot be read ({e.strerror or e}); "
                      "the set is incomplete, rewrite it") from e
    if verify and (len(data) != entry["bytes"]
                   or hashlib.sha256(data).hexdigest() != entry["sha256"]):
      raise UserError(f"compressed-set file {name} does not match its sha256 in the manifest "
                      "(modified or corrupt); rewrite the set")
    images[i] = decode(data, name, shape)

  _parallel_map(read_one, len(files))
  labels = np.array([entry["label"] for entry in files], dtype=np.int32)
  return images, labels, manifest


def is_compressed_set(path: PathLike) -> bool:
  """Whether `path` names a compressed set (a directory with a manifest, or one whose write was
  interrupted mid-swap and that `read_compressed` will repair). Changes nothing on disk and does
  not validate the files; `read_compressed` does."""
  try:
    return _locate(_as_path(path)) is not None
  except (UserError, OSError):
    return False
