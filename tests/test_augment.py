"""Tests for dcjax.augment: shapes, ranges, determinism, crop boxes and the DSA ops."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import augment

LO, HI = 0.2, 0.7  # inputs stay away from 0 so that zero fill is visible


# Jitted entry points: eager calls re-dispatch many small ops, and XLA's optimiser costs more
# than it saves on these tiny arrays.
FAST = dict(xla_backend_optimization_level=0, xla_llvm_disable_expensive_passes=True)
jit = lambda f, **kw: jax.jit(f, compiler_options=FAST, **kw)
boxes_fn = jit(augment.sample_rrc_boxes, static_argnums=(1, 2, 3), static_argnames=("scale",))
rrc_fn = jit(augment.random_resized_crop, static_argnums=2, static_argnames=("scale", "ratio"))
crop_resize_fn = jit(augment._crop_resize, static_argnums=5)


def images(n=8, h=16, w=16, c=3, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.uniform(LO, HI, size=(n, h, w, c)).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Registry.


@pytest.mark.parametrize("name", sorted(augment.AUGMENTATIONS))
def test_named_augmentation_shape_dtype_and_determinism(name):
  x = images()
  f = jit(augment.get_augmentation(name))
  a = f(jax.random.key(0), x)
  b = f(jax.random.key(0), x)
  c = f(jax.random.key(1), x)
  assert a.shape == x.shape and a.dtype == jnp.float32
  assert np.isfinite(np.asarray(a)).all()
  np.testing.assert_array_equal(a, b)  # same key, same batch
  if name == "none":
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(c, x)
  else:
    assert not np.array_equal(a, c)  # another key, another batch
  if name in ("none", "flip", "rrc_flip"):  # interpolation and flips never leave the input range
    assert float(a.min()) >= float(x.min()) - 1e-5
    assert float(a.max()) <= float(x.max()) + 1e-5


def test_unknown_augmentation_lists_known_names():
  with pytest.raises(ValueError, match="unknown augmentation 'autoaugment'") as e:
    augment.get_augmentation("autoaugment")
  for name in augment.AUGMENTATIONS:
    assert name in str(e.value)


# ---------------------------------------------------------------------------------------------
# Flip.


def test_flip_flips_exactly_the_chosen_rows():
  x = np.asarray(images(n=64, h=5, w=6, c=2))
  out = np.asarray(augment.flip(jax.random.key(3), jnp.asarray(x)))
  flipped = []
  for i in range(len(x)):
    same = np.array_equal(out[i], x[i])
    mirrored = np.array_equal(out[i], np.flip(x[i], axis=1))  # width axis of [H, W, C]
    assert same != mirrored, i  # exactly one of the two (random images are not symmetric)
    flipped.append(mirrored)
  assert 10 < sum(flipped) < 54  # p = 0.5 over 64 rows


def test_flip_probability_extremes():
  x = images(n=16)
  np.testing.assert_array_equal(augment.flip(jax.random.key(0), x, p=0.0), x)
  np.testing.assert_array_equal(augment.flip(jax.random.key(0), x, p=1.0), np.flip(x, axis=2))


# ---------------------------------------------------------------------------------------------
# RandomResizedCrop.


def torchvision_fallback(height, width, ratio=(3 / 4, 4 / 3)):
  """(h, w) of torchvision's centre-crop fallback."""
  in_ratio = width / height
  if in_ratio < ratio[0]:
    return round(width / ratio[0]), width
  if in_ratio > ratio[1]:
    return height, round(height * ratio[1])
  return height, width


def check_boxes(y0, x0, h, w, height, width):
  y0, x0, h, w = (np.asarray(a, np.float64) for a in (y0, x0, h, w))
  assert (h >= 1).all() and (w >= 1).all()
  assert (y0 >= 0).all() and (x0 >= 0).all()
  assert (y0 + h <= height).all() and (x0 + w <= width).all()
  for a in (y0, x0, h, w):  # torchvision's boxes are whole pixels
    np.testing.assert_array_equal(a, np.round(a))
  return y0, x0, h, w


@pytest.mark.parametrize("height,width", [(32, 32), (24, 40)])
def test_rrc_boxes_lie_inside_with_torchvision_area_and_ratio(height, width):
  n = 20000
  y0, x0, h, w = check_boxes(*boxes_fn(jax.random.key(0), n, height, width),
                             height, width)
  area = h * w
  fb_h, fb_w = torchvision_fallback(height, width)
  ok = ~((h == fb_h) & (w == fb_w) & (np.abs(y0 - (height - h) / 2) <= 0.5)
         & (np.abs(x0 - (width - w) / 2) <= 0.5))
  assert ok.sum() > n * 0.99
  # area is drawn in [0.08, 1] * H * W, then w and h are rounded to whole pixels (each by at most
  # 0.5), with log-aspect in [log 3/4, log 4/3].
  t_min = 0.08 * height * width
  slack = 0.5 * math.sqrt(t_min) * (math.sqrt(4 / 3) + math.sqrt(3 / 4)) - 0.25
  assert (area[ok] <= height * width).all()
  assert (area[ok] >= t_min - slack).all(), area[ok].min()
  r = w[ok] / h[ok]
  assert r.min() >= (math.sqrt(t_min * 3 / 4) - 0.5) / (math.sqrt(t_min * 4 / 3) + 0.5)
  assert r.max() <= (math.sqrt(t_min * 4 / 3) + 0.5) / (math.sqrt(t_min * 3 / 4) - 0.5)
  # Spread: small and full-size boxes both occur, and the position covers the whole range.
  assert area[ok].min() < 0.1 * height * width
  assert area[ok].max() >= 0.95 * min(height * width, fb_h * fb_w)
  assert y0.min() == 0 and (y0 + h).max() == height
  assert x0.min() == 0 and (x0 + w).max() == width


def test_rrc_boxes_deterministic_per_key():
  a = boxes_fn(jax.random.key(5), 64, 32, 32)
  b = boxes_fn(jax.random.key(5), 64, 32, 32)
  c = boxes_fn(jax.random.key(6), 64, 32, 32)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  assert any(not np.array_equal(u, v) for u, v in zip(a, c))


def test_rrc_fallback_on_square_image_is_the_whole_image():
  # An area of 2-3x the image never fits: every example takes the fallback.
  y0, x0, h, w = boxes_fn(jax.random.key(0), 16, 20, 20, scale=(2.0, 3.0))
  np.testing.assert_array_equal(y0, 0)
  np.testing.assert_array_equal(x0, 0)
  np.testing.assert_array_equal(h, 20)
  np.testing.assert_array_equal(w, 20)


@pytest.mark.parametrize("height,width", [(10, 40), (40, 10)])
def test_rrc_fallback_on_wide_image_matches_torchvision(height, width):
  # torchvision: in_ratio = 4 > 4/3 -> h = 10, w = round(10 * 4/3) = 13, j = (40 - 13) // 2 = 13
  # (and transposed for the tall image: w = 10, h = round(10 / (3/4)) = 13, i = 13).
  y0, x0, h, w = boxes_fn(jax.random.key(0), 4, height, width, scale=(2.0, 3.0))
  expected = (0, 13, 10, 13) if width > height else (13, 0, 13, 10)
  for got, want in zip((y0, x0, h, w), expected):
    np.testing.assert_array_equal(got, want)


def test_random_resized_crop_shape_range_and_determinism():
  x = images(n=8, h=16, w=16, c=3)
  out = rrc_fn(jax.random.key(0), x, 12)
  assert out.shape == (8, 12, 12, 3) and out.dtype == jnp.float32
  assert float(out.min()) >= float(x.min()) - 1e-5
  assert float(out.max()) <= float(x.max()) + 1e-5
  np.testing.assert_array_equal(out, rrc_fn(jax.random.key(0), x, 12))
  assert not np.array_equal(out, rrc_fn(jax.random.key(1), x, 12))


def test_full_image_box_is_identity():
  x = images(n=4, h=12, w=12, c=3)
  for i in range(4):
    out = crop_resize_fn(x[i], 0.0, 0.0, 12.0, 12.0, 12)
    np.testing.assert_allclose(out, x[i], atol=1e-6)
  # scale = ratio = 1 forces the full-image box through the public function.
  out = rrc_fn(jax.random.key(0), x, 12, scale=(1.0, 1.0), ratio=(1.0, 1.0))
  np.testing.assert_allclose(out, x, atol=1e-6)


def test_unscaled_box_crop_is_the_slice():
  x = np.asarray(images(n=1, h=16, w=16, c=2))[0]
  out = crop_resize_fn(jnp.asarray(x), 4.0, 2.0, 8.0, 8.0, 8)
  np.testing.assert_allclose(out, x[4:12, 2:10], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# DSA.


def test_affine_identity_theta_is_identity():
  x = images(n=3, h=9, w=11, c=2)
  theta = jnp.tile(jnp.array([[1.0, 0, 0], [0, 1.0, 0]]), (3, 1, 1))
  np.testing.assert_allclose(jit(augment._affine)(x, theta), x, atol=1e-5)


def test_affine_translation_by_two_pixels_shifts_with_zero_fill():
  x = np.asarray(images(n=2, h=8, w=10, c=1))
  # Output pixel x samples the input at x + tx; with align_corners=True (DSA's convention)
  # one pixel is 2 / (W - 1) in normalised units.
  theta = jnp.tile(jnp.array([[1.0, 0, 2 * 2 / (10 - 1)], [0, 1.0, 0]]), (2, 1, 1))
  out = np.asarray(jit(augment._affine)(jnp.asarray(x), theta))
  expected = np.zeros_like(x)
  expected[:, :, :-2] = x[:, :, 2:]
  np.testing.assert_allclose(out, expected, atol=1e-5)


DSA_OPS = {f.__name__: jit(f) for f in augment._DSA_OPS}


def test_dsa_has_the_six_ops():
  assert sorted(f.__name__ for f in augment._DSA_OPS) == sorted(f"_dsa_{n}" for n in
                                   ("color", "crop", "cutout", "flip", "scale", "rotate"))


@pytest.mark.parametrize("name", sorted(DSA_OPS))
def test_dsa_op_keeps_shape_and_changes_input(name):
  x = images(n=8, h=16, w=16, c=3)  # the shape test_dsa_applies_exactly_one_op_under_jit uses
  out = DSA_OPS[name](jax.random.key(0), x)
  assert out.shape == x.shape and out.dtype == jnp.float32
  assert np.isfinite(np.asarray(out)).all()
  np.testing.assert_array_equal(out, DSA_OPS[name](jax.random.key(0), x))
  if name == "_dsa_flip":  # a flip may leave a row alone; over 8 rows some flip
    assert not np.array_equal(out, x)
    return
  diff = np.abs(np.asarray(out) - np.asarray(x)).reshape(8, -1).max(axis=1)
  if name == "_dsa_crop":  # a (0, 0) translation is possible for a row (p = 1/81), not for all
    assert (diff > 1e-3).sum() >= 6
  else:
    assert (diff > 1e-3).all(), diff


def shift_numpy(im, ty, tx):
  """out[y, x] = im[y + ty, x + tx], zero outside."""
  h, w, _ = im.shape
  p = np.pad(im, ((h, h), (w, w), (0, 0)))
  return p[h + ty:2 * h + ty, w + tx:2 * w + tx]


def find_shifts(x, out, max_shift):
  shifts = []
  for i in range(len(x)):
    found = [(ty, tx) for ty in range(-max_shift, max_shift + 1)
             for tx in range(-max_shift, max_shift + 1)
             if np.array_equal(out[i], shift_numpy(x[i], ty, tx))]
    assert len(found) == 1, (i, found)
    shifts.append(found[0])
  return np.array(shifts)


def test_dsa_crop_is_a_zero_filled_integer_translation():
  x = np.asarray(images(n=200, h=32, w=32, c=2))
  out = np.asarray(DSA_OPS["_dsa_crop"](jax.random.key(0), jnp.asarray(x)))
  shifts = find_shifts(x, out, 6)
  assert np.abs(shifts).max() <= 4  # ratio 0.125 of 32 px
  assert set(shifts[:, 0]) == set(range(-4, 5)) and set(shifts[:, 1]) == set(range(-4, 5))


def test_dsa_crop_range_at_28px_matches_dsa():
  x = np.asarray(images(n=200, h=28, w=28, c=1))
  out = np.asarray(DSA_OPS["_dsa_crop"](jax.random.key(0), jnp.asarray(x)))
  shifts = find_shifts(x, out, 6)
  assert set(shifts[:, 0]) == set(range(-4, 5))


def cutout_masks(x, out):
  zero = np.asarray(out) == 0
  assert (zero == zero[..., :1]).all()  # the same pixels in every channel
  zero = zero[..., 0]
  kept = ~zero[..., None]
  np.testing.assert_array_equal(np.where(kept, out, 0), np.where(kept, x, 0))
  return zero


def test_dsa_cutout_zeroes_one_rectangle_per_image():
  x = np.asarray(images(n=200, h=32, w=32, c=3))
  zero = cutout_masks(x, np.asarray(DSA_OPS["_dsa_cutout"](jax.random.key(0), jnp.asarray(x))))
  for m in zero:
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    assert len(rows) and len(cols)
    # one axis-aligned rectangle, at most half the side in each direction
    assert m.sum() == len(rows) * len(cols)
    assert rows[-1] - rows[0] + 1 == len(rows) <= 16 and cols[-1] - cols[0] + 1 == len(cols) <= 16


def test_dsa_cutout_size_matches_dsa():
  x = np.asarray(images(n=200, h=32, w=32, c=3))
  zero = cutout_masks(x, np.asarray(DSA_OPS["_dsa_cutout"](jax.random.key(0), jnp.asarray(x))))
  inside = [m for m in zero if not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())]
  assert len(inside) > 20
  sizes = {(int(m.any(1).sum()), int(m.any(0).sum())) for m in inside}
  assert sizes == {(16, 16)}


def test_dsa_color_brightness_on_constant_gray_image():
  # On a constant image saturation and contrast act around the image's own mean, so only the
  # brightness shift (uniform in [-0.5, 0.5]) is left, and the image stays constant.
  x = jnp.full((64, 4, 4, 3), 0.5, jnp.float32)
  out = np.asarray(DSA_OPS["_dsa_color"](jax.random.key(0), x))
  np.testing.assert_allclose(out, out[:, :1, :1, :1] * np.ones_like(out), atol=1e-6)
  shift = out[:, 0, 0, 0] - 0.5
  assert (np.abs(shift) <= 0.5 + 1e-6).all() and shift.min() < -0.3 and shift.max() > 0.3


def test_dsa_applies_exactly_one_op_under_jit():
  x = images(n=8, h=16, w=16, c=3)
  f = jit(augment.dsa)
  chosen = set()
  for seed in range(12):
    key = jax.random.key(seed)
    out = f(key, x)
    assert out.shape == x.shape and out.dtype == jnp.float32
    _, k = jax.random.split(key)
    matches = [name for name, op in DSA_OPS.items()
               if np.allclose(out, op(k, x), atol=1e-6)]
    assert len(matches) >= 1, seed
    chosen.update(matches)
  assert len(chosen) >= 3, chosen
  np.testing.assert_allclose(out, augment.dsa(key, x), atol=1e-6)  # eager == jit


def test_crop_scale_and_tile_dsa():
  import numpy as np
  x = jnp.asarray(np.random.RandomState(0).rand(6, 8, 8, 1), jnp.float32)
  key = jax.random.key(3)
  # scale (1, 1) with k=2: every view is one whole tile (4x4) upsampled, maybe flipped.
  full = augment.get_augmentation("tile_crop", tiles=2, crop_scale=(1.0, 1.0))
  assert full(key, x).shape == x.shape
  wide = augment.get_augmentation("rrc_flip", crop_scale=(0.5, 1.0))
  assert wide(key, x).shape == x.shape
  assert not np.allclose(wide(key, x), augment.get_augmentation("rrc_flip")(key, x))
  tile_dsa = jax.jit(augment.get_augmentation("tile_dsa", tiles=2))
  assert tile_dsa(key, x).shape == x.shape
  # k=1 tile_dsa is DSA on the (possibly flipped) whole image.
  assert augment.get_augmentation("tile_dsa", tiles=1)(key, x).shape == x.shape
  with pytest.raises(ValueError, match="crop_scale"):
    augment.get_augmentation("tile_crop", tiles=2, crop_scale=(0.0, 1.0))


def test_tile_dsa_noflip_is_tile_dsa_without_the_view_flip():
  """The same tile and DSA draws; only the tile view's flip (p = 1/2) is gone. At k = 1 the
  view is the image itself, so tile_dsa_noflip is exactly DSA with tile_dsa's DSA key."""
  x = images(n=16, h=8, w=8, c=1)
  noflip = jax.jit(augment.get_augmentation("tile_dsa_noflip", tiles=1, resampling="nearest"))
  withflip = jax.jit(augment.get_augmentation("tile_dsa", tiles=1, resampling="nearest"))
  flipped_somewhere = False
  for seed in range(6):
    key = jax.random.key(seed)
    _, k_dsa = jax.random.split(key)
    np.testing.assert_allclose(noflip(key, x), augment.dsa(k_dsa, x), atol=1e-6)
    a, b = np.asarray(noflip(key, x)), np.asarray(withflip(key, x))
    # tile_dsa = DSA(flip(x)): per image, either the same as noflip or its DSA of the mirror.
    k_tile, _ = jax.random.split(key)
    _, k_flip = jax.random.split(k_tile)
    mirrored = np.asarray(augment.dsa(k_dsa, augment.flip(k_flip, x)))
    np.testing.assert_allclose(b, mirrored, atol=1e-6)
    flipped_somewhere |= not np.allclose(a, b)
  assert flipped_somewhere
  assert augment.in_normalised_space("tile_dsa_noflip")
  tiled = jax.jit(augment.get_augmentation("tile_dsa_noflip", tiles=2))
  assert tiled(jax.random.key(0), x).shape == x.shape
