"""Batch mixings: shapes, target sums, CutMix box semantics, MixUp linearity, determinism, jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcjax import mixing

B, H, W, C, K = 8, 12, 10, 3, 5


def _batch(seed: int = 0):
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.uniform(size=(B, H, W, C)), jnp.float32)
  # Distinct soft rows, so a target mix-up cannot hide behind equal rows.
  targets = jnp.asarray(rng.dirichlet(np.ones(K), size=B), jnp.float32)
  return images, targets


@pytest.mark.parametrize("name", sorted(mixing.MIXINGS))
def test_shapes_sums_determinism(name):
  images, targets = _batch()
  fn = mixing.get_mixing(name)
  out_i, out_t = fn(jax.random.key(3), images, targets)
  assert out_i.shape == images.shape and out_i.dtype == images.dtype
  assert out_t.shape == targets.shape
  np.testing.assert_allclose(np.asarray(out_t).sum(1), 1.0, atol=1e-6)
  again_i, again_t = fn(jax.random.key(3), images, targets)
  np.testing.assert_array_equal(np.asarray(out_i), np.asarray(again_i))
  np.testing.assert_array_equal(np.asarray(out_t), np.asarray(again_t))
  # Same function under jit gives the same result.
  jit_i, jit_t = jax.jit(fn)(jax.random.key(3), images, targets)
  np.testing.assert_allclose(np.asarray(jit_i), np.asarray(out_i), atol=1e-6)
  np.testing.assert_allclose(np.asarray(jit_t), np.asarray(out_t), atol=1e-6)


def test_unknown_mixing():
  with pytest.raises(ValueError, match="unknown mixing 'cutmixx'.*cutmix"):
    mixing.get_mixing("cutmixx")


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_box_pixels_and_target_weight(seed):
  images, targets = _batch(seed)
  key = jax.random.key(seed)
  box = mixing.sample_cutmix(key, images.shape, alpha=1.0)
  out_i, out_t = mixing.cutmix(key, images, targets, alpha=1.0)
  perm = np.asarray(box.perm)
  assert sorted(perm.tolist()) == list(range(B))
  y0, y1, x0, x1 = (int(v) for v in (box.y0, box.y1, box.x0, box.x1))
  assert 0 <= y0 <= y1 <= H and 0 <= x0 <= x1 <= W
  inside = np.zeros((H, W), bool)
  inside[y0:y1, x0:x1] = True
  np.testing.assert_array_equal(np.asarray(mixing.cutmix_mask(box, H, W)), inside)
  img, out = np.asarray(images), np.asarray(out_i)
  np.testing.assert_array_equal(out[:, inside], img[perm][:, inside])
  np.testing.assert_array_equal(out[:, ~inside], img[:, ~inside])
  frac = (y1 - y0) * (x1 - x0) / (H * W)
  assert float(box.lam) == pytest.approx(1 - frac, abs=1e-7)
  t = np.asarray(targets)
  np.testing.assert_allclose(np.asarray(out_t), (1 - frac) * t + frac * t[perm], atol=1e-6)


def test_cutmix_clips_box_at_border():
  # Over many keys some centres land near a border: boxes must be clipped, never wrap.
  shapes = set()
  for s in range(40):
    box = mixing.sample_cutmix(jax.random.key(s), (B, H, W, C), alpha=1.0)
    y0, y1, x0, x1 = (int(v) for v in (box.y0, box.y1, box.x0, box.x1))
    assert 0 <= y0 <= y1 <= H and 0 <= x0 <= x1 <= W
    shapes.add((y1 - y0, x1 - x0))
  assert len(shapes) > 5  # boxes really vary


def test_mixup_is_linear_combination():
  images, targets = _batch(1)
  key = jax.random.key(7)
  draw = mixing.sample_mixup(key, B, alpha=0.8)
  out_i, out_t = mixing.mixup(key, images, targets, alpha=0.8)
  lam, perm = float(draw.lam), np.asarray(draw.perm)
  assert 0 <= lam <= 1
  img, t = np.asarray(images), np.asarray(targets)
  np.testing.assert_allclose(np.asarray(out_i), lam * img + (1 - lam) * img[perm], atol=1e-6)
  np.testing.assert_allclose(np.asarray(out_t), lam * t + (1 - lam) * t[perm], atol=1e-6)


@pytest.mark.parametrize("fn", [mixing.cutmix, mixing.mixup])
def test_alpha_zero_is_identity(fn):
  images, targets = _batch(2)
  out_i, out_t = fn(jax.random.key(0), images, targets, alpha=0.0)
  np.testing.assert_array_equal(np.asarray(out_i), np.asarray(images))
  np.testing.assert_array_equal(np.asarray(out_t), np.asarray(targets))


@pytest.mark.parametrize("alpha", [1e-4, 1e4])
@pytest.mark.parametrize("fn", [mixing.cutmix, mixing.mixup])
def test_extreme_alpha_is_finite(fn, alpha):
  images, targets = _batch(3)
  out_i, out_t = fn(jax.random.key(1), images, targets, alpha=alpha)
  assert np.isfinite(np.asarray(out_i)).all() and np.isfinite(np.asarray(out_t)).all()
  np.testing.assert_allclose(np.asarray(out_t).sum(1), 1.0, atol=1e-5)


def test_lam_distribution():
  keys = jax.random.split(jax.random.key(0), 120)
  lam = lambda a: np.array([float(mixing.sample_mixup(k, B, alpha=a).lam) for k in keys])
  big, uniform, small = lam(1e4), lam(1.0), lam(0.05)
  np.testing.assert_allclose(big, 0.5, atol=0.05)  # large alpha: always about half-half
  assert abs(uniform.mean() - 0.5) < 0.06 and abs(uniform.std() - 12 ** -0.5) < 0.04
  assert (np.minimum(small, 1 - small) < 0.05).mean() > 0.6  # small alpha: mostly no mixing


@pytest.mark.parametrize("fn", [mixing.cutmix, mixing.mixup])
def test_negative_alpha_rejected(fn):
  images, targets = _batch()
  with pytest.raises(ValueError, match="alpha"):
    fn(jax.random.key(0), images, targets, alpha=-1.0)


def test_bad_shapes_rejected():
  images, targets = _batch()
  with pytest.raises(ValueError, match="targets"):
    mixing.cutmix(jax.random.key(0), images, jnp.zeros((B,), jnp.int32))
  with pytest.raises(ValueError, match="images"):
    mixing.mixup(jax.random.key(0), images[0], targets)


def test_cutout_zeroes_one_square_per_example():
  images = jnp.ones((B, H, W, C), jnp.float32)
  targets = jax.nn.one_hot(jnp.arange(B) % K, K)
  out_i, out_t = mixing.cutout(jax.random.key(5), images, targets, size_ratio=0.5)
  np.testing.assert_array_equal(np.asarray(out_t), np.asarray(targets))
  half = round(0.5 * min(H, W)) // 2
  for im in np.asarray(out_i):
    zero = (im == 0).all(-1)
    assert ((im == 0) | (im == 1)).all()  # only whole pixels are cut, nothing else changes
    rows, cols = np.nonzero(zero)
    assert rows.size > 0
    # The zeroed region is exactly a (clipped) axis-aligned rectangle of side <= 2 * half.
    assert zero[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    assert rows.max() - rows.min() < 2 * half and cols.max() - cols.min() < 2 * half
  # Examples get different squares.
  masks = {(np.asarray(out_i)[b, ..., 0] == 0).tobytes() for b in range(B)}
  assert len(masks) > 1
  # size_ratio 0 cuts nothing.
  same, _ = mixing.cutout(jax.random.key(5), images, targets, size_ratio=0.0)
  np.testing.assert_array_equal(np.asarray(same), np.asarray(images))
  with pytest.raises(ValueError, match="size_ratio"):
    mixing.cutout(jax.random.key(5), images, targets, size_ratio=1.5)


def test_jit_with_static_alpha():
  images, targets = _batch(4)
  f = jax.jit(mixing.cutmix, static_argnames="alpha")
  a = f(jax.random.key(2), images, targets, alpha=0.5)
  b = mixing.cutmix(jax.random.key(2), images, targets, alpha=0.5)
  np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[0]), atol=1e-6)
  np.testing.assert_allclose(np.asarray(a[1]), np.asarray(b[1]), atol=1e-6)
  g = jax.jit(functools.partial(mixing.mixup, alpha=1.0))
  out_i, _ = g(jax.random.key(2), images, targets)
  assert out_i.shape == images.shape
