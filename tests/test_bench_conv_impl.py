"""experiments/bench_conv_impl.py: it times the small-data step and the eval forward with each
ConvNet layer path and reports how far each moves from the first (the timings themselves are
not checked: a shared CI machine says nothing)."""

import json

import experiment_scripts


def test_the_benchmark_compares_layer_paths_on_the_same_step(tmp_path, capsys):
  bench = experiment_scripts.load("bench_conv_impl")
  out = tmp_path / "ci.json"
  # Width 32: Winograd's narrowest layers, so its path really runs.
  assert bench.main(["--batches", "2", "--steps", "1", "--rounds", "1", "--width", "32",
                     "--eval-batch", "2", "--impls", "custom,winograd", "--out",
                     str(out)]) == 0
  report = json.loads(out.read_text())
  # Which CPU ran it: one model name covers kinds with other vector units.
  assert len(report["cpu_fingerprint"]) == 12 and report["cpu_model"]
  assert "cpu_simd" in report
  rows = report["rows"]
  assert [(r["batch"], r["impl"]) for r in rows] == [
      (b, i) for b in (2, "eval") for i in ("custom", "winograd")]
  for r in rows:
    assert r["ms"] > 0 and r["speedup"] > 0
    # The first path against itself is bitwise; Winograd differs by float rounding only.
    assert (r["max_diff"] == 0.0) if r["impl"] == "custom" else (0.0 < r["max_diff"] < 1e-4)
  assert "winograd" in capsys.readouterr().out
