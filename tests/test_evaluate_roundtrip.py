"""experiments/evaluate_roundtrip.py: the read-back forms it derives from a finished set, the
commands it runs, and a report that says which read-backs are bitwise equal."""

import json
import os

import numpy as np

import experiment_scripts
from dcjax.data import store

rt = experiment_scripts.load("evaluate_roundtrip")


def _result(top1s, losses, k=1):
  return dict(ipc=1, runs=[dict(seed=s, top1=t, top5=99.0, final_loss=l)
                           for s, (t, l) in enumerate(zip(top1s, losses))],
              storage=dict(image_bytes=4000), config=dict(combine=dict(k=k, resample="nearest")))


def _finish(workdir, result):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(result, f)


def test_readbacks_of_a_pruned_and_a_tiled_set(tmp_path):
  root = str(tmp_path)
  images = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8, 1)
  labels = np.array([0, 0, 1, 1])
  for name, sources in (("random", [[3], [1], [7], [5]]), ("pca", [[0, 1, 2, 3]] * 4)):
    original = os.path.join(root, name, "original")
    _finish(original, _result([50.0], [0.5]))
    store.write_compressed(os.path.join(original, "compressed"), images, labels, sources,
                           dataset="synthetic", split="train", method=name, config={})
  todo = rt.evaluations(root, ipc=1, seeds=1)
  names = [c["name"] for c in todo]
  # herding's original has not finished: nothing of it; a tiled set has no index-list form.
  assert names == ["random ipc=1: as folder", "random ipc=1: as npz", "random ipc=1: as indices",
                   "pca ipc=1: as folder", "pca ipc=1: as npz"]
  np.testing.assert_array_equal(np.load(os.path.join(root, "random", "original", "indices.npy")),
                                [3, 1, 7, 5])
  npz = np.load(os.path.join(root, "random", "original", "set.npz"))
  np.testing.assert_array_equal(npz["images"], images)
  by_name = dict(zip(names, todo))
  argv = " ".join(by_name["random ipc=1: as indices"]["argv"])
  assert "--config.dataset=synthetic" in argv and "--config.fairness.enabled=False" in argv
  argv = " ".join(by_name["pca ipc=1: as npz"]["argv"])
  assert "--config.test_dataset=synthetic" in argv and "--config.combine.k=2" in argv
  assert "--config.eval.augment=tile_dsa" in argv


def test_report_marks_each_readback_bitwise_or_not(tmp_path):
  root = str(tmp_path / "runs")
  _finish(os.path.join(root, "random", "original"), _result([75.0, 76.0], [0.1, 0.2]))
  _finish(os.path.join(root, "random", "folder"), _result([75.0, 76.0], [0.1, 0.2]))
  _finish(os.path.join(root, "random", "npz"), _result([75.0, 76.0], [0.1, 0.2000001]))
  _finish(os.path.join(root, "pca", "original"), _result([70.0], [0.3], k=2))
  path = rt.write_report(root, str(tmp_path / "out"))
  text = open(path).read()
  rows = [line for line in text.splitlines() if line.startswith("| random")]
  assert len(rows) == 6  # two seeds x original, folder, npz
  assert rows[2].endswith("| yes |") and rows[4].endswith("| **no** |")
  assert "| pca (k=2, nearest kernel) IPC 1 | original benchmark run | 0 | 70.00 |" in text
  assert "1 of 2 read-backs bitwise equal to their original." in text
