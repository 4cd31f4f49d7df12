"""RDED: crop scoring, per-class selection and tiling, determinism, the benchmark hook."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import benchmark, combine, rded
from dcjax.data import sources, store
from dcjax.errors import UserError
from test_benchmark import tiny_config

SCALE, RATIO = (0.3, 1.0), (0.75, 1.33)


def _brightness_observer(variables, images_u8):
  """Two classes: class 1's logit grows with the crop's mean brightness, class 0's shrinks."""
  m = images_u8.astype(jnp.float32).mean(axis=(1, 2, 3)) / 255.0
  return jnp.stack([-variables * m, variables * m], axis=1)


def _gradient_source(num_classes=2, per_class=12, size=12, seed=0):
  """Images with a random diagonal brightness ramp, so crops differ in mean brightness."""
  rng = np.random.default_rng(seed)
  n = num_classes * per_class
  yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  images = []
  for _ in range(n):
    a, b = rng.uniform(-1, 1, 2)
    ramp = a * yy + b * xx
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    images.append(np.clip(ramp * 255 + rng.normal(0, 5, ramp.shape), 0, 255))
  images = np.stack(images)[..., None].repeat(3, -1).astype(np.uint8)
  labels = np.arange(n) % num_classes
  return sources.ArraySource("ramps", "train", [f"c{c}" for c in range(num_classes)], images,
                             labels)


def test_random_crops_shapes_dtype_and_whole_image_at_full_scale():
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
  crops = rded.random_crops(jax.random.key(0), image, 4, scale=(0.3, 1.0), ratio=RATIO)
  assert crops.shape == (4, 8, 12, 3) and crops.dtype == jnp.uint8
  square = jnp.asarray(rng.integers(0, 256, (10, 10, 1), dtype=np.uint8))
  whole = rded.random_crops(jax.random.key(1), square, 3, scale=(1.0, 1.0), ratio=(1.0, 1.0))
  for c in whole:  # a full-area square crop of a square image is the image itself
    np.testing.assert_array_equal(c, square)
  f = rded.random_crops(jax.random.key(0), image.astype(jnp.float32) / 255, 2, SCALE, RATIO)
  assert f.dtype == jnp.float32 and f.shape == (2, 8, 12, 3)


@pytest.mark.parametrize("label", [0, 1])
def test_best_crops_keeps_each_images_lowest_loss_crop(label):
  src = _gradient_source()
  images = jnp.asarray(src.images[:6])
  idx = jnp.arange(6) + 100
  labels = jnp.full((6,), label)
  key = jax.random.key(3)
  crops, losses = rded.best_crops(_brightness_observer, 3.0, key, images, idx, labels,
                                  num_crops=5, scale=SCALE, ratio=RATIO)
  assert crops.shape == images.shape and crops.dtype == jnp.uint8 and losses.shape == (6,)
  for i in range(6):
    every = rded.random_crops(jax.random.fold_in(key, idx[i]), images[i], 5, SCALE, RATIO)
    logits = _brightness_observer(3.0, every)
    ce = -jax.nn.log_softmax(logits)[:, label]
    assert len(set(np.round(np.asarray(ce), 6))) > 1  # the crops really differ
    best = int(jnp.argmin(ce))
    np.testing.assert_array_equal(crops[i], every[best])
    assert losses[i] == pytest.approx(float(ce[best]), rel=1e-5)
    # label 1 rewards bright crops, label 0 dark ones
    means = np.asarray(every, np.float32).mean(axis=(1, 2, 3))
    assert means[best] == (means.max() if label == 1 else means.min())


def test_best_crops_ignores_batch_position():
  src = _gradient_source()
  images, idx = jnp.asarray(src.images[:4]), jnp.arange(4)
  lab = jnp.ones(4, jnp.int32)
  a, la = rded.best_crops(_brightness_observer, 5.0, jax.random.key(0), images, idx, lab,
                          num_crops=3, scale=SCALE, ratio=RATIO)
  b, lb = rded.best_crops(_brightness_observer, 5.0, jax.random.key(0), images[::-1],
                          idx[::-1], lab, num_crops=3, scale=SCALE, ratio=RATIO)
  np.testing.assert_array_equal(a, b[::-1])
  np.testing.assert_allclose(la, lb[::-1])


def test_tile_order_takes_the_lowest_losses_in_rded_layout():
  losses = jnp.asarray([5.0, 0.1, 3.0, 0.4, 0.2, 9.0, 0.3, 1.0, 0.0, 2.0])
  # ranks: 8 (0.0), 1 (0.1), 4 (0.2), 6 (0.3), 3 (0.4), 7 (1.0), ...
  assert rded.tile_order(losses, ipc=1, k=2).tolist() == [8, 1, 4, 6]
  # 2 stored images of 2x2: image j holds ranks j, 2 + j, 4 + j, 6 + j
  assert rded.tile_order(losses, ipc=2, k=2).tolist() == [8, 4, 3, 9, 1, 6, 7, 2]
  assert rded.tile_order(losses, ipc=3, k=1).tolist() == [8, 1, 4]
  # ties keep candidate order
  assert rded.tile_order(jnp.zeros(5), ipc=2, k=1).tolist() == [0, 1]


def _distill(src, key, k=2, ipc=2, candidates=10, batch_size=4):
  load = lambda idx: sources.load_images(src, idx, progress=False)[0]
  return rded.distill(src.labels, load, key, _brightness_observer, 3.0,
                      num_classes=src.num_classes, class_names=src.class_names, ipc=ipc, k=k,
                      candidates_per_class=candidates, crops_per_image=3, scale=SCALE,
                      ratio=RATIO, batch_size=batch_size)


@pytest.mark.parametrize("k", [1, 2])
def test_distill_shapes_balance_sources_and_selection(k):
  src = _gradient_source(num_classes=2, per_class=12)
  key = jax.random.key(7)
  images, labels, behind = _distill(src, key, k=k, ipc=2, candidates=10)
  assert images.shape == (4, 12, 12, 3) and images.dtype == np.uint8
  assert labels.dtype == np.int32 and labels.tolist() == [0, 0, 1, 1]
  assert behind.shape == (4, k * k)
  for lab, row in zip(labels, behind):
    assert all(src.labels[i] == lab for i in row)  # every tile comes from its own class
  for c in range(2):
    rows = behind[labels == c].reshape(-1)
    assert len(set(rows.tolist())) == len(rows)  # one crop per source image

  # Recompute every candidate's best crop: the kept ones are the class's k*k*ipc lowest, and
  # the stored images are exactly their tiles in RDED's layout.
  k_cand, k_crop = jax.random.split(key)
  cands = rded.sample_candidates(src.labels, k_cand, 2, 10)
  for c in range(2):
    idx = cands[c]
    assert all(src.labels[i] == c for i in idx) and len(set(idx.tolist())) == 10
    step = jax.jit(functools.partial(rded.best_crops, _brightness_observer, num_crops=3,
                                     scale=SCALE, ratio=RATIO))
    crops, losses = step(3.0, k_crop, src.images[idx], idx, np.full(10, c))
    keep = np.asarray(rded.tile_order(losses, ipc=2, k=k))
    np.testing.assert_array_equal(behind[labels == c], idx[keep].reshape(2, k * k))
    np.testing.assert_array_equal(images[labels == c],
                                  np.asarray(combine.tile(np.asarray(crops)[keep], k)))
    kept = np.asarray(losses)[keep]
    dropped = np.delete(np.asarray(losses), keep)
    assert kept.max() <= dropped.min()


def test_distill_is_deterministic_per_key_and_independent_of_batch_size():
  src = _gradient_source()
  a = _distill(src, jax.random.key(1), batch_size=4)
  b = _distill(src, jax.random.key(1), batch_size=7)  # other padding, same result
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  c = _distill(src, jax.random.key(2))
  assert not np.array_equal(a[2], c[2]) or not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("kw,pattern", [
    (dict(candidates=7), r"candidates_per_class=7 is smaller than the k\*k\*ipc=2\*2\*2=8"),
    (dict(candidates=13), r"candidates_per_class=13 is larger than the smallest class: class 0 "
                          r"\(c0\) has 12 examples"),
    (dict(k=0), "combine.k must be a positive integer"),
    (dict(batch_size=0), "rded.batch_size must be a positive integer"),
])
def test_distill_refuses_bad_settings(kw, pattern):
  with pytest.raises(ValueError, match=pattern):
    _distill(_gradient_source(), jax.random.key(0), **kw)


@pytest.mark.parametrize("field,value,pattern", [
    ("scale", (0.0, 1.0), r"rded.scale must be \(low, high\) with 0 < low <= high <= 1"),
    ("scale", (0.8, 0.5), r"rded.scale must be"),
    ("ratio", (2.0, 1.0), r"rded.ratio must be"),
    ("crops_per_image", 0, "rded.crops_per_image must be a positive integer"),
])
def test_check_settings_refuses_bad_crops(field, value, pattern):
  kw = dict(ipc=1, k=1, candidates_per_class=2, crops_per_image=2, scale=(0.5, 1.0),
            ratio=(1.0, 1.0), batch_size=4)
  kw[field] = value
  with pytest.raises(ValueError, match=pattern):
    rded.check_settings(np.arange(8) % 2, 2, **kw)


# ---- the benchmark hook ------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
  """One teacher cache for the module: the first run trains it, later runs reuse it."""
  return str(tmp_path_factory.mktemp("teachers"))


def _rded_config(teacher_dir, **kw):
  return tiny_config(method="rded", ipc=2, **{
      "combine.k": 2, "rded.candidates_per_class": 10, "rded.crops_per_image": 3,
      "rded.batch_size": 4, "teacher.cache_dir": teacher_dir, "teacher.epochs": 1,
      "teacher.model_kwargs.width": 4, "eval.epochs": 1, **kw})


@pytest.mark.parametrize("protocol,k", [("soft", 2), ("hard", 1)])
def test_benchmark_runs_rded(tmp_path, teacher_dir, protocol, k):
  c = _rded_config(teacher_dir, **{"eval.protocol": protocol, "combine.k": k})
  work = tmp_path / "run"
  r = benchmark.run(c, str(work))
  assert (r["method"], r["protocol"], r["combine_k"], r["num_images"],
          r["num_source_images"]) == ("rded", protocol, k, 8, 8 * k * k)
  assert np.isfinite(r["runs"][0]["final_loss"])
  assert (r["teacher"] is not None) == (protocol == "soft")
  assert (r["storage"]["soft_label_bytes"] > 0) == (protocol == "soft")
  images, labels, manifest = store.read_compressed(str(work / "compressed"))
  assert images.shape == (8, 16, 16, 3) and np.bincount(labels).tolist() == [2, 2, 2, 2]
  assert manifest["method"] == "rded"
  src = sources.open_source("synthetic", "train", synthetic=dict(c.data.synthetic))
  for lab, entry in zip(labels, manifest["files"]):
    idx = entry["source_indices"]
    assert len(idx) == k * k and all(src.labels[i] == lab for i in idx)
  # Same config, same key: the same compressed set.
  benchmark.run(c, str(tmp_path / "again"))
  again, _, _ = store.read_compressed(str(tmp_path / "again" / "compressed"))
  np.testing.assert_array_equal(again, images)


def test_rded_config_file():
  from configs import rded as rded_config
  c = rded_config.get_config()
  assert (c.method, c.combine.k, c.eval.protocol) == ("rded", 2, "soft")
  assert tuple(c.rded.scale) == (0.5, 1.0) and c.rded.candidates_per_class >= 4 * c.ipc


@pytest.mark.parametrize("kw,pattern", [
    ({"rded.candidates_per_class": 7}, "candidates_per_class=7 is smaller than"),
    ({"rded.candidates_per_class": 16}, "candidates_per_class=16 is larger than the smallest"),
    ({"rded.scale": (0.5, 1.5)}, "rded.scale must be"),
])
def test_benchmark_refuses_bad_rded_settings_before_training_a_teacher(tmp_path, kw, pattern):
  teachers, work = tmp_path / "teachers", tmp_path / "run"
  with pytest.raises(UserError, match=pattern):
    benchmark.run(_rded_config(str(teachers), **kw), str(work))
  assert not work.exists() and not teachers.exists()
