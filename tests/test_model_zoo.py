"""Every registered model (`dcjax.models.MODELS`): logits shape / dtype at 32 px, one SGD step,
and the torchvision (timm for ViT) parameter counts at 224 px and 1000 classes.

Kept fast on a small CPU (the heavy models cost seconds of XLA compilation each):
- parameter counts come from `jax.eval_shape` (nothing allocated or compiled);
- each model is compiled once, in one jitted function that returns its eval-mode logits and
  takes one SGD step on a fixed batch; the shape and training tests share that result;
- the variables for that step are drawn on the host, to the exact tree `model.init` gives
  (`eval_shape`): jitting `model.init` itself compiles one RNG kernel per parameter (~300 for
  resnet101), which doubles the cost. The real initialisers run in
  `test_real_init_of_small_variants`, on shallow variants of the same module classes.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dcjax import models

# Compile quickly: these tests check values, not speed (as in tests/test_models.py). XLA:CPU's
# older fusion emitters compile these graphs ~2x faster; dropped where XLA no longer knows them.
FAST = dict(xla_backend_optimization_level=0, xla_llvm_disable_expensive_passes=True)
FASTER = dict(FAST, xla_cpu_use_fusion_emitters=False)

NUM_CLASSES, SIZE, BATCH = 10, 32, 2

# Parameter counts at 224 px / 1000 classes: torchvision's (timm's vit_small_patch16_224).
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "mobilenet_v2": 3_504_872,
    "efficientnet_b0": 5_288_548,
    "vit_s16": 22_050_664,
}
# Running mean + var entries: 2 x the channels of torchvision's BatchNorm layers.
TORCHVISION_BN_STATS = {
    "resnet18": 2 * 4_800,
    "resnet50": 2 * 26_560,
    "resnet101": 2 * 52_672,
    "mobilenet_v2": 2 * 17_056,
    "efficientnet_b0": 2 * 21_008,
    "vit_s16": 0,
}


def n_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def shapes(model, size, batch=1):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((batch, size, size, 3)),
                                           train=False))


@functools.cache
def compiler_options() -> dict:
  try:
    jax.jit(lambda x: x + 1, compiler_options=FASTER)(jnp.ones(2)).block_until_ready()
    return FASTER
  except RuntimeError:  # JaxRuntimeError: no such compile option
    return FAST


def host_variables(tree, seed=0):
  """Variables of the shapes in `tree` (eval_shape of init): BatchNorm/LayerNorm scales and
  running variances 1, biases and running means 0, kernels N(0, 1/fan_in), the rest (class
  token, position embeddings) N(0, 0.02^2)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if name in ("['scale']", "['var']"):
      return np.ones(leaf.shape, leaf.dtype)
    if name in ("['bias']", "['mean']"):
      return np.zeros(leaf.shape, leaf.dtype)
    std = 1 / np.sqrt(np.prod(leaf.shape[:-1])) if name == "['kernel']" else 0.02
    return (std * rng.standard_normal(leaf.shape, dtype=np.float32)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, tree)


@functools.cache
def eval_and_step(name):
  """`name` (10 classes, 32 px): its variables, eval-mode logits on a fixed batch, and one SGD
  step on that batch (train mode, batch_stats mutable), from one compilation."""
  model = models.get_model(name, NUM_CLASSES, SIZE)
  x = jax.random.normal(jax.random.key(1), (BATCH, SIZE, SIZE, 3))
  y = jnp.arange(BATCH) % NUM_CLASSES
  variables = host_variables(shapes(model, SIZE))
  tx = optax.sgd(0.1)

  def run(variables, x, y):
    logits = model.apply(variables, x, train=False)
    params, stats = variables["params"], variables.get("batch_stats")

    def loss_fn(p):
      if stats is None:
        out, new_stats = model.apply({"params": p}, x, train=True), None
      else:
        out, upd = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                               mutable=["batch_stats"])
        new_stats = upd["batch_stats"]
      return optax.softmax_cross_entropy_with_integer_labels(out, y).mean(), new_stats

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return dict(logits=logits, loss=loss, params=optax.apply_updates(params, updates),
                batch_stats=new_stats)

  out = jax.jit(run, compiler_options=compiler_options())(variables, x, y)
  return variables, jax.device_get(out)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_logits_shape_dtype(name):
  _, out = eval_and_step(name)
  assert out["logits"].shape == (BATCH, NUM_CLASSES)
  assert out["logits"].dtype == np.float32
  assert np.isfinite(out["logits"]).all()


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_one_sgd_step(name):
  variables, out = eval_and_step(name)
  old, new = variables["params"], out["params"]
  assert jax.tree.structure(old) == jax.tree.structure(new)
  assert np.isfinite(out["loss"])
  for leaf in jax.tree.leaves(new):
    assert np.isfinite(leaf).all()
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new))]
  assert sum(changed) > len(changed) // 2, f"{sum(changed)} of {len(changed)} params changed"
  if models.has_batch_stats(variables):
    # Train mode moved every running statistic away from its initial value.
    before = variables["batch_stats"]
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(before),
                            jax.tree.leaves(out["batch_stats"])):
      assert np.isfinite(b).all(), path
      assert not np.array_equal(a, b), jax.tree_util.keystr(path)
  else:
    assert out["batch_stats"] is None


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_matches_torchvision(name):
  v = shapes(models.get_model(name, 1000, 224), 224)
  assert n_params(v["params"]) == TORCHVISION_PARAMS[name]
  assert n_params(v.get("batch_stats", {})) == TORCHVISION_BN_STATS[name]


def test_every_model_has_a_parameter_count():
  assert set(TORCHVISION_PARAMS) == set(models.MODELS) - {"convnet"}


@pytest.mark.parametrize("name,size,stem_kernel", [
    ("resnet50", 64, (3, 3, 3, 64)),     # lowres stem at <= 64 px
    ("resnet50", 65, (7, 7, 3, 64)),     # imagenet stem above
    ("resnet50", 224, (7, 7, 3, 64)),
])
def test_resnet50_auto_stem_follows_image_size(name, size, stem_kernel):
  params = shapes(models.get_model(name, 10, size), 8)["params"]
  assert params["conv1"]["kernel"].shape == stem_kernel


def test_resnet_stem_override_and_block_names():
  p = shapes(models.get_model("resnet50", 10, 32, stem="imagenet"), 32)["params"]
  assert p["conv1"]["kernel"].shape == (7, 7, 3, 64)
  # torchvision Bottleneck names; the first block of each stage has the projection shortcut.
  assert set(p["layer1_0"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3",
                                "downsample_conv", "downsample_bn"}
  assert "downsample_conv" not in p["layer1_1"]
  assert p["layer4_0"]["conv3"]["kernel"].shape == (1, 1, 512, 2048)
  assert p["layer4_0"]["downsample_conv"]["kernel"].shape == (1, 1, 1024, 2048)
  assert p["fc"]["kernel"].shape == (2048, 10)


def test_resnet18_layout_unchanged():
  """The block-class refactor kept resnet18's parameter tree (names and shapes)."""
  p = shapes(models.get_model("resnet18", 10, 32), 32)["params"]
  assert set(p["layer2_0"]) == {"Conv_0", "Conv_1", "BatchNorm_0", "BatchNorm_1",
                                "downsample_conv", "downsample_bn"}
  assert set(p["layer1_0"]) == {"Conv_0", "Conv_1", "BatchNorm_0", "BatchNorm_1"}


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0"])
@pytest.mark.parametrize("size,stride", [(32, 1), (64, 1), (65, 2), (224, 2)])
def test_lowres_stem_stride(name, size, stride):
  """The stem conv has stride 1 at <= 64 px and torchvision's stride 2 above."""
  model = models.get_model(name, 10, size)
  assert model.stem_strides == stride
  _, v = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False,
      capture_intermediates=lambda mdl, _: mdl.name == "features_0"))
  (stem_out,) = jax.tree.leaves(v["intermediates"])
  assert stem_out.shape[1:3] == (-(-size // stride),) * 2


def test_vit_patch_size_and_position_embeddings():
  small = shapes(models.get_model("vit_s16", 10, 32), 32)["params"]
  assert small["patch_embed"]["kernel"].shape == (4, 4, 3, 384)
  assert small["pos_embed"].shape == (1, 8 * 8 + 1, 384)
  big = shapes(models.get_model("vit_s16", 10, 224), 224)["params"]
  assert big["patch_embed"]["kernel"].shape == (16, 16, 3, 384)
  assert big["pos_embed"].shape == (1, 14 * 14 + 1, 384)
  assert len([k for k in big if k.startswith("blocks_")]) == 12


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_unknown_kwarg_raises_type_error(name):
  with pytest.raises(TypeError):
    models.get_model(name, 10, 32, no_such_option=1)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_bfloat16_compute_keeps_float32_logits(name):
  model = models.get_model(name, NUM_CLASSES, SIZE, dtype=jnp.bfloat16)
  out = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), jnp.zeros((BATCH, SIZE, SIZE, 3)), train=False))
  logits, variables = out
  assert logits.shape == (BATCH, NUM_CLASSES) and logits.dtype == jnp.float32
  # Parameters stay float32; only the computation runs in bfloat16.
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


class TinyMobileNetV2(models.MobileNetV2):
  setting = ((1, 16, 1, 1), (6, 24, 2, 2))


class TinyEfficientNet(models.EfficientNet):
  setting = ((1, 3, 1, 32, 16, 1), (6, 5, 2, 16, 24, 2))


TINY_VARIANTS = {
    "bottleneck_resnet": lambda: models.ResNet(num_classes=10, stage_sizes=(1, 2), width=8,
                                               stem="lowres", block=models.Bottleneck),
    "mobilenet_v2": lambda: TinyMobileNetV2(num_classes=10, stem_strides=1),
    "efficientnet": lambda: TinyEfficientNet(num_classes=10, stem_strides=1),
    "vit": lambda: models.ViT(num_classes=10, patch_size=4, hidden_dim=32, depth=1, num_heads=2,
                              mlp_dim=64),
}


@pytest.mark.parametrize("variant", sorted(TINY_VARIANTS))
def test_real_init_of_small_variants(variant):
  """The real `init` (the torchvision / timm initialisers) and forward of shallow variants."""
  model = TINY_VARIANTS[variant]()
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  logits, v = jax.device_get(jax.jit(lambda k, x: model.init_with_output(k, x, train=False),
                                     compiler_options=compiler_options())(jax.random.key(0), x))
  assert logits.shape == (2, 10) and logits.dtype == np.float32 and np.isfinite(logits).all()
  for path, leaf in jax.tree_util.tree_leaves_with_path(v):
    name = jax.tree_util.keystr(path[-1:])
    assert np.isfinite(leaf).all(), path
    if name in ("['scale']", "['var']"):
      np.testing.assert_array_equal(leaf, 1)
    elif name in ("['bias']", "['mean']"):
      np.testing.assert_array_equal(leaf, 0)
  p = v["params"]
  if variant == "mobilenet_v2":  # torchvision: classifier ~ N(0, 0.01^2)
    assert p["classifier"]["kernel"].shape == (1280, 10)
    assert 0.009 < p["classifier"]["kernel"].std() < 0.011
  elif variant == "efficientnet":  # torchvision: classifier ~ U(-1/sqrt(out), 1/sqrt(out))
    k, r = p["classifier"]["kernel"], 1 / np.sqrt(10)
    assert np.abs(k).max() <= r and np.abs(k).max() > 0.8 * r
    assert p["features_2_0"]["se"]["fc1"]["kernel"].shape == (1, 1, 96, 4)  # squeeze = 16 // 4
  elif variant == "vit":  # timm: cls token ~ N(0, 1e-6^2), weights ~ trunc-normal(0.02)
    assert np.abs(p["cls_token"]).max() < 1e-4
    assert 0.01 < p["pos_embed"].std() < 0.025 and np.abs(p["pos_embed"]).max() <= 0.04 + 1e-6
    assert p["blocks_0"]["attn"]["qkv"]["kernel"].shape == (32, 96)
