"""Layers with hand-written gradients for XLA:CPU, where the stock ones train slowly.

Profiling ConvNet-3 on a 2-core CPU (jax 0.10, BENCHMARKS.md "CPU convolution gap") showed that
XLA:CPU's gradient of a convolution with respect to its *kernel* is pathological: for the first
layer (1 -> 128 channels, 28 px, batch 256) it took 3.6 s against 0.15 s for the forward pass,
and GroupNorm's (= instance norm's) autodiff gradient cost more than the convolutions around it.
These layers compute the same functions with the same parameters (names, shapes, initialisers
as `nn.Conv` / `nn.GroupNorm(num_groups=channels)`), so variables are interchangeable, but
their backward passes are written as plain matrix products and reductions:

- `conv2d`: stride-1 convolution whose kernel gradient is an explicit sum over the kh*kw
  offsets of [ci, B*H*W] @ [B*H*W, co] products (one im2col product when kh*kw*ci is small)
  and whose input gradient is the forward convolution of the cotangent with the flipped kernel.
- `conv2d_winograd`: the 3x3, pad-1 convolutions of wide layers by Winograd's minimal filtering
  F(2x2, 3x3) (Lavin & Gray, 2016): every 4x4 input tile and the kernel are transformed so that
  the convolution becomes 16 independent [N, ci] @ [ci, co] products, 2.25x fewer multiply-adds
  than the direct form; the input gradient is the same algorithm on the flipped kernel, the
  kernel gradient 16 [ci, N] @ [N, co] products in the transformed domain. On a 2-core AMD EPYC
  a ConvNet-3 layer's forward and backward run ~2x faster than `conv2d` (BENCHMARKS.md); the
  results differ from the direct form by float rounding (~1e-6 relative). `winograd_3x3`
  builds the same custom-VJP convolution from any F(m x m, 3x3)'s transforms.
- `instance_norm`: per-example, per-channel normalisation over H, W with the closed-form
  gradient dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sigma.
- `instance_norm_relu_pool`: ConvNet's affine instance norm -> ReLU -> 2x2 average pool as one
  function. After Winograd the first block (1 or 3 -> 128 channels at 32 px: 134 MB per
  activation at batch 256) was bound by passes over memory, not arithmetic; the fused gradient
  recomputes x_hat and the ReLU mask from the conv output and makes two passes (per-example
  sums, then dy) where the layer-by-layer one made several. That block's forward + backward
  runs ~1.47x faster at batch 256 (BENCHMARKS.md); values agree to float rounding.

`impl='auto'` uses them on the CPU backend only (Winograd where it applies: 3x3 kernel, padding
1, even height and width, at least 32 input channels, float32; the fused block where ConvNet
has instance norm and even sizes), and GPUs and TPUs keep XLA's own kernels. `impl='fused'` is
that CPU path on any backend; `impl='winograd'` the CPU path without the fused block (dcjax's
CPU default from 2026-12-06 morning to evening), `impl='custom'` without Winograd either (the
direct form, the CPU default before), `impl='xla'` XLA's kernels everywhere. Each earlier path
is kept bitwise as it was.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_DN = ("NHWC", "HWIO", "NHWC")
# Below this many kernel rows (kh * kw * ci) the im2col patch matrix is small enough that one
# matrix product beats kh * kw thin ones (first layers of 1- or 3-channel images).
_IM2COL_MAX_ROWS = 64


def _conv(x, w, pad: int):
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((pad, pad), (pad, pad)),
                                      dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x: jax.Array, w: jax.Array, pad: int) -> jax.Array:
  """Stride-1 NHWC convolution with `pad` zeros on every side; x [B,H,W,ci], w [kh,kw,ci,co]."""
  return _conv(x, w, pad)


def _conv2d_fwd(x, w, pad):
  return _conv(x, w, pad), (x, w)


def _conv2d_bwd(pad, res, g):
  x, w = res
  kh, kw, ci, co = w.shape
  ho, wo = g.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  g2 = g.reshape(-1, co)
  shifted = [xp[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)]
  if kh * kw * ci <= _IM2COL_MAX_ROWS:
    patches = jnp.concatenate(shifted, axis=-1).reshape(-1, kh * kw * ci)
    dw = jnp.dot(patches.T, g2, preferred_element_type=jnp.float32)
  else:
    dw = jnp.stack([jnp.dot(s.reshape(-1, ci).T, g2, preferred_element_type=jnp.float32)
                    for s in shifted])
  dw = dw.reshape(kh, kw, ci, co)
  # d/dx of a stride-1 convolution: the cotangent convolved with the spatially flipped kernel,
  # input and output channels swapped; padding kh-1-pad (negative padding crops).
  q_h, q_w = kh - 1 - pad, kw - 1 - pad
  dx = jax.lax.conv_general_dilated(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), (1, 1),
                                    ((q_h, q_h), (q_w, q_w)), dimension_numbers=_DN)
  return dx.astype(x.dtype), dw.astype(w.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


# Winograd F(2x2, 3x3): y = A^T [(G g G^T) * (B^T d B)] A per 4x4 input tile d and 2x2 output.
_WINO_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_WINO_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
_WINO_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def _combine(mat: np.ndarray, xs: list) -> list:
  """[sum_j mat[i, j] * xs[j] for every row i], written out so that the zeros cost nothing and
  +-1 are additions: XLA fuses the result into one elementwise pass per output."""
  out = []
  for row in mat:
    acc = None
    for c, x in zip(row, xs):
      if c == 0:
        continue
      term = x if c == 1 else -x if c == -1 else c * x
      acc = term if acc is None else acc + term
    out.append(acc)
  return out


def _winograd_tiles(x: jax.Array, bt: np.ndarray) -> list[jax.Array]:
  """x [B, H, W, c] -> t*t arrays [B*H/m*W/m, c] (t = m + 2, bt [t, t]): B^T d B of every t x t
  tile (stride m) of x padded by 1. Kept as separate arrays: XLA:CPU stacks them ~4x slower
  than it makes them."""
  _, h, w, c = x.shape
  t, m = len(bt), len(bt) - 2
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  d = [[xp[:, a:a + h:m, b:b + w:m, :] for b in range(t)] for a in range(t)]
  cols = [_combine(bt, [d[a][b] for a in range(t)]) for b in range(t)]  # cols[b][u]
  tiles = []
  for u in range(t):
    tiles += _combine(bt, [cols[b][u] for b in range(t)])  # index t*u + v
  return [d.reshape(-1, c) for d in tiles]


def _winograd_untile(m: list[jax.Array], shape: tuple, at: np.ndarray) -> jax.Array:
  """t*t arrays [N, co] -> y [B, H, W, co]: A^T m A of every tile (at [m, t]), the m x m
  outputs interleaved."""
  b, h, w, co = shape
  n, t = at.shape
  m = [p.reshape(b, h // n, w // n, co) for p in m]
  rows = [_combine(at, [m[t * u + v] for u in range(t)]) for v in range(t)]  # [v][p]
  y = [[_combine(at, [rows[v][p] for v in range(t)])[q] for q in range(n)] for p in range(n)]
  y = jnp.stack([jnp.stack(y[p], axis=3) for p in range(n)], axis=2)  # [B, H/n, n, W/n, n, co]
  return y.reshape(b, h, w, co)


def _winograd_untile_transpose(g: jax.Array, at: np.ndarray) -> list[jax.Array]:
  """The transpose of `_winograd_untile`: g [B, H, W, co] -> t*t arrays [N, co]."""
  co = g.shape[-1]
  n, t = at.shape
  gq = [[g[:, p::n, q::n, :] for q in range(n)] for p in range(n)]
  rows = [_combine(at.T, [gq[p][q] for p in range(n)]) for q in range(n)]  # [q][u]
  out = []
  for u in range(t):
    out += _combine(at.T, [rows[q][u] for q in range(n)])
  return [d.reshape(-1, co) for d in out]


def winograd_3x3(bt: np.ndarray, g: np.ndarray, at: np.ndarray) -> Callable:
  """The 3x3, pad-1 convolution `(x, w) -> y` of Winograd's minimal filtering F(m x m, 3x3)
  given its transforms (bt [t, t], g [t, 3], at [m, t], t = m + 2), with a custom VJP: the
  input gradient is the same algorithm on the flipped, channel-swapped kernel; the kernel
  gradient t*t [ci, N] @ [N, co] products in the transformed domain (the tiles recomputed, not
  kept), mapped back by G^T . G. x [B, H, W, ci] needs H and W multiples of m.
  `conv2d_winograd` is F(2x2, 3x3); experiments/bench_winograd_tiles.py measures F(4x4, 3x3)."""
  n, t = at.shape

  def forward(x, w):
    if w.shape[:2] != (3, 3) or x.shape[1] % n or x.shape[2] % n:
      raise ValueError(f"conv2d_winograd needs a 3x3 kernel and H, W multiples of {n}; got "
                       f"x {x.shape}, w {w.shape}")
    u = jnp.einsum("ua,abio,vb->uvio", g, w, g).reshape(t * t, *w.shape[2:])
    m = [jnp.dot(d, u[i], preferred_element_type=jnp.float32)
         for i, d in enumerate(_winograd_tiles(x, bt))]
    return _winograd_untile(m, x.shape[:3] + (w.shape[-1],), at).astype(x.dtype)

  @jax.custom_vjp
  def conv(x, w):
    return forward(x, w)

  def conv_bwd(res, dy):
    x, w = res
    dx = forward(dy, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2))
    du = jnp.stack([jnp.dot(d.T, m, preferred_element_type=jnp.float32)
                    for d, m in zip(_winograd_tiles(x, bt), _winograd_untile_transpose(dy, at))])
    dw = jnp.einsum("ua,uvio,vb->abio", g, du.reshape(t, t, *w.shape[2:]), g)
    return dx.astype(x.dtype), dw.astype(w.dtype)

  conv.defvjp(lambda x, w: (forward(x, w), (x, w)), conv_bwd)
  return conv


_F2X2 = winograd_3x3(_WINO_BT, _WINO_G, _WINO_AT)


def conv2d_winograd(x: jax.Array, w: jax.Array) -> jax.Array:
  """`conv2d(x, w, 1)` for a 3x3 kernel w [3,3,ci,co] and x [B,H,W,ci] with H, W even, by
  Winograd's F(2x2, 3x3); equal to the direct form up to float rounding."""
  return _F2X2(x, w)


# Below this many input channels the 16 transformed products are too thin to repay the
# transforms (forward + backward of one layer at batch 256, 2-core AMD EPYC: 0.67-0.84x of the
# direct form at 8 and 16 channels, 1.15-1.53x at 32, 1.44-1.49x at 64, 1.45-1.59x at 128), and
# Winograd's larger program compiles ~2.4x slower.
_WINOGRAD_MIN_CHANNELS = 32


def winograd_applies(x_shape: tuple, kernel_size: int, pad: int, dtype) -> bool:
  """Whether `Conv` takes the Winograd path: a 3x3 kernel with padding 1 (the output is the
  input's size), even height and width, at least `_WINOGRAD_MIN_CHANNELS` input channels (thin
  layers keep the direct form) and float32 (bf16 would lose the transforms' accuracy)."""
  return (kernel_size == 3 and pad == 1 and x_shape[1] % 2 == 0 and x_shape[2] % 2 == 0
          and x_shape[-1] >= _WINOGRAD_MIN_CHANNELS and jnp.dtype(dtype) == jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def instance_norm(x: jax.Array, epsilon: float) -> jax.Array:
  """(x - mean) / sqrt(var + epsilon) over H, W of each example and channel; x [B,H,W,C].
  Statistics in float32 whatever x's dtype."""
  return _instance_norm_fwd(x, epsilon)[0]


def _instance_norm_fwd(x, epsilon):
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
  centred = x32 - mean
  inv = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=(1, 2), keepdims=True) + epsilon)
  x_hat = centred * inv
  return x_hat.astype(x.dtype), (x_hat, inv)


def _instance_norm_bwd(epsilon, res, g):
  del epsilon
  x_hat, inv = res
  dtype = g.dtype  # the output's dtype, which is x's
  g = g.astype(jnp.float32)
  dx = (g - jnp.mean(g, axis=(1, 2), keepdims=True)
        - x_hat * jnp.mean(g * x_hat, axis=(1, 2), keepdims=True)) * inv
  return (dx.astype(dtype),)


instance_norm.defvjp(_instance_norm_fwd, _instance_norm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def instance_norm_relu_pool(y: jax.Array, scale: jax.Array, bias: jax.Array,
                            epsilon: float) -> jax.Array:
  """avg_pool_2x2(relu(instance_norm(y) * scale + bias)) for y [B, H, W, C] with H and W even,
  scale and bias [C]: ConvNet's norm -> ReLU -> pool as one function whose gradient makes two
  passes over y (per-example sums, then dy) instead of one per layer. Statistics in float32."""
  return _inrp_fwd(y, scale, bias, epsilon)[0]


def _inrp_fwd(y, scale, bias, epsilon):
  if y.shape[1] % 2 or y.shape[2] % 2:
    raise ValueError(f"instance_norm_relu_pool needs even H and W; got {y.shape}")
  y32 = y.astype(jnp.float32)
  mean = jnp.mean(y32, axis=(1, 2), keepdims=True)
  centred = y32 - mean
  inv = jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=(1, 2), keepdims=True) + epsilon)
  # The forward is the layers' own (bitwise: nn.avg_pool's reduce_window; a reshape-and-mean
  # pool ran ~1.3x slower in the eval forward on XLA:CPU); only the gradient is fused.
  out = nn.avg_pool(jax.nn.relu(centred * inv * scale + bias), (2, 2), strides=(2, 2))
  # Residuals: y (kept alive by the convolution before it anyway) and [B, 1, 1, C] statistics;
  # x_hat and the ReLU mask are recomputed in the backward pass rather than stored.
  return out.astype(y.dtype), (y, scale, bias, mean, inv)


def _inrp_bwd(epsilon, res, g):
  del epsilon
  y, scale, bias, mean, inv = res
  b, h, w, c = y.shape
  g = jnp.broadcast_to(0.25 * g.astype(jnp.float32)[:, :, None, :, None, :],
                       (b, h // 2, 2, w // 2, 2, c)).reshape(b, h, w, c)  # the pool's transpose
  x_hat = (y.astype(jnp.float32) - mean) * inv
  # Through the ReLU (0 at 0, as jax.nn.relu's gradient) as a product with the mask: a
  # jnp.where(mask, g, 0.0) made XLA:CPU write a full-size buffer of zeros first.
  gz = g * (x_hat * scale + bias > 0).astype(jnp.float32)
  s1 = jnp.sum(gz, axis=(1, 2), keepdims=True)
  s2 = jnp.sum(gz * x_hat, axis=(1, 2), keepdims=True)
  # Instance norm's gradient with d/dx_hat = scale * gz (scale is constant over H, W).
  dy = (scale * inv) * (gz - s1 / (h * w) - x_hat * (s2 / (h * w)))
  return (dy.astype(y.dtype), jnp.sum(s2, axis=(0, 1, 2)).astype(scale.dtype),
          jnp.sum(s1, axis=(0, 1, 2)).astype(bias.dtype))


instance_norm_relu_pool.defvjp(_inrp_fwd, _inrp_bwd)


IMPLS = ("auto", "fused", "winograd", "custom", "xla")


def _use_custom(impl: str) -> bool:
  if impl not in IMPLS:
    raise ValueError(f"impl must be one of {', '.join(map(repr, IMPLS))}, got {impl!r}")
  return impl in ("fused", "custom", "winograd") or (impl == "auto"
                                                     and jax.default_backend() == "cpu")


def conv_path(impl: str | None = "auto") -> str:
  """What `Conv(impl=impl)` and ConvNet's blocks run on this backend: 'fused' (Winograd for
  wide 3x3 float32 layers, `winograd_applies`, and the fused norm -> ReLU -> pool), 'winograd'
  (without the fused block), 'custom' (the direct form) or 'xla'. Recorded with results: the
  paths differ in float rounding."""
  impl = impl or "auto"
  if not _use_custom(impl):
    return "xla"
  return "fused" if impl == "auto" else impl


class Conv(nn.Module):
  """`nn.Conv(features, (k, k), padding=((pad, pad), (pad, pad)))` for stride 1, with the same
  parameters ('kernel' [k,k,ci,co] lecun-normal, 'bias' zeros), backed by `conv2d`."""

  features: int
  kernel_size: int = 3
  pad: int = 1
  dtype: Any = jnp.float32
  impl: str = "auto"
  kernel_init: Callable = nn.initializers.lecun_normal()
  # (key, shape, dtype, fan_in) -> bias; None: zeros.
  bias_init: Callable | None = None

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    fan_in = k * k * x.shape[-1]
    bias_init = (nn.initializers.zeros_init() if self.bias_init is None else
                 lambda key, shape, dtype: self.bias_init(key, shape, dtype, fan_in))
    bias = self.param("bias", bias_init, (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if not _use_custom(self.impl):
      return _conv(x, kernel, self.pad) + bias
    if self.impl != "custom" and winograd_applies(x.shape, k, self.pad, x.dtype):
      return conv2d_winograd(x, kernel) + bias
    return conv2d(x, kernel, self.pad) + bias


class InstanceNorm(nn.Module):
  """Affine instance norm with the parameters of `nn.GroupNorm(num_groups=channels)` ('scale'
  ones, 'bias' zeros, [C]), backed by `instance_norm`. With `relu_pool`, followed by ReLU and
  2x2 average pooling (stride 2): `instance_norm_relu_pool` in one where `conv_path` is
  'fused' and H and W are even, the three layers one after another elsewhere."""

  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  impl: str = "auto"
  relu_pool: bool = False

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones_init(), (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (c,), jnp.float32)
    if (self.relu_pool and conv_path(self.impl) == "fused" and x.shape[1] % 2 == 0
        and x.shape[2] % 2 == 0):
      x, scale, bias = nn.dtypes.promote_dtype(x, scale, bias, dtype=self.dtype)
      return instance_norm_relu_pool(x, scale, bias, self.epsilon)
    if _use_custom(self.impl):
      y = instance_norm(x, self.epsilon)
    else:
      y = nn.GroupNorm(num_groups=None, group_size=1, epsilon=self.epsilon, use_scale=False,
                       use_bias=False, dtype=jnp.float32)(x)
    y, scale, bias = nn.dtypes.promote_dtype(y, scale, bias, dtype=self.dtype)
    y = y * scale + bias
    return nn.avg_pool(nn.relu(y), (2, 2), strides=(2, 2)) if self.relu_pool else y
