"""ImageNet-1K from a JPEG folder (the usual `train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG` layout).

  python main.py --config=configs/imagenet_folder.py:/data/imagenet --workdir=W --config.ipc=10
  python main.py --config=configs/imagenet_folder.py:/data/imagenet,pca --workdir=W   # PCA

The same protocol as configs/imagenet_benchmark.py (ResNet-18, 224 px, test resize 256 / centre
crop 224), reading the folder instead of TFDS: `val/` must be sorted into class subfolders
(the standard `valprep.sh` layout). The decoded images are cached in `<path>/.dcjax-cache`
(override with --config.data.cache_dir): the test split at 224 px and, for score-based
methods and PCA, the training split at the scoring resolution (64 px), so the JPEGs are decoded
once. With `,pca` the PCA settings of configs/imagenet_pca.py apply.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import imagenet_benchmark, imagenet_pca  # noqa: E402


def get_config(arg: str | None = None):
  if not arg:
    raise ValueError("give the ImageNet folder: --config=configs/imagenet_folder.py:/data/imagenet")
  path, _, variant = arg.partition(",")
  if variant not in ("", "pca"):
    raise ValueError(f"unknown variant {variant!r} (use ',pca' or nothing)")
  c = (imagenet_pca if variant == "pca" else imagenet_benchmark).get_config()
  c.dataset = f"folder:{path}"
  c.data.cache_dir = os.path.join(path, ".dcjax-cache")
  return c
