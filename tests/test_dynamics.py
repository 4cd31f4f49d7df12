"""Tests for dcjax.dynamics: k vmapped models scored online (EL2N, forgetting, AUM), on a tiny
synthetic set (32 images 8x8x1, 4 classes, ConvNet width 4 depth 1). Compiled programs are
memoised per configuration, so tests sharing one reuse it."""

import jax
import numpy as np
import pytest

from dcjax import training
from dcjax import models, protocols, scores, train
from dcjax.runners import dynamics
from dcjax.errors import UserError

MEAN, STD = (0.5,), (0.25,)
N, K = 32, 4


def tiny_set():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(N, 8, 8, 1), dtype=np.uint8)
  labels = (np.arange(N) % K).astype(np.int32)
  return images, labels


def run(num_devices=1, norm="instance", **kw):
  images, labels = tiny_set()
  # batch 12: three steps per epoch, the last with 8 real rows and 4 padding rows (more on 8
  # devices, where the batch rounds up to 16).
  recipe = protocols.resolve("hard", dict(batch_size=12, augment="flip"))
  model = models.get_model("convnet", K, 8, width=4, depth=1, norm=norm)
  args = dict(num_classes=K, model=model, recipe=recipe, mean=MEAN, std=STD, num_models=2,
              epochs=2, seed=0, mesh=train.make_mesh(num_devices), progress=False)
  return dynamics.score_dynamics(images, labels, **dict(args, **kw))


def assert_close(a, b, rtol=1e-4, atol=1e-5):
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)


def test_shapes_dtypes_finite_and_determinism():
  out = run()
  assert set(out) == {"el2n", "forgetting", "aum"}
  for name, s in out.items():
    assert s.dtype == np.float32 and s.shape == (N,), name
    assert np.isfinite(s).all(), name
  assert ((out["el2n"] >= 0) & (out["el2n"] <= np.sqrt(2) + 1e-6)).all()
  # 2 epochs: at most 1 forgetting event per model, or max + 1 for never-learned examples.
  assert (out["forgetting"] >= 0).all() and (out["forgetting"] <= 2).all()
  again = run()
  for name in out:
    np.testing.assert_array_equal(out[name], again[name])  # bitwise on CPU
  other = run(seed=1)
  assert not np.array_equal(out["aum"], other["aum"])


def test_scores_subset_and_early_el2n():
  only = run(scores=("aum",))
  assert set(only) == {"aum"}
  np.testing.assert_array_equal(only["aum"], run()["aum"])
  # EL2N after epoch 1 differs from EL2N after the last epoch; AUM is unaffected.
  early = run(el2n_epoch=1)
  assert not np.allclose(early["el2n"], run()["el2n"])
  np.testing.assert_array_equal(early["aum"], only["aum"])


class Interrupt(Exception):
  pass


def test_resumed_run_equals_straight_run(tmp_path):
  straight = run()

  def stop_after_first_epoch(epoch, info):
    assert np.isfinite(info["loss"])
    raise Interrupt  # "killed" after epoch 0's checkpoint is on disk

  with pytest.raises(Interrupt):
    run(checkpoint_dir=str(tmp_path), on_epoch=stop_after_first_epoch)
  seen = []
  resumed = run(checkpoint_dir=str(tmp_path), on_epoch=lambda e, info: seen.append(e))
  assert seen == [1]  # only the second epoch ran
  for name in straight:
    np.testing.assert_array_equal(resumed[name], straight[name])
  # A finished run is read back without training.
  seen.clear()
  done = run(checkpoint_dir=str(tmp_path), on_epoch=lambda e, info: seen.append(e))
  assert seen == []
  np.testing.assert_array_equal(done["forgetting"], straight["forgetting"])
  # Another configuration in the same directory is refused, naming what differs.
  with pytest.raises(UserError, match="differs in.*seed"):
    run(checkpoint_dir=str(tmp_path), seed=3)


def test_single_model_el2n_is_scores_el2n_of_its_eval_logits():
  images, labels = tiny_set()
  out, variables = run(num_models=1, return_params=True)
  assert jax.tree.leaves(variables)[0].shape[0] == 1
  single = jax.tree.map(lambda a: a[0], variables)
  model = models.get_model("convnet", K, 8, width=4, depth=1)
  logits = model.apply(single, training.normalise(images, MEAN, STD), train=False)
  np.testing.assert_allclose(out["el2n"], scores.el2n(logits, labels), rtol=1e-5, atol=1e-6)


def test_vmapped_models_equal_models_trained_one_at_a_time():
  both, v = run(return_params=True)
  alone = [run(num_models=1, first_model=m, return_params=True) for m in range(2)]
  # Not conv0's bias: instance norm removes it, so its true gradient is 0 and Adam scales the
  # rounding noise of a vmapped vs an unbatched conv up to lr-sized steps of random sign.
  for tree in (v, *(vm for _, vm in alone)):
    tree["params"]["conv0"].pop("bias")
  for m, (_, vm) in enumerate(alone):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[m], b[0], rtol=1e-4, atol=1e-5),
                 v, vm)
  mean = {name: np.mean([s[name] for s, _ in alone], axis=0) for name in both}
  assert_close(both, mean)
  # The two models differ (different init keys), so the mean is over distinct runs.
  assert not np.allclose(v["params"]["fc"]["kernel"][0], v["params"]["fc"]["kernel"][1])


# BatchNorm under SGD: with Adam, the conv bias in front of the norm (true gradient 0) takes
# lr-sized steps driven by rounding noise, which the eval-mode running mean then tracks.
@pytest.mark.parametrize("norm,protocol", [("instance", "hard"), ("batch", "small_data")])
def test_8_devices_equal_1_device(norm, protocol):
  recipe = protocols.resolve(protocol, dict(batch_size=12, augment="flip"))
  one, v1 = run(1, norm, recipe=recipe, return_params=True)
  eight, v8 = run(8, norm, recipe=recipe, return_params=True)
  assert_close(one, eight)
  if norm == "batch":  # padding rows are masked out of the batch statistics
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 v1["batch_stats"], v8["batch_stats"])


@pytest.mark.parametrize("kw,match", [
    (dict(scores=("el2n", "grand")), "unknown score\\(s\\) 'grand'; known: el2n, forgetting, aum"),
    (dict(el2n_epoch=3), "el2n_epoch must be an integer in \\[0, epochs=2\\], got 3"),
    (dict(num_models=0), "num_models must be an integer >= 1, got 0"),
    (dict(epochs="2"), "epochs must be an integer >= 1, got '2'"),
    (dict(scores=()), "no scores asked for; choose from el2n, forgetting, aum"),
    (dict(num_classes=3), "labels outside \\[0, 3\\) at 8 example\\(s\\), indices \\[3, 7, 11"),
])
def test_bad_input_is_refused(kw, match):
  with pytest.raises(UserError, match=match):
    run(**kw)


def test_bad_images_are_refused():
  images, labels = tiny_set()
  with pytest.raises(UserError, match="images uint8 \\[N, H, W, C\\], got float32"):
    dynamics.score_dynamics(images.astype(np.float32), labels, num_classes=K,
                            model=models.get_model("convnet", K, 8, width=4, depth=1),
                            recipe=protocols.resolve("hard"), mean=MEAN, std=STD, epochs=1,
                            seed=0, progress=False)
