"""Tests for dcjax.resample and the resampling / sharpness options of Combine and Augment."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import augment, combine, resample


def images(n=4, h=28, w=28, c=1, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.uniform(size=(n, h, w, c)).astype(np.float32))


@pytest.mark.parametrize("method", resample.METHODS)
@pytest.mark.parametrize("size", [(14, 14), (9, 13), (56, 56)])
def test_every_method_keeps_constants_and_shapes(method, size):
  x = jnp.full((2, 28, 28, 3), 0.37, jnp.float32)
  out = resample.resize(x, *size, method)
  assert out.shape == (2, *size, 3)
  np.testing.assert_allclose(out, 0.37, atol=1e-5)
  crop = resample.crop_resize(x[0], 3.0, 5.0, 11.0, 7.0, 20, method)
  assert crop.shape == (20, 20, 3)
  np.testing.assert_allclose(crop, 0.37, atol=1e-5)


def test_linear_is_jax_image_antialiased_linear_so_defaults_are_unchanged():
  x = images()
  np.testing.assert_array_equal(
      resample.resize(x, 14, 14, "linear"),
      jax.image.resize(x, (4, 14, 14, 1), method="linear", antialias=True))
  u8 = (x * 255).astype(jnp.uint8)
  np.testing.assert_array_equal(combine.tile(u8, 2), combine.tile(u8, 2, "linear"))


def test_area_downscale_is_the_block_mean_and_nearest_upscale_repeats():
  x = images()
  np.testing.assert_allclose(resample.resize(x, 14, 14, "area"),
                             x.reshape(4, 14, 2, 14, 2, 1).mean((2, 4)), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(resample.resize(x, 56, 56, "nearest"),
                                jnp.repeat(jnp.repeat(x, 2, 1), 2, 2))
  # A 3x downscale picks the centre pixel of each 3x3 block.
  y = images(h=27, w=27)
  np.testing.assert_array_equal(resample.resize(y, 9, 9, "nearest"), y[:, 1::3, 1::3])


@pytest.mark.parametrize("method", ["area", "nearest"])
def test_integer_box_at_its_own_size_is_the_slice(method):
  x = images()[0]
  np.testing.assert_allclose(resample.crop_resize(x, 4.0, 6.0, 10.0, 10.0, 10, method),
                             x[4:14, 6:16], rtol=1e-6, atol=1e-6)


def test_area_weights_fractional_pixels_by_overlap():
  # 3 pixels [0, 1, 2] into 2: output 0 covers [0, 1.5) -> (0 + 0.5 * 1) / 1.5.
  x = jnp.asarray([0.0, 1.0, 2.0]).reshape(1, 1, 3, 1)
  out = resample.resize(x, 1, 2, "area")
  np.testing.assert_allclose(out.reshape(-1), [1 / 3, 5 / 3], rtol=1e-6)


def test_sharper_kernels_keep_more_high_frequency_than_antialiased_linear():
  """Upscaling a 14 px checkerboard: nearest keeps its full contrast, linear blurs it most."""
  board = (jnp.indices((14, 14)).sum(0) % 2).astype(jnp.float32)[None, :, :, None]
  contrast = {m: float(resample.resize(board, 28, 28, m).std()) for m in resample.METHODS}
  assert contrast["nearest"] == pytest.approx(0.5, rel=1e-5)
  assert contrast["linear"] < contrast["cubic"] < contrast["lanczos3"] < contrast["nearest"]


def test_unknown_method_is_refused_naming_the_known_ones():
  with pytest.raises(ValueError, match="unknown resampling 'bicubicc'; known: linear, cubic"):
    resample.resize(images(), 14, 14, "bicubicc")
  with pytest.raises(ValueError, match="unknown resampling"):
    combine.tile(images(), 2, "box")
  with pytest.raises(ValueError, match="unknown resampling"):
    augment.get_augmentation("tile_dsa", tiles=2, resampling="box")
  for bad in (-0.1, 5.0, "1", True):
    with pytest.raises(ValueError, match="sharpen must be a number"):
      augment.get_augmentation("dsa", sharpen=bad)


def test_random_sharpness():
  x = images(n=64)
  key = jax.random.key(3)
  np.testing.assert_array_equal(resample.random_sharpness(key, x, 0.0), x)
  const = jnp.full((8, 10, 10, 1), 0.6)
  np.testing.assert_allclose(resample.random_sharpness(key, const, 2.0), 0.6, atol=1e-6)
  out = resample.random_sharpness(key, x, 1.0)
  blur = resample._blur3(x)
  # Each example is x + a (x - blur) with one a in [-1, 1] per example.
  d, e = np.asarray(out - x).reshape(64, -1), np.asarray(x - blur).reshape(64, -1)
  a = (d * e).sum(1) / (e * e).sum(1)
  np.testing.assert_allclose(d, a[:, None] * e, atol=1e-5)
  assert a.min() >= -1 - 1e-6 and a.max() <= 1 + 1e-6 and a.min() < -0.5 and a.max() > 0.5
  # Strength 3: a is floored at -1 (the blur itself), never past it.
  out = resample.random_sharpness(key, x, 3.0)
  d = np.asarray(out - x).reshape(64, -1)
  a = (d * e).sum(1) / (e * e).sum(1)
  assert a.min() == pytest.approx(-1.0, abs=1e-5) and a.max() > 1.5


@pytest.mark.parametrize("method", resample.METHODS)
def test_tile_views_never_mix_tiles_under_any_method(method):
  """Every tile of a 2x2 image holds one constant; every view of tile_crop must be one of them
  (any kernel reproduces a constant, and no pixel of another tile reaches the view)."""
  values = jnp.asarray([0.1, 0.4, 0.7, 0.9])
  img = jnp.zeros((28, 28, 1))
  for t, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
    img = img.at[r * 14:(r + 1) * 14, c * 14:(c + 1) * 14].set(values[t])
  batch = jnp.broadcast_to(img, (32, 28, 28, 1))
  f = jax.jit(augment.get_augmentation("tile_crop", tiles=2, resampling=method))
  out = np.asarray(f(jax.random.key(0), batch)).reshape(32, -1)
  for view in out:
    assert np.abs(view - view[0]).max() < 1e-5
    assert np.abs(values - view[0]).min() < 1e-5


def test_sharpen_applies_to_every_named_augmentation_deterministically():
  x = images(n=8)
  for name in ("none", "flip", "rrc_flip", "dsa", "tile_crop", "tile_dsa"):
    f = jax.jit(augment.get_augmentation(name, tiles=2, sharpen=1.0))
    a, b = f(jax.random.key(0), x), f(jax.random.key(0), x)
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape
  plain = augment.get_augmentation("none", sharpen=1.0)(jax.random.key(0), x)
  assert not np.array_equal(plain, x)


def test_down_up_is_what_a_tile_stores_then_its_view_upscale():
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, size=(4, 28, 28, 1), dtype=np.uint8)
  out = np.asarray(resample.down_up(jnp.asarray(x), 14, "cubic", "lanczos3"))
  assert out.shape == x.shape and out.dtype == np.uint8
  # The down step is exactly what Combine stores in a 14 px tile of a 2 x 2 image.
  tiled = np.asarray(combine.tile(jnp.asarray(x), 2, "cubic"))[0]
  small = np.asarray(resample.resize(jnp.asarray(x, jnp.float32), 14, 14, "cubic"))
  np.testing.assert_array_equal(tiled[:14, :14], np.clip(np.round(small[0]), 0, 255))
  # Images constant over 2 x 2 blocks survive an area-down / nearest-up round trip.
  blocks = np.repeat(np.repeat(x[:, :14, :14], 2, axis=1), 2, axis=2)
  np.testing.assert_array_equal(resample.down_up(jnp.asarray(blocks), 14, "area", "nearest"),
                                blocks)
  # A sharp image loses detail (the shift the PCA study measures).
  assert np.abs(out.astype(int) - x).mean() > 10
