"""Tests for dcjax.combine: PCA's k x k tiling of whole images, its labels and sources."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import combine

# Tiny arrays: XLA's optimiser costs more than it saves (as in test_augment).
FAST = dict(xla_backend_optimization_level=0, xla_llvm_disable_expensive_passes=True)
tile_fn = jax.jit(combine.tile, static_argnums=1, compiler_options=FAST)


def images(n, h, w, c=2, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.uniform(0.0, 1.0, size=(n, h, w, c)).astype(np.float32))


def resized(src, shape):
  return jax.image.resize(src, shape, method="linear", antialias=True)


def test_tile_bounds_round_and_cover():
  assert combine.tile_bounds(32, 2) == [(0, 16), (16, 32)]
  assert combine.tile_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]  # 3.33 -> 3, 6.67 -> 7
  assert combine.tile_bounds(6, 4) == [(0, 2), (2, 3), (3, 5), (5, 6)]  # 1.5 -> 2, 4.5 -> 5
  assert combine.tile_bounds(5, 1) == [(0, 5)]
  for size in range(3, 40):
    for k in range(1, 4):
      b = combine.tile_bounds(size, k)
      assert b[0][0] == 0 and b[-1][1] == size
      assert all(b[i][1] == b[i + 1][0] for i in range(k - 1))
      assert {y1 - y0 for y0, y1 in b} <= {size // k, -(-size // k)}
  with pytest.raises(ValueError, match="cannot tile 2 pixels into 3"):
    combine.tile_bounds(2, 3)


@pytest.mark.parametrize("h,w,k", [(8, 8, 2), (10, 7, 3)])
def test_each_tile_is_its_downscaled_source_row_major(h, w, k):
  x = images(2 * k * k, h, w)
  out = tile_fn(x, k)
  assert out.shape == (2, h, w, 2) and out.dtype == jnp.float32
  ys, xs = combine.tile_bounds(h, k), combine.tile_bounds(w, k)
  for g in range(2):
    for j in range(k * k):
      (y0, y1), (x0, x1) = ys[j // k], xs[j % k]
      want = resized(x[g * k * k + j], (y1 - y0, x1 - x0, 2))
      np.testing.assert_allclose(out[g, y0:y1, x0:x1], want, atol=1e-6)


def test_order_is_row_major_with_constant_sources():
  # Source j of the group is the constant j: tile (r, c) must hold r * k + c exactly.
  k = 3
  x = jnp.broadcast_to(jnp.arange(9.0)[:, None, None, None], (9, 9, 9, 1))
  out = np.asarray(tile_fn(x, k))[0, :, :, 0]
  want = np.repeat(np.repeat(np.arange(9.0).reshape(3, 3), 3, 0), 3, 1)
  np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


def test_uint8_in_uint8_out():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.integers(0, 256, size=(4, 6, 6, 3), dtype=np.uint8))
  out = tile_fn(x, 2)
  assert out.dtype == jnp.uint8 and out.shape == (1, 6, 6, 3)
  want = np.clip(np.round(np.asarray(tile_fn(x.astype(jnp.float32), 2))), 0, 255)
  np.testing.assert_array_equal(out, want.astype(np.uint8))
  # Constant sources keep their exact value, including the range ends.
  c = jnp.asarray(np.array([0, 255, 7, 128], np.uint8)[:, None, None, None] * np.ones((1, 6, 6, 1), np.uint8))
  o = np.asarray(tile_fn(c, 2))[0, :, :, 0]
  assert (o[:3, :3] == 0).all() and (o[:3, 3:] == 255).all()
  assert (o[3:, :3] == 7).all() and (o[3:, 3:] == 128).all()


def test_k1_is_identity():
  x = images(3, 5, 5)
  assert combine.tile(x, 1) is x
  np.testing.assert_array_equal(tile_fn(x, 1), x)
  u = (np.asarray(x) * 255).astype(np.uint8)
  np.testing.assert_array_equal(combine.tile(jnp.asarray(u), 1), u)


def test_bad_inputs_are_user_errors():
  with pytest.raises(ValueError, match="cannot tile 6 images with k=2: need a multiple of k\\*k=4"):
    combine.tile(images(6, 4, 4), 2)
  with pytest.raises(ValueError, match="positive integer"):
    combine.tile(images(4, 4, 4), 0)
  with pytest.raises(ValueError, match="cannot tile 2 pixels into 3"):
    combine.tile(images(9, 2, 8), 3)
  with pytest.raises(ValueError, match="\\[N, H, W, C\\]"):
    combine.tile(jnp.zeros((4, 4, 4)), 2)


def test_tile_labels_and_sources():
  labels = np.array([3, 3, 3, 3, 1, 1, 1, 1])
  np.testing.assert_array_equal(combine.tile_labels(labels, 2), [3, 1])
  np.testing.assert_array_equal(combine.tile_labels(jnp.asarray(labels), 2), [3, 1])
  np.testing.assert_array_equal(combine.tile_labels(labels, 1), labels)
  assert combine.tile_sources(np.array([10, 4, 7, 2, 9, 8, 1, 0]), 2) == [[10, 4, 7, 2], [9, 8, 1, 0]]
  assert combine.tile_sources(jnp.arange(3), 1) == [[0], [1], [2]]
  # Traced labels cannot be checked; they give each group's first label.
  np.testing.assert_array_equal(jax.jit(combine.tile_labels, static_argnums=1)(jnp.asarray(labels), 2), [3, 1])


def test_tile_labels_names_first_mixed_group():
  labels = np.array([0, 0, 0, 0, 1, 1, 2, 1, 5, 6, 5, 5])
  with pytest.raises(ValueError, match=r"tile group 1 \(items 4-7\) mixes classes \[1, 2\]"):
    combine.check_tile_labels(labels, 2)
  combine.check_tile_labels(np.array([3, 3, 3, 3]), 2)
  with pytest.raises(ValueError, match="cannot tile 5 labels"):
    combine.check_tile_labels(np.zeros(5, int), 2)
  with pytest.raises(ValueError, match="cannot tile 5 labels"):
    combine.tile_labels(np.zeros(5, int), 2)
  with pytest.raises(ValueError, match="cannot tile 3 indices"):
    combine.tile_sources(np.arange(3), 2)
