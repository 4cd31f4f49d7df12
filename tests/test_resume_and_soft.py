"""Resumable runs (SIGKILL mid-run, rerun, same result), the soft-label protocol with its
cached teacher, storage accounting, and the refusals around them."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dcjax import benchmark
from dcjax.errors import UserError
from test_benchmark import ROOT, tiny_config


def _args(workdir, *extra):
  return [sys.executable, os.path.join(ROOT, "main.py"), "--config=configs/benchmark.py",
          f"--workdir={workdir}", "--config.dataset=synthetic", "--config.ipc=4",
          "--config.seeds=2", "--config.eval.epochs=6", "--config.eval.batch_size=8",
          "--config.eval.model_kwargs.width=8", "--config.checkpoint_every=1",
          "--config.progress=False", "--config.eval.num_devices=1",
          "--config.data.synthetic.num_examples=60", "--config.data.synthetic.image_size=16",
          "--config.data.synthetic.num_classes=4", *extra]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")


def test_sigkill_mid_run_then_rerun_equals_uninterrupted_run(tmp_path):
  full, killed = tmp_path / "full", tmp_path / "killed"
  p = subprocess.run(_args(full), cwd=ROOT, env=_env(), capture_output=True, text=True,
                     timeout=600)
  assert p.returncode == 0, p.stderr
  # Kill the second run once seed 1 has written a checkpoint part-way through its epochs.
  proc = subprocess.Popen(_args(killed), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpt = killed / "checkpoints" / "seed_1"
  deadline = time.time() + 500
  while time.time() < deadline and proc.poll() is None:
    steps = [d for d in (os.listdir(ckpt) if ckpt.exists() else []) if d.isdigit()]
    if steps and max(map(int, steps)) >= 2:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "run finished before it could be killed; make it longer"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / "results.json").exists()
  assert (killed / "runs" / "seed_0.json").exists()
  p = subprocess.run(_args(killed), cwd=ROOT, env=_env(), capture_output=True, text=True,
                     timeout=600)
  assert p.returncode == 0, p.stderr
  assert "finished earlier" in p.stderr
  a = json.load(open(full / "results.json"))
  b = json.load(open(killed / "results.json"))
  for ra, rb in zip(a["runs"], b["runs"]):
    assert (ra["seed"], ra["top1"], ra["top5"], ra["final_loss"]) == (
        rb["seed"], rb["top1"], rb["top5"], rb["final_loss"])
  assert a["top1_mean"] == b["top1_mean"]
  # TensorBoard: the epochs logged before the kill survive (flushed per epoch); the resumed
  # session adds its own event file, and together they cover every epoch.
  from dcjax.runners import tensorboard  # pylint: disable=g-import-not-at-top
  d = killed / "tensorboard" / "seed_1"
  assert len(tensorboard.event_files(str(d))) == 2
  steps = {s for s, _ in tensorboard.read_scalars(str(d))["train/loss"]}
  assert steps == set(range(1, 7))


def test_unfinished_run_with_other_config_is_refused_naming_fields(tmp_path):
  work = tmp_path / "w"
  work.mkdir()
  c = tiny_config()
  (work / "config.json").write_text(json.dumps(dict(json.loads(c.to_json()), ipc=7,
                                                    method="other")))
  with pytest.raises(UserError, match=r"different config \(ipc \(7 -> 3\); method"):
    benchmark.run(c, str(work))


def test_a_field_added_unset_later_keeps_earlier_runs_resumable():
  from dcjax.benchmark import workdir  # pylint: disable=g-import-not-at-top
  old = {"eval": {"model_kwargs": {"width": 8}}, "ipc": 3}
  new = {"eval": {"model_kwargs": {"width": 8, "impl": None}}, "ipc": 3}
  assert workdir.config_differences(old, new) == workdir.config_differences(new, old) == []
  # Set to a value, the new field is a difference; so is a field dropped that had one.
  assert workdir.config_differences(old, {"eval": {"model_kwargs": {
      "width": 8, "impl": "custom"}}, "ipc": 3}) == [
          "eval.model_kwargs.impl ('<absent>' -> 'custom')"]
  assert workdir.config_differences({"a": [1, 2]}, {}) == ["a ([1, 2] -> '<absent>')"]


def _soft_config(tmp_path, **kw):
  return tiny_config(**{"eval.protocol": "soft", "teacher.cache_dir": str(tmp_path / "teachers"),
                        "teacher.epochs": 1, "teacher.model_kwargs.width": 8, **kw})


def test_soft_protocol_trains_caches_and_reuses_a_teacher(tmp_path):
  r = benchmark.run(_soft_config(tmp_path), str(tmp_path / "a"))
  assert r["protocol"] == "soft" and r["recipe"]["labels"] == "teacher"
  assert r["recipe"]["mixing"] == "cutmix" and r["recipe"]["temperature"] == 20.0
  t = r["teacher"]
  assert os.path.exists(os.path.join(t["dir"], "teacher.json")) and 0 <= t["top1"] <= 100
  s = r["storage"]
  assert s["soft_label_bytes"] == r["recipe"]["epochs"] * r["num_images"] * 4 * 2
  assert s["teacher_bytes"] == t["param_bytes"] > 0
  # A second run reuses the cached teacher, even where training one is forbidden.
  r2 = benchmark.run(_soft_config(tmp_path, **{"teacher.allow_train": False}),
                     str(tmp_path / "b"))
  assert r2["teacher"]["dir"] == t["dir"]
  assert r2["runs"][0]["top1"] == r["runs"][0]["top1"]
  # Hard labels cost no soft-label storage.
  h = benchmark.run(tiny_config(**{"eval.protocol": "hard"}), str(tmp_path / "h"))
  assert h["storage"]["soft_label_bytes"] == 0 and h["teacher"] is None


def test_teacher_cache_is_keyed_by_the_conv_path_it_ran(tmp_path):
  """A teacher trained with impl unset ('auto') is the teacher of impl=<the path auto runs
  here>, and of no other path: one cached under another path (or before a change of what auto
  runs) must be retrained, not reused (the paths differ in float rounding)."""
  from dcjax import layers
  r = benchmark.run(_soft_config(tmp_path), str(tmp_path / "a"))
  with open(os.path.join(r["teacher"]["dir"], "teacher.json")) as f:
    assert json.load(f)["spec"]["model_kwargs"]["impl"] == layers.conv_path()
  forbid = {"teacher.allow_train": False}
  same = benchmark.run(_soft_config(tmp_path, **forbid, **{
      "teacher.model_kwargs.impl": layers.conv_path()}), str(tmp_path / "b"))
  assert same["teacher"]["dir"] == r["teacher"]["dir"]
  other = "custom" if layers.conv_path() != "custom" else "xla"
  with pytest.raises(UserError, match="teacher.allow_train=True"):
    benchmark.run(_soft_config(tmp_path, **forbid, **{"teacher.model_kwargs.impl": other}),
                  str(tmp_path / "c"))
  # An entry under the key of before 2026-12-07 (impl as given: unset) is named, not reused.
  from dcjax.runners import teacher
  with open(os.path.join(r["teacher"]["dir"], "teacher.json")) as f:
    spec = json.load(f)["spec"]
  old_spec = dict(spec, model_kwargs={k: v for k, v in spec["model_kwargs"].items()
                                      if k != "impl"})
  legacy = teacher.teacher_dir(str(tmp_path / "old_cache"), "synthetic", old_spec)
  shutil.copytree(r["teacher"]["dir"], legacy)
  with pytest.raises(UserError, match="was cached before dcjax keyed the CPU convolution path"
                     ) as e:
    benchmark.run(_soft_config(tmp_path, **forbid, **{
        "teacher.cache_dir": str(tmp_path / "old_cache")}), str(tmp_path / "d"))
  assert legacy in str(e.value) and "teacher.allow_train=True" in str(e.value)


def test_teacher_and_score_keys_follow_what_auto_runs(monkeypatch):
  from dcjax import layers, models, protocols
  from dcjax.runners import scoring, teacher
  recipe = protocols.resolve("hard")
  common = dict(image_shape=(28, 28, 1), mean=(0.5,), std=(0.5,))

  def keys(**kw):
    return (teacher.teacher_spec(dataset_fingerprint="f", model="convnet", model_kwargs=kw,
                                 recipe=recipe, **common),
            scoring.score_key(model="convnet", model_kwargs=kw, recipe=recipe, epochs=3,
                              num_models=2, seed=0, el2n_epoch=None, **common))

  here = layers.conv_path()
  assert keys(width=8) == keys(width=8, impl="auto") == keys(width=8, impl=None) \
      == keys(width=8, impl=here)
  assert keys(width=8, impl="custom" if here != "custom" else "xla") != keys(width=8)
  before = keys(width=8)
  # What 'auto' runs changes (a new default path, another backend): the keys change with it.
  monkeypatch.setattr(layers, "conv_path",
                      lambda impl="auto": "xla" if impl in (None, "auto") else impl)
  assert keys(width=8)[0] != before[0] and keys(width=8)[1] != before[1]
  # Models without dcjax.layers keep their kwargs as given (unset entries dropped).
  assert models.key_kwargs("resnet18", {"width": None, "norm": "batch"}) == {"norm": "batch"}


def test_soft_protocol_without_teacher_and_training_forbidden_is_refused(tmp_path):
  work = tmp_path / "w"
  with pytest.raises(UserError, match="teacher.allow_train=True"):
    benchmark.run(_soft_config(tmp_path, **{"teacher.allow_train": False}), str(work))
  assert not work.exists()


def test_nan_loss_stops_with_seed_and_epoch_and_keeps_last_good_checkpoint(tmp_path):
  work = tmp_path / "w"
  c = tiny_config(**{"eval.lr": 1e30, "eval.protocol": "small_data", "eval.epochs": 3,
                     "checkpoint_every": 1})
  with pytest.raises(FloatingPointError, match=r"epoch \d+ \(seed 0\)"):
    benchmark.run(c, str(work))
  assert not (work / "results.json").exists()


def test_tensorboard_events_are_written(tmp_path):
  from dcjax.runners import tensorboard
  work = tmp_path / "w"
  benchmark.run(tiny_config(), str(work))
  d = work / "tensorboard" / "seed_0"
  (event_file,) = [f for f in os.listdir(d) if f.startswith("events.out.tfevents")]
  scalars = tensorboard.read_scalars(str(d / event_file))
  assert [s for s, _ in scalars["train/loss"]] == [1, 2]
  assert "test/top1" in scalars and np.isfinite(scalars["train/lr"][0][1])


def _moved(src, dest, seeds, manifest_edit=None):
  """What the grid archives of an unfinished cell (config.json, the finished students'
  runs/seed_N.json, compressed/manifest.json), copied into a new workdir `dest`."""
  (dest / "runs").mkdir(parents=True)
  (dest / "compressed").mkdir()
  (dest / "config.json").write_text((src / "config.json").read_text())
  for s in seeds:
    run = json.loads((src / "runs" / f"seed_{s}.json").read_text())
    run["top1"] = 123.0  # a marker: kept students come back with it, retrained ones do not
    (dest / "runs" / f"seed_{s}.json").write_text(json.dumps(run))
  manifest = json.loads((src / "compressed" / "manifest.json").read_text())
  if manifest_edit:
    manifest_edit(manifest)
  (dest / "compressed" / "manifest.json").write_text(json.dumps(manifest))


def test_an_unfinished_run_on_a_new_machine_keeps_its_students_only_on_the_same_set(tmp_path,
                                                                                     capsys):
  c = tiny_config(seeds=2)
  full = tmp_path / "full"
  expected = benchmark.run(c, str(full))["runs"]
  # The same set: seed 0 is read back (its marker kept), seed 1 trained as in the full run.
  _moved(full, tmp_path / "same", [0])
  got = benchmark.run(c, str(tmp_path / "same"))["runs"]
  assert "seed 0: top-1 123.00% (finished earlier)" in capsys.readouterr().err
  timing = ("train_seconds", "images_per_second")
  assert got[0]["top1"] == 123.0
  assert {k: v for k, v in got[1].items() if k not in timing} == {
      k: v for k, v in expected[1].items() if k not in timing}
  # Another set (one image's PNG differs): both students are trained again on this one.
  def edit(m):
    m["files"][0]["sha256"] = "0" * 64
  _moved(full, tmp_path / "other", [0, 1], edit)
  got = benchmark.run(c, str(tmp_path / "other"))["runs"]
  err = capsys.readouterr().err
  assert "different from the one this workdir's 2 finished seed(s) trained on" in err
  assert "finished earlier" not in err
  assert [(r["top1"], r["final_loss"]) for r in got] == [
      (r["top1"], r["final_loss"]) for r in expected]
  # A run that has not trained a student yet has nothing to drop.
  from dcjax.benchmark import workdir  # pylint: disable=g-import-not-at-top
  wd = workdir.Workdir(str(tmp_path / "none"), {}, seeds=1, overwrite=False)
  assert wd.trained_set() is None and wd.drop_students_of_another_set(None, {"files": []}) == 0
  assert workdir.set_identity({"files": "bad"}) != workdir.set_identity({"files": []})
