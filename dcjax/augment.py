"""Training augmentations as pure, jit-able functions of (key, images).

Images are float [N, H, W, C]; every function draws independent randomness per example from
`key`, so the same key gives the same batch. Each named augmentation has a space
(`in_normalised_space`): the torchvision-style ones (flip, rrc_flip, tile_crop) see [0, 1]
pixels before normalisation, as torchvision transforms do; DSA ('dsa', 'tile_dsa') sees the
normalised tensor, as in the DC/DSA code, so its zero fills are the dataset mean and its
brightness jitter is in normalised units. 'dsa_pixel' / 'tile_dsa_pixel' are the same ops on
[0, 1] pixels (dcjax's small-data protocol before 2026-12; BENCHMARKS.md compares them).
"""

from __future__ import annotations

import functools

import math
from typing import Callable

import jax
import jax.numpy as jnp

from dcjax import resample
from dcjax.combine import tile_bounds
from dcjax.errors import unknown

Array = jax.Array


def _crop_resize(image: Array, y0, x0, h, w, size: int, method: str = "linear") -> Array:
  """Crop the (possibly fractional) box [y0, y0+h) x [x0, x0+w) of one [H, W, C] image and
  resize it to [size, size, C] (`dcjax.resample.crop_resize`; default antialiased bilinear)."""
  return resample.crop_resize(image, y0, x0, h, w, size, method)


def sample_rrc_boxes(key: Array, n: int, height: float, width: float,
                     scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10):
  """torchvision's RandomResizedCrop box sampler, vectorised over `n` examples.

  Tries `attempts` (area, log-aspect) draws per example and keeps the first that fits; if none
  fits, falls back to the largest centred crop with the aspect ratio clamped to `ratio`.
  Returns (y0, x0, h, w), each float [n].
  """
  k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
  area = height * width
  target = area * jax.random.uniform(k_area, (n, attempts), minval=scale[0], maxval=scale[1])
  log_r = jax.random.uniform(k_ratio, (n, attempts), minval=math.log(ratio[0]),
                             maxval=math.log(ratio[1]))
  aspect = jnp.exp(log_r)
  w = jnp.round(jnp.sqrt(target * aspect))
  h = jnp.round(jnp.sqrt(target / aspect))
  ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
  first = jnp.argmax(ok, axis=1)
  any_ok = ok.any(axis=1)
  pick = lambda a: jnp.take_along_axis(a, first[:, None], axis=1)[:, 0]
  h, w = pick(h), pick(w)
  # Fallback: centre crop at the clamped aspect ratio (torchvision semantics).
  in_ratio = width / height
  fb_w = jnp.where(in_ratio < ratio[0], width, jnp.where(in_ratio > ratio[1], round(height * ratio[1]), width))
  fb_h = jnp.where(in_ratio < ratio[0], round(width / ratio[0]), height)
  h = jnp.where(any_ok, h, fb_h)
  w = jnp.where(any_ok, w, fb_w)
  y0 = jnp.where(any_ok, jnp.floor(jax.random.uniform(k_y, (n,)) * (height - h + 1)),
                 jnp.floor((height - h) / 2))
  x0 = jnp.where(any_ok, jnp.floor(jax.random.uniform(k_x, (n,)) * (width - w + 1)),
                 jnp.floor((width - w) / 2))
  return y0, x0, h, w


def random_resized_crop(key: Array, images: Array, size: int, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3), method: str = "linear") -> Array:
  """RandomResizedCrop: images [N, H, W, C] -> [N, size, size, C]."""
  n, height, width, _ = images.shape
  y0, x0, h, w = sample_rrc_boxes(key, n, height, width, scale, ratio)
  return jax.vmap(lambda im, a, b, c, d: _crop_resize(im, a, b, c, d, size, method))(
      images, y0, x0, h, w)


def flip(key: Array, images: Array, p: float = 0.5) -> Array:
  """Horizontal flip of each image with probability p."""
  do = jax.random.bernoulli(key, p, (images.shape[0],))
  return jnp.where(do[:, None, None, None], images[:, :, ::-1, :], images)


# ---- DSA (Zhao & Bilen 2021) differentiable-siamese augmentation, evaluation mode ----
# One of the ops below is chosen per batch ('S' mode, the DSA default), with per-example
# parameters. Constants are DSA's ParamDiffAug defaults.

def _affine(images: Array, theta: Array) -> Array:
  """Apply per-example 2x3 affine maps in normalised [-1, 1] coordinates (PyTorch
  affine_grid/grid_sample with align_corners=True, as DSA; bilinear, zeros outside).
  theta: [N, 2, 3]."""
  n, h, w, c = images.shape
  ys = jnp.linspace(-1.0, 1.0, h)
  xs = jnp.linspace(-1.0, 1.0, w)
  gy, gx = jnp.meshgrid(ys, xs, indexing="ij")
  base = jnp.stack([gx, gy, jnp.ones_like(gx)], -1)  # [h, w, 3]

  def one(im, th):
    src = base @ th.T  # [h, w, 2] as (x, y)
    sx = (src[..., 0] + 1) * (w - 1) / 2
    sy = (src[..., 1] + 1) * (h - 1) / 2
    sample = lambda ch: jax.scipy.ndimage.map_coordinates(ch, [sy, sx], order=1, mode="constant")
    return jax.vmap(sample, in_axes=2, out_axes=2)(im)

  return jax.vmap(one)(images, theta)


def _dsa_scale(key, x, ratio: float = 1.2):
  s = jax.random.uniform(key, (x.shape[0], 2), minval=1.0 / ratio, maxval=ratio)
  z = jnp.zeros(x.shape[0])
  theta = jnp.stack([jnp.stack([s[:, 0], z, z], -1), jnp.stack([z, s[:, 1], z], -1)], 1)
  return _affine(x, theta)


def _dsa_rotate(key, x):
  a = (jax.random.uniform(key, (x.shape[0],)) - 0.5) * 2 * 15 / 180 * math.pi
  z = jnp.zeros_like(a)
  theta = jnp.stack([jnp.stack([jnp.cos(a), jnp.sin(-a), z], -1),
                     jnp.stack([jnp.sin(a), jnp.cos(a), z], -1)], 1)
  return _affine(x, theta)


def _dsa_crop(key, x):
  """Translate by up to 1/8 of the size (rounded) with zero fill (DSA 'crop')."""
  n, h, w, _ = x.shape
  ky, kx = jax.random.split(key)
  sy, sx = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
  ty = jax.random.randint(ky, (n,), -sy, sy + 1)
  tx = jax.random.randint(kx, (n,), -sx, sx + 1)
  padded = jnp.pad(x, ((0, 0), (h, h), (w, w), (0, 0)))
  shift = lambda im, a, b: jax.lax.dynamic_slice(im, (h + a, w + b, 0), (h, w, im.shape[-1]))
  return jax.vmap(shift)(padded, ty, tx)


def _dsa_cutout(key, x, ratio: float = 0.5):
  n, h, w, _ = x.shape
  ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  ky, kx = jax.random.split(key)
  cy = jax.random.randint(ky, (n, 1, 1), 0, h + (1 - ch % 2))
  cx = jax.random.randint(kx, (n, 1, 1), 0, w + (1 - cw % 2))
  yy = jnp.arange(h)[None, :, None]
  xx = jnp.arange(w)[None, None, :]
  # DSA zeroes rows [cy - ch//2, cy - ch//2 + ch) (clipped to the image), likewise columns.
  inside = ((yy >= cy - ch // 2) & (yy < cy - ch // 2 + ch) &
            (xx >= cx - cw // 2) & (xx < cx - cw // 2 + cw))
  return jnp.where(inside[..., None], 0.0, x)


def _dsa_color(key, x):
  kb, ks, kc = jax.random.split(key, 3)
  n = x.shape[0]
  x = x + (jax.random.uniform(kb, (n, 1, 1, 1)) - 0.5)  # brightness
  mean = x.mean(axis=3, keepdims=True)
  x = (x - mean) * (jax.random.uniform(ks, (n, 1, 1, 1)) * 2.0) + mean  # saturation
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  return (x - mean) * (jax.random.uniform(kc, (n, 1, 1, 1)) + 0.5) + mean  # contrast


def _dsa_flip(key, x):
  return flip(key, x)


_DSA_OPS = (_dsa_color, _dsa_crop, _dsa_cutout, _dsa_flip, _dsa_scale, _dsa_rotate)


def dsa(key: Array, images: Array) -> Array:
  """DSA augmentation ('color_crop_cutout_flip_scale_rotate', one op per batch)."""
  k_op, k = jax.random.split(key)
  op = jax.random.randint(k_op, (), 0, len(_DSA_OPS))
  return jax.lax.switch(op, [lambda k, x, f=f: f(k, x) for f in _DSA_OPS], k, images)


# ---- named training augmentations used by the evaluation protocols ----

def _rrc_flip(key, images, scale=(0.08, 1.0), method="linear"):
  k1, k2 = jax.random.split(key)
  return flip(k2, random_resized_crop(k1, images, images.shape[1], scale=scale, method=method))


def _none(key, images):
  del key
  return images


AUGMENTATIONS: dict[str, Callable[[Array, Array], Array]] = {
    "none": _none,
    "flip": flip,
    "rrc_flip": _rrc_flip,  # RandomResizedCrop(scale 0.08-1) + flip at the input resolution
    "dsa": dsa,
    "dsa_pixel": dsa,  # the same function; the training step feeds it [0, 1] pixels
}

# Augmentations applied to normalised images (the training step normalises first).
NORMALISED_SPACE = frozenset({"dsa", "tile_dsa", "tile_dsa_noflip"})


def in_normalised_space(name: str) -> bool:
  """True when the named augmentation is applied after normalisation (`training.Step`'s
  `augment_normalised`), False when it sees [0, 1] pixels."""
  return name in NORMALISED_SPACE


TILE_AUGMENTATIONS = ("tile_crop", "tile_dsa", "tile_dsa_pixel", "tile_dsa_noflip")


def get_augmentation(name: str, tiles: int = 1,
                     crop_scale: tuple[float, float] | None = None, resampling: str = "linear",
                     sharpen: float = 0.0) -> Callable[[Array, Array], Array]:
  """A pure `(key, images [N,H,W,C] float) -> images` by name (`in_normalised_space(name)`
  says which space it expects). 'tile_crop' (PCA's Augment) crops inside one tile of the
  `tiles` x `tiles` grid of a combined image; 'tile_dsa' (and 'tile_dsa_pixel') takes one whole
  tile (resized to the image size, flipped at random), then DSA. `crop_scale`
  (area fraction bounds of the RandomResizedCrop; None: 0.08-1) applies to 'rrc_flip' and
  'tile_crop'. `resampling` (`dcjax.resample.METHODS`) is the kernel of every crop-resize
  ('rrc_flip', 'tile_crop', 'tile_dsa'); `sharpen` > 0 adds `dcjax.resample.random_sharpness`
  of that strength to every view (after the crop-resize, before DSA). 'tile_dsa_noflip' is
  'tile_dsa' without the tile view's flip (DSA keeps its own flip op, drawn for one batch in
  six): on data with a fixed orientation (Fashion-MNIST's shoes all face left) a flip of every
  other view is a shift from the test images."""
  scale = (0.08, 1.0) if crop_scale is None else tuple(float(v) for v in crop_scale)
  if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
    raise ValueError(f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {crop_scale}")
  resample.check_method(resampling)
  if isinstance(sharpen, bool) or not isinstance(sharpen, (int, float)) or \
      not 0 <= sharpen <= 4:
    raise ValueError(f"sharpen must be a number in [0, 4] (0: off), got {sharpen!r}")
  sharpen = float(sharpen)
  if name == "tile_crop":
    view = make_tile_crop(tiles, scale=scale, method=resampling)
  elif name in ("tile_dsa", "tile_dsa_pixel", "tile_dsa_noflip"):
    whole_tile = make_tile_crop(tiles, scale=(1.0, 1.0), ratio=(1.0, 1.0), method=resampling,
                                flip_views=name != "tile_dsa_noflip")

    def tile_dsa(key: Array, images: Array) -> Array:
      k_tile, k_dsa = jax.random.split(key)
      x = whole_tile(k_tile, images)
      if sharpen:
        k_dsa, k_sharp = jax.random.split(k_dsa)
        x = resample.random_sharpness(k_sharp, x, sharpen)
      return dsa(k_dsa, x)

    return tile_dsa
  elif name == "rrc_flip" and (crop_scale is not None or resampling != "linear"):
    view = functools.partial(_rrc_flip, scale=scale, method=resampling)
  elif name not in AUGMENTATIONS:
    raise unknown("augmentation", name, (*AUGMENTATIONS, *TILE_AUGMENTATIONS))
  else:
    view = AUGMENTATIONS[name]
  if not sharpen:
    return view

  def sharpened(key: Array, images: Array) -> Array:
    k_view, k_sharp = jax.random.split(key)
    return resample.random_sharpness(k_sharp, view(k_view, images), sharpen)

  return sharpened


# ---- PCA (Xiao et al. 2025) Augment: RandomResizedCrop inside one tile of a k x k image ----


def tile_crop(key: Array, images: Array, k: int, size: int, scale=(0.08, 1.0),
              ratio=(3 / 4, 4 / 3), method: str = "linear", flip_views: bool = True) -> Array:
  """PCA's train-time view of a tiled image: images [N, H, W, C] float -> [N, size, size, C].

  Per image: pick one of the k x k tiles (`dcjax.combine.tile_bounds`) uniformly, sample a
  torchvision RandomResizedCrop box (`sample_rrc_boxes`) with area and aspect relative to that
  tile, in integer pixels inside [tile_start, tile_stop), resize it to `size` (with `method`,
  default antialiased linear, via `_crop_resize`), then flip horizontally with probability 1/2
  (`flip_views`; False: no flip, the same boxes).

  The tile is sliced out before resizing because the antialiased resize also weighs pixels
  just outside the box; on the sliced tile those do not exist, so no pixel of another tile ever
  reaches the output. With k=1 no tile is drawn and the keys are split as in the "rrc_flip"
  augmentation, so the output equals flip(k2, random_resized_crop(k1, images, size)) exactly,
  where k1, k2 = jax.random.split(key). Jit-able with k, size, scale and ratio static. When k
  does not divide H or W, tiles come in up to 2 x 2 shapes and every shape is cropped for
  every image then selected (up to 4x the resize work).
  """
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"tile_crop k must be a positive integer, got {k!r}")
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise ValueError(f"tile_crop size must be a positive integer, got {size!r}")
  if images.ndim != 4:
    raise ValueError(f"tile_crop expects images [N, H, W, C], got shape {tuple(images.shape)}")
  n, height, width, channels = images.shape
  ys, xs = tile_bounds(height, k), tile_bounds(width, k)
  k_crop, k_flip = jax.random.split(key)
  if k == 1:
    k_box, t = k_crop, jnp.zeros((n,), jnp.int32)
  else:
    k_tile, k_box = jax.random.split(k_crop)
    t = jax.random.randint(k_tile, (n,), 0, k * k)
  row, col = t // k, t % k
  y_start = jnp.asarray([a for a, _ in ys])[row]
  x_start = jnp.asarray([a for a, _ in xs])[col]
  tile_h = jnp.asarray([b - a for a, b in ys])[row]
  tile_w = jnp.asarray([b - a for a, b in xs])[col]

  out = jnp.zeros((n, size, size, channels), images.dtype)
  for th in sorted({b - a for a, b in ys}):
    for tw in sorted({b - a for a, b in xs}):
      # The same key for every tile shape: each image sees the same uniform draws, so its box
      # is exactly the one sample_rrc_boxes would give for its own tile shape.
      y0, x0, h, w = sample_rrc_boxes(k_box, n, th, tw, scale, ratio)

      def crop(im, ty, tx, a, b, c, d, th=th, tw=tw):
        # Images whose tile has another shape get a clamped, meaningless slice here; they are
        # discarded by the select below.
        cell = jax.lax.dynamic_slice(im, (ty, tx, 0), (th, tw, channels))
        return _crop_resize(cell, a, b, c, d, size, method)

      views = jax.vmap(crop)(images, y_start, x_start, y0, x0, h, w)
      pick = (tile_h == th) & (tile_w == tw)
      out = jnp.where(pick[:, None, None, None], views.astype(out.dtype), out)
  return flip(k_flip, out) if flip_views else out


def make_tile_crop(k: int, size: int | None = None, scale=(0.08, 1.0),
                   ratio=(3 / 4, 4 / 3), method: str = "linear",
                   flip_views: bool = True) -> Callable[[Array, Array], Array]:
  """`tile_crop` with k fixed, as a `(key, images [N, H, W, C]) -> [N, size, size, C]`
  augmentation for the training runner; size None crops back to the input height H."""
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"tile_crop k must be a positive integer, got {k!r}")

  def tile_crop_k(key: Array, images: Array) -> Array:
    return tile_crop(key, images, k, images.shape[1] if size is None else size, scale, ratio,
                     method, flip_views)

  return tile_crop_k
