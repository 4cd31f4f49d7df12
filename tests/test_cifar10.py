"""CIFAR-10: the binary-version source, configs/cifar10.py and configs/pca.py:cifar10, and the
project's shared parquet copy (skipped where ../shared is absent, as on users' machines)."""

import json
import os
import sys

import numpy as np
import pytest

from dcjax import benchmark
from dcjax.data import sources
from dcjax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import cifar10 as cifar10_config  # noqa: E402
from configs import pca as pca_config  # noqa: E402


def write_batches(folder, per_file=20, seed=0, meta=True):
  """A fake cifar-10-batches-bin: 5 train files and a test file of `per_file` records each.
  Returns {split: (images uint8 [N, 32, 32, 3], labels [N])} as they should be read."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  out = {}
  for split, files in (("train", [f"data_batch_{i}.bin" for i in range(1, 6)]),
                       ("test", ["test_batch.bin"])):
    imgs, labs = [], []
    for name in files:
      labels = (np.arange(per_file) % 10).astype(np.uint8)
      planes = rng.integers(0, 256, (per_file, 3, 32, 32), dtype=np.uint8)
      records = np.concatenate([labels[:, None], planes.reshape(per_file, -1)], axis=1)
      with open(os.path.join(folder, name), "wb") as f:
        f.write(records.tobytes())
      imgs.append(planes.transpose(0, 2, 3, 1))
      labs.append(labels)
    out[split] = (np.concatenate(imgs), np.concatenate(labs))
  if meta:
    with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
      f.write("\n".join(sources.CIFAR10_CLASS_NAMES) + "\n\n")
  return out


def test_binary_batches_read_as_rgb_planes_with_labels(tmp_path):
  folder = str(tmp_path / "cifar-10-batches-bin")
  want = write_batches(folder)
  for split in ("train", "test"):
    src = sources.open_source("cifar10", split, data_dir=folder)
    images, labels = want[split]
    assert len(src) == len(labels) == (100 if split == "train" else 20)
    np.testing.assert_array_equal(src.labels, labels)
    for i in (0, 7, len(src) - 1):
      np.testing.assert_array_equal(src[i]["image"], images[i])
    assert src[0]["image"].shape == (32, 32, 3)
    assert src.class_names == sources.CIFAR10_CLASS_NAMES
  # The path may also be given in the name.
  same = sources.open_source(f"cifar10:{folder}", "test")
  np.testing.assert_array_equal(same[3]["image"], want["test"][0][3])


def test_binary_batches_refuse_missing_or_truncated_files_in_one_line(tmp_path):
  with pytest.raises(UserError, match="cifar10 needs the folder of its binary batches"):
    sources.open_source("cifar10", "train")
  folder = str(tmp_path / "b")
  write_batches(folder)
  os.remove(os.path.join(folder, "data_batch_3.bin"))
  with pytest.raises(UserError, match=r"missing data_batch_3.bin\).*cifar-10-binary.tar.gz"):
    sources.open_source("cifar10", "train", data_dir=folder)
  with open(os.path.join(folder, "test_batch.bin"), "ab") as f:
    f.write(b"\0" * 5)
  with pytest.raises(UserError, match="truncated or not a CIFAR-10 binary batch"):
    sources.open_source("cifar10", "test", data_dir=folder)


def test_cifar10_configs_set_the_source_and_normalisation():
  c = cifar10_config.get_config()
  assert c.dataset == "cifar10" and tuple(c.data.mean) == cifar10_config.CIFAR10_MEAN
  assert c.eval.protocol == "small_data" and c.eval.model == "convnet"
  shared = cifar10_config.get_config("shared")
  assert shared.dataset == f"parquet:{cifar10_config.SHARED_PARQUET}"
  p = pca_config.get_config("full,cifar10_shared")
  assert p.dataset == shared.dataset and p.seeds == 3 and p.combine.k == 3  # VALIDATED, IPC 10
  assert pca_config.get_config("cifar10").scores.num_models == 1  # quick
  for bad in ("cifar100", "quick,full", "cifar10,cifar10_shared"):
    with pytest.raises(ValueError, match="configs/pca.py takes"):
      pca_config.get_config(bad)
  with pytest.raises(ValueError, match="CIFAR-10 source must be"):
    cifar10_config.get_config("tfds")
  # The dataset's statistics are also known by name, for --config.dataset=cifar10 without them.
  from dcjax.benchmark import config_args
  assert config_args.NORMALISATION["cifar10"] == ((0.4914, 0.4822, 0.4465),
                                                  (0.2023, 0.1994, 0.2010))


def test_a_tiny_cifar10_run_end_to_end(tmp_path):
  folder = str(tmp_path / "cifar-10-batches-bin")
  write_batches(folder, per_file=10)
  c = cifar10_config.get_config()
  c.data.dir = folder
  c.ipc = 2
  c.progress = False
  c.eval.epochs = 2
  c.eval.model_kwargs.width = 8
  c.eval.num_devices = 1
  c.lock()
  r = benchmark.run(c, str(tmp_path / "run"))
  assert r["num_images"] == 20 and r["dataset"] == "cifar10"
  on_disk = json.load(open(tmp_path / "run" / "results.json"))
  assert 0 <= on_disk["top1_mean"] <= 100


@pytest.mark.skipif(not os.path.isdir(cifar10_config.SHARED_PARQUET),
                    reason="the project's CIFAR-10 parquet copy (../shared/data/cifar10-jpeg) "
                    "is not here")
def test_the_shared_parquet_copy_reads_as_cifar10():
  for split, n in (("train", 50000), ("test", 10000)):
    src = sources.open_source(f"parquet:{cifar10_config.SHARED_PARQUET}", split)
    assert len(src) == n and src.num_classes == 10
    assert [name.lower() for name in src.class_names] == sources.CIFAR10_CLASS_NAMES
    assert np.bincount(src.labels).tolist() == [n // 10] * 10
    image = src[0]["image"]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
