"""PCA — Prune, Combine, Augment (Xiao et al. 2025, method.md §3), hard labels.

  python main.py --config=configs/pca.py --workdir=W                # quick: ~5 min, 2 CPU cores
  python main.py --config=configs/pca.py:full --workdir=W           # the full setting, 3 seeds
  python main.py --config=configs/pca.py:full,ipc1 --workdir=W      # IPC 1 and its validated
                                                                    # P, kernel, view and k
  python main.py --config=configs/pca.py:full,cifar10_shared --workdir=W   # CIFAR-10, IPC 10
  python main.py --config=configs/pca.py:full,cifar10_shared,ipc1 --workdir=W  # CIFAR-10, IPC 1

`ipcN` sets --config.ipc=N with the setting VALIDATED holds for the largest validated IPC <= N
(IPC 1's below 10, IPC 10's from 10 on: IPC 50 is not validated); without it, IPC 10's. The
setting is the P step, the resampling kernel, the training view and k.

Prune: keep k*k*ipc images of every class chosen by the selection method `pca.prune` (herding
on the teacher's features; on CIFAR-10 at IPC 1 the paper's EL2N-easy). Combine: tile each k*k
consecutive same-class images, downscaled, into one image of the original size (k = 2 on
Fashion-MNIST, k = 3 on CIFAR-10 at IPC 10 and k = 4 at IPC 1). Augment: every view the student
trains on is one whole tile, resized to the image size, then the DSA augmentation (`tile_dsa`),
one view per stored image per epoch.

Chosen on a validation split held out of the Fashion-MNIST training split (500 images per
class, 3 seeds; experiments/pca_study.py, results/pca_study.md):
- P = herding: PCA scores 79.37 ± 0.07 % at IPC 10 with herding P, 78.17 ± 0.38 with random
  P, 72.41 ± 0.60 with EL2N-easy P; at IPC 1 (area kernel) 71.59 ± 0.87 with herding P,
  66.43 ± 0.15 CCS, 66.25 ± 0.41 EL2N-easy, 65.80 ± 0.15 random. Herding alone: 80.19 ± 0.08
  (IPC 10) and 67.40 ± 0.33 (IPC 1): PCA wins by 4.2 points at IPC 1 and is 0.8 short at IPC 10
  on that page (2026-12-03); rerun 2026-12-05/06 with one feature teacher for both, herding
  alone scores 77.03 ± 0.15 and PCA 81.15 ± 0.37 at IPC 10 (the difference is not explained).
  On test (5 seeds) PCA leads herding by 5.2 (IPC 1, tile_dsa_noflip) and 1.6 (IPC 10).
- Resampling (combine.resample down into a tile, eval.resample up to the training view), from
  the sharpness-gap part (random 4*IPC/class in 2x2 tiles): at IPC 10 `nearest` (78.17 ± 0.38
  against 69.92 ± 1.19 for the antialiased linear kernel, 74.34 lanczos3, 75.86 area, 77.89
  lanczos3 + sharpen 2; the only kernel with no train/test sharpness shift), at IPC 1 `area`
  (65.80 ± 0.15 against 63.35 nearest, 64.73 lanczos3, 61.72 linear).
- CIFAR-10 (same validation split size, 3 seeds): at IPC 10 P = herding (PCA at k = 2, cubic:
  45.59 ± 0.40 with herding P, 41.41 ± 0.34 EL2N-easy P, 40.65 ± 0.24 random P) with `lanczos3`:
  in the gap part (random 40/class in 2x2 tiles) lanczos3 41.30 ± 0.24 against cubic 40.46 ±
  0.24, linear 38.96 ± 0.59, area 41.27 ± 0.15 and nearest 41.49 ± 0.54 (+0.19, under the
  pooled std 0.42; random 10/class at full resolution: 26.73 ± 0.23), and PCA
  (herding, k = 3, tile_dsa) with lanczos3 48.71 ± 0.09 against cubic's 48.25 ± 0.15 (test, 5
  seeds: 49.10 ± 0.17 against 48.07 ± 0.18); at IPC 1
  P = EL2N-easy with `lanczos3` (PCA 31.13 ± 0.06 with EL2N-easy P, 25.88 ± 0.47 herding P,
  19.30 ± 0.13 random P; random P under nearest 19.24, cubic 19.00, area 18.82, linear
  18.62). Baselines there: IPC 1 EL2N-easy 21.28, herding 20.07, random 12.22.
- the augmentation `tile_dsa` under the small-data protocol (SGD, 301 epochs), chosen under the
  protocol's earlier variant: 69.3 % on validation against 26.8 % for the same tiles with
  unconstrained DSA (P+C) and 62.0 % for AdamW + RandomResizedCrop-in-a-tile (one seed each).
  Re-checked under the fixed protocol (2026-12-05, the study's k and augment parts): at IPC 1
  tile_dsa 70.85 ± 0.59 against the paper's RandomResizedCrop in a tile 63.61 ± 2.41 (scale
  0.08-1) and 63.89 ± 0.60 (0.5-1), at IPC 10 tile_dsa 81.15 ± 0.37 against 74.50 ± 0.04 and
  77.13 ± 0.10; tile_dsa without its view flip (`tile_dsa_noflip`) 71.34 ± 0.34 at IPC 1 and
  81.43 ± 0.29 against 81.15 ± 0.37 at IPC 10.
- k = 2 on Fashion-MNIST, 3-4 on CIFAR-10. Fashion-MNIST: at IPC 1 k = 3 scores 71.22 ± 0.21
  against 70.85 ± 0.59 (k = 1: 69.05 ± 0.36); at IPC 10 k = 1 / 2 / 3 score 76.75 ± 0.26 /
  81.15 ± 0.37 / 79.22 ± 0.24. CIFAR-10 at IPC 1 (EL2N-easy P, lanczos3): k = 1 / 2 / 3 / 4
  score 23.69 ± 0.30 / 31.13 ± 0.06 / 33.80 ± 0.13 / 34.54 ± 0.31 / 34.95 ± 1.02 (k = 4 and 5
  tried because the smaller k won at the edge); its views there: tile_crop 29.56 ± 0.25 (0.08-1) / 30.55 ± 0.18 (0.5-1),
  tile_dsa_noflip 29.95 ± 0.32 against tile_dsa 31.13 (measured at k = 2). k = 3 on CIFAR-10 at
  IPC 10 (herding P, cubic): k = 1 / 2 / 3 / 4 score 36.32 ± 0.25 / 45.59 ± 0.40 / 48.25 ± 0.15
  / 46.93 ± 0.04; its views at k = 3: tile_crop 44.80 ± 0.19 (0.08-1) / 46.51 ± 0.43 (0.5-1),
  tile_dsa_noflip 46.61 ± 0.26 against tile_dsa 48.25 ± 0.15 (CIFAR-10's objects, unlike
  Fashion-MNIST's shoes, gain from the view flip).
  The rule for all: a setting replaces the current one only where it is ahead by more than one
  pooled std on validation (3 seeds). On Fashion-MNIST IPC 1 k = 3 is not (+0.37, pooled std
  0.44): k = 2 stays; on CIFAR-10 it is, at IPC 1 (+2.67, pooled std 0.10) and at IPC 10
  (+2.66, pooled std 0.30), and at IPC 1 k = 4 is ahead of k = 3 (+0.74, pooled std 0.24)
  while k = 5 is not ahead of k = 4 (+0.41, pooled std 0.75): the IPC-1 search stops at k = 4;
  at IPC 10 k = 4 is behind k = 3 (-1.32): k = 3 stays.
  tile_dsa_noflip is at IPC 1 (+0.49, pooled std 0.48), not at IPC 10 (+0.28, 0.33): IPC 1 uses
  it, IPC 10 keeps tile_dsa.
  On ImageNet (configs/imagenet_pca.py) the paper's EL2N-easy, `tile_crop` under the hard
  protocol and the antialiased linear kernel stay.
Any selection method can be PCA's Prune: --config.pca.prune=random (or ccs, kcenter, ...).

Quick (the default): a 2-epoch teacher for herding's features (scores, for a score-based P,
from 1 ConvNet-3 trained 2 epochs), 1 student; it scores 80.60 % on the Fashion-MNIST test
split (seed 0, 2-core AMD EPYC, the `fused` CPU layers; 80.11 % with `impl=winograd`; with the
direct convolutions, `impl=custom`, 80.65 % on a 2-core Intel Xeon and 80.70 % on the AMD EPYC,
whose feature teacher rounds differently; 73.59 % with EL2N-easy P). Full (`:full`): the
benchmark's teacher (4 epochs) and scoring setting (2 models, 3 epochs) and 3 students.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import benchmark, cifar10  # noqa: E402


def with_pca(c, prune: str = "el2n_easy", k: int = 2):
  """Turn a benchmark config into PCA: `prune` (the paper's EL2N-easy by default) chooses
  k*k*ipc images per class, kxk combine, tile-constrained augmentation under the small-data
  (hard-label) protocol. EL2N-easy runs as the plain method with combine.k (results.json says
  el2n_easy); any other P as method 'pca' with pca.prune."""
  if prune == "el2n_easy":
    c.method = "el2n_easy"
  else:
    c.method, c.pca.prune = "pca", prune
  c.combine.k = k
  c.eval.protocol = "small_data"
  c.eval.augment = "tile_dsa"
  return c


# The setting chosen on the validation split (the docstring, results/pca_study.md) per dataset
# and IPC: (P, the kernel down into a tile and up to the training view, the training view, k).
VALIDATED = {
    ("fmnist", 1): ("herding", "area", "tile_dsa_noflip", 2),
    ("fmnist", 10): ("herding", "nearest", "tile_dsa", 2),
    ("cifar10", 1): ("el2n_easy", "lanczos3", "tile_dsa", 4),
    ("cifar10", 10): ("herding", "lanczos3", "tile_dsa", 3),
}


def validated(dataset: str, ipc: int) -> tuple[str, str, str, int]:
  """VALIDATED's setting for `ipc`: that of the largest validated IPC <= ipc (the smallest's
  below it)."""
  ipcs = sorted(i for d, i in VALIDATED if d == dataset)
  return VALIDATED[dataset, max([i for i in ipcs if i <= ipc] or ipcs[:1])]


def get_config(arg: str | None = None):
  """arg: 'quick' (default) or 'full', optionally with ',cifar10' / ',cifar10_shared' (e.g.
  'full,cifar10_shared'): the same PCA on CIFAR-10 (configs/cifar10.py's sources), and with
  ',ipcN': IPC N with its validated P, kernel, view and k (default: IPC 10's)."""
  parts = [p for p in (arg or "").split(",") if p]
  size = [p for p in parts if p in ("quick", "full")]
  data = [p for p in parts if p in ("cifar10", "cifar10_shared")]
  ipc = [p for p in parts if p.startswith("ipc") and p[3:].isdigit() and int(p[3:]) > 0]
  if (len(size) > 1 or len(data) > 1 or len(ipc) > 1
      or len(size) + len(data) + len(ipc) != len(parts)):
    raise ValueError(f"configs/pca.py takes ':quick' (default) or ':full', optionally with "
                     f"',cifar10' or ',cifar10_shared' and ',ipcN' (N >= 1), got {arg!r}")
  arg = size[0] if size else None
  prune, kernel, view, k = validated("cifar10" if data else "fmnist",
                                     int(ipc[0][3:]) if ipc else 10)
  c = with_pca(benchmark.get_config(), prune, k)
  c.eval.augment = view
  if ipc:
    c.ipc = int(ipc[0][3:])
  if data:
    c = cifar10.with_cifar10(c, "shared" if data[0] == "cifar10_shared" else "binary")
  c.combine.resample = c.eval.resample = kernel
  if arg == "full":
    c.seeds = 3
  else:  # a few minutes on 2 CPU cores: shorter scoring, and a shorter teacher for herding
    c.teacher.epochs = 2
    c.scores.num_models = 1
    c.scores.epochs = 2
  return c
