"""dcjax.layers: the CPU-fast convolution and instance norm compute what nn.Conv / nn.GroupNorm
compute, values and gradients, and share their parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import layers, models


def _rand(*shape, seed=0):
  return jnp.asarray(np.random.RandomState(seed).randn(*shape), jnp.float32)


@pytest.mark.parametrize("ci,pad,size", [(1, 3, 9), (3, 1, 8), (24, 1, 6), (5, 0, 7), (4, 2, 5)])
def test_conv2d_value_and_gradients_match_xla(ci, pad, size):
  # ci=1/3 take the im2col kernel gradient, ci=24 (3*3*24 > 64 rows) the per-offset sum.
  x, w = _rand(2, size, size, ci), _rand(3, 3, ci, 6, seed=1)
  ref = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y_ref, vjp_ref = jax.vjp(ref, x, w)
  y, vjp = jax.vjp(lambda x, w: layers.conv2d(x, w, pad), x, w)
  g = _rand(*y_ref.shape, seed=2)
  np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
  for got, want in zip(vjp(g), vjp_ref(g)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("ci,co,size", [(8, 6, (6, 8)), (128, 16, (4, 4)), (3, 5, (2, 2))])
def test_conv2d_winograd_value_and_gradients_match_xla(ci, co, size):
  x, w = _rand(2, *size, ci), _rand(3, 3, ci, co, seed=1)
  ref = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y_ref, vjp_ref = jax.vjp(ref, x, w)
  y, vjp = jax.vjp(layers.conv2d_winograd, x, w)
  g = _rand(*y_ref.shape, seed=2)
  scale = float(jnp.abs(y_ref).max())
  np.testing.assert_allclose(y, y_ref, rtol=0, atol=2e-6 * scale)
  for got, want in zip(vjp(g), vjp_ref(g)):
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * float(jnp.abs(want).max()))
  # The same under jit.
  np.testing.assert_allclose(jax.jit(layers.conv2d_winograd)(x, w), y, rtol=1e-6, atol=1e-6)


def test_conv2d_winograd_vmaps_over_stacked_kernels():
  # The scoring runner vmaps k models over stacked parameters.
  x, w = _rand(3, 2, 4, 4, 16), _rand(3, 3, 3, 16, 4, seed=1)
  loss = lambda conv: lambda x, w: jnp.sum(conv(x, w) ** 2)
  got = jax.vmap(jax.grad(loss(layers.conv2d_winograd), (0, 1)))(x, w)
  want = jax.vmap(jax.grad(loss(lambda x, w: layers._conv(x, w, 1)), (0, 1)))(x, w)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, rtol=0, atol=2e-6 * float(jnp.abs(r).max()))


def test_conv2d_winograd_refuses_what_it_does_not_compute():
  with pytest.raises(ValueError, match="3x3 kernel and H, W multiples of 2"):
    layers.conv2d_winograd(_rand(1, 5, 4, 8), _rand(3, 3, 8, 2))
  with pytest.raises(ValueError, match="3x3 kernel and H, W multiples of 2"):
    layers.conv2d_winograd(_rand(1, 4, 4, 8), _rand(5, 5, 8, 2))


def test_conv_takes_winograd_only_where_it_applies(monkeypatch):
  calls = []
  real = layers.conv2d_winograd
  monkeypatch.setattr(layers, "conv2d_winograd", lambda x, w: calls.append(x.shape) or real(x, w))
  for impl, shape, pad, dtype, used in [
      ("winograd", (1, 8, 8, 32), 1, jnp.float32, True),
      ("auto", (1, 8, 8, 32), 1, jnp.float32, jax.default_backend() == "cpu"),
      ("fused", (1, 8, 8, 32), 1, jnp.float32, True),
      ("custom", (1, 8, 8, 32), 1, jnp.float32, False),
      ("xla", (1, 8, 8, 32), 1, jnp.float32, False),
      ("winograd", (1, 7, 8, 32), 1, jnp.float32, False),  # odd height
      ("winograd", (1, 8, 8, 32), 3, jnp.float32, False),  # padding 3 (28 px first layer)
      ("winograd", (1, 8, 8, 16), 1, jnp.float32, False),  # too thin to repay the transforms
      ("winograd", (1, 8, 8, 3), 1, jnp.float32, False),
      ("winograd", (1, 8, 8, 32), 1, jnp.bfloat16, False)]:
    calls.clear()
    x = _rand(*shape).astype(dtype)
    layers.Conv(4, 3, pad, dtype=dtype, impl=impl).init(jax.random.key(0), x)
    assert bool(calls) == used, (impl, shape, pad, dtype)


def test_instance_norm_value_and_gradient_match_groupnorm():
  x, g = _rand(3, 5, 7, 4) * 3 + 1, _rand(3, 5, 7, 4, seed=1)
  ref = lambda x: nn.GroupNorm(num_groups=4, use_scale=False, use_bias=False,
                               epsilon=1e-5).apply({}, x)
  y_ref, vjp_ref = jax.vjp(ref, x)
  y, vjp = jax.vjp(lambda x: layers.instance_norm(x, 1e-5), x)
  np.testing.assert_allclose(y, y_ref, atol=2e-5)
  np.testing.assert_allclose(vjp(g)[0], vjp_ref(g)[0], atol=2e-5)


def test_instance_norm_bfloat16_keeps_dtype():
  x = _rand(2, 4, 4, 3).astype(jnp.bfloat16)
  y, vjp = jax.vjp(lambda x: layers.instance_norm(x, 1e-5), x)
  assert y.dtype == jnp.bfloat16 and vjp(jnp.ones_like(y))[0].dtype == jnp.bfloat16


@pytest.mark.parametrize("impl", ["custom", "winograd", "fused"])
def test_convnet_cpu_and_xla_layers_share_parameters_and_gradients(impl):
  x = _rand(4, 28, 28, 1)
  y = jnp.array([0, 1, 2, 3])
  custom = models.ConvNet(num_classes=10, width=32, impl=impl)  # 32: Winograd's narrowest
  xla = models.ConvNet(num_classes=10, width=32, impl="xla")
  variables = custom.init(jax.random.key(0), x)
  assert (jax.tree.structure(variables)
          == jax.tree.structure(xla.init(jax.random.key(0), x)))
  # nn.Conv / nn.GroupNorm initialise the same parameter tree with the same values.
  stock = nn.Conv(16, (3, 3)).init(jax.random.key(1), x)["params"]
  ours = layers.Conv(16, 3, 1).init(jax.random.key(1), x)["params"]
  np.testing.assert_array_equal(stock["kernel"], ours["kernel"])
  np.testing.assert_array_equal(stock["bias"], ours["bias"])

  def loss(model):
    return lambda v: optax_ce(model.apply(v, x), y)

  (l1, g1), (l2, g2) = (jax.value_and_grad(loss(m))(variables) for m in (custom, xla))
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def optax_ce(logits, labels):
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))


def test_conv_path_names_what_conv_runs():
  cpu = jax.default_backend() == "cpu"
  assert layers.conv_path() == layers.conv_path(None) == ("fused" if cpu else "xla")
  assert layers.conv_path("custom") == "custom" and layers.conv_path("xla") == "xla"
  assert layers.conv_path("winograd") == "winograd" and layers.conv_path("fused") == "fused"
  with pytest.raises(ValueError, match="impl"):
    layers.conv_path("fast")


def test_bad_impl_is_refused():
  with pytest.raises(ValueError, match="impl"):
    layers.Conv(4, impl="fast").init(jax.random.key(0), _rand(1, 4, 4, 1))


@pytest.mark.parametrize("shape", [(3, 8, 6, 5), (2, 32, 32, 4)])
def test_fused_norm_relu_pool_matches_the_layers_it_replaces(shape):
  """Value and all three gradients of instance_norm_relu_pool against instance norm -> affine
  -> ReLU -> 2x2 average pool written with jax's own ops, under jit and under vmap."""
  y = _rand(*shape) * 3 + 1  # an offset mean, as a convolution's output has
  c = shape[-1]
  scale = jnp.asarray(np.linspace(0.5, 1.5, c), jnp.float32)
  bias = jnp.asarray(np.linspace(-0.3, 0.3, c), jnp.float32)

  def reference(y, scale, bias):
    mean = jnp.mean(y, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(y - mean), axis=(1, 2), keepdims=True)
    z = jax.nn.relu((y - mean) / jnp.sqrt(var + 1e-5) * scale + bias)
    return nn.avg_pool(z, (2, 2), strides=(2, 2))

  def fused(y, scale, bias):
    return layers.instance_norm_relu_pool(y, scale, bias, 1e-5)

  g = _rand(shape[0], shape[1] // 2, shape[2] // 2, c, seed=7)
  want, want_vjp = jax.vjp(reference, y, scale, bias)
  got, got_vjp = jax.jit(lambda *a: jax.vjp(fused, *a))(y, scale, bias)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for a, b in zip(got_vjp(g), want_vjp(g)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 * float(jnp.max(jnp.abs(b))))
  batched = jax.vmap(lambda y: fused(y[None], scale, bias)[0])(y)
  np.testing.assert_allclose(batched, want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="even"):
    fused(y[:, :-1], scale, bias)


def test_instance_norm_relu_pool_module_paths():
  """InstanceNorm(relu_pool=True) runs the fused function only on the 'fused' path and with even
  sizes; 'winograd' / 'custom' keep the three layers (bitwise as before the fused block)."""
  x = _rand(2, 6, 6, 4) + 0.5
  odd = _rand(2, 5, 5, 4)
  mods = {impl: layers.InstanceNorm(impl=impl, relu_pool=True) for impl in ("fused", "winograd")}
  v = mods["fused"].init(jax.random.key(0), x)
  plain = layers.InstanceNorm(impl="winograd")
  stepwise = nn.avg_pool(jax.nn.relu(plain.apply(v, x)), (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(mods["winograd"].apply(v, x), stepwise)
  np.testing.assert_allclose(mods["fused"].apply(v, x), stepwise, rtol=1e-5, atol=1e-6)
  # Odd sizes: the layer-by-layer path (avg_pool drops the last row and column).
  np.testing.assert_array_equal(
      mods["fused"].apply(v, odd),
      nn.avg_pool(jax.nn.relu(plain.apply(v, odd)), (2, 2), strides=(2, 2)))
