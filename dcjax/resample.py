"""Image resampling kernels for Combine (downscale into a tile) and Augment (a tile or a crop
upscaled to the training view), as pure, jit-able functions of float images [..., H, W, C].

Methods (`METHODS`):
  linear    antialiased (bi)linear, jax.image's "linear" with antialias=True (dcjax's default)
  cubic     antialiased Keys cubic (a = -0.5), jax.image's "cubic"
  lanczos3  antialiased Lanczos, 3 lobes, jax.image's "lanczos3" (overshoots: may leave [0, 1])
  area      box filter: every output pixel is the mean of the input area it covers, with
            fractional pixels weighted by their overlap (PIL's BOX, OpenCV's INTER_AREA when
            downscaling; a sharp, blended nearest when upscaling)
  nearest   the input pixel under each output pixel's centre

'linear', 'cubic' and 'lanczos3' go through `jax.image.scale_and_translate`; 'area' and
'nearest' are written here as separable [out, in] weight matrices built from the (possibly
fractional, traced) box, so every method takes the same per-example crop box.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

METHODS = ("linear", "cubic", "lanczos3", "area", "nearest")
_JAX_METHODS = ("linear", "cubic", "lanczos3")


def check_method(method: str) -> str:
  if method not in METHODS:
    raise ValueError(f"unknown resampling {method!r}; known: {', '.join(METHODS)}")
  return method


def _axis_weights(start, length, size: int, n_in: int, method: str) -> Array:
  """[size, n_in] weights mapping an input axis of n_in pixels to `size` output pixels that
  cover the input interval [start, start + length)."""
  step = length / size
  i = jnp.arange(size, dtype=jnp.float32)[:, None]
  j = jnp.arange(n_in, dtype=jnp.float32)[None, :]
  if method == "nearest":
    centre = start + (i + 0.5) * step
    src = jnp.clip(jnp.floor(centre), 0, n_in - 1)
    return (j == src).astype(jnp.float32)
  lo = start + i * step
  hi = lo + step
  overlap = jnp.clip(jnp.minimum(hi, j + 1) - jnp.maximum(lo, j), 0.0, None)
  # Rows are normalised: a box reaching past the image edge averages what lies inside.
  return overlap / jnp.maximum(overlap.sum(axis=1, keepdims=True), 1e-12)


def _matrix_resize(image: Array, wy: Array, wx: Array) -> Array:
  return jnp.einsum("ij,...jkc,lk->...ilc", wy, image, wx,
                    precision=jax.lax.Precision.HIGHEST)


def crop_resize(image: Array, y0, x0, h, w, size: int, method: str = "linear") -> Array:
  """Crop the (possibly fractional) box [y0, y0+h) x [x0, x0+w) of one [H, W, C] image and
  resample it to [size, size, C] with `method`."""
  check_method(method)
  height, width = image.shape[0], image.shape[1]
  if method in _JAX_METHODS:
    sy, sx = size / h, size / w
    return jax.image.scale_and_translate(
        image, (size, size, image.shape[-1]), spatial_dims=(0, 1),
        scale=jnp.stack([sy, sx]), translation=jnp.stack([-y0 * sy, -x0 * sx]),
        method=method, antialias=True)
  wy = _axis_weights(y0, h, size, height, method)
  wx = _axis_weights(x0, w, size, width, method)
  return _matrix_resize(image, wy, wx)


def resize(images: Array, height: int, width: int, method: str = "linear") -> Array:
  """Whole images [..., H, W, C] -> [..., height, width, C] with `method` ('linear' is exactly
  `jax.image.resize(..., "linear", antialias=True)`)."""
  check_method(method)
  if method in _JAX_METHODS:
    shape = (*images.shape[:-3], height, width, images.shape[-1])
    return jax.image.resize(images, shape, method=method, antialias=True)
  wy = _axis_weights(0.0, float(images.shape[-3]), height, images.shape[-3], method)
  wx = _axis_weights(0.0, float(images.shape[-2]), width, images.shape[-2], method)
  return _matrix_resize(images, wy, wx)


def _blur3(images: Array) -> Array:
  """Separable [1, 2, 1] / 4 blur of [N, H, W, C] with edge replication (constants stay)."""
  x = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  x = (x[:, :-2] + 2 * x[:, 1:-1] + x[:, 2:]) / 4
  return (x[:, :, :-2] + 2 * x[:, :, 1:-1] + x[:, :, 2:]) / 4


def random_sharpness(key: Array, images: Array, strength: float) -> Array:
  """Per-example unsharp mask / blur: x + a * (x - blur(x)), a ~ U(-strength, strength) with a
  floored at -1 (a = -1 is the [1,2,1]² blur itself, a > 0 sharpens). Linear and
  constant-preserving, so it commutes with per-channel normalisation. strength 0: identity."""
  if strength == 0:
    return images
  a = jax.random.uniform(key, (images.shape[0], 1, 1, 1), minval=-strength, maxval=strength)
  a = jnp.maximum(a, -1.0)
  return images + a * (images - _blur3(images))


def down_up(images: Array, size: int, down: str = "linear", up: str = "linear") -> Array:
  """uint8 images [N, H, W, C] downscaled to size x size with `down` and back to H x W with
  `up`, rounded to uint8 after each step: what a Combine tile of that size stores and what
  its training view is upscaled with. The PCA study tests students on such a copy of the test
  split to measure the train/test sharpness shift (the protocol's own test stays sharp)."""
  height, width = images.shape[-3], images.shape[-2]

  def to_uint8(x):
    return jnp.clip(jnp.round(x), 0, 255).astype(jnp.uint8)

  small = to_uint8(resize(images.astype(jnp.float32), size, size, down))
  return to_uint8(resize(small.astype(jnp.float32), height, width, up))
