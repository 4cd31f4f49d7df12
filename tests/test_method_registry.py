"""The method registry: every method the config can name is one registry entry, and a method
registered from outside the package runs end to end like a built-in one."""

import json
import os

import numpy as np
import pytest

from dcjax import benchmark
from dcjax.benchmark import methods
from dcjax.data import store
from dcjax.errors import UserError
from test_benchmark import tiny_config


def first_of_each_class(inputs, per_class):
  """A toy selection: the first `per_class` examples of every class, in index order."""
  labels = np.asarray(inputs.train.labels)
  return np.concatenate([np.flatnonzero(labels == c)[:per_class]
                         for c in range(inputs.train.num_classes)])


@pytest.fixture
def registered():
  methods.register("first_of_each_class", methods.selection(first_of_each_class))
  yield "first_of_each_class"
  del methods.METHODS["first_of_each_class"]


def test_builtin_methods_are_all_registered():
  assert {"random", "el2n_easy", "el2n_hard", "forgetting_easy", "forgetting_hard", "aum_easy",
          "aum_hard", "ccs", "herding", "kcenter", "rded", "sre2l", "pca"} <= set(methods.METHODS)


@pytest.mark.parametrize("k", [1, 2])
def test_a_method_registered_from_outside_runs_end_to_end(registered, tmp_path, k):
  work = str(tmp_path / "run")
  r = benchmark.run(tiny_config(method=registered, ipc=2, **{"combine.k": k}), work)
  assert r["method"] == registered and r["num_images"] == 2 * 4
  images, labels, manifest = store.read_compressed(os.path.join(work, "compressed"))
  behind = [e["source_indices"] for e in manifest["files"]]
  src = benchmark.open_splits(tiny_config())[0]
  want = first_of_each_class(methods.Inputs(src, 2, k, None, {}, None, None, None, None),
                             2 * k * k)
  assert np.concatenate(behind).tolist() == want.tolist()
  assert labels.tolist() == np.repeat(np.arange(4), 2).tolist()
  assert json.load(open(os.path.join(work, "results.json")))["num_source_images"] == len(want)


def test_an_unregistered_method_is_refused_listing_the_registered_ones(registered, tmp_path):
  with pytest.raises(UserError, match="unknown method 'nope'; known: .*first_of_each_class"):
    benchmark.run(tiny_config(method="nope"), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_a_method_error_is_a_one_line_user_error_with_nothing_written(tmp_path):
  def broken(inputs, per_class):
    raise ValueError("my method needs more data")
  methods.register("broken", methods.selection(broken))
  try:
    with pytest.raises(UserError, match="my method needs more data"):
      benchmark.run(tiny_config(method="broken"), str(tmp_path / "run"))
  finally:
    del methods.METHODS["broken"]
  assert not (tmp_path / "run").exists()


def test_pca_method_is_prune_then_combine(tmp_path):
  """method=pca with pca.prune=random is the random selection tiled 2x2, bitwise."""
  a = benchmark.run(tiny_config(method="pca", ipc=2, **{"combine.k": 2, "pca.prune": "random"}),
                    str(tmp_path / "a"))
  b = benchmark.run(tiny_config(method="random", ipc=2, **{"combine.k": 2}),
                    str(tmp_path / "b"))
  ia, _, ma = store.read_compressed(str(tmp_path / "a" / "compressed"))
  ib, _, mb = store.read_compressed(str(tmp_path / "b" / "compressed"))
  assert [e["source_indices"] for e in ma["files"]] == [e["source_indices"] for e in mb["files"]]
  np.testing.assert_array_equal(ia, ib)
  assert a["runs"][0]["final_loss"] == b["runs"][0]["final_loss"]
