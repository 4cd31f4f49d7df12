"""experiments/pca_study.py: the cells it would run."""

import os
import re

import pytest

import experiment_scripts


@pytest.fixture(scope="module")
def study():
  return experiment_scripts.load("pca_study")


def test_gap_cells_pair_each_kernel_with_the_resampled_test_split(study, tmp_path, capsys):
  assert study.main(["run", "--root", str(tmp_path), "--datasets", "fmnist,cifar10",
                     "--ipcs", "10", "--parts", "gap", "--dry-run"]) == 0
  out = capsys.readouterr().out
  per_dataset = 1 + 5 + 1 + 4  # full-res, each kernel, area->lanczos3, two kernels x 2 strengths
  assert out.count("running ->") == 2 * per_dataset
  assert "--config.data.test_resample_size=14" in out and "test_resample_size=16" in out
  assert "configs/pca.py:full,cifar10_shared" in out
  assert "--config.combine.resample=area --config.eval.resample=lanczos3" in out
  assert "--config.eval.sharpen=2.0" in out
  assert out.count("--config.data.validation_per_class=500") == 2 * per_dataset
  assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_later_parts_use_the_chosen_kernel_and_prune(study, tmp_path, capsys):
  assert study.main(["run", "--root", str(tmp_path), "--datasets", "fmnist", "--ipcs", "1",
                     "--parts", "prune,k,augment,ladder", "--kernel", "lanczos3",
                     "--sharpen", "1", "--prune", "herding", "--split", "test", "--seeds", "5",
                     "--dry-run"]) == 0
  out = capsys.readouterr().out
  # k: 1, 2, 3; augment: two tile_crop scales and tile_dsa_noflip (its tile_dsa row is k = 2's
  # run); ladder: 3
  assert out.count("running ->") == 2 * len(study.PRUNES) + 3 + 3 + 3
  assert "--config.eval.augment=tile_dsa_noflip" in out
  assert "PCA_herding_tile_dsa_lanczos3" not in out
  assert "validation_per_class" not in out and "--config.seeds=5" in out
  assert "--config.pca.prune=herding --config.combine.k=3" in out
  assert "--config.data.test_resample_size=9" in out  # 28 // 3
  k1 = next(line for line in out.splitlines() if "--config.combine.k=1 " in line
            and "pca.prune" in line)
  assert "test_resample_size" not in k1  # the test split at its own size is not resampled
  assert "--config.eval.crop_scale=(0.08,1.0)" in out
  assert "k_4" not in out
  assert study.main(["run", "--root", str(tmp_path), "--datasets", "cifar10", "--ipcs", "10",
                     "--parts", "augment", "--view-k", "3", "--dry-run"]) == 0
  v3 = capsys.readouterr().out
  assert v3.count("running ->") == 3 and v3.count("--config.combine.k=3 ") == 3
  assert "PCA_el2n_easy_k_3_tile_dsa_noflip_linear_ipc10" in v3
  with pytest.raises(SystemExit):
    study.main(["run", "--root", str(tmp_path / "bad"), "--parts", "augment", "--view-k", "1"])
  assert "--view-k must be >= 2" in capsys.readouterr().err
  assert study.main(["run", "--root", str(tmp_path), "--datasets", "cifar10", "--ipcs", "1",
                     "--parts", "k", "--ks", "4", "--kernel", "lanczos3", "--dry-run"]) == 0
  k4 = capsys.readouterr().out
  assert k4.count("running ->") == 1 and "--config.combine.k=4" in k4
  assert "--config.data.test_resample_size=8" in k4  # 32 // 4
  for bad in ("0", "abc", "2,", ""):
    with pytest.raises(SystemExit):
      study.main(["run", "--root", str(tmp_path / "bad"), "--parts", "k", "--ks", bad])
    assert "--ks takes comma-separated integers >= 1" in capsys.readouterr().err
  assert not (tmp_path / "bad").exists()
  assert "--config.data.image_size=56" in out and "--config.scores.image_size=28" in out
  assert "PCA_herding_k_3_lanczos3_sharpen_1_ipc1" in out
  assert "P_herding_56px_ipc1" in out and "PCA_herding_56px_lanczos3_sharpen_1_ipc1" in out
  assert "--config.method=herding --config.combine.k=1" in out
  with pytest.raises(SystemExit):
    study.main(["run", "--root", str(tmp_path), "--parts", "gap,magic"])


def _result(method, ipc, top1s, *, resampled=None, k=1, prune=None, created="2026-12-03T10:00",
            kernel="linear"):
  n = len(top1s)
  mean = sum(top1s) / n
  return dict(
      method=method, dataset="fashion_mnist", ipc=ipc, num_images=10 * ipc, combine_k=k,
      protocol="small_data", model="convnet", top1_mean=mean, top1_std=0.5, top5_mean=99.0,
      top5_std=0.1, runs=[dict(seed=s, top1=t, top5=99.0) for s, t in enumerate(top1s)],
      storage=dict(image_bytes=500 * ipc), test_split="fashion_mnist validation",
      test_examples=5000, created=created,
      recipe=dict(epochs=301, augment="tile_dsa" if k > 1 else "dsa", labels="hard"),
      resampled_test=(dict(size=14, down="linear", up="linear", top1_mean=resampled,
                           top1_std=0.4) if resampled is not None else None),
      config=dict(combine=dict(k=k, resample=kernel), eval=dict(resample=kernel),
                  pca=dict(prune=prune)),
      environment=dict(backend="cpu", machine="x86_64", jax="0.10.2"))


def test_report_tables_the_gap_and_the_prune_choices_with_figures(study, tmp_path):
  import json
  root = tmp_path / "runs"
  cells = {
      "validation/fmnist/gap/random_full-res_ipc10": _result("random", 10, [75.0, 76.0, 77.0],
                                                             created="2026-12-03T09:00"),
      "validation/fmnist/gap/random_2x2_linear_ipc10": _result(
          "random", 10, [69.0, 70.0, 71.0], resampled=80.5, k=2),
      "validation/fmnist/prune/herding_ipc10": _result("herding", 10, [79.0] * 3),
      "validation/fmnist/prune/PCA_herding_linear_ipc10": _result("pca", 10, [78.0] * 3, k=2,
                                                                  prune="herding"),
      # The kernel chosen at IPC 1 differs from IPC 10's: still one row per P.
      "validation/fmnist/prune/PCA_herding_area_ipc1": _result("pca", 1, [60.0] * 3, k=2,
                                                               prune="herding", kernel="area"),
  }
  for sub, r in cells.items():
    (root / sub).mkdir(parents=True)
    (root / sub / "results.json").write_text(json.dumps(r))
  import pca_study_report
  md = pca_study_report.write_report(str(root), str(tmp_path / "out"))
  lines = md.splitlines()
  gap_rows = [line for line in lines if line.startswith("| random")]
  assert gap_rows[0].startswith("| random full-res | random, k=1, dsa | 76.00 ± 0.50 | — | — |")
  assert "| 70.00 ± 0.50 | 80.50 ± 0.40 | +10.50 |" in gap_rows[1]
  pca_rows = [line for line in lines if line.startswith("| PCA herding |")]
  assert pca_rows == ["| PCA herding | IPC 1: pca[herding], k=2, tile_dsa, area↓ area↑; IPC 10: "
                      "pca[herding], k=2, tile_dsa, linear↓ linear↑ | 60.00 ± 0.50 | — | — | "
                      "78.00 ± 0.50 | — | — |"]
  assert "| — | — | — |" not in gap_rows[0]  # IPC 10 only in the gap part
  for png in ("pca_study_gap.png", "pca_study_acc_vs_ipc.png"):
    assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({png})" in md
  assert (tmp_path / "out" / "pca_study.md").read_text() == md


def test_report_puts_pca_against_the_best_baseline_on_test(study, tmp_path):
  import json
  root = tmp_path / "runs"
  cells = {
      "test/fmnist/prune/herding_ipc10": _result("herding", 10, [79.0, 80.0, 81.0, 80.0, 80.0]),
      "test/fmnist/prune/random_ipc10": _result("random", 10, [75.0] * 5),
      "test/fmnist/prune/PCA_herding_nearest_ipc10": _result(
          "pca", 10, [79.0] * 5, k=2, prune="herding", kernel="nearest"),
      "test/fmnist/prune/herding_ipc1": _result("herding", 1, [66.0] * 5),
      "test/fmnist/prune/PCA_herding_area_ipc1": _result("pca", 1, [70.5] * 5, k=2,
                                                         prune="herding", kernel="area"),
      # configs/pca.py's IPC-1 view (VALIDATED), tested later in the augment part: listed first
      # and marked, though not the higher figure.
      "test/fmnist/augment/PCA_herding_tile_dsa_noflip_area_ipc1": _result(
          "pca", 1, [70.0] * 5, k=2, prune="herding", kernel="area"),
      # The k part on test: listed; the same P, kernel and view at another k is not the
      # validated setting (VALIDATED holds k).
      "test/fmnist/k/PCA_herding_k_3_area_ipc1": _result("pca", 1, [71.0] * 5, k=3,
                                                         prune="herding", kernel="area"),
  }
  for sub in ("augment/PCA_herding_tile_dsa_noflip_area_ipc1", "k/PCA_herding_k_3_area_ipc1"):
    cells["test/fmnist/" + sub]["recipe"]["augment"] = "tile_dsa_noflip"
  for sub, r in cells.items():
    (root / sub).mkdir(parents=True)
    (root / sub / "results.json").write_text(json.dumps(r))
  import pca_study_report
  out = tmp_path / "out"
  out.mkdir()
  (out / pca_study_report.EARLIER).write_text("# frozen\n")
  md = pca_study_report.write_report(str(root), str(out))
  rows = [line for line in md.splitlines() if line.startswith("| Fashion-MNIST |")]
  assert rows == [
      "| Fashion-MNIST | 1 | pca[herding], k=2, tile_dsa_noflip, area↓ area↑ (configs/pca.py) | "
      "70.00 ± 0.50 | herding (1 compared) | 66.00 ± 0.50 | +4.00 | yes |",
      "| Fashion-MNIST | 1 | pca[herding], k=3, tile_dsa_noflip, area↓ area↑ | 71.00 ± 0.50 | "
      "herding (1 compared) | 66.00 ± 0.50 | +5.00 | yes |",
      "| Fashion-MNIST | 1 | pca[herding], k=2, tile_dsa, area↓ area↑ | 70.50 ± 0.50 | herding "
      "(1 compared) | 66.00 ± 0.50 | +4.50 | yes |",
      "| Fashion-MNIST | 10 | pca[herding], k=2, tile_dsa, nearest↓ nearest↑ (configs/pca.py) | "
      "79.00 ± 0.50 | herding (2 compared) | 80.00 ± 0.50 | -1.00 | no |"]
  assert f"]({pca_study_report.EARLIER})" in md

  # The archive keeps results.json alone, at the report's layout; the runner skips it again.
  (root / "test/fmnist/prune/herding_ipc10/checkpoints").mkdir()
  with pytest.raises(SystemExit):  # a mistyped root is refused, not "0 cells archived"
    study.main(["archive", "--root", str(tmp_path / "no_such_runs"), "--to", str(tmp_path / "x")])
  assert not (tmp_path / "x").exists()
  assert study.main(["archive", "--root", str(root), "--to", str(tmp_path / "kept")]) == 0
  kept = sorted(p.relative_to(tmp_path / "kept").as_posix()
                for p in (tmp_path / "kept").rglob("*") if p.is_file())
  assert kept == sorted(f"{sub}/results.json" for sub in cells)
  assert {r["_part"] for r in pca_study_report.load(str(tmp_path / "kept"))} == {"prune", "augment",
                                                                              "k"}
  import fmnist_grid
  assert fmnist_grid._finished_seeds(str(tmp_path / "kept/test/fmnist/prune/random_ipc10")) == 5


def test_every_step_of_the_queue_script_names_cells_the_study_has(study, tmp_path, capsys):
  import shlex
  text = (study.ROOT_DIR + "/scripts/pca_study_queue.sh")
  with open(text, encoding="utf-8") as f:
    lines = f.read().replace("\\\n", " ").splitlines()
  variables = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z]+=\"", line))
  steps = [line for line in lines if line.startswith("step ")]
  assert len(steps) >= 5
  for line in steps:
    for name, value in variables.items():
      line = line.replace(f"${name}", value.strip('"'))  # also inside a longer "..." list
    args = shlex.split(line)[1:]
    assert study.main(["run", "--root", str(tmp_path), *args, "--dry-run"]) == 0, line
  assert "running ->" in capsys.readouterr().out


def test_report_augment_table_borrows_the_k2_cell_as_its_tile_dsa_row(study, tmp_path):
  import json
  root = tmp_path / "runs"
  crop = _result("pca", 10, [77.0] * 3, k=2, prune="herding", kernel="nearest")
  crop["recipe"]["augment"] = "tile_crop"
  crop["config"]["eval"]["crop_scale"] = [0.08, 1.0]
  cells = {
      "validation/fmnist/k/PCA_herding_k_1_nearest_ipc10": _result(
          "pca", 10, [78.0] * 3, prune="herding", kernel="nearest"),
      "validation/fmnist/k/PCA_herding_k_2_nearest_ipc10": _result(
          "pca", 10, [79.5] * 3, k=2, prune="herding", kernel="nearest"),
      "validation/fmnist/augment/PCA_herding_tile_crop_0.08-1_nearest_ipc10": crop,
  }
  for sub, r in cells.items():
    (root / sub).mkdir(parents=True)
    (root / sub / "results.json").write_text(json.dumps(r))
  import pca_study_report
  md = pca_study_report.write_report(str(root), str(tmp_path / "out"))
  augment = md.split("(d) The training view")[1]
  assert "| PCA herding tile dsa | pca[herding], k=2, tile_dsa, nearest↓ nearest↑ | 79.50" in augment
  assert "| PCA herding tile crop 0.08-1 | pca[herding], k=2, tile_crop, nearest↓ nearest↑, " \
         "scale 0.08-1 | 77.00" in augment
  assert "k 1" not in augment  # only the k = 2 cell is borrowed
  # Views run at the validated k (--view-k 3) borrow the k part's k = 3 cell as their tile_dsa.
  crop3 = json.loads(json.dumps(crop))
  crop3["combine_k"] = crop3["config"]["combine"]["k"] = 3
  for sub, r in {"validation/fmnist/k/PCA_herding_k_3_nearest_ipc10": _result(
                     "pca", 10, [80.5] * 3, k=3, prune="herding", kernel="nearest"),
                 "validation/fmnist/augment/PCA_herding_k_3_tile_crop_0.08-1_nearest_ipc10":
                     crop3}.items():
    (root / sub).mkdir(parents=True)
    (root / sub / "results.json").write_text(json.dumps(r))
  augment = pca_study_report.write_report(str(root), str(tmp_path / "out")).split(
      "(d) The training view")[1].split("\n## ")[0]
  assert "| PCA herding k 3 tile dsa | pca[herding], k=3, tile_dsa, nearest↓ nearest↑ | 80.50" \
      in augment
  assert "| PCA herding k 3 tile crop 0.08-1 | pca[herding], k=3, tile_crop" in augment
  assert "PCA herding tile dsa | pca[herding], k=2" in augment
  # The same setting under a second kernel (a later kernel check): both keep their own row in
  # the k table, and the views still borrow the cell of their own kernel.
  (root / "validation/fmnist/k/PCA_herding_k_3_lanczos3_ipc10").mkdir(parents=True)
  (root / "validation/fmnist/k/PCA_herding_k_3_lanczos3_ipc10/results.json").write_text(
      json.dumps(_result("pca", 10, [81.5] * 3, k=3, prune="herding", kernel="lanczos3")))
  md = pca_study_report.write_report(str(root), str(tmp_path / "out"))
  k_part = md.split("(c) Tiles per side k")[1].split("\n### ")[0]
  assert "| PCA herding k 3 nearest | pca[herding], k=3, tile_dsa, nearest↓ nearest↑ | 80.50" \
      in k_part
  assert "| PCA herding k 3 lanczos3 | pca[herding], k=3, tile_dsa, lanczos3↓ lanczos3↑ | 81.50" \
      in k_part
  augment = md.split("(d) The training view")[1].split("\n## ")[0]
  assert "| PCA herding k 3 tile dsa | pca[herding], k=3, tile_dsa, nearest↓ nearest↑ | 80.50" \
      in augment and "81.50" not in augment


def test_archive_keeps_the_tile_figure_set_and_the_report_draws_it_from_the_archive(study,
                                                                                     tmp_path):
  """What PCA stores: `archive` copies the compressed set of each dataset's tile-figure cell
  (combined tiles, largest IPC, test before validation, configs/pca.py's validated setting
  first, then the prune part) and nothing else of a
  workdir, so `report --root <archive>` still draws pca_study_tiles.png."""
  import json
  import numpy as np
  import pca_study_report
  from dcjax.data import store
  root = tmp_path / "runs"
  cells = {  # cell -> (result, with a compressed set)
      "validation/fmnist/k/PCA_herding_k_1_nearest_ipc10": (
          _result("pca", 10, [76.0] * 3, prune="herding", kernel="nearest"), True),
      "validation/fmnist/k/PCA_herding_k_2_nearest_ipc10": (
          _result("pca", 10, [81.0] * 3, k=2, prune="herding", kernel="nearest"), True),
      "validation/fmnist/k/PCA_herding_k_2_area_ipc1": (
          _result("pca", 1, [70.0] * 3, k=2, prune="herding", kernel="area"), True),
      # Not the validated P at IPC 10: second to the k part's validated cell.
      "validation/fmnist/prune/PCA_random_nearest_ipc10": (
          _result("pca", 10, [78.0] * 3, k=2, prune="random", kernel="nearest"), True),
      "test/fmnist/prune/PCA_herding_nearest_ipc10": (  # its set was lost with its machine
          _result("pca", 10, [80.0] * 5, k=2, prune="herding", kernel="nearest"), False),
  }
  rng = np.random.default_rng(0)
  for sub, (r, with_set) in cells.items():
    (root / sub).mkdir(parents=True)
    (root / sub / "results.json").write_text(json.dumps(r))
    if with_set:
      n = 10 * r["ipc"]
      store.write_compressed(root / sub / "compressed",
                             rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                             np.repeat(np.arange(10), r["ipc"]), [[i] for i in range(n)],
                             dataset="fashion_mnist", split="train", method="pca", config={},
                             num_classes=10)
  picks = pca_study_report.tile_cells(pca_study_report.load(str(root)))
  assert {d: os.path.relpath(f, root) for d, (_, f) in picks.items()} == {
      "fmnist": "validation/fmnist/k/PCA_herding_k_2_nearest_ipc10/compressed"}
  kept = tmp_path / "kept"
  assert study.main(["archive", "--root", str(root), "--to", str(kept)]) == 0
  sets = sorted(p.parent.relative_to(kept).as_posix() for p in kept.rglob("manifest.json"))
  assert sets == ["validation/fmnist/k/PCA_herding_k_2_nearest_ipc10/compressed"]
  md = pca_study_report.write_report(str(kept), str(tmp_path / "out"))
  assert "](pca_study_tiles.png)" in md
  assert (tmp_path / "out" / "pca_study_tiles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # A second archive of the same root copies no set again.
  assert study.main(["archive", "--root", str(root), "--to", str(kept)]) == 0


def test_a_cell_identical_to_a_finished_one_is_copied_not_trained(study, tmp_path, capsys,
                                                                  monkeypatch):
  """The k part's k = 2 cell runs the same command as the prune part's PCA cell of that P and
  kernel (only --workdir differs): once one has finished, the other gets its results instead
  of training the same students again; a cell with any other flag still runs."""
  import json
  import subprocess
  root = tmp_path / "runs"
  done = root / "validation/cifar10/prune/PCA_herding_cubic_ipc10"
  done.mkdir(parents=True)
  (done / "results.json").write_text(json.dumps(_result("pca", 10, [45.0] * 3, k=2,
                                                        prune="herding", kernel="cubic")))
  (done / "config.json").write_text("{}")
  (done / "runs").mkdir()
  (done / "runs" / "seed_0.json").write_text("{}")
  ran = []
  monkeypatch.setattr(subprocess, "call", lambda argv, **kw: ran.append(argv) or 0)
  args = ["run", "--root", str(root), "--datasets", "cifar10", "--ipcs", "10", "--parts", "k",
          "--kernel", "cubic", "--prune", "herding"]
  assert study.main(args + ["--only", "PCA herding k=2 cubic"]) == 0
  copied = root / "validation/cifar10/k/PCA_herding_k_2_cubic_ipc10"
  assert (copied / "results.json").read_text() == (done / "results.json").read_text()
  assert (copied / "runs" / "seed_0.json").exists() and not ran
  assert "the same run as cifar10 prune: PCA herding cubic ipc=10" in capsys.readouterr().out
  assert study.main(args + ["--only", "PCA herding k=3 cubic"]) == 0
  assert len(ran) == 1 and "--config.combine.k=3" in ran[0]
