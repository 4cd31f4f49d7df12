"""PCA's Combine step (Prune, Combine, Augment; Xiao et al. 2025): k x k tiling of whole images.

Every k² consecutive selected images (one class, in the order given) are downscaled whole — no
cropping — and laid out row-major on a k x k grid into one image of the original size, labelled
with their class. `dcjax.augment.tile_crop` later crops inside a single tile; both use
`tile_bounds`, so the tiles written here and the tiles cropped there agree to the pixel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dcjax import resample


Array = jax.Array


def _check_k(k) -> int:
  # bool is an int subclass; k=True would silently mean 1.
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"tile grid k must be a positive integer, got {k!r}")
  return int(k)


def tile_bounds(size: int, k: int) -> list[tuple[int, int]]:
  """The k tiles' [start, stop) pixel ranges along an axis of `size` pixels.

  Boundary i sits at round(i * size / k), rounding halves up (computed in integers, so there is
  no float or banker's-rounding ambiguity): tiles differ in size by at most one pixel when k
  does not divide `size`, and together they cover [0, size) exactly. Needs size >= k so that
  no tile is empty.
  """
  k = _check_k(k)
  if size < k:
    raise ValueError(f"cannot tile {size} pixels into {k} tiles; use k <= {size}")
  edge = [(2 * i * size + k) // (2 * k) for i in range(k + 1)]  # floor(i*size/k + 1/2)
  return [(edge[i], edge[i + 1]) for i in range(k)]


def _check_groups(n: int, k: int, what: str) -> int:
  """The number of k²-groups in n items; ValueError if n is not a multiple of k²."""
  if n % (k * k):
    raise ValueError(f"cannot tile {n} {what} with k={k}: need a multiple of k*k={k * k} "
                    f"(per class), got {n % (k * k)} left over")
  return n // (k * k)


def tile(images: Array, k: int, method: str = "linear") -> Array:
  """Combine: [N, H, W, C] -> [N / k², H, W, C], k² whole images per output image.

  Image j of each group of k² consecutive images is resized with `method`
  (`dcjax.resample.METHODS`; default antialiased linear, i.e.
  `jax.image.resize(..., "linear", antialias=True)`) to tile (j // k, j % k), whose pixel box is
  given by `tile_bounds(H, k)` x `tile_bounds(W, k)`. Floats stay in their dtype; integer
  images (uint8) are resized in float32, then rounded and clipped back to their dtype. k=1
  returns `images` unchanged (bit-exact). Pure and jit-able with k static.
  """
  k = _check_k(k)
  resample.check_method(method)
  if images.ndim != 4:
    raise ValueError(f"tile expects images [N, H, W, C], got shape {tuple(images.shape)}")
  n, height, width, channels = images.shape
  groups = _check_groups(n, k, "images")
  ys, xs = tile_bounds(height, k), tile_bounds(width, k)
  if k == 1:
    return images  # resize to the same shape is not guaranteed bit-exact, so skip it

  integer = jnp.issubdtype(images.dtype, jnp.integer)
  x = images.astype(jnp.float32) if integer else images
  x = x.reshape(groups, k * k, height, width, channels)
  rows = []
  for r, (y0, y1) in enumerate(ys):
    cells = [resample.resize(x[:, r * k + c], y1 - y0, x1 - x0, method)
             for c, (x0, x1) in enumerate(xs)]
    rows.append(jnp.concatenate(cells, axis=2))
  out = jnp.concatenate(rows, axis=1)
  if integer:
    # Linear, area and nearest weights are normalised and non-negative, so values stay in
    # range up to float error (cubic and lanczos3 overshoot and are clipped); round rather
    # than truncate so constant regions keep their exact value.
    info = jnp.iinfo(images.dtype)
    out = jnp.clip(jnp.round(out), info.min, info.max).astype(images.dtype)
  return out


def tile_labels(labels, k: int):
  """Labels [N, ...] -> [N / k², ...]: the first label of every group of k² consecutive items,
  i.e. the one class behind each tiled image (pure; check groups with `check_tile_labels`)."""
  k = _check_k(k)
  groups = _check_groups(labels.shape[0], k, "labels")
  return labels.reshape(groups, k * k, *labels.shape[1:])[:, 0]


def check_tile_labels(labels, k: int) -> None:
  """ValueError unless every group of k² consecutive labels (host values) is one class,
  naming the first mixed group."""
  k = _check_k(k)
  host = np.asarray(labels)
  if host.ndim < 1:
    raise ValueError(f"tile_labels expects labels [N], got shape {host.shape}")
  groups = _check_groups(host.shape[0], k, "labels")
  grouped = host.reshape(groups, k * k, *host.shape[1:])
  same = (grouped == grouped[:, :1]).reshape(groups, -1).all(axis=1)
  if not same.all():
    g = int(np.argmin(same))
    classes = sorted({str(v) for v in grouped[g].reshape(k * k, -1).tolist()}) if host.ndim > 1 \
        else sorted(set(grouped[g].tolist()))
    raise ValueError(f"tile group {g} (items {g * k * k}-{(g + 1) * k * k - 1}) mixes classes "
                     f"{classes}; each k*k={k * k} consecutive images must share one class")


def tile_sources(indices, k: int) -> list[list[int]]:
  """Source indices [N] -> the k² indices behind each tiled image, in tile order (row-major),
  for the manifest. ValueError if N is not a multiple of k²."""
  k = _check_k(k)
  flat = np.asarray(indices).reshape(-1)
  groups = _check_groups(flat.shape[0], k, "indices")
  return [[int(i) for i in row] for row in flat.reshape(groups, k * k)]
