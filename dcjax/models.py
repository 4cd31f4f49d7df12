"""Student / teacher networks as Flax Linen modules, chosen by name.

Every model maps float images [B, H, W, C] (already normalised) to logits [B, num_classes] and
is used through pure `init` / `apply`. Models with BatchNorm keep running statistics in the
`batch_stats` collection; `train=True` uses (global-)batch statistics and updates them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dcjax.errors import unknown_name

# torchvision initialises convolutions with kaiming-normal (fan_out, relu).
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ConvNet(nn.Module):
  """ConvNet-D of the distillation literature (DC/DSA/DM/IDC): `depth` blocks of
  [conv 3x3 (width) -> norm -> ReLU -> 2x2 avg pool], then a linear classifier.

  28 px inputs are padded to 32 px by the first convolution (padding 3), as in the reference
  code, so 28 px and 32 px datasets share the 4x4xwidth feature map at depth 3.
  """

  num_classes: int
  width: int = 128
  depth: int = 3
  norm: str = "instance"  # 'instance' | 'batch' | 'none'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    for d in range(self.depth):
      pad = 3 if d == 0 and x.shape[1] == 28 else 1
      x = nn.Conv(self.width, (3, 3), padding=((pad, pad), (pad, pad)), dtype=self.dtype,
                  name=f"conv{d}")(x)
      if self.norm == "instance":
        # GroupNorm with one group per channel == affine instance norm (the reference's choice).
        x = nn.GroupNorm(num_groups=self.width, epsilon=1e-5, dtype=self.dtype, name=f"norm{d}")(x)
      elif self.norm == "batch":
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name=f"norm{d}")(x)
      elif self.norm != "none":
        raise ValueError(f"unknown norm {self.norm!r}")
      x = nn.relu(x)
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(self.num_classes, dtype=jnp.float32, name="fc")(x).astype(jnp.float32)


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


class ResNet(nn.Module):
  """ResNet in the torchvision layout.

  stem='imagenet': conv 7x7/2 -> BN -> ReLU -> maxpool 3x3/2 (224 px inputs).
  stem='lowres': conv 3x3/1 -> BN -> ReLU, no maxpool (28-64 px inputs; the CIFAR variant).
  """

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  stem: str = "imagenet"
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    # torch BatchNorm2d defaults: momentum 0.1 (flax 0.9), eps 1e-5.
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
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
        x = BasicBlock(self.width * 2**i, strides, norm=norm, dtype=self.dtype,
                       name=f"layer{i + 1}_{j}")(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=jnp.float32, name="fc")(x).astype(jnp.float32)


def _resnet18(num_classes, image_size, stem="auto", **kw):
  if stem == "auto":
    stem = "lowres" if image_size <= 64 else "imagenet"
  return ResNet(num_classes=num_classes, stage_sizes=(2, 2, 2, 2), stem=stem, **kw)


def _convnet(num_classes, image_size, **kw):
  del image_size
  return ConvNet(num_classes=num_classes, **kw)


# name -> factory(num_classes, image_size, **model_kwargs)
MODELS: dict[str, Callable[..., nn.Module]] = {
    "convnet": _convnet,
    "resnet18": _resnet18,
}


def get_model(name: str, num_classes: int, image_size: int, **kwargs) -> nn.Module:
  """The model called `name` for `num_classes` classes and `image_size` px inputs."""
  if name not in MODELS:
    raise unknown_name("model", name, MODELS)
  return MODELS[name](num_classes, image_size, **kwargs)


def has_batch_stats(variables) -> bool:
  return "batch_stats" in variables
