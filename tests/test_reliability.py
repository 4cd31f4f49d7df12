"""Bad input refused in one line with nothing written, and damaged workdirs named: the
reliability cases of the benchmark runner (each test names the case it covers)."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from dcjax import benchmark
from dcjax.errors import UserError
from test_benchmark import tiny_config


def _folder(root, splits=("train", "test"), classes=None):
  rng = np.random.default_rng(0)
  for split in splits:
    for c in (classes or {}).get(split, ["c0", "c1", "c2"]):
      d = root / split / c if split else root / c
      d.mkdir(parents=True)
      for j in range(4):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(d / f"{j}.png")


def _refused(tmp_path, pattern, **overrides):
  work = tmp_path / "run"
  with pytest.raises(UserError, match=pattern):
    benchmark.run(tiny_config(**overrides), str(work))
  assert not work.exists()


def test_folder_splits_with_different_classes_are_refused(tmp_path):
  _folder(tmp_path / "data", classes=dict(train=["c0", "c1", "c2"], test=["c0", "c2"]))
  _refused(tmp_path, r"different classes \(3 vs 2; only in train: c1\): test labels would name "
           "the wrong classes", dataset=f"folder:{tmp_path / 'data'}", ipc=2)


def test_folder_without_split_subfolders_is_refused(tmp_path):
  _folder(tmp_path / "data", splits=("",))
  _refused(tmp_path, "has no separate test split", dataset=f"folder:{tmp_path / 'data'}", ipc=2)


def test_single_parquet_file_is_refused_as_both_splits(tmp_path):
  pq = pytest.importorskip("pyarrow.parquet")
  import io  # pylint: disable=g-import-not-at-top
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  buf = []
  for i in range(12):
    b = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(b, format="PNG")
    buf.append({"bytes": b.getvalue(), "path": None})
  table = pa.table({"image": buf, "label": [i % 3 for i in range(12)]})
  pq.write_table(table, tmp_path / "set.parquet")
  _refused(tmp_path, "has no separate test split", dataset=f"parquet:{tmp_path / 'set.parquet'}",
           ipc=2)


def test_bad_model_kwarg_value_is_refused_before_the_workdir_is_written(tmp_path):
  _refused(tmp_path, "eval.model_kwargs do not fit model 'convnet'",
           **{"eval.model_kwargs.norm": "layer"})


@pytest.mark.parametrize("overrides,pattern", [
    ({"eval.lr": float("nan")}, "eval: lr must be a finite number > 0, got nan"),
    ({"eval.momentum": 1.5}, r"eval: momentum must be a finite number in \[0, 1\)"),
    ({"eval.weight_decay": -1.0}, "eval: weight_decay must be a finite number >= 0"),
    ({"eval.temperature": 0.0}, "eval: temperature must be a finite number > 0"),
    ({"eval.mixing": "mixupp"}, "eval: unknown mixing 'mixupp'"),
    ({"eval.labels": "soft"}, "eval: unknown label source 'soft'"),
    ({"eval.schedule": "linear"}, "eval: unknown schedule 'linear'"),
    ({"eval.optimizer": "adam"}, "eval: unknown optimizer 'adam'"),
    ({"eval.epochs": 0}, "eval: epochs must be an integer >= 1, got 0"),
    ({"eval.batch_size": 0}, "eval: batch_size must be an integer >= 1, got 0"),
    ({"eval.dtype": "float16"}, "eval.dtype must be float32 or bfloat16"),
    ({"eval.num_devices": 1000}, "eval.num_devices=1000 but only"),
    ({"eval.crop_scale": (0.0, 1.0)}, "crop_scale must be"),
    ({"teacher.lr": 0.0}, "teacher: lr must be a finite number > 0"),
    ({"teacher.protocol": "nope"}, "teacher: unknown protocol 'nope'"),
    ({"scores.epochs": 0}, "scores: epochs must be an integer >= 1"),
    ({"method": "pca", "pca.prune": "rded"}, "pca.prune must be a selection method"),
    ({"method": "pca", "pca.prune": "sre2l"}, "pca.prune must be a selection method"),
    ({"method": "pca", "pca.prune": "nope"}, "pca.prune must be a selection method"),
    ({"combine.k": 0}, "combine.k must be an integer >= 1, got 0"),
])
def test_bad_values_are_refused_before_anything_is_written(tmp_path, overrides, pattern):
  _refused(tmp_path, pattern, **overrides)


@pytest.mark.parametrize("damage", ["results.json", "config.json", "runs/seed_0.json"])
def test_a_damaged_workdir_file_is_named_in_one_line(tmp_path, damage):
  work = tmp_path / "run"
  c = tiny_config(**{"eval.epochs": 1})
  benchmark.run(c, str(work))
  if damage != "results.json":  # an unfinished run: drop results.json, damage another file
    os.remove(work / "results.json")
  (work / damage).write_text("{not json")
  with pytest.raises(UserError, match=f"cannot read {work / damage}.*the workdir is damaged"):
    benchmark.run(c, str(work))


def test_a_results_json_without_runs_is_named(tmp_path):
  work = tmp_path / "run"
  c = tiny_config(**{"eval.epochs": 1})
  benchmark.run(c, str(work))
  (work / "results.json").write_text(json.dumps({"method": "random"}))
  with pytest.raises(UserError, match="has no list of runs; the workdir is damaged"):
    benchmark.run(c, str(work))


def test_a_workdir_under_a_file_is_refused(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(UserError):
    benchmark.run(tiny_config(), str(tmp_path / "file" / "run"))
  shutil.rmtree(tmp_path / "file", ignore_errors=True)


def test_a_second_run_in_a_locked_workdir_is_refused_and_a_dead_holder_leaves_no_lock(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  work = tmp_path / "run"
  work.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", (
      "import fcntl, os, sys, time\n"
      f"f = open({str(work / '.lock')!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
      "f.write(f'process {os.getpid()} on test\\n'); f.flush(); print('locked', flush=True)\n"
      "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    c = tiny_config(**{"eval.epochs": 1})
    with pytest.raises(UserError, match=f"workdir {work} is in use by process {holder.pid} on "
                       "test; wait for it"):
      benchmark.run(c, str(work))
    assert sorted(os.listdir(work)) == [".lock"]  # nothing else written
  finally:
    holder.kill()  # SIGKILL: the kernel drops its lock
    holder.wait()
    holder.stdout.close()
  r = benchmark.run(c, str(work))
  assert len(r["runs"]) == 1
  # The lock is released when a run ends (or fails): the same process can run again.
  benchmark.run(tiny_config(**{"eval.epochs": 1, "seeds": 2}), str(work))


def test_finished_scoring_and_teacher_leave_no_progress_checkpoints(tmp_path):
  c = tiny_config(method="herding", ipc=2, **{
      "scores.cache_dir": str(tmp_path / "scores"), "teacher.cache_dir": str(tmp_path / "t"),
      "teacher.epochs": 1, "teacher.model_kwargs.width": 4, "eval.epochs": 1})
  benchmark.run(c, str(tmp_path / "run"))
  (teacher,) = os.listdir(tmp_path / "t")
  # What is kept: the weights and teacher.json, and the (empty) lock file of the cache fill.
  assert sorted(os.listdir(tmp_path / "t" / teacher)) == [".fill.lock", "final", "teacher.json"]
  c = tiny_config(method="el2n_easy", ipc=2, **{
      "scores.cache_dir": str(tmp_path / "scores"), "scores.epochs": 1,
      "scores.model_kwargs.width": 4, "eval.epochs": 1})
  benchmark.run(c, str(tmp_path / "run2"))
  kept = sorted(os.listdir(tmp_path / "scores"))
  assert len(kept) == 2 and kept[0] == f".{kept[1]}.lock" and kept[1].endswith(".npz")


def test_written_files_honour_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    benchmark.run(tiny_config(**{"eval.epochs": 1}), str(tmp_path / "run"))
  finally:
    os.umask(old)
  for name in ("results.json", "config.json", "runs/seed_0.json"):
    assert os.stat(tmp_path / "run" / name).st_mode & 0o777 == 0o644, name
  assert os.stat(tmp_path / "run" / "compressed").st_mode & 0o777 == 0o755


@pytest.fixture
def small_tmpfs(tmp_path):
  """A 1 MiB tmpfs (needs root and mount; skipped elsewhere)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  mnt = tmp_path / "tmpfs"
  mnt.mkdir()
  if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                                          str(mnt)], capture_output=True).returncode != 0:
    pytest.skip("cannot mount a tmpfs here (needs root)")
  yield mnt
  subprocess.run(["umount", str(mnt)], check=False)


# A checkpoint that cannot fit is refused before orbax writes (runners/checkpoint.py): orbax's
# own ENOSPC path prints every writer thread's traceback and "Event loop is closed" unraisable
# reports, so the test also checks that nothing but our line reaches stderr (no warning filter).
@pytest.mark.parametrize("free_kb", [4, 30, 80])
def test_a_full_disk_is_one_line_and_the_run_resumes_when_there_is_room(small_tmpfs, free_kb,
                                                                        capfd):
  filler = small_tmpfs / "filler"
  filler.write_bytes(b"x" * (1024 * 1024 - free_kb * 1024))
  work = small_tmpfs / "run"
  c = tiny_config(**{"eval.epochs": 1})
  with pytest.raises(UserError, match=r"No space left on device.*; free space or fix the "
                     "permissions, then rerun the same command to resume"):
    benchmark.run(c, str(work))
  err = capfd.readouterr().err
  assert "Traceback" not in err and "ERROR" not in err, err
  filler.unlink()
  r = benchmark.run(c, str(work))  # resumes (or starts over) in what was left
  assert len(r["runs"]) == 1 and os.path.exists(work / "results.json")


def test_a_checkpoint_that_cannot_fit_is_refused_before_orbax_writes(tmp_path, monkeypatch):
  import errno  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  from dcjax.runners import checkpoint  # pylint: disable=g-import-not-at-top
  state = {"w": np.zeros((1000,), np.float32)}  # 4000 bytes
  need = 2 * 4000 + checkpoint.SAVE_MARGIN_BYTES
  usage = shutil.disk_usage(tmp_path)
  with checkpoint.Checkpointer(str(tmp_path / "ck")) as ck:
    monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                        lambda p: usage._replace(free=need - 1))
    with pytest.raises(OSError, match=f"needs {need} bytes, {need - 1} free") as e:
      ck.save(1, state, {"epoch": 1})
    assert e.value.errno == errno.ENOSPC and ck.latest_step() is None
    assert os.listdir(tmp_path / "ck") == []  # nothing half-written
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: usage._replace(free=need))
    ck.save(1, state, {"epoch": 1})
    assert ck.latest_step() == 1


def test_a_full_disk_while_saving_a_seed_keeps_the_finished_seeds(tmp_path, monkeypatch):
  """Portable variant (no tmpfs): the disk fills while seed 1's result is written."""
  import errno  # pylint: disable=g-import-not-at-top
  from dcjax.data import files  # pylint: disable=g-import-not-at-top
  work = tmp_path / "run"
  c = tiny_config(**{"eval.epochs": 1, "seeds": 2})
  real = files.write_atomic

  def full(path, write, suffix=""):
    if path.endswith("seed_1.json"):
      raise OSError(errno.ENOSPC, "No space left on device", path)
    real(path, write, suffix)

  monkeypatch.setattr(files, "write_atomic", full)
  with pytest.raises(UserError, match=r"cannot write .*seed_1\.json: No space left on device"):
    benchmark.run(c, str(work))
  seed0 = json.loads((work / "runs" / "seed_0.json").read_text())
  monkeypatch.setattr(files, "write_atomic", real)
  r = benchmark.run(c, str(work))
  assert r["runs"][0] == seed0 and len(r["runs"]) == 2


def test_a_plain_npy_score_file_is_used_when_named_and_refused_in_one_line_otherwise(tmp_path):
  scores = np.arange(60, dtype=np.float32)[::-1].copy()  # example 59 is the easiest
  np.save(tmp_path / "el2n.npy", scores)
  _refused(tmp_path, r"is a plain array of one score; name it with "
           r"--config.scores.file_score=el2n", method="el2n_easy", ipc=2,
           **{"scores.file": str(tmp_path / "el2n.npy")})
  r = benchmark.run(tiny_config(method="el2n_easy", ipc=2, **{
      "scores.file": str(tmp_path / "el2n.npy"), "scores.file_score": "el2n",
      "eval.epochs": 1}), str(tmp_path / "ok"))
  from dcjax.data import store  # pylint: disable=g-import-not-at-top
  _, labels, manifest = store.read_compressed(str(tmp_path / "ok" / "compressed"))
  picked = [e["source_indices"][0] for e in manifest["files"]]
  src = benchmark.open_splits(tiny_config())[0]
  for c in range(4):  # the two highest indices of each class (lowest scores)
    assert sorted(i for i, l in zip(picked, labels) if l == c) == sorted(
        np.flatnonzero(src.labels == c)[-2:].tolist())
  assert r["score_file"] == str(tmp_path / "el2n.npy")
  np.save(tmp_path / "short.npy", scores[:10])
  _refused(tmp_path, "10", method="el2n_easy", ipc=2,
           **{"scores.file": str(tmp_path / "short.npy"), "scores.file_score": "el2n"})


def test_an_interrupted_overwrite_leaves_the_old_run_or_the_new_one(tmp_path, monkeypatch):
  from dcjax.benchmark import runner  # pylint: disable=g-import-not-at-top
  work = tmp_path / "run"
  old = benchmark.run(tiny_config(**{"eval.epochs": 1}), str(work))
  new_config = tiny_config(**{"eval.epochs": 1, "ipc": 2, "overwrite": True})

  def killed(*args, **kwargs):
    raise KeyboardInterrupt  # as a kill after the new set is written, before any seed ends

  monkeypatch.setattr(runner, "train_and_test", killed)
  with pytest.raises(KeyboardInterrupt):
    benchmark.run(new_config, str(work))
  # The workdir holds the new, unfinished run only; the old run is whole beside it.
  assert not (work / "results.json").exists()
  (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith(".run.replaced-")]
  assert json.loads((aside / "results.json").read_text()) == old
  assert sorted(os.listdir(aside / "runs")) == ["seed_0.json"]
  monkeypatch.undo()
  r = benchmark.run(new_config, str(work))  # the same command finishes the new run
  assert r["num_images"] == 8 and not aside.exists()


def test_links_out_of_a_dataset_folder_or_a_set_are_refused(tmp_path):
  from dcjax.data import sources, store  # pylint: disable=g-import-not-at-top
  _folder(tmp_path / "data")
  outside = tmp_path / "secret.png"
  Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(outside)
  os.symlink(outside, tmp_path / "data" / "train" / "c0" / "9.png")
  with pytest.raises(UserError, match=r"9\.png is a link to .*secret\.png, outside the dataset"):
    sources.open_source(f"folder:{tmp_path / 'data'}", "train")
  os.remove(tmp_path / "data" / "train" / "c0" / "9.png")
  os.symlink(tmp_path / "data" / "train" / "c0", tmp_path / "data" / "train" / "c0" / "inner.png")
  inside = tmp_path / "data" / "train" / "c1" / "0.png"  # a link inside the root is fine
  os.remove(tmp_path / "data" / "train" / "c0" / "inner.png")
  os.symlink(inside, tmp_path / "data" / "train" / "c0" / "8.png")
  assert len(sources.open_source(f"folder:{tmp_path / 'data'}", "train")) == 13
  benchmark.run(tiny_config(**{"eval.epochs": 1}), str(tmp_path / "run"))
  _, _, manifest = store.read_compressed(str(tmp_path / "run" / "compressed"))
  victim = tmp_path / "run" / "compressed" / manifest["files"][0]["file"]
  os.remove(victim)
  os.symlink(outside, victim)
  with pytest.raises(UserError, match="leads outside the set"):
    store.read_compressed(str(tmp_path / "run" / "compressed"))
