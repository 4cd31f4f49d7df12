"""Merging results.json files into a CSV / Markdown table and plots, and the CLI around it."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from dcjax.benchmark import report
from dcjax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(REPO, "experiments", "report.py")
PNG = b"\x89PNG\r\n\x1a\n"
METHODS, IPCS, PROTOCOLS = ("random", "herding"), (1, 10), ("hard", "soft")


def _result(method, ipc, protocol, seeds=(0, 1, 2)):
  top1 = [10 * ipc ** 0.5 + (5 if method == "herding" else 0) + (8 if protocol == "soft" else 0)
          + s for s in seeds]
  mean = sum(top1) / len(top1)
  std = (sum((t - mean) ** 2 for t in top1) / len(top1)) ** 0.5
  storage = dict(image_bytes=2000 * ipc)
  if protocol == "soft":
    storage.update(soft_label_bytes=400 * ipc, teacher_bytes=1_000_000)
  return dict(
      method=method, dataset="cifar10", ipc=ipc, num_images=10 * ipc, protocol=protocol,
      model="convnet", top1_mean=mean, top1_std=std, top5_mean=mean + 30, top5_std=std / 2,
      runs=[dict(seed=s, top1=t, top5=t + 30, train_seconds=1.5) for s, t in zip(seeds, top1)],
      storage=storage, recipe=dict(epochs=300 if protocol == "hard" else 400, optimizer="sgd"))


def _write(path, content):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "results.json"), "w") as f:
    f.write(content if isinstance(content, str) else json.dumps(content))


@pytest.fixture
def runs_dir(tmp_path):
  root = tmp_path / "runs"
  for m in METHODS:
    for i in IPCS:
      for p in PROTOCOLS:
        # Nested at different depths, to exercise the recursive search.
        _write(str(root / p / f"{m}_ipc{i}"), _result(m, i, p))
  (root / "empty_workdir" / "compressed").mkdir(parents=True)  # no results.json: skipped
  return root


def test_collect_finds_all_recursively(runs_dir):
  results = report.collect([str(runs_dir)])
  assert len(results) == 8
  assert {(r["method"], r["ipc"], r["protocol"]) for r in results} == {
      (m, i, p) for m in METHODS for i in IPCS for p in PROTOCOLS}
  assert all(r["results_path"].endswith("results.json") for r in results)
  # Overlapping arguments and globs do not duplicate; a plain str is accepted.
  again = report.collect([str(runs_dir), str(runs_dir / "hard"), str(runs_dir / "*" / "random*")])
  assert len(again) == 8
  assert len(report.collect(str(runs_dir / "soft"))) == 4
  assert report.collect(str(runs_dir / "empty_workdir")) == []


def test_collect_errors(runs_dir, tmp_path):
  with pytest.raises(UserError, match="no such file"):
    report.collect([str(tmp_path / "missing")])
  with pytest.raises(UserError, match="matches nothing"):
    report.collect([str(tmp_path / "nope*")])
  _write(str(runs_dir / "broken"), "{not json")
  with pytest.raises(UserError, match=r"malformed .*broken.*results\.json"):
    report.collect([str(runs_dir)])
  bad = _result("random", 1, "hard")
  del bad["top1_mean"]
  _write(str(tmp_path / "bad"), bad)
  with pytest.raises(UserError, match=r"bad.*results\.json.*'top1_mean'"):
    report.collect([str(tmp_path / "bad")])
  bad = dict(_result("random", 1, "hard"), runs=[])
  _write(str(tmp_path / "bad"), bad)
  with pytest.raises(UserError, match="runs"):
    report.collect([str(tmp_path / "bad")])


def test_rows_and_csv(runs_dir, tmp_path):
  rows = report.to_rows(report.collect([str(runs_dir)]))
  assert [tuple(r) for r in rows] == [report.ROW_FIELDS + report.FAIRNESS_FIELDS] * 8
  order = [(r["protocol"], r["ipc"], r["method"]) for r in rows]
  assert order == sorted(order)
  row = next(r for r in rows if (r["method"], r["ipc"], r["protocol"]) == ("herding", 10, "soft"))
  expected = _result("herding", 10, "soft")
  assert row["n_seeds"] == 3
  assert row["top1"] == f"{expected['top1_mean']:.2f} ± {expected['top1_std']:.2f}"
  assert row["top5"] == f"{expected['top5_mean']:.2f} ± {expected['top5_std']:.2f}"
  # The total counts the label file, not the teacher too: a soft run stores one or the other.
  assert (row["image_bytes"], row["soft_label_bytes"], row["total_bytes"]) == (
      20000, 4000, 24000)
  assert row["epochs"] == 400
  hard = next(r for r in rows if r["protocol"] == "hard" and r["ipc"] == 1)
  assert (hard["soft_label_bytes"], hard["total_bytes"], hard["epochs"]) == (0, 2000, 300)

  path = str(tmp_path / "out" / "results.csv")
  report.write_csv(rows, path)
  with open(path, encoding="utf-8", newline="") as f:
    back = list(csv.DictReader(f))
  assert len(back) == 8 and tuple(back[0]) == report.ROW_FIELDS + report.FAIRNESS_FIELDS
  assert back == [{k: str(v) for k, v in r.items()} for r in rows]


def test_markdown(runs_dir):
  rows = report.to_rows(report.collect([str(runs_dir)]))
  md = report.to_markdown(list(reversed(rows)))  # sorts whatever order it is given
  lines = md.strip().split("\n")
  assert lines[0] == "| " + " | ".join(report.ROW_FIELDS) + " |"
  assert set(lines[1]) <= set("|-:") and lines[1].count("|") == len(report.ROW_FIELDS) + 1
  assert len(lines) == 2 + 8
  cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
  assert all(len(c) == len(report.ROW_FIELDS) for c in cells)
  key = [(c[2], int(c[4]), c[3]) for c in cells]  # protocol, ipc, method
  assert key == sorted(key)
  assert cells[0][:6] == ["cifar10", "convnet", "hard", "herding", "1", "3"]
  soft10 = next(c for c in cells if c[2] == "soft" and c[4] == "10" and c[3] == "random")
  assert soft10[8:] == ["20.0 KB", "4.0 KB", "24.0 KB", "400"]
  assert report.human_bytes(999) == "999 B"


def test_plots(runs_dir, tmp_path):
  results = report.collect([str(runs_dir)])
  for plot, name in ((report.plot_accuracy_vs_ipc, "ipc.png"),
                     (report.plot_accuracy_vs_storage, "storage.png")):
    path = str(tmp_path / "plots" / name)
    plot(results, path)
    with open(path, "rb") as f:
      data = f.read()
    assert data.startswith(PNG) and len(data) > 5000
  with pytest.raises(UserError, match="no results"):
    report.plot_accuracy_vs_ipc([], str(tmp_path / "x.png"))


def test_plot_legends_name_each_method_once_in_its_own_colour(tmp_path):
  """The grid's 11 rows under two label kinds: a legend of methods (11 entries, 11 different
  colours) and one of protocols, not 22 pairings; the IPC named once per IPC and protocol on
  the storage plot, not at every point."""
  methods = [f"method {i}" for i in range(11)]
  results = [_result(m, ipc, protocol) for m in methods for ipc in (1, 10)
             for protocol in ("hard", "soft")]
  fig = report._plot(report._points(results), "bytes", "bytes", str(tmp_path / "s.png"),
                     annotate_ipc=True)
  by_title = {lg.get_title().get_text(): lg for lg in fig.legends}
  assert sorted(by_title) == ["method", "protocol"]
  assert [t.get_text() for t in by_title["method"].get_texts()] == sorted(methods)
  colours = [tuple(h.get_color()) if not isinstance(h.get_color(), str) else h.get_color()
             for h in by_title["method"].legend_handles]
  assert len(set(colours)) == 11
  assert [t.get_text() for t in by_title["protocol"].get_texts()] == ["hard", "soft"]
  notes = sorted(t.get_text() for t in fig.axes[0].texts)
  assert notes == ["ipc 1, hard", "ipc 1, soft", "ipc 10, hard", "ipc 10, soft"]
  # Lines that differ in more than method and protocol keep one legend entry per line.
  other = dict(_result("random", 1, "hard"), model="resnet18")
  fig = report._plot(report._points([_result("random", 1, "hard"), other]), "ipc", "ipc",
                     str(tmp_path / "i.png"), annotate_ipc=False)
  (legend,) = fig.legends
  assert [t.get_text() for t in legend.get_texts()] == ["random (hard) convnet",
                                                        "random (hard) resnet18"]


def test_a_log_axis_within_one_decade_gets_ticks_that_read_apart():
  # Fashion-MNIST IPC 1 soft cells: ~161 KB each, no power of ten inside the range.
  assert report.narrow_log_ticks([161_300, 161_720, 161_500]) == [161_300, 161_500, 161_700]
  assert report.narrow_log_ticks([4_800, 6_000]) == [4_800, 5_400, 6_000]
  assert report.narrow_log_ticks([5_000]) == [5_000]
  # One power of ten inside: it and the ends (hard and soft cells of one IPC on one axis).
  assert report.narrow_log_ticks([4_800, 65_000]) == [4_800, 10_000, 65_000]
  assert report.narrow_log_ticks([900, 5_000, 12_000]) is None  # 1,000 and 10,000: decades
  assert report.narrow_log_ticks([0, -1]) is None


def test_duplicate_runs_are_pooled_for_plots():
  a = _result("random", 1, "hard", seeds=(0, 1))
  b = _result("random", 1, "hard", seeds=(5, 6))
  (point,) = report._points([a, b])
  top1 = [r["top1"] for r in a["runs"] + b["runs"]]
  mean = sum(top1) / 4
  assert point["mean"] == pytest.approx(mean)
  assert point["std"] == pytest.approx((sum((t - mean) ** 2 for t in top1) / 4) ** 0.5)
  assert point["label"] == "random (hard)"
  # Runs differing in epochs or model are separate, labelled lines, not pooled.
  c = dict(_result("random", 1, "hard"), recipe=dict(epochs=1000), model="resnet18")
  labels = sorted(p["label"] for p in report._points([a, c]))
  assert labels == ["random (hard) convnet 300 ep", "random (hard) resnet18 1000 ep"]


def test_dcjax_report_writes_the_table_and_plots(runs_dir, tmp_path, capsys):
  """The installed command (an installed dcjax has no experiments/report.py): the same files."""
  from dcjax.benchmark.cli import console_main
  out = tmp_path / "report"
  console_main(["dcjax", "report", f"--out={out}", str(runs_dir / "hard"), str(runs_dir / "soft")])
  assert sorted(os.listdir(out)) == ["acc_vs_ipc.png", "acc_vs_storage.png", "results.csv",
                                     "results.md"]
  captured = capsys.readouterr()
  assert captured.out == (out / "results.md").read_text(encoding="utf-8")
  assert captured.err.strip() == f"8 results -> {out}"


def test_cli(runs_dir, tmp_path):
  out = tmp_path / "report"
  proc = subprocess.run([sys.executable, CLI, "--out", str(out), str(runs_dir / "hard"),
                         str(runs_dir / "soft")], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert sorted(os.listdir(out)) == ["acc_vs_ipc.png", "acc_vs_storage.png", "results.csv",
                                     "results.md"]
  md = (out / "results.md").read_text(encoding="utf-8")
  assert proc.stdout == md and md.count("\n") == 10
  for name in ("acc_vs_ipc.png", "acc_vs_storage.png"):
    assert (out / name).read_bytes().startswith(PNG)


def test_cli_errors_are_one_line(tmp_path, capsys):
  spec = importlib.util.spec_from_file_location("report_cli", CLI)
  cli = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(cli)
  assert cli.main(["--out", str(tmp_path / "o"), str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: no such file") and err.count("\n") == 1
  (tmp_path / "empty").mkdir()
  assert cli.main(["--out", str(tmp_path / "o"), str(tmp_path / "empty")]) == 2
  assert "no results.json" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()  # nothing written on error


def test_portable_name_drops_the_machines_directories():
  assert report.portable_name("parquet:/a/b/cifar10-jpeg test") == "parquet:cifar10-jpeg test"
  assert (report.portable_name("folder:/data/imagenet[train:val] validation")
          == "folder:imagenet[train:val] validation")
  assert report.portable_name("fashion_mnist test") == "fashion_mnist test"
  assert report.portable_name("parquet:relative/x test") == "parquet:relative/x test"


def test_portable_record_writes_the_home_directory_as_a_tilde(monkeypatch):
  monkeypatch.setenv("HOME", "/home/ann")
  record = json.dumps({"dataset": "parquet:/data/c10", "teacher": {"dir": "/home/ann/.cache/t"},
                       "score_file": "/home/annie/s.npz", "note": "see /home/ann/x"})
  assert json.loads(report.portable_record(record)) == {
      "dataset": "parquet:c10", "teacher": {"dir": "~/.cache/t"},
      "score_file": "/home/annie/s.npz",  # another directory that only starts the same: kept
      "note": "see /home/ann/x"}  # only a path that is a whole JSON string's start
