"""Batch mixing augmentations (CutMix, MixUp, Cutout) as pure, jit-able functions.

Every mixing has the signature `(key, images, targets) -> (images, targets)` with images float
[B, H, W, C] and targets one-hot or soft [B, K] (rows summing to 1; mixing keeps that). The
same key gives the same batch. Hyper-parameters (`alpha`, `size_ratio`) are Python numbers,
static under `jax.jit` (`static_argnames`), because `alpha <= 0` switches mixing off.

Knowledge distillation: the student and the teacher must both see the *mixed* image, so run
the teacher on the images these functions return; nothing else is needed. For code that wants
the mixing decision itself (to log it, or to mix a second tensor the same way),
`sample_cutmix`/`apply_cutmix` and `sample_mixup`/`apply_mixup` split sampling from applying.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from dcjax.errors import unknown

Array = jax.Array
Mixing = Callable[[Array, Array, Array], tuple[Array, Array]]


class CutMixBox(NamedTuple):
  """One CutMix decision for a batch of B images.

  perm: int32 [B], example i gets its box from example perm[i].
  y0, y1, x0, x1: int32 [], the pasted box is rows [y0, y1) x columns [x0, x1), already clipped
    to the image (it may be empty).
  lam: float32 [], weight of the *original* target: 1 - box area / (H * W), i.e. corrected to
    the clipped box, so the target weight of the pasted image is exactly its pixel fraction.
  """
  perm: Array
  y0: Array
  y1: Array
  x0: Array
  x1: Array
  lam: Array


class MixUpDraw(NamedTuple):
  """One MixUp decision: perm int32 [B] (partner of each example), lam float32 [] (weight of
  the original example)."""
  perm: Array
  lam: Array


def _check(images: Array, targets: Array) -> None:
  # Shapes are static, so this runs once at trace time and costs nothing under jit.
  if images.ndim != 4:
    raise ValueError(f"mixing expects images [B, H, W, C], got shape {tuple(images.shape)}")
  if targets.ndim != 2 or targets.shape[0] != images.shape[0]:
    raise ValueError(f"mixing expects targets [B, K] with B={images.shape[0]}, "
                    f"got shape {tuple(targets.shape)}; one-hot encode integer labels first")


def _check_alpha(alpha: float) -> None:
  if not alpha >= 0:  # also rejects NaN
    raise ValueError(f"mixing alpha must be >= 0 (0 turns mixing off), got {alpha}")


def _sample_lam(key: Array, alpha: float) -> Array:
  """lam ~ Beta(alpha, alpha), float32 []; alpha = 0 means no mixing (lam = 1), as the
  reference implementations (`lam = np.random.beta(a, a) if a > 0 else 1`) do."""
  if alpha == 0:
    return jnp.float32(1.0)
  if alpha == 1:
    # Beta(1, 1) is exactly U(0, 1): skip the Gamma rejection sampler, whose loops cost
    # seconds of XLA compilation on CPU, for CutMix's default.
    return jax.random.uniform(key, (), jnp.float32)
  # Beta(a, a) = G1 / (G1 + G2) with G1, G2 ~ Gamma(a) i.i.d. One [2]-shaped draw instead of
  # `jax.random.beta`'s two scalar ones halves the rejection-sampler loops XLA compiles (~2 s
  # each on CPU); log-space keeps tiny alpha (Gammas that underflow to 0) well defined.
  log_g = jax.random.loggamma(key, jnp.float32(alpha), (2,), dtype=jnp.float32)
  lam = jax.nn.sigmoid(log_g[0] - log_g[1])  # = G1 / (G1 + G2), computed in log space
  # Clip: a rounding error must not put lam outside [0, 1] (sqrt(1 - lam) needs it).
  return jnp.clip(lam, 0.0, 1.0)


# ---- CutMix (Yun et al. 2019), as in the official code and timm's `rand_bbox` ----

def sample_cutmix(key: Array, shape: tuple[int, ...], alpha: float = 1.0) -> CutMixBox:
  """Draw one CutMix box and permutation for a batch of `shape` = (B, H, W, C).

  lam ~ Beta(alpha, alpha); the box has size floor(H*sqrt(1-lam)) x floor(W*sqrt(1-lam)) around
  an integer centre uniform over the image, and is clipped to the image (the reference code's
  `cy - cut_h // 2 ... cy + cut_h // 2`, so odd sizes lose a pixel, as there).
  """
  _check_alpha(alpha)
  b, h, w = shape[0], shape[1], shape[2]
  k_lam, k_perm, k_y, k_x = jax.random.split(key, 4)
  ratio = jnp.sqrt(1.0 - _sample_lam(k_lam, alpha))
  cut_h = jnp.floor(h * ratio).astype(jnp.int32)
  cut_w = jnp.floor(w * ratio).astype(jnp.int32)
  cy = jax.random.randint(k_y, (), 0, h)
  cx = jax.random.randint(k_x, (), 0, w)
  y0 = jnp.clip(cy - cut_h // 2, 0, h)
  y1 = jnp.clip(cy + cut_h // 2, 0, h)
  x0 = jnp.clip(cx - cut_w // 2, 0, w)
  x1 = jnp.clip(cx + cut_w // 2, 0, w)
  # The drawn lam is only a proposal: the target weight follows the box actually pasted.
  area = ((y1 - y0) * (x1 - x0)).astype(jnp.float32)
  lam = 1.0 - area / jnp.float32(h * w)
  perm = jax.random.permutation(k_perm, b).astype(jnp.int32)
  return CutMixBox(perm, y0, y1, x0, x1, lam)


def cutmix_mask(box: CutMixBox, height: int, width: int) -> Array:
  """bool [H, W], True inside the box (where pixels come from the permuted batch)."""
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  return (rows >= box.y0) & (rows < box.y1) & (cols >= box.x0) & (cols < box.x1)


def apply_cutmix(box: CutMixBox, images: Array, targets: Array) -> tuple[Array, Array]:
  """Paste `images[box.perm]` into the box; targets -> lam * t + (1 - lam) * t[perm]."""
  _check(images, targets)
  mask = cutmix_mask(box, images.shape[1], images.shape[2])[None, :, :, None]
  mixed = jnp.where(mask, images[box.perm], images)
  lam = box.lam.astype(targets.dtype)
  return mixed, lam * targets + (1 - lam) * targets[box.perm]


def cutmix(key: Array, images: Array, targets: Array, alpha: float = 1.0
           ) -> tuple[Array, Array]:
  """CutMix: images [B,H,W,C], targets [B,K] -> mixed images [B,H,W,C], targets [B,K].

  One box per batch, pasted from a random permutation of the batch; see `sample_cutmix`.
  """
  _check(images, targets)
  return apply_cutmix(sample_cutmix(key, images.shape, alpha), images, targets)


# ---- MixUp (Zhang et al. 2018) ----

def sample_mixup(key: Array, batch: int, alpha: float = 0.8) -> MixUpDraw:
  """Draw lam ~ Beta(alpha, alpha) and a partner permutation for a batch of `batch`."""
  _check_alpha(alpha)
  k_lam, k_perm = jax.random.split(key)
  return MixUpDraw(jax.random.permutation(k_perm, batch).astype(jnp.int32),
                   _sample_lam(k_lam, alpha))


def apply_mixup(draw: MixUpDraw, images: Array, targets: Array) -> tuple[Array, Array]:
  """x -> lam * x + (1 - lam) * x[perm], the same for targets."""
  _check(images, targets)
  li = draw.lam.astype(images.dtype)
  lt = draw.lam.astype(targets.dtype)
  return (li * images + (1 - li) * images[draw.perm],
          lt * targets + (1 - lt) * targets[draw.perm])


def mixup(key: Array, images: Array, targets: Array, alpha: float = 0.8
          ) -> tuple[Array, Array]:
  """MixUp: images [B,H,W,C], targets [B,K] -> mixed images and targets, same shapes."""
  _check(images, targets)
  return apply_mixup(sample_mixup(key, images.shape[0], alpha), images, targets)


# ---- Cutout (DeVries & Taylor 2017) ----

def cutout(key: Array, images: Array, targets: Array, size_ratio: float = 0.5
           ) -> tuple[Array, Array]:
  """Cutout: zero one square per example; images [B,H,W,C] -> same, targets unchanged.

  The square spans centre -/+ L // 2 with L = round(size_ratio * min(H, W)) (the reference
  code's arithmetic, so an odd L loses a pixel); its integer centre is uniform over the image
  and it is clipped at the border, so near edges less is cut.
  """
  _check(images, targets)
  if not 0 <= size_ratio <= 1:
    raise ValueError(f"cutout size_ratio must be in [0, 1], got {size_ratio}")
  b, h, w = images.shape[:3]
  half = round(size_ratio * min(h, w)) // 2
  k_y, k_x = jax.random.split(key)
  cy = jax.random.randint(k_y, (b, 1, 1), 0, h)
  cx = jax.random.randint(k_x, (b, 1, 1), 0, w)
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  # No explicit clipping needed: rows/cols outside the image simply never match.
  inside = ((rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half))
  return jnp.where(inside[..., None], jnp.zeros((), images.dtype), images), targets


def none(key: Array, images: Array, targets: Array) -> tuple[Array, Array]:
  """Identity: no mixing."""
  del key
  return images, targets


MIXINGS: dict[str, Mixing] = {
    "none": none,
    "cutmix": cutmix,  # alpha 1.0
    "mixup": mixup,  # alpha 0.8
    "cutout": cutout,  # half the side
}


def get_mixing(name: str) -> Mixing:
  """A pure `(key, images [B,H,W,C], targets [B,K]) -> (images, targets)` by name, with the
  default hyper-parameters (use `functools.partial` on the function for others)."""
  if name not in MIXINGS:
    raise unknown("mixing", name, MIXINGS)
  return MIXINGS[name]
