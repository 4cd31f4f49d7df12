"""Tests for dcjax.store: the on-disk compressed-set format, its validation and its atomicity."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dcjax
from dcjax.data import store
from dcjax.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def make_set(n=7, h=8, w=6, c=3, num_classes=3, seed=0):
  """Random images with labels cycling over the classes and source-index lists of length 0..3."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
  labels = np.arange(n) % num_classes
  sources = [[int(x) for x in rng.integers(0, 1000, size=i % 4)] for i in range(n)]
  return images, labels, sources


def write(path, images, labels, sources, **kw):
  kw.setdefault("dataset", "cifar10")
  kw.setdefault("split", "train")
  kw.setdefault("method", "random")
  kw.setdefault("config", {"ipc": 10, "seed": 0})
  return store.write_compressed(path, images, labels, sources, **kw)


def dot_siblings(path):
  """Hidden temporary / parked siblings of `path` (what an interrupted write leaves behind)."""
  prefix = f".{Path(path).name}."
  return sorted(p.name for p in Path(path).parent.iterdir() if p.name.startswith(prefix))


def png_files(path):
  return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*.png"))


# ---------------------------------------------------------------------------------------------
# Round trip and manifest.


def test_round_trip_rgb(tmp_path):
  images, labels, sources = make_set()
  path = tmp_path / "set"
  written = write(path, images, labels, sources, class_names=["a", "b", "c"],
                  source_fingerprint="sha256:abc", extra={"note": "x", "ratio": 0.5},
                  config={"ipc": 10, "steps": (1, 2)})
  got_images, got_labels, manifest = store.read_compressed(path)
  np.testing.assert_array_equal(got_images, images)
  assert got_images.dtype == np.uint8 and got_images.shape == images.shape
  np.testing.assert_array_equal(got_labels, labels)
  assert got_labels.dtype == np.int32
  assert manifest == written == store.read_manifest(path)

  assert manifest["format_version"] == 1 and "pixels" not in manifest  # uint8 sets: as ever
  assert manifest["dcjax_version"] == dcjax.__version__
  assert manifest["created"].endswith("+00:00")
  assert (manifest["dataset"], manifest["split"], manifest["method"]) == ("cifar10", "train",
                                                                           "random")
  assert manifest["source_fingerprint"] == "sha256:abc"
  assert manifest["config"] == {"ipc": 10, "steps": [1, 2]}  # as given, tuples read back as lists
  assert manifest["extra"] == {"note": "x", "ratio": 0.5}
  assert manifest["num_images"] == 7 and manifest["num_classes"] == 3
  assert manifest["class_names"] == ["a", "b", "c"]
  assert manifest["image_shape"] == [8, 6, 3]
  assert manifest["images_per_class"] == {"0": 3, "1": 2, "2": 2}
  assert [f["source_indices"] for f in manifest["files"]] == sources
  assert [f["label"] for f in manifest["files"]] == labels.tolist()
  for i, f in enumerate(manifest["files"]):
    assert f["file"] == f"{labels[i]:04d}/{i:06d}.png"
    data = (path / f["file"]).read_bytes()
    assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    with Image.open(path / f["file"]) as im:
      assert (im.format, im.mode) == ("PNG", "RGB")
  assert manifest["image_bytes"] == sum(p.stat().st_size for p in path.rglob("*.png"))
  assert png_files(path) == sorted(f["file"] for f in manifest["files"])
  assert sorted(os.listdir(path)) == ["0000", "0001", "0002", "manifest.json"]
  assert json.loads((path / "manifest.json").read_text()) == manifest
  assert dot_siblings(path) == []


def test_round_trip_grayscale_without_verify(tmp_path):
  images, labels, sources = make_set(n=5, h=4, w=4, c=1, num_classes=2, seed=1)
  path = tmp_path / "gray"
  write(path, images, labels, sources, num_classes=4)
  got_images, got_labels, manifest = store.read_compressed(path, verify=False)
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)
  assert manifest["num_classes"] == 4 and manifest["class_names"] is None
  assert manifest["images_per_class"] == {"0": 3, "1": 2, "2": 0, "3": 0}
  with Image.open(path / manifest["files"][0]["file"]) as im:
    assert (im.format, im.mode) == ("PNG", "L")


def test_array_and_list_inputs(tmp_path):
  images, _, _ = make_set(n=4, num_classes=2)
  sources = np.arange(8).reshape(4, 2)  # e.g. four 1x2 tiles, as an int array
  manifest = write(tmp_path / "s", images, [1, 0, 1, 1], sources)
  assert [f["source_indices"] for f in manifest["files"]] == sources.tolist()
  np.testing.assert_array_equal(store.read_compressed(tmp_path / "s")[1], [1, 0, 1, 1])


def test_class_folders_sort_in_label_order(tmp_path):
  # 12 classes: zero padding makes "0010" sort after "0009", as a folder reader needs.
  images, labels, sources = make_set(n=12, h=2, w=2, num_classes=12)
  path = tmp_path / "many"
  write(path, images, labels, sources)
  folders = sorted(p.name for p in path.iterdir() if p.is_dir())
  assert [int(f) for f in folders] == list(range(12))


def test_same_input_gives_identical_bytes(tmp_path):
  images, labels, sources = make_set()
  m1 = write(tmp_path / "a", images, labels, sources)
  m2 = write(tmp_path / "b", images, labels, sources)
  assert [f["sha256"] for f in m1["files"]] == [f["sha256"] for f in m2["files"]]
  for f in m1["files"]:
    assert (tmp_path / "a" / f["file"]).read_bytes() == (tmp_path / "b" / f["file"]).read_bytes()


def test_parallel_path_round_trips(tmp_path, monkeypatch):
  # Force the threaded encode/decode on a small set; order must be kept.
  monkeypatch.setattr(store, "_PARALLEL_MIN", 1)
  images, labels, sources = make_set(n=20, h=3, w=3, num_classes=4)
  write(tmp_path / "p", images, labels, sources)
  got_images, got_labels, _ = store.read_compressed(tmp_path / "p")
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)


def test_is_compressed_set(tmp_path):
  images, labels, sources = make_set(n=2)
  write(tmp_path / "s", images, labels, sources)
  (tmp_path / "empty").mkdir()
  (tmp_path / "file").write_text("x")
  assert store.is_compressed_set(tmp_path / "s")
  assert store.is_compressed_set(str(tmp_path / "s"))
  for other in ("empty", "file", "missing"):
    assert not store.is_compressed_set(tmp_path / other)


# ---------------------------------------------------------------------------------------------
# Where a set may be written.


def test_existing_set_refused_without_overwrite(tmp_path):
  images, labels, sources = make_set()
  path = tmp_path / "set"
  write(path, images, labels, sources)
  before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
  with pytest.raises(UserError, match="already holds a compressed set.*overwrite"):
    write(path, images[:2], labels[:2], sources[:2])
  assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
  assert dot_siblings(path) == []


def test_overwrite_replaces_set(tmp_path):
  images, labels, sources = make_set()
  path = tmp_path / "set"
  write(path, images, labels, sources)
  new_images, new_labels, new_sources = make_set(n=4, h=5, w=5, c=1, num_classes=2, seed=7)
  write(path, new_images, new_labels, new_sources, method="tiles", overwrite=True)
  got_images, got_labels, manifest = store.read_compressed(path)
  np.testing.assert_array_equal(got_images, new_images)
  np.testing.assert_array_equal(got_labels, new_labels)
  assert manifest["method"] == "tiles"
  # No file of the old set survives (it had more images and another class folder).
  assert png_files(path) == sorted(f["file"] for f in manifest["files"])
  assert dot_siblings(path) == []


def test_non_set_directory_is_never_touched(tmp_path):
  images, labels, sources = make_set(n=2)
  path = tmp_path / "user_stuff"
  path.mkdir()
  (path / "keep.txt").write_text("mine")
  for overwrite in (False, True):
    with pytest.raises(UserError, match="not a dcjax compressed set"):
      write(path, images, labels, sources, overwrite=overwrite)
  assert os.listdir(path) == ["keep.txt"] and (path / "keep.txt").read_text() == "mine"
  assert dot_siblings(path) == []
  (tmp_path / "afile").write_text("x")
  with pytest.raises(UserError, match="not a directory"):
    write(tmp_path / "afile", images, labels, sources, overwrite=True)
  assert (tmp_path / "afile").read_text() == "x"


def test_empty_directory_and_missing_parent_are_fine(tmp_path):
  images, labels, sources = make_set(n=2)
  (tmp_path / "empty").mkdir()
  write(tmp_path / "empty", images, labels, sources)
  write(tmp_path / "new" / "deeper", images, labels, sources)
  for p in (tmp_path / "empty", tmp_path / "new" / "deeper"):
    np.testing.assert_array_equal(store.read_compressed(p)[0], images)


def test_float_pixels_round_trip_bitwise_as_npy_files(tmp_path):
  """A distilled set's float pixels (outside [0, 1] too) come back bitwise, one .npy per image,
  in a format-2 manifest; the bytes counted are the files'."""
  rng = np.random.default_rng(1)
  images = rng.normal(0.5, 0.6, size=(5, 8, 6, 3)).astype(np.float32)
  images[0, 0, 0, 0] = -3.25  # distilled pixels are not clipped
  labels = np.array([0, 1, 2, 0, 1])
  path = tmp_path / "float"
  manifest = write(path, images, labels, [[]] * 5)
  assert manifest["format_version"] == 2 and manifest["pixels"] == "float32"
  files = sorted(str(p.relative_to(path)) for p in path.rglob("*.npy"))
  assert files == [f["file"] for f in sorted(manifest["files"], key=lambda f: f["file"])]
  assert png_files(path) == [] and files[0] == "0000/000000.npy"
  got, got_labels, back = store.read_compressed(path)
  assert got.dtype == np.float32 and np.array_equal(got, images, equal_nan=False)
  assert got.tobytes() == images.tobytes() and got_labels.tolist() == labels.tolist()
  assert back == manifest
  assert manifest["image_bytes"] == sum(p.stat().st_size for p in path.rglob("*.npy"))
  # The same pixels give the same bytes (and sha256): a rewrite is recognised as the same set.
  again = write(tmp_path / "again", images, labels, [[]] * 5)
  assert [f["sha256"] for f in again["files"]] == [f["sha256"] for f in manifest["files"]]
  # A PNG named in a float set's manifest (or the other way round) is refused.
  import json
  m = json.loads((path / "manifest.json").read_text())
  m["files"][0]["file"] = m["files"][0]["file"].replace(".npy", ".png")
  (path / "manifest.json").write_text(json.dumps(m))
  with pytest.raises(UserError, match="invalid files entry"):
    store.read_compressed(path)


# ---------------------------------------------------------------------------------------------
# Input validation: each bad input raises UserError and writes nothing.

_IM, _LB, _SRC = make_set(n=4, num_classes=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"images": _IM.astype(np.float64)}, "must be uint8"),
    ({"images": _IM.astype(np.int64)}, "must be uint8"),
    ({"images": np.where(_IM > 128, np.nan, _IM).astype(np.float32)}, "NaN or infinite"),
    ({"images": _IM[..., 0]}, "3 dimensions"),
    ({"images": np.zeros((4, 2, 2, 2), np.uint8)}, "1 .grayscale. or 3 .RGB. channels"),
    ({"images": np.zeros((0, 2, 2, 3), np.uint8), "labels": _LB[:0], "source_indices": []},
     "at least one"),
    ({"labels": _LB[:3]}, "4 images but 3 labels"),
    ({"labels": _LB.astype(np.float32)}, "integer"),
    ({"source_indices": _SRC[:3]}, "4 images but 3 source_indices"),
    ({"source_indices": [[0], [1], [-2], [3]]}, r"source_indices\[2\].*non-negative"),
    ({"source_indices": [[0], [1], "ab", [3]]}, r"source_indices\[2\]"),
    ({"labels": np.array([0, 1, -1, 0])}, ">= 0"),
    ({"labels": np.array([0, 1, 2, 0]), "num_classes": 2}, "label 2 is out of range"),
    ({"labels": np.array([0, 1, 2, 0]), "class_names": ["a", "b"]}, "label 2 is out of range"),
    ({"num_classes": 3, "class_names": ["a", "b"]}, "must agree"),
    ({"num_classes": 0}, "positive int"),
    ({"config": {"ipc": 10, "lr": np.float32(0.1)}}, r"config\['lr'\].*float32"),
    ({"config": {"opt": {"betas": [0.9, object()]}}}, r"config\['opt'\]\['betas'\]\[1\]"),
    ({"config": {"x": float("nan")}}, r"config\['x'\] is nan"),
    ({"config": {1: "a"}}, "keys must be strings"),
    ({"config": [1, 2]}, "config must be a dict"),
    ({"extra": {"when": np.datetime64("2024")}}, r"extra\['when'\]"),
    ({"dataset": ""}, "dataset must be a non-empty string"),
    ({"method": None}, "method must be a non-empty string"),
])
def test_bad_input_raises_and_writes_nothing(tmp_path, kwargs, match):
  args = {"images": _IM, "labels": _LB, "source_indices": _SRC, "dataset": "d", "split": "train",
          "method": "m", "config": {}}
  args.update(kwargs)
  path = tmp_path / "out" / "set"
  with pytest.raises(UserError, match=match):
    store.write_compressed(path, args.pop("images"), args.pop("labels"),
                           args.pop("source_indices"), **args)
  assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Reading damaged or foreign directories.


def test_flipped_byte_is_detected_and_named(tmp_path):
  images, labels, sources = make_set()
  path = tmp_path / "set"
  manifest = write(path, images, labels, sources)
  name = manifest["files"][4]["file"]
  data = bytearray((path / name).read_bytes())
  data[len(data) // 2] ^= 0x01
  (path / name).write_bytes(bytes(data))
  with pytest.raises(UserError, match=f"{name}.*sha256"):
    store.read_compressed(path)


def test_missing_file_is_named(tmp_path):
  images, labels, sources = make_set()
  path = tmp_path / "set"
  manifest = write(path, images, labels, sources)
  name = manifest["files"][2]["file"]
  (path / name).unlink()
  for verify in (True, False):
    with pytest.raises(UserError, match=f"{name}.*cannot be read"):
      store.read_compressed(path, verify=verify)


def test_wrong_shape_is_named_even_without_verify(tmp_path):
  images, labels, sources = make_set()
  path = tmp_path / "set"
  manifest = write(path, images, labels, sources)
  name = manifest["files"][1]["file"]
  (path / name).unlink()
  Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(path / name)
  with pytest.raises(UserError, match=f"{name}.*image_shape"):
    store.read_compressed(path, verify=False)
  with pytest.raises(UserError, match=f"{name}.*sha256"):
    store.read_compressed(path)
  (path / name).write_bytes(b"not a png at all")
  with pytest.raises(UserError, match=f"{name}.*cannot be decoded"):
    store.read_compressed(path, verify=False)


def test_not_a_set(tmp_path):
  (tmp_path / "plain").mkdir()
  (tmp_path / "plain" / "0000").mkdir()
  for p in (tmp_path / "plain", tmp_path / "missing"):
    with pytest.raises(UserError, match="not a dcjax compressed set"):
      store.read_compressed(p)
    with pytest.raises(UserError, match="not a dcjax compressed set"):
      store.read_manifest(p)


def test_newer_format_and_bad_manifests(tmp_path):
  images, labels, sources = make_set(n=2)
  path = tmp_path / "set"
  manifest = write(path, images, labels, sources)

  def rewrite(m):
    (path / "manifest.json").write_text(json.dumps(m))

  rewrite({**manifest, "format_version": store.FORMAT_VERSION + 1})
  with pytest.raises(UserError, match="newer.*upgrade dcjax"):
    store.read_compressed(path)
  # A crafted manifest must not reach outside the set's directory.
  evil = [dict(f) for f in manifest["files"]]
  evil[0]["file"] = "../../etc/passwd"
  rewrite({**manifest, "files": evil})
  with pytest.raises(UserError, match="invalid files entry"):
    store.read_compressed(path)
  rewrite({k: v for k, v in manifest.items() if k != "image_shape"})
  with pytest.raises(UserError, match="lacks image_shape"):
    store.read_manifest(path)
  (path / "manifest.json").write_text("{not json")
  with pytest.raises(UserError, match="manifest.json cannot be read"):
    store.read_manifest(path)


# ---------------------------------------------------------------------------------------------
# Atomicity: crashes at any step leave the old or the new complete set.


@pytest.fixture
def old_set(tmp_path):
  """An existing set at tmp_path/set and the (images, labels) it holds."""
  images, labels, sources = make_set(n=5, num_classes=2, seed=3)
  path = tmp_path / "set"
  write(path, images, labels, sources, method="old")
  return path, images, labels


def assert_holds(path, images, labels):
  got_images, got_labels, _ = store.read_compressed(path)
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)


def test_png_writer_crash_keeps_old_set(old_set, monkeypatch):
  path, old_images, old_labels = old_set
  calls = []

  def failing_encode(image):
    calls.append(1)
    if len(calls) == 3:
      raise OSError("disk full")
    return real_encode(image)

  real_encode = store._encode_png
  monkeypatch.setattr(store, "_encode_png", failing_encode)
  new_images, new_labels, new_sources = make_set(n=6, seed=9)
  with pytest.raises(OSError, match="disk full"):
    write(path, new_images, new_labels, new_sources, overwrite=True)
  assert dot_siblings(path) == []  # the writer removed its temporary directory
  assert_holds(path, old_images, old_labels)


def test_failed_swap_rename_puts_old_set_back(old_set, monkeypatch):
  path, old_images, old_labels = old_set
  calls = []

  def rename(src, dst):
    calls.append((Path(src).name, Path(dst).name))
    if len(calls) == 2:  # new -> path, after old -> .old
      raise OSError("rename failed")
    os.rename(src, dst)

  monkeypatch.setattr(store, "_rename", rename)
  new_images, new_labels, new_sources = make_set(n=6, seed=9)
  with pytest.raises(OSError, match="rename failed"):
    write(path, new_images, new_labels, new_sources, overwrite=True)
  assert calls[0][0] == "set" and calls[0][1].startswith(".set.old-")
  assert calls[1][0].startswith(".set.tmp-") and calls[1][1] == "set"
  assert calls[2] == (calls[0][1], "set")  # the writer renamed the old set back itself
  assert dot_siblings(path) == []
  assert_holds(path, old_images, old_labels)


def test_interrupted_swap_is_recovered_by_read(old_set, monkeypatch):
  path, old_images, old_labels = old_set
  calls = []

  def rename(src, dst):  # every rename after the first fails: the old set stays parked
    calls.append(1)
    if len(calls) >= 2:
      raise OSError("rename failed")
    os.rename(src, dst)

  monkeypatch.setattr(store, "_rename", rename)
  new_images, new_labels, new_sources = make_set(n=6, seed=9)
  with pytest.raises(OSError):
    write(path, new_images, new_labels, new_sources, overwrite=True)
  monkeypatch.undo()
  assert not path.exists()
  assert [n.split("-")[0] for n in dot_siblings(path)] == [".set.old"]
  assert store.is_compressed_set(path)  # no side effects ...
  assert not path.exists()
  assert_holds(path, old_images, old_labels)  # ... but reading repairs
  assert path.is_dir() and dot_siblings(path) == []


def test_hand_made_interrupted_state_is_recovered(old_set):
  # What a process killed between the two renames leaves: the old set parked, a complete new set
  # in a temporary directory, plus a half-written temporary from an even earlier crash.
  path, old_images, old_labels = old_set
  os.rename(path, path.parent / ".set.old-abc123")
  write(path.parent / "staging", *make_set(n=3, seed=5))
  os.rename(path.parent / "staging", path.parent / ".set.tmp-xyz")
  (path.parent / ".set.tmp-half" / "0000").mkdir(parents=True)
  (path.parent / ".set.tmp-half" / "0000" / "000000.png").write_bytes(b"\x89PNG")
  # Unrelated hidden siblings that merely look similar are left alone.
  (path.parent / ".set.tmp-x.tmp-y").mkdir()
  (path.parent / ".settings").mkdir()
  manifest = store.read_manifest(path)
  assert manifest["method"] == "old"
  assert dot_siblings(path) == [".set.tmp-x.tmp-y"]
  assert (path.parent / ".settings").is_dir()
  assert_holds(path, old_images, old_labels)
  # A leftover parked set next to a complete set is deleted by the next writer or reader.
  os.mkdir(path.parent / ".set.old-stale")
  (path.parent / ".set.old-stale" / "manifest.json").write_text("{}")
  with pytest.raises(UserError, match="already holds"):
    write(path, *make_set(n=3, seed=5))
  assert dot_siblings(path) == [".set.tmp-x.tmp-y"]


class _Crash(BaseException):
  """Process death: raised at a filesystem step, after which no step may touch the disk."""


def _crash_at(monkeypatch, k):
  """Makes the k-th filesystem step (0-based) and every later one raise _Crash, so the disk is
  left exactly as a process killed just before step k would leave it."""
  steps = [0]
  for name in ("_write_file", "_rename", "_fsync_dir", "_rmtree", "_discard_set"):
    real = getattr(store, name)

    def step(*args, _real=real):
      if steps[0] >= k:
        raise _Crash()
      steps[0] += 1
      return _real(*args)

    monkeypatch.setattr(store, name, step)
  return steps


@pytest.mark.parametrize("replacing", [True, False])
def test_crash_at_every_step_leaves_a_complete_set(tmp_path, monkeypatch, replacing):
  old_images, old_labels, old_sources = make_set(n=3, h=4, w=4, num_classes=2, seed=3)
  new_images, new_labels, new_sources = make_set(n=2, h=5, w=5, c=1, num_classes=2, seed=4)
  outcomes = []
  for k in range(100):
    path = tmp_path / f"run{k}" / "set"
    if replacing:
      write(path, old_images, old_labels, old_sources)
    with monkeypatch.context() as m:
      steps = _crash_at(m, k)
      try:
        write(path, new_images, new_labels, new_sources, overwrite=True)
        finished = True
      except _Crash:
        finished = False
    if finished:
      break
    if store.is_compressed_set(path):
      images, labels, _ = store.read_compressed(path)
      same_as_new = images.shape == new_images.shape
      expected = (new_images, new_labels) if same_as_new else (old_images, old_labels)
      np.testing.assert_array_equal(images, expected[0])
      np.testing.assert_array_equal(labels, expected[1])
      outcomes.append("new" if same_as_new else "old")
    else:
      assert not replacing, f"old set lost after a crash at step {k}"
      with pytest.raises(UserError, match="not a dcjax compressed set"):
        store.read_compressed(path)
      outcomes.append("none")
    assert dot_siblings(path) == [], f"leftovers after a crash at step {k} and a read"
  assert finished and steps[0] == k  # the sweep reached a run with no crash
  before = "old" if replacing else "none"
  # Every crash leaves the old set until the new one is renamed in, then the new one.
  assert outcomes[0] == before and outcomes[-1] == "new"
  flip = outcomes.index("new")
  assert set(outcomes[:flip]) == {before} and set(outcomes[flip:]) == {"new"}


def test_killed_process_between_renames(old_set):
  # A real crash: a child process dies (os._exit, no cleanup) right after parking the old set.
  path, old_images, old_labels = old_set
  script = textwrap.dedent(f"""
      import os, numpy as np
      from dcjax.data import store
      real = store._rename
      def rename(src, dst):
          real(src, dst)
          os._exit(17)
      store._rename = rename
      images = np.zeros((2, 3, 3, 3), np.uint8)
      store.write_compressed({str(path)!r}, images, np.array([0, 1]), [[0], [1]], dataset="d",
                             split="train", method="new", config={{}}, overwrite=True)
  """)
  env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 17, proc.stderr
  assert not path.exists()
  assert sorted(n.split("-")[0] for n in dot_siblings(path)) == [".set.old", ".set.tmp"]
  assert_holds(path, old_images, old_labels)
  assert store.read_manifest(path)["method"] == "old"
  assert dot_siblings(path) == []
