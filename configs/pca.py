"""PCA — Prune, Combine, Augment (Xiao et al. 2025, method.md §3), hard labels, no teacher.

  python main.py --config=configs/pca.py --workdir=W                # quick: ~4 min, 2 CPU cores
  python main.py --config=configs/pca.py:full --workdir=W           # the full setting, 3 seeds

Prune: score the whole training split (EL2N averaged over the scoring models, config.scores)
and keep the k*k*ipc easiest images of every class. Combine: tile each k*k consecutive
same-class images, downscaled, into one image of the original size (k = 2). Augment: every
view the student trains on lies inside one tile, one view per stored image per epoch.

Not public in the paper, chosen here on a validation split held out of the Fashion-MNIST
training split (500 images per class, IPC 10; BENCHMARKS.md "PCA on a validation split"):
- the augmentation: `tile_dsa` (take one whole tile, resized to the image size, then the DSA
  augmentation of the small-data protocol) under the small-data protocol (SGD, 300 epochs),
  69.3 % on validation against 26.8 % for the same tiles with unconstrained DSA (P+C) and
  62.0 % for the hard protocol's AdamW + RandomResizedCrop-in-a-tile (0.08-1 of a tile, the
  previous default); one seed each. On ImageNet (configs/imagenet_pca.py) the hard protocol with `tile_crop`
  stays, as in the paper.
- no mixing.
These were chosen under the earlier small-data variant (DSA on pixels, 300 epochs, step_half);
since the protocol fix (2026-12-03) the quick job scored 70.81 % on test with the linear kernel
(68.51 % before the fix) and 73.59 % with the kernel chosen below; tile_dsa has not been
re-validated under the fixed protocol yet (the study's augment part, issue #14).
Resampling (combine.resample down into a tile, eval.resample up to the training view), chosen
by the PCA study's sharpness-gap part on the validation split (experiments/pca_study.py,
results/pca_study.md; 500 training images per class held out, IPC 10, random 40/class in 2x2
tiles, 3 seeds): Fashion-MNIST `nearest` (78.17 ± 0.38 against 69.92 ± 1.19 for the
antialiased linear kernel, 74.34 lanczos3, 75.86 area, 77.89 lanczos3 + sharpen 2; nearest is
the only kernel with no train/test sharpness shift: 78.07 on the resampled split), CIFAR-10
`cubic` (40.65 ± 0.24 against 39.13 ± 0.45 linear; the study's other CIFAR-10 kernels had not
finished when this was set). ImageNet (configs/imagenet_pca.py) keeps the antialiased linear
kernel. Any selection
method can be PCA's Prune: --config.method=pca --config.pca.prune=herding (or random, ccs, ...).

Quick (the default): scores from 1 ConvNet-3 (width 32) trained 2 epochs, 1 student. Full
(`:full`): the benchmark's scoring setting (2 models, 3 epochs; the score file the
Fashion-MNIST grid uses) and 3 students. On Fashion-MNIST at 28 px a 2x2 tile is 14 px, and
PCA has not beaten EL2N-easy selection alone (P) there: see BENCHMARKS.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import benchmark, cifar10  # noqa: E402


def with_pca(c):
  """Turn a benchmark config into PCA: EL2N-easy prune, 2x2 combine, tile-constrained
  augmentation under the small-data (hard-label) protocol."""
  c.method = "el2n_easy"
  c.combine.k = 2
  c.eval.protocol = "small_data"
  c.eval.augment = "tile_dsa"
  return c


def get_config(arg: str | None = None):
  """arg: 'quick' (default) or 'full', optionally with ',cifar10' / ',cifar10_shared' (e.g.
  'full,cifar10_shared'): the same PCA on CIFAR-10 (configs/cifar10.py's sources)."""
  parts = [p for p in (arg or "").split(",") if p]
  size = [p for p in parts if p in ("quick", "full")]
  data = [p for p in parts if p in ("cifar10", "cifar10_shared")]
  if len(size) > 1 or len(data) > 1 or len(size) + len(data) != len(parts):
    raise ValueError(f"configs/pca.py takes ':quick' (default) or ':full', optionally with "
                     f"',cifar10' or ',cifar10_shared', got {arg!r}")
  arg = size[0] if size else None
  c = with_pca(benchmark.get_config())
  kernel = "nearest"  # chosen on the validation split: see the docstring
  if data:
    c = cifar10.with_cifar10(c, "shared" if data[0] == "cifar10_shared" else "binary")
    kernel = "cubic"
  c.combine.resample = c.eval.resample = kernel
  if arg == "full":
    c.seeds = 3
  else:
    c.scores.num_models = 1
    c.scores.epochs = 2
  return c
