"""torchvision weights (`.pth` or `.safetensors` state dicts) -> variables of dcjax's Flax models.

The torchvision-style models of `dcjax.models` keep torchvision's structure, so a state dict of
`torchvision.models.resnet18 / resnet50 / resnet101 / mobilenet_v2` maps onto them tensor by
tensor: convolution weights OIHW -> HWIO (depthwise ones too: torch's [C, 1, kh, kw] is Flax's
[kh, kw, 1, C] with feature_group_count=C), linear weights transposed, BatchNorm weight / bias /
running_mean / running_var -> params scale / bias and batch_stats mean / var. The mapping is
strict: a key the model has no place for, a tensor the model needs that the file lacks, or a
shape that differs is a `UserError` naming them all (`num_batches_tracked` is ignored).

  variables = load_torchvision("resnet18.pth", "resnet18", num_classes=1000)
  logits = torchvision_model("resnet18", 1000).apply(variables, x_nhwc, train=False)

Reading a `.pth` file needs PyTorch (`torch.load(..., weights_only=True)`: tensors only, no
pickled code); a `.safetensors` file (e.g. `safetensors.torch.save_file(model.state_dict(),
PATH)`) is read with numpy alone; `convert_state_dict` takes any mapping of arrays.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dcjax import models
from dcjax.errors import UserError, unknown_name

# The stem each model needs to be torchvision's whatever the input resolution (the factories
# pick a low-resolution stem for image_size <= 64, which no torchvision weights fit).
_TORCHVISION_LAYOUT = {
    "resnet18": dict(stem="imagenet"),
    "resnet50": dict(stem="imagenet"),
    "resnet101": dict(stem="imagenet"),
    "mobilenet_v2": dict(stem_strides=2),
}

# BasicBlock's layers take Flax's auto-names; Bottleneck's are named as torchvision's.
_RESNET_BLOCK_NAMES = {"Conv_0": "conv1", "BatchNorm_0": "bn1", "Conv_1": "conv2",
                       "BatchNorm_1": "bn2", "downsample_conv": "downsample.0",
                       "downsample_bn": "downsample.1"}

_INSTALL_HINT = ("install PyTorch first; the CPU build is enough for converting weights: "
                 "pip install torch --index-url https://download.pytorch.org/whl/cpu")


def torchvision_model(model_name: str, num_classes: int, **model_kwargs) -> nn.Module:
  """The dcjax model `model_name` in torchvision's exact layout (ImageNet stem at any input
  size), i.e. the module whose variables `load_torchvision` returns."""
  if model_name not in _TORCHVISION_LAYOUT:
    raise unknown_name("torchvision model", model_name, _TORCHVISION_LAYOUT)
  kw = {k: v for k, v in model_kwargs.items() if v is not None}
  return models.get_model(model_name, num_classes, 224, **{**kw, **_TORCHVISION_LAYOUT[model_name]})


# safetensors dtype names -> numpy (BF16 is widened to float32 by hand: numpy has no bfloat16).
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": None,
                       "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
                       "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """The tensors of a `.safetensors` file (8-byte little-endian header length, a JSON header
  {name: {dtype, shape, data_offsets}}, then the raw bytes), read with numpy: no torch, no
  pickle."""
  if not os.path.isfile(path):
    raise UserError(f"no such weights file: {path}")
  with open(path, "rb") as f:
    data = f.read()
  bad = lambda why: UserError(f"cannot read {path} as a .safetensors file: {why}")
  if len(data) < 8:
    raise bad("shorter than its header length")
  n = int.from_bytes(data[:8], "little")
  if n <= 0 or 8 + n > len(data):
    raise bad(f"header length {n} does not fit in {len(data)} bytes")
  try:
    header = json.loads(data[8:8 + n])
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise bad(f"its header is not JSON ({e})") from None
  if not isinstance(header, dict):
    raise bad("its header is not a JSON object")
  body = memoryview(data)[8 + n:]
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    try:
      dtype, shape, (lo, hi) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
    except (KeyError, TypeError, ValueError):
      raise bad(f"tensor {name!r} has no dtype / shape / data_offsets") from None
    if dtype not in _SAFETENSORS_DTYPES:
      raise bad(f"tensor {name!r} has unsupported dtype {dtype}")
    width = 2 if dtype == "BF16" else np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize
    if not 0 <= lo <= hi <= len(body) or hi - lo != width * int(np.prod(shape, dtype=np.int64)):
      raise bad(f"tensor {name!r}: offsets {lo}..{hi} do not match {dtype} {shape}")
    raw = np.frombuffer(body[lo:hi], "<u2" if dtype == "BF16" else
                        np.dtype(_SAFETENSORS_DTYPES[dtype]).newbyteorder("<"))
    if dtype == "BF16":
      raw = (raw.astype(np.uint32) << 16).view(np.float32)
    out[name] = raw.reshape(shape).copy()
  return out


def load_state_dict(path: str) -> dict[str, Any]:
  """The state dict saved in `path`: a `.safetensors` file (read with numpy), or a torch.save
  file read with torch.load(weights_only=True)."""
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  try:
    import torch
  except ImportError:
    raise UserError(f"reading {path} needs PyTorch, which is not installed; "
                    f"{_INSTALL_HINT}") from None
  if not os.path.isfile(path):
    raise UserError(f"no such weights file: {path}")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises several types for files that are not state dicts
    raise UserError(f"cannot read {path} as a PyTorch state dict "
                    f"(torch.load with weights_only=True): {e}") from None
  if not isinstance(obj, Mapping):
    raise UserError(f"{path} holds a {type(obj).__name__}, not a state dict; save "
                    f"model.state_dict() with torch.save")
  return dict(obj)


def load_torchvision(path_or_state_dict: str | Mapping[str, Any], model_name: str,
                     num_classes: int, *, in_channels: int = 3,
                     model: nn.Module | None = None) -> dict:
  """Variables {'params', 'batch_stats'} for `torchvision_model(model_name, num_classes)` (or
  `model`, which must have torchvision's layout) from a `.pth` file or a state dict in memory.
  `in_channels` is the input's channel count the model is built for."""
  state_dict = (load_state_dict(path_or_state_dict) if isinstance(path_or_state_dict, str)
                else path_or_state_dict)
  model = model if model is not None else torchvision_model(model_name, num_classes)
  return convert_state_dict(state_dict, model_name, model, in_channels=in_channels)


def expected_state_dict_shapes(model_name: str, model: nn.Module,
                               in_channels: int = 3) -> dict[str, tuple[int, ...]]:
  """torch key -> torch shape of every tensor `model` takes from a torchvision state dict
  (without num_batches_tracked)."""
  return {key: shape for key, (shape, _, _) in _plan(model_name, model, in_channels).items()}


def convert_state_dict(state_dict: Mapping[str, Any], model_name: str, model: nn.Module, *,
                       in_channels: int = 3) -> dict:
  """Variables {'params', 'batch_stats'} of `model` (a dcjax `model_name` in torchvision's
  layout) from a torchvision state dict: torch tensors or numpy arrays by torch key.
  Raises UserError naming every missing, unexpected and mis-shaped key."""
  state_dict = _unwrap(state_dict)
  plan = _plan(model_name, model, in_channels)
  missing = [k for k in plan if k not in state_dict]
  unexpected = [k for k in state_dict if k not in plan and not k.endswith("num_batches_tracked")]
  mismatched = [f"{k} {tuple(state_dict[k].shape)} (model: {plan[k][0]})"
                for k in plan if k in state_dict and tuple(state_dict[k].shape) != plan[k][0]]
  if missing or unexpected or mismatched:
    parts = [f"{label} ({len(keys)}): {', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''}"
             for label, keys in (("missing", missing), ("unexpected", unexpected),
                                 ("shape mismatch", mismatched)) if keys]
    raise UserError(f"the state dict does not fit dcjax's {model_name} "
                    f"({_num_classes(model)} classes, {in_channels} input channels): "
                    + "; ".join(parts))
  flat = {}
  for key, (_, target, transform) in plan.items():
    flat[target] = jnp.asarray(transform(_to_numpy(state_dict[key])))
  return traverse_util.unflatten_dict(flat)


def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
  # Checkpoints often nest the weights ({'state_dict': ...} / {'model': ...}) or keep
  # DistributedDataParallel's 'module.' prefix.
  for key in ("state_dict", "model"):
    if isinstance(state_dict.get(key), Mapping):
      state_dict = state_dict[key]
      break
  if state_dict and all(k.startswith("module.") for k in state_dict):
    state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
  return state_dict


def _num_classes(model: nn.Module) -> Any:
  return getattr(model, "num_classes", "?")


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor; numpy has no bfloat16, so widen first
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()
    value = value.numpy()
  return np.asarray(value, np.float32)


def _conv_kernel(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO


def _identity(w: np.ndarray) -> np.ndarray:
  return w


Plan = dict[str, tuple[tuple[int, ...], tuple[str, ...], Callable[[np.ndarray], np.ndarray]]]


def _plan(model_name: str, model: nn.Module, in_channels: int) -> Plan:
  """torch key -> (torch shape, flat Flax variable path, numpy transform torch -> Flax)."""
  if model_name not in _TORCH_NAMES:
    raise unknown_name("torchvision model", model_name, _TORCH_NAMES)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 64, 64, in_channels), jnp.float32), train=False))
  flat = traverse_util.flatten_dict(shapes)
  layers: dict[tuple[str, ...], dict[str, tuple[int, ...]]] = {}
  for (collection, *path, leaf), s in flat.items():
    layers.setdefault(tuple(path), {})[f"{collection}/{leaf}"] = tuple(s.shape)
  plan: Plan = {}
  torch_name = _TORCH_NAMES[model_name]
  for path, leaves in layers.items():
    prefix = torch_name(path, layers)
    if "params/scale" in leaves:  # BatchNorm
      for torch_leaf, (collection, leaf) in (("weight", ("params", "scale")),
                                              ("bias", ("params", "bias")),
                                              ("running_mean", ("batch_stats", "mean")),
                                              ("running_var", ("batch_stats", "var"))):
        plan[f"{prefix}.{torch_leaf}"] = (leaves[f"{collection}/{leaf}"],
                                          (collection, *path, leaf), _identity)
      continue
    kernel = leaves["params/kernel"]
    if len(kernel) == 4:  # conv: HWIO here, OIHW in torch
      h, w, i, o = kernel
      plan[f"{prefix}.weight"] = ((o, i, h, w), ("params", *path, "kernel"), _conv_kernel)
    else:  # linear: [in, out] here, [out, in] in torch
      plan[f"{prefix}.weight"] = (kernel[::-1], ("params", *path, "kernel"), np.transpose)
    if "params/bias" in leaves:
      plan[f"{prefix}.bias"] = (leaves["params/bias"], ("params", *path, "bias"), _identity)
  return plan


def _resnet_name(path: tuple[str, ...], layers) -> str:
  if len(path) == 1:  # conv1, bn1, fc
    return path[0]
  block, layer = path  # layer{stage}_{index}
  stage, index = block[len("layer"):].split("_")
  return f"layer{stage}.{index}.{_RESNET_BLOCK_NAMES.get(layer, layer)}"


def _mobilenet_v2_name(path: tuple[str, ...], layers) -> str:
  if path == ("classifier",):
    return "classifier.1"  # classifier = Sequential(Dropout, Linear)
  index = path[0].split("_")[1]
  if len(path) == 2:  # features_0 / the last 1x1: Conv2dNormActivation = (conv, bn, act)
    return f"features.{index}.{0 if path[1] == 'conv' else 1}"
  # InvertedResidual.conv = ([expand ConvBNAct,] depthwise ConvBNAct, project conv, project bn)
  block, part, layer = path
  expand = (block, "expand", "conv") in layers
  position = {"expand": 0, "depthwise": 1 if expand else 0}
  if part in position:
    return f"features.{index}.conv.{position[part]}.{0 if layer == 'conv' else 1}"
  project = 2 if expand else 1
  return f"features.{index}.conv.{project if layer == 'conv' else project + 1}"


_TORCH_NAMES = {"resnet18": _resnet_name, "resnet50": _resnet_name, "resnet101": _resnet_name,
                "mobilenet_v2": _mobilenet_v2_name}
