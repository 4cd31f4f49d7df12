"""experiments/bench_throughput.py: the CI-sized run produces every figure and its JSON report.

Only that figures are produced is checked, not their values: throughput on a shared CI machine
says nothing.
"""

import json
import math

import pytest

import experiment_scripts


ROW_FIELDS = {"name", "framework", "model", "image_size", "batch", "dtype", "img_per_s",
              "flops_per_img", "mfu", "peak_mem_bytes"}


def _load():
  return experiment_scripts.load("bench_throughput")


@pytest.fixture(scope="module")
def bench():
  return _load()


def _positive(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_ci_run_writes_every_figure(bench, tmp_path, capsys):
  out = tmp_path / "sub" / "bench.json"
  assert bench.main(["--size", "ci", "--out", str(out), "--device-label", "ci-box"]) == 0
  table = capsys.readouterr().out
  report = json.loads(out.read_text())

  assert {"date", "versions", "device", "command", "rows", "ratios", "size"} <= set(report)
  assert report["size"] == "ci"
  assert "--size ci" in report["command"]
  for lib in ("jax", "flax", "torch"):
    assert lib in report["versions"]
  assert report["versions"]["jax"] and report["versions"]["flax"]
  assert report["device"]["label"] == "ci-box"
  assert report["device"]["kind"] and report["device"]["platform"]
  assert len(report["device"]["cpu_fingerprint"]) == 12 and report["device"]["cpu_model"]
  assert "cpu_simd" in report["device"]

  rows = {r["name"]: r for r in report["rows"]}
  for row in report["rows"]:
    assert ROW_FIELDS <= set(row), row
    assert row["image_size"] == 16 and row["batch"] == 16
  # ConvNet on a CPU also times the hard step with XLA's own layer gradients and with
  # dcjax.layers without Winograd (the "befores").
  for name in ("dcjax-xla hard", "dcjax-custom hard", "dcjax-winograd hard"):
    stock = rows.get(name, {})
    assert (stock.get("status") == "ok") == (report["device"]["platform"] == "cpu"), name
  for name in ("dcjax hard", "dcjax soft", "dcjax scoring"):
    row = rows[name]
    assert row["status"] == "ok" and row["framework"] == "dcjax"
    assert _positive(row["img_per_s"]), row
    assert row["flops_per_img"] is None or _positive(row["flops_per_img"])
    assert row["mfu"] is None or _positive(row["mfu"])
    assert row["peak_mem_bytes"] is None or row["peak_mem_bytes"] > 0
    assert name in table
  # The soft step does the hard step's work plus a teacher forward.
  if rows["dcjax soft"]["flops_per_img"] and rows["dcjax hard"]["flops_per_img"]:
    assert rows["dcjax soft"]["flops_per_img"] > rows["dcjax hard"]["flops_per_img"]

  for name in ("torch hard", "torch soft", "torch scoring"):
    row = rows[name]
    if row["status"].startswith("skipped"):
      assert row["img_per_s"] is None
    else:
      assert row["status"] == "ok" and _positive(row["img_per_s"]), row
  torch_ran = rows["torch hard"]["status"] == "ok"
  assert bool(report["ratios"]) == torch_ran
  assert all(_positive(q["dcjax_over_torch"]) for q in report["ratios"])


class _Lowered:
  """A stand-in for jax.stages.Lowered whose cost analyses return given values."""

  def __init__(self, compiled, lowered):
    self._compiled, self._lowered = compiled, lowered

  def compile(self):
    compiled = self._compiled
    return type("C", (), {"cost_analysis": lambda self: compiled})()

  def cost_analysis(self):
    return self._lowered


def test_cost_flops_accepts_every_shape_jax_returns(bench):
  assert bench._cost_flops(_Lowered({"flops": 6.0}, None)) == 6.0
  assert bench._cost_flops(_Lowered([{"flops": 7.0}], None)) == 7.0  # older jax: a list
  # No compiled figure (None, empty, zero): fall back to the unoptimised module's.
  assert bench._cost_flops(_Lowered(None, {"flops": 8.0})) == 8.0
  assert bench._cost_flops(_Lowered([], [{"flops": 9.0}])) == 9.0
  assert bench._cost_flops(_Lowered({"flops": 0.0}, None)) is None


def test_peak_flops_only_for_known_bf16_devices(bench):
  assert bench.peak_flops_for("NVIDIA H200", "bfloat16") == 989e12
  assert bench.peak_flops_for("NVIDIA H200 NVL", "bfloat16") == 835e12
  assert bench.peak_flops_for("NVIDIA H200", "float32") is None
  assert bench.peak_flops_for("cpu", "bfloat16") is None
