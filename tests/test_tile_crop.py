"""Tests for dcjax.augment.tile_crop: PCA's RandomResizedCrop inside one tile of a tiled image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import augment, combine

FAST = dict(xla_backend_optimization_level=0, xla_llvm_disable_expensive_passes=True)
crop_fn = jax.jit(augment.tile_crop, static_argnums=(2, 3), static_argnames=("scale", "ratio"),
                  compiler_options=FAST)


def tiled_constants(n, h, w, k, c=2):
  """[n, h, w, c] images whose tile t (row-major) holds the constant 10 * (t + 1)."""
  ys, xs = combine.tile_bounds(h, k), combine.tile_bounds(w, k)
  im = np.zeros((h, w, c), np.float32)
  for r, (y0, y1) in enumerate(ys):
    for col, (x0, x1) in enumerate(xs):
      im[y0:y1, x0:x1] = 10.0 * (r * k + col + 1)
  return jnp.asarray(np.broadcast_to(im, (n, h, w, c)).copy())


def tile_of_each_view(out, k):
  """The single tile index each output view came from; fails if any view mixes tiles."""
  out = np.asarray(out)
  t = np.round(out[:, 0, 0, 0] / 10.0).astype(int) - 1
  assert ((t >= 0) & (t < k * k)).all()
  np.testing.assert_allclose(out, (10.0 * (t + 1))[:, None, None, None] * np.ones_like(out),
                             rtol=1e-5)
  return t


@pytest.mark.parametrize("h,w,k,size", [(16, 16, 2, 8), (10, 11, 3, 6)])
def test_crop_never_crosses_a_tile_boundary_and_tiles_are_uniform(h, w, k, size):
  n = 90 * k * k
  x = tiled_constants(n, h, w, k)
  counts = np.zeros(k * k, int)
  for seed in range(3):  # small scale so that boxes land everywhere, incl. next to boundaries
    out = crop_fn(jax.random.key(seed), x, k, size, scale=(0.02, 1.0))
    assert out.shape == (n, size, size, 2) and out.dtype == jnp.float32
    counts += np.bincount(tile_of_each_view(out, k), minlength=k * k)
  expected = counts.sum() / (k * k)  # 270 per tile; a binomial sd is ~15
  assert (np.abs(counts - expected) < 6 * np.sqrt(expected)).all(), counts


def test_boxes_are_relative_to_the_tile():
  # A full-tile crop (scale 1, aspect 1 on square tiles) of tile t is tile t downscaled whole.
  k, h = 2, 8
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(64, h, h, 1)).astype(np.float32))
  out = np.asarray(crop_fn(jax.random.key(3), x, k, 4, scale=(1.0, 1.0), ratio=(1.0, 1.0)))
  cells = [np.asarray(jax.image.resize(x[:, y0:y1, x0:x1], (64, 4, 4, 1), "linear", antialias=True))
           for y0, y1 in combine.tile_bounds(h, k) for x0, x1 in combine.tile_bounds(h, k)]
  for i in range(64):
    # One of the 4 tiles, possibly flipped.
    assert any(np.allclose(out[i], c[i], atol=1e-5) or np.allclose(out[i], c[i][:, ::-1], atol=1e-5)
               for c in cells)


def test_k1_equals_random_resized_crop_and_flip():
  x = jnp.asarray(np.random.default_rng(1).uniform(0.2, 0.7, size=(16, 12, 12, 3)).astype(np.float32))
  key = jax.random.key(7)
  k1, k2 = jax.random.split(key)
  want = augment.flip(k2, augment.random_resized_crop(k1, x, 8))
  # Same boxes and flips, same ops: bit-exact eagerly; jit may fuse differently (ulps).
  np.testing.assert_array_equal(augment.tile_crop(key, x, 1, 8), want)
  got = crop_fn(key, x, 1, 8)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert float(got.min()) >= 0.2 - 1e-5 and float(got.max()) <= 0.7 + 1e-5
  # And the runner's closure at the input size is the registry's "rrc_flip".
  np.testing.assert_array_equal(augment.make_tile_crop(1)(key, x), augment.AUGMENTATIONS["rrc_flip"](key, x))


def test_determinism_per_key_and_make_tile_crop():
  x = tiled_constants(32, 8, 8, 2) * jnp.linspace(0.5, 1.0, 8)[None, None, :, None]  # not flip-invariant
  f = jax.jit(augment.make_tile_crop(2), compiler_options=FAST)
  a, b, c = f(jax.random.key(0), x), f(jax.random.key(0), x), f(jax.random.key(1), x)
  assert a.shape == x.shape and a.dtype == x.dtype
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  np.testing.assert_array_equal(a, crop_fn(jax.random.key(0), x, 2, 8))
  assert augment.make_tile_crop(2, size=4)(jax.random.key(0), x).shape == (32, 4, 4, 2)


def test_bad_inputs_are_user_errors():
  x = jnp.zeros((2, 4, 4, 1))
  with pytest.raises(ValueError, match="positive integer"):
    augment.make_tile_crop(0)
  with pytest.raises(ValueError, match="positive integer"):
    augment.tile_crop(jax.random.key(0), x, 2, 0)
  with pytest.raises(ValueError, match="cannot tile 4 pixels into 5"):
    augment.tile_crop(jax.random.key(0), x, 5, 4)
