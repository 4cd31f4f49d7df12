"""SRe2L's recover (dcjax.sre2l), its cached runner (dcjax.runners.recover) and method=sre2l."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import benchmark, models, sre2l
from dcjax.errors import UserError
from dcjax.runners import recover
from test_benchmark import tiny_config

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class OneBN(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.BatchNorm(use_running_average=not train)(x)
    return nn.Dense(4)(x.mean((1, 2)))


def test_bn_term_is_the_distance_of_batch_to_running_statistics():
  x = jax.random.normal(jax.random.key(0), (6, 5, 5, 3)) * 2 + 1
  model = OneBN()
  v = model.init(jax.random.key(1), x)
  run_mean, run_var = jnp.array([0.1, 0.2, 0.3]), jnp.array([1.0, 2.0, 3.0])
  v = {"params": v["params"], "batch_stats": {"BatchNorm_0": {"mean": run_mean, "var": run_var}}}
  logits, bn = sre2l.logits_and_bn_loss(model, v, x, first_multiplier=10.0)
  want = 10.0 * (np.linalg.norm(np.var(x, (0, 1, 2)) - run_var)
                 + np.linalg.norm(np.mean(x, (0, 1, 2)) - run_mean))
  np.testing.assert_allclose(bn, want, rtol=1e-5)
  np.testing.assert_allclose(logits, model.apply(v, x), rtol=1e-6)


def test_a_model_without_batchnorm_is_refused():
  model = models.get_model("convnet", 4, 16, width=8, norm="instance")
  v = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
  with pytest.raises(ValueError, match="no BatchNorm layer"):
    sre2l.logits_and_bn_loss(model, v, jnp.zeros((2, 16, 16, 3)))


def _teacher():
  """A ConvNet with BatchNorm whose running statistics are those of structured 'real' data."""
  model = models.get_model("convnet", 4, 16, width=8, norm="batch")
  key = jax.random.key(0)
  real = jax.random.uniform(key, (64, 16, 16, 3)) ** 2  # not Gaussian noise
  real = (real - jnp.asarray(MEAN)) / jnp.asarray(STD)
  v = model.init(key, real[:1], train=False)
  for _ in range(30):  # running statistics converge to the real batch's (momentum 0.9)
    _, upd = model.apply(v, real, train=True, mutable=["batch_stats"])
    v = {"params": v["params"], "batch_stats": upd["batch_stats"]}
  return model, v


def _run(state, key, labels, model, v, n, iterations=200):
  f = jax.jit(lambda s, k, y: sre2l.recover_steps(
      s, k, y, model, v, num_steps=n, iterations=iterations, lr=0.25, r_bn=0.01,
      first_multiplier=10.0, max_shift=2, flip=True, mean=MEAN, std=STD))
  return f(state, key, labels)


def test_recover_lowers_the_bn_term_and_keeps_images_in_range():
  model, v = _teacher()
  labels = jnp.arange(4)
  state = sre2l.init(jax.random.key(2), 4, (16, 16, 3), lr=0.25, iterations=200)
  _, bn0 = sre2l.logits_and_bn_loss(model, v, jnp.clip(state.images, -2, 2))
  ce0 = float(_run(state, jax.random.key(3), labels, model, v, 1)[1][0])
  state, parts = _run(state, jax.random.key(3), labels, model, v, 200)
  assert int(state.step) == 200
  assert float(parts[1]) < 0.5 * float(bn0)  # BN statistics pulled to the running ones
  assert float(parts[0]) < ce0
  lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
  assert float(state.images.min()) >= lo and float(state.images.max()) <= hi
  pixels = np.asarray(sre2l.to_uint8(state.images, MEAN, STD))
  assert pixels.dtype == np.uint8 and pixels.shape == (4, 16, 16, 3)


def test_chunked_recover_equals_one_loop():
  model, v = _teacher()
  labels = jnp.arange(4)
  state = sre2l.init(jax.random.key(2), 4, (16, 16, 3), lr=0.25, iterations=20)
  whole, _ = _run(state, jax.random.key(5), labels, model, v, 20, iterations=20)
  half, _ = _run(state, jax.random.key(5), labels, model, v, 10, iterations=20)
  half, _ = _run(half, jax.random.key(5), labels, model, v, 10, iterations=20)
  np.testing.assert_allclose(half.images, whole.images, rtol=1e-5, atol=1e-5)


def test_recover_set_resumes_from_finished_batches_and_groups_by_class(tmp_path):
  model, v = _teacher()
  kw = dict(ipc=3, num_classes=4, image_shape=(16, 16, 3), mean=MEAN, std=STD,
            settings=dict(iterations=6, classes_per_batch=3), chunk=4, progress=False)
  path = str(tmp_path / "set")
  images, labels = recover.recover_set(model, v, jax.random.key(0), path=path, **kw)
  assert images.shape == (12, 16, 16, 3) and list(labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
  files = sorted(os.listdir(path))
  assert len([f for f in files if f.endswith(".npz")]) == 3 * 2 and "done.json" in files
  os.unlink(os.path.join(path, "batch_00001_0001.npz"))  # as if killed before that batch
  again, _ = recover.recover_set(model, v, jax.random.key(0), path=path, **kw)
  np.testing.assert_array_equal(again, images)
  other, _ = recover.recover_set(model, v, jax.random.key(1), path=str(tmp_path / "k1"), **kw)
  assert not np.array_equal(other, images)


@pytest.mark.parametrize("bad, match", [
    (dict(iterations=0), "iterations"), (dict(lr=0.0), "lr"), (dict(r_bn=-1.0), "r_bn"),
    (dict(classes_per_batch=0), "classes_per_batch"), (dict(jitter=-1), "jitter")])
def test_bad_settings_are_named(bad, match):
  with pytest.raises(ValueError, match=match):
    recover.check_settings(bad)


def _tiny(**over):
  return tiny_config(method="sre2l", ipc=2, **{"sre2l.iterations": 12,
                                               "sre2l.teacher.epochs": 1,
                                               "sre2l.teacher.model_kwargs.width": 8, **over})


def test_method_sre2l_end_to_end_reuses_its_cached_set(tmp_path):
  over = {"sre2l.cache_dir": str(tmp_path / "sets"),
          "sre2l.teacher.cache_dir": str(tmp_path / "teachers")}
  r = benchmark.run(_tiny(**over), str(tmp_path / "a"))
  assert r["method"] == "sre2l" and r["num_images"] == 8 and r["num_source_images"] == 0
  assert 0 <= r["top1_mean"] <= 100
  (entry,) = os.listdir(tmp_path / "sets")
  stamp = os.path.getmtime(tmp_path / "sets" / entry / "done.json")
  r2 = benchmark.run(_tiny(**over), str(tmp_path / "b"))  # same set, read from the cache
  assert os.path.getmtime(tmp_path / "sets" / entry / "done.json") == stamp
  assert [x["top1"] for x in r2["runs"]] == [x["top1"] for x in r["runs"]]
  # results.json names the BatchNorm teacher the images came from (its cache entry and test
  # figures), the same one both times; SRe2L selects with no feature teacher.
  (teacher,) = os.listdir(tmp_path / "teachers")
  assert r["sre2l_teacher"]["name"] == teacher and r2["sre2l_teacher"] == r["sre2l_teacher"]
  assert 0 <= r["sre2l_teacher"]["top1"] <= 100 and r["feature_teacher"] is None


@pytest.mark.parametrize("over, match", [
    ({"combine.k": 2}, "combine.k=1"),
    ({"sre2l.iterations": 0}, "iterations"),
    ({"sre2l.teacher.model_kwargs.norm": "instance"}, "no BatchNorm layer"),
])
def test_bad_sre2l_configs_are_refused_before_anything_is_written(tmp_path, over, match):
  work = tmp_path / "run"
  with pytest.raises(UserError, match=match):
    benchmark.run(_tiny(**over), str(work))
  assert not work.exists() or not os.listdir(work)


@pytest.mark.parametrize("arg, dataset", [("", "fashion_mnist"), ("cifar10_shared", "parquet:")])
def test_sre2l_config_file(arg, dataset):
  from configs import sre2l as sre2l_config
  c = sre2l_config.get_config(arg)
  assert (c.method, c.combine.k, c.eval.protocol) == ("sre2l", 1, "soft")
  assert c.dataset.startswith(dataset) and c.sre2l.teacher.model_kwargs.norm == "batch"
  assert (c.sre2l.iterations, c.sre2l.lr, c.sre2l.r_bn) == (1000, 0.25, 0.01)
  with pytest.raises(ValueError, match="takes"):
    sre2l_config.get_config("imagenet")
