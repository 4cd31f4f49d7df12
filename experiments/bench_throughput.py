"""Training and scoring throughput of dcjax, side by side with a plain PyTorch baseline.

  python experiments/bench_throughput.py --size {ci,cpu,gpu} [--out results.json]
      [--device-label NAME] [--peak-flops F] [--no-torch]

What is timed (img/s after warm-up; every compile happens in the warm-up):
  dcjax hard     `train.Student`'s epoch function for the 'hard' protocol, as `train_student`
                 calls it: uint8 images on the device, shuffle + gather, RandomResizedCrop +
                 flip, normalise, forward, cross-entropy, backward, AdamW; one sync per epoch.
  dcjax soft     the same for 'soft': + CutMix + a teacher forward (same architecture) + KL.
  dcjax-xla hard (ConvNet on CPU only) the hard row with XLA's own convolution / GroupNorm
                 gradients (`impl='xla'`, dcjax before `dcjax.layers`), for the before/after.
  dcjax-custom hard  the same with `dcjax.layers` without Winograd (`impl='custom'`, dcjax's
                 CPU path before 2026-12-06).
  dcjax-winograd hard  the same with Winograd but without the fused norm -> ReLU -> pool
                 (`impl='winograd'`, the CPU path of 2026-12-06's day).
  dcjax scoring  a jitted eval-mode forward of a uint8 batch to logits (normalise included),
                 as the scoring / teacher-feature passes run it; one sync per batch.
  torch *        the same three in PyTorch (when importable): the same network, batch and image
                 size, AdamW, per-example crop + flip with `affine_grid` / `grid_sample`, a
                 one-box-per-batch CutMix, and a same-architecture teacher.

Sizes: `ci` (ConvNet width 8, 16 px, batch 16, 2 timed steps: seconds on a CPU, for the test),
`cpu` (ConvNet-3 width 128, 28 px grey, batches 64 and 256, 20 timed steps: the CPU comparison),
`gpu` (ResNet-18, 224 px, batches 128 and 512, bf16, 50 timed steps; torchvision's ResNet-18).

FLOPs per image are the model's (forward + backward for training, + the teacher's forward for
soft; forward for scoring) from XLA's cost analysis; augmentation and the optimiser update are
not counted. Torch rows reuse those figures (the same architecture does the same work). MFU is
reported only for bf16 rows on a device whose bf16 peak is known (or --peak-flops is given).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import platform
import shlex
import sys
import time
from typing import Any

# On a GPU, JAX would otherwise grab 75% of the memory up front and leave too little for the
# torch rows of the same run; growing on demand also keeps peak_bytes_in_use meaningful.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# Runs from a plain checkout too (without `pip install -e .`): the repo root holds `dcjax`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from dcjax import training
from dcjax import augment, models, protocols, train  # noqa: E402
from dcjax.benchmark import runner  # noqa: E402  (the CPU fields results.json records)
from dcjax.data import sources
from dcjax.data.files import write_json_atomic  # noqa: E402

KINDS = ("scoring", "hard", "soft")
# Untimed steps before timing, at least one epoch: JAX compiles in its first step, but torch's
# CPU kernels (oneDNN) take 3-4 steps to settle (measured: 0.4 s -> 3 ms per ci-size step).
WARMUP_STEPS = 5


@dataclasses.dataclass(frozen=True)
class Size:
  """One benchmark size: the network, the input and how long to time."""

  model: str  # a dcjax.models name
  model_kwargs: dict
  image_size: int
  channels: int
  num_classes: int
  batches: tuple[int, ...]
  timed_steps: int
  # Training is timed as timed_steps / steps_per_epoch whole epochs of the epoch function, so
  # the synthetic set holds batch * steps_per_epoch images (not batch * timed_steps: 3.9 GB at
  # 224 px and batch 512) and the warm-up is whole epochs too.
  steps_per_epoch: int
  dtype: str  # compute dtype: 'float32' or 'bfloat16'


SIZES: dict[str, Size] = {
    "ci": Size("convnet", dict(width=8), 16, 3, 10, (16,), 2, 2, "float32"),
    "cpu": Size("convnet", dict(width=128), 28, 1, 10, (64, 256), 20, 10, "float32"),
    "gpu": Size("resnet18", {}, 224, 3, 1000, (128, 512), 50, 10, "bfloat16"),
}


def warmup_epochs(size: Size) -> int:
  """Untimed training epochs: whole epochs, at least WARMUP_STEPS steps."""
  return max(1, -(-WARMUP_STEPS // size.steps_per_epoch))


# Dense (no sparsity) bf16 tensor peaks in FLOP/s from the vendors' datasheets, matched as
# substrings of `device_kind` in this order (the specific variants first).
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200 NVL", 835e12), ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12),
    ("A100", 312e12), ("L4", 121e12),
)


def peak_flops_for(device_kind: str, dtype: str) -> float | None:
  # fp32 rows get none: XLA and torch may run fp32 convolutions on TF32 tensor cores or not,
  # so no single fp32 peak is the right denominator.
  if dtype != "bfloat16":
    return None
  for name, flops in PEAK_BF16_FLOPS:
    if name in device_kind:
      return flops
  return None


def _row(name: str, framework: str, model: str, size: Size, batch: int, **kw) -> dict:
  row = dict(name=name, framework=framework, model=model, image_size=size.image_size,
             batch=batch, dtype=size.dtype, img_per_s=None, flops_per_img=None, mfu=None,
             peak_mem_bytes=None, timed_steps=size.timed_steps, seconds=None, status="ok")
  row.update(kw)
  return row


def _finish(row: dict, peak_flops: float | None) -> dict:
  if row["img_per_s"] and row["flops_per_img"] and peak_flops:
    row["mfu"] = row["img_per_s"] * row["flops_per_img"] / peak_flops
  return row


# --------------------------------------------------------------------------------------------
# FLOPs from XLA's cost analysis.


def _cost_flops(lowered) -> float | None:
  """FLOPs of a lowered computation: the compiled module's cost analysis, else the unoptimised
  module's (some backends leave library calls such as cuDNN convolutions uncounted)."""
  for analyse in (lambda: lowered.compile().cost_analysis(), lowered.cost_analysis):
    try:
      cost = analyse()
    except Exception:  # cost analysis is optional per backend and jax version: then no MFU
      continue
    if isinstance(cost, (list, tuple)):  # a list of one dict per module in older jax
      cost = cost[0] if cost else None
    if isinstance(cost, dict) and float(cost.get("flops", 0.0)) > 0:
      return float(cost["flops"])
  return None


def model_flops_per_image(model, image_shape: tuple, batch: int = 4) -> dict[str, float | None]:
  """{'train': forward + backward, 'forward': eval forward} FLOPs per image of `model`.

  Lowered from shapes only (nothing runs), at a small batch: every layer's cost is linear in
  the batch, so the per-image figure does not depend on it and compiling stays cheap."""
  x = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
  y = jax.ShapeDtypeStruct((batch,), jnp.int32)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape)), train=False))

  def train_loss(params, batch_stats, x, y):
    logits, _ = training.apply_train_mode(model, params, batch_stats, x, jnp.ones(x.shape[0]))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

  grad = jax.jit(jax.value_and_grad(train_loss))
  fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))
  t = _cost_flops(grad.lower(variables["params"], variables.get("batch_stats", {}), x, y))
  f = _cost_flops(fwd.lower(variables, x))
  return dict(train=t / batch if t else None, forward=f / batch if f else None)


def flops_for(kind: str, flops: dict[str, float | None]) -> float | None:
  if kind == "scoring":
    return flops["forward"]
  if kind == "hard":
    return flops["train"]
  if flops["train"] and flops["forward"]:  # soft: the teacher's forward comes on top
    return flops["train"] + flops["forward"]
  return None


# --------------------------------------------------------------------------------------------
# dcjax rows.


def _jax_peak_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats()  # None on CPU
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return int(stats["peak_bytes_in_use"])


def synthetic_set(size: Size, n: int) -> tuple[np.ndarray, np.ndarray]:
  """n seeded random uint8 images [n, H, W, C] and their labels, through dcjax's loader."""
  src = sources.open_source("synthetic", "train", synthetic=dict(
      num_examples=n, image_size=size.image_size, channels=size.channels,
      num_classes=size.num_classes, seed=0))
  return sources.load_images(src, progress=False)


def dcjax_train_row(kind: str, model, size: Size, batch: int, images: np.ndarray,
                    labels: np.ndarray, mesh) -> dict:
  """Time the Student's epoch function for protocol `kind` ('hard' | 'soft')."""
  epochs = size.timed_steps // size.steps_per_epoch
  # epochs only shapes the learning-rate schedule; batch_size sets the step's batch.
  recipe = protocols.resolve(kind, dict(batch_size=batch, epochs=epochs + warmup_epochs(size)))
  mean, std = (0.5,) * size.channels, (0.5,) * size.channels
  student = train.Student(model, recipe, augment.get_augmentation(recipe.augment), mean, std,
                          mesh, teacher=model if recipe.labels == "teacher" else None)
  n = len(labels)
  assert training.batch_plan(n, batch, mesh.shape["data"]) == (batch, size.steps_per_epoch)
  k_init, k_teacher, k_train = jax.random.split(jax.random.key(0), 3)
  state, _ = student.init(k_init, n, images.shape[1:])
  run_epoch = student.train_epoch_fn(n)
  replicated = NamedSharding(mesh, P())
  images_d = jax.device_put(images, replicated)
  labels_d = jax.device_put(labels.astype(np.int32), replicated)
  teacher_vars = None
  if student.teacher is not None:
    teacher_vars = jax.device_put(
        model.init(k_teacher, jnp.zeros((1, *images.shape[1:])), train=False), replicated)

  def epoch(e: int):
    nonlocal state
    state, loss = run_epoch(state, images_d, labels_d, jax.random.fold_in(k_train, e),
                            teacher_vars)
    # One scalar sync per epoch, as train_student does; it also bounds the timed region.
    if not math.isfinite(float(loss)):
      raise FloatingPointError(f"dcjax {kind}: non-finite loss in epoch {e}")

  warm = warmup_epochs(size)
  for e in range(warm):  # the first compiles every step function
    epoch(e)
  t0 = time.perf_counter()
  for e in range(warm, warm + epochs):
    epoch(e)
  seconds = time.perf_counter() - t0
  return dict(img_per_s=batch * size.timed_steps / seconds, seconds=seconds,
              peak_mem_bytes=_jax_peak_bytes())


def dcjax_scoring_row(model, size: Size, batch: int, images: np.ndarray, mesh) -> dict:
  """Time a jitted eval-mode forward of one uint8 batch on the device to logits."""
  mean, std = (0.5,) * size.channels, (0.5,) * size.channels
  variables = jax.device_put(
      model.init(jax.random.key(0), jnp.zeros((1, *images.shape[1:])), train=False),
      NamedSharding(mesh, P()))
  score = jax.jit(lambda v, x: model.apply(v, training.normalise(x, mean, std), train=False))
  x = jax.device_put(images[:batch], NamedSharding(mesh, P("data")))
  for _ in range(WARMUP_STEPS):  # the first compiles
    jax.block_until_ready(score(variables, x))
  t0 = time.perf_counter()
  for _ in range(size.timed_steps):
    # Synced per batch: scoring code pulls every batch's scores to the host.
    jax.block_until_ready(score(variables, x))
  seconds = time.perf_counter() - t0
  return dict(img_per_s=batch * size.timed_steps / seconds, seconds=seconds,
              peak_mem_bytes=_jax_peak_bytes())


# --------------------------------------------------------------------------------------------
# PyTorch rows.


def torch_model(torch, size: Size):
  """The torch twin of the dcjax model, or None when it needs torchvision and that is absent."""
  nn = torch.nn
  if size.model == "resnet18":
    try:
      import torchvision
    except Exception:  # absent, or installed for another torch build (RuntimeError on import)
      return None
    return torchvision.models.resnet18(num_classes=size.num_classes)
  width, depth = size.model_kwargs.get("width", 128), size.model_kwargs.get("depth", 3)
  layers, c, side = [], size.channels, size.image_size
  for d in range(depth):
    pad = 3 if d == 0 and size.image_size == 28 else 1  # as dcjax's ConvNet: 28 px -> 32
    layers += [nn.Conv2d(c, width, 3, padding=pad), nn.GroupNorm(width, width), nn.ReLU(),
               nn.AvgPool2d(2)]
    c, side = width, (side + 2 * pad - 2) // 2
  return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * side * side, size.num_classes))


def _torch_rrc_flip(torch, x):
  """Per-example RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3) + flip of float [B, C, H, W],
  as one batched bilinear `grid_sample` (no antialiasing, unlike dcjax's resize)."""
  b, dev = x.shape[0], x.device
  area = torch.empty(b, device=dev).uniform_(0.08, 1.0)
  aspect = torch.exp(torch.empty(b, device=dev).uniform_(math.log(3 / 4), math.log(4 / 3)))
  w = torch.sqrt(area * aspect).clamp(max=1.0)  # crop side as a fraction of the image side
  h = torch.sqrt(area / aspect).clamp(max=1.0)
  cx = (torch.rand(b, device=dev) * (1 - w) + w / 2) * 2 - 1
  cy = (torch.rand(b, device=dev) * (1 - h) + h / 2) * 2 - 1
  sign = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)  # a mirrored crop is a flip
  zero = torch.zeros_like(w)
  theta = torch.stack([torch.stack([w * sign, zero, cx], -1), torch.stack([zero, h, cy], -1)], 1)
  grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
  return torch.nn.functional.grid_sample(x, grid, mode="bilinear", align_corners=False)


def _torch_cutmix(torch, x, rng: np.random.Generator):
  """CutMix with one box per batch (as dcjax's): lam ~ U(0, 1) = Beta(1, 1). Only the images
  are mixed: the soft protocol's targets are the teacher's logits on the mixed batch."""
  b, _, hgt, wid = x.shape
  cut = math.sqrt(1.0 - rng.random())
  ch, cw = int(hgt * cut), int(wid * cut)
  cy, cx = int(rng.integers(hgt)), int(rng.integers(wid))
  y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, hgt)
  x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, wid)
  perm = torch.randperm(b, device=x.device)
  x = x.clone()
  x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
  return x


def torch_rows(size: Size, data: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict:
  """{(kind, batch): figures} for the torch twins, or {'skipped': reason}."""
  try:
    import torch
  except Exception:  # absent, or broken (OSError: a missing shared library)
    return dict(skipped="skipped (torch not importable)")
  if torch_model(torch, size) is None:
    return dict(skipped="skipped (torchvision not importable)")
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  cuda = torch.cuda.is_available()
  dev = torch.device("cuda" if cuda else "cpu")
  if cuda:
    torch.backends.cudnn.benchmark = True  # as any tuned torch training script
  fmt = torch.channels_last if cuda else torch.contiguous_format
  amp_dtype = torch.bfloat16 if size.dtype == "bfloat16" else None
  mean = torch.full((1, size.channels, 1, 1), 0.5, device=dev)
  std = torch.full((1, size.channels, 1, 1), 0.5, device=dev)
  rng = np.random.default_rng(0)

  def sync():
    if cuda:
      torch.cuda.synchronize()

  def autocast():
    return torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None)

  def to_float(x_u8):
    # NHWC uint8 -> NCHW float view: on a GPU this is channels_last already, as cuDNN likes it.
    return x_u8.permute(0, 3, 1, 2).float().div_(255.0)

  def peak_bytes():
    return int(torch.cuda.max_memory_allocated()) if cuda else None

  def new_model(train_mode: bool):
    m = torch_model(torch, size).to(dev, memory_format=fmt)
    return m.train(train_mode)

  out: dict[Any, dict] = {}
  for batch, (images, labels) in data.items():
    images_t = torch.from_numpy(images).to(dev)
    labels_t = torch.from_numpy(labels.astype(np.int64)).to(dev)
    n = len(labels)
    for kind in KINDS:
      if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
      if kind == "scoring":
        model = new_model(False)
        x_u8 = images_t[:batch]

        def step():
          with torch.inference_mode(), autocast():
            model((to_float(x_u8) - mean) / std)
          sync()  # per batch, as the dcjax scoring row

        for _ in range(WARMUP_STEPS):
          step()
        t0 = time.perf_counter()
        for _ in range(size.timed_steps):
          step()
      else:
        model, teacher = new_model(True), new_model(False) if kind == "soft" else None
        if teacher is not None:
          teacher.requires_grad_(False)
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW([dict(params=decay, weight_decay=0.01),
                                 dict(params=no_decay, weight_decay=0.0)], lr=1e-3)

        def train_step(idx):
          x = _torch_rrc_flip(torch, to_float(images_t[idx]))
          x = (x - mean) / std
          with autocast():
            if teacher is not None:
              x = _torch_cutmix(torch, x, rng)
              with torch.no_grad():
                t_logits = teacher(x).float()
            logits = model(x).float()
          if teacher is not None:  # KL(teacher/T || student/T), T = 20, as dcjax's soft
            log_p = torch.log_softmax(t_logits / 20.0, -1)
            log_q = torch.log_softmax(logits / 20.0, -1)
            loss = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
          else:
            loss = torch.nn.functional.cross_entropy(logits, labels_t[idx])
          opt.zero_grad(set_to_none=True)
          loss.backward()
          opt.step()
          return loss.detach()

        def epoch():
          perm = torch.randperm(n, device=dev)
          losses = [train_step(perm[s * batch:(s + 1) * batch])
                    for s in range(size.steps_per_epoch)]
          float(torch.stack(losses).mean())  # one sync per epoch, as the dcjax rows

        for _ in range(warmup_epochs(size)):
          epoch()
        t0 = time.perf_counter()
        for _ in range(size.timed_steps // size.steps_per_epoch):
          epoch()
      seconds = time.perf_counter() - t0
      out[kind, batch] = dict(img_per_s=batch * size.timed_steps / seconds, seconds=seconds,
                              peak_mem_bytes=peak_bytes())
    images_t = labels_t = None  # frees the device copies before the next batch size's
  return out


# --------------------------------------------------------------------------------------------
# The run.


def _versions() -> dict[str, str | None]:
  def version(module: str) -> str | None:
    try:
      return __import__(module).__version__
    except Exception:  # absent or broken: the torch rows say so
      return None

  return dict(python=platform.python_version(), jax=jax.__version__, jaxlib=version("jaxlib"),
              flax=flax.__version__, optax=optax.__version__, numpy=np.__version__,
              torch=version("torch"), torchvision=version("torchvision"))


def run(size: str, device_label: str | None = None, *, peak_flops: float | None = None,
        use_torch: bool = True, command: str | None = None) -> dict:
  """Run the benchmark at `size` ('ci' | 'cpu' | 'gpu'); returns the JSON-able report.

  device_label names the machine in the report (default: the device kind); peak_flops
  overrides the device's bf16 peak FLOP/s used for MFU (and then applies to every row)."""
  if size not in SIZES:
    raise ValueError(f"unknown size {size!r}; use one of {', '.join(SIZES)}")
  spec = SIZES[size]
  if spec.timed_steps % spec.steps_per_epoch:
    raise ValueError(f"size {size}: timed_steps must be whole epochs")
  device = jax.local_devices()[0]
  # One device, like the torch rows: figures are per chip, and MFU divides by one chip's peak.
  mesh = train.make_mesh(1)
  model = models.get_model(spec.model, spec.num_classes, spec.image_size,
                           dtype=jnp.dtype(spec.dtype), **spec.model_kwargs)
  image_shape = (spec.image_size, spec.image_size, spec.channels)
  flops = model_flops_per_image(model, image_shape)
  peak = peak_flops if peak_flops is not None else peak_flops_for(device.device_kind, spec.dtype)
  data = {b: synthetic_set(spec, b * spec.steps_per_epoch) for b in spec.batches}
  model_name = spec.model + "".join(f"-{k}{v}" for k, v in spec.model_kwargs.items())

  rows = []
  # Rows run from the smallest to the largest batch; peak_mem_bytes is the process's
  # high-water mark so far (JAX cannot reset it), so it is exact for the largest rows only.
  for batch, (images, labels) in data.items():
    for kind in KINDS:
      if kind == "scoring":
        figures = dcjax_scoring_row(model, spec, batch, images, mesh)
      else:
        figures = dcjax_train_row(kind, model, spec, batch, images, labels, mesh)
      rows.append(_finish(_row(f"dcjax {kind}", "dcjax", model_name, spec, batch,
                               flops_per_img=flops_for(kind, flops), **figures), peak))
    if spec.model == "convnet" and device.platform == "cpu":
      # The same hard-label step with dcjax's earlier CPU layers: XLA's own conv / GroupNorm
      # gradients (dcjax before dcjax.layers), dcjax.layers without Winograd ('custom', before
      # 2026-12-06) and Winograd without the fused block ('winograd'): the before/after
      # comparisons of the CPU convolution gap, in one run.
      for impl in EARLIER_CPU_PATHS:
        stock = models.get_model(spec.model, spec.num_classes, spec.image_size,
                                 dtype=jnp.dtype(spec.dtype), impl=impl, **spec.model_kwargs)
        figures = dcjax_train_row("hard", stock, spec, batch, images, labels, mesh)
        rows.append(_finish(_row(f"dcjax-{impl} hard", "dcjax", model_name, spec, batch,
                                 flops_per_img=flops_for("hard", flops), **figures), peak))
  torch_out = torch_rows(spec, data) if use_torch else dict(skipped="skipped (--no-torch)")
  torch_name = "torchvision-resnet18" if spec.model == "resnet18" else model_name
  for batch in spec.batches:
    for kind in KINDS:
      if "skipped" in torch_out:
        row = _row(f"torch {kind}", "torch", torch_name, spec, batch,
                   status=torch_out["skipped"], timed_steps=0)
      else:
        row = _row(f"torch {kind}", "torch", torch_name, spec, batch,
                   flops_per_img=flops_for(kind, flops), **torch_out[kind, batch])
      rows.append(_finish(row, peak))

  by_key = {(r["name"], r["batch"]): r for r in rows}
  ratios = []
  for batch in spec.batches:
    for kind in KINDS:
      a, b = by_key[f"dcjax {kind}", batch], by_key[f"torch {kind}", batch]
      if a["img_per_s"] and b["img_per_s"]:
        ratios.append(dict(kind=kind, batch=batch,
                           dcjax_over_torch=a["img_per_s"] / b["img_per_s"]))
      for impl in EARLIER_CPU_PATHS:
        stock = by_key.get((f"dcjax-{impl} hard", batch)) if kind == "hard" else None
        if stock and stock["img_per_s"] and b["img_per_s"]:
          ratios.append(dict(kind=f"hard, {impl} layers", batch=batch,
                             dcjax_over_torch=stock["img_per_s"] / b["img_per_s"]))
  return dict(
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      size=size, command=command or f"bench_throughput.run({size!r})",
      versions=_versions(),
      device=dict(label=device_label or device.device_kind, kind=device.device_kind,
                  platform=device.platform, count=jax.device_count(),
                  host_cpus=os.cpu_count(), machine=platform.machine(),
                  cpu_model=runner.cpu_model(), cpu_simd=runner.cpu_simd(),
                  cpu_fingerprint=runner.cpu_fingerprint()),
      peak_flops=peak,
      warmup=f"untimed: {warmup_epochs(spec)} epoch(s) of {spec.steps_per_epoch} steps "
             f"(training), {WARMUP_STEPS} batches (scoring)",
      notes=["flops_per_img: model forward+backward (+ teacher forward for soft) or forward "
             "(scoring) from XLA cost analysis; augmentation and optimiser not counted",
             "dcjax peak_mem_bytes: the process's device-memory high-water mark after the row",
             "torch augmentation: bilinear grid_sample crop + flip without antialiasing"],
      rows=rows, ratios=ratios)


EARLIER_CPU_PATHS = ("xla", "custom", "winograd")  # ConvNet's CPU paths before the default


def format_table(report: dict) -> str:
  """The rows as a fixed-width text table, then the dcjax/torch ratios."""
  head = f"{'name':<14} {'model':<20} {'px':>4} {'batch':>5} {'dtype':<8} {'img/s':>10} " \
         f"{'GFLOP/img':>9} {'MFU':>6} {'peak MiB':>9}"
  lines = [f"{report['size']} on {report['device']['label']} ({report['device']['platform']})",
           head, "-" * len(head)]
  for r in report["rows"]:
    if r["status"] != "ok":
      lines.append(f"{r['name']:<14} {r['model']:<20} {r['image_size']:>4} {r['batch']:>5} "
                   f"{r['dtype']:<8} {r['status']}")
      continue
    gf = f"{r['flops_per_img'] / 1e9:.4g}" if r["flops_per_img"] else "-"
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
    mem = f"{r['peak_mem_bytes'] / 2**20:.0f}" if r["peak_mem_bytes"] is not None else "-"
    lines.append(f"{r['name']:<14} {r['model']:<20} {r['image_size']:>4} {r['batch']:>5} "
                 f"{r['dtype']:<8} {r['img_per_s']:>10.1f} {gf:>9} {mfu:>6} {mem:>9}")
  for q in report["ratios"]:
    lines.append(f"dcjax/torch {q['kind']:<16} batch {q['batch']:>4}: "
                 f"{q['dcjax_over_torch']:.2f}x")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="ci",
                      help="ci: seconds on a CPU; cpu: ConvNet-3 on 28 px; gpu: ResNet-18, bf16")
  parser.add_argument("--out", help="write the report as JSON here")
  parser.add_argument("--device-label", help="the machine's name in the report")
  parser.add_argument("--peak-flops", type=float, help="peak FLOP/s for MFU (default: known "
                      "bf16 peaks by device kind)")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
  args = parser.parse_args(argv)
  command = shlex.join([os.path.basename(sys.executable), *sys.argv]) if argv is None else \
      shlex.join(["bench_throughput.py", *argv])
  report = run(args.size, args.device_label, peak_flops=args.peak_flops,
               use_torch=not args.no_torch, command=command)
  print(format_table(report), flush=True)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json_atomic(args.out, report)
    print(f"-> {args.out}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
