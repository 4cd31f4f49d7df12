"""Tests for dcjax.models: output shapes, parameter counts, BatchNorm state and one training step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import models

# XLA:CPU spends ~10 s optimising ResNet-18's init; these tests check values, not speed.
FAST = dict(xla_backend_optimization_level=0, xla_llvm_disable_expensive_passes=True)


def n_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def param_shapes(model, shape):
  """Parameter shapes of `model` for inputs of `shape`, without running anything."""
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def logits_shape(model, shape):
  """Shape and dtype of the logits of a freshly initialised `model` (traced, not run: the
  training tests below run the models for real)."""
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda k, x: model.apply(model.init(k, x), x, train=False),
                        jax.random.key(0), x)


# ---------------------------------------------------------------------------------------------
# Shapes.


@pytest.mark.parametrize("name", sorted(models.MODELS))
@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_logits_shape_dtype(name, size, channels):
  model = models.get_model(name, 7, size)
  logits = logits_shape(model, (2, size, size, channels))
  assert logits.shape == (2, 7)
  assert logits.dtype == jnp.float32


def test_resnet18_imagenet_stem_at_64px():
  model = models.get_model("resnet18", 5, 64, stem="imagenet")
  logits = logits_shape(model, (2, 64, 64, 3))
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32


def test_resnet18_auto_stem_follows_image_size():
  small = param_shapes(models.get_model("resnet18", 10, 64), (1, 64, 64, 3))["params"]
  large = param_shapes(models.get_model("resnet18", 10, 65), (1, 65, 65, 3))["params"]
  assert small["conv1"]["kernel"].shape == (3, 3, 3, 64)  # lowres stem
  assert large["conv1"]["kernel"].shape == (7, 7, 3, 64)  # imagenet stem


def test_get_model_passes_kwargs():
  model = models.get_model("convnet", 4, 32, width=8, depth=2, norm="batch")
  assert isinstance(model, models.ConvNet)
  assert (model.num_classes, model.width, model.depth, model.norm) == (4, 8, 2, "batch")
  v = param_shapes(model, (1, 32, 32, 3))
  assert models.has_batch_stats(v)
  assert not models.has_batch_stats(param_shapes(models.get_model("convnet", 4, 32), (1, 32, 32, 3)))


# ---------------------------------------------------------------------------------------------
# Parameter counts.


def test_convnet3_parameter_count_by_hand():
  conv = lambda cin, cout: 3 * 3 * cin * cout + cout  # kernel + bias
  norm = 2 * 128  # instance-norm scale + bias per layer
  fc = (4 * 4 * 128) * 10 + 10
  expected = conv(1, 128) + norm + conv(128, 128) + norm + conv(128, 128) + norm + fc
  assert expected == 317_706
  v = param_shapes(models.get_model("convnet", 10, 28), (1, 28, 28, 1))
  assert set(v) == {"params"}
  assert n_params(v["params"]) == expected
  # 28 px inputs are padded to 32 px: both sizes end in the same 4x4x128 feature map.
  v32 = param_shapes(models.get_model("convnet", 10, 32), (1, 32, 32, 1))
  assert v["params"]["fc"]["kernel"].shape == v32["params"]["fc"]["kernel"].shape == (2048, 10)


def test_resnet18_imagenet_parameter_count_matches_torchvision():
  model = models.get_model("resnet18", 1000, 224, stem="imagenet")
  v = param_shapes(model, (1, 64, 64, 3))  # parameter shapes do not depend on the input size
  assert n_params(v["params"]) == 11_689_512
  # running mean + var of every BatchNorm: 2 * (64 + 4*64 + 4*128 + 4*256 + 4*512 + 128 + 256 + 512)
  assert n_params(v["batch_stats"]) == 2 * 4800


def test_unknown_model_lists_known_names():
  with pytest.raises(ValueError, match="unknown model 'vgg11'") as e:
    models.get_model("vgg11", 10, 32)
  for name in models.MODELS:
    assert name in str(e.value)


# ---------------------------------------------------------------------------------------------
# Training steps.


def make_step(model, lr=0.05):
  """One jitted SGD step on softmax cross-entropy; also returns the state that an eval-mode
  apply (with batch_stats mutable) would write."""

  def step(params, batch_stats, x, y):
    def loss_fn(p):
      v = {"params": p}
      if batch_stats:
        v["batch_stats"] = batch_stats
        logits, upd = model.apply(v, x, train=True, mutable=["batch_stats"])
        new_stats = upd["batch_stats"]
      else:
        logits, new_stats = model.apply(v, x, train=True), batch_stats
      logp = jax.nn.log_softmax(logits)
      return -jnp.mean(logp[jnp.arange(y.shape[0]), y]), new_stats

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    if batch_stats:
      _, upd = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False,
                           mutable=["batch_stats"])
      eval_stats = upd["batch_stats"]
    else:
      eval_stats = batch_stats
    params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    return params, new_stats, loss, eval_stats

  return jax.jit(step, compiler_options=FAST)


TINY = {
    "convnet": dict(width=8),
    "convnet_batch": dict(width=8, norm="batch"),
    "convnet_none": dict(width=8, norm="none"),
    "resnet18": dict(width=8),
}


@pytest.mark.parametrize("variant", sorted(TINY))
def test_training_steps_reduce_loss(variant):
  name = variant.split("_")[0]
  assert name in models.MODELS
  model = models.get_model(name, 4, 16, **TINY[variant])
  x = jax.random.uniform(jax.random.key(1), (8, 16, 16, 3))
  y = jnp.arange(8) % 4
  variables = jax.jit(model.init, compiler_options=FAST)(jax.random.key(0), x[:1])
  params, stats = variables["params"], variables.get("batch_stats", {})
  step = make_step(model)
  losses = []
  p, s = params, stats
  for _ in range(6):
    p, s_new, loss, eval_stats = step(p, s, x, y)
    losses.append(float(loss))
    # Eval mode never writes the running statistics.
    jax.tree.map(np.testing.assert_array_equal, eval_stats, s)
    s = s_new
  assert all(np.isfinite(losses))
  # Small gradient steps on a fixed batch: the loss goes down at every step.
  assert all(b < a for a, b in zip(losses, losses[1:])), losses
  # Without normalisation the tiny net's logits start near zero and move slowly.
  assert losses[-1] < losses[0] - (1e-3 if variant == "convnet_none" else 0.1), losses
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(p)):
    assert np.isfinite(np.asarray(b)).all()
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(p)))
  if name == "resnet18" or "batch" in variant:
    assert stats and models.has_batch_stats(variables)
    # Train mode moved every running mean away from its initial zeros.
    for path, m in jax.tree_util.tree_leaves_with_path(s):
      if "mean" in jax.tree_util.keystr(path):
        assert np.abs(np.asarray(m)).max() > 0, path
  else:
    assert not stats


def conv3x3_numpy(x, kernel, bias, pad):
  """NumPy 'SAME'-style 3x3 convolution with explicit zero padding (NHWC, HWIO)."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  n, h, w, _ = x.shape
  out = np.zeros((n, h - 2, w - 2, kernel.shape[-1]), np.float64)
  for dy in range(3):
    for dx in range(3):
      out += np.einsum("nhwc,co->nhwo", x[:, dy:dy + h - 2, dx:dx + w - 2], kernel[dy, dx])
  return out + bias


def test_batchnorm_running_stats_follow_torch_momentum():
  """After one train-mode apply, running mean = 0.9 * 0 + 0.1 * batch mean of the first conv's
  output (global over the batch and spatial positions), and running var = 0.9 * 1 + 0.1 * var."""
  model = models.ConvNet(num_classes=3, width=4, depth=1, norm="batch")
  x = np.asarray(jax.random.normal(jax.random.key(2), (6, 8, 8, 2)))
  variables = jax.jit(model.init, compiler_options=FAST)(jax.random.key(0), jnp.asarray(x[:1]))
  _, upd = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
                   compiler_options=FAST)(variables, jnp.asarray(x))
  conv = variables["params"]["conv0"]
  y = conv3x3_numpy(x.astype(np.float64), np.asarray(conv["kernel"], np.float64),
                    np.asarray(conv["bias"], np.float64), pad=1)
  bn = upd["batch_stats"]["norm0"]
  np.testing.assert_allclose(bn["mean"], 0.1 * y.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(bn["var"], 0.9 + 0.1 * y.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
