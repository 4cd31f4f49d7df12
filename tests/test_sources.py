"""Tests of dcjax.sources on tiny data written to tmp_path (and TFDS mock / tiny ArrayRecord)."""

import gzip
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from dcjax.data import sources
from dcjax.errors import UserError

# --- helpers ------------------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
  header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
  return header + array.astype(np.uint8).tobytes()


def _write_fashion_mnist(directory, n_train=12, n_test=5, seed=0):
  """train files gzipped, test files raw: both must be accepted."""
  rng = np.random.default_rng(seed)
  data = {}
  for split, prefix, n, gz in (("train", "train", n_train, True), ("test", "t10k", n_test, False)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
      path = os.path.join(directory, f"{prefix}-{kind}-ubyte")
      if gz:
        with gzip.open(path + ".gz", "wb") as f:
          f.write(_idx_bytes(array))
      else:
        with open(path, "wb") as f:
          f.write(_idx_bytes(array))
    data[split] = (images, labels)
  return data


def _encode(array: np.ndarray, fmt: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buffer, format=fmt)
  return buffer.getvalue()


def _save(path, array, fmt="PNG"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(_encode(array, fmt))


def _rand(shape, seed):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _assert_consistent(source):
  """len/labels/getitem agree; images are uint8 3-D."""
  assert source.labels.dtype == np.int32 and source.labels.shape == (len(source),)
  assert len(source.class_names) == source.num_classes
  for i in range(len(source)):
    item = source[i]
    assert item["index"] == i
    assert item["label"] == source.labels[i]
    assert isinstance(item["label"], int)
    image = item["image"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (1, 3)


# --- fashion_mnist ------------------------------------------------------------------------------


def test_fashion_mnist_reads_gz_and_raw_idx(tmp_path):
  data = _write_fashion_mnist(tmp_path)
  for split, n in (("train", 12), ("test", 5)):
    source = sources.open_source("fashion_mnist", split, data_dir=str(tmp_path))
    images, labels = data[split]
    assert len(source) == n and source.split == split and source.name == "fashion_mnist"
    assert source.num_classes == 10 and source.class_names[0] == "T-shirt/top"
    np.testing.assert_array_equal(source.labels, labels)
    np.testing.assert_array_equal(source[3]["image"], images[3][..., None])
    assert source[3]["image"].shape == (28, 28, 1)
    _assert_consistent(source)


def test_fashion_mnist_missing_dir_says_how_to_install(tmp_path):
  with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist") as e:
    sources.open_source("fashion_mnist", "train", data_dir=str(tmp_path / "nope"))
  assert "train-images-idx3-ubyte[.gz]" in str(e.value)


def test_fashion_mnist_truncated_idx_names_file(tmp_path):
  _write_fashion_mnist(tmp_path)
  path = tmp_path / "t10k-images-idx3-ubyte"
  path.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(UserError, match="t10k-images-idx3-ubyte.*truncated or corrupt"):
    sources.open_source("fashion_mnist", "test", data_dir=str(tmp_path))
  gz_path = tmp_path / "train-labels-idx1-ubyte.gz"
  gz_path.write_bytes(gz_path.read_bytes()[:-12])  # A cut-off gzip stream.
  with pytest.raises(UserError, match="train-labels-idx1-ubyte.gz"):
    sources.open_source("fashion_mnist", "train", data_dir=str(tmp_path))
  (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(8))  # Bad ndim.
  with pytest.raises(UserError, match="bad idx header"):
    sources.open_source("fashion_mnist", "test", data_dir=str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(sources.DEFAULT_FASHION_MNIST_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
  for split, n in (("train", 60000), ("test", 10000)):
    source = sources.open_source("fashion_mnist", split)
    assert len(source) == n
    assert source.labels.min() == 0 and source.labels.max() == 9
    np.testing.assert_array_equal(np.bincount(source.labels), [n // 10] * 10)
    assert source[0]["image"].shape == (28, 28, 1)


# --- folder -------------------------------------------------------------------------------------


@pytest.fixture
def folder_tree(tmp_path):
  """ImageNet-like layout: root/{train,val}/<class>/<files>, mixed PNG L/RGB/palette and JPEG."""
  root = tmp_path / "imagenet"
  train = root / "train"
  _save(str(train / "cat" / "b.png"), _rand((10, 12, 3), 1))
  _save(str(train / "cat" / "a.PNG"), _rand((10, 12, 1), 2))  # Grayscale, upper-case suffix.
  _save(str(train / "dog" / "c.jpg"), _rand((9, 14, 3), 3), "JPEG")
  palette = Image.fromarray(_rand((6, 6, 3), 4)).convert("P")
  palette.save(str(train / "dog" / "d.png"))
  Image.fromarray(_rand((5, 7, 3), 5)).convert("RGBA").save(str(train / "dog" / "e.png"))
  (train / "dog" / "notes.txt").write_text("not an image")
  (train / "manifest.json").write_text("{}")
  _save(str(root / "val" / "cat" / "x.jpeg"), _rand((8, 8, 3), 6), "JPEG")
  _save(str(root / "val" / "dog" / "y.png"), _rand((8, 8, 1), 7))
  return root


def test_folder_source(folder_tree):
  source = sources.open_source(f"folder:{folder_tree}", "train")
  assert source.class_names == ["cat", "dog"] and source.num_classes == 2
  np.testing.assert_array_equal(source.labels, [0, 0, 1, 1, 1])
  assert [os.path.basename(source.describe(i)) for i in range(5)] == [
      "a.PNG", "b.png", "c.jpg", "d.png", "e.png"]
  assert source[0]["image"].shape == (10, 12, 1)  # Gray PNG keeps C=1.
  np.testing.assert_array_equal(source[0]["image"], _rand((10, 12, 1), 2))
  np.testing.assert_array_equal(source[1]["image"], _rand((10, 12, 3), 1))  # PNG is lossless.
  assert source[2]["image"].shape == (9, 14, 3)
  assert source[3]["image"].shape == (6, 6, 3)  # Palette -> RGB.
  assert source[4]["image"].shape == (5, 7, 3)  # RGBA -> RGB.
  _assert_consistent(source)
  test = sources.open_source(f"folder:{folder_tree}", "test")  # Reads val/.
  assert len(test) == 2 and "val" in test.describe(0)
  _assert_consistent(test)


def test_folder_without_split_dirs_is_every_split(tmp_path):
  for k in range(3):  # The layout dcjax writes compressed sets in.
    _save(str(tmp_path / f"{k:04d}" / "000000.png"), _rand((4, 4, 3), k))
  (tmp_path / "manifest.json").write_text("{}")
  train = sources.open_source(f"folder:{tmp_path}", "train")
  test = sources.open_source(f"folder:{tmp_path}", "test")
  assert train.class_names == test.class_names == ["0000", "0001", "0002"]
  np.testing.assert_array_equal(train.labels, [0, 1, 2])
  assert sources.fingerprint(train) == sources.fingerprint(test)


def test_folder_bad_inputs(tmp_path, folder_tree):
  with pytest.raises(UserError, match="does not exist"):
    sources.open_source(f"folder:{tmp_path / 'missing'}", "train")
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="no class subfolders"):
    sources.open_source(f"folder:{tmp_path / 'empty'}", "train")
  os.rename(folder_tree / "val", folder_tree / "other")
  with pytest.raises(UserError, match="no test folder"):
    sources.open_source(f"folder:{folder_tree}", "test")


def test_folder_corrupt_image_names_file(folder_tree):
  bad = folder_tree / "train" / "dog" / "c.jpg"
  bad.write_bytes(b"\xff\xd8 this is not a jpeg")
  source = sources.open_source(f"folder:{folder_tree}", "train")
  with pytest.raises(UserError, match=f"cannot decode image {bad}"):
    source[2]
  with pytest.raises(UserError, match=str(bad)):  # Also from Grain's reader threads.
    sources.load_images(source, size=8, progress=False)


# --- parquet ------------------------------------------------------------------------------------


def _write_parquet(path, images, labels, label_column="class_id", struct=True, row_group_size=2,
                   class_names=None):
  import pyarrow as pa
  import pyarrow.parquet as pq

  encoded = [_encode(image, "PNG") for image in images]
  if struct:
    image_column = pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(encoded)],
                            pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
  else:
    image_column = pa.array(encoded, pa.binary())
  table = pa.table({"image": image_column, label_column: pa.array(labels, pa.int64())})
  if class_names:
    features = {label_column: {"names": class_names, "_type": "ClassLabel"}}
    table = table.replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": features}})})
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pq.write_table(table, path, row_group_size=row_group_size)


def test_parquet_hf_layout(tmp_path):
  pytest.importorskip("pyarrow")
  train_images = [_rand((6, 5, 3), k) for k in range(7)]
  train_labels = [2, 0, 1, 2, 2, 0, 1]
  # Two train files of several row groups each; an HF ClassLabel list in the metadata.
  _write_parquet(str(tmp_path / "data" / "train-00000-of-00002.parquet"), train_images[:4],
                 train_labels[:4], class_names=["a", "b", "c", "d"])
  _write_parquet(str(tmp_path / "data" / "train-00001-of-00002.parquet"), train_images[4:],
                 train_labels[4:])
  _write_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"),
                 [_rand((6, 5, 1), 9)] * 3, [3, 1, 0])
  train = sources.open_source(f"parquet:{tmp_path}", "train")
  assert len(train) == 7 and train.class_names == ["a", "b", "c", "d"]
  np.testing.assert_array_equal(train.labels, train_labels)
  for i in range(7):
    np.testing.assert_array_equal(train[i]["image"], train_images[i])
  assert train.describe(5).endswith("train-00001-of-00002.parquet row 1")
  assert train.describe(3).endswith("train-00000-of-00002.parquet row 3")
  _assert_consistent(train)
  images, labels = sources.load_images(train, [6, 0, 3], num_threads=3, progress=False)
  np.testing.assert_array_equal(images, np.stack([train_images[k] for k in (6, 0, 3)]))
  np.testing.assert_array_equal(labels, [1, 2, 2])
  test = sources.open_source(f"parquet:{tmp_path}", "test")
  assert len(test) == 3 and test[0]["image"].shape == (6, 5, 1)
  _assert_consistent(test)


def test_parquet_single_file_with_label_column(tmp_path):
  pytest.importorskip("pyarrow")
  path = tmp_path / "subset.parquet"
  _write_parquet(str(path), [_rand((4, 4, 3), k) for k in range(3)], [4, 0, 1],
                 label_column="label", struct=False)
  for split in sources.SPLITS:  # A single file is the only split.
    source = sources.open_source(f"parquet:{path}", split)
    np.testing.assert_array_equal(source.labels, [4, 0, 1])
    assert source.num_classes == 5 and source.class_names[4] == "4"
    _assert_consistent(source)


def test_parquet_bad_inputs(tmp_path):
  pytest.importorskip("pyarrow")
  import pyarrow as pa
  import pyarrow.parquet as pq

  path = tmp_path / "nolabel.parquet"
  pq.write_table(pa.table({"image": pa.array([b"x"]), "target": pa.array([1])}), str(path))
  with pytest.raises(UserError, match="no label column.*columns: image, target"):
    sources.open_source(f"parquet:{path}", "train")
  only_train = tmp_path / "only_train"
  _write_parquet(str(only_train / "train-0.parquet"), [_rand((4, 4, 3), 0)], [0])
  with pytest.raises(UserError, match="no test files"):
    sources.open_source(f"parquet:{only_train}", "test")
  with pytest.raises(UserError, match="does not exist"):
    sources.open_source(f"parquet:{tmp_path / 'missing'}", "train")


# --- tfds ---------------------------------------------------------------------------------------


def test_tfds_mock_imagenet(monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    train = sources.open_source("tfds:imagenet2012", "train")
    test = sources.open_source("tfds:imagenet2012", "test")
  assert train.tfds_split == "train" and test.tfds_split == "validation"
  assert test.describe(2) == "tfds:imagenet2012 validation[2]"
  assert len(train) == 6 and train.num_classes == 1000 and len(train.class_names) == 1000
  for source in (train, test):
    _assert_consistent(source)
    assert source[0]["image"].shape[2] == 3


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
  """A real (tiny) ArrayRecord TFDS dataset, built here without TensorFlow."""
  tfds = pytest.importorskip("tensorflow_datasets")
  data_dir = str(tmp_path_factory.mktemp("tfds"))

  class DcjaxTestTinyImages(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3)),
          "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(0, 7), "validation": self._generate_examples(7, 3)}

    def _generate_examples(self, start, n):
      for k in range(start, start + n):
        yield k, {"image": _encode(_rand((5 + k, 6, 3), k), "PNG"), "label": k % 3}

  DcjaxTestTinyImages(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir


def test_tfds_array_record_reads_raw_bytes(tiny_tfds):
  train = sources.open_source("tfds:dcjax_test_tiny_images", "train", data_dir=tiny_tfds)
  test = sources.open_source("tfds:dcjax_test_tiny_images", "test", data_dir=tiny_tfds)
  assert (len(train), len(test), test.tfds_split) == (7, 3, "validation")
  assert train.class_names == ["a", "b", "c"]
  assert isinstance(train._data[0]["image"], bytes)  # SkipDecoding: we decode with PIL.
  for source in (train, test):
    _assert_consistent(source)
    for i in range(len(source)):  # TFDS shuffles records; the height tells which example it is.
      image = source[i]["image"]
      k = image.shape[0] - 5
      np.testing.assert_array_equal(image, _rand((5 + k, 6, 3), k))
      assert source.labels[i] == k % 3


def test_tfds_bad_inputs(tmp_path, tiny_tfds):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(UserError, match="not prepared.*tfds build dcjax_test_tiny_images"):
    sources.open_source("tfds:dcjax_test_tiny_images", "train", data_dir=str(tmp_path))
  with pytest.raises(UserError, match="unknown TFDS dataset"):
    sources.open_source("tfds:no_such_dataset_xyz", "train", data_dir=str(tmp_path))


# --- synthetic ----------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed_split_index():
  options = {"num_examples": 20, "num_test_examples": 8, "image_size": 6, "num_classes": 4}
  train = sources.open_source("synthetic", "train", synthetic=options)
  again = sources.open_source("synthetic", "train", synthetic=options)
  other_seed = sources.open_source("synthetic", "train", synthetic={**options, "seed": 1})
  test = sources.open_source("synthetic", "test", synthetic=options)
  assert (len(train), len(test)) == (20, 8)
  np.testing.assert_array_equal(train.labels, np.arange(20) % 4)
  assert train[3]["image"].shape == (6, 6, 3)
  np.testing.assert_array_equal(train[3]["image"], train[3]["image"])
  np.testing.assert_array_equal(train[3]["image"], again[3]["image"])
  assert not np.array_equal(train[3]["image"], other_seed[3]["image"])
  assert not np.array_equal(train[3]["image"], test[3]["image"])
  assert not np.array_equal(train[3]["image"], train[4]["image"])
  _assert_consistent(train)
  gray = sources.open_source("synthetic", "test", synthetic={"channels": 1})
  assert len(gray) == 256 and gray[0]["image"].shape == (32, 32, 1)
  assert len(sources.open_source("synthetic", "train")) == 1024
  with pytest.raises(UserError, match="unknown synthetic dataset option.*num_exemples"):
    sources.open_source("synthetic", "train", synthetic={"num_exemples": 3})
  with pytest.raises(UserError, match="image_size must be an integer >= 1"):
    sources.open_source("synthetic", "train", synthetic={"image_size": 0})


# --- names, splits, fingerprint -----------------------------------------------------------------


def test_unknown_name_and_split():
  with pytest.raises(UserError, match="unknown dataset 'mnist'.*fashion_mnist.*synthetic"):
    sources.open_source("mnist", "train")
  with pytest.raises(UserError, match="unknown split 'validation'"):
    sources.open_source("synthetic", "validation")
  with pytest.raises(UserError, match="needs a path"):
    sources.open_source("folder:", "train")


def test_fingerprint_stable_and_sensitive_to_labels():
  images = _rand((4, 5, 5, 1), 0)
  a = sources.ArraySource("x", "train", ["0", "1"], images, np.array([0, 1, 0, 1]))
  b = sources.ArraySource("y", "test", ["0", "1"], images, np.array([0, 1, 0, 1]))
  c = sources.ArraySource("x", "train", ["0", "1"], images, np.array([0, 1, 1, 1]))
  assert sources.fingerprint(a) == sources.fingerprint(b)  # Name-independent.
  assert sources.fingerprint(a) != sources.fingerprint(c)
  assert len(sources.fingerprint(a)) == 64
  small = sources.open_source("synthetic", "train", synthetic={"num_examples": 8, "image_size": 4})
  big = sources.open_source("synthetic", "train", synthetic={"num_examples": 8, "image_size": 5})
  assert sources.fingerprint(small) == sources.fingerprint(
      sources.open_source("synthetic", "train", synthetic={"num_examples": 8, "image_size": 4}))
  assert sources.fingerprint(small) != sources.fingerprint(big)  # Image shape counts.


def test_fingerprint_covers_the_image_content(tmp_path):
  """Other images with the same labels and shapes are other data (a score file or a teacher
  made from them is not reused)."""
  labels = np.array([0, 1, 0, 1])
  a = sources.ArraySource("x", "train", ["0", "1"], _rand((4, 5, 5, 1), 0), labels)
  b = sources.ArraySource("x", "train", ["0", "1"], _rand((4, 5, 5, 1), 1), labels)
  assert sources.fingerprint(a) != sources.fingerprint(b)
  for seed in (0, 1):
    for k in range(2):
      _save(str(tmp_path / f"d{seed}" / "train" / f"c{k}" / "0.png"), _rand((4, 4, 3), seed + k))
  one, other = (sources.open_source(f"folder:{tmp_path / d}", "train") for d in ("d0", "d1"))
  assert sources.fingerprint(one) != sources.fingerprint(other)
  # A changed file changes it (the cache is keyed by size and modification time).
  before = sources.fingerprint(one)
  path = tmp_path / "d0" / "train" / "c0" / "0.png"
  _save(str(path), _rand((4, 4, 3), 7))
  os.utime(path, ns=(1, 1))
  assert sources.fingerprint(sources.open_source(f"folder:{tmp_path / 'd0'}", "train")) != before


# --- load_images --------------------------------------------------------------------------------


def test_load_images_native_size_is_identity(tmp_path):
  data = _write_fashion_mnist(tmp_path)
  source = sources.open_source("fashion_mnist", "train", data_dir=str(tmp_path))
  for size in (None, 28):
    images, labels = sources.load_images(source, size=size, progress=False)
    assert images.dtype == np.uint8 and images.shape == (12, 28, 28, 1)
    np.testing.assert_array_equal(images, data["train"][0][..., None])
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, data["train"][1])
  # Not a no-op (resize to 32, crop 28): decoded through Grain, and equal to resize_image.
  cropped, _ = sources.load_images(source, [4, 1], size=28, crop_ratio=0.875, progress=False)
  np.testing.assert_array_equal(
      cropped, [sources.resize_image(source[k]["image"], 28, crop_ratio=0.875) for k in (4, 1)])
  assert not np.array_equal(cropped[0], source[4]["image"])


def test_load_images_order_resize_and_crop():
  options = {"num_examples": 10, "image_size": 32}
  source = sources.open_source("synthetic", "train", synthetic=options)
  images, labels = sources.load_images(source, np.array([7, 2, 9, 2]), progress=False)
  np.testing.assert_array_equal(images, np.stack([source[k]["image"] for k in (7, 2, 9, 2)]))
  np.testing.assert_array_equal(labels, source.labels[[7, 2, 9, 2]])
  # crop_ratio 0.875 at 28: shorter side -> round(28 / 0.875) = 32 (as is), center crop 28.
  cropped, _ = sources.load_images(source, [3], size=28, crop_ratio=0.875, progress=False)
  np.testing.assert_array_equal(cropped[0], source[3]["image"][2:30, 2:30])
  for resize in sources.RESIZE_MODES:
    resized, _ = sources.load_images(source, [0, 1], size=16, resize=resize, progress=False)
    assert resized.shape == (2, 16, 16, 3)
  empty, empty_labels = sources.load_images(source, [], size=8, progress=False)
  assert empty.shape == (0, 8, 8, 3) and empty_labels.shape == (0,)


def test_resize_image_shorter_side_and_stretch():
  wide = _rand((20, 40, 3), 0)
  np.testing.assert_array_equal(  # Shorter side 20 -> 10 (width 20), then the central 10x10.
      sources.resize_image(wide, 10),
      sources._pil_resize(wide, 10, 20)[:, 5:15])
  np.testing.assert_array_equal(sources.resize_image(wide, 10, "stretch"),
                                sources._pil_resize(wide, 10, 10))
  # ImageNet protocol: 300x400 -> resize shorter to 256 -> 256x341 -> crop 224.
  assert sources.resize_image(_rand((300, 400, 1), 1), 224, crop_ratio=0.875).shape == (224, 224, 1)


def test_load_images_mixed_sizes_and_channels(folder_tree):
  source = sources.open_source(f"folder:{folder_tree}", "train")
  with pytest.raises(UserError, match="differ in size.*data.image_size"):
    sources.load_images(source, progress=False)
  images, _ = sources.load_images(source, size=8, num_threads=2, progress=False)
  assert images.shape == (5, 8, 8, 3)  # Example 0 is gray: promoted once an RGB one arrives.
  np.testing.assert_array_equal(images[0], np.repeat(sources.resize_image(source[0]["image"], 8),
                                                     3, axis=2))
  gray, _ = sources.load_images(source, [0], size=8, progress=False)
  assert gray.shape == (1, 8, 8, 1)


def test_load_images_bad_arguments():
  source = sources.open_source("synthetic", "train", synthetic={"num_examples": 4, "image_size": 4})
  with pytest.raises(UserError, match="indices must lie in 0..3"):
    sources.load_images(source, [4], progress=False)
  with pytest.raises(UserError, match="unknown resize"):
    sources.load_images(source, size=4, resize="crop", progress=False)
  with pytest.raises(UserError, match="crop_ratio"):
    sources.load_images(source, size=4, crop_ratio=1.5, progress=False)


def test_load_images_cache_reuse_and_invalidation(tmp_path, monkeypatch):
  options = {"num_examples": 12, "image_size": 8}
  source = sources.open_source("synthetic", "train", synthetic=options)
  cache = str(tmp_path / "cache" / "decoded.npz")
  decode_calls = []
  real_decode_all = sources._decode_all

  def counting_decode_all(*args):
    decode_calls.append(args[1])
    return real_decode_all(*args)

  monkeypatch.setattr(sources, "_decode_all", counting_decode_all)
  first = sources.load_images(source, [1, 5, 3], size=6, cache_path=cache, progress=False)
  assert len(decode_calls) == 1 and os.listdir(tmp_path / "cache") == ["decoded.npz"]
  with np.load(cache, allow_pickle=False) as stored:  # Plain arrays, no pickle.
    assert set(stored.files) == {"images", "labels", "key"}
  again = sources.load_images(source, [1, 5, 3], size=6, cache_path=cache, progress=False)
  assert len(decode_calls) == 1  # Reused: nothing decoded.
  for x, y in zip(first, again):
    np.testing.assert_array_equal(x, y)
  # Every part of the key invalidates: size, indices, crop_ratio, resize, and the data.
  sources.load_images(source, [1, 5, 3], size=7, cache_path=cache, progress=False)
  sources.load_images(source, [1, 5, 4], size=7, cache_path=cache, progress=False)
  sources.load_images(source, [1, 5, 4], size=7, crop_ratio=0.9, cache_path=cache, progress=False)
  sources.load_images(source, [1, 5, 4], size=7, crop_ratio=0.9, resize="stretch",
                      cache_path=cache, progress=False)
  other = sources.open_source("synthetic", "train", synthetic={**options, "num_classes": 3})
  images, labels = sources.load_images(other, [1, 5, 4], size=7, crop_ratio=0.9, resize="stretch",
                                       cache_path=cache, progress=False)
  assert len(decode_calls) == 6
  np.testing.assert_array_equal(labels, [1, 2, 1])
  # A damaged cache file is recomputed, not trusted.
  with open(cache, "wb") as f:
    f.write(b"garbage")
  sources.load_images(source, [1], cache_path=cache, progress=False)
  assert len(decode_calls) == 7
  assert os.listdir(tmp_path / "cache") == ["decoded.npz"]  # No temporary files left.


def test_load_images_progress_bar_for_large_sets(capsys):
  source = sources.open_source("synthetic", "test",
                               synthetic={"num_test_examples": 2100, "image_size": 2})
  images, _ = sources.load_images(source, num_threads=2)
  assert images.shape == (2100, 2, 2, 3)
  assert "decoding synthetic test" in capsys.readouterr().err


def test_load_images_returns_64_byte_aligned_arrays_that_jax_uses_in_place(tmp_path):
  """XLA:CPU copies unaligned host arrays on device_put; an aligned one is used in place, so
  the training split is not held twice while scoring."""
  import jax
  src = sources.open_source("synthetic", "train", synthetic=dict(
      num_examples=50, num_test_examples=4, image_size=12, channels=3, num_classes=5, seed=0))
  for kwargs in (dict(), dict(size=8), dict(cache_path=str(tmp_path / "c.npz")),
                 dict(cache_path=str(tmp_path / "c.npz"))):  # the second reads the cache
    images, _ = sources.load_images(src, progress=False, **kwargs)
    assert images.ctypes.data % 64 == 0 and images.flags.c_contiguous
  a = sources.aligned(np.arange(1001, dtype=np.uint8)[1:])  # a view one byte off
  assert a.ctypes.data % 64 == 0 and a[0] == 1 and a[-1] == 232
  if jax.default_backend() == "cpu":
    on_device = jax.device_put(images, jax.devices()[0])
    assert on_device.unsafe_buffer_pointer() == images.ctypes.data
