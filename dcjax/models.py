"""Student / teacher networks as Flax Linen modules, chosen by name.

Every model maps float images [B, H, W, C] (already normalised) to logits [B, num_classes] and
is used through pure `init` / `apply`: `model.apply(variables, x, train=..., mask=None)`, where
`mask` (bool [B], train mode only) marks the real examples of a padded batch so that batch
statistics ignore padding rows. Models with BatchNorm keep running statistics in the
`batch_stats` collection; `train=True` uses (global-)batch statistics and updates them.

Registry (`MODELS`): convnet, resnet18, resnet50, resnet101, mobilenet_v2, efficientnet_b0,
vit_s16. The torchvision-style models keep torchvision's structure (and parameter counts at
1000 classes) so that its weights can be mapped onto them; their docstrings list where they
deviate. Every factory takes `(num_classes, image_size, **kwargs)` and raises TypeError on a
keyword it does not know. No model needs an rng at apply time with its default settings.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dcjax import layers
from dcjax.errors import unknown

# torchvision initialises convolutions with kaiming-normal (fan_out, relu).
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _bn(train: bool, dtype, epsilon: float = 1e-5, mask=None):
  """A factory `norm(name=None) -> layer` of BatchNorm layers with torch's defaults (momentum
  0.1 = flax 0.9, eps 1e-5) whose batch statistics cover only the examples where `mask` [B] is
  true, so zero-weight padding rows never shift them. Layers are created where the factory is
  called, so they take that module's auto-names (BatchNorm_0, ...) as plain nn.BatchNorm does."""
  bn_mask = None if mask is None or not train else mask.reshape(-1, 1, 1, 1).astype(bool)

  def norm(name=None):
    layer = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=epsilon,
                         dtype=dtype, name=name)
    return layer if bn_mask is None else functools.partial(layer, mask=bn_mask)

  return norm


# PyTorch's default initialisation of Conv2d / Linear: kaiming-uniform with a = sqrt(5), i.e.
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weights, and the same bound for the biases.
_torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(key, shape, dtype, fan_in):
  bound = 1.0 / fan_in ** 0.5
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class ConvNet(nn.Module):
  """ConvNet-D of the distillation literature (DC/DSA/DM/IDC): `depth` blocks of
  [conv 3x3 (width) -> norm -> ReLU -> 2x2 avg pool], then a linear classifier.

  28 px inputs are padded to 32 px by the first convolution (padding 3), as in the reference
  code, so 28 px and 32 px datasets share the 4x4xwidth feature map at depth 3.

  The convolutions and the instance norm are `dcjax.layers` versions with hand-written
  gradients on the CPU backend (2x faster training there; same parameters and function as
  `nn.Conv` / `nn.GroupNorm`); `impl='xla'` selects XLA's own everywhere.
  """

  num_classes: int
  width: int = 128
  depth: int = 3
  norm: str = "instance"  # 'instance' | 'batch' | 'none'
  dtype: Any = jnp.float32
  # dcjax.layers implementation: 'auto' ('fused' on CPU, XLA's elsewhere) | 'fused' (Winograd
  # and the fused norm -> ReLU -> pool) | 'winograd' (without the fused block) | 'custom' (the
  # direct form) | 'xla'
  impl: str = "auto"
  # 'flax': lecun-normal weights, zero biases. 'torch': PyTorch's defaults (kaiming-uniform
  # a=sqrt(5), uniform biases), as the DC/DSA reference code trains it.
  weight_init: str = "flax"

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    if self.weight_init not in ("flax", "torch"):
      raise ValueError(f"unknown weight_init {self.weight_init!r}; known: flax, torch")
    torch_init = self.weight_init == "torch"
    conv_kw = dict(kernel_init=_torch_kernel_init, bias_init=_torch_bias_init) if torch_init else {}
    x = x.astype(self.dtype)
    for d in range(self.depth):
      pad = 3 if d == 0 and x.shape[1] == 28 else 1
      x = layers.Conv(self.width, 3, pad, dtype=self.dtype, impl=self.impl, name=f"conv{d}",
                      **conv_kw)(x)
      if self.norm == "instance":
        # Affine instance norm (the reference's choice), parameters as nn.GroupNorm(width),
        # with the ReLU and pool after it (one fused function on the CPU: dcjax.layers).
        x = layers.InstanceNorm(epsilon=1e-5, dtype=self.dtype, impl=self.impl,
                                relu_pool=True, name=f"norm{d}")(x)
        continue
      if self.norm == "batch":
        x = _bn(train, self.dtype, mask=mask)(name=f"norm{d}")(x)
      elif self.norm != "none":
        raise ValueError(f"unknown norm {self.norm!r}")
      x = nn.relu(x)
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    dense_kw = {}
    if torch_init:
      fan_in = x.shape[-1]
      dense_kw = dict(kernel_init=_torch_kernel_init,
                      bias_init=lambda k, s, t=jnp.float32: _torch_bias_init(k, s, t, fan_in))
    return nn.Dense(self.num_classes, dtype=jnp.float32, name="fc",
                    **dense_kw)(x).astype(jnp.float32)


class BasicBlock(nn.Module):
  """torchvision ResNet BasicBlock (expansion 1)."""

  filters: int
  strides: int = 1
  norm: Callable = nn.BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=_conv_init, dtype=self.dtype)
    residual = x
    y = conv(self.filters, (3, 3), strides=self.strides, padding=((1, 1), (1, 1)))(x)
    y = nn.relu(self.norm()(y))
    y = conv(self.filters, (3, 3), padding=((1, 1), (1, 1)))(y)
    y = self.norm()(y)
    if residual.shape != y.shape:
      residual = conv(self.filters, (1, 1), strides=self.strides, name="downsample_conv")(x)
      residual = self.norm(name="downsample_bn")(residual)
    return nn.relu(y + residual)


class Bottleneck(nn.Module):
  """torchvision ResNet Bottleneck (v1.5: the stride sits on the 3x3 conv), expansion 4:
  1x1 (filters) -> 3x3 (filters, stride) -> 1x1 (4 * filters), each followed by BN."""

  filters: int
  strides: int = 1
  norm: Callable = nn.BatchNorm
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=_conv_init, dtype=self.dtype)
    residual = x
    y = nn.relu(self.norm(name="bn1")(conv(self.filters, (1, 1), name="conv1")(x)))
    y = conv(self.filters, (3, 3), strides=self.strides, padding=((1, 1), (1, 1)), name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.norm(name="bn3")(conv(self.filters * self.expansion, (1, 1), name="conv3")(y))
    if residual.shape != y.shape:
      residual = conv(self.filters * self.expansion, (1, 1), strides=self.strides,
                      name="downsample_conv")(x)
      residual = self.norm(name="downsample_bn")(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """ResNet in the torchvision layout.

  stem='imagenet': conv 7x7/2 -> BN -> ReLU -> maxpool 3x3/2 (224 px inputs).
  stem='lowres': conv 3x3/1 -> BN -> ReLU, no maxpool (28-64 px inputs; the CIFAR variant).
  `block`: BasicBlock (resnet18, 11,689,512 parameters at 1000 classes) or Bottleneck (resnet50
  25,557,032, resnet101 44,549,160); stage i has `width * 2**i` (x4 for Bottleneck) channels.
  """

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  stem: str = "imagenet"
  width: int = 64
  dtype: Any = jnp.float32
  block: Callable[..., nn.Module] = BasicBlock  # BasicBlock (18/34) or Bottleneck (50/101/152)

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    x = x.astype(self.dtype)
    norm = _bn(train, self.dtype, mask=mask)
    if self.stem == "imagenet":
      x = nn.Conv(self.width, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False,
                  kernel_init=_conv_init, dtype=self.dtype, name="conv1")(x)
      x = nn.relu(norm(name="bn1")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == "lowres":
      x = nn.Conv(self.width, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                  kernel_init=_conv_init, dtype=self.dtype, name="conv1")(x)
      x = nn.relu(norm(name="bn1")(x))
    else:
      raise ValueError(f"unknown stem {self.stem!r}")
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block(self.width * 2**i, strides, norm=norm, dtype=self.dtype,
                       name=f"layer{i + 1}_{j}")(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=jnp.float32, name="fc")(x).astype(jnp.float32)


def _resnet18(num_classes, image_size, stem="auto", **kw):
  if stem == "auto":
    stem = "lowres" if image_size <= 64 else "imagenet"
  return ResNet(num_classes=num_classes, stage_sizes=(2, 2, 2, 2), stem=stem, **kw)


def _bottleneck_resnet(stage_sizes, num_classes, image_size, stem, width, dtype):
  if stem == "auto":
    stem = "lowres" if image_size <= 64 else "imagenet"
  return ResNet(num_classes=num_classes, stage_sizes=stage_sizes, stem=stem, width=width,
                dtype=dtype, block=Bottleneck)


def _resnet50(num_classes, image_size, *, stem="auto", width=64, dtype=jnp.float32):
  return _bottleneck_resnet((3, 4, 6, 3), num_classes, image_size, stem, width, dtype)


def _resnet101(num_classes, image_size, *, stem="auto", width=64, dtype=jnp.float32):
  return _bottleneck_resnet((3, 4, 23, 3), num_classes, image_size, stem, width, dtype)


# ---------------------------------------------------------------------------------------------
# MobileNetV2 / EfficientNet-B0 (torchvision layouts).


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
  """torchvision's channel rounding: nearest multiple of `divisor`, never below 90% of v."""
  min_value = min_value or divisor
  new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v




class ConvBNAct(nn.Module):
  """torchvision Conv2dNormActivation: conv (no bias, 'same' padding (k-1)//2) -> BN -> act.
  `depthwise=True` makes the conv per-channel (groups = channels)."""

  features: int
  kernel: int = 3
  strides: int = 1
  depthwise: bool = False
  act: Callable | None = nn.relu
  norm: Callable = nn.BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    p = (self.kernel - 1) // 2
    x = nn.Conv(self.features, (self.kernel, self.kernel), strides=self.strides,
                padding=((p, p), (p, p)), use_bias=False,
                feature_group_count=x.shape[-1] if self.depthwise else 1,
                kernel_init=_conv_init, dtype=self.dtype, name="conv")(x)
    x = self.norm(name="bn")(x)
    return self.act(x) if self.act is not None else x


class InvertedResidual(nn.Module):
  """MobileNetV2 block: [1x1 expand -> BN -> ReLU6] -> 3x3 depthwise -> BN -> ReLU6 -> 1x1
  linear projection -> BN, with a skip when the stride is 1 and channels are unchanged."""

  features: int
  strides: int
  expand_ratio: int
  norm: Callable = nn.BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    hidden = int(round(cin * self.expand_ratio))
    kw = dict(norm=self.norm, dtype=self.dtype)
    y = x
    if self.expand_ratio != 1:
      y = ConvBNAct(hidden, 1, act=nn.relu6, name="expand", **kw)(y)
    y = ConvBNAct(hidden, 3, self.strides, depthwise=True, act=nn.relu6, name="depthwise", **kw)(y)
    y = ConvBNAct(self.features, 1, act=None, name="project", **kw)(y)
    if self.strides == 1 and cin == self.features:
      y = x + y
    return y


class MobileNetV2(nn.Module):
  """torchvision MobileNetV2 (width_mult 1.0: 3,504,872 parameters at 1000 classes).

  Names: features_0 (stem ConvBNAct), features_1..17 (InvertedResidual: expand / depthwise /
  project, each conv + bn), features_18 (1x1 to 1280), classifier (Dense).
  Deviations from torchvision: classifier dropout defaults to 0.0 (torchvision 0.2; with
  dropout > 0, train-mode apply needs rngs={'dropout': key}); `stem_strides=1` (chosen by the
  factory for image_size <= 64) removes the stem's stride 2 for low-resolution inputs.
  """

  num_classes: int
  width_mult: float = 1.0
  dropout: float = 0.0
  stem_strides: int = 2
  dtype: Any = jnp.float32

  # t (expansion), c (channels), n (blocks), s (first block's stride)
  setting = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    x = x.astype(self.dtype)
    norm = _bn(train, self.dtype, mask=mask)
    x = ConvBNAct(_make_divisible(32 * self.width_mult), 3, self.stem_strides, act=nn.relu6,
                  norm=norm, dtype=self.dtype, name="features_0")(x)
    i = 1
    for t, c, n, s in self.setting:
      for j in range(n):
        x = InvertedResidual(_make_divisible(c * self.width_mult), s if j == 0 else 1, t,
                             norm=norm, dtype=self.dtype, name=f"features_{i}")(x)
        i += 1
    last = _make_divisible(1280 * max(1.0, self.width_mult))
    x = ConvBNAct(last, 1, act=nn.relu6, norm=norm, dtype=self.dtype, name=f"features_{i}")(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=jnp.float32, kernel_init=nn.initializers.normal(0.01),
                    name="classifier")(x).astype(jnp.float32)


class SqueezeExcitation(nn.Module):
  """torchvision SqueezeExcitation: global mean -> 1x1 conv (fc1) -> SiLU -> 1x1 conv (fc2) ->
  sigmoid -> channel scale. Both 1x1 convs have biases."""

  squeeze: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.Conv(self.squeeze, (1, 1), kernel_init=_conv_init, dtype=self.dtype, name="fc1")(s)
    s = nn.Conv(x.shape[-1], (1, 1), kernel_init=_conv_init, dtype=self.dtype,
                name="fc2")(nn.silu(s))
    return x * nn.sigmoid(s)


class MBConv(nn.Module):
  """EfficientNet MBConv: [1x1 expand -> BN -> SiLU] -> kxk depthwise -> BN -> SiLU -> SE
  (squeeze = input channels // 4) -> 1x1 projection -> BN, skip when stride 1 and channels
  unchanged (with stochastic depth on the residual branch when `drop_prob` > 0)."""

  features: int
  kernel: int
  strides: int
  expand_ratio: int
  drop_prob: float = 0.0
  norm: Callable = nn.BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    cin = x.shape[-1]
    hidden = _make_divisible(cin * self.expand_ratio)
    kw = dict(norm=self.norm, dtype=self.dtype)
    y = x
    if hidden != cin:
      y = ConvBNAct(hidden, 1, act=nn.silu, name="expand", **kw)(y)
    y = ConvBNAct(hidden, self.kernel, self.strides, depthwise=True, act=nn.silu,
                  name="depthwise", **kw)(y)
    y = SqueezeExcitation(max(1, cin // 4), dtype=self.dtype, name="se")(y)
    y = ConvBNAct(self.features, 1, act=None, name="project", **kw)(y)
    if self.strides == 1 and cin == self.features:
      if train and self.drop_prob > 0:  # torchvision StochasticDepth(mode='row')
        keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.drop_prob,
                                    (y.shape[0], 1, 1, 1))
        y = jnp.where(keep, y / (1.0 - self.drop_prob), 0).astype(y.dtype)
      y = x + y
    return y


def _uniform_fan_out(key, shape, dtype=jnp.float32):
  """torchvision EfficientNet's Linear init: U(-1/sqrt(out), 1/sqrt(out))."""
  r = 1.0 / shape[-1] ** 0.5
  return jax.random.uniform(key, shape, dtype, -r, r)


class EfficientNet(nn.Module):
  """torchvision EfficientNet-B0 (5,288,548 parameters at 1000 classes).

  BatchNorm as torchvision's B0-B4: nn.BatchNorm2d defaults, eps 1e-5, momentum 0.1 (flax 0.9);
  torchvision only uses eps 1e-3 for B5-B7 and V2 (the TF original uses 1e-3 throughout).
  Names: features_0 (stem), features_{1..7}_{j} (MBConv: expand / depthwise / se(fc1, fc2) /
  project), features_8 (1x1 to 1280), classifier (Dense).
  Deviations from torchvision: classifier dropout (0.2) and stochastic depth (0.2) both default
  to 0.0 (with either > 0, train-mode apply needs rngs={'dropout': key});
  `stem_strides=1` (the factory's choice for image_size <= 64) for low-resolution inputs.
  """

  num_classes: int
  dropout: float = 0.0
  stochastic_depth_prob: float = 0.0
  stem_strides: int = 2
  dtype: Any = jnp.float32

  # expand ratio, kernel, stride, in, out, blocks (B0: width and depth multipliers 1.0)
  setting = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
             (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
             (6, 3, 1, 192, 320, 1))

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    x = x.astype(self.dtype)
    norm = _bn(train, self.dtype, mask=mask)
    x = ConvBNAct(self.setting[0][3], 3, self.stem_strides, act=nn.silu, norm=norm,
                  dtype=self.dtype, name="features_0")(x)
    total = sum(cfg[-1] for cfg in self.setting)
    k = 0
    for i, (t, kernel, s, _, c, n) in enumerate(self.setting):
      for j in range(n):
        x = MBConv(c, kernel, s if j == 0 else 1, t, self.stochastic_depth_prob * k / total,
                   norm=norm, dtype=self.dtype, name=f"features_{i + 1}_{j}")(x, train)
        k += 1
    x = ConvBNAct(4 * self.setting[-1][4], 1, act=nn.silu, norm=norm, dtype=self.dtype,
                  name=f"features_{len(self.setting) + 1}")(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=jnp.float32, kernel_init=_uniform_fan_out,
                    name="classifier")(x).astype(jnp.float32)


def _mobilenet_v2(num_classes, image_size, *, width_mult=1.0, dropout=0.0, stem_strides="auto",
                  dtype=jnp.float32):
  if stem_strides == "auto":
    stem_strides = 1 if image_size <= 64 else 2
  return MobileNetV2(num_classes=num_classes, width_mult=width_mult, dropout=dropout,
                     stem_strides=stem_strides, dtype=dtype)


def _efficientnet_b0(num_classes, image_size, *, dropout=0.0, stochastic_depth_prob=0.0,
                     stem_strides="auto", dtype=jnp.float32):
  if stem_strides == "auto":
    stem_strides = 1 if image_size <= 64 else 2
  return EfficientNet(num_classes=num_classes, dropout=dropout,
                      stochastic_depth_prob=stochastic_depth_prob, stem_strides=stem_strides,
                      dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Vision Transformer (timm layout).

_vit_init = nn.initializers.truncated_normal(0.02)


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection (timm's `attn.qkv` / `attn.proj`)."""

  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, n, d = x.shape
    hd = d // self.num_heads
    qkv = nn.Dense(3 * d, kernel_init=_vit_init, dtype=self.dtype, name="qkv")(x)
    q, k, v = jnp.moveaxis(qkv.reshape(b, n, 3, self.num_heads, hd), 2, 0)  # [B, N, H, hd] each
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * hd**-0.5
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, d)
    return nn.Dense(d, kernel_init=_vit_init, dtype=self.dtype, name="proj")(out)


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: x + attn(norm1(x)); x + mlp(norm2(x)) with an exact-GELU MLP."""

  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    ln = functools.partial(nn.LayerNorm, epsilon=1e-6, dtype=self.dtype)
    x = x + Attention(self.num_heads, dtype=self.dtype, name="attn")(ln(name="norm1")(x))
    y = ln(name="norm2")(x)
    y = nn.Dense(self.mlp_dim, kernel_init=_vit_init, dtype=self.dtype, name="fc1")(y)
    y = nn.Dense(d, kernel_init=_vit_init, dtype=self.dtype,
                 name="fc2")(nn.gelu(y, approximate=False))
    return x + y


class ViT(nn.Module):
  """Vision Transformer, timm's vit_small_patch16_224 layout by default (ViT-S/16:
  22,050,664 parameters at 224 px and 1000 classes): patch_embed (conv, patch x patch, with
  bias) -> class token + learned position embeddings -> `depth` pre-LN blocks_{i} -> norm ->
  head on the class token. LayerNorm eps 1e-6, GELU (exact), no dropout.

  The position embeddings are sized from the input at init ((H/patch) * (W/patch) + 1), so a
  model is tied to the resolution it was initialised at; pixels beyond a multiple of the patch
  size are dropped by the patch conv.
  Deviation: the `vit_s16` factory uses patch size 4 for image_size <= 64 (32 px -> 8x8 = 64
  tokens instead of 2x2 with patch 16); the patch-embedding kernel is then 4x4, so 16 px
  pretrained patch weights do not load there.
  """

  num_classes: int
  patch_size: int = 16
  hidden_dim: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_dim: int = 1536
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    del train, mask  # no dropout / batch statistics
    x = x.astype(self.dtype)
    p = self.patch_size
    x = nn.Conv(self.hidden_dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                name="patch_embed")(x)
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, d))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, d)), x], axis=1)
    x = x + self.param("pos_embed", _vit_init, (1, h * w + 1, d)).astype(self.dtype)
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_dim, dtype=self.dtype, name=f"blocks_{i}")(x)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    return nn.Dense(self.num_classes, dtype=jnp.float32, kernel_init=_vit_init,
                    name="head")(x[:, 0]).astype(jnp.float32)


def _vit_s16(num_classes, image_size, *, patch_size="auto", dtype=jnp.float32):
  if patch_size == "auto":
    patch_size = 4 if image_size <= 64 else 16
  return ViT(num_classes=num_classes, patch_size=patch_size, dtype=dtype)


def _convnet(num_classes, image_size, **kw):
  del image_size
  return ConvNet(num_classes=num_classes, **kw)


# name -> factory(num_classes, image_size, **model_kwargs)
MODELS: dict[str, Callable[..., nn.Module]] = {
    "convnet": _convnet,
    "resnet18": _resnet18,
    "resnet50": _resnet50,
    "resnet101": _resnet101,
    "mobilenet_v2": _mobilenet_v2,
    "efficientnet_b0": _efficientnet_b0,
    "vit_s16": _vit_s16,
}


# Models whose layers take dcjax.layers' `impl` (the CPU convolution path).
IMPL_MODELS = ("convnet",)


def key_kwargs(name: str, kwargs) -> dict[str, Any]:
  """`kwargs` as a cache key records them: unset (None) entries dropped, and for a model in
  IMPL_MODELS its `impl` resolved to the path it runs on this backend (`layers.conv_path`:
  'fused', 'winograd', 'custom' or 'xla'), so that a network cached under one path is never
  reused for another (they differ in float rounding), nor after a change of what 'auto' runs.
  Building the model from the result runs the same path as building it from `kwargs`."""
  out = legacy_key_kwargs(kwargs)
  if name in IMPL_MODELS:
    out["impl"] = layers.conv_path(out.get("impl"))
  return out


def legacy_key_kwargs(kwargs) -> dict[str, Any]:
  """`kwargs` as cache keys recorded them until 2026-12-07: `impl` as given (usually unset). An
  entry under such a key may hold a network of another path, so it is never reused, only named
  (LEGACY_NOTE) where a new one is made or missing."""
  return {k: v for k, v in dict(kwargs).items() if v is not None}


LEGACY_NOTE = ("was cached before dcjax keyed the CPU convolution path; it may have run another "
               "path and is not reused; delete it once not needed")


def get_model(name: str, num_classes: int, image_size: int, **kwargs) -> nn.Module:
  """The model called `name` for `num_classes` classes and `image_size` px inputs."""
  if name not in MODELS:
    raise unknown("model", name, MODELS)
  return MODELS[name](num_classes, image_size, **kwargs)


def has_batch_stats(variables) -> bool:
  return "batch_stats" in variables


# Names of the final classifier layer, a direct child of every registered model.
CLASSIFIER_NAMES = ("fc", "classifier", "head")


def features(model: nn.Module, variables, x, **apply_kwargs) -> jax.Array:
  """Penultimate-layer features [B, D] of any registered model: the input of its classifier.

  The classifier call is intercepted and returns its input unchanged, so no model needs a
  separate feature method and the features are exactly what the classifier sees (eval mode).
  """

  def take_input(next_fun, args, kwargs, context):
    m = context.module
    if (context.method_name == "__call__" and isinstance(m, nn.Dense)
        and m.scope is not None and len(m.scope.path) == 1 and m.name in CLASSIFIER_NAMES):
      return args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(take_input):
    return model.apply(variables, x, train=False, **apply_kwargs)
