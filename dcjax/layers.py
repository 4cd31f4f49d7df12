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
- `instance_norm`: per-example, per-channel normalisation over H, W with the closed-form
  gradient dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sigma.

`impl='auto'` uses them on the CPU backend only; GPUs and TPUs keep XLA's own kernels.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def _use_custom(impl: str) -> bool:
  if impl not in ("auto", "custom", "xla"):
    raise ValueError(f"impl must be 'auto', 'custom' or 'xla', got {impl!r}")
  return impl == "custom" or (impl == "auto" and jax.default_backend() == "cpu")


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
    conv = conv2d if _use_custom(self.impl) else _conv
    return conv(x, kernel, self.pad) + bias


class InstanceNorm(nn.Module):
  """Affine instance norm with the parameters of `nn.GroupNorm(num_groups=channels)` ('scale'
  ones, 'bias' zeros, [C]), backed by `instance_norm`."""

  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones_init(), (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (c,), jnp.float32)
    if _use_custom(self.impl):
      y = instance_norm(x, self.epsilon)
    else:
      y = nn.GroupNorm(num_groups=None, group_size=1, epsilon=self.epsilon, use_scale=False,
                       use_bias=False, dtype=jnp.float32)(x)
    y, scale, bias = nn.dtypes.promote_dtype(y, scale, bias, dtype=self.dtype)
    return y * scale + bias
