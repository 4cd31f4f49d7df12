"""Merge benchmark workdirs into one table and two plots.

  python experiments/report.py --out DIR WORKDIR_OR_GLOB [...]

Finds every results.json under the given workdirs (recursively; quote globs to let this script
expand them) and writes DIR/results.csv, DIR/results.md, DIR/acc_vs_ipc.png and
DIR/acc_vs_storage.png, then prints the Markdown table. The same as `dcjax report` (an installed
dcjax has no experiments/); see `dcjax.benchmark.report.write`.
"""

from __future__ import annotations

import argparse
import os
import sys

# Runs from a plain checkout too (without `pip install -e .`): the repo root holds `dcjax`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dcjax.benchmark import report  # noqa: E402
from dcjax.errors import UserError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="directory for the table and plots")
  parser.add_argument("workdirs", nargs="+", help="run workdirs, results.json files or globs")
  args = parser.parse_args(argv)
  try:
    markdown, n = report.write(args.workdirs, args.out)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(markdown, end="")
  print(f"{n} results -> {args.out}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
