"""The `dcjax` console command and main.py's entry point (one code path for both).

  dcjax run --config=NAME|PATH[:ARG] --workdir=W [--config.x=v ...]
  dcjax evaluate PATH --test-dataset=NAME [--protocol=P] [--workdir=W] [--seeds=N] [--config.x=v ...]
  dcjax configs                                   # the shipped configs, one line each

NAME is a config shipped inside the package (`benchmark`, `pca`, `evaluate`, `cifar10`, `rded`,
`sre2l`, `imagenet_benchmark`, `imagenet_pca`, `imagenet_folder`; the repository's `configs/`
folder is the same files), PATH any config file; `:ARG` passes an argument to get_config (e.g.
`pca:full`). `python main.py --config=... --workdir=...` runs `run_main` directly.
"""

from __future__ import annotations

import ast
import importlib.util
import os
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
  if "Error whilst parsing config file" in text:  # get_config raised: its message, no traceback
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    if re.search(r"get_config\(\) takes 0 positional arguments", last):
      return "bad config argument: this config takes no ':ARG'"
    return "bad config argument: " + re.sub(r"^\w+(Error|Exception): ", "", last)
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


def run_main(argv: list[str] | None = None) -> None:
  """main.py: absl flags (--config, --workdir), one `error:` line and exit 2 on bad input."""
  if argv is not None:
    # config_flags reads the config file's name from sys.argv when it registers the
    # --config.<field> overrides, so the rewritten command line must be sys.argv too.
    sys.argv = list(argv)
  app.run(main, argv=argv, flags_parser=_parse_flags)


# ---- the console command ----

def config_dir() -> str:
  """The shipped configs: the installed package `dcjax.configs` (the repository's configs/,
  mapped there by pyproject.toml), else configs/ beside dcjax/ in a source tree."""
  try:
    spec = importlib.util.find_spec("dcjax.configs")
  except ModuleNotFoundError:
    spec = None
  if spec is not None and spec.submodule_search_locations:
    return list(spec.submodule_search_locations)[0]
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.join(root, "configs")


def shipped_configs() -> list[str]:
  return sorted(f[:-3] for f in os.listdir(config_dir())
                if f.endswith(".py") and not f.startswith("_"))


def config_summary(name: str) -> str:
  """The first sentence of a shipped config's docstring (read, not imported)."""
  with open(os.path.join(config_dir(), name + ".py"), encoding="utf-8") as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ""
  para = " ".join(doc.split("\n\n")[0].split())
  end = re.search(r"\.(?=\s+[A-Z(`]|$)", para)  # not "et al. 2025"
  return para[:end.start() + 1] if end else para


def config_path(spec: str) -> str:
  """A config NAME[:ARG] shipped with dcjax, or a PATH[:ARG], as config_flags takes it."""
  name, sep, arg = spec.partition(":")
  if not name.endswith(".py") and os.sep not in name and "/" not in name:
    if name not in shipped_configs():
      raise UserError(f"unknown config {name!r}; shipped: {', '.join(shipped_configs())} (or "
                      "give a config file's path)")
    name = os.path.join(config_dir(), name + ".py")
  return name + sep + arg


_USAGE = ("usage: dcjax run --config=NAME|PATH[:ARG] --workdir=W [--config.x=v ...]\n"
          "       dcjax evaluate PATH --test-dataset=NAME [--protocol=P] [--workdir=W] "
          "[--seeds=N] [--config.x=v ...]\n"
          "       dcjax report --out=DIR WORKDIR [...]\n"
          "       dcjax configs")


def _take(args: list[str], name: str) -> tuple[str | None, list[str]]:
  """Pops `--name=value` or `--name value` from args."""
  out, value, i = [], None, 0
  while i < len(args):
    a = args[i]
    if a == f"--{name}" and i + 1 < len(args):
      value, i = args[i + 1], i + 2
      continue
    if a.startswith(f"--{name}="):
      value = a.split("=", 1)[1]
    else:
      out.append(a)
    i += 1
  return value, out


def console_main(argv: list[str] | None = None) -> None:
  argv = sys.argv if argv is None else argv
  prog, args = "dcjax", list(argv[1:])
  try:
    if not args or args[0] in ("-h", "--help", "help"):
      print(_USAGE)
      sys.exit(0 if args else 2)
    command, args = args[0], args[1:]
    if command == "configs":
      names = shipped_configs()
      width = max(map(len, names))
      print("\n".join(f"{n:<{width}}  {config_summary(n)}" for n in names))
      return
    if command == "report":  # reads results.json files, writes a table and two plots
      out, paths = _take(args, "out")
      if not out or not paths or any(p.startswith("-") for p in paths):
        raise UserError("dcjax report takes --out=DIR and one or more workdirs (or "
                        "results.json files, or quoted globs)")
      from dcjax.benchmark import report
      markdown, n = report.write(paths, out)
      print(markdown, end="")
      print(f"{n} results -> {out}", file=sys.stderr)
      return
    if command == "run":
      spec, args = _take(args, "config")
      if not spec:
        raise UserError("dcjax run needs --config=NAME|PATH (dcjax configs lists the names)")
      return run_main([prog, f"--config={config_path(spec)}", *args])
    if command == "evaluate":
      paths = [a for a in args if not a.startswith("-")]
      args = [a for a in args if a.startswith("-")]
      if len(paths) != 1:
        raise UserError("dcjax evaluate takes one PATH: the compressed set to evaluate")
      test, args = _take(args, "test-dataset")
      protocol, args = _take(args, "protocol")
      seeds, args = _take(args, "seeds")
      workdir, args = _take(args, "workdir")
      path = paths[0]
      workdir = workdir or os.path.join(
          "workdirs", "evaluate-" + os.path.basename(os.path.normpath(path)).replace(".", "_"))
      extra = [f"--config.compressed={path}"]
      extra += [f"--config.test_dataset={test}"] if test else []
      extra += [f"--config.eval.protocol={protocol}"] if protocol else []
      extra += [f"--config.seeds={seeds}"] if seeds else []
      return run_main([prog, f"--config={config_path('evaluate')}", f"--workdir={workdir}",
                       *extra, *args])
    raise UserError(f"unknown command {command!r}\n{_USAGE}")
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
