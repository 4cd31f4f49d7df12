"""GPU checks (marker `gpu`): dcjax on a CUDA GPU. Skipped unless JAX's default backend is a
GPU, so CI (CPUs only) collects and skips them; scripts/gpu_check.sh runs them on a GPU
machine with JAX_PLATFORMS=cuda,cpu (tests/conftest.py would otherwise pin JAX to the CPU)
and DCJAX_REQUIRE_GPU=1, which turns the skip into a failure.

Each is sized to run in seconds on a GPU, compilation aside; the expectations are float32
(GPU against the host CPU at full matmul precision) where rounding is the only difference.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType

from dcjax import training
from dcjax import augment, models, protocols, train

pytestmark = pytest.mark.gpu

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


@pytest.fixture(autouse=True)
def _needs_gpu():
  backend = jax.default_backend()
  if backend != "gpu":
    message = f"needs a GPU (JAX's default backend is {backend!r})"
    if os.environ.get("DCJAX_REQUIRE_GPU") == "1":
      pytest.fail(message + " but DCJAX_REQUIRE_GPU=1")
    pytest.skip(message)


def _images(n, size, channels, num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
  return images, (np.arange(n) % num_classes).astype(np.int32)


def _mesh(device):
  return jax.make_mesh((1,), ("data",), axis_types=(AxisType.Auto,), devices=[device])


def _finite(tree) -> bool:
  return all(bool(np.isfinite(np.asarray(x, np.float32)).all()) for x in jax.tree.leaves(tree))


def _ce(model, x, y, batch_stats=None):
  """The train-mode cross-entropy of `model` on (x, y) as a function of its parameters."""
  def loss(params):
    logits, _ = training.apply_train_mode(model, params, batch_stats or {}, x, jnp.ones(x.shape[0]))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
  return loss


def test_resnet18_bfloat16_224px_train_epoch_is_finite():
  model = models.get_model("resnet18", 1000, 224, dtype=jnp.bfloat16)
  images, labels = _images(32, 224, 3, num_classes=1000)
  # The convolutions run in bfloat16 (parameters stay float32): read off the lowered program,
  # which costs no compilation.
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
  x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  y = jax.ShapeDtypeStruct((2,), jnp.int32)

  def grad(v, x, y):
    return jax.grad(_ce(model, x, y, v["batch_stats"]))(v["params"])

  text = jax.jit(grad).lower(variables, x, y).as_text()
  conv_lines = [line for line in text.splitlines() if "convolution" in line]
  assert conv_lines and all("bf16" in line for line in conv_lines)

  recipe = protocols.resolve("hard", dict(batch_size=16, epochs=1))
  student = train.Student(model, recipe, augment.get_augmentation("rrc_flip"), MEAN, STD,
                          train.make_mesh(1))
  state, _ = student.init(jax.random.key(0), len(labels), images.shape[1:])
  before = jax.device_get(state.params)
  state, loss = student.train_epoch_fn(len(labels))(
      state, jnp.asarray(images), jnp.asarray(labels), jax.random.key(1))
  loss = float(loss)
  assert np.isfinite(loss) and 0 < loss < 20, loss  # ln(1000) = 6.9 at the start
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
  assert _finite(state.params) and _finite(state.batch_stats)
  changed = [not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.params)))]
  assert all(changed)
  assert {d.platform for d in state.params["fc"]["kernel"].devices()} == {"gpu"}


def test_layers_pick_xla_kernels_on_gpu():
  # impl='auto' keeps XLA's own convolution and norm on a GPU: the same program as impl='xla',
  # and its convolutions are cuDNN library calls; the hand-written CPU layers still agree.
  x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 28, 28, 1)), jnp.float32)
  y = jnp.arange(8) % 10
  nets = {impl: models.ConvNet(num_classes=10, width=32, impl=impl)
          for impl in ("auto", "xla", "custom")}
  params = nets["auto"].init(jax.random.key(0), x)["params"]

  def value_and_grad(impl):
    return jax.jit(jax.value_and_grad(_ce(nets[impl], x, y)))

  lowered = {impl: value_and_grad(impl).lower(params).as_text() for impl in nets}
  assert lowered["auto"] == lowered["xla"]
  assert lowered["auto"] != lowered["custom"]
  compiled = value_and_grad("auto").lower(params).compile().as_text()
  assert "cudnn" in compiled.lower(), "no cuDNN call in the compiled ConvNet step"

  with jax.default_matmul_precision("highest"):
    (l_auto, g_auto), (l_xla, g_xla), (l_custom, g_custom) = (
        value_and_grad(impl)(params) for impl in ("auto", "xla", "custom"))
  np.testing.assert_allclose(l_auto, l_xla, rtol=1e-6)
  np.testing.assert_allclose(l_custom, l_xla, rtol=1e-5)
  for a, b, c in zip(*(jax.tree.leaves(g) for g in (g_auto, g_xla, g_custom))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, b, rtol=1e-3, atol=1e-5)


def _train_on(device, model, images, labels):
  """train_student (small-data protocol: DSA, SGD) on one `device`, float32 with full-precision
  matmuls and convolutions (no TF32 on the GPU); returns (host variables, stats, logits of the
  first 16 images)."""
  recipe = protocols.resolve("small_data", dict(batch_size=32, epochs=3))
  student = train.Student(model, recipe, augment.get_augmentation(recipe.augment), MEAN, STD,
                          _mesh(device))
  with jax.default_device(device), jax.default_matmul_precision("highest"):
    variables, stats = train.train_student(student, images, labels, seed=0, progress=False)
    logits = model.apply(variables, training.normalise(jnp.asarray(images[:16]), MEAN, STD),
                         train=False)
  return jax.device_get(variables), stats, np.asarray(logits)


def test_train_student_on_gpu_matches_cpu_float32():
  # The same seeded run on the GPU and on the host CPU (same program: impl='auto' resolves
  # by the default backend, so both use XLA's layers): only rounding may differ.
  model = models.ConvNet(num_classes=10, width=16)
  images, labels = _images(64, 16, 3)
  v_gpu, s_gpu, z_gpu = _train_on(jax.devices("gpu")[0], model, images, labels)
  v_cpu, s_cpu, z_cpu = _train_on(jax.devices("cpu")[0], model, images, labels)
  assert np.isfinite(s_gpu["final_loss"])
  # Tolerances ~100x what the CPU's two layer implementations differ by in this run (loss
  # equal, logits 5e-7, parameters 2e-8): SGD, unlike Adam, does not blow rounding noise in
  # zero gradients (the biases before instance norm) up to whole steps.
  np.testing.assert_allclose(s_gpu["final_loss"], s_cpu["final_loss"], rtol=1e-4)
  np.testing.assert_allclose(z_gpu, z_cpu, rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.tree.leaves(v_gpu), jax.tree.leaves(v_cpu)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


def test_convnet3_float32_small_data_epoch_on_gpu():
  # ConvNet-3 (width 128, instance norm) on 28 px grey images with the small-data protocol
  # (DSA, SGD), one epoch, then tested: the Fashion-MNIST default run's shapes, on the GPU.
  model = models.get_model("convnet", 10, 28)
  images, labels = _images(300, 28, 1)
  recipe = protocols.resolve("small_data", dict(epochs=1))
  student = train.Student(model, recipe, augment.get_augmentation(recipe.augment),
                          (0.2861,), (0.3530,), train.make_mesh(1))
  variables, stats = train.train_student(student, images, labels, seed=0, progress=False)
  assert np.isfinite(stats["final_loss"]) and stats["images_per_second"] > 0
  assert _finite(variables)
  assert {d.platform for d in variables["params"]["fc"]["kernel"].devices()} == {"gpu"}
  top1, top5 = train.evaluate(student, student.eval_fn(), variables, images, labels)
  assert 0 <= top1 <= top5 <= 100
