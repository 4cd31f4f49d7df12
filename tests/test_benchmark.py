"""End-to-end runs of the benchmark runner on tiny data, and every bad input it must refuse."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from dcjax import benchmark, layers
from dcjax.benchmark import runner
from dcjax.data import sources, store
from dcjax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  """configs/benchmark.py shrunk to seconds: synthetic 16 px data, a narrow ConvNet."""
  sys.path.insert(0, ROOT)
  from configs import benchmark as cfg_module
  c = cfg_module.get_config()
  c.dataset = "synthetic"
  c.data.synthetic.update(dict(num_examples=60, num_test_examples=40, image_size=16,
                               channels=3, num_classes=4, seed=0))
  c.ipc = 3
  c.progress = False
  c.eval.epochs = 2
  c.eval.batch_size = 8
  c.eval.model_kwargs.width = 8
  c.eval.test_batch_size = 16
  c.eval.num_devices = 1
  return apply_overrides(c, overrides)


def apply_overrides(c, overrides):
  """Set dotted fields ("eval.epochs": 2) on config c, then lock it."""
  for k, v in overrides.items():
    target = c
    *path, last = k.split(".")
    for p in path:
      target = target[p]
    target[last] = v
  c.lock()
  return c


def test_end_to_end_writes_results_and_compressed_set(tmp_path):
  work = str(tmp_path / "run")
  r = benchmark.run(tiny_config(seeds=2), work)
  on_disk = json.load(open(os.path.join(work, "results.json")))
  assert on_disk["top1_mean"] == pytest.approx(r["top1_mean"])
  for k in ["method", "dataset", "ipc", "num_images", "protocol", "model", "top1_mean",
            "top1_std", "top5_mean", "runs", "storage"]:
    assert k in on_disk
  assert on_disk["num_images"] == 12 and on_disk["ipc"] == 3
  assert [run["seed"] for run in on_disk["runs"]] == [0, 1]
  # The students' convolution path is recorded (the paths differ in float rounding).
  assert on_disk["environment"]["conv_path"] == ("fused" if jax.default_backend() == "cpu"
                                                 else "xla")
  if jax.default_backend() == "cpu":  # which CPU kind, on how many threads (rounding differs)
    assert isinstance(on_disk["environment"]["cpu"], str)
    assert on_disk["environment"]["cpu_threads"] >= 1
    # ... and its vector units and flags, which one model name ('AMD EPYC') can hide.
    assert on_disk["environment"]["cpu_fingerprint"] == runner.cpu_fingerprint()
    assert on_disk["environment"]["cpu_simd"] in ("avx512f", "avx2", "avx", "sse4_2", None)
  for run in on_disk["runs"]:
    assert 0 <= run["top1"] <= run["top5"] <= 100 and run["train_seconds"] > 0
  # The setup before the first student is part of the wall time, the students the rest.
  students = sum(run["train_seconds"] for run in on_disk["runs"])
  assert 0 < on_disk["setup_seconds"] <= on_disk["wall_seconds"] - students
  assert on_disk["top1_mean"] == pytest.approx(np.mean([x["top1"] for x in on_disk["runs"]]))
  # The compressed set holds exactly the source images its manifest names.
  images, labels, manifest = store.read_compressed(os.path.join(work, "compressed"))
  assert on_disk["storage"]["image_bytes"] == manifest["image_bytes"] > 0
  src = sources.open_source("synthetic", "train", synthetic=dict(tiny_config().data.synthetic))
  for img, lab, entry in zip(images, labels, manifest["files"]):
    (i,) = entry["source_indices"]
    np.testing.assert_array_equal(img, src[i]["image"])
    assert lab == src.labels[i]
  assert np.bincount(labels).tolist() == [3, 3, 3, 3]
  # ... and reads back as a plain folder dataset with the same labels.
  folder = sources.open_source("folder:" + os.path.join(work, "compressed"), "train")
  assert folder.labels.tolist() == labels.tolist()


def test_runs_are_deterministic_and_protocols_differ(tmp_path):
  a = benchmark.run(tiny_config(), str(tmp_path / "a"))
  b = benchmark.run(tiny_config(), str(tmp_path / "b"))
  assert a["runs"][0]["top1"] == b["runs"][0]["top1"]
  assert a["runs"][0]["final_loss"] == b["runs"][0]["final_loss"]
  h = benchmark.run(tiny_config(**{"eval.protocol": "hard"}), str(tmp_path / "h"))
  assert h["recipe"]["optimizer"] == "adamw" and h["recipe"]["augment"] == "rrc_flip"
  assert a["recipe"]["optimizer"] == "sgd" and a["recipe"]["augment"] == "dsa"
  assert h["recipe"]["epochs"] == 2  # the override wins over the preset


def test_resnet18_student(tmp_path):
  r = benchmark.run(tiny_config(**{"eval.model": "resnet18", "eval.epochs": 1,
                                   "eval.model_kwargs.width": 4}), str(tmp_path / "r"))
  assert r["model"] == "resnet18" and np.isfinite(r["runs"][0]["final_loss"])


def test_finished_workdir_is_refused_unless_overwrite(tmp_path):
  work = str(tmp_path / "run")
  benchmark.run(tiny_config(**{"eval.epochs": 1}), work)
  before = open(os.path.join(work, "results.json")).read()
  with pytest.raises(UserError, match="already holds a finished run"):
    benchmark.run(tiny_config(**{"eval.epochs": 1}), work)
  assert open(os.path.join(work, "results.json")).read() == before
  r = benchmark.run(tiny_config(**{"eval.epochs": 1, "overwrite": True, "ipc": 2}), work)
  assert r["num_images"] == 8
  assert store.read_manifest(os.path.join(work, "compressed"))["num_images"] == 8


def test_finished_run_extends_with_more_seeds_keeping_the_finished_ones(tmp_path):
  work = str(tmp_path / "run")
  one = benchmark.run(tiny_config(**{"eval.epochs": 1}), work)
  seed0 = open(os.path.join(work, "runs", "seed_0.json")).read()
  two = benchmark.run(tiny_config(**{"eval.epochs": 1, "seeds": 2}), work)
  assert [r["seed"] for r in two["runs"]] == [0, 1]
  assert two["runs"][0] == one["runs"][0]  # kept, not retrained
  assert open(os.path.join(work, "runs", "seed_0.json")).read() == seed0
  assert json.load(open(os.path.join(work, "results.json")))["runs"] == two["runs"]
  # Same seed count, fewer seeds, or another setting: still a finished run.
  for overrides in ({"seeds": 2}, {"seeds": 1}, {"seeds": 3, "eval.lr": 0.5}):
    with pytest.raises(UserError, match="already holds a finished run") as e:
      benchmark.run(tiny_config(**{"eval.epochs": 1, **overrides}), work)
    assert ("eval.lr (None -> 0.5)" in str(e.value)) == ("eval.lr" in overrides)
  assert json.load(open(os.path.join(work, "results.json")))["runs"] == two["runs"]


@pytest.mark.parametrize("field,value,pattern", [
    ("dataset", "mnist_typo", "unknown dataset 'mnist_typo'; known: .*fashion_mnist"),
    ("method", "el2n_typo", "unknown method 'el2n_typo'; known: aum_easy, .*, random"),
    ("eval.model", "vgg", "unknown model 'vgg'; known: convnet, .*resnet18.*vit_s16"),
    ("eval.protocol", "soft_typo", "unknown protocol 'soft_typo'; known: hard, small_data, soft"),
    ("eval.augment", "autoaugment", "unknown augmentation 'autoaugment'"),
    ("ipc", 16, "ipc=16 is larger than the smallest class allows: class .* has 15 examples; "
                "use --config.ipc <= 15"),
    ("combine.k", 4, r"class 0 \(class_0\) has 15 training examples, fewer than one stored "
                     "image needs with combine.k=4"),
    ("ipc", 0, "ipc must be an integer >= 1, got 0"),
    ("seeds", 0, "seeds must be an integer >= 1, got 0"),
    ("eval.lr", -0.01, "eval: lr must be a finite number > 0, got -0.01"),
    ("eval.lr", 0.0, "eval: lr must be a finite number > 0, got 0.0"),
    ("eval.test_batch_size", 0, "eval.test_batch_size must be an integer >= 1, got 0"),
    ("eval.num_devices", 0, "eval.num_devices must be an integer >= 1, got 0"),
    ("checkpoint_every", -1, "checkpoint_every must be an integer >= 0"),
    ("scores.lr", -1.0, "scores: lr must be a finite number > 0"),
    ("teacher.model_kwargs.impl", "fast",
     "teacher.model_kwargs.impl must be one of auto, fused, winograd, custom, xla, got 'fast'"),
    ("scores.model_kwargs.impl", "fast", "scores.model_kwargs.impl must be one of"),
])
def test_bad_input_is_refused_with_nothing_written(tmp_path, field, value, pattern):
  work = tmp_path / "run"
  with pytest.raises(UserError, match=pattern):
    benchmark.run(tiny_config(**{field: value}), str(work))
  assert not work.exists()


def test_ipc_bound_counts_the_tiles():
  src = sources.ArraySource("toy", "train", ["a", "b"], np.zeros((30, 4, 4, 1), np.uint8),
                            np.repeat(np.arange(2), 15))
  runner.check_ipc(src, 3, 2)  # 12 of 15 per class
  with pytest.raises(UserError, match=r"ipc=4 is larger than the smallest class allows with "
                     r"combine.k=2 \(4 source images per stored image\): class 0 \(a\) has 15 "
                     r"examples; use --config.ipc <= 3"):
    runner.check_ipc(src, 4, 2)
  with pytest.raises(UserError, match="use --config.ipc <= 15"):
    runner.check_ipc(src, 16, 1)


def test_missing_fashion_mnist_dir_says_how_to_install(tmp_path):
  work = tmp_path / "run"
  c = tiny_config(dataset="fashion_mnist", **{"data.dir": str(tmp_path / "nowhere")})
  with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
    benchmark.run(c, str(work))
  assert not work.exists()


def _write_folder_dataset(root, corrupt=None):
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for c in range(3):
      d = root / split / f"class{c}"
      d.mkdir(parents=True)
      for j in range(4):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(d / f"{j}.png")
  if corrupt:
    (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")


def test_folder_dataset_end_to_end(tmp_path):
  _write_folder_dataset(tmp_path / "data")
  r = benchmark.run(tiny_config(dataset=f"folder:{tmp_path / 'data'}", ipc=2),
                    str(tmp_path / "run"))
  assert r["num_images"] == 6 and r["test_examples"] == 12 and r["image_shape"] == [12, 12, 3]


def test_corrupt_image_is_named_and_nothing_written(tmp_path):
  _write_folder_dataset(tmp_path / "data", corrupt="test/class1/2.png")
  work = tmp_path / "run"
  with pytest.raises(UserError, match=r"class1/2\.png"):
    benchmark.run(tiny_config(dataset=f"folder:{tmp_path / 'data'}", ipc=2), str(work))
  assert not work.exists()


def _main(*args, cwd=ROOT):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
  return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=cwd,
                        capture_output=True, text=True, env=env, timeout=600)


def test_main_reports_bad_input_as_one_line_and_exit_2(tmp_path):
  p = _main("--config=configs/benchmark.py", f"--workdir={tmp_path / 'w'}",
            "--config.method=nope")
  assert p.returncode == 2
  errors = [l for l in p.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and errors[0].startswith("error: unknown method 'nope'; known: "), p.stderr
  assert "el2n_easy" in errors[0] and "kcenter" in errors[0]
  assert "Traceback" not in p.stderr
  assert not (tmp_path / "w").exists()


def test_main_runs_with_overrides(tmp_path):
  work = tmp_path / "w"
  p = _main("--config=configs/benchmark.py", f"--workdir={work}", "--config.dataset=synthetic",
            "--config.ipc=2", "--config.seeds=1", "--config.eval.epochs=1",
            "--config.eval.model=convnet", "--config.eval.protocol=hard",
            "--config.eval.model_kwargs.width=8", "--config.progress=False",
            "--config.data.synthetic.num_examples=40", "--config.data.synthetic.image_size=16")
  assert p.returncode == 0, p.stderr
  r = json.load(open(work / "results.json"))
  assert (r["ipc"], r["protocol"], r["recipe"]["epochs"], r["dataset"]) == (2, "hard", 1,
                                                                           "synthetic")
  assert p.stdout.strip().splitlines()[-1].startswith("random ipc=2 synthetic hard convnet: top-1")
  # The config is locked: a typo in a field name is an error, not a silently new field.
  p = _main("--config=configs/benchmark.py", f"--workdir={tmp_path / 'x'}", "--config.ipcc=2")
  assert p.returncode != 0 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("args,message", [
    (["--config.ipcc=10"], "error: unknown config field 'ipcc'; did you mean 'ipc'?"),
    (["--config.eval.protocl=hard"],
     "error: unknown config field 'protocl'; did you mean 'protocol'?"),
    (["--config.ipc=abc"], "error: flag --config.ipc=abc: invalid literal for int()"),
])
def test_main_config_flag_errors_are_one_line(tmp_path, args, message):
  p = _main("--config=configs/benchmark.py", f"--workdir={tmp_path / 'w'}", *args)
  assert p.returncode == 2 and p.stderr.strip().startswith(message), p.stderr
  assert len(p.stderr.strip().splitlines()) == 1, p.stderr
  assert not (tmp_path / "w").exists()


def test_main_missing_config_file_is_one_line(tmp_path):
  p = _main("--config=configs/nothere.py", f"--workdir={tmp_path / 'w'}")
  assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
  assert "cannot load the config file" in p.stderr and "configs/nothere.py" in p.stderr


def test_every_config_field_the_readme_documents_exists():
  """The README's configuration table names only fields configs/benchmark.py has."""
  import re  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, ROOT)
  from configs import benchmark as cfg_module  # pylint: disable=g-import-not-at-top
  c = cfg_module.get_config()
  readme = open(os.path.join(ROOT, "README.md")).read()
  table = readme[readme.index("| field | meaning | default |"):]
  table = table[:table.index("\n\n")]
  names = []
  for row in table.splitlines()[2:]:
    for cell in row.split("|")[1].split(" / "):
      for name in re.findall(r"`([\w.{},*]+)`", cell):
        m = re.fullmatch(r"(.*)\{(.*)\}", name)
        names += [m[1] + f for f in m[2].split(",")] if m else [name]
  assert len(names) > 25
  for name in names:
    target = c
    for part in name.removesuffix(".*").split("."):
      assert part in target, f"README documents {name}, configs/benchmark.py has no such field"
      target = target[part]


@pytest.mark.parametrize("method", ["el2n_easy", "aum_hard", "ccs", "herding", "kcenter"])
def test_score_and_feature_methods_end_to_end(tmp_path, method):
  c = tiny_config(method=method, ipc=2, **{
      "scores.cache_dir": str(tmp_path / "scores"), "scores.epochs": 1,
      "scores.model_kwargs.width": 4, "teacher.cache_dir": str(tmp_path / "teachers"),
      "teacher.epochs": 1, "teacher.model_kwargs.width": 4, "eval.epochs": 1,
      "scores.ccs_hard_cutoff": 0.2})
  r = benchmark.run(c, str(tmp_path / "run"))
  assert r["method"] == method and r["num_images"] == 8
  images, labels, manifest = store.read_compressed(str(tmp_path / "run" / "compressed"))
  assert np.bincount(labels).tolist() == [2, 2, 2, 2]
  if method in ("el2n_easy", "aum_hard", "ccs"):
    assert r["score_file"] and os.path.exists(r["score_file"])
    with open(r["score_file"], "rb") as f:  # the file's bytes, as the report tells them apart
      assert r["score_sha256"] == hashlib.sha256(f.read()).hexdigest()[:16]
  else:
    assert r["score_sha256"] is None
  # Only the feature methods name the teacher they selected with (hard labels: no other use).
  assert (r["feature_teacher"] is not None) == (method in ("herding", "kcenter")), r
  assert r["sre2l_teacher"] is None


def test_el2n_easy_keeps_the_lowest_scores_of_the_cached_score_file(tmp_path):
  from dcjax.data import scorefile
  c = tiny_config(method="el2n_easy", ipc=2, **{
      "scores.cache_dir": str(tmp_path / "scores"), "scores.epochs": 1,
      "scores.model_kwargs.width": 4, "eval.epochs": 1})
  r = benchmark.run(c, str(tmp_path / "run"))
  src = sources.open_source("synthetic", "train", synthetic=dict(c.data.synthetic))
  scores, _ = scorefile.load_scores(r["score_file"], fingerprint=sources.fingerprint(src),
                                    n=len(src))
  manifest = store.read_manifest(str(tmp_path / "run" / "compressed"))
  chosen = {e["source_indices"][0] for e in manifest["files"]}
  for cls in range(4):
    members = np.flatnonzero(src.labels == cls)
    easiest = members[np.argsort(scores["el2n"][members], kind="stable")[:2]]
    assert set(easiest.tolist()) <= chosen
  # A second run reuses the score file instead of recomputing it.
  c2 = tiny_config(method="el2n_hard", ipc=2, **{
      "scores.cache_dir": str(tmp_path / "scores"), "scores.epochs": 1,
      "scores.model_kwargs.width": 4, "eval.epochs": 1, "scores.allow_compute": False})
  assert benchmark.run(c2, str(tmp_path / "run2"))["score_file"] == r["score_file"]
  # A score file under the key of before 2026-12-07 (ConvNet's impl as given: unset) is named
  # where a score file is missing, not reused.
  _, meta = scorefile.load_scores(r["score_file"], fingerprint=sources.fingerprint(src),
                                  n=len(src))
  key = meta["score_config"]
  assert key["model_kwargs"] == {"width": 4, "impl": layers.conv_path()}
  old_key = dict(key, model_kwargs={"width": 4})
  legacy = scorefile.score_path(str(tmp_path / "old"), "synthetic", "train", old_key)
  os.makedirs(os.path.dirname(legacy))
  shutil.copy(r["score_file"], legacy)
  c2.scores.cache_dir = str(tmp_path / "old")
  with pytest.raises(UserError, match="was cached before dcjax keyed the CPU") as e:
    benchmark.run(c2, str(tmp_path / "run3"))
  assert legacy in str(e.value) and not (tmp_path / "run3").exists()


def _tiny_pca(c, tmp_path, ipc=2):
  """A configs/pca.py config shrunk to seconds on the tiny synthetic data."""
  base = tiny_config()
  c.dataset, c.progress = "synthetic", False
  c.data.synthetic.update(dict(base.data.synthetic))
  c.ipc = ipc
  c.eval.epochs, c.eval.batch_size, c.eval.num_devices = 1, 8, 1
  c.eval.model_kwargs.width = 8
  c.scores.cache_dir, c.scores.epochs = str(tmp_path / "scores"), 1
  c.scores.model_kwargs.width = 4
  c.teacher.cache_dir, c.teacher.epochs = str(tmp_path / "teachers"), 1
  c.teacher.model_kwargs.width = 4
  return c


def test_pca_with_el2n_easy_tiles_the_easiest_images_easy_first(tmp_path, capsys):
  """with_pca's default P (the paper's, configs/imagenet_pca.py's): the k*k*ipc easiest images
  per class by EL2N, tiled 2x2 as the runner tiles, trained with the tile-constrained view."""
  from configs import pca
  from dcjax import combine
  from dcjax.data import scorefile
  c = _tiny_pca(pca.with_pca(benchmark_config()), tmp_path)
  c.lock()
  r = benchmark.run(c, str(tmp_path / "run"))
  assert (r["method"], r["combine_k"], r["num_images"], r["num_source_images"]) == (
      "el2n_easy", 2, 8, 32)
  assert r["recipe"]["augment"] == "tile_dsa" and r["recipe"]["labels"] == "hard"
  assert r["protocol"] == "small_data"
  # It ends by printing accuracy and storage on one line (one seed: no spread).
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert last == (f"el2n_easy k=2 ipc=2 synthetic small_data convnet: top-1 {r['top1_mean']:.2f} %, "
                  f"top-5 {r['top5_mean']:.2f} % (1 seed), 8 images tiling 32 sources, "
                  f"{r['storage']['image_bytes'] / 1e3:.1f} KB images stored")
  images, labels, manifest = store.read_compressed(str(tmp_path / "run" / "compressed"))
  src = sources.open_source("synthetic", "train", synthetic=dict(c.data.synthetic))
  scores, _ = scorefile.load_scores(r["score_file"], fingerprint=sources.fingerprint(src),
                                    n=len(src))
  for lab, entry in zip(labels, manifest["files"]):
    idx = entry["source_indices"]
    assert len(idx) == 4 and all(src.labels[i] == lab for i in idx)
  # Tiled as the runner tiles (one batch: XLA:CPU may round a .5 differently at another batch
  # size, so a group tiled alone can differ by 1 in a pixel).
  originals = np.stack([src[i]["image"] for e in manifest["files"] for i in e["source_indices"]])
  np.testing.assert_array_equal(
      images, np.asarray(combine.tile(originals, 2, method=c.combine.resample)))
  for cls in range(4):
    members = np.flatnonzero(src.labels == cls)
    easiest = members[np.argsort(scores["el2n"][members], kind="stable")[:8]]
    chosen = [i for e in manifest["files"] if e["label"] == cls for i in e["source_indices"]]
    assert sorted(chosen) == sorted(easiest.tolist())


def test_pca_config_prunes_by_herding_and_tiles_with_nearest(tmp_path, capsys):
  """configs/pca.py (Fashion-MNIST's validated setting): its P is herding, so the 4*ipc
  sources of each class are exactly what herding alone selects at ipc 4*ipc (same teacher)."""
  from configs import pca
  from dcjax import combine
  c = _tiny_pca(pca.get_config(), tmp_path)
  c.lock()
  r = benchmark.run(c, str(tmp_path / "run"))
  assert (r["method"], r["combine_k"], r["num_images"], r["num_source_images"]) == (
      "pca", 2, 8, 32)
  assert r["config"]["pca"]["prune"] == "herding"
  assert capsys.readouterr().out.strip().splitlines()[-1].startswith(
      "pca k=2 ipc=2 synthetic small_data convnet: top-1 ")
  images, labels, manifest = store.read_compressed(str(tmp_path / "run" / "compressed"))
  src = sources.open_source("synthetic", "train", synthetic=dict(c.data.synthetic))
  originals = np.stack([src[i]["image"] for e in manifest["files"] for i in e["source_indices"]])
  assert c.combine.resample == c.eval.resample == "nearest"
  np.testing.assert_array_equal(images, np.asarray(combine.tile(originals, 2, method="nearest")))
  h = _tiny_pca(pca.get_config(), tmp_path, ipc=8)
  h.method, h.combine.k, h.eval.augment = "herding", 1, "dsa"
  h.lock()
  rh = benchmark.run(h, str(tmp_path / "herding"))
  # Both selected on one teacher's features, and results.json names it (name, accuracy).
  assert r["feature_teacher"] == rh["feature_teacher"]
  assert r["feature_teacher"]["name"].startswith("synthetic-convnet-")
  assert 0 <= r["feature_teacher"]["top1"] <= 100
  _, herd_labels, herd_manifest = store.read_compressed(str(tmp_path / "herding" / "compressed"))
  for cls in range(4):
    chosen = [i for e in manifest["files"] if e["label"] == cls for i in e["source_indices"]]
    herded = [i for e in herd_manifest["files"] if e["label"] == cls
              for i in e["source_indices"]]
    assert len(chosen) == 8 and sorted(chosen) == sorted(herded)


def test_pca_config_quick_and_full():
  from configs import pca
  quick, full = pca.get_config(), pca.get_config("full")
  assert (quick.scores.num_models, quick.scores.epochs, quick.seeds) == (1, 2, 1)
  default = benchmark_config()
  assert (full.scores.num_models, full.scores.epochs, full.seeds) == (
      default.scores.num_models, default.scores.epochs, 3)
  assert (quick.teacher.epochs, full.teacher.epochs) == (2, default.teacher.epochs)
  for c in (quick, full):
    assert (c.method, c.pca.prune, c.combine.k, c.eval.protocol, c.eval.augment) == (
        "pca", "herding", 2, "small_data", "tile_dsa")
  cifar = pca.get_config("full,cifar10")  # validated at IPC 10: herding P, lanczos3 kernel, k=3
  assert (cifar.method, cifar.pca.prune, cifar.combine.resample, cifar.eval.resample,
          cifar.combine.k) == ("pca", "herding", "lanczos3", "lanczos3", 3)
  with pytest.raises(ValueError, match="full"):
    pca.get_config("fast")
  # ',ipcN': IPC N with the setting validated at the largest validated IPC <= N.
  for arg, want in (("full,ipc1", (1, "pca", "herding", "area", 2)),
                    ("full,ipc50", (50, "pca", "herding", "nearest", 2)),
                    ("full,cifar10,ipc1", (1, "el2n_easy", "el2n_easy", "lanczos3", 4)),
                    ("cifar10,ipc5", (5, "el2n_easy", "el2n_easy", "lanczos3", 4)),
                    ("full,cifar10,ipc10", (10, "pca", "herding", "lanczos3", 3))):
    c = pca.get_config(arg)
    p = c.pca.prune if c.method == "pca" else c.method  # EL2N-easy P runs as el2n_easy
    assert (c.ipc, c.method, p, c.combine.resample, c.combine.k) == want, arg
    assert c.eval.augment == ("tile_dsa_noflip" if arg == "full,ipc1" else "tile_dsa"), arg
    assert c.eval.resample == c.combine.resample
  assert pca.get_config("full,ipc1").teacher.epochs == full.teacher.epochs
  for bad in ("full,ipc0", "ipc", "ipc1,ipc2", "full,ipcx"):
    with pytest.raises(ValueError, match="ipcN"):
      pca.get_config(bad)


def benchmark_config():
  from configs import benchmark as cfg_module
  return cfg_module.get_config()
