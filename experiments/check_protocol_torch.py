"""An independent PyTorch run of the small-data hard-label evaluation, as DD-Ranking 0.2.0 runs it.

OPTIONAL cross-check, not part of dcjax: nothing imports it, CI does not run it, and dcjax does
not depend on torch. It trains a fresh ConvNet-3 on a dcjax compressed set (hard labels from the
class folders) with the recipe of DD-Ranking 0.2.0's `LabelRobustScoreHard` (SGD, StepLR, DSA
on normalised tensors) and reports the final-epoch top-1 on the full Fashion-MNIST test split,
so that dcjax's JAX `small_data` protocol can be compared with it side by side. The code is
written from scratch after reading the two reference implementations (listed below); only their
semantics are reproduced.

Install (a separate venv; no torchvision needed; on the project's machine torch==2.13.0 comes
from a local CPU wheel -- do not install another torch version):

  python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy pillow

Run:

  /tmp/torchvenv/bin/python experiments/check_protocol_torch.py --set WORKDIR/compressed \
      [--seeds 0 1 2 3 4] [--epochs 300] [--lr 0.01] [--batch-size 256] [--threads 1] \
      [--out torch_check.json] [--schedule ddranking|dc] [--step-size N] [--eval-every 10]

It prints a progress line every 50 epochs, one line per seed and a final
`torch <set name>: top-1 M ± S % (n seeds)` (std is numpy's population std, ddof=0, as dcjax's
results and DD-Ranking's summaries). With --out the results go to a JSON file written atomically
after every seed; rerunning with the same --out skips the seeds already recorded there (and
refuses to mix results made with different settings).

Input. --set is a dcjax compressed set: `manifest.json` plus class folders `0000/`, `0001/`, ...
of PNG files (8-bit grayscale 28x28 for Fashion-MNIST); the label is int(folder name). Pixels
are read with PIL, scaled to [0, 1] and normalised with Fashion-MNIST's mean 0.2861 and std
0.3530 (the test split the same way). The test split is parsed from the idx files in --data-dir
(t10k-images-idx3-ubyte / t10k-labels-idx1-ubyte, plain or .gz).

What is reproduced, and where it comes from. References: [R] = github.com/NUS-HPC-AI-Lab/
DD-Ranking at commit c1ea0b3f "Release v0.2.0" (its ddranking/ tree is unchanged up to the
repository's newest commit, and identical to the dist/ddranking-0.2.0-py3-none-any.whl in that
commit); [DC] = github.com/VICO-UoE/DatasetCondensation (utils.py, networks.py, main.py).

* Dataset constants. [R] ddranking/utils/data.py:get_dataset knows only CIFAR-10/100,
  TinyImageNet, the ImageNet subsets and ImageNet-1K: DD-Ranking 0.2.0 has no Fashion-MNIST
  entry. The Fashion-MNIST constants are therefore DC's ([DC] utils.py:get_dataset): 1 channel,
  im_size (28, 28), transforms ToTensor + Normalize(mean [0.2861], std [0.3530]) for train and
  test, no other transform at test time.
* Network. ConvNet-3 of [R] ddranking/utils/networks.py:ConvNet (a copy of [DC]
  networks.py:ConvNet) with [R] ddranking/utils/model.py:get_convnet's settings: width 128,
  depth 3, each block Conv2d(3x3) -> GroupNorm(128, 128, affine=True) ('instancenorm') ->
  ReLU -> AvgPool2d(2, 2), then one Linear classifier on the flattened features. 28 px input:
  the image is NOT padded or resized; `_make_layers` treats im_size 28 as 32 and gives the first
  conv padding=3 when the input has 1 channel, so the first conv maps 28x28 to 32x32 and the
  pools give 16, 8, 4: the classifier is Linear(128*4*4 = 2048, 10). (model.py:build_model
  hard-codes channel=3, which on a 28 px 1-channel input would not run; the 1-channel network is
  the one networks.py defines for it and DC uses.) Layers are created in the same order as
  there, with PyTorch's default initialisation (no re-init), so parameter names and shapes match
  [R]'s state_dict (features.{0,4,8}.*, features.{1,5,9}.*, classifier.*). (The flatten is
  a reshape: [R]'s `out.view(...)` fails on torch 2.13 CPU for a 1-channel batch out of DSA's
  'crop', whose strides make the conv return a channels-last tensor.)
* Augmentation. [R] ddranking/aug/dsa.py:DSA as LabelRobustScoreHard builds it
  ([R] ddranking/metrics/hard_label.py: `DSA(aug_params)`): seed=-1, so no siamese sharing and no
  reseeding (every parameter is drawn per image from the global RNG), aug_mode='S': for every
  batch ONE op is drawn uniformly, torch.randint(0, 6), from DSA's list, in [R]'s order
  (scale, rotate, flip, color, crop, cutout), and applied; 'color' applies brightness, saturation
  and contrast in turn. Parameters: the DSA defaults ([DC] utils.py:ParamDiffAug, the same
  values as [R] configs/Demo_LRS_Hard_Label.yaml aug_params): scale 1.2, rotate 15 deg, flip
  0.5, brightness 1.0, saturation 2.0, contrast 0.5, crop 0.125, cutout 0.5. Ops, on the
  NORMALISED batch [N, C, H, W] (DC's synthetic images live in normalised space and DD-Ranking
  applies the DSA to the tensors it is given, in train_one_epoch):
    scale   sx, sy ~ U(1/1.2, 1.2) independently; affine_grid + grid_sample (bilinear, zeros
            outside, align_corners=True as [R]; DC's pinned torch 1.2 behaved the same).
    rotate  angle ~ U(-15, 15) degrees; same sampling.
    flip    horizontal flip with probability 0.5.
    color   x += (u - 0.5) * 1.0; x = (x - mean_c) * (2u') + mean_c (mean over channels: the
            identity for 1 channel, its draw still made); x = (x - mean) * (u'' + 0.5) + mean
            (mean over C, H, W of each image).
    crop    translate by integers tx, ty ~ U{-4..4} (round(28 * 0.125)) with zero fill.
    cutout  zero a 14x14 square (round(28 * 0.5)) centred at (ox, oy), ox, oy ~ U{0..28},
            clipped to the image.
  "Zero" is 0 in normalised space, i.e. the dataset mean. Nothing is applied at test time.
* Training, --schedule ddranking (the default): [R] ddranking/metrics/hard_label.py
  `_compute_hard_label_metrics` with [R] ddranking/utils/train_and_eval.py (get_optimizer,
  get_lr_scheduler, train_one_epoch, validate): torch.optim.SGD(lr, momentum 0.9, weight decay
  5e-4 coupled on every parameter), StepLR(step_size, gamma 0.1) stepped once per epoch, trained
  for exactly num_epochs epochs (--epochs); the momentum buffer is kept across the decay.
  step_size has no default in [R] (None fails an assert); its demo config uses step_size 500
  with num_epochs 1000, so here --step-size defaults to epochs // 2 (150 for 300: epochs 0-149
  at lr, 150-299 at lr/10; StepLR would decay again every step_size epochs). Data: a
  RandomSampler DataLoader (reshuffled every epoch, last partial batch kept), batch
  syn_batch_size 256 (the constructor's default; the demo yaml says 128), loss
  CrossEntropyLoss (mean) on hard labels, model.train() while training. The lr is fixed
  (--lr, the `syn_lr` argument of compute_metrics); without syn_lr [R] instead searches
  lr in {0.001, 0.005, 0.01, 0.05, 0.1} and keeps the best test accuracy, which is not done here.
  Seeding: [R] calls set_seed() (torch, numpy, random, from the clock) before each evaluation run
  and builds the model right after; here seed = each --seeds value.
* Test. validate(): model.eval(), no augmentation, top-1 over the full 10,000-image test split,
  in %. Reported metric: [R] reports the BEST of the test accuracies measured every
  test_interval = 10 epochs (`best_acc1`, and 0 when num_epochs < 10); DC reports the final one.
  This script reports the FINAL-epoch accuracy (per_seed); with --eval-every 10 it also measures
  every 10 epochs and records [R]'s best-of figure (per_seed_best). The test loader is a
  RandomSampler DataLoader as in [R] (order does not change the accuracy), so with
  --eval-every 10 the global RNG is consumed in the same order as there.

Checked against [R] (torch 2.13.0 CPU, with [R]'s dsa.py and networks.py imported from the
0.2.0 wheel): from the same RNG state each DSA op returns bit-identical tensors, and the op
choice too; the same seed gives bit-identical initial parameters; 12 epochs of this loop and of
[R]'s loop (same seed, StepLR, tests every 5 epochs) end within 2e-6 in every parameter with
equal accuracies. Cost on 1 CPU thread: ~0.9 s per epoch on 100 images and ~35 s per test of
the 10,000 test images (a 2-core machine under load), so ~5 min per 300-epoch seed.

Where DD-Ranking 0.2.0 differs from the original DC/DSA evaluation ([DC] utils.py:
evaluate_synset, which --schedule dc reproduces instead):
  - DC trains Epoch + 1 epochs (ep = 0..Epoch); [R] trains num_epochs.
  - DC multiplies the lr by 0.1 after epoch Epoch//2 + 1 (0-based; Epoch//2 + 2 epochs at lr)
    and REBUILDS the SGD optimizer there, so the momentum restarts from zero; [R] uses StepLR
    (decay after step_size epochs, and again every step_size epochs) and keeps the momentum.
  - DC reports the final test accuracy; [R] the best of the every-10-epoch tests.
  - DC's DSA list is 'color_crop_cutout_flip_scale_rotate' in that order, [R]'s is scale,
    rotate, flip, color, crop, cutout: both draw one of the six uniformly per batch, so only which
    random number picks which op differs (--schedule dc uses DC's order).
  - DC's main.py trains Epoch = 1000 whenever DSA is on; [R]'s default num_epochs is 300 (its
    demos use 1000). --epochs is the Epoch / num_epochs parameter in both modes.
  Common to both: SGD momentum 0.9, weight decay 5e-4, lr 0.01, batch 256, reshuffled batches,
  DSA 'S' mode without siamese seeds on normalised images, PyTorch default init.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

FMNIST_MEAN = 0.2861  # [DC] utils.py:get_dataset('FashionMNIST')
FMNIST_STD = 0.3530
NUM_CLASSES = 10
DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
PROGRESS_EVERY = 50  # epochs between progress lines

# DSA's parameters ([DC] utils.py:ParamDiffAug; [R] configs/Demo_LRS_Hard_Label.yaml aug_params).
DSA_PARAMS = dict(scale=1.2, rotate=15.0, flip=0.5, brightness=1.0, saturation=2.0, contrast=0.5,
                  crop=0.125, cutout=0.5)
# The op list DSA draws from, per batch: DD-Ranking's order and DC's order (same six ops).
DSA_ORDER = {"ddranking": ("scale", "rotate", "flip", "color", "crop", "cutout"),
             "dc": ("color", "crop", "cutout", "flip", "scale", "rotate")}


# ---------------------------------------------------------------------------------------------
# Data


def _open_maybe_gz(directory: str, name: str):
  """The idx file `name` in `directory`, plain or gzip-compressed."""
  for candidate, opener in ((name, open), (name + ".gz", gzip.open)):
    path = os.path.join(directory, candidate)
    if os.path.exists(path):
      return opener(path, "rb")
  sys.exit(f"error: neither {name} nor {name}.gz in {directory}")


def read_idx(directory: str, name: str) -> np.ndarray:
  """Parses an idx file: big-endian magic (0, 0, dtype code, ndim), ndim uint32 sizes, data."""
  with _open_maybe_gz(directory, name) as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    sys.exit(f"error: {name} is not an idx file")
  if raw[2] != 0x08:
    sys.exit(f"error: {name}: only unsigned-byte idx data is supported (code {raw[2]:#x})")
  ndim = raw[3]
  dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
  start = 4 + 4 * ndim
  count = int(np.prod(dims)) if dims else 1
  if len(raw) - start != count:
    sys.exit(f"error: {name}: expected {count} bytes of data for shape {dims}, "
             f"found {len(raw) - start}")
  return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def normalise(pixels_uint8: np.ndarray) -> torch.Tensor:
  """uint8 [N, H, W] -> float32 [N, 1, H, W]: ToTensor (/255) then Normalize(mean, std)."""
  x = torch.from_numpy(pixels_uint8.astype(np.float32) / 255.0)
  return ((x - FMNIST_MEAN) / FMNIST_STD).unsqueeze(1).contiguous()


def load_test_split(data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
  images = read_idx(data_dir, "t10k-images-idx3-ubyte")
  labels = read_idx(data_dir, "t10k-labels-idx1-ubyte")
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    sys.exit(f"error: unexpected test idx shapes {images.shape} / {labels.shape}")
  return normalise(images), torch.from_numpy(labels.astype(np.int64))


def load_compressed_set(set_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
  """The PNGs of a dcjax compressed set, normalised, with labels from the class folder names."""
  if not os.path.isfile(os.path.join(set_dir, "manifest.json")):
    sys.exit(f"error: {set_dir} has no manifest.json: not a (complete) dcjax compressed set")
  pixels, labels = [], []
  folders = sorted(d for d in os.listdir(set_dir)
                   if d.isdigit() and os.path.isdir(os.path.join(set_dir, d)))
  for folder in folders:
    label = int(folder)
    if not 0 <= label < NUM_CLASSES:
      sys.exit(f"error: class folder {folder} is outside Fashion-MNIST's {NUM_CLASSES} classes")
    for name in sorted(os.listdir(os.path.join(set_dir, folder))):
      if not name.lower().endswith(".png"):
        continue
      path = os.path.join(set_dir, folder, name)
      with Image.open(path) as im:
        if im.mode != "L":
          sys.exit(f"error: {path} is a {im.mode} image; expected 8-bit grayscale (L)")
        arr = np.array(im, dtype=np.uint8)
      if arr.shape != (28, 28):
        sys.exit(f"error: {path} is {arr.shape[1]}x{arr.shape[0]}; expected 28x28")
      pixels.append(arr)
      labels.append(label)
  if not pixels:
    sys.exit(f"error: no PNG files in class folders under {set_dir}")
  return normalise(np.stack(pixels)), torch.tensor(labels, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# Network


class ConvNet3(nn.Module):
  """ConvNet (width 128, depth 3, GroupNorm-as-instancenorm, ReLU, 2x2 average pooling) with the
  28-px rule of DD-Ranking's / DC's ConvNet: no input padding, first conv padded by 3 for a
  1-channel input so that it outputs 32x32."""

  def __init__(self, channels: int = 1, num_classes: int = NUM_CLASSES, width: int = 128,
               depth: int = 3, image_size: int = 28):
    super().__init__()
    side = 32 if image_size == 28 else image_size
    blocks: list[nn.Module] = []
    in_ch = channels
    for d in range(depth):
      first_gray = d == 0 and channels == 1
      blocks.append(nn.Conv2d(in_ch, width, kernel_size=3, padding=3 if first_gray else 1))
      blocks.append(nn.GroupNorm(width, width, affine=True))
      blocks.append(nn.ReLU(inplace=True))
      blocks.append(nn.AvgPool2d(kernel_size=2, stride=2))
      in_ch = width
      side //= 2
    self.features = nn.Sequential(*blocks)
    self.classifier = nn.Linear(width * side * side, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.classifier(torch.flatten(self.features(x), 1))


# ---------------------------------------------------------------------------------------------
# DSA (one op per batch, independent parameters per image, on normalised tensors)


class DSA:
  """Differentiable Siamese Augmentation in 'S' mode without a siamese seed: each call draws one
  op uniformly from `order` and applies it with per-image random parameters. Random numbers are
  drawn from torch's global generator in the same order and shapes as the reference code."""

  def __init__(self, order=DSA_ORDER["ddranking"], params=None):
    self.order = tuple(order)
    self.p = dict(DSA_PARAMS if params is None else params)

  def __call__(self, x: torch.Tensor) -> torch.Tensor:
    pick = int(torch.randint(0, len(self.order), size=(1,)).item())
    return getattr(self, self.order[pick])(x).contiguous()

  @staticmethod
  def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

  def scale(self, x):
    r, n = self.p["scale"], x.shape[0]
    sx = torch.rand(n) * (r - 1.0 / r) + 1.0 / r
    sy = torch.rand(n) * (r - 1.0 / r) + 1.0 / r
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    return self._warp(x, theta.to(x.device))

  def rotate(self, x):
    n = x.shape[0]
    angle = (torch.rand(n) - 0.5) * 2 * self.p["rotate"] / 180 * float(np.pi)
    c, s = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = c, -s
    theta[:, 1, 0], theta[:, 1, 1] = s, c
    return self._warp(x, theta.to(x.device))

  def flip(self, x):
    u = torch.rand(x.shape[0], 1, 1, 1, device=x.device)
    return torch.where(u < self.p["flip"], torch.flip(x, dims=(3,)), x)

  def color(self, x):
    n = x.shape[0]
    # brightness
    x = x + (torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5) * self.p["brightness"]
    # saturation (mean over channels; identity for one channel, but the draw is still made)
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device)
                   * self.p["saturation"]) + m
    # contrast (mean over each whole image)
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (torch.rand(n, 1, 1, 1, dtype=x.dtype, device=x.device)
                      + self.p["contrast"]) + m

  def crop(self, x):
    """Integer translation; pixels shifted in from outside are 0."""
    n, _, h, w = x.shape
    max_dy, max_dx = int(h * self.p["crop"] + 0.5), int(w * self.p["crop"] + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, size=(n, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, size=(n, 1, 1), device=x.device)
    src_r = torch.arange(h, device=x.device).view(1, h, 1) + dy  # output (i, j) <- input (i+dy,
    src_c = torch.arange(w, device=x.device).view(1, 1, w) + dx  # j+dx) when that is inside
    inside = (src_r >= 0) & (src_r < h) & (src_c >= 0) & (src_c < w)
    flat = (src_r.clamp(0, h - 1) * w + src_c.clamp(0, w - 1)).view(n, 1, h * w)
    moved = torch.gather(x.reshape(n, x.shape[1], h * w), 2, flat.expand(-1, x.shape[1], -1))
    return moved.view_as(x) * inside.unsqueeze(1).to(x.dtype)

  def cutout(self, x):
    """Zero a (size x size) square centred at a random point, clipped to the image."""
    n, _, h, w = x.shape
    ch, cw = int(h * self.p["cutout"] + 0.5), int(w * self.p["cutout"] + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), size=(n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), size=(n, 1, 1), device=x.device)
    top, left = cy - ch // 2, cx - cw // 2
    r = torch.arange(h, device=x.device).view(1, h, 1)
    c = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (r >= top) & (r < top + ch) & (c >= left) & (c < left + cw)
    return x * (~hole).unsqueeze(1).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Training and test


def seed_everything(seed: int) -> None:
  torch.manual_seed(seed)
  np.random.seed(seed)
  random.seed(seed)


@torch.inference_mode()
def test_top1(model: nn.Module, loader: DataLoader) -> float:
  model.eval()
  correct = total = 0
  for x, y in loader:
    correct += int((model(x).argmax(dim=1) == y).sum())
    total += int(y.numel())
  return 100.0 * correct / total


def train_one_seed(seed: int, images, labels, test_images, test_labels, args) -> dict:
  """One fresh network trained on the set; returns its final (and optionally best) top-1."""
  seed_everything(seed)
  model = ConvNet3(channels=images.shape[1], image_size=images.shape[-1])
  train_loader = DataLoader(TensorDataset(images, labels), batch_size=args.batch_size,
                            sampler=RandomSampler(range(len(labels))), num_workers=0)
  test_set = TensorDataset(test_images, test_labels)
  test_loader = DataLoader(test_set, batch_size=args.batch_size,
                           sampler=RandomSampler(range(len(test_labels))), num_workers=0)
  augment = DSA(DSA_ORDER[args.schedule])

  def make_sgd(lr):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=args.momentum,
                           weight_decay=args.weight_decay)

  optimizer = make_sgd(args.lr)
  if args.schedule == "ddranking":
    total_epochs = args.epochs
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.step_size, gamma=0.1)
    dc_decay_epoch = None
  else:  # DC's evaluate_synset: Epoch + 1 epochs, rebuild at Epoch // 2 + 1
    total_epochs = args.epochs + 1
    scheduler = None
    dc_decay_epoch = args.epochs // 2 + 1
  lr = args.lr

  best, last_acc, last_eval, start = None, None, None, time.time()
  for epoch in range(total_epochs):
    model.train()
    loss_sum = seen = 0.0
    for x, y in train_loader:
      loss = F.cross_entropy(model(augment(x)), y)
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
      loss_sum += loss.detach().item() * len(y)
      seen += len(y)
    lr_used = optimizer.param_groups[0]["lr"]
    if scheduler is not None:
      scheduler.step()
    elif epoch == dc_decay_epoch:
      lr *= 0.1
      optimizer = make_sgd(lr)  # fresh optimizer: the momentum buffers start again from zero
    if args.eval_every and (epoch + 1) % args.eval_every == 0:
      last_acc = test_top1(model, test_loader)
      best = last_acc if best is None else max(best, last_acc)
      last_eval = epoch + 1
    if (epoch + 1) % PROGRESS_EVERY == 0 or epoch + 1 == total_epochs:
      print(f"  seed {seed} epoch {epoch + 1}/{total_epochs} loss {loss_sum / seen:.4f} "
            f"lr {lr_used:.2g} ({time.time() - start:.1f} s)", flush=True)
  train_s = time.time() - start
  # A test already run after the last epoch is that epoch's accuracy (the model is unchanged).
  final = last_acc if last_eval == total_epochs else test_top1(model, test_loader)
  return dict(final=final, best=best, epochs_trained=total_epochs, train_s=train_s,
              test_s=time.time() - start - train_s)


# ---------------------------------------------------------------------------------------------
# Results file and CLI


def write_json_atomic(path: str, obj) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it the usual mode
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=1)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def summarise(per_seed: dict) -> tuple[float, float]:
  values = np.array(list(per_seed.values()), dtype=np.float64)
  return float(values.mean()), float(values.std())


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--set", required=True, help="dcjax compressed-set directory")
  p.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                 help="directory with the Fashion-MNIST t10k idx files (plain or .gz)")
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
  p.add_argument("--epochs", type=int, default=300,
                 help="DD-Ranking's num_epochs / DC's Epoch (DC mode trains Epoch + 1)")
  p.add_argument("--lr", type=float, default=0.01)
  p.add_argument("--batch-size", type=int, default=256)
  p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
  p.add_argument("--out", help="results JSON (atomic; resumable: recorded seeds are skipped)")
  p.add_argument("--schedule", choices=("ddranking", "dc"), default="ddranking",
                 help="ddranking: StepLR, num_epochs epochs, momentum kept (default); "
                      "dc: DC evaluate_synset (Epoch+1 epochs, x0.1 after Epoch//2+1, "
                      "momentum reset)")
  p.add_argument("--step-size", type=int, default=None,
                 help="StepLR step_size for --schedule ddranking (default epochs // 2)")
  p.add_argument("--eval-every", type=int, default=0,
                 help="also test every N epochs and record the best (DD-Ranking reports the "
                      "best of every 10 epochs); 0 = final epoch only (default)")
  args = p.parse_args(argv)
  args.momentum, args.weight_decay = 0.9, 5e-4
  if args.step_size is None:
    args.step_size = max(1, args.epochs // 2)
  for name in ("epochs", "batch_size", "threads", "step_size"):
    if getattr(args, name) < 1:
      p.error(f"--{name.replace('_', '-')} must be >= 1")
  if args.eval_every < 0 or args.lr <= 0:
    p.error("--eval-every must be >= 0 and --lr > 0")
  return args


def settings_of(args) -> dict:
  s = dict(protocol="DD-Ranking 0.2.0 LabelRobustScoreHard (hard labels)"
           if args.schedule == "ddranking" else "DC/DSA evaluate_synset",
           schedule=args.schedule, epochs_param=args.epochs,
           epochs_trained=args.epochs if args.schedule == "ddranking" else args.epochs + 1,
           lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
           batch_size=args.batch_size, model="ConvNet-3 (width 128, instancenorm, avgpool)",
           augment="DSA S-mode " + "_".join(DSA_ORDER[args.schedule]), dsa_params=DSA_PARAMS,
           normalise=dict(mean=FMNIST_MEAN, std=FMNIST_STD), eval_every=args.eval_every,
           report="final-epoch test top-1 (%) on the full test split")
  if args.schedule == "ddranking":
    s.update(lr_schedule=f"StepLR(step_size={args.step_size}, gamma=0.1) per epoch, "
                         "momentum kept")
  else:
    s.update(lr_schedule=f"x0.1 after epoch {args.epochs // 2 + 1} (0-based), optimizer "
                         "rebuilt (momentum reset)")
  return s


def main(argv=None) -> None:
  args = parse_args(argv)
  torch.set_num_threads(args.threads)
  try:
    torch.set_num_interop_threads(args.threads)
  except RuntimeError:
    pass
  set_dir = os.path.abspath(args.set)
  set_name = os.path.basename(os.path.normpath(set_dir))
  settings = settings_of(args)

  record = dict(set=set_dir, per_seed={}, mean=None, std=None, settings=settings,
                torch=torch.__version__)
  if args.out and os.path.exists(args.out):
    with open(args.out) as f:
      old = json.load(f)
    if old.get("settings") != settings or old.get("set") != set_dir:
      sys.exit(f"error: {args.out} holds results for another set or other settings; "
               "choose another --out")
    record["per_seed"] = dict(old.get("per_seed", {}))
    for key in ("per_seed_best", "seconds"):
      if key in old:
        record[key] = dict(old[key])

  todo = [s for s in args.seeds if str(s) not in record["per_seed"]]
  for s in args.seeds:
    if str(s) in record["per_seed"]:
      print(f"seed {s}: top-1 {record['per_seed'][str(s)]:.2f} % (recorded in {args.out}; "
            "skipped)", flush=True)

  if todo:
    images, labels = load_compressed_set(set_dir)
    test_images, test_labels = load_test_split(args.data_dir)
    counts = np.bincount(labels.numpy(), minlength=NUM_CLASSES)
    print(f"{set_name}: {len(labels)} images {tuple(images.shape[1:])}, per class "
          f"{counts.tolist()}; test {len(test_labels)}; torch {torch.__version__}, "
          f"{args.threads} thread(s); {settings['lr_schedule']}", flush=True)
    for seed in todo:
      out = train_one_seed(seed, images, labels, test_images, test_labels, args)
      record["per_seed"][str(seed)] = out["final"]
      if out["best"] is not None:
        record.setdefault("per_seed_best", {})[str(seed)] = out["best"]
      record.setdefault("seconds", {})[str(seed)] = dict(train=round(out["train_s"], 2),
                                                         test=round(out["test_s"], 2))
      best = "" if out["best"] is None else f", best of every {args.eval_every} epochs " \
                                           f"{out['best']:.2f} %"
      print(f"seed {seed}: top-1 {out['final']:.2f} % (final epoch {out['epochs_trained']}"
            f"{best}; train {out['train_s']:.1f} s, test {out['test_s']:.1f} s)", flush=True)
      record["mean"], record["std"] = summarise(record["per_seed"])
      if args.out:
        write_json_atomic(args.out, record)

  record["mean"], record["std"] = summarise(record["per_seed"])
  n = len(record["per_seed"])
  print(f"torch {set_name}: top-1 {record['mean']:.2f} ± {record['std']:.2f} % "
        f"({n} seed{'s' if n != 1 else ''})", flush=True)
  if args.out:
    write_json_atomic(args.out, record)


if __name__ == "__main__":
  main()
