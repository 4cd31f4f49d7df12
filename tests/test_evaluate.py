"""configs/evaluate.py: any compressed set (dcjax folder, plain class folders, parquet, .npz,
index lists) trained and tested under the benchmark's protocols; round trips are bitwise."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dcjax import benchmark
from dcjax.data import given, store
from dcjax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import evaluate as evaluate_config  # noqa: E402
from tests.test_benchmark import apply_overrides, tiny_config  # noqa: E402

CACHE = None  # set per module by the `original` fixture


SYNTH = dict(num_examples=60, num_test_examples=40, image_size=16, channels=3, num_classes=4,
             seed=0)


def eval_config(compressed, **overrides):
  c = evaluate_config.get_config()
  if compressed is not None:
    c.compressed = str(compressed)
  c.data.synthetic.update(SYNTH)
  c.progress = False
  c.seeds = 2
  c.eval.epochs = 2
  c.eval.batch_size = 8
  c.eval.model_kwargs.width = 8
  c.eval.test_batch_size = 16
  c.eval.num_devices = 1
  c.fairness.cache_dir = str(CACHE)
  return apply_overrides(c, overrides)


def per_seed(r):
  return [(x["seed"], x["top1"], x["top5"], x["final_loss"]) for x in r["runs"]]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
  """A tiny random benchmark run: its results and compressed set."""
  global CACHE
  CACHE = tmp_path_factory.mktemp("baselines")
  work = tmp_path_factory.mktemp("orig") / "run"
  r = benchmark.run(tiny_config(seeds=2, method="random"), str(work))
  return r, work / "compressed"


def test_a_set_dcjax_wrote_evaluates_bitwise_as_folder_npz_and_index_list(original, tmp_path):
  r, compressed = original
  want = per_seed(r)
  # 1. dcjax's own folder (its manifest names the dataset).
  a = benchmark.run(eval_config(compressed), str(tmp_path / "a"))
  assert a["given"]["kind"] == "dcjax" and a["method"] == "evaluate"
  assert a["dataset"] == "synthetic" and a["num_images"] == r["num_images"]
  assert per_seed(a) == want
  assert a["storage"]["image_bytes"] == r["storage"]["image_bytes"]
  # The matched random baseline of a random set is that very run: IOR is exactly 0.
  assert a["fairness"]["random_top1"] == r["top1_mean"] and a["fairness"]["ior"] == 0.0
  assert "hlr" not in a["fairness"]  # no full-split accuracy given or computed
  # 2. The same folder without its manifest: a plain class-folder set, test split named.
  plain = tmp_path / "plain"
  images, labels, manifest = store.read_compressed(compressed)
  for i, (im, lab) in enumerate(zip(images, labels)):
    os.makedirs(plain / f"{lab:04d}", exist_ok=True)
    Image.fromarray(im).save(plain / f"{lab:04d}" / f"{i:06d}.png")
  b = benchmark.run(eval_config(plain, test_dataset="synthetic"), str(tmp_path / "b"))
  assert b["given"]["kind"] == "folder" and per_seed(b) == want
  # 3. An .npz of the arrays.
  np.savez(tmp_path / "set.npz", images=images, labels=labels)
  c = benchmark.run(eval_config(tmp_path / "set.npz", test_dataset="synthetic"),
                    str(tmp_path / "c"))
  assert c["given"]["kind"] == "npz" and per_seed(c) == want
  assert c["storage"]["image_bytes"] == images.nbytes
  # 4. The training-split indices behind it (.npy, .txt and .json read the same).
  idx = np.asarray([f["source_indices"][0] for f in manifest["files"]])
  np.save(tmp_path / "idx.npy", idx)
  (tmp_path / "idx.txt").write_text("\n".join(map(str, idx)) + "\n")
  (tmp_path / "idx.json").write_text(json.dumps(idx.tolist()))
  d = benchmark.run(eval_config(tmp_path / "idx.npy", dataset="synthetic"), str(tmp_path / "d"))
  assert d["given"]["kind"] == "indices" and per_seed(d) == want
  for name in ("idx.txt", "idx.json"):
    np.testing.assert_array_equal(given.read_indices(str(tmp_path / name), 60), idx)


def _parquet(path, images, labels, names):
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")

  def png(im):
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="PNG")
    return buf.getvalue()

  image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
  table = pa.table({
      "image": pa.array([{"bytes": png(im), "path": None} for im in images], image_type),
      "label": pa.array(labels.astype(np.int64))})
  features = {"image": {"_type": "Image"},
              "label": {"names": list(names), "_type": "ClassLabel"}}
  meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
  pq.write_table(table.replace_schema_metadata(meta), path)


def test_a_parquet_set_like_the_released_subsets_evaluates_end_to_end(original, tmp_path):
  r, compressed = original
  images, labels, manifest = store.read_compressed(compressed)
  # Class names in another order than the test split's: matched by name.
  names = list(manifest["class_names"])[::-1]
  remapped = (len(names) - 1 - labels).astype(np.int64)
  _parquet(tmp_path / "train-00000-of-00001.parquet", images, remapped, names)
  out = benchmark.run(eval_config(tmp_path / "train-00000-of-00001.parquet",
                                  test_dataset="synthetic"), str(tmp_path / "w"))
  assert out["given"]["kind"] == "parquet" and per_seed(out) == per_seed(r)
  assert out["storage"]["image_bytes"] == os.path.getsize(tmp_path /
                                                          "train-00000-of-00001.parquet")


def test_npz_soft_labels_train_with_labels_stored_and_are_counted(original, tmp_path):
  _, compressed = original
  images, labels, _ = store.read_compressed(compressed)
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(len(labels), 4)).astype(np.float32) * 3
  np.savez(tmp_path / "soft.npz", images=images, labels=labels, soft_labels=logits)
  hard = benchmark.run(eval_config(tmp_path / "soft.npz", test_dataset="synthetic", seeds=1),
                       str(tmp_path / "hard"))
  soft = benchmark.run(eval_config(tmp_path / "soft.npz", test_dataset="synthetic", seeds=1,
                                   **{"eval.labels": "stored", "eval.temperature": 2.0}),
                       str(tmp_path / "soft"))
  assert soft["recipe"]["labels"] == "stored"
  assert soft["storage"]["soft_label_bytes"] == logits.nbytes
  assert hard["storage"]["soft_label_bytes"] == 0
  assert soft["runs"][0]["final_loss"] != hard["runs"][0]["final_loss"]
  # Probabilities are used as they are; logits become softmax(logits / T).
  t = given.soft_targets(logits, 2.0)
  np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
  e = np.exp(logits / 2.0)
  np.testing.assert_allclose(t, e / e.sum(1, keepdims=True), rtol=1e-5)
  np.testing.assert_allclose(given.soft_targets(t, 7.0), t, rtol=1e-5)


def test_a_float_pixel_set_is_evaluated_as_given(original, tmp_path, capfd):
  """Pixels distilled as floats (DC, DSA, DM, MTT, ...): trained on as float32, never clipped or
  rounded; the same pixels as a uint8 set's, as floats, give its students within float
  rounding (XLA fuses the uint8 path's x / 255 into the normalisation, so the two programs round
  differently); torch's [N, C, H, W] and a normalised copy (with its mean and std) read as the
  same pixels."""
  import jax
  import jax.numpy as jnp
  r, compressed = original
  images, labels, _ = store.read_compressed(compressed)
  # The uint8 set's pixels exactly as the training step makes them (XLA's x / 255).
  pixels = np.asarray(jax.jit(lambda x: x.astype(jnp.float32) / 255.0)(images))
  np.savez(tmp_path / "float.npz", images=pixels, labels=labels)
  out = benchmark.run(eval_config(tmp_path / "float.npz", test_dataset="synthetic"),
                      str(tmp_path / "f"))
  for (seed, top1, top5, loss), (seed0, top1_0, top5_0, loss0) in zip(per_seed(out), per_seed(r)):
    assert (seed, top1, top5) == (seed0, top1_0, top5_0) and loss == pytest.approx(loss0, 1e-5)
  assert out["storage"]["image_bytes"] == pixels.nbytes  # 4 bytes a value, as given
  copy, _, manifest = store.read_compressed(tmp_path / "f" / "compressed")
  assert manifest["pixels"] == "float32" and copy.tobytes() == pixels.tobytes()
  # Extended by a seed: the finished students are kept (the stored copy is recognised as the
  # same set, not retrained as another one's).
  capfd.readouterr()
  again = benchmark.run(eval_config(tmp_path / "float.npz", test_dataset="synthetic", seeds=3),
                        str(tmp_path / "f"))
  assert per_seed(again)[:2] == per_seed(out) and len(again["runs"]) == 3
  assert "came out different" not in capfd.readouterr().err
  # Torch's layout, normalised by a mean and std, with pixels outside [0, 1].
  wild = pixels.copy()
  wild[0, 0, 0, :] = [-0.75, 1.5, 2.0]
  mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.247, 0.243, 0.261])
  np.savez(tmp_path / "torch.npz", images=((wild - mean) / std).astype(np.float32)
           .transpose(0, 3, 1, 2), labels=labels, mean=mean, std=std)
  g = given.read_given(str(tmp_path / "torch.npz"))
  assert g.images.dtype == np.float32 and g.images.shape == images.shape
  np.testing.assert_allclose(g.images, wild, atol=1e-6)
  assert g.images[0, 0, 0].tolist() == pytest.approx([-0.75, 1.5, 2.0], abs=1e-6)
  t = benchmark.run(eval_config(tmp_path / "torch.npz", test_dataset="synthetic", seeds=1),
                    str(tmp_path / "t"))
  assert t["given"]["kind"] == "npz" and np.isfinite(t["runs"][0]["final_loss"])


def test_resize_and_class_checks(tmp_path):
  big = np.random.default_rng(0).integers(0, 255, (8, 20, 20, 3), np.uint8)
  g = given.GivenSet("x", "npz", big, np.arange(8, dtype=np.int32) % 4, None, None, 1, 0, None,
                     np.zeros((8, 0), int))
  said = []
  out = given.align_to_test(g, ["a", "b", "c", "d"], (16, 16, 3), log=said.append)
  assert out.images.shape == (8, 16, 16, 3) and len(said) == 1 and "20x20 to" in said[0]
  with pytest.raises(UserError, match="channels"):
    given.align_to_test(g, ["a", "b", "c", "d"], (16, 16, 1))
  with pytest.raises(UserError, match="the test split has 3 classes"):
    given.align_to_test(g, ["a", "b", "c"], (20, 20, 3))
  named = given.GivenSet("x", "folder", big, np.zeros(8, np.int32), ["zebra"], None, 1, 0, None,
                         np.zeros((8, 0), int))
  with pytest.raises(UserError, match="class 'zebra' of x is not a class of the test split"):
    given.align_to_test(named, ["a", "b"], (20, 20, 3))
  said = []
  ok = given.align_to_test(dataclass_replace(named, class_names=["B"]), ["a", "b"], (20, 20, 3),
                           log=said.append)
  assert (ok.labels == 1).all() and "no images of 1 of the 2" in said[0]


def dataclass_replace(g, **kw):
  import dataclasses
  return dataclasses.replace(g, **kw)


@pytest.mark.parametrize("make,overrides,match", [
    (None, {}, "evaluate needs the set"),
    ("missing", {}, "does not exist"),
    ("set.bin", {}, "cannot read compressed set"),
    ("plain", {}, "say which test split"),
    ("idx_bad", {"dataset": "synthetic"}, "holds indices 0..999"),
    ("idx_dup", {"dataset": "synthetic"}, "repeats indices"),
    ("idx_ok", {"dataset": "synthetic", "test_dataset": "fashion_mnist"}, "differ"),
    ("npz_noimg", {"test_dataset": "synthetic"}, "has no images array"),
    ("npz_int16", {"test_dataset": "synthetic"}, "images must be uint8 or float"),
    ("npz_float_mean", {"test_dataset": "synthetic"}, "give both mean and std"),
    ("npz_float_big", {"test_dataset": "synthetic"}, "give them at the test resolution"),
    ("npz_ok", {"test_dataset": "synthetic", "eval.labels": "stored"}, "stores no soft labels"),
    ("npz_ok", {"test_dataset": "synthetic", "eval.protocol": "soft", "eval.labels": "stored"},
     "replaces the soft protocol's teacher"),
    ("plain", {"test_dataset": "folder:{plain}"}, "never tested on itself"),
])
def test_bad_evaluate_input_is_refused_in_one_line_with_nothing_written(tmp_path, make,
                                                                        overrides, match):
  plain = tmp_path / "plain"
  for c in range(4):
    os.makedirs(plain / f"{c:04d}")
    Image.fromarray(np.full((16, 16, 3), c * 40, np.uint8)).save(plain / f"{c:04d}" / "0.png")
  paths = {"missing": tmp_path / "nope", "set.bin": tmp_path / "set.bin", "plain": plain}
  (tmp_path / "set.bin").write_bytes(b"x")
  np.save(tmp_path / "idx_bad.npy", np.array([0, 999]))
  np.save(tmp_path / "idx_dup.npy", np.array([1, 1]))
  np.save(tmp_path / "idx_ok.npy", np.array([1, 2]))
  np.savez(tmp_path / "npz_noimg.npz", labels=np.zeros(2))
  np.savez(tmp_path / "npz_int16.npz", images=np.zeros((2, 16, 16, 3), np.int16),
           labels=np.zeros(2, int))
  np.savez(tmp_path / "npz_float_mean.npz", images=np.zeros((2, 16, 16, 3), np.float32),
           labels=np.zeros(2, int), mean=np.zeros(3))
  np.savez(tmp_path / "npz_float_big.npz", images=np.zeros((2, 20, 20, 3), np.float32),
           labels=np.zeros(2, int))
  np.savez(tmp_path / "npz_ok.npz", images=np.zeros((4, 16, 16, 3), np.uint8),
           labels=np.arange(4))
  for name in ("idx_bad", "idx_dup", "idx_ok"):
    paths[name] = tmp_path / f"{name}.npy"
  for name in ("npz_noimg", "npz_int16", "npz_float_mean", "npz_float_big", "npz_ok"):
    paths[name] = tmp_path / f"{name}.npz"
  overrides = {k: v.format(plain=plain) for k, v in overrides.items()}
  work = tmp_path / "w"
  with pytest.raises(UserError, match=match):
    benchmark.run(eval_config(paths[make] if make else None, **overrides), str(work))
  assert not work.exists()


def test_main_evaluates_a_set_by_command(original, tmp_path):
  r, compressed = original
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
  args = ["--config=configs/evaluate.py", f"--workdir={tmp_path / 'w'}",
          f"--config.compressed={compressed}", "--config.seeds=1", "--config.eval.epochs=2",
          "--config.eval.batch_size=8", "--config.eval.model_kwargs.width=8",
          "--config.progress=False", "--config.data.synthetic.num_examples=60",
          "--config.data.synthetic.num_test_examples=40",
          "--config.data.synthetic.image_size=16", "--config.data.synthetic.num_classes=4"]
  p = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                     text=True, env=env, timeout=600)
  assert p.returncode == 0, p.stderr
  last = p.stdout.strip().splitlines()[-1]
  assert last.startswith("evaluate ipc=3 synthetic small_data convnet: top-1"), last
  assert json.load(open(tmp_path / "w" / "results.json"))["runs"][0]["seed"] == 0


def test_fairness_scores_follow_dd_ranking(original, tmp_path):
  from dcjax.benchmark import fairness
  assert fairness.lrs(0.0, 0.0) == pytest.approx((1 - np.exp(-1)) / (np.e - np.exp(-1)))
  assert fairness.lrs(100.0, -100.0, 0.5) == pytest.approx(1.0)  # alpha = 1
  assert fairness.lrs(-100.0, 100.0) == pytest.approx(0.0)       # alpha = -1
  r, compressed = original
  out = benchmark.run(eval_config(compressed, seeds=1, **{"fairness.full_top1": 90.0}),
                      str(tmp_path / "w"))
  f = out["fairness"]
  assert f["hlr"] == pytest.approx(90.0 - out["top1_mean"])
  assert f["ior"] == pytest.approx(out["top1_mean"] - f["random_top1"])
  assert f["lrs"] == pytest.approx(fairness.lrs(f["ior"], f["hlr"]))
  assert "IOR" in benchmark.summary_line(out) and "LRS" in benchmark.summary_line(out)


def test_fairness_baseline_cache_is_keyed_by_the_conv_path_it_runs(monkeypatch):
  from dcjax import layers
  from dcjax.benchmark import fairness

  def key(**kw):
    return fairness.baseline_dir(fairness.baseline_config(tiny_config(**kw), 10, hard=True))

  here = layers.conv_path()
  assert key() == key(**{"eval.model_kwargs.impl": here})
  assert key() != key(**{"eval.model_kwargs.impl": "custom" if here != "custom" else "xla"})
  before = key()
  monkeypatch.setattr(layers, "conv_path",
                      lambda impl="auto": "xla" if impl in (None, "auto") else impl)
  assert key() != before


def test_report_tables_show_the_fairness_scores(original, tmp_path):
  from dcjax.benchmark import report
  r, compressed = original
  out = benchmark.run(eval_config(compressed, seeds=1, **{"fairness.full_top1": 90.0}),
                      str(tmp_path / "ev"))
  rows = report.to_rows([r, out])
  md = report.to_markdown(rows)
  assert "| ior | hlr | lrs |" in md and "evaluate compressed" in md
  ev = [row for row in rows if row["method"].startswith("evaluate")][0]
  assert ev["lrs"] == f"{out['fairness']['lrs']:.3f}"
  assert [row for row in rows if row["method"] == "random"][0]["ior"] == ""
