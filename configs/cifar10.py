"""The benchmark on CIFAR-10: ConvNet-3 (width 128, instance norm) under the small-data
protocol, CIFAR-10's normalisation (the DC/DSA code's mean / std).

  python main.py --config=configs/cifar10.py --workdir=W --config.data.dir=<dir>/cifar-10-batches-bin
  python main.py --config=configs/cifar10.py:shared --workdir=W    # the project's parquet copy
  python main.py --config=configs/cifar10.py --workdir=W --config.dataset=tfds:cifar10

Sources: `cifar10` reads the standard binary version (`cifar-10-binary.tar.gz` from
https://www.cs.toronto.edu/~kriz/cifar.html, extracted: the `cifar-10-batches-bin` folder; the
pickled "python version" is never read). `:shared` reads the Hugging Face-layout parquet copy
in `../shared/data/cifar10-jpeg` next to the repository (a JPEG-quality-75 copy of CIFAR-10, so
published CIFAR-10 numbers are approximate anchors for it). `tfds:cifar10` reads a prepared
TFDS copy. Every source gets the same normalisation and classes.

The teacher and the scoring models are the benchmark's narrow ConvNet-3 (width 32, AdamW), the
teacher trained 10 epochs instead of Fashion-MNIST's 4 (sized for a 2-core CPU; its accuracy
is recorded in BENCHMARKS.md when it is trained).
"""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
from configs import benchmark  # noqa: E402
from dcjax.benchmark.config_args import CIFAR10_MEAN, CIFAR10_STD  # noqa: E402,F401  (DC/DSA's)
# The project's shared parquet copy, relative to the repository (not installed with dcjax).
SHARED_PARQUET = os.path.join(os.path.dirname(_ROOT), "shared", "data", "cifar10-jpeg")


def benchmark_on(arg: str | None, config_name: str):
  """A benchmark config for a config file's argument: '' (Fashion-MNIST), 'cifar10' (the binary
  batches, give data.dir) or 'cifar10_shared' (the project's parquet copy)."""
  if arg not in (None, "", "cifar10", "cifar10_shared"):
    raise ValueError(f"configs/{config_name}.py takes '', 'cifar10' or 'cifar10_shared', "
                     f"got {arg!r}")
  c = benchmark.get_config()
  if arg:
    c = with_cifar10(c, "shared" if arg == "cifar10_shared" else "binary")
  return c


def with_cifar10(c, source: str | None = None):
  """Point a benchmark config at CIFAR-10: source None / 'binary' (dataset cifar10, give
  data.dir) or 'shared' (the project's parquet copy)."""
  if source not in (None, "", "binary", "shared"):
    raise ValueError(f"CIFAR-10 source must be 'binary' (default) or 'shared', got {source!r}")
  c.dataset = f"parquet:{SHARED_PARQUET}" if source == "shared" else "cifar10"
  c.data.mean = CIFAR10_MEAN
  c.data.std = CIFAR10_STD
  c.teacher.epochs = 10
  c.sre2l.teacher.epochs = 10
  return c


def get_config(arg: str | None = None):
  return with_cifar10(benchmark.get_config(), arg)
