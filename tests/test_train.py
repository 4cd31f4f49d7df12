"""Tests for dcjax.protocols and dcjax.train: recipes, schedules, optimisers, the batch plan,
sharded student training (1 vs 8 simulated devices), determinism and evaluation."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dcjax import training
from dcjax import augment, models, protocols, train

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def tree_leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def tree_equal(a, b) -> bool:
  la, lb = tree_leaves(a), tree_leaves(b)
  return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


# ---------------------------------------------------------------------------------------------
# Protocols.


def test_resolve_returns_the_preset_with_its_name():
  for name, preset in protocols.PROTOCOLS.items():
    recipe = protocols.resolve(name)
    assert recipe.to_dict() == dict(preset, protocol=name)
    assert recipe.protocol == name


def test_recipe_is_frozen_and_checked_on_construction():
  recipe = protocols.resolve("hard")
  with pytest.raises(dataclasses.FrozenInstanceError):
    recipe.lr = 0.5
  with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
    recipe.replace(optimizer="adam")
  assert recipe.replace(lr=0.5).lr == 0.5 and recipe.lr == 1e-3


def test_resolve_applies_only_non_none_known_overrides():
  before = dict(protocols.PROTOCOLS["small_data"])
  recipe = protocols.resolve("small_data", {"lr": 0.5, "epochs": None, "batch_size": 32,
                                            "not_a_field": 1, "augment": "none"})
  assert recipe.lr == 0.5 and recipe.batch_size == 32 and recipe.augment == "none"
  assert recipe.epochs == before["epochs"] == 301  # None leaves the preset's value
  assert "not_a_field" not in recipe.to_dict()
  assert protocols.PROTOCOLS["small_data"] == before  # the preset itself is untouched


@pytest.mark.parametrize("overrides,match", [
    ({"optimizer": "adam"}, "unknown optimizer 'adam'; known: adamw, sgd"),
    ({"schedule": "linear"}, "unknown schedule 'linear'"),
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"batch_size": -1}, "batch_size must be an integer >= 1, got -1"),
    ({"lr": 0.0}, "lr must be a finite number > 0, got 0.0"),
    ({"lr": -1e-3}, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"weight_decay": -0.1}, "weight_decay must be a finite number >= 0"),
    ({"momentum": 1.0}, "momentum must be a finite number in"),
    ({"temperature": 0.0}, "temperature must be a finite number > 0"),
    ({"augment": "dsaa"}, "unknown augmentation 'dsaa'"),
    ({"mixing": "cutmx"}, "unknown mixing 'cutmx'"),
    ({"labels": "soft"}, "unknown label source 'soft'"),
])
def test_resolve_rejects_bad_overrides(overrides, match):
  with pytest.raises(ValueError, match=match):
    protocols.resolve("hard", overrides)


def test_resolve_unknown_protocol_lists_known_ones():
  with pytest.raises(ValueError, match="unknown protocol 'easy'") as e:
    protocols.resolve("easy")
  for name in protocols.PROTOCOLS:
    assert name in str(e.value)


# ---------------------------------------------------------------------------------------------
# Schedules and optimisers.


def test_lr_cosine_epoch():
  recipe = protocols.resolve("hard", dict(lr=0.1, epochs=10, schedule="cosine_epoch"))
  lrs = [float(training.lr_at_epoch(recipe, e)) for e in range(10)]
  assert lrs[0] == pytest.approx(0.1, rel=1e-6)
  assert lrs[5] == pytest.approx(0.05, rel=1e-6)
  assert lrs[9] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.9)), rel=1e-5)
  assert lrs[9] < 0.003
  assert all(b < a for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("epochs", [10, 7])
def test_lr_step_half(epochs):
  recipe = protocols.resolve("hard", dict(lr=0.2, epochs=epochs, schedule="step_half"))
  for e in range(epochs):
    want = 0.2 if e < epochs // 2 else 0.02
    assert float(training.lr_at_epoch(recipe, e)) == pytest.approx(want, rel=1e-6), e


@pytest.mark.parametrize("epochs", [301, 11, 4])
def test_lr_dc_step_decays_after_epoch_half_plus_one_of_epoch_minus_one(epochs):
  # The DC/DSA code: Epoch = epochs - 1, `for ep in range(Epoch + 1)`, and lr *= 0.1 after the
  # epoch ep == Epoch // 2 + 1, so epochs 0 .. Epoch//2 + 1 train at lr.
  recipe = protocols.resolve("small_data", dict(lr=0.01, epochs=epochs))
  assert recipe.schedule == "dc_step"
  big = (epochs - 1) // 2 + 2
  for e in range(epochs):
    want = 0.01 if e < big else 0.001
    assert float(training.lr_at_epoch(recipe, e)) == pytest.approx(want, rel=1e-6), e
  if epochs == 301:
    assert training.dc_step_boundary(epochs) == 152


def test_dc_step_sgd_restarts_momentum_at_the_decay_as_a_rebuilt_torch_optimizer():
  # torch: optimizer = SGD(...) rebuilt with lr * 0.1 after epoch Epoch // 2 + 1: the
  # momentum buffer starts again from the first gradient after the decay.
  recipe = protocols.resolve("small_data", dict(lr=0.1, weight_decay=0.05, epochs=5))
  spe = 2
  tx = training.make_optimizer(recipe, steps_per_epoch=spe)
  restart = training.dc_step_boundary(5) * spe  # Epoch = 4: decay after epoch 3 -> update 8
  assert restart == 8
  params = toy_params()
  opt_state = tx.init(params)
  rng = np.random.default_rng(1)
  p_ref = jax.tree.map(np.asarray, params)
  buf = None
  for step in range(5 * spe):
    g = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    lr = 0.1 if step < restart else 0.01
    if step == restart:
      buf = None
    d = jax.tree.map(lambda g, p: np.asarray(g) + 0.05 * p, g, p_ref)
    buf = d if buf is None else jax.tree.map(lambda b, d: 0.9 * b + d, buf, d)
    p_ref = jax.tree.map(lambda p, b, lr=lr: p - lr * b, p_ref, buf)
    updates, opt_state = tx.update(g, opt_state, params)
    params = optax.apply_updates(params, updates)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 params, p_ref)


def test_dsa_sees_normalised_images_and_rrc_sees_pixels():
  """The small-data protocol's DSA augments the normalised tensor (a zero fill is the dataset
  mean), the torchvision-style augmentations augment [0, 1] pixels."""
  model = models.get_model("convnet", 3, 8, width=4, depth=1, norm="none")
  mean, std = (0.3,), (0.2,)
  blank = lambda key, x: jnp.zeros_like(x)  # an augmentation that fills everything
  u8 = jnp.full((2, 8, 8, 1), 200, jnp.uint8)
  targets = jax.nn.one_hot(jnp.array([0, 1]), 3)
  w = jnp.ones(2)
  for normalised, model_input in ((True, 0.0), (False, (0.0 - 0.3) / 0.2)):
    recipe = protocols.resolve("small_data", dict(epochs=2))
    tx = training.make_optimizer(recipe, 1)
    state = training.init_state(model, tx, jax.random.key(0), (8, 8, 1))
    step = training.Step(model, tx, blank, mean, std, augment_normalised=normalised)
    _, _, logits = training.train_step(step, state, u8, targets, w, jax.random.key(1))
    want = model.apply(state.variables, jnp.full((2, 8, 8, 1), model_input), train=True)
    np.testing.assert_allclose(logits, want, rtol=1e-6, atol=1e-6)
  assert augment.in_normalised_space("dsa") and augment.in_normalised_space("tile_dsa")
  for name in ("dsa_pixel", "tile_dsa_pixel", "rrc_flip", "tile_crop", "flip", "none"):
    assert not augment.in_normalised_space(name)


def test_torch_init_of_convnet_matches_pytorch_default_bounds():
  model = models.get_model("convnet", 10, 28, width=64, depth=2, weight_init="torch")
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  flax_params = models.get_model("convnet", 10, 28, width=64, depth=2).init(
      jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  for name, fan_in in (("conv0", 9 * 1), ("conv1", 9 * 64), ("fc", 64 * 8 * 8)):
    bound = 1 / math.sqrt(fan_in)
    for leaf in ("kernel", "bias"):
      v = np.asarray(params[name][leaf])
      assert np.abs(v).max() <= bound + 1e-7, (name, leaf)
      if v.size > 500:  # U(-b, b): std b / sqrt(3)
        assert v.std() == pytest.approx(bound / math.sqrt(3), rel=0.1), (name, leaf)
      assert np.abs(v).max() > 0.5 * bound, (name, leaf)  # biases are not zero
    np.testing.assert_array_equal(flax_params[name]["bias"], 0.0)
  with pytest.raises(ValueError, match="unknown weight_init"):
    models.get_model("convnet", 10, 28, weight_init="he").init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def test_lr_constant():
  recipe = protocols.resolve("hard", dict(lr=0.3, epochs=4, schedule="constant"))
  assert [float(training.lr_at_epoch(recipe, e)) for e in range(4)] == pytest.approx([0.3] * 4)


def toy_params():
  return {"dense": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.full((2,), 3.0)},
          "norm": {"scale": jnp.full((2,), 4.0)}}


def zero_grads(params):
  return jax.tree.map(jnp.zeros_like, params)


def test_adamw_decays_only_matrices_and_steps_the_schedule_per_epoch():
  recipe = protocols.resolve("hard", dict(optimizer="adamw", lr=0.1, weight_decay=0.01,
                                          momentum=0.9, schedule="cosine_epoch", epochs=2))
  tx = training.make_optimizer(recipe, steps_per_epoch=3)
  params = toy_params()
  opt_state = tx.init(params)
  kernel = 2.0
  for step in range(4):
    updates, opt_state = tx.update(zero_grads(params), opt_state, params)
    lr = 0.1 if step < 3 else 0.05  # epoch 0 (steps 0-2) at lr, epoch 1 at lr/2
    # With zero gradients Adam's own update is 0: only decoupled decay lr * wd * p is left.
    np.testing.assert_allclose(updates["dense"]["kernel"], -lr * 0.01 * kernel, rtol=1e-5)
    np.testing.assert_array_equal(updates["dense"]["bias"], 0.0)  # 1-D: no decay
    np.testing.assert_array_equal(updates["norm"]["scale"], 0.0)
    params = optax.apply_updates(params, updates)
    kernel = kernel - lr * 0.01 * kernel


def test_sgd_couples_decay_into_every_parameter_with_torch_momentum():
  recipe = protocols.resolve("hard", dict(optimizer="sgd", lr=0.1, weight_decay=0.05,
                                          momentum=0.9, schedule="constant", epochs=5))
  tx = training.make_optimizer(recipe, steps_per_epoch=2)
  params = toy_params()
  opt_state = tx.init(params)
  rng = np.random.default_rng(0)
  grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
           for _ in range(3)]
  # torch.optim.SGD: d = g + wd * p; buf = momentum * buf + d (buf = d at first); p -= lr * buf.
  p_ref = jax.tree.map(np.asarray, params)
  buf = None
  for g in grads:
    d = jax.tree.map(lambda g, p: np.asarray(g) + 0.05 * p, g, p_ref)
    buf = d if buf is None else jax.tree.map(lambda b, d: 0.9 * b + d, buf, d)
    p_ref = jax.tree.map(lambda p, b: p - 0.1 * b, p_ref, buf)
    updates, opt_state = tx.update(g, opt_state, params)
    params = optax.apply_updates(params, updates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), params, p_ref)
  # Zero gradient: coupled decay still moves every parameter, 1-D ones included.
  tx = training.make_optimizer(recipe, steps_per_epoch=2)
  p0 = toy_params()
  updates, _ = tx.update(zero_grads(p0), tx.init(p0), p0)
  jax.tree.map(lambda u, p: np.testing.assert_allclose(u, -0.1 * 0.05 * p, rtol=1e-6), updates, p0)


# ---------------------------------------------------------------------------------------------
# Batch plan and mesh.


@pytest.mark.parametrize("n,b,d,want", [
    (100, 256, 1, (100, 1)),
    (100, 256, 8, (104, 1)),
    (300, 128, 1, (128, 3)),
    (300, 128, 8, (128, 3)),
    (256, 128, 1, (128, 2)),
    (5, 16, 8, (8, 1)),
])
def test_batch_plan_examples(n, b, d, want):
  assert training.batch_plan(n, b, d) == want


def test_batch_plan_properties():
  for n in (1, 7, 64, 100, 129):
    for b in (1, 8, 32, 256):
      for d in (1, 3, 8):
        batch, steps = training.batch_plan(n, b, d)
        real = min(n, b)
        assert batch % d == 0 and real <= batch < real + d
        assert (steps - 1) * real < n <= steps * real


def test_make_mesh():
  assert jax.device_count() == 8  # conftest: 8 simulated CPU devices
  assert train.make_mesh(1).shape["data"] == 1
  assert train.make_mesh(8).shape["data"] == 8
  assert train.make_mesh().shape["data"] == 8
  assert train.make_mesh(1).axis_names == ("data",)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_registered_model_exposes_its_class_count(name):
  # train_step one-hot encodes labels with model.num_classes, whatever the classifier's name.
  model = models.get_model(name, 7, 32)
  variables = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False),
                             jax.random.key(0))
  assert model.num_classes == 7
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3)), train=False),
                          variables)
  assert logits.shape == (2, 7)


# ---------------------------------------------------------------------------------------------
# Student training.


def toy_set(n, size=16, num_classes=4, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
  labels = (np.arange(n) % num_classes).astype(np.int32)
  return images, labels


def make_student(num_devices, norm="instance", aug="none", num_classes=4, **overrides):
  recipe = protocols.resolve("small_data", dict(dict(augment=aug, batch_size=16, epochs=1),
                                                **overrides))
  model = models.get_model("convnet", num_classes, 16, width=8, norm=norm)
  return train.Student(model, recipe, augment.get_augmentation(recipe.augment), MEAN, STD,
                       train.make_mesh(num_devices))


def one_epoch(student, images, labels, seed=0, return_init=False):
  n = len(labels)
  state, _ = student.init(jax.random.key(seed), n, images.shape[1:])
  init_params = jax.device_get(state.params)  # host copy: the step donates the state
  train_epoch = student.train_epoch_fn(n)
  state, loss = train_epoch(state, jnp.asarray(images), jnp.asarray(labels),
                            jax.random.key(seed + 1))
  return (state, float(loss), init_params) if return_init else (state, float(loss))


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_epoch_on_8_devices_matches_1_device(norm):
  # 44 examples, batch 16: three steps, the last with 12 real examples and 4 zero-weight ones.
  images, labels = toy_set(44)
  s1, loss1, p0 = one_epoch(make_student(1, norm), images, labels, return_init=True)
  s8, loss8 = one_epoch(make_student(8, norm), images, labels)
  assert math.isfinite(loss1) and loss1 > 0
  assert loss8 == pytest.approx(loss1, rel=1e-4)
  assert int(s1.step) == int(s8.step) == 3
  assert not tree_equal(p0, s1.params)  # it trained
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               s1.params, s8.params)
  if norm == "batch":
    assert s1.batch_stats and s8.batch_stats
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 s1.batch_stats, s8.batch_stats)


# The step batch is 12 on 1 device and 16 on 8 (4 wrapped-around rows of weight zero): the mask
# keeps the padding out of the batch statistics, so both give the same result.
def test_batchnorm_epoch_with_device_padding_matches_1_device():
  images, labels = toy_set(12)
  s1, loss1 = one_epoch(make_student(1, "batch", batch_size=256), images, labels)
  s8, loss8 = one_epoch(make_student(8, "batch", batch_size=256), images, labels)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               s1.batch_stats, s8.batch_stats)
  assert loss8 == pytest.approx(loss1, rel=1e-4)


class IndexModel(nn.Module):
  """logits = [t[i], 0] for the example whose single pixel holds i. With label 0 the gradient
  of example i's cross-entropy reaches only t[i], so after one epoch of plain SGD each t[i]
  records how often, and with what weight, example i was used. (`fc` is a zero-input layer
  only there to give the model a conventional classifier.)"""

  n: int
  num_classes: int = 2

  @nn.compact
  def __call__(self, x, train=False):
    t = self.param("t", nn.initializers.zeros, (self.n,))
    idx = jnp.round(x[:, 0, 0, 0]).astype(jnp.int32)
    zero = nn.Dense(2, use_bias=False, kernel_init=nn.initializers.zeros,
                    name="fc")(jnp.zeros((x.shape[0], 1), x.dtype))
    return jnp.stack([t[idx], jnp.zeros_like(t[idx])], axis=-1) + zero


@pytest.mark.parametrize("n,batch_size,num_devices", [(21, 8, 8), (21, 8, 1), (5, 16, 8)])
def test_every_example_is_used_once_per_epoch_with_weight_one(n, batch_size, num_devices):
  recipe = protocols.resolve("small_data", dict(optimizer="sgd", lr=1.0, weight_decay=0.0,
                                                momentum=0.0, schedule="constant",
                                                batch_size=batch_size, epochs=1, augment="none"))
  # mean 0, std 1/255: the normalised pixel is the uint8 value itself.
  student = train.Student(IndexModel(n), recipe, augment.get_augmentation("none"), (0.0,),
                          (1 / 255,), train.make_mesh(num_devices))
  images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
  labels = np.zeros(n, np.int32)
  state, loss = one_epoch(student, images, labels)
  # Each step's loss is the mean over its real examples: log 2 at t = 0.
  assert loss == pytest.approx(math.log(2), rel=1e-6)
  # d/dt of log(1 + e^-t) at 0 is -1/2, divided by the step's number of real examples.
  real = min(batch_size, n)
  steps = -(-n // real)
  last = n - (steps - 1) * real
  expected = sorted([0.5 / real] * (n - last) + [0.5 / last] * last)
  np.testing.assert_allclose(sorted(np.asarray(state.params["t"])), expected, rtol=1e-5)
  np.testing.assert_array_equal(state.params["fc"]["kernel"], 0.0)


def test_train_student_is_deterministic_per_seed():
  student = make_student(8, aug="flip", batch_size=8, epochs=2)
  images, labels = toy_set(20)
  v0, stats0 = train.train_student(student, images, labels, 0, progress=False)
  v0b, stats0b = train.train_student(student, images, labels, 0, progress=False)
  v1, _ = train.train_student(student, images, labels, 1, progress=False)
  assert tree_equal(v0, v0b)  # bitwise on CPU
  assert stats0["final_loss"] == stats0b["final_loss"]
  assert math.isfinite(stats0["final_loss"])
  assert stats0["train_seconds"] > 0 and stats0["images_per_second"] > 0
  assert not any(np.array_equal(a, b) for a, b in zip(tree_leaves(v0), tree_leaves(v1)))


def test_train_student_raises_on_absurd_lr_naming_the_seed():
  student = make_student(1, batch_size=8, epochs=3, lr=1e30, momentum=0.0)
  images, labels = toy_set(16)
  with pytest.raises(FloatingPointError, match=r"non-finite training loss .*seed 7"):
    train.train_student(student, images, labels, 7, progress=False)


# ---------------------------------------------------------------------------------------------
# Evaluation.


def numpy_topk(logits, labels, k):
  order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
  return 100.0 * np.mean([labels[i] in order[i] for i in range(len(labels))])


@pytest.mark.parametrize("num_devices,batch_size", [(8, 4), (1, 5)])
def test_evaluate_matches_numpy_topk_with_padding(num_devices, batch_size):
  n, num_classes = 13, 10
  student = make_student(num_devices, norm="batch", num_classes=num_classes)
  images, _ = toy_set(n, seed=3)
  state, _ = student.init(jax.random.key(0), n, images.shape[1:])
  variables = jax.device_get(state.variables)
  x = (images.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)
  logits = np.asarray(student.model.apply(variables, x, train=False), np.float64)
  assert (np.diff(np.sort(logits, axis=1), axis=1) > 1e-5).all()  # no near-ties in a row
  # Labels at every rank 0..6 of each example's logits: some top-1 hits, some top-5 only, some
  # misses.
  ranks = np.argsort(-logits, axis=1)
  labels = np.array([ranks[i, i % 7] for i in range(n)], np.int32)
  top1, top5 = train.evaluate(student, student.eval_fn(), state.variables, images, labels,
                              batch_size=batch_size)
  assert top1 == pytest.approx(numpy_topk(logits, labels, 1), abs=1e-9)
  assert top5 == pytest.approx(numpy_topk(logits, labels, 5), abs=1e-9)
  assert top1 == pytest.approx(100 * 2 / 13) and top5 == pytest.approx(100 * 10 / 13)


def test_evaluate_top5_is_100_with_at_most_5_classes():
  # 13 examples in batches of 8 on 8 devices: 3 padded rows that must not count.
  n = 13
  student = make_student(8, num_classes=3)
  images, labels = toy_set(n, num_classes=3, seed=4)
  state, _ = student.init(jax.random.key(0), n, images.shape[1:])
  x = (images.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)
  logits = np.asarray(student.model.apply(jax.device_get(state.variables), x, train=False))
  top1, top5 = train.evaluate(student, student.eval_fn(), state.variables, images, labels,
                              batch_size=4)
  assert top5 == 100.0
  assert top1 == pytest.approx(numpy_topk(logits, labels, 1), abs=1e-9)


def test_recipe_names_agree_with_the_registries():
  """protocols keeps the augmentation and mixing names as strings (to validate a recipe
  without building one); they must be exactly what augment and mixing register."""
  from dcjax import mixing  # pylint: disable=g-import-not-at-top
  assert set(protocols.AUGMENTS) == set(augment.AUGMENTATIONS) | set(augment.TILE_AUGMENTATIONS)
  assert augment.NORMALISED_SPACE <= set(protocols.AUGMENTS)
  assert set(protocols.MIXINGS) == set(mixing.MIXINGS)
