"""experiments/sre2l_recover.py: the cells it would run and the report it writes."""

import json
import os
import sys

import pytest

import experiment_scripts
from test_benchmark import ROOT


@pytest.fixture(scope="module")
def sweep():
  return experiment_scripts.load("sre2l_recover")


def test_every_setting_runs_soft_and_hard_on_the_validation_split(sweep, tmp_path, capsys):
  assert sweep.main(["run", "--root", str(tmp_path), "--datasets", "fmnist,cifar10",
                     "--ipcs", "10,1", "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert out.count("running ->") == 2 * 2 * len(sweep.SETTINGS) * 2
  assert out.count("--config.data.validation_per_class=500") == out.count("running ->")
  assert out.count("--config.eval.protocol=soft") == out.count("--config.eval.protocol=small_data")
  assert "configs/sre2l.py:cifar10_shared" in out
  assert "--config.sre2l.jitter=0 --config.sre2l.flip=False" in out
  assert os.path.join("validation", "fmnist", "hard", "r_bn_0.1_ipc10") in out
  assert not list(tmp_path.iterdir())  # a dry run writes nothing
  for bad in (["--settings", "default,lr 9"], ["--datasets", "mnist"], ["--ipcs", "ten"]):
    with pytest.raises(SystemExit):
      sweep.main(["run", "--root", str(tmp_path), *bad])


def test_every_setting_names_fields_of_the_sre2l_config(sweep):
  sys.path.insert(0, ROOT)
  from configs import sre2l
  c = sre2l.get_config()
  for name, overrides in sweep.SETTINGS.items():
    for field, value in overrides.items():
      assert field in c.sre2l, (name, field)
      assert type(c.sre2l[field]) is type(value), (name, field)
      assert c.sre2l[field] != value, f"{name} repeats the default"


def _cell(root, dataset, protocol, setting, ipc, top1s, conv_path=None):
  d = root / "validation" / dataset / protocol / f"{setting}_ipc{ipc}"
  d.mkdir(parents=True)
  n = len(top1s)
  mean = sum(top1s) / n
  std = (sum((t - mean) ** 2 for t in top1s) / n) ** 0.5
  env = {"backend": "cpu"} | ({"conv_path": conv_path} if conv_path else {})
  (d / "results.json").write_text(json.dumps(dict(
      top1_mean=mean, top1_std=std, runs=[dict(seed=i, top1=t) for i, t in enumerate(top1s)],
      environment=env)))


def test_the_report_chooses_by_soft_labels_and_shows_hard(sweep, tmp_path):
  _cell(tmp_path, "fmnist", "soft", "default", 10, [70.0, 71.0, 72.0])
  _cell(tmp_path, "fmnist", "soft", "lr_0.5", 10, [74.0, 75.0, 76.0])
  _cell(tmp_path, "fmnist", "hard", "default", 10, [40.0, 41.0, 42.0], conv_path="winograd")
  _cell(tmp_path, "fmnist", "hard", "lr_0.5", 10, [80.0, 80.0, 80.0])  # not used to choose
  _cell(tmp_path, "fmnist", "soft", "not_a_setting", 10, [99.0])  # a foreign folder: ignored
  rows = sweep.load(str(tmp_path))
  assert len(rows) == 4
  assert sweep.choose(rows, "fmnist", 10) == "lr 0.5"
  assert sweep.choose(rows, "fmnist", 1) is None
  path = sweep.write_report(str(tmp_path), str(tmp_path / "out"))
  text = open(path).read()
  assert "| **lr 0.5** (leading) | 75.00 ± 0.82 (3 seeds) | 80.00 ± 0.00 (3 seeds) |" in text
  # A cell names its convolution path where it is not the direct one (rounding differs).
  assert ("| default | 71.00 ± 0.82 (3 seeds) | 41.00 ± 0.82 (3 seeds, winograd CPU layers) |"
          in text)
  n = len(sweep.SETTINGS)
  assert f"the best soft-label mean, of the 2 of {n} settings that finished" in text
  assert "r_bn" not in text.split("## fmnist")[1].split("Leading so far")[0]  # unfinished: no row
  assert "Chosen" not in text  # 2 of the settings finished: no choice yet
  for i, name in enumerate(sweep.SETTINGS):  # every setting finished: the choice is made
    if name not in ("default", "lr 0.5"):
      _cell(tmp_path, "fmnist", "soft", sweep.slug(name), 10, [60.0 + i])
  text = open(sweep.write_report(str(tmp_path), str(tmp_path / "out"))).read()
  assert "| **lr 0.5** (chosen) |" in text and "Leading" not in text
  assert f"Chosen: **lr 0.5** ({{'lr': 0.5}}), the best soft-label mean, of the " \
         f"{len(sweep.SETTINGS)} settings." in text
  assert os.path.getsize(tmp_path / "out" / "sre2l_recover.png") > 0
  with pytest.raises(SystemExit, match="no finished"):
    sweep.write_report(str(tmp_path / "empty"), str(tmp_path / "out2"))


def test_archive_keeps_only_finished_cells_and_the_report_reads_it(sweep, tmp_path, capsys):
  root = tmp_path / "runs"
  _cell(root, "fmnist", "soft", "default", 10, [80.0, 80.5, 79.5])
  _cell(root, "fmnist", "hard", "default", 10, [50.0, 51.0, 52.0])
  unfinished = root / "validation" / "fmnist" / "soft" / "lr_0.1_ipc10"
  (unfinished / "checkpoints").mkdir(parents=True)  # a running cell: no results.json yet
  (root / "validation" / "fmnist" / "soft" / "default_ipc10" / "compressed").mkdir()
  (root / "validation" / "fmnist" / "soft" / "default_ipc10" / "compressed" / "x.png").write_bytes(
      b"png")
  (root / "stray").mkdir()
  (root / "stray" / "results.json").write_text("{}")  # not a sweep cell
  to = tmp_path / "archive"
  assert sweep.main(["archive", "--root", str(root), "--to", str(to)]) == 0
  assert "2 finished cell(s) archived" in capsys.readouterr().out
  kept = sorted(str(p.relative_to(to)) for p in to.rglob("*") if p.is_file())
  assert kept == [os.path.join("validation", "fmnist", p, "default_ipc10", "results.json")
                  for p in ("hard", "soft")]
  text = open(sweep.write_report(str(to), str(tmp_path / "out"))).read()
  assert "| **default** (leading) | 80.00 ± 0.41 (3 seeds) | 51.00 ± 0.82 (3 seeds) |" in text
  with pytest.raises(SystemExit):
    sweep.main(["archive", "--root", str(tmp_path / "nothing")])


def test_sre2l_grid_cells_wait_for_the_sweep_and_for_the_config_to_hold_its_choice(sweep,
                                                                                  tmp_path):
  queue = experiment_scripts.load("grid_queue")
  held = sweep.config_settings("fmnist")
  assert held["lr"] == 0.25 and "cache_dir" not in held and "cache_dir" not in held["teacher"]
  cifar = sweep.config_settings("cifar10")  # the same recover knobs, its own teacher recipe
  assert {k: v for k, v in cifar.items() if k != "teacher"} == {
      k: v for k, v in held.items() if k != "teacher"}
  step = next(a for n, a in queue.STEPS if n == "grid" and "sre2l" in a and "fmnist" in a)
  assert queue.waiting("grid", step, str(tmp_path)).endswith("finished 0 of 11 settings")
  assert queue.waiting("grid", queue.STEPS[1][1], str(tmp_path)) is None  # not SRe2L's step

  root = tmp_path / "sre2l_recover"

  def finish(best: str):
    for i, (setting, overrides) in enumerate(sweep.SETTINGS.items()):
      cell = root / "validation" / "fmnist" / "soft" / f"{sweep.slug(setting)}_ipc10"
      cell.mkdir(parents=True, exist_ok=True)
      # The config the cell ran with, as results.json records it (cache paths and all).
      config = dict(held, **overrides, cache_dir="/somewhere")
      config["teacher"] = dict(held["teacher"], cache_dir="/elsewhere")
      top1 = 80.0 if setting == best else 70.0 + i * 0.1
      (cell / "results.json").write_text(json.dumps(dict(
          top1_mean=top1, top1_std=0.1, runs=[dict(seed=0, top1=top1)],
          config=dict(sre2l=config))))

  finish(best="default")
  assert sweep.grid_ready(str(root), "fmnist") is None
  # Cells recorded before dcjax added an unset field (teacher.model_kwargs.impl) still match.
  held["teacher"]["model_kwargs"].pop("impl")
  finish(best="default")
  assert sweep.grid_ready(str(root), "fmnist") is None
  assert queue.waiting("grid", step, str(tmp_path)) is None
  assert sweep.grid_ready(str(root), "cifar10").endswith("finished 0 of 11 settings")
  finish(best="lr 0.5")  # a choice configs/sre2l.py does not hold
  reason = sweep.grid_ready(str(root), "fmnist")
  assert "does not hold the chosen setting 'lr 0.5' (differs in lr)" in reason


def test_a_setting_ahead_of_the_default_by_noise_does_not_replace_it(sweep, tmp_path):
  _cell(tmp_path, "fmnist", "soft", "default", 10, [79.5, 80.1, 80.7])  # std 0.49
  _cell(tmp_path, "fmnist", "soft", "r_bn_0.001", 10, [79.6, 80.2, 80.8])  # +0.1
  rows = sweep.load(str(tmp_path))
  assert sweep.choose(rows, "fmnist", 10) == "default"
  text = open(sweep.write_report(str(tmp_path), str(tmp_path / "out"))).read()
  assert "| **default** (leading) |" in text
  assert "'r_bn 0.001' is ahead by no more than one pooled std, so `default` stays" in text
  _cell(tmp_path, "fmnist", "soft", "lr_0.5", 10, [80.6, 81.2, 81.8])  # +1.1 > 0.49
  assert sweep.choose(sweep.load(str(tmp_path)), "fmnist", 10) == "lr 0.5"
  rows = [r for r in sweep.load(str(tmp_path)) if r["setting"] != "default"]
  assert sweep.choose(rows, "fmnist", 10) == "lr 0.5"  # no default cell: the best mean

