"""dcjax entry point: python main.py --config=configs/benchmark.py --workdir=DIR [--config.x=v]."""

import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from dcjax import benchmark
from dcjax.benchmark import config_args
from dcjax.runners import distributed
from dcjax.errors import UserError

JOBS = {"benchmark": benchmark.run, "evaluate": benchmark.run}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config()).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the run's outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def _one_line(e: BaseException) -> str:
  """An exception's message on one line (ml_collections nests a repr with a 'Did you mean')."""
  text = str(e)
  while len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
    text = text[1:-1].encode().decode("unicode_escape")
  if "Failed loading config file" in text:  # say which file and why, not the flag's name
    lines = [line.strip() for line in text.splitlines()]
    return f"cannot load the config file: {lines[-1]}"
  text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
  m = re.fullmatch(r"'?(\w+)'?(?:; Did you mean \"(\w+)\" instead of \"\w+\"\?)?", text)
  if m:  # a misspelt field
    return f"unknown config field {m[1]!r}" + (f"; did you mean {m[2]!r}?" if m[2] else "")
  return text


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing (and the config file's loading and overrides) with one `error:` line
  and exit 2 for a misspelt field, a bad value or a missing config file, not a traceback."""
  try:
    rest = flags.FLAGS(argv)
    _ = _CONFIG.value.job  # raises here if the config file failed to load
    return rest
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    bad = [a for a in argv[1:] if a.startswith("--config")]
    where = f" (in {' '.join(bad)})" if bad else ""
    print(f"error: {_one_line(e)}{where}", file=sys.stderr)
    sys.exit(2)


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
  app.run(main, flags_parser=_parse_flags)
