"""experiments/bench_scoring.py: each CI-sized mode produces its figures and its JSON report.

Only that the figures are produced (finite, positive, in range) is checked, not their values:
timings and memory on a shared CI machine say nothing.
"""

import json
import math
import os

import numpy as np
import pytest

import experiment_scripts



def _load():
  return experiment_scripts.load("bench_scoring")


@pytest.fixture(scope="module")
def bench():
  return _load()


def _positive(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _run(bench, tmp_path, capsys, *args) -> tuple[dict, str]:
  out = tmp_path / f"{args[0]}.json"
  assert bench.main([*args, "--size", "ci", "--out", str(out)]) == 0
  report = json.loads(out.read_text())
  assert {"mode", "size", "command", "date", "versions", "device", "result"} <= set(report)
  assert report["mode"] == args[0] and report["size"] == "ci"
  assert report["versions"]["jax"] and report["versions"]["flax"]
  assert report["device"]["platform"] and report["device"]["kind"]
  return report["result"], capsys.readouterr().out


def test_throughput_reports_training_and_el2n_rates(bench, tmp_path, capsys):
  r, table = _run(bench, tmp_path, capsys, "throughput")
  assert r["num_models"] == 2 and r["image_shape"] == [28, 28, 1]
  assert r["timed_steps"] > 0 and r["finite"]
  for key in ("train_img_per_s", "train_img_models_per_s", "el2n_img_per_s",
              "el2n_img_models_per_s", "projected_fashion_mnist_seconds"):
    assert _positive(r[key]), key
  assert r["train_img_models_per_s"] == pytest.approx(2 * r["train_img_per_s"])
  assert "img x models/s" in table


def test_memory_fits_bytes_per_example_and_extrapolates(bench, tmp_path, capsys):
  r, table = _run(bench, tmp_path, capsys, "memory", "--variants", "numpy")
  rows = r["runs"]["numpy"]
  assert [row["n"] for row in rows] == list(bench.SIZES["ci"].mem_sizes)
  for row in rows:
    assert row["cache_bytes"] == row["n"] * 16 * 16 * 3
    assert row["peak"] >= row["rss_before"] > 0
    assert isinstance(row["device_put_aliases_cache"], bool) and row["el2n_finite"]
  fit = r["fits"]["numpy"]
  assert math.isfinite(fit["bytes_per_example"])
  assert fit["extrapolated_1_28m"]["n"] == 1_281_167
  assert "EXTRAPOLATED" in fit["extrapolated_1_28m"]["note"] and "EXTRAPOLATED" in table


def test_stability_compares_rankings_and_selections(bench, tmp_path, capsys):
  cache = tmp_path / "scores"
  r, table = _run(bench, tmp_path, capsys, "stability", "--cache-dir", str(cache))
  assert os.path.isfile(r["cheap"]["path"]) and os.path.isfile(r["strong"]["path"])
  assert r["cheap"]["path"] != r["strong"]["path"]
  for name in ("el2n", "aum"):
    row = r["comparison"][name]
    assert -1 <= row["spearman"] <= 1
    assert -1 <= row["spearman_within_class"]["mean"] <= 1
    assert len(row["spearman_within_class"]["per_class"]) == 10
    for ipc in bench.SIZES["ci"].ipcs:
      o = row["overlap_per_class"][f"easy_{ipc}"]
      assert 0 <= o["min"] <= o["mean"] <= o["max"] <= 1 and 0 < o["chance"] < 1
      assert 0 <= o["mean_other_tie_break"] <= 1
    assert 0 <= row["tied_fraction"]["cheap"] <= 1
  assert "Spearman" in table
  # A second run reuses both cached files.
  r2, _ = _run(bench, tmp_path, capsys, "stability", "--cache-dir", str(cache))
  assert r2["cheap"]["reused"] and r2["strong"]["reused"]
  assert r2["comparison"]["el2n"]["spearman"] == r["comparison"]["el2n"]["spearman"]


def test_spearman_and_overlap_on_known_rankings(bench):
  a = np.arange(100, dtype=np.float32)
  assert bench.spearman(a, a) == pytest.approx(1.0)
  assert bench.spearman(a, -a) == pytest.approx(-1.0)
  labels = np.arange(100) % 2
  same = dict(el2n=a, aum=-a)
  c = bench.compare(same, same, labels, 2, (5,))
  assert c["el2n"]["overlap_per_class"]["easy_5"]["mean"] == 1.0
  assert c["aum"]["spearman"] == pytest.approx(1.0)
  assert c["el2n"]["tied_fraction"] == {"cheap": 0.0, "strong": 0.0}
  flipped = bench.compare(same, dict(el2n=-a, aum=a), labels, 2, (5,))
  assert flipped["el2n"]["overlap_per_class"]["easy_5"]["mean"] == 0.0


def test_ties_agree_under_the_same_selection_key_only(bench):
  # All-tied scores (as forgetting counts mostly are): the same key picks the same examples,
  # so the overlap says nothing about the scores; another key shows that.
  labels = np.arange(400) % 2
  tied = dict(forgetting=np.zeros(400, np.float32))
  row = bench.compare(tied, tied, labels, 2, (5,))["forgetting"]
  assert row["tied_fraction"] == {"cheap": 1.0, "strong": 1.0}
  o = row["overlap_per_class"]["easy_5"]
  assert o["mean"] == 1.0 and o["mean_other_tie_break"] < 1.0
