"""Evaluate a compressed set made anywhere, under the benchmark's protocols.

  python main.py --config=configs/evaluate.py --workdir=W --config.compressed=PATH \
      [--config.test_dataset=NAME] [--config.eval.protocol=hard] [--config.seeds=3]

PATH is any of (dcjax.data.given):
  - a class-folder set: dcjax's own `compressed/` (its manifest names the dataset, so
    test_dataset may be left out), or any folder of PNG/JPEG class subfolders;
  - a Hugging Face-layout parquet file or folder (`image` bytes + `label`), as the rethinkdc
    benchmark's released subsets;
  - an `.npz` with `images` uint8 [N, H, W, C], `labels` [N], optionally `soft_labels` [N, K]
    (probabilities or logits: train on them with --config.eval.labels=stored) and
    `class_names` [K];
  - an index file (`.npy`, `.txt`, `.json`) of training-split indices of --config.dataset.
test_dataset names the test split (any dataset name of the benchmark); it is required unless a
dcjax manifest or an index list's dataset gives it, and a set is never tested on itself.
Classes are matched to the test split's by name (folder names that are numbers are class
ids); images of another size are resized to the test resolution. Storage is the bytes of the
given files. Every other field is the benchmark's (configs/benchmark.py): protocol, seeds,
resume, results.json, the summary line. Settings that belong to the set (combine.k of a tiled
set, for tile_dsa / tile_crop) must be given as for the run that made it.
"""

import os
import sys

import ml_collections
from ml_collections import config_dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import benchmark  # noqa: E402


def get_config():
  c = benchmark.get_config()
  c.job = "evaluate"
  c.method = "evaluate"
  c.compressed = config_dict.placeholder(str)
  c.test_dataset = config_dict.placeholder(str)
  c.dataset = config_dict.placeholder(str)  # the training split of an index list
  # DD-Ranking's fairness scores (dcjax.benchmark.fairness): IOR against a matched random
  # subset (trained once and cached), HLR / LRS against the full training split's hard-label
  # accuracy, given as a number (full_top1, in %) or trained once when compute_full (hours on
  # a CPU for Fashion-MNIST's 60,000 images at 301 epochs).
  c.fairness = ml_collections.ConfigDict(dict(
      enabled=True, full_top1=config_dict.placeholder(float), compute_full=False,
      lrs_lambda=0.5, cache_dir=config_dict.placeholder(str)))  # None: $DCJAX_CACHE/baselines
  return c
