"""dcjax.splits.holdout and the benchmark's validation mode (data.validation_per_class)."""

import json

import numpy as np
import pytest

from dcjax import benchmark
from dcjax.data import sources, splits, store
from dcjax.errors import UserError
from test_benchmark import tiny_config


def _source():
  return sources.open_source("synthetic", "train", synthetic=dict(
      num_examples=60, num_test_examples=8, image_size=8, channels=1, num_classes=4, seed=0))


def test_holdout_is_class_balanced_disjoint_complete_and_seeded():
  src = _source()
  train, val = splits.holdout(src, 3, seed=0)
  assert np.bincount(val.labels, minlength=4).tolist() == [3, 3, 3, 3]
  assert len(train) + len(val) == len(src)
  assert not set(train.indices) & set(val.indices)
  np.testing.assert_array_equal(np.sort(np.concatenate([train.indices, val.indices])),
                                np.arange(len(src)))
  for sub in (train, val):  # images and labels are the base's, renumbered
    for i in (0, len(sub) - 1):
      np.testing.assert_array_equal(sub[i]["image"], src[int(sub.indices[i])]["image"])
      assert sub[i]["label"] == src.labels[sub.indices[i]]
  again = splits.holdout(src, 3, seed=0)[1]
  other = splits.holdout(src, 3, seed=1)[1]
  np.testing.assert_array_equal(again.indices, val.indices)
  assert not np.array_equal(other.indices, val.indices)
  assert sources.fingerprint(train) != sources.fingerprint(src)
  assert val.split == "validation" and "holdout 3/class" in val.name


@pytest.mark.parametrize("n", [0, 15, 100])
def test_holdout_refuses_sizes_that_leave_a_class_empty(n):
  with pytest.raises(UserError, match="validation_per_class"):
    splits.holdout(_source(), n)


def test_benchmark_tests_on_the_held_out_examples(tmp_path):
  config = tiny_config(**{"data.validation_per_class": 5, "seeds": 1})
  results = benchmark.run(config, str(tmp_path / "w"))
  assert results["test_examples"] == 5 * 4
  assert "validation" in results["test_split"]
  # The compressed set comes from the remaining training examples only.
  _, val = splits.holdout(benchmark.open_splits(tiny_config())[0], 5, 0)
  manifest = store.read_manifest(str(tmp_path / "w" / benchmark.COMPRESSED))
  behind = [int(i) for e in manifest["files"] for i in e["source_indices"]]
  assert len(behind) == 4 * 3
  assert max(behind) < 60 - 20  # indices into the train-minus-holdout source
  assert json.load(open(tmp_path / "w" / "results.json"))["test_split"] == results["test_split"]
  assert len(val) == 20


def test_validation_mode_reads_its_rows_of_the_whole_splits_scores(tmp_path):
  overrides = {"method": "el2n_easy", "seeds": 1, "scores.cache_dir": str(tmp_path / "sc"),
               "scores.epochs": 1, "scores.num_models": 1, "eval.epochs": 1}
  full = benchmark.run(tiny_config(**overrides), str(tmp_path / "full"))
  val = benchmark.run(tiny_config(**overrides, **{"data.validation_per_class": 5}),
                      str(tmp_path / "val"))
  assert val["score_file"] == full["score_file"]  # one score run serves both
  from dcjax.data import scorefile
  base = benchmark.open_splits(tiny_config())[0]
  scores, _ = scorefile.load_scores(full["score_file"], fingerprint=sources.fingerprint(base),
                                    n=len(base))
  train, _ = splits.holdout(base, 5, 0)
  manifest = store.read_manifest(str(tmp_path / "val" / benchmark.COMPRESSED))
  chosen = [int(i) for e in manifest["files"] for i in e["source_indices"]]
  # The easiest remaining examples of each class under the whole split's EL2N rows.
  el2n = np.asarray(scores["el2n"])[train.indices]
  for c in range(4):
    members = np.flatnonzero(train.labels == c)
    easiest = set(members[np.argsort(el2n[members], kind="stable")[:3]].tolist())
    assert {i for i in chosen if train.labels[i] == c} == easiest
