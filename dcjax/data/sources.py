"""Datasets by name: random-access sources of examples, decoded once through Grain.

`open_source(name, split)` resolves a dataset name to a `Source`: `len(source)` examples,
`source[i]` decodes example i to `{"image": uint8 [H, W, C], "label": int, "index": i}`, and
`source.labels` (int32 [N]) is known without decoding any image, so selection methods that only
need labels never touch pixels. `load_images` decodes (and resizes) many examples at once with
Grain's reader threads, into one preallocated array, optionally cached on disk as `.npz` so a
repeated run never decodes the same JPEG twice.

Names:
  fashion_mnist     Fashion-MNIST idx files (Debian's `dataset-fashion-mnist`, or `data_dir`).
  cifar10[:<path>]  CIFAR-10's binary version (the `cifar-10-batches-bin` folder of
                    cifar-10-binary.tar.gz; `data_dir` or the path names it). Never the pickled
                    version: dcjax reads no pickle.
  tfds:<name>       A prepared TFDS dataset read as ArrayRecord (no TensorFlow at read time).
  folder:<path>     Class subfolders of JPEG/PNG files (ImageNet layout; the sets dcjax writes).
  parquet:<path>    A Hugging Face parquet export (image bytes + class id per row).
  synthetic         Seeded random images, generated per index (for tests and smoke runs).

This is host-side data code: it never imports JAX.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import io
import json
import os
import re
import sys
import threading
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from dcjax.data.files import cache_dir, write_atomic
from dcjax.errors import UserError, unknown_name

SPLITS = ("train", "test")
KNOWN_SOURCES = ("fashion_mnist", "cifar10[:<path>]", "tfds:<name>", "folder:<path>",
                 "parquet:<path>", "synthetic")
RESIZE_MODES = ("shorter_center_crop", "stretch")

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

# Above this many images `load_images` shows a progress bar; below it decoding is near-instant.
_PROGRESS_MIN_IMAGES = 2000


class Source:
  """One split of a dataset, with random access to decoded examples.

  Attributes:
    name: The name it was opened with, e.g. "fashion_mnist" or "folder:/data/imagenet".
    split: "train" or "test", as the caller asked (the underlying split may be named
      differently, e.g. TFDS "validation"; see `describe`).
    num_classes: K; labels lie in 0..K-1.
    class_names: [K] human-readable class names.
    labels: int32 [N], read without decoding any image.
  """

  name: str
  split: str
  num_classes: int
  class_names: list[str]
  labels: np.ndarray

  def __init__(self, name: str, split: str, class_names: Sequence[str], labels: np.ndarray):
    labels = np.asarray(labels)
    if labels.ndim != 1:
      raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    num_classes = len(class_names)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
      raise UserError(
          f"{name} {split}: labels must lie in 0..{num_classes - 1}, found {labels.min()}.."
          f"{labels.max()}; check that the dataset's label column holds class ids"
      )
    self.name = name
    self.split = split
    self.num_classes = num_classes
    self.class_names = list(class_names)
    self.labels = labels.astype(np.int32)
    self.labels.flags.writeable = False  # shared by every consumer; a mutation would be a bug

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int) -> dict[str, Any]:
    """Example i: {"image": uint8 [H, W, C] (C = 1 or 3), "label": int, "index": i}."""
    i = int(i)  # NumPy integers come in from index arrays.
    if not 0 <= i < len(self):
      raise IndexError(f"index {i} out of range for {self.name} {self.split} of {len(self)}")
    return {"image": self._image(i), "label": int(self.labels[i]), "index": i}

  def _image(self, i: int) -> np.ndarray:
    """Decoded image i, uint8 [H, W, C]."""
    raise NotImplementedError

  def describe(self, i: int) -> str:
    """A human name of example i for error messages."""
    return f"{self.name} {self.split}[{i}]"

  def content_digest(self) -> str:
    """A digest of the images (see `fingerprint`); subclasses give cheaper exact ones."""
    return _decoded_digest(self)

  def __repr__(self) -> str:
    return (
        f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, len={len(self)}, "
        f"num_classes={self.num_classes})"
    )


def fingerprint(source: Source) -> str:
  """sha256 hex of the split's content: its length, classes, labels and images.

  The images enter through `source.content_digest()`: the decoded arrays of an in-memory
  source, the bytes of a folder's or parquet export's files (hashed once, then cached by their
  paths, sizes and modification times), the generator's parameters of synthetic data, TFDS's
  name and split (TFDS prepares versioned, checksummed data). Independent of the name the
  split was opened by, so the same data opened by another path matches. Score files, cached
  teachers and manifests store it, so scores or a teacher made from other images with the same
  labels are never reused.
  """
  digest = hashlib.sha256(b"dcjax.sources.fingerprint.v2")
  digest.update(np.array([len(source), source.num_classes], "<i8").tobytes())
  digest.update(np.ascontiguousarray(source.labels, "<i4").tobytes())
  digest.update(source.content_digest().encode())
  return digest.hexdigest()


def _decoded_digest(source: Source) -> str:
  """sha256 of every decoded image (shape and bytes), in order: the generic content digest."""
  digest = hashlib.sha256(b"decoded")
  for i in tqdm(range(len(source)), desc=f"fingerprint {source.name}", unit="img",
                disable=len(source) <= _PROGRESS_MIN_IMAGES, leave=False):
    image = np.ascontiguousarray(source[i]["image"])
    digest.update(json.dumps(image.shape).encode())
    digest.update(image.tobytes())
  return digest.hexdigest()


def _files_digest(paths: Sequence[str], names: Sequence[str], what: str) -> str:
  """sha256 of the files' names and bytes; cached under $DCJAX_CACHE/fingerprints by the files'
  (name, size, mtime), so each file set is read once."""
  stats = [(n, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p, n in zip(paths, names)]
  key = hashlib.sha256(json.dumps([os.path.abspath(paths[0]) if paths else "", stats]).encode())
  cached = os.path.join(cache_dir("fingerprints"), key.hexdigest()[:32] + ".txt")
  if os.path.exists(cached):
    with open(cached) as f:
      return f.read().strip()
  digest = hashlib.sha256(b"files")
  for path, name in tqdm(list(zip(paths, names)), desc=f"fingerprint {what}", unit="file",
                         disable=len(paths) <= _PROGRESS_MIN_IMAGES, leave=False):
    digest.update(name.encode() + b"\0")
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
  value = digest.hexdigest()
  write_atomic(cached, lambda f: f.write(value.encode()))
  return value


def open_source(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    synthetic: Mapping[str, Any] | None = None,
) -> Source:
  """Opens split "train" or "test" of the dataset called `name` (see the module docstring).

  Args:
    name: "fashion_mnist", "tfds:<name>", "folder:<path>", "parquet:<path>" or "synthetic".
    split: "train" or "test".
    data_dir: Where Fashion-MNIST's idx files are, or the TFDS data dir; unused otherwise.
    synthetic: Options of the "synthetic" source (see `SyntheticSource`); unused otherwise.
  """
  if split not in SPLITS:
    raise UserError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
  kind, _, argument = name.partition(":")
  if kind in ("tfds", "folder", "parquet") and not argument:
    raise UserError(f"dataset {name!r} needs a {'name' if kind == 'tfds' else 'path'} after "
                    f"'{kind}:', e.g. '{kind}:{'imagenet2012' if kind == 'tfds' else '/data/x'}'")
  if name == "fashion_mnist":
    return _open_fashion_mnist(split, data_dir or DEFAULT_FASHION_MNIST_DIR)
  if kind == "cifar10":
    return _open_cifar10(name, split, argument or data_dir)
  if name == "synthetic":
    return SyntheticSource(split, **_synthetic_options(synthetic))
  if kind == "tfds":
    return _open_tfds(name, argument, split, data_dir)
  if kind == "folder":
    return _open_folder(name, argument, split)
  if kind == "parquet":
    return _open_parquet(name, argument, split)
  raise unknown_name("dataset", name, KNOWN_SOURCES)


# --- Image helpers ------------------------------------------------------------------------------


def _pil_to_array(image: Image.Image) -> np.ndarray:
  """uint8 [H, W, 1] for grayscale, [H, W, 3] otherwise (palette, RGBA, CMYK become RGB)."""
  if image.mode in ("1", "LA"):
    image = image.convert("L")
  elif image.mode not in ("L", "RGB"):
    image = image.convert("RGB")
  array = np.asarray(image, dtype=np.uint8)
  return array[:, :, None] if array.ndim == 2 else array


def _decode_bytes(data: bytes, what: str) -> np.ndarray:
  """Decodes encoded image bytes (JPEG, PNG, ...) to uint8 [H, W, C]; `what` names it in errors."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()  # Decode now, inside the try: PIL is lazy and would fail later otherwise.
      return _pil_to_array(image)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise UserError(f"cannot decode image {what}: {e}; remove or replace it") from e


def _as_image_array(image: Any, what: str) -> np.ndarray:
  """Encoded bytes or an already-decoded array (2-D or 3-D) -> uint8 [H, W, C]."""
  if isinstance(image, np.ndarray) and image.dtype == object:
    image = image.item()  # A scalar holding the encoded bytes.
  if isinstance(image, (bytes, bytearray, memoryview)):
    return _decode_bytes(bytes(image), what)
  array = np.asarray(image)
  if array.dtype != np.uint8 or array.ndim not in (2, 3):
    raise UserError(f"image {what} is {array.dtype} {array.shape}, expected uint8 [H, W, C]")
  return array[:, :, None] if array.ndim == 2 else array


def _pil_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, C] -> [height, width, C] with PIL BICUBIC.

  PIL widens the filter support by the downscale factor, so BICUBIC is antialiased when shrinking
  (like torchvision's antialias=True), which matters for ImageNet at 64 or 32 pixels.
  """
  channels = image.shape[2]
  if channels not in (1, 3):
    raise UserError(f"cannot resize images with {channels} channels; use 1 or 3")
  pil = Image.fromarray(image[:, :, 0] if channels == 1 else image)
  resized = np.asarray(pil.resize((width, height), Image.Resampling.BICUBIC), dtype=np.uint8)
  return resized[:, :, None] if channels == 1 else resized


def resize_image(
    image: np.ndarray, size: int, resize: str = "shorter_center_crop", crop_ratio: float = 1.0
) -> np.ndarray:
  """uint8 [H, W, C] -> uint8 [size, size, C].

  "shorter_center_crop" resizes the shorter side to round(size / crop_ratio) keeping the aspect
  ratio, then takes the central size x size crop (crop_ratio 0.875 at size 224 is the ImageNet
  evaluation protocol: resize 256, center crop 224). "stretch" resizes straight to size x size.
  Each step is skipped when it would not change the shape, so an image already at the target
  size comes back unchanged (byte-identical) when crop_ratio is 1.
  """
  height, width = image.shape[:2]
  if resize == "stretch":
    return image if (height, width) == (size, size) else _pil_resize(image, size, size)
  shorter = max(size, round(size / crop_ratio))
  if min(height, width) != shorter:
    scale = shorter / min(height, width)
    if height <= width:
      height, width = shorter, max(shorter, round(width * scale))
    else:
      height, width = max(shorter, round(height * scale)), shorter
    image = _pil_resize(image, height, width)
  if (height, width) == (size, size):
    return image
  top, left = (height - size) // 2, (width - size) // 2
  return np.ascontiguousarray(image[top : top + size, left : left + size])


# --- Fashion-MNIST ------------------------------------------------------------------------------

_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class ArraySource(Source):
  """A source held in memory as one uint8 [N, H, W, C] array (Fashion-MNIST)."""

  def __init__(self, name: str, split: str, class_names: Sequence[str], images: np.ndarray,
               labels: np.ndarray):
    super().__init__(name, split, class_names, labels)
    self.images = images.view()  # uint8 [N, H, W, C]
    self.images.flags.writeable = False  # `source[i]` returns views of it.

  def _image(self, i: int) -> np.ndarray:
    return self.images[i]

  def content_digest(self) -> str:
    digest = hashlib.sha256(json.dumps(self.images.shape).encode())
    digest.update(np.ascontiguousarray(self.images).data)
    return digest.hexdigest()


def _read_idx(path: str, ndim: int) -> np.ndarray:
  """Reads an idx file of unsigned bytes (magic 0x0000080N) with N == ndim, gzipped or not."""
  corrupt = (f"{path} is truncated or corrupt; reinstall it (`sudo apt-get install --reinstall "
             "dataset-fashion-mnist`) or download it again")
  try:
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a cut-off gzip is EOFError.
    raise UserError(f"{corrupt} ({e})") from e
  header = 4 + 4 * ndim
  if len(data) < header or data[:4] != bytes([0, 0, 0x08, ndim]):
    raise UserError(f"{corrupt} (bad idx header)")
  shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
  if len(data) - header != int(np.prod(shape)):
    raise UserError(f"{corrupt} ({len(data) - header} data bytes for shape {shape})")
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _open_fashion_mnist(split: str, data_dir: str) -> ArraySource:
  """Loads the split's two idx files into memory once: images [N, 28, 28, 1], labels [N]."""
  paths = []
  for base in _FASHION_MNIST_FILES[split]:
    found = [p for p in (os.path.join(data_dir, base), os.path.join(data_dir, base + ".gz"))
             if os.path.isfile(p)]
    if not found:
      raise UserError(
          f"Fashion-MNIST not found in {data_dir} (missing {base}[.gz]): install it with "
          "`sudo apt-get install dataset-fashion-mnist` (or `bash scripts/setup.sh`), or point "
          "--config.data.dir at a directory holding the four idx files"
      )
    paths.append(found[0])
  images, labels = _read_idx(paths[0], ndim=3), _read_idx(paths[1], ndim=1)
  if len(images) != len(labels):
    raise UserError(f"{paths[0]} holds {len(images)} images but {paths[1]} holds {len(labels)} "
                    "labels; reinstall Fashion-MNIST")
  return ArraySource("fashion_mnist", split, FASHION_MNIST_CLASS_NAMES, images[..., None], labels)


# --- CIFAR-10, binary version -------------------------------------------------------------------

CIFAR10_CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                       "ship", "truck"]
_CIFAR10_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                  "test": ["test_batch.bin"]}
_CIFAR10_RECORD = 1 + 32 * 32 * 3  # label byte, then the red, green and blue 32x32 planes


def _open_cifar10(name: str, split: str, data_dir: str | None) -> ArraySource:
  """CIFAR-10's binary batches: records of 1 label byte + 3072 pixel bytes (R, G, B planes,
  row-major), 10,000 per file; class names from batches.meta.txt when present."""
  how = ("download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz, extract it and pass "
         "--config.data.dir=<where>/cifar-10-batches-bin (or --config.dataset=cifar10:<that dir>)")
  if not data_dir:
    raise UserError(f"dataset cifar10 needs the folder of its binary batches: {how}")
  paths = [os.path.join(data_dir, f) for f in _CIFAR10_FILES[split]]
  missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
  if missing:
    raise UserError(f"CIFAR-10 binary batches not found in {data_dir} (missing "
                    f"{', '.join(missing)}): {how}")
  records = []
  for p in paths:
    with open(p, "rb") as f:
      data = f.read()
    if not data or len(data) % _CIFAR10_RECORD:
      raise UserError(f"{p} is truncated or not a CIFAR-10 binary batch ({len(data)} bytes, "
                      f"not a multiple of {_CIFAR10_RECORD}): {how}")
    records.append(np.frombuffer(data, np.uint8).reshape(-1, _CIFAR10_RECORD))
  rows = np.concatenate(records)
  labels = rows[:, 0].astype(np.int32)
  images = rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  class_names = CIFAR10_CLASS_NAMES
  meta = os.path.join(data_dir, "batches.meta.txt")
  if os.path.isfile(meta):
    with open(meta, encoding="utf-8") as f:
      names = [line.strip() for line in f if line.strip()]
    if len(names) == 10:
      class_names = names
  return ArraySource(name, split, class_names, np.ascontiguousarray(images), labels)


# --- TFDS ---------------------------------------------------------------------------------------

# Builders without a "test" split, whose held-out split is "validation". Only consulted when the
# split names are not on disk (under tfds.testing.mock_data); a prepared dataset lists its splits.
_TFDS_VALIDATION_AS_TEST = ("imagenet2012", "imagenet2012_subset", "imagenet_resized", "imagenette")


class TfdsSource(Source):
  """A prepared TFDS dataset, read with `tfds.data_source` (ArrayRecord; no TensorFlow).

  Opening reads every record once to collect the labels: O(N) record reads. Images are not
  decoded, but ArrayRecord stores whole examples, so this reads the split's bytes from disk once
  (for ImageNet's 1.28M training records, expect minutes; later reads hit the page cache).
  """

  def __init__(self, name: str, split: str, tfds_split: str, data: Sequence[dict],
               image_key: str, class_names: Sequence[str], labels: np.ndarray):
    super().__init__(name, split, class_names, labels)
    self.tfds_split = tfds_split  # The builder's name for it, e.g. "validation" for "test".
    self._data = data
    self._image_key = image_key

  def _image(self, i: int) -> np.ndarray:
    return _as_image_array(self._data[i][self._image_key], self.describe(i))

  def describe(self, i: int) -> str:
    return f"{self.name} {self.tfds_split}[{i}]"

  def content_digest(self) -> str:
    # TFDS prepares versioned data whose checksums it verifies; its name and split identify it.
    return hashlib.sha256(f"tfds {self.name} {self.tfds_split}".encode()).hexdigest()


def _tfds_split(split: str, known_splits: Sequence[str], builder_name: str, name: str) -> str:
  """Our split name -> the builder's; "test" falls back to "validation" (ImageNet has no test)."""
  if split == "train":
    candidates = ["train"]
  else:
    candidates = ["test", "validation"]
  if not known_splits:  # Unprepared, or mocked: the names are not known. See the table above.
    return "validation" if split == "test" and builder_name in _TFDS_VALIDATION_AS_TEST else split
  for candidate in candidates:
    if candidate in known_splits:
      return candidate
  raise UserError(f"{name} has no {' or '.join(candidates)} split (it has: "
                  f"{', '.join(sorted(known_splits))})")


def _open_tfds(name: str, tfds_name: str, split: str, data_dir: str | None) -> TfdsSource:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(f"{name} needs tensorflow-datasets: pip install 'dcjax[tfds]'") from e
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise UserError(f"unknown TFDS dataset {tfds_name!r}; see "
                    "https://www.tensorflow.org/datasets/catalog for the names") from e
  features = builder.info.features
  image_keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
  label = features["label"] if "label" in features else None
  if not image_keys or not isinstance(label, tfds.features.ClassLabel):
    raise UserError(f"{name} is not an image classification dataset (needs an Image feature and "
                    f"a ClassLabel 'label'; it has: {', '.join(features.keys())})")
  image_key = "image" if "image" in image_keys else image_keys[0]
  tfds_split = _tfds_split(split, list(builder.info.splits), builder.name, name)

  def data_source(decoders):
    return tfds.data_source(tfds_name, split=tfds_split, data_dir=data_dir, download=False,
                            decoders=decoders)

  try:
    # Keep the encoded bytes: we decode them ourselves with PIL (the same path as every other
    # source), and reading labels then never decodes an image.
    data = data_source({image_key: tfds.decode.SkipDecoding()})
    if len(data):
      try:
        data[0]
      except ImportError:
        # Real ArrayRecord reads with SkipDecoding need no TensorFlow, but tfds.testing.mock_data
        # re-encodes its fake images with TensorFlow whenever decoders are passed. Fall back to
        # the decoded arrays there; `_as_image_array` takes bytes and arrays alike.
        data = data_source(None)
  except Exception as e:  # tfds raises many types (AssertionError, NotImplementedError, ...).
    if not builder.is_prepared():
      raise UserError(
          f"TFDS dataset {tfds_name!r} is not prepared in {builder.data_dir}: prepare it once with "
          f"`tfds build {tfds_name} --file_format=array_record` (needs TensorFlow installed; "
          "ImageNet also needs its manual download), or pass data_dir pointing at a prepared copy"
      ) from e
    raise UserError(f"cannot read {name} split {tfds_split!r}: {e}") from e
  labels = _read_tfds_labels(data, label_key="label", description=f"{name} {tfds_split}")
  return TfdsSource(name, split, tfds_split, data, image_key, label.names, labels)


def _read_tfds_labels(data: Sequence[dict], label_key: str, description: str) -> np.ndarray:
  """Reads the label of every record with Grain's reader threads (one file read per record)."""
  import grain  # pylint: disable=g-import-not-at-top  # Slow to import; only needed here.

  labels = np.empty(len(data), np.int32)
  dataset = grain.MapDataset.source(data).map(lambda record: int(record[label_key]))
  records = dataset.to_iter_dataset(grain.ReadOptions(num_threads=16, prefetch_buffer_size=256))
  with tqdm(total=len(data), desc=f"reading labels of {description}", unit="rec",
                 file=sys.stderr, disable=len(data) <= _PROGRESS_MIN_IMAGES) as bar:
    for position, label in enumerate(records):  # Grain yields in order.
      labels[position] = label
      bar.update(1)
  return labels


# --- Folder of class subfolders -----------------------------------------------------------------

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_FOLDER_SPLIT_NAMES = {"train": ("train",), "test": ("test", "val", "validation")}


class FolderSource(Source):
  """Class subfolders of JPEG/PNG files: root/<class>/<file>; classes are the sorted folders."""

  def __init__(self, name: str, split: str, root: str, class_names: Sequence[str],
               files: list[str], labels: np.ndarray):
    super().__init__(name, split, class_names, labels)
    self.root = root
    self.files = files  # Paths relative to root: "<class>/<file>", sorted within each class.

  def _image(self, i: int) -> np.ndarray:
    path = self.describe(i)
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      raise UserError(f"cannot read image {path}: {e}") from e
    return _decode_bytes(data, path)

  def describe(self, i: int) -> str:
    return os.path.join(self.root, self.files[i])

  def content_digest(self) -> str:
    return _files_digest([os.path.join(self.root, f) for f in self.files], self.files,
                         self.root)


def _open_folder(name: str, path: str, split: str) -> FolderSource:
  """`path/<split>` (or `path/val`, `path/validation` for "test") when it exists; otherwise, if
  `path` has no split folders at all, `path` itself is the only split, returned for any split."""
  if not os.path.isdir(path):
    raise UserError(f"dataset folder {path} does not exist (name {name!r}); expected class "
                    "subfolders of JPEG/PNG files")
  split_dirs = {s: [d for d in names if os.path.isdir(os.path.join(path, d))]
                for s, names in _FOLDER_SPLIT_NAMES.items()}
  root = path
  if split_dirs[split]:
    root = os.path.join(path, split_dirs[split][0])
  elif split_dirs["train"] or split_dirs["test"]:
    present = split_dirs["train"] + split_dirs["test"]
    raise UserError(f"{path} has no {split} folder (it has {', '.join(present)}); expected "
                    f"{' or '.join(_FOLDER_SPLIT_NAMES[split])}")
  with os.scandir(root) as entries:
    class_names = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
  files, labels = [], []
  for label, class_name in enumerate(class_names):
    with os.scandir(os.path.join(root, class_name)) as entries:
      names = sorted(e.name for e in entries
                     if e.is_file() and e.name.lower().endswith(_IMAGE_EXTENSIONS))
    files += [os.path.join(class_name, n) for n in names]
    labels += [label] * len(names)
  real_root = os.path.realpath(root)
  for f in files:  # a symlinked file or class folder must stay inside the dataset
    real = os.path.realpath(os.path.join(root, f))
    if os.path.commonpath([real_root, real]) != real_root:
      raise UserError(f"{os.path.join(root, f)} is a link to {real}, outside the dataset folder "
                      f"{root}; copy the file in or point the dataset at a folder holding it")
  if not files:
    raise UserError(f"no class subfolders with .jpg/.jpeg/.png images in {root} (name {name!r})")
  return FolderSource(name, split, root, class_names, files, np.array(labels, np.int32))


# --- Hugging Face parquet -----------------------------------------------------------------------

_PARQUET_SPLIT_PREFIX = re.compile(r"^(train|test|validation|valid|val)(?=[-_.])")
_PARQUET_SPLIT_NAMES = {"train": ("train",), "test": ("test", "validation", "valid", "val")}
_PARQUET_LABEL_COLUMNS = ("class_id", "label", "labels")
_PARQUET_CACHED_ROW_GROUPS = 8  # ~ reader threads, so threads at a row-group edge do not thrash.


class ParquetSource(Source):
  """Rows of parquet files: image bytes (HF Image struct {bytes, path} or binary) and a label.

  Labels come from one column read; images are read lazily one row group at a time (a few recent
  row groups are cached), so opening a large export does not read its image bytes.
  """

  def __init__(self, name: str, split: str, files: list[str], image_column: str,
               row_group_starts: np.ndarray, row_groups: list[tuple[int, int]],
               class_names: Sequence[str], labels: np.ndarray):
    super().__init__(name, split, class_names, labels)
    self.files = files
    self._image_column = image_column
    self._row_group_starts = row_group_starts  # int64 [G + 1]: first row of each row group.
    self._row_groups = row_groups  # [G] (file index, row group within the file).
    self._init_cache()

  def _init_cache(self) -> None:
    self._lock = threading.Lock()  # load_images reads from several threads.
    self._cache: collections.OrderedDict[int, Any] = collections.OrderedDict()

  def __getstate__(self) -> dict:  # Picklable for multiprocess loaders: drop lock and cache.
    state = self.__dict__.copy()
    del state["_lock"], state["_cache"]
    return state

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._init_cache()

  def _locate(self, i: int) -> tuple[int, int]:
    group = int(np.searchsorted(self._row_group_starts, i, side="right")) - 1
    return group, i - int(self._row_group_starts[group])

  def _column(self, group: int) -> Any:
    """The image column of row group `group` (a pyarrow ChunkedArray)."""
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

    with self._lock:
      if group in self._cache:
        self._cache.move_to_end(group)
        return self._cache[group]
      file_index, row_group = self._row_groups[group]
      column = pq.ParquetFile(self.files[file_index]).read_row_group(
          row_group, columns=[self._image_column]).column(0)
      self._cache[group] = column
      if len(self._cache) > _PARQUET_CACHED_ROW_GROUPS:
        self._cache.popitem(last=False)
      return column

  def _image(self, i: int) -> np.ndarray:
    group, row = self._locate(i)
    value = self._column(group)[row].as_py()
    if isinstance(value, dict):  # HF Image feature: {"bytes": ..., "path": ...}.
      value = value.get("bytes")
    if value is None:
      raise UserError(f"{self.describe(i)} has no image bytes (an HF export must embed images)")
    return _decode_bytes(value, self.describe(i))

  def describe(self, i: int) -> str:
    group, _ = self._locate(i)
    file_index, _ = self._row_groups[group]
    row_in_file = i - int(self._row_group_starts[group])
    for g in range(group - 1, -1, -1):  # Rows of earlier row groups of the same file.
      if self._row_groups[g][0] != file_index:
        break
      row_in_file += int(self._row_group_starts[g + 1] - self._row_group_starts[g])
    return f"{self.files[file_index]} row {row_in_file}"

  def content_digest(self) -> str:
    return _files_digest(self.files, [os.path.basename(f) for f in self.files], "parquet")


def _parquet_files(path: str, split: str) -> list[str]:
  """The split's files: `train-*`, `test-*`/`validation-*`/`valid-*`/`val-*` in path or path/data.

  A single file, or files whose names carry no split prefix, are the only split, returned for
  any split. Files that are all of the other split are an error, not silently used.
  """
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise UserError(f"parquet dataset {path} does not exist; give a .parquet file or a directory "
                    "holding them")
  files = sorted(os.path.join(d, f) for d in (path, os.path.join(path, "data")) if os.path.isdir(d)
                 for f in os.listdir(d) if f.endswith(".parquet"))
  if not files:
    raise UserError(f"no .parquet files in {path} or {os.path.join(path, 'data')}")
  by_prefix: dict[str | None, list[str]] = collections.defaultdict(list)
  for f in files:
    match = _PARQUET_SPLIT_PREFIX.match(os.path.basename(f))
    by_prefix[match.group(1) if match else None].append(f)
  for prefix in _PARQUET_SPLIT_NAMES[split]:
    if by_prefix.get(prefix):
      return by_prefix[prefix]
  if by_prefix.get(None):
    return by_prefix[None]
  raise UserError(f"no {split} files in {path} (file names start with: "
                  f"{', '.join(sorted(p for p in by_prefix if p))}); expected "
                  f"{' or '.join(p + '-*.parquet' for p in _PARQUET_SPLIT_NAMES[split])}")


def _hf_class_names(schema: Any, label_column: str) -> list[str] | None:
  """ClassLabel names from the Hugging Face metadata stored in the parquet schema, if any."""
  try:
    info = json.loads((schema.metadata or {})[b"huggingface"])
    names = info["info"]["features"][label_column]["names"]
  except (KeyError, TypeError, ValueError):
    return None
  return [str(n) for n in names] if isinstance(names, list) and names else None


def _open_parquet(name: str, path: str, split: str) -> ParquetSource:
  try:
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(f"{name} needs pyarrow: pip install 'dcjax[parquet]'") from e
  files = _parquet_files(path, split)
  label_column = image_column = None
  class_names = None
  labels, row_group_starts, row_groups = [], [0], []
  for file_index, file in enumerate(files):
    try:
      parquet_file = pq.ParquetFile(file)
    except (OSError, pa.ArrowException) as e:
      raise UserError(f"cannot read parquet file {file}: {e}") from e
    schema = parquet_file.schema_arrow
    if label_column is None:
      label_column = next((c for c in _PARQUET_LABEL_COLUMNS if c in schema.names), None)
      if label_column is None:
        raise UserError(f"{file} has no label column ({' or '.join(_PARQUET_LABEL_COLUMNS)}); "
                        f"its columns: {', '.join(schema.names)}")
      class_names = _hf_class_names(schema, label_column)
      image_column = "image"
    if image_column not in schema.names or label_column not in schema.names:
      raise UserError(f"{file} lacks column {image_column!r} or {label_column!r}; its columns: "
                      f"{', '.join(schema.names)}")
    image_type = schema.field(image_column).type
    if not (pa.types.is_binary(image_type) or pa.types.is_large_binary(image_type) or (
        pa.types.is_struct(image_type) and image_type.get_field_index("bytes") >= 0)):
      raise UserError(f"{file}: column 'image' is {image_type}, expected binary or "
                      "struct<bytes: binary, path: string>")
    column = parquet_file.read(columns=[label_column]).column(0)
    if column.null_count or not pa.types.is_integer(column.type):
      raise UserError(f"{file}: label column {label_column!r} must hold integers without nulls, "
                      f"got {column.type} with {column.null_count} nulls")
    labels.append(column.to_numpy())
    metadata = parquet_file.metadata
    for row_group in range(metadata.num_row_groups):
      row_groups.append((file_index, row_group))
      row_group_starts.append(row_group_starts[-1] + metadata.row_group(row_group).num_rows)
  all_labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
  if not len(all_labels):
    raise UserError(f"no rows in {', '.join(files)}")
  if class_names is None or all_labels.max() >= len(class_names):
    class_names = [str(k) for k in range(max(int(all_labels.max()) + 1, 1))]
  return ParquetSource(name, split, files, image_column, np.array(row_group_starts, np.int64),
                       row_groups, class_names, all_labels)


# --- Synthetic ----------------------------------------------------------------------------------

_SYNTHETIC_DEFAULTS = {"num_examples": 1024, "num_test_examples": 256, "image_size": 32,
                       "channels": 3, "num_classes": 10, "seed": 0}


def _synthetic_options(options: Mapping[str, Any] | None) -> dict[str, int]:
  options = dict(options or {})
  unknown = sorted(set(options) - set(_SYNTHETIC_DEFAULTS))
  if unknown:
    raise UserError(f"unknown synthetic dataset option(s) {', '.join(unknown)}; known: "
                    f"{', '.join(_SYNTHETIC_DEFAULTS)}")
  options = {**_SYNTHETIC_DEFAULTS, **options}
  for key, value in options.items():
    minimum = 0 if key == "seed" else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
      raise UserError(f"synthetic option {key} must be an integer >= {minimum}, got {value!r}")
  if options["channels"] not in (1, 3):
    raise UserError(f"synthetic option channels must be 1 or 3, got {options['channels']}")
  return {k: int(v) for k, v in options.items()}


class SyntheticSource(Source):
  """Seeded uniform-random uint8 images, labels index % num_classes (balanced).

  Each image is generated from np.random.default_rng([seed, split_id, index]), so access is
  random, deterministic and needs no memory; train and test differ through split_id.
  """

  def __init__(self, split: str, *, num_examples: int, num_test_examples: int, image_size: int,
               channels: int, num_classes: int, seed: int):
    n = num_examples if split == "train" else num_test_examples
    labels = np.arange(n, dtype=np.int64) % num_classes
    super().__init__("synthetic", split, [f"class_{k}" for k in range(num_classes)], labels)
    self.image_shape = (image_size, image_size, channels)
    self.seed = seed
    self._split_id = SPLITS.index(split)

  def _image(self, i: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, self._split_id, i])
    return rng.integers(0, 256, self.image_shape, dtype=np.uint8)

  def content_digest(self) -> str:
    return hashlib.sha256(json.dumps(["synthetic", self.seed, self._split_id,
                                      list(self.image_shape)]).encode()).hexdigest()


# --- Decoding many images through Grain ---------------------------------------------------------


class _Subset:
  """source[indices[k]] as item k, with k as "position" (where it goes in the output)."""

  def __init__(self, source: Source, indices: np.ndarray):
    self.source = source
    self.indices = indices

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, position: int) -> dict[str, Any]:
    return {**self.source[int(self.indices[position])], "position": position}


def process_indices(indices: np.ndarray | Sequence[int] | int, process_index: int,
                    process_count: int) -> np.ndarray:
  """This process's share of `indices` (or of range(indices) for an int): the process_index-th
  of `process_count` contiguous blocks, sizes differing by at most one, in order.

  For a multi-process run (pass `jax.process_index()`, `jax.process_count()`), so each process
  decodes only its share of a pass whose batches are sharded across processes, e.g.
  `load_images(source, process_indices(len(source), i, p))` for the test split followed by
  `train.evaluate(..., process_local=True)`. The dynamics runner and student training need the
  whole set on every device, so they take the whole split in every process.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must lie in [0, {process_count}), got {process_index}")
  indices = np.arange(indices) if np.ndim(indices) == 0 else np.asarray(indices)
  bounds = np.linspace(0, len(indices), process_count + 1).round().astype(np.int64)
  return indices[bounds[process_index]:bounds[process_index + 1]]


def _check_indices(source: Source, indices: np.ndarray | Sequence[int] | None) -> np.ndarray:
  if indices is None:
    return np.arange(len(source), dtype=np.int64)
  indices = np.asarray(indices)
  if indices.ndim != 1 or not (indices.size == 0 or np.issubdtype(indices.dtype, np.integer)):
    raise UserError(f"indices must be a 1-D integer array, got {indices.dtype} {indices.shape}")
  if indices.size and (indices.min() < 0 or indices.max() >= len(source)):
    raise UserError(f"indices must lie in 0..{len(source) - 1} for {source.name} {source.split}, "
                    f"found {indices.min()}..{indices.max()}; was the index file made for "
                    "another dataset?")
  return indices.astype(np.int64)


def _cache_key(source: Source, indices: np.ndarray, size: int | None, resize: str,
               crop_ratio: float) -> bytes:
  return json.dumps({
      "version": 1,
      "fingerprint": fingerprint(source),
      "indices_sha256": hashlib.sha256(indices.astype("<i8").tobytes()).hexdigest(),
      "size": size,
      "resize": resize,
      "crop_ratio": crop_ratio,
  }, sort_keys=True).encode()


def _read_cache(path: str, key: bytes, n: int) -> tuple[np.ndarray, np.ndarray] | None:
  """The cached (images, labels) if `path` holds them for `key`; None on a miss or a bad file."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as cached:
      if cached["key"].tobytes() != key:
        return None
      images, labels = cached["images"], cached["labels"]
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
    return None  # Unreadable (e.g. cut short by a crash before os.replace existed): recompute.
  if len(images) != n or len(labels) != n or images.dtype != np.uint8 or images.ndim != 4:
    return None
  return images, labels


def _write_cache(path: str, key: bytes, images: np.ndarray, labels: np.ndarray) -> None:
  """Writes an uncompressed .npz atomically: readers see the old file or the whole new one."""
  write_atomic(path, lambda f: np.savez(f, images=images, labels=labels,
                                        key=np.frombuffer(key, np.uint8)), suffix=".npz")


def load_images(
    source: Source,
    indices: np.ndarray | Sequence[int] | None = None,
    *,
    size: int | None = None,
    resize: str = "shorter_center_crop",
    crop_ratio: float = 1.0,
    num_threads: int = 8,
    cache_path: str | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
  """Decodes examples `indices` (default all) of `source`, resized, into one array.

  Args:
    source: The source to read.
    indices: int [n] source indices; the output follows their order.
    size: Output side length; None keeps the native size (all images must then share it).
    resize: "shorter_center_crop" or "stretch"; see `resize_image`.
    crop_ratio: In (0, 1]; for "shorter_center_crop" the shorter side is resized to
      round(size / crop_ratio) before the center crop (0.875: resize 256, crop 224).
    num_threads: Grain reader threads (decoding releases the GIL).
    cache_path: If given, an .npz file to reuse when it was made for the same source content,
      indices, size, resize and crop_ratio, and (re)written otherwise.
    progress: Show a progress bar on stderr for more than ~2000 images.

  Returns:
    (images uint8 [n, size, size, C], labels int32 [n]). C is 1 if every image is grayscale,
    otherwise 3 (grayscale images are repeated to RGB, as for ImageNet's few gray JPEGs).
  """
  if resize not in RESIZE_MODES:
    raise UserError(f"unknown resize {resize!r}; use one of: {', '.join(RESIZE_MODES)}")
  if not 0 < crop_ratio <= 1:
    raise UserError(f"crop_ratio must be in (0, 1], got {crop_ratio}")
  if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer))
                           or size < 1):
    raise UserError(f"image size must be a positive integer, got {size!r}")
  if num_threads < 1:
    raise UserError(f"num_threads must be >= 1, got {num_threads}")
  size = None if size is None else int(size)
  indices = _check_indices(source, indices)
  key = None
  if cache_path is not None:
    key = _cache_key(source, indices, size, resize, float(crop_ratio))
    cached = _read_cache(cache_path, key, len(indices))
    if cached is not None:
      return aligned(cached[0]), cached[1]
  images = aligned(_decode_all(source, indices, size, resize, crop_ratio, num_threads, progress))
  labels = source.labels[indices].astype(np.int32)
  if cache_path is not None:
    _write_cache(cache_path, key, images, labels)
  return images, labels


# XLA:CPU uses a host array in place (no copy) when jax.device_put gets one whose data is
# 64-byte aligned, and copies it otherwise: the whole training split on the "device" would
# then cost its size twice in host memory (measured: 12.5 KB vs 151 B per 64 px example beyond
# the images while scoring; experiments/bench_scoring.py memory).
_ALIGN = 64


def aligned_empty(shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
  """np.empty(shape, dtype) whose data starts at a 64-byte boundary."""
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape)) * dtype.itemsize
  buf = np.empty(nbytes + _ALIGN, np.uint8)
  offset = (-buf.ctypes.data) % _ALIGN
  return buf[offset:offset + nbytes].view(dtype).reshape(shape)


def aligned(array: np.ndarray) -> np.ndarray:
  """`array` itself when C-contiguous and 64-byte aligned, else an aligned copy."""
  if array.flags.c_contiguous and array.ctypes.data % _ALIGN == 0:
    return array
  out = aligned_empty(array.shape, array.dtype)
  out[...] = array
  return out


def _keeps_shape(shape: tuple[int, int], size: int | None, resize: str, crop_ratio: float) -> bool:
  """Whether `resize_image` returns images of `shape` unchanged."""
  if size is None:
    return True
  shorter = size if resize == "stretch" else max(size, round(size / crop_ratio))
  return tuple(shape) == (size, size) and shorter == size


def _decode_all(source: Source, indices: np.ndarray, size: int | None, resize: str,
                crop_ratio: float, num_threads: int, progress: bool) -> np.ndarray:
  """uint8 [n, H, W, C]: decode + resize in Grain threads, write in the main thread."""
  import grain  # pylint: disable=g-import-not-at-top  # Slow to import; only needed here.

  n = len(indices)
  if isinstance(source, ArraySource) and _keeps_shape(source.images.shape[1:3], size, resize,
                                                      crop_ratio):
    return source.images[indices]  # Already decoded at the target size: one gather, no threads.
  if n == 0:
    shape = source[0]["image"].shape if len(source) else (0, 0, 0)
    return np.zeros((0, size or shape[0], size or shape[1], shape[2]), np.uint8)

  def transform(item: dict[str, Any]) -> tuple[int, np.ndarray]:
    image = item["image"]
    if size is not None:
      image = resize_image(image, size, resize, crop_ratio)
    return item["position"], image

  dataset = grain.MapDataset.source(_Subset(source, indices)).map(transform)
  decoded = dataset.to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4 * num_threads))
  images = None
  first_index = int(indices[0])
  with tqdm(total=n, desc=f"decoding {source.name} {source.split}", unit="img",
                 file=sys.stderr, disable=not progress or n <= _PROGRESS_MIN_IMAGES) as bar:
    for position, image in decoded:
      if images is None:  # Allocate once the first image tells the shape.
        images = aligned_empty((n, *image.shape), np.uint8)
      elif image.shape[:2] != images.shape[1:3]:
        raise UserError(
            f"images differ in size: {source.describe(first_index)} is "
            f"{images.shape[1]}x{images.shape[2]} but {source.describe(int(indices[position]))} "
            f"is {image.shape[0]}x{image.shape[1]}; set data.image_size to resize them")
      elif image.shape[2] != images.shape[3]:
        if (image.shape[2], images.shape[3]) != (3, 1):  # A gray image broadcasts into RGB.
          raise UserError(f"{source.describe(int(indices[position]))} has {image.shape[2]} "
                          f"channels, others {images.shape[3]}")
        images = np.repeat(images, 3, axis=3)  # First RGB after gray ones: promote (rare).
      images[position] = image
      bar.update(1)
  return images
