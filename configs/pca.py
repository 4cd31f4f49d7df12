"""PCA — Prune, Combine, Augment (Xiao et al. 2025, method.md §3), hard labels, no teacher.

  python main.py --config=configs/pca.py --workdir=W [--config.ipc=10 --config.seeds=3]

Prune: score the whole training split (EL2N averaged over the scoring models, config.scores)
and keep the k*k*ipc easiest images of every class. Combine: tile each k*k consecutive
same-class images, downscaled, into one image of the original size (k = 2). Augment: train the
student with the hard-label protocol, the random crop constrained to one tile (tile_crop), one
view per stored image per epoch.

Not public in the paper, chosen here and open to change by config: the crop scale inside a
tile (RandomResizedCrop's 0.08-1 relative to the tile), no mixing, and the hard protocol's
AdamW / 300-epoch schedule. On a 2-core CPU (Fashion-MNIST, IPC 10) scoring with the defaults
(2 narrow ConvNet-3 models, 3 epochs) takes about 10 minutes once (the score file is cached and
reused), then each student about 3.5 minutes. These defaults are untuned: see BENCHMARKS.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import benchmark  # noqa: E402


def with_pca(c):
  """Turn a benchmark config into PCA: EL2N-easy prune, 2x2 combine, tile-constrained crop."""
  c.method = "el2n_easy"
  c.combine.k = 2
  c.eval.protocol = "hard"
  c.eval.augment = "tile_crop"
  return c


def get_config():
  return with_pca(benchmark.get_config())
