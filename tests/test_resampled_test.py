"""data.test_resample_size: each student is also tested on a down/up resampled test split."""

import json
import os

import pytest

from dcjax import benchmark
from dcjax.errors import UserError
from test_benchmark import tiny_config


def test_students_are_also_tested_on_the_resampled_split_and_sharp_figures_are_unchanged(
    tmp_path):
  sharp = benchmark.run(tiny_config(seeds=2), str(tmp_path / "sharp"))
  both = benchmark.run(tiny_config(seeds=2, **{"data.test_resample_size": 8,
                                               "combine.resample": "area",
                                               "eval.resample": "lanczos3"}),
                       str(tmp_path / "both"))
  key = ("top1", "top5", "final_loss")
  assert [[r[k] for k in key] for r in both["runs"]] == [[r[k] for k in key]
                                                         for r in sharp["runs"]]
  assert sharp["resampled_test"] is None and "resampled_top1" not in sharp["runs"][0]
  t = both["resampled_test"]
  assert (t["size"], t["down"], t["up"]) == (8, "area", "lanczos3")
  per_seed = [r["resampled_top1"] for r in both["runs"]]
  assert all(0 <= v <= 100 for v in per_seed)
  assert t["top1_mean"] == pytest.approx(sum(per_seed) / 2)
  on_disk = json.load(open(tmp_path / "both" / "runs" / "seed_0.json"))
  assert on_disk["resampled_top1"] == per_seed[0]
  # Extending the run reads its finished seeds back, the optional fields included.
  more = benchmark.run(tiny_config(seeds=3, **{"data.test_resample_size": 8,
                                               "combine.resample": "area",
                                               "eval.resample": "lanczos3"}),
                       str(tmp_path / "both"))
  assert more["runs"][:2] == both["runs"] and "resampled_top1" in more["runs"][2]


@pytest.mark.parametrize("size", [16, -1])
def test_a_bad_resample_size_is_refused_before_anything_is_written(tmp_path, size):
  work = tmp_path / "run"
  with pytest.raises(UserError, match="test_resample_size"):
    benchmark.run(tiny_config(**{"data.test_resample_size": size}), str(work))
  assert not work.exists() or not os.listdir(work)
