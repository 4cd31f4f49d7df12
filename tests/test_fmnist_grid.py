"""experiments/fmnist_grid.py: the cells it would run and the report it writes."""

import json
import os
import subprocess
import sys
import time

import pytest

import experiment_scripts



@pytest.fixture(scope="module")
def grid():
  return experiment_scripts.load("fmnist_grid")


@pytest.fixture(scope="module")
def archive(grid):
  """experiments/grid_archive.py, as the grid imports it."""
  return grid.grid_archive


def test_dry_run_lists_every_cell_with_its_config(grid, tmp_path, capsys):
  assert grid.main(["run", "--root", str(tmp_path), "--ipcs", "1,10", "--protocols", "hard,soft",
                    "--seeds", "2", "--epochs", "10:7", "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert out.count("running ->") == len(grid.MAIN_METHODS) * 2 * 2
  assert "configs/pca.py:full,ipc1 " in out and "configs/pca.py:full,ipc10 " in out
  assert "configs/rded.py" in out
  assert "--config.eval.protocol=small_data" in out and "--config.eval.protocol=soft" in out
  assert "--config.eval.epochs=7" in out and "pca_ipc10_e7" in out
  assert not os.listdir(tmp_path)  # a dry run writes nothing


def test_ablation_cells_and_bad_method(grid, tmp_path, capsys):
  assert grid.main(["run", "--root", str(tmp_path), "--grid", "ablation", "--ipcs", "10",
                    "--protocols", "hard", "--validation-per-class", "50", "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert out.count("running ->") == len(grid.ABLATION)
  assert "--config.eval.augment=tile_crop" in out and "--config.combine.k=3" in out
  assert "--config.eval.crop_scale=(0.5,1.0)" in out and "PCA_tile_crop_0.5-1_ipc10_e301" in out
  assert "--config.eval.augment=tile_dsa" in out
  assert "PCA_1000_ep_ipc10_e1000" in out and "--config.eval.epochs=1000" in out
  assert "--config.data.validation_per_class=50" in out
  assert grid.main(["run", "--root", str(tmp_path), "--grid", "ablation", "--ipcs", "10",
                    "--variants", "P,P+C+A k=3", "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert out.count("running ->") == 2 and "PCA_k3_ipc10" in out and "PC_ipc10" not in out
  with pytest.raises(SystemExit):
    grid.main(["run", "--root", str(tmp_path), "--methods", "random,magic"])
  with pytest.raises(SystemExit):
    grid.main(["run", "--root", str(tmp_path), "--grid", "ablation", "--variants", "P,Q"])


def _result(method, ipc, protocol, labels, top1s, epochs=301, augment="dsa"):
  mean = sum(top1s) / len(top1s)
  return dict(method=method, dataset="fashion_mnist", ipc=ipc, num_images=10 * ipc,
              num_classes=10, protocol=protocol, model="convnet", top1_mean=mean, top1_std=0.5,
              top5_mean=99.0, top5_std=0.1, test_split="fashion_mnist test",
              runs=[dict(seed=s, top1=t, top5=99.0) for s, t in enumerate(top1s)],
              storage=dict(image_bytes=500 * ipc),
              recipe=dict(epochs=epochs, optimizer="sgd", lr=0.01, batch_size=256,
                          augment=augment, labels=labels, mixing="none"),
              environment=dict(backend="cpu", machine="x86_64", jax="0.10.2"))


def _write(root, sub, result, replace=False):
  os.makedirs(os.path.join(root, sub), exist_ok=replace)
  with open(os.path.join(root, sub, "results.json"), "w") as f:
    json.dump(result, f)


def test_a_cell_with_fewer_seeds_is_rerun_to_extend_it(grid, tmp_path, capsys):
  _write(tmp_path, "main/hard/random_ipc10_e301",
         _result("random", 10, "small_data", "hard", [75.0, 76.0, 77.0]))
  args = ["run", "--root", str(tmp_path), "--methods", "random", "--ipcs", "10",
          "--protocols", "hard", "--dry-run"]
  assert grid.main(args + ["--seeds", "3"]) == 0
  assert "random ipc=10 hard: done" in capsys.readouterr().out
  assert grid.main(args + ["--seeds", "5"]) == 0
  out = capsys.readouterr().out
  assert "random ipc=10 hard: running" in out and "--config.seeds=5" in out


def test_report_table_marks_reduced_cells_and_has_the_pca_row(grid, tmp_path):
  root = tmp_path / "runs"
  _write(root, "main/hard/random_ipc10_e301", _result("random", 10, "small_data", "hard",
                                                      [75.0, 76.0, 77.0]))
  _write(root, "main/hard/random_ipc50_e30", _result("random", 50, "small_data", "hard",
                                                     [80.0, 81.0, 82.0], epochs=30))
  # A PCA run's results.json names the selection method; the cell's directory names PCA.
  _write(root, "main/hard/pca_ipc10_e301", _result("el2n_easy", 10, "hard", "hard",
                                                   [60.0] * 5, augment="tile_crop"))
  _write(root, "main/soft/random_ipc10_e301", _result("random", 10, "soft", "teacher",
                                                      [80.0] * 5))
  _write(root, "ablation/hard/PC_ipc10_e301", _result("el2n_easy", 10, "small_data", "hard",
                                                      [70.0] * 3) | dict(combine_k=2))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  lines = md.splitlines()
  random_row = next(line for line in lines if line.startswith("| Random |"))
  assert "76.00 ± 0.50 (3 seeds)" in random_row and "81.00 ± 0.50 (30 ep, 3 seeds)" in random_row
  pca_row = next(line for line in lines if line.startswith("| PCA |"))
  assert "60.00 ± 0.50 (protocol hard, augment tile_crop)" in pca_row
  assert f"**Reduced grid**: 4 of the {len(grid.MAIN_METHODS) * 3 * 2} cells" in md
  assert "| IDC-I (published, distilled pixels) | 70.7 | 85.3 | 89.1 |" in lines
  assert "## Soft labels" in md and "| P+C | 2 | dsa | 301 | 70.00 ± 0.50 (3 seeds) |" in md
  assert "Tested on fashion_mnist test (? images)" in md
  assert open(tmp_path / "out" / "fmnist.md").read() == md
  for png in ("fmnist_acc_vs_ipc.png", "fmnist_acc_vs_storage.png", "fmnist_ablation.png"):
    assert open(tmp_path / "out" / png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert f"]({png})" in md  # the report shows each plot it writes


def test_cifar10_cells_and_selection_seeds(grid, tmp_path, capsys):
  assert grid.main(["run", "--root", str(tmp_path), "--dataset", "cifar10", "--ipcs", "1,10",
                    "--protocols", "hard", "--methods", "random,herding,sre2l,rded,pca",
                    "--selection-seeds", "1:3", "--dry-run"]) == 0
  out = capsys.readouterr().out
  # random, sre2l and rded draw their selection: 3 selections at IPC 1, one at IPC 10.
  assert out.count("running ->") == 3 * 3 + 2 + 5
  cifar = os.path.join(str(tmp_path), "cifar10", "main", "hard")
  for d in ("random_ipc1_e301", "random_ipc1_e301_sel1", "random_ipc1_e301_sel2",
            "sre2l_ipc1_e301_sel2", "herding_ipc1_e301", "random_ipc10_e301"):
    assert f"-> {os.path.join(cifar, d)}\n" in out
  assert "herding_ipc1_e301_sel1" not in out and "random_ipc10_e301_sel1" not in out
  assert "configs/cifar10.py:shared" in out and "configs/sre2l.py:cifar10_shared" in out
  assert "configs/rded.py:cifar10_shared" in out and "configs/pca.py:full,cifar10_shared,ipc" in out
  lines = out.splitlines()
  sel2 = lines[lines.index(next(l for l in lines if "random ipc=1 hard sel 2" in l)) + 1]
  assert sel2.rstrip().endswith("--config.seed=200")  # students 200..204: disjoint
  assert not os.listdir(tmp_path)
  with pytest.raises(SystemExit):
    grid.main(["run", "--root", str(tmp_path), "--selection-seeds", "1:0", "--dry-run"])


def test_report_pools_the_students_of_every_selection(grid, tmp_path):
  root = tmp_path / "runs"
  for sel, top1s in ((0, [40.0, 42.0]), (1, [50.0, 52.0]), (2, [45.0, 47.0])):
    _write(root, "main/hard/random_ipc1_e301" + (f"_sel{sel}" if sel else ""),
           _result("random", 1, "small_data", "hard", top1s) | dict(selection_seed=sel))
  _write(root, "cifar10/main/hard/random_ipc1_e301",  # another dataset's grid: not in fmnist.md
         _result("random", 1, "small_data", "hard", [30.0] * 5)
         | dict(dataset="parquet:/home/u/data/cifar10-jpeg",
                test_split="parquet:/home/u/data/cifar10-jpeg test"))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  row = next(line for line in md.splitlines() if line.startswith("| Random |"))
  # Six students, pooled: mean 46.0, std (ddof 0) over all six.
  import numpy as np
  std = np.std([40, 42, 50, 52, 45, 47])
  assert f"46.00 ± {std:.2f} (6 students over 3 selections)" in row
  assert "30.00" not in md
  md10 = grid.write_report(str(root), str(tmp_path / "out"), dataset="cifar10")
  assert md10.startswith("# CIFAR-10:") and "30.00 ± 0.50" in md10
  # Each dataset's own published rows: CIFAR-10's DC-paper baselines, not Fashion-MNIST's IDC.
  assert "| Random (published, real images) | 14.4 | 26.0 | 43.4 |" in md10.splitlines()
  assert "| DSA (published, distilled pixels) | 28.8 | 52.1 | 60.6 |" in md10.splitlines()
  assert "IDC-I" not in md10 and "JPEG-q75 copy" in md10
  # The report names the split without the machine's directories (it is committed).
  assert "on parquet:cifar10-jpeg test;" in md10 and "/home/u" not in md10
  assert "real images" not in md
  assert os.path.exists(tmp_path / "out" / "cifar10.md")


def test_status_counts_cells_and_estimates_the_time_left(grid, tmp_path, capsys):
  finished = _result("random", 10, "small_data", "hard", [75.0] * 5)
  for x in finished["runs"]:
    x["train_seconds"] = 100.0
  _write(tmp_path, "main/hard/random_ipc10_e301", finished)
  partial = _result("herding", 10, "small_data", "hard", [78.0] * 2)
  _write(tmp_path, "main/hard/herding_ipc10_e301", partial)
  args = ["--root", str(tmp_path), "--methods", "random,herding,kcenter", "--ipcs", "10,20",
          "--protocols", "hard"]
  assert grid.main(["status", *args]) == 0
  out = capsys.readouterr().out
  assert "grid: 1/6 cells done, 1 partly, 4 left;" in out
  # Left: 3 + 5 students at IPC 10 (100 s each) and 3 x 5 at IPC 20 (no finished student
  # there: 100 s / 10 images per class x 20 = 200 s each).
  assert "ETA 1.1 h" in out and f"{(8 * 100 + 15 * 200) / 3600:.1f}" == "1.1"
  assert "herding ipc=10 hard: 2/5 seeds" in out and "random ipc=10 hard:" not in out
  # The cell's wall time per student counts where it is more than the training time
  # (compiles, test passes): 5 students in 1000 s = 200 s each, so the ETA doubles.
  finished["wall_seconds"] = 1000.0
  _write(tmp_path, "main/hard/random_ipc10_e301", finished, replace=True)
  assert grid.main(["status", *args]) == 0
  assert f"ETA {(8 * 200 + 15 * 400) / 3600:.1f} h" in capsys.readouterr().out
  # The cell's setup (scores, teachers, SRe2L's recover) is not a student's: 500 of the
  # 1000 s were setup, so 100 s per student of wall time is left and training (100 s) rules.
  finished["setup_seconds"] = 500.0
  _write(tmp_path, "main/hard/random_ipc10_e301", finished, replace=True)
  assert grid.main(["status", *args]) == 0
  assert "ETA 1.1 h" in capsys.readouterr().out
  p = grid.progress([], 5, str(tmp_path / "empty"))
  assert p["eta_seconds"] is None and p["total"] == 0


def test_the_eta_reads_the_newest_students_of_an_ipc(grid, tmp_path):
  """Code and hosts change between sessions: the newest ETA_RECENT_STUDENTS students of an IPC
  set its seconds, not every student ever finished."""
  n = grid.ETA_RECENT_STUDENTS
  old = dict(_result("random", 10, "small_data", "hard", [70.0] * n),
             created="2026-12-01T00:00:00")
  new = dict(_result("herding", 10, "small_data", "hard", [70.0] * n),
             created="2026-12-06T00:00:00")
  for r, seconds in ((old, 300.0), (new, 100.0)):
    r["runs"] = [dict(x, train_seconds=seconds) for x in r["runs"]]
  _write(tmp_path, "main/hard/random_ipc10_e301", old)
  _write(tmp_path, "main/hard/herding_ipc10_e301", new)
  fmnist_hard = ("fmnist", "hard")
  assert grid._finished_student_seconds(str(tmp_path)) == {fmnist_hard: {10: [100.0] * n}}


def test_the_eta_keys_students_by_dataset_and_labels(grid, tmp_path):
  """A CIFAR-10 soft-label student costs ~2x a Fashion-MNIST hard-label one: each kind's cells
  are estimated from that kind's students, and a kind with none from every kind's pooled."""
  n = grid.ETA_RECENT_STUDENTS
  cheap = dict(_result("random", 10, "small_data", "hard", [70.0] * n),
               created="2026-12-06T00:00:00")
  cheap["runs"] = [dict(x, train_seconds=100.0) for x in cheap["runs"]]
  costly = dict(_result("random", 10, "soft", "teacher", [70.0] * n),
                created="2026-12-06T01:00:00", dataset="parquet:/data/cifar10-jpeg")
  costly["runs"] = [dict(x, train_seconds=200.0) for x in costly["runs"]]
  _write(tmp_path, "main/hard/random_ipc10_e301", cheap)
  _write(tmp_path, "cifar10/main/soft/random_ipc10_e300", costly)
  assert grid._finished_student_seconds(str(tmp_path)) == {
      ("fmnist", "hard"): {10: [100.0] * n}, ("cifar10", "soft"): {10: [200.0] * n}}
  assert grid.student_kind("parquet:/data/cifar10-jpeg/", "teacher") == ("cifar10", "soft")
  assert grid.student_kind("fashion_mnist", "hard") == ("fmnist", "hard")
  assert grid.student_kind("fmnist", "soft") == ("fmnist", "soft")

  def eta(**cell):
    todo = [dict(workdir=str(tmp_path / "left"), ipc=10, **cell)]
    return grid.progress(todo, 5, str(tmp_path))["eta_seconds"]
  assert eta(dataset="fmnist", labels="hard") == pytest.approx(5 * 100.0)
  assert eta(dataset="cifar10", labels="soft") == pytest.approx(5 * 200.0)
  assert eta(dataset="cifar10", labels="hard") == pytest.approx(5 * 150.0)  # pooled median
  # The grid's cells carry their kind.
  cells, _, _ = grid.plan(["--root", str(tmp_path), "--dataset", "cifar10", "--methods",
                           "random", "--ipcs", "10"])
  assert {(c["dataset"], c["labels"]) for c in cells} == {("cifar10", "hard"),
                                                          ("cifar10", "soft")}


def test_the_eta_reads_the_newest_convolution_path_only(grid, tmp_path):
  """Students of an older, slower convolution path do not set a kind's estimate: the kind falls
  back to the students of the current path (every kind's, pooled)."""
  n = grid.ETA_RECENT_STUDENTS
  old = dict(_result("random", 10, "soft", "teacher", [70.0] * n),
             created="2026-12-01T00:00:00", environment=dict(conv_path="winograd"))
  old["runs"] = [dict(x, train_seconds=300.0) for x in old["runs"]]
  new = dict(_result("random", 10, "small_data", "hard", [70.0] * n),
             created="2026-12-06T00:00:00", environment=dict(conv_path="fused"))
  new["runs"] = [dict(x, train_seconds=100.0) for x in new["runs"]]
  _write(tmp_path, "main/soft/random_ipc10_e300", old)
  _write(tmp_path, "main/hard/random_ipc10_e301", new)
  assert grid._finished_student_seconds(str(tmp_path)) == {("fmnist", "hard"): {10: [100.0] * n}}
  todo = [dict(workdir=str(tmp_path / "left"), ipc=10, dataset="fmnist", labels="soft")]
  assert grid.progress(todo, 5, str(tmp_path))["eta_seconds"] == pytest.approx(5 * 100.0)


def test_one_contended_cell_does_not_set_the_eta(grid, tmp_path):
  """The median of the newest students: one cell that shared the CPU (2x slower) among three
  leaves the estimate at the clean cells' seconds, where a mean would move it by a third."""
  n = grid.ETA_RECENT_STUDENTS // 3
  for i, seconds in enumerate((100.0, 200.0, 100.0)):
    r = dict(_result("random", 10, "small_data", "hard", [70.0] * n),
             created=f"2026-12-0{i + 1}T00:00:00")
    r["runs"] = [dict(x, train_seconds=seconds) for x in r["runs"]]
    _write(tmp_path, f"main/hard/random_ipc10_e301_sel{i}", r)
  todo = [dict(workdir=str(tmp_path / "left"), ipc=10)]
  assert grid.progress(todo, 5, str(tmp_path))["eta_seconds"] == pytest.approx(5 * 100.0)


def test_the_alone_eta_reads_the_fast_students_the_recent_one_the_median(grid, tmp_path, capsys):
  """Work beside the queue only slows students: where most of the newest ran beside a test run
  (250 s against 100 s alone), the recent pace is the median's and the CPU-to-itself estimate
  the low percentile's, and the status line prints both."""
  for i, seconds in enumerate((100.0, 250.0, 250.0)):
    r = dict(_result("random", 10, "small_data", "hard", [70.0] * 5),
             created=f"2026-12-0{i + 1}T00:00:00")
    r["runs"] = [dict(x, train_seconds=seconds) for x in r["runs"]]
    _write(tmp_path, f"main/hard/random_ipc10_e301_sel{i}", r)
  todo = [dict(workdir=str(tmp_path / "left"), ipc=10)]
  p = grid.progress(todo, 5, str(tmp_path))
  assert p["eta_seconds"] == pytest.approx(5 * 250.0)
  assert p["eta_alone_seconds"] == pytest.approx(5 * 100.0)
  assert grid.progress_line(p).endswith(", 0.1 h with the CPU to itself")


def test_student_seconds_fit_a_fixed_cost_and_a_cost_per_image(grid):
  assert grid.student_seconds_model({}) is None
  one = grid.student_seconds_model({10: 215.0})
  assert one(10) == 215.0 and one(50) == pytest.approx(1075.0) and one(1) == pytest.approx(21.5)
  # IPC 1 and 10 finished (the AMD machine's idle figures): 20.56 s + 19.44 s per image.
  two = grid.student_seconds_model({1: 40.0, 10: 215.0})
  assert two(1) == 40.0 and two(10) == 215.0
  assert two(50) == pytest.approx(40.0 - 175.0 / 9 + 50 * 175.0 / 9)
  assert two(0) == pytest.approx(40.0 - 175.0 / 9)  # the fixed cost alone
  # A negative intercept becomes a line through the origin; a falling one, seconds per image.
  steep = grid.student_seconds_model({1: 5.0, 10: 200.0})
  assert steep(50) == pytest.approx(50 * (5.0 + 2000.0) / 101)
  falling = grid.student_seconds_model({1: 300.0, 10: 200.0})
  assert falling(50) == pytest.approx(50 * (300.0 + 20.0) / 2)


def test_background_start_detaches_logs_and_refuses_a_second(grid, tmp_path, capsys):
  root = tmp_path / "runs"
  argv = ["run", "--root", str(root), "--methods", "random", "--ipcs", "1", "--protocols",
          "hard", "--dry-run"]
  assert grid.start_background(str(root), argv + ["--background"]) == 0
  pid = int((root / "grid.pid").read_text())
  assert f"pid {pid}" in capsys.readouterr().out
  assert grid.start_background(str(root), argv) == 2  # while it runs (or just after: a zombie)
  assert "a grid already runs" in capsys.readouterr().err
  deadline = time.time() + 120
  while "random ipc=1 hard" not in (root / "grid.log").read_text() and time.time() < deadline:
    time.sleep(0.5)
  log = (root / "grid.log").read_text()
  assert "started: nice -n 19" in log and "--background" not in log.split("started:")[1]
  assert "[1/1] random ipc=1 hard: running" in log
  (root / "grid.pid").write_text("999999999\n")  # a dead pid: a new start is allowed
  assert grid.start_background(str(root), argv) == 0


def test_a_detached_run_lowers_its_own_sessions_weight_only(grid):
  child = subprocess.Popen(["sleep", "30"], start_new_session=True)
  try:
    mine = open("/proc/self/autogroup").read() if os.path.exists("/proc/self/autogroup") else None
    ok = grid.lower_session_weight(child.pid)
    autogroup = f"/proc/{child.pid}/autogroup"
    if os.path.exists(autogroup):
      assert ok and open(autogroup).read().strip().endswith("nice 19")
      assert open("/proc/self/autogroup").read() == mine  # the caller's session is untouched
    else:
      assert not ok  # no autogroup here: nothing to lower, and no error
  finally:
    child.kill()
    child.wait()
  assert not grid.lower_session_weight(999999999)  # no such process


def test_stop_after_starts_no_cell_once_the_time_is_spent(grid, tmp_path, capsys):
  _write(tmp_path, "main/hard/random_ipc1_e301",
         _result("random", 1, "small_data", "hard", [50.0] * 5))
  assert grid.main(["run", "--root", str(tmp_path), "--methods", "random", "--ipcs", "1,10",
                    "--protocols", "hard", "--stop-after", "0"]) == 0
  out = capsys.readouterr().out
  assert "random ipc=1 hard: done" in out  # a finished cell is still counted
  assert "stopped after 0 s (--stop-after 0): 1 cell(s) left" in out
  assert not os.path.exists(tmp_path / "main" / "hard" / "random_ipc10_e301")


def test_report_marks_the_cells_that_ran_on_a_gpu(grid, tmp_path):
  root = tmp_path / "runs"
  gpu = dict(environment=dict(backend="gpu", machine="x86_64", jax="0.11.0"))
  _write(root, "main/hard/herding_ipc10_e301",
         _result("herding", 10, "small_data", "hard", [79.0] * 5) | gpu)
  _write(root, "main/hard/random_ipc10_e301",
         _result("random", 10, "small_data", "hard", [75.0] * 5))
  _write(root, "main/hard/random_ipc1_e301",
         _result("random", 1, "small_data", "hard", [48.0] * 5) | gpu)
  _write(root, "main/hard/random_ipc1_e301_sel1",  # one selection on each: both named
         _result("random", 1, "small_data", "hard", [50.0] * 5) | dict(selection_seed=1))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  lines = md.splitlines()
  assert "| 79.00 ± 0.50 (on gpu) |" in next(l for l in lines if l.startswith("| Herding |"))
  random_row = next(l for l in lines if l.startswith("| Random |"))
  assert "(10 students over 2 selections, on cpu+gpu)" in random_row
  assert "| 75.00 ± 0.50 |" in random_row  # the CPU cell: unmarked
  assert "gpu (x86_64), jax 0.11.0" in md


def _soft(result, soft_bytes, teacher_bytes=300_000):
  return result | dict(storage=dict(result["storage"], soft_label_bytes=soft_bytes,
                                    teacher_bytes=teacher_bytes))


def test_findings_state_each_verdict_with_its_numbers(grid, tmp_path):
  root = tmp_path / "runs"
  hard = lambda m, ipc, t: _result(m, ipc, "small_data", "hard", [t] * 5)  # noqa: E731
  soft = lambda m, ipc, t: _soft(_result(m, ipc, "soft", "teacher", [t] * 5),  # noqa: E731
                                 1000 * ipc * 50)
  # IPC 1: random soft within a pooled std of RDED (holds); pruning far ahead at hard (holds).
  _write(root, "main/soft/random_ipc1_e301", soft("random", 1, 76.0))
  _write(root, "main/soft/rded_ipc1_e301", soft("rded", 1, 76.4))
  _write(root, "main/hard/herding_ipc1_e301", hard("herding", 1, 66.0))
  _write(root, "main/hard/random_ipc1_e301", hard("random", 1, 41.0))
  _write(root, "main/hard/rded_ipc1_e301", hard("rded", 1, 18.0))
  # IPC 10: random soft 3 points below SRe2L (does not hold); SRe2L hard beats pruning.
  _write(root, "main/soft/random_ipc10_e301", soft("random", 10, 80.0))
  _write(root, "main/soft/sre2l_ipc10_e301", soft("sre2l", 10, 83.0))
  _write(root, "main/hard/herding_ipc10_e301", hard("herding", 10, 79.0))
  _write(root, "main/hard/sre2l_ipc10_e301", hard("sre2l", 10, 79.2))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  findings = md.split("## Findings")[1].split("## Storage")[0]
  assert "(1) Under soft labels a random subset is about as good as distillation: " \
         "partly reproduced.**" in findings
  assert ("IPC 1: random 76.00 ± 0.50 (5 students) vs the best distillation cell RDED "
          "76.40 ± 0.50 (5 students): random behind by 0.40 (pooled std 0.50)") in findings
  assert "IPC 10: random 80.00 ± 0.50 (5 students) vs the best distillation cell SRe2L 83.00" \
      in findings
  assert "(2) Under hard labels synthesised images collapse and pruning wins: " \
         "partly reproduced.**" in findings
  assert ("IPC 1: best pruning Herding 66.00 ± 0.50 (5 students) vs best distillation RDED "
          "18.00 ± 0.50 (5 students): pruning ahead by 48.00 (pooled std 0.50)\n"
          "    - soft − hard labels: RDED +58.40 (pruning: Random +35.00)") in findings
  assert "pruning behind by 0.20" in findings
  # Soft labels: 50 KB at IPC 1 over 500 B of images = 100x (holds); 500 KB / 5 KB at 10.
  assert "(3) Soft labels cost far more storage than the images (at least 10x): " \
         "reproduced.**" in findings
  assert ("IPC 1: soft labels 50.0 KB (301 epochs of labels) vs images 500 B (100x); the "
          "teacher, to relabel on the fly instead, 300.0 KB") in findings
  # Why: per image 301 x 10 x 2 B of labels vs 50 B of PNG; at ImageNet-1K's scale, arithmetic.
  assert ("Per stored image: 301 epochs x 10 classes x 2 B = 6.0 KB of labels vs 50 B of image"
          in findings)
  assert ("gives 6.0 GB of soft labels, 38x the paper's 157.0 MB of images; the paper reports "
          "5.8 GB, ~40x.") in findings
  storage = md.split("## Storage")[1]
  assert "| 1 | 500 B | 50.0 KB | 300.0 KB | 100x |" in storage
  assert "| 10 | 5.0 KB | 500.0 KB | 300.0 KB | 100x |" in storage


def test_pca_finding_states_the_hard_label_lead_and_the_soft_label_cells_storage(grid, tmp_path):
  root = tmp_path / "runs"
  hard = lambda m, ipc, t: _result(m, ipc, "small_data", "hard", [t] * 5)  # noqa: E731
  # IPC 1: PCA 3 points ahead of herding (holds); IPC 10: PCA 0.3 behind RDED's tile view.
  _write(root, "main/hard/pca_ipc1_e301", hard("pca", 1, 71.0))
  _write(root, "main/hard/herding_ipc1_e301", hard("herding", 1, 68.0))
  _write(root, "main/soft/el2n_easy_ipc1_e301",
         _soft(_result("el2n_easy", 1, "soft", "teacher", [75.0] * 5), 60_000))
  _write(root, "main/hard/pca_ipc10_e301", hard("pca", 10, 80.0) | dict(combine_k=2))
  _write(root, "main/hard/rded_tile_ipc10_e301", hard("rded", 10, 80.3))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  findings = md.split("## Findings")[1].split("## Storage")[0]
  assert ("(PCA, method.md section 3) With hard labels alone, PCA beats every other method "
          "with hard labels: partly reproduced.**") in findings
  # The soft cell stores its images (500 B) and its label file (60 KB), not its teacher.
  assert ("IPC 1: PCA 71.00 ± 0.50 (5 students) vs the best other hard-label cell Herding "
          "68.00 ± 0.50 (5 students): PCA ahead by 3.00 (pooled std 0.50)\n"
          "    - against the other methods' best soft-label cell, EL2N easy 75.00 ± 0.50 "
          "(5 students), which "
          "stores 60.5 KB with its label file to PCA's 500 B: PCA behind by 4.00 (pooled std "
          "0.50)") in findings
  assert ("IPC 10: PCA (k = 2: 4 real images per stored image) 80.00 ± 0.50 (5 students) vs the "
          "best other hard-label cell RDED (tile view) 80.30 ± 0.50 (5 students): PCA behind by "
          "0.30 (pooled std 0.50)") in findings
  # The report's published rows, as context beside the verdict (Fashion-MNIST's: method.md).
  assert ("label file to PCA's 500 B: PCA behind by 4.00 (pooled std 0.50)\n"
          "    - published rows (their papers' code and evaluation, not run here) above it: "
          "IDC (factor 2, DSA+CutMix) 81.0") in findings
  assert ("PCA behind by 0.30 (pooled std 0.50)\n    - published rows (their papers' code and "
          "evaluation, not run here) above it: DC 82.3, DSA 84.6, IDC (factor 2, DSA+CutMix) "
          "86.0, IDC-I 85.3") in findings


def test_findings_not_measured_where_the_cells_they_compare_are_missing(grid, tmp_path):
  root = tmp_path / "runs"
  _write(root, "main/hard/random_ipc10_e301",
         _result("random", 10, "small_data", "hard", [75.0] * 5))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  assert md.count(": not measured yet.**") == 4  # the three findings and PCA's claim
  assert "needs random and RDED or SRe2L under soft labels at one IPC" in md
  assert "needs PCA and another method under hard labels at one IPC" in md
  assert "| 10 | 5.0 KB | — | — | — |" in md


def test_archive_keeps_finished_cells_results_only_and_run_skips_them(grid, tmp_path, capsys,
                                                                    monkeypatch):
  monkeypatch.setenv("HOME", "/home/u")
  root, to = tmp_path / "runs", tmp_path / "archive"
  _write(root, "main/hard/random_ipc10_e301",
         _result("random", 10, "small_data", "hard", [75.0] * 5))
  _write(root, "cifar10/main/soft/random_ipc1_e301_sel1",
         _result("random", 1, "soft", "teacher", [60.0] * 5)
         | dict(dataset="parquet:/home/u/cifar10-jpeg",
                test_split="parquet:/home/u/cifar10-jpeg[holdout 500/class seed 0] validation",
                teacher=dict(dir="/home/u/.cache/dcjax/teachers/c10", top1=70.0)))
  (root / "main/hard/random_ipc10_e301/checkpoints").mkdir()
  (root / "main/hard/herding_ipc10_e301").mkdir()  # not finished: not archived
  assert grid.main(["archive", "--root", str(root), "--to", str(to)]) == 0
  assert "2 finished cell(s) archived" in capsys.readouterr().out
  assert sorted(str(p.relative_to(to)) for p in to.rglob("*") if p.is_file()) == [
      "cifar10/main/soft/random_ipc1_e301_sel1/results.json",
      "main/hard/random_ipc10_e301/results.json"]
  # The archive is committed: its names lose the machine's directories, the rest is verbatim.
  kept = json.loads((to / "cifar10/main/soft/random_ipc1_e301_sel1/results.json").read_text())
  ran = json.loads((root / "cifar10/main/soft/random_ipc1_e301_sel1/results.json").read_text())
  assert kept["dataset"] == "parquet:cifar10-jpeg"
  assert kept["test_split"] == "parquet:cifar10-jpeg[holdout 500/class seed 0] validation"
  assert kept["teacher"] == dict(dir="~/.cache/dcjax/teachers/c10", top1=70.0)
  assert {k: v for k, v in kept.items() if k not in ("dataset", "test_split", "teacher")} == {
      k: v for k, v in ran.items() if k not in ("dataset", "test_split", "teacher")}
  assert ((to / "main/hard/random_ipc10_e301/results.json").read_bytes()
          == (root / "main/hard/random_ipc10_e301/results.json").read_bytes())
  assert grid.main(["run", "--root", str(to), "--methods", "random,herding", "--ipcs", "10",
                    "--protocols", "hard", "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert "random ipc=10 hard: done" in out and "herding ipc=10 hard: running" in out
  with pytest.raises(SystemExit):
    grid.main(["archive", "--root", str(tmp_path / "nothing")])


def test_every_step_of_the_grid_queue_names_cells_the_runners_have(grid, tmp_path, capsys):
  queue = experiment_scripts.load("grid_queue")
  assert len(queue.STEPS) >= 10
  for runner, args in queue.STEPS:
    main = queue.RUNNERS[runner].main
    assert main(["run", *queue.step_argv(runner, args, str(tmp_path)), "--dry-run"]) == 0, args
  out = capsys.readouterr().out
  # The issue's grid: every method at IPC 1, 10 and 50 on both datasets, hard and soft labels.
  for sub in ("", "cifar10/"):
    for ipc in (1, 10, 50):
      for method in grid.MAIN_METHODS:
        for labels in ("hard", "soft"):
          cell = f"-> {tmp_path}/{sub}main/{labels}/{method}_ipc{ipc}_e"
          assert cell in out, cell
  assert "random ipc=1 hard sel 4" in out and "random ipc=10 hard sel 1" in out
  # The recover sweeps run first for each dataset, under RUNS/sre2l_recover.
  assert f"-> {tmp_path}/sre2l_recover/validation/fmnist/soft/default_ipc10" in out
  assert out.index("fmnist default ipc=10 soft") < out.index("random ipc=1 hard")


def test_grid_queue_runs_its_steps_in_order_and_reports_each(tmp_path, monkeypatch, capsys):
  queue = experiment_scripts.load("grid_queue")
  calls = []
  for name, module in queue.RUNNERS.items():
    monkeypatch.setattr(module, "main", lambda argv, name=name: calls.append((name, argv)) or 0)
  assert queue.main(["run", "--root", str(tmp_path)]) == 0
  # SRe2L's grid steps wait for their recover sweeps (none has run here); the others run.
  assert [(n, a[3:]) for n, a in calls] == [(n, a) for n, a in queue.STEPS
                                            if "sre2l" not in a]
  out = capsys.readouterr().out
  skipped = sum("sre2l" in a for _, a in queue.STEPS)
  assert skipped == 6 and out.count("grid_queue: skipped, SRe2L's") == skipped
  assert "SRe2L's cifar10 cells wait: its recover sweep has finished 0 of 11 settings" in out
  assert calls[0][1][:3] == ["run", "--root", str(tmp_path / "sre2l_recover")]
  assert calls[1][1][:3] == ["run", "--root", str(tmp_path)]
  assert not any("--workers" in a for _, a in calls)
  calls.clear()
  assert queue.main(["run", "--root", str(tmp_path), "--workers", "3"]) == 0
  assert calls and all(a[-2:] == ["--workers", "3"] for _, a in calls)
  capsys.readouterr()
  monkeypatch.undo()
  # Status: one finished sweep cell (3 seeds, 300 s of wall time each) and nothing else.
  cell = tmp_path / "sre2l_recover" / "validation" / "fmnist" / "soft" / "default_ipc10"
  result = _result("sre2l", 10, "soft", "teacher", [80.0] * 3)
  result["wall_seconds"] = 900.0
  for x in result["runs"]:
    x["train_seconds"] = 250.0
  _write(cell.parent, cell.name, result)
  rows = queue.status(str(tmp_path))
  assert [r["step"].split()[0] for r in rows] == [n for n, _ in queue.STEPS]
  n = 2 * len(experiment_scripts.load("sre2l_recover").SETTINGS)  # soft and hard per setting
  assert rows[0]["done"] == 1 and rows[0]["total"] == n
  assert rows[0]["eta_seconds"] == pytest.approx((n - 1) * 3 * 300.0)  # cells x 3 seeds left
  # IPC 1 has no finished student: 30 s per stored image per class, from the sweep's cell.
  # 48 cells of the issue's grid, RDED's 5 tile-view selections and its factor-1 row's 5 x 2
  # (hard, soft), x 5 seeds.
  assert rows[1]["eta_seconds"] == pytest.approx((48 + 5 + 10) * 5 * 30.0)
  lines = queue.status_lines(rows, now=0.0)
  hours = f"{(n - 1) * 900 / 3600:.1f} h"
  assert f"1/{n} cells done, 0 partly, {n - 1} left; {hours} left ({hours} alone), done ~" in (
      lines[0])
  assert lines[-1].startswith(f"queue: 1/{sum(r['total'] for r in rows)} cells done; ETA ")
  # A step with nothing to estimate from is named, not counted; a finished one says so.
  rows = [dict(rows[0], done=n, partial=0, left=0, eta_seconds=None),
          dict(rows[1], eta_seconds=None)]
  lines = queue.status_lines(rows, now=0.0)
  assert lines[0].endswith("; finished") and "no finished student" in lines[1]
  assert "ETA 0.0 h" in lines[-1] and "not counting 1 step(s)" in lines[-1]
  # The shell wrapper's status mode: the same lines (it copies the archived cells first).
  out = subprocess.run(["bash", os.path.join(queue.fmnist_grid.ROOT_DIR, "scripts",
                                             "grid_queue.sh"), str(tmp_path), "status"],
                       capture_output=True, text=True, check=True).stdout
  assert " 1. recover --datasets fmnist --ipcs 10" in out and "queue: " in out
  # A root that does not exist: one error line, and nothing is created.
  missing = tmp_path / "no_such_root"
  p = subprocess.run(["bash", os.path.join(queue.fmnist_grid.ROOT_DIR, "scripts", "grid_queue.sh"),
                      str(missing), "status"], capture_output=True, text=True)
  assert p.returncode == 2 and "is not a directory" in p.stderr and not missing.exists()

def test_cells_share_a_compilation_cache_per_cpu_kind_under_the_root(grid, tmp_path, monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.delenv("DCJAX_CACHE", raising=False)
  out = tmp_path / "env.txt"
  child = ("import os, sys; open(sys.argv[1], 'w').write(os.environ['JAX_COMPILATION_CACHE_DIR']"
           " + '|' + os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']"
           " + '|' + os.environ['DCJAX_CACHE'])")
  cell = dict(name="probe", workdir=str(tmp_path / "runs" / "probe"), ipc=1,
              argv=[sys.executable, "-c", child, str(out)])
  assert grid.run_cells([cell], seeds=1, root=str(tmp_path / "runs")) == 0
  fingerprint = grid.cpu_fingerprint()
  assert len(fingerprint) == 12 and fingerprint == grid.cpu_fingerprint()
  # The grid owns its teacher / score caches too, under the root unless DCJAX_CACHE says.
  assert out.read_text() == (f"{tmp_path / 'runs' / '.jax_cache' / fingerprint}|0|"
                             f"{tmp_path / 'runs' / '.dcjax_cache'}")
  assert grid.compilation_cache_env("r", {"DCJAX_CACHE": "/c"})["DCJAX_CACHE"] == "/c"
  # A cache the caller already chose is kept; without a root nothing is added.
  env = grid.compilation_cache_env(str(tmp_path), {"JAX_COMPILATION_CACHE_DIR": "/elsewhere"})
  assert env["JAX_COMPILATION_CACHE_DIR"] == "/elsewhere"
  assert "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in env
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/mine")
  cell["workdir"] = str(tmp_path / "runs" / "probe2")
  assert grid.run_cells([cell], seeds=1, root=str(tmp_path / "runs")) == 0
  assert out.read_text().startswith("/mine|")


PROBE = """
import json, os, sys, time
workdir, fail = sys.argv[1], sys.argv[2] == "fail"
start = time.time()
time.sleep(1.0)
cpus = sorted(os.sched_getaffinity(0))
json.dump(dict(start=start, end=time.time(), cpus=cpus,
               prealloc=os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")),
          open(os.path.join(workdir, "probe.json"), "w"))
if fail:
  sys.exit(3)
json.dump(dict(runs=[dict(seed=0)]), open(os.path.join(workdir, "results.json"), "w"))
"""


def test_workers_split_the_cpus_and_run_cells_at_once(grid, tmp_path, capsys):
  assert grid.worker_cpus(2, [3, 0, 1, 2]) == [[0, 1], [2, 3]]
  assert grid.worker_cpus(3, [0, 1]) == [[0], [1], [0]]
  assert grid.worker_cpus(1, [0, 1]) == [[0, 1]]
  runs = tmp_path / "runs"

  def cell(name, fail=False):
    workdir = runs / name
    return dict(name=name, workdir=str(workdir), ipc=1,
                argv=[sys.executable, "-c", PROBE, str(workdir), "fail" if fail else "ok"])
  todo = [cell("a"), cell("b"), cell("c", fail=True), cell("d")]
  assert grid.run_cells(todo, seeds=1, root=str(runs), workers=2) == 1  # c failed
  probes = {c["name"]: json.loads((runs / c["name"] / "probe.json").read_text()) for c in todo}
  groups = [sorted(g) for g in grid.worker_cpus(2)]
  assert all(p["cpus"] in groups and p["prealloc"] == "false" for p in probes.values())
  # Two at once: the first two cells overlap in time.
  assert probes["b"]["start"] < probes["a"]["end"] and probes["a"]["start"] < probes["b"]["end"]
  out = capsys.readouterr()
  assert "running the other 4 with 2 workers" in out.out and "1 cell(s) failed: c" in out.err
  # Run again: the finished cells are skipped, the failed one runs again; past --stop-after,
  # no cell starts.
  before = (runs / "c" / "probe.json").read_text()
  assert grid.run_cells(todo, seeds=1, root=str(runs), workers=2, stop_after=0) == 0
  out = capsys.readouterr().out
  assert "3 of 4 cells done" in out and "(--stop-after 0): 1 cell(s) left" in out
  assert (runs / "c" / "probe.json").read_text() == before
  with pytest.raises(SystemExit):
    grid.main(["run", "--root", str(runs), "--workers", "0"])


def test_grid_queue_record_archives_finished_cells_and_regenerates_the_reports(tmp_path):
  queue = experiment_scripts.load("grid_queue")
  runs, results = tmp_path / "runs", tmp_path / "results"
  _write(runs, "main/hard/random_ipc1_e301", _result("random", 1, "small_data", "hard", [48.0] * 5))
  (runs / "main" / "hard" / "herding_ipc1_e301").mkdir(parents=True)  # unfinished: no results
  sweep = runs / "sre2l_recover" / "validation" / "fmnist" / "soft" / "default_ipc10"
  _write(sweep.parent, sweep.name, _result("sre2l", 10, "soft", "teacher", [80.0] * 3))
  assert queue.main(["record", "--root", str(runs), "--results", str(results)]) == 0
  assert (results / "grid_runs" / "main" / "hard" / "random_ipc1_e301" / "results.json").exists()
  assert not (results / "grid_runs" / "main" / "hard" / "herding_ipc1_e301").exists()
  assert not (results / "grid_runs" / "sre2l_recover").exists()  # the sweep has its own archive
  assert (results / "sre2l_recover_runs" / "validation" / "fmnist" / "soft" / "default_ipc10"
          / "results.json").exists()
  assert "| Random | 48.00 ± 0.50 | — | — |" in (results / "fmnist.md").read_text()
  assert not (results / "cifar10.md").exists()  # no CIFAR-10 cell yet: no report
  assert "default" in (results / "sre2l_recover.md").read_text()
  with pytest.raises(SystemExit):
    queue.main(["record", "--root", str(tmp_path / "nothing"), "--results", str(results)])
  # An interrupted sweep cell's finished students are recorded too, and a new machine's root
  # gets every archived cell back (what scripts/grid_queue.sh does before it runs).
  _unfinished(runs / "sre2l_recover", "validation/fmnist/hard/default_ipc10", [0, 1])
  assert queue.main(["record", "--root", str(runs), "--results", str(results)]) == 0
  assert (results / "sre2l_recover_runs/validation/fmnist/hard/default_ipc10/runs/seed_1.json"
          ).exists()
  new = tmp_path / "new_machine"
  assert queue.main(["restore", "--root", str(new), "--results", str(results)]) == 0
  assert (new / "main/hard/random_ipc1_e301/results.json").exists()
  assert (new / "sre2l_recover/validation/fmnist/soft/default_ipc10/results.json").exists()
  assert (new / "sre2l_recover/validation/fmnist/hard/default_ipc10/runs/seed_0.json").exists()
  with pytest.raises(SystemExit):  # a mistyped archive is refused, not "restored 0 cells"
    queue.main(["restore", "--root", str(new), "--results", str(tmp_path / "no_results")])


def test_a_cell_is_short_of_the_issue_grid_by_selections_or_students(grid, tmp_path):
  def pooled(method, ipc, students, selections):
    rs = [dict(_result(method, ipc, "small_data", "hard", [50.0] * students),
               selection_seed=s, _path=f"{tmp_path}/main/hard/{method}_ipc{ipc}_e301"
               + (f"_sel{s}" if s else "") + "/results.json") for s in range(selections)]
    return grid.pool_selections(rs)[0]

  assert not grid._short(pooled("random", 1, 5, 5), "random")  # 25 students, 5 selections
  assert grid._short(pooled("random", 1, 5, 3), "random")  # 2 selections missing
  assert grid._short(pooled("random", 10, 4, 2), "random")  # a student missing per selection
  assert not grid._short(pooled("herding", 10, 5, 1), "herding")  # herding draws nothing
  assert grid._short(pooled("herding", 50, 3, 1), "herding")
  # The report says how many cells are short; the cells themselves say by how much.
  for r in (pooled("random", 1, 5, 5), pooled("herding", 1, 3, 1)):
    sub = os.path.relpath(os.path.dirname(r["_path"]), tmp_path)
    for s in r.get("_selection_seeds", [0]):
      one = _result(r["method"], 1, "small_data", "hard",
                    [50.0] * (len(r["runs"]) // len(r.get("_selection_seeds", [0]))))
      _write(tmp_path / "runs", sub + (f"_sel{s}" if s else ""), one | dict(selection_seed=s))
  md = grid.report_markdown(grid.pool_selections(
      [dict(grid.report.load_result(p), _path=p,
            _variant=os.path.basename(os.path.dirname(p)).rsplit("_ipc", 1)[0].split("_sel")[0])
       for p in grid.report._find(str(tmp_path / "runs"))]))
  assert "2 of the 54 cells of the full grid" in md and "1 ran with fewer students" in md
  assert "25 students over 5 selections" in md and "(3 seeds)" in md


def test_the_queue_cuts_cifar10_ipc50_to_3_students_and_nothing_else(grid):
  queue = experiment_scripts.load("grid_queue")
  cut = [(n, a) for n, a in queue.STEPS if "--seeds" in a]
  assert cut and all(a[a.index("--dataset") + 1] == "cifar10" and a[a.index("--ipcs") + 1] == "50"
                     and a[a.index("--seeds") + 1] == "3" for _, a in cut)
  methods = {m for _, a in cut for m in a[a.index("--methods") + 1].split(",")}
  # every method's CIFAR-10 IPC 50 cell, SRe2L and the diagnostic rows too
  assert methods == set(grid.MAIN_METHODS) | set(grid.VARIANTS)


def test_the_second_cuts_cells_run_last_and_no_cell_is_in_two_steps(grid, tmp_path):
  queue = experiment_scripts.load("grid_queue")
  arg = lambda a, flag: a[a.index(flag) + 1] if flag in a else None  # noqa: E731
  # Only the variant rows' IPC 50 cells (not the issue's grid) come after the second cut.
  diagnostic = queue.STEPS[-2:]
  assert all(arg(a, "--methods") == "rded_tile,rded_k1" and arg(a, "--ipcs") == "50"
             and arg(a, "--protocols") is None for _, a in diagnostic)
  last = queue.STEPS[-4:-2]
  assert [arg(a, "--dataset") for _, a in last] == ["fmnist", "cifar10"]
  assert all(arg(a, "--methods") == "el2n_hard,kcenter" and arg(a, "--ipcs") == "50"
             and arg(a, "--protocols") == "soft" for _, a in last)
  assert not any(m in arg(a, "--methods").split(",") and arg(a, "--ipcs") == "50"
                 and arg(a, "--protocols") in (None, "soft")
                 for _, a in queue.STEPS[:-4] if _ == "grid" for m in queue.CUT_SECOND)
  plans = [(a, queue.RUNNERS[runner].plan(queue.step_argv(runner, a, str(tmp_path)))[0])
           for runner, a in queue.STEPS]
  workdirs = [c["workdir"] for _, cells in plans for c in cells]
  # The recover sweeps (2 datasets x 11 settings x 2 label kinds), 228 cells of the issue's
  # grid, RDED's tile-view rows at hard labels (5 + 2 + 2 selections at IPC 1 / 10 / 50 on
  # each dataset) and RDED at factor 1 at both label kinds.
  assert len(workdirs) == len(set(workdirs)) == 2 * 11 * 2 + 228 + 2 * (5 + 2 + 2) * 3
  assert sum("rded_tile_" in w for w in workdirs) == 18
  assert not any("/soft/rded_tile" in w for w in workdirs)
  assert sum("/soft/rded_k1_" in w for w in workdirs) == sum("/hard/rded_k1_" in w
                                                             for w in workdirs) == 18


def _unfinished(root, sub, students, manifest="{}"):
  """An interrupted cell: config.json, the finished students, the set's manifest, a checkpoint."""
  cell = root / sub
  (cell / "runs").mkdir(parents=True)
  (cell / "compressed").mkdir()
  (cell / "checkpoints" / "seed_9").mkdir(parents=True)
  (cell / "config.json").write_text("{}")
  (cell / "compressed" / "manifest.json").write_text(manifest)
  (cell / "compressed" / "0.png").write_bytes(b"png")
  for s in students:
    (cell / "runs" / f"seed_{s}.json").write_text(json.dumps(dict(seed=s, top1=70.0 + s)))
  return cell


def test_unfinished_cells_keep_their_finished_students_across_machines(grid, archive, tmp_path,
                                                                         capsys):
  """A machine that stops mid-cell loses its running student only: `archive` keeps the
  unfinished cells' finished students (small JSON), a new machine's `restore` puts them back,
  and the cell's finished results.json replaces them in the archive."""
  root, to, new = tmp_path / "runs", tmp_path / "archive", tmp_path / "new_machine"
  _write(root, "main/hard/random_ipc10_e301",
         _result("random", 10, "small_data", "hard", [75.0] * 5))
  cell = _unfinished(root, "main/hard/herding_ipc50_e301", [0, 1])
  _unfinished(root, "main/hard/ccs_ipc50_e301", [])  # no student finished: nothing to keep
  _unfinished(root, ".jax_cache/x/main/hard/kcenter_ipc50_e301", [0])  # not a grid cell
  assert grid.main(["archive", "--root", str(root), "--to", str(to)]) == 0
  out = capsys.readouterr().out
  assert "1 finished cell(s)" in out and "1 unfinished cell(s) with 2 finished student(s)" in out
  assert sorted(str(p.relative_to(to)) for p in to.rglob("*") if p.is_file()) == [
      "main/hard/herding_ipc50_e301/compressed/manifest.json",
      "main/hard/herding_ipc50_e301/config.json",
      "main/hard/herding_ipc50_e301/runs/seed_0.json",
      "main/hard/herding_ipc50_e301/runs/seed_1.json",
      "main/hard/random_ipc10_e301/results.json"]
  # A student the machine dropped since (its set came out different) leaves the archive too.
  (cell / "runs" / "seed_1.json").unlink()
  archive.archive_unfinished(str(root), str(to))
  assert not (to / "main/hard/herding_ipc50_e301/runs/seed_1.json").exists()
  (cell / "runs" / "seed_1.json").write_text(json.dumps(dict(seed=1, top1=71.0)))
  archive.archive_unfinished(str(root), str(to))
  # A new machine: both cells come back; the status counts the kept students, not as done.
  assert sorted(archive.restore(str(to), str(new))) == ["main/hard/herding_ipc50_e301",
                                                     "main/hard/random_ipc10_e301"]
  assert (new / "main/hard/herding_ipc50_e301/runs/seed_1.json").exists()
  todo = [dict(workdir=str(new / "main/hard/herding_ipc50_e301"), ipc=50)]
  assert grid.progress(todo, 5, None) == dict(done=0, partial=1, left=0, total=1,
                                              eta_seconds=None, eta_alone_seconds=None)
  # A cell the machine has started is its own: restore leaves it alone.
  (new / "main/hard/herding_ipc50_e301/runs/seed_0.json").unlink()
  assert archive.restore(str(to), str(new)) == []
  assert not (new / "main/hard/herding_ipc50_e301/runs/seed_0.json").exists()
  # The cell finishes: its results.json replaces what was kept of it.
  _write(root, "main/hard/herding_ipc50_e301",
         _result("herding", 50, "small_data", "hard", [80.0] * 5), replace=True)
  archive.archive(str(root), str(to))
  assert sorted(p.name for p in (to / "main/hard/herding_ipc50_e301").iterdir()) == [
      "results.json"]
  assert archive.archive_unfinished(str(root), str(to)) == []


def _dry_run_cells(out: str) -> dict[str, list[str]]:
  """`run --dry-run`'s output -> workdir: its main.py arguments but --workdir."""
  lines = out.splitlines()
  return {head.split("-> ")[1]: [a for a in argv.split() if not a.startswith("--workdir=")]
          for head, argv in zip(lines[::2], lines[1::2])}


def test_rded_tile_view_reruns_rdeds_sets_with_the_tile_view_at_hard_labels_only(grid, tmp_path,
                                                                                 capsys):
  assert grid.main(["run", "--root", str(tmp_path), "--ipcs", "1", "--methods", "rded,rded_tile",
                    "--selection-seeds", "1:2", "--dry-run"]) == 0
  out = capsys.readouterr().out
  cells = _dry_run_cells(out)
  hard = os.path.join(str(tmp_path), "main", "hard")
  assert sorted(b for b in map(os.path.basename, cells) if b.startswith("rded_tile")) == [
      "rded_tile_ipc1_e301", "rded_tile_ipc1_e301_sel1"]  # no soft-label cell
  for sel in ("", "_sel1"):  # RDED's own cell's flags, and the tile view: the same sets
    tile, plain = cells[os.path.join(hard, f"rded_tile_ipc1_e301{sel}")], cells[
        os.path.join(hard, f"rded_ipc1_e301{sel}")]
    assert sorted(tile) == sorted(plain + ["--config.eval.augment=tile_dsa"])
  assert "configs/rded.py " in out
  assert not os.listdir(tmp_path)
  with pytest.raises(SystemExit):  # nothing to run: refused, not silently empty
    grid.main(["run", "--root", str(tmp_path), "--methods", "rded_tile", "--protocols", "soft"])
  assert "runs at hard labels only" in capsys.readouterr().err


def test_report_shows_the_tile_view_row_beside_rded_and_in_finding_2(grid, tmp_path):
  root = tmp_path / "runs"
  hard = lambda m, t, augment="dsa": _result(m, 1, "small_data", "hard", [t] * 5,  # noqa: E731
                                             augment=augment)
  _write(root, "main/hard/herding_ipc1_e301", hard("herding", 68.0))
  _write(root, "main/hard/rded_ipc1_e301", hard("rded", 12.0))
  # results.json of a tile-view cell names RDED; its directory names the row.
  _write(root, "main/hard/rded_tile_ipc1_e301", hard("rded", 64.0, "tile_dsa"))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  lines = md.splitlines()
  row = next(line for line in lines if line.startswith("| RDED (tile view) |"))
  assert "64.00 ± 0.50 (augment tile_dsa)" in row
  assert "| RDED | 12.00 ± 0.50 |" in md
  assert "*RDED (tile view)* is a diagnostic row, not a method of the grid" in md
  assert "*k-Center* starts" not in md  # a row's note only under a table that has the row
  # Not one of the issue grid's cells: two of its 54 ran.
  assert f"**Reduced grid**: 2 of the {len(grid.MAIN_METHODS) * 3 * 2} cells" in md
  assert "SRe2L) ran" in md  # the selection-seeded methods the header names: the grid's own
  findings = md.split("## Findings")[1].split("## Storage")[0]
  assert ("IPC 1: best pruning Herding 68.00 ± 0.50 (5 students) vs best distillation RDED "
          "(tile view) 64.00 ± 0.50 (5 students): pruning ahead by 4.00 (pooled std 0.50)\n"
          "    - under the protocol's own augmentation pruning is ahead of RDED 12.00 ± 0.50 "
          "(5 students) by 56.00 (pooled std 0.50): without the tile view the finding would "
          "hold here\n"
          "    - the same sets: RDED 12.00 ± 0.50 (5 students) under the protocol's augmentation, "
          "64.00 ± 0.50 (5 students) with the tile view") in findings


def test_finding_2_states_the_protocols_own_view_where_a_diagnostic_row_decides(grid, tmp_path):
  """The tile view beats pruning, so the verdict is 'not reproduced'; the line still says that
  under the protocol's own augmentation pruning is ahead of SRe2L and RDED."""
  root = tmp_path / "runs"
  hard = lambda m, t, augment="dsa": _result(m, 1, "small_data", "hard", [t] * 5,  # noqa: E731
                                             augment=augment)
  _write(root, "main/hard/el2n_easy_ipc1_e301", hard("el2n_easy", 23.0))
  _write(root, "main/hard/rded_ipc1_e301", hard("rded", 11.0))
  _write(root, "main/hard/sre2l_ipc1_e301", hard("sre2l", 24.0))
  _write(root, "main/hard/rded_tile_ipc1_e301", hard("rded", 30.0, "tile_dsa"))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  findings = md.split("## Findings")[1].split("## Storage")[0]
  assert "(2) Under hard labels synthesised images collapse and pruning wins: not reproduced" \
      in findings
  assert ("pruning behind by 7.00 (pooled std 0.50)\n    - under the protocol's own augmentation "
          "pruning is ahead of RDED 11.00 ± 0.50 (5 students) by 12.00 (pooled std 0.50), "
          "behind SRe2L 24.00 ± 0.50 (5 students) by 1.00 (pooled std 0.50): without the tile "
          "view the finding would not hold here either") in findings


def test_rded_factor_1_runs_rdeds_config_at_k1_at_both_label_kinds(grid, tmp_path, capsys):
  """RDED's released 32 px recipe beside the grid's factor-2 RDED: the same config and seeds
  (so the same candidate draws), `combine.k=1`, hard and soft cells, several selections."""
  assert grid.main(["run", "--root", str(tmp_path), "--ipcs", "1", "--methods", "rded,rded_k1",
                    "--selection-seeds", "1:2", "--dry-run"]) == 0
  out = capsys.readouterr().out
  cells = _dry_run_cells(out)
  for label, epochs in (("hard", 301), ("soft", 300)):
    for sel in ("", "_sel1"):
      d = os.path.join(str(tmp_path), "main", label)
      k1, plain = cells[os.path.join(d, f"rded_k1_ipc1_e{epochs}{sel}")], cells[
          os.path.join(d, f"rded_ipc1_e{epochs}{sel}")]
      assert sorted(k1) == sorted(plain + ["--config.combine.k=1"])
  assert not os.listdir(tmp_path)
  assert grid.main(["run", "--root", str(tmp_path), "--methods", "rded_k1", "--protocols",
                    "soft", "--ipcs", "1", "--dry-run"]) == 0  # a soft-only run is allowed


def test_rded_factor_1_is_a_distillation_row_of_the_findings(grid, tmp_path):
  """Under soft labels the factor-1 row is RDED as its authors run it on 32 px data: finding
  (1) compares random with it when it is the best distillation cell."""
  root = tmp_path / "runs"
  soft = lambda m, t: _result(m, 1, "soft", "teacher", [t] * 5)  # noqa: E731
  _write(root, "main/soft/random_ipc1_e301", soft("random", 30.0))
  _write(root, "main/soft/rded_ipc1_e301", soft("rded", 27.0))
  _write(root, "main/soft/rded_k1_ipc1_e301", soft("rded", 35.0))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  assert "| RDED (factor 1) | 35.00 ± 0.50 |" in md
  assert "*RDED (factor 1)* is RDED as its released scripts run it on 32 px data" in md
  findings = md.split("## Findings")[1].split("## Storage")[0]
  assert ("random 30.00 ± 0.50 (5 students) vs the best distillation cell RDED (factor 1) "
          "35.00 ± 0.50 (5 students): random behind by 5.00") in findings
  # ... and against every other distillation row, as the paper's benchmark ran them
  assert ("    - against the other distillation rows random is ahead of RDED 27.00 ± 0.50 "
          "(5 students) by 3.00 (pooled std 0.50)") in findings
  assert "(1) Under soft labels a random subset is about as good as distillation: not " \
      "reproduced" in findings


def test_the_report_reads_only_the_grids_cells_not_the_sweep_beside_them(grid, tmp_path):
  """The queue's run root also holds SRe2L's recover sweep (validation-split cells); a report of
  that root must not take them for grid cells (they once showed as a soft IPC-10 storage row)."""
  root = tmp_path / "runs"
  _write(root, "main/soft/random_ipc1_e300", _result("random", 1, "soft", "teacher", [74.0] * 5))
  sweep = dict(_result("sre2l", 10, "soft", "teacher", [80.0] * 3),
               storage=dict(image_bytes=60_000, soft_label_bytes=600_000))
  _write(root, "sre2l_recover/validation/fmnist/soft/default_ipc10", sweep)
  md = grid.write_report(str(root), str(tmp_path / "out"))
  assert "80.00" not in md and "| 10 |" not in md
  assert "| Random | 74.00 ± 0.50 |" in md


def test_report_names_the_teacher_and_flags_a_second_one(grid, tmp_path):
  root = tmp_path / "runs"
  teacher = dict(dir="~/.cache/dcjax/teachers/fashion_mnist-convnet-0123", top1=90.23,
                 top5=99.85, param_bytes=96552, model="convnet")
  soft = lambda m, t: _result(m, 1, "soft", "teacher", [70.0] * 5) | dict(teacher=t)  # noqa: E731
  _write(root, "main/soft/random_ipc1_e300", soft("random", teacher))
  # The same parameters under a cache key of another format: still one teacher.
  _write(root, "main/soft/herding_ipc1_e300", soft("herding", dict(teacher, dir="t/new-key")))
  # A hard cell's selection read the same teacher's features; a random one read none.
  _write(root, "main/hard/herding_ipc1_e301", _result("herding", 1, "small_data", "hard",
                                                      [50.0] * 5)
         | dict(feature_teacher=dict(name="fashion_mnist-convnet-0123", top1=90.23, top5=99.85)))
  _write(root, "main/hard/random_ipc1_e301", _result("random", 1, "small_data", "hard", [50.0] * 5))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  assert ("One teacher gave every soft label and every teacher-feature selection: `convnet`, "
          "top-1 90.23 %, top-5 99.85 % on the test split.") in md
  _write(root, "main/hard/pca_ipc10_e301", _result("el2n_easy", 10, "hard", "hard", [60.0] * 5)
         | dict(feature_teacher=dict(name="fashion_mnist-convnet-4567", top1=90.14, top5=99.85)))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  assert "come from 2 different teachers" in md and "One teacher" not in md
  assert "`convnet`, top-1 90.23 %, top-5 99.85 % on the test split in 3 cell(s)" in md
  assert "`convnet`, top-1 90.14 %, top-5 99.85 % on the test split in 1 cell(s)" in md
  # A second selection of a cell, relabelled by the other teacher, counts though pooled.
  _write(root, "main/soft/random_ipc1_e300_sel1", soft("random", dict(teacher, top1=90.14))
         | dict(selection_seed=1))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  assert "top-1 90.14 %, top-5 99.85 % on the test split in 2 cell(s)" in md


def test_report_names_the_score_files_by_their_bytes(grid, tmp_path):
  root = tmp_path / "runs"
  el2n = lambda m, sha, sel=0: (_result(m, 10, "small_data", "hard", [60.0] * 5)  # noqa: E731
                                | dict(score_file="$DCJAX_CACHE/scores/f.npz", score_sha256=sha,
                                       selection_seed=sel))
  _write(root, "main/hard/el2n_easy_ipc10_e301", el2n("el2n_easy", "aaaa"))
  _write(root, "main/hard/random_ipc10_e301", _result("random", 10, "small_data", "hard", [50.0]))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  assert "One score file gave every score selection (sha256 aaaa...)." in md
  # Another machine's file under the same name, in a second selection, and a record from
  # before the field existed: each named.
  _write(root, "main/hard/ccs_ipc10_e301", el2n("ccs", "bbbb"))
  _write(root, "main/hard/ccs_ipc10_e301_sel1", el2n("ccs", "aaaa", 1))
  _write(root, "main/hard/el2n_hard_ipc10_e301", el2n("el2n_hard", None))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  assert ("The score selections read these score files: sha256 aaaa... in 2 cell(s); sha256 "
          "bbbb... in 1 cell(s); not recorded in 1 cell(s)") in md


def test_report_names_the_batchnorm_teachers_sre2l_recovered_from(grid, tmp_path):
  root = tmp_path / "runs"
  bn = dict(name="fashion_mnist-convnet-c0e4", top1=90.12, top5=99.89)
  sre2l = lambda ipc, t, sel=0: (_result("sre2l", ipc, "small_data", "hard", [50.0] * 5)  # noqa: E731
                                 | dict(sre2l_teacher=t, selection_seed=sel))
  _write(root, "main/hard/sre2l_ipc10_e301", sre2l(10, bn))
  _write(root, "main/hard/random_ipc10_e301", _result("random", 10, "small_data", "hard", [50.0]))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  assert ("SRe2L recovered its images from one BatchNorm teacher (`sre2l.teacher`, test "
          "figures): top-1 90.12 %, top-5 99.89 % in 1 cell(s).") in md
  # A second selection pooled into the cell counts; a record from before the field (another
  # machine's teacher, unknown) is named as such, and the sentence then speaks of several.
  _write(root, "main/hard/sre2l_ipc10_e301_sel1", sre2l(10, bn, 1))
  _write(root, "main/hard/sre2l_ipc1_e301", sre2l(1, None))
  md = grid.write_report(str(root), str(tmp_path / "out"))
  assert ("SRe2L recovered its images from these BatchNorm teachers (`sre2l.teacher`, test "
          "figures): top-1 90.12 %, top-5 99.89 % in 2 cell(s); not recorded in 1 cell(s) (run "
          "before results.json held it).") in md
  # Only records from before the field: said so, no teacher counted.
  md = grid.report_markdown([dict(sre2l(1, None), _path="main/hard/sre2l_ipc1_e301/results.json")])
  assert ("SRe2L's cells do not record the BatchNorm teacher they recovered their images from: "
          "1 cell(s) (run before results.json held it).") in md
  # Without an SRe2L cell the report has no such sentence.
  md = grid.report_markdown([dict(r, _path="main/hard/x/results.json")
                             for r in [_result("random", 1, "small_data", "hard", [50.0])]])
  assert "BatchNorm teacher" not in md


def test_finding_3_and_the_storage_table_judge_the_same_median_image_size(grid, tmp_path):
  root = tmp_path / "runs"
  # IPC 1: PNG sizes 400, 500, 9000 B across the cells; 6.0 KB of labels is 12x the median
  # (500 B: holds) but under 1x the largest set, so the range is stated beside the verdict.
  for method, size in (("random", 400), ("herding", 500), ("rded", 9000)):
    r = _soft(_result(method, 1, "soft", "teacher", [70.0] * 5), 6000)
    r["storage"]["image_bytes"] = size
    _write(root, f"main/soft/{method}_ipc1_e301", r)
  md = grid.write_report(str(root), str(tmp_path / "out"))
  findings = md.split("## Findings")[1].split("## Storage")[0]
  assert "(3) Soft labels cost far more storage than the images (at least 10x): " \
         "reproduced.**" in findings
  assert ("IPC 1: soft labels 6.0 KB (301 epochs of labels) vs images 500 B (12.0x; 500 B is "
          "the median of the IPC's 3 stored sets, 400 B – 9.0 KB: 0.7x – 15.0x)") in findings
  assert "| 1 | 400 B – 9.0 KB | 6.0 KB | " in md and "| 12.0x |" in md


def test_a_gpu_run_sends_back_only_the_cache_entries_it_made(archive, tmp_path):
  """scripts/gpu_check.sh's grid step starts from the carried cache and returns what it added:
  finished entries only (a teacher with its teacher.json, a score file), none it was given."""
  cache, carried, out = tmp_path / "cache", tmp_path / "carried", tmp_path / "out"
  for base in (cache, carried):
    (base / "teachers" / "old").mkdir(parents=True)
    (base / "teachers" / "old" / "teacher.json").write_text("{}")
  (cache / "teachers" / "new").mkdir()
  (cache / "teachers" / "new" / "teacher.json").write_text("{}")
  (cache / "teachers" / "new" / "progress").write_text("step 3")  # training state: left behind
  (cache / "teachers" / "training").mkdir()  # unfinished: no teacher.json
  (cache / "scores").mkdir()
  (cache / "scores" / "s.npz").write_bytes(b"npz")
  made = archive.archive_caches(str(cache), str(out), already=str(carried))
  assert sorted(made) == ["scores/s.npz", "teachers/new"]
  assert not (out / "teachers" / "old").exists()
  assert sorted(os.listdir(out / "teachers" / "new")) == ["teacher.json"]
  assert archive.archive_caches(str(cache), str(out), already=str(carried)) == []


def test_an_ipc_without_a_findings_cells_says_so_beside_the_verdict(grid, tmp_path):
  """A verdict covers the IPCs that have its cells; an IPC with other cells only is listed as
  not measured yet, so 'reproduced' on one IPC does not read as every IPC's."""
  root = tmp_path / "runs"
  soft = lambda m, ipc, t: _result(m, ipc, "soft", "teacher", [t] * 5)  # noqa: E731
  _write(root, "main/soft/random_ipc1_e301", soft("random", 1, 76.0))
  _write(root, "main/soft/rded_ipc1_e301", soft("rded", 1, 76.2))
  _write(root, "main/soft/random_ipc10_e301", soft("random", 10, 80.0))  # no distillation cell
  md = grid.write_report(str(root), str(tmp_path / "out"))
  findings = md.split("## Findings")[1].split("## Storage")[0]
  first = findings.split("- **(1)")[1].split("- **(2)")[0]
  assert "about as good as distillation: reproduced.**" in first
  assert "  - IPC 1: random 76.00" in first and "  - IPC 10: not measured yet" in first


def test_the_storage_range_counts_each_selections_set_once(grid, tmp_path):
  """A pooled cell's selections stored other sets (other PNG sizes): the range reads each of
  them, and a method's hard and soft cells (one set) count once."""
  root = tmp_path / "runs"
  for sel, size in ((0, 5000), (1, 4000)):
    suffix = f"_sel{sel}" if sel else ""
    for labels, protocol in (("hard", "small_data"), ("teacher", "soft")):
      r = _result("random", 1, protocol, labels, [50.0] * 5) | dict(selection_seed=sel)
      r = _soft(r, 60_000) if labels == "teacher" else r
      r["storage"]["image_bytes"] = size
      _write(root, f"main/{'hard' if labels == 'hard' else 'soft'}/random_ipc1_e301{suffix}", r)
  md = grid.write_report(str(root), str(tmp_path / "out"))
  assert "| 1 | 4.0 KB – 5.0 KB | 60.0 KB |" in md
  assert "the median of the IPC's 2 stored sets" in md
