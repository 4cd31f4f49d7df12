"""configs/imagenet_benchmark.py end to end on tfds.testing.mock_data: the real pipeline (TFDS
ArrayRecord source, 224 px resize / crop protocol, ResNet-18 with the ImageNet stem), with a
4-channel-wide ResNet and one epoch so it fits a CPU test."""

import io
import os
import sys

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from dcjax import benchmark, store  # noqa: E402
from test_benchmark import ROOT  # noqa: E402

PER_CLASS = {"train": 4, "validation": 1}


def _jpeg(rng, h, w):
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
  return buf.getvalue()


def _fake_imagenet(self, split, decoders=None, **kwargs):
  """Stands in for builder.as_data_source: every class present, varied image sizes, JPEG
  bytes as the image feature (what SkipDecoding yields from real ArrayRecord files)."""
  del self, decoders, kwargs
  split = str(split)
  rng = np.random.default_rng(0 if split == "train" else 1)
  n = PER_CLASS[split]
  return [dict(image=_jpeg(rng, 40 + (i % 3) * 8, 56), label=np.int64(i // n),
               file_name=f"{split}_{i}.JPEG") for i in range(1000 * n)]


def test_imagenet_benchmark_config_on_mock_data(tmp_path):
  sys.path.insert(0, ROOT)
  from configs import imagenet_benchmark
  c = imagenet_benchmark.get_config()
  c.ipc = 1
  c.seeds = 1
  c.progress = False
  c.eval.epochs = 1
  c.eval.model_kwargs.width = 4
  c.eval.num_devices = 1
  c.data.cache_dir = str(tmp_path / "cache")
  c.lock()
  with tfds.testing.mock_data(as_data_source_fn=_fake_imagenet):
    r = benchmark.run(c, str(tmp_path / "run"))
  assert (r["dataset"], r["model"], r["protocol"]) == ("tfds:imagenet2012", "resnet18", "hard")
  assert r["num_images"] == 1000 and r["num_classes"] == 1000
  assert r["image_shape"] == [224, 224, 3] and r["test_examples"] == 1000
  assert 0 <= r["top1_mean"] <= r["top5_mean"] <= 100
  images, labels, manifest = store.read_compressed(str(tmp_path / "run" / "compressed"))
  assert images.shape == (1000, 224, 224, 3) and sorted(labels.tolist()) == list(range(1000))
  # The decoded test split was cached for the next run.
  assert os.listdir(tmp_path / "cache")


def test_imagenet_pca_config_on_mock_data(tmp_path):
  sys.path.insert(0, ROOT)
  from configs import imagenet_pca
  c = imagenet_pca.get_config()
  c.ipc, c.seeds, c.progress = 1, 1, False
  c.eval.epochs, c.eval.num_devices = 1, 1
  c.eval.model_kwargs.width = 4
  c.scores.cache_dir, c.scores.epochs, c.scores.num_models = str(tmp_path / "scores"), 1, 1
  # The config's scoring model (ResNet-18 at 64 px) is tested on a JPEG folder below; here a
  # ConvNet scores, which keeps this test's ~2 min of XLA compiles for the 224 px student
  # (CI time: the ResNet-18 scoring programs cost as much again on a 2-core CPU).
  assert (c.scores.model, c.scores.image_size) == ("resnet18", 64)
  c.scores.model, c.scores.model_kwargs = "convnet", {"width": 4}
  c.lock()
  with tfds.testing.mock_data(as_data_source_fn=_fake_imagenet):
    r = benchmark.run(c, str(tmp_path / "run"))
  assert (r["method"], r["combine_k"], r["model"]) == ("el2n_easy", 2, "resnet18")
  assert r["num_images"] == 1000 and r["num_source_images"] == 4000
  assert r["recipe"]["augment"] == "tile_crop"
  manifest = store.read_manifest(str(tmp_path / "run" / "compressed"))
  assert all(len(f["source_indices"]) == 4 for f in manifest["files"])


def test_imagenet_pca_scores_at_64px_with_a_decode_once_cache(tmp_path):
  """configs/imagenet_folder.py:<path>,pca on a JPEG folder: the training split is scored at
  64 px from a decoded-once cache; the students train and test at 224 px."""
  rng = np.random.default_rng(0)
  root = tmp_path / "imagenet"
  for split, n in (("train", 4), ("val", 2)):
    for c in ("n01", "n02", "n03"):
      os.makedirs(root / split / c)
      for i in range(n):
        (root / split / c / f"{i}.JPEG").write_bytes(_jpeg(rng, 40 + 8 * i, 56))
  sys.path.insert(0, ROOT)
  from configs import imagenet_folder
  c = imagenet_folder.get_config(f"{root},pca")
  c.ipc, c.seeds, c.progress = 1, 1, False
  c.eval.epochs, c.eval.num_devices = 1, 1
  c.eval.model_kwargs.width = 4
  c.scores.cache_dir, c.scores.epochs, c.scores.num_models = str(tmp_path / "scores"), 1, 1
  c.scores.model_kwargs.width = 4
  c.scores.batch_size = 4
  c.lock()
  r = benchmark.run(c, str(tmp_path / "run"))
  assert r["dataset"] == f"folder:{root}" and r["image_shape"] == [224, 224, 3]
  assert r["num_images"] == 3 and r["test_examples"] == 6
  cached = sorted(os.listdir(root / ".dcjax-cache"))
  assert any(name.endswith("-train-64.npz") for name in cached), cached
  assert any(name.endswith("-test-224.npz") for name in cached), cached
  from dcjax.data import scorefile, sources
  train = sources.open_source(f"folder:{root}", "train")
  _, meta = scorefile.load_scores(r["score_file"], fingerprint=sources.fingerprint(train), n=12)
  assert meta["score_config"]["image_shape"] == [64, 64, 3]
  with pytest.raises(ValueError, match="ImageNet folder"):
    imagenet_folder.get_config("")
