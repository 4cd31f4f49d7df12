"""dcjax entry point: python main.py --config=configs/benchmark.py --workdir=DIR [--config.x=v]."""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from dcjax import benchmark
from dcjax.benchmark import config_args
from dcjax.runners import distributed
from dcjax.errors import UserError

JOBS = {"benchmark": benchmark.run}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config()).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the run's outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # keep JAX's backend-probing INFO lines out of the way
  config = _CONFIG.value
  try:
    # Before any JAX computation; a no-op for one process.
    distributed.initialize(**config_args.distributed_args(config))
    if config.job not in JOBS:
      raise UserError(f"unknown job {config.job!r}; known: {', '.join(JOBS)}")
    JOBS[config.job](config, _WORKDIR.value)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:  # a diverged run: say where, keep the checkpoints
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
