"""SRe2L (Yin et al., NeurIPS 2023; method.md §1): a distillation baseline whose images are
synthesised from noise, not taken from real ones.

  python main.py --config=configs/sre2l.py --workdir=W [--config.ipc=10 --config.seeds=3]
  python main.py --config=configs/sre2l.py --workdir=W --config.eval.protocol=small_data
  python main.py --config=configs/sre2l.py:cifar10_shared --workdir=W

Squeeze: a ConvNet-3 with BatchNorm (config.sre2l.teacher; width 32, the benchmark's teacher
recipe) trained once on the whole training split and cached. Recover: `ipc` images per class
optimised from Gaussian noise, one image per class per batch, so that the teacher classifies
them as their class while their batch statistics at every BatchNorm layer match its running
statistics: SRe2L's CIFAR settings (1000 Adam iterations, lr 0.25 cosine, r_bn 0.01, first
layer x10, 4 px roll jitter) plus a random flip per batch, which its CIFAR script does not have
(--config.sre2l.flip=False; config.sre2l, documented in configs/benchmark.py).
Relabel: the soft protocol's teacher (config.teacher) labels every student batch, as for
every method; --config.eval.protocol=small_data trains on hard labels instead (method.md §2
finding 2: synthesised images collapse without soft labels). Recovered sets are cached per
teacher and settings, one file per batch: a killed run resumes, a second protocol reuses them.

For ImageNet, import SRe2L's squeeze model as torchvision weights
(--config.sre2l.teacher.weights=resnet18.pth --config.sre2l.teacher.model=resnet18) and set
--config.sre2l.classes_per_batch=100 (SRe2L's ImageNet batch).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import cifar10  # noqa: E402


def with_sre2l(c):
  """Turn a benchmark config into SRe2L, evaluated with the teacher's soft labels."""
  c.method = "sre2l"
  c.combine.k = 1
  c.eval.protocol = "soft"
  return c


def get_config(arg: str | None = None):
  """arg: '' (Fashion-MNIST), 'cifar10' (the binary batches, give data.dir) or
  'cifar10_shared' (the project's parquet copy)."""
  return with_sre2l(cifar10.benchmark_on(arg, "sre2l"))
