"""The benchmark runner: the only code that reads a config. `run(config, workdir)` opens the
splits, computes scores / the teacher when the method needs them, compresses (select or distill,
then combine), stores, trains fresh students and tests them, and writes results.json."""

from dcjax.benchmark.config_args import (IMAGENET_MEAN, IMAGENET_STD, NORMALISATION,
                                         normalisation)
from dcjax.benchmark.runner import COMPRESSED, open_splits, run, summary_line

__all__ = ["COMPRESSED", "IMAGENET_MEAN", "IMAGENET_STD", "NORMALISATION", "normalisation",
           "open_splits", "run", "summary_line"]
