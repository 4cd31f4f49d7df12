"""A grid's records and caches outlive the machine that ran it (issue #15 item 4).

Run roots and their caches do not survive a machine; results/ (committed) does. This module
copies into it what a new machine needs to go on exactly where the last one stopped, and puts
it back:
  - `archive`: each finished cell's results.json (paths made portable), all a report row and a
    skipped cell need;
  - `archive_unfinished`: of each unfinished cell its config, finished students and the
    manifest of the set they trained on (small JSON), so a stop loses the running student only;
  - `archive_caches` / `restore_caches`: the finished teachers, score files and SRe2L sets the
    cells used (a teacher retrained on another CPU kind is another teacher: BENCHMARKS.md);
  - `restore`: the archived cells into a new root, where it has nothing of them yet.
Used by experiments/fmnist_grid.py (the grid), grid_queue.py (`record`, `restore`),
sre2l_recover.py and pca_study.py (their own cells, through `keep`).
"""

from __future__ import annotations

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dcjax.benchmark import report  # noqa: E402


def grid_and_variant(path: str) -> tuple[str, str]:
  """(grid, labels directory) of a cell's path: .../<grid>/<labels>/<cell>/..., grid 'main' or
  'ablation'; ('main', '') for a path in neither."""
  parts = os.path.normpath(path).split(os.sep)
  for grid in ("main", "ablation"):
    if grid in parts:
      return grid, parts[parts.index(grid) + 1]
  return "main", ""


# The caches a grid's cells fill and share, each entry final once written: the soft-label and
# feature teachers (and SRe2L's BatchNorm teachers), the score files, SRe2L's recovered sets.
CACHE_KINDS = ("teachers", "scores", "sre2l")


def cache_root(root: str, environ: dict | None = None) -> str:
  """The grid's own teacher / score / SRe2L-set caches: $DCJAX_CACHE when set, else
  ROOT/.dcjax_cache. A teacher trained on another CPU kind is another teacher (other float
  rounding, so other herding and RDED selections: BENCHMARKS.md), so `archive_caches` keeps
  exactly the entries the cells used beside their records, and `restore_caches` gives the next
  machine the same ones."""
  env = os.environ if environ is None else environ
  return env.get("DCJAX_CACHE") or os.path.join(os.path.abspath(root), ".dcjax_cache")


def _finished_cache_entries(cache: str) -> list[str]:
  """The finished entries under a cache directory, relative to it: teacher directories with
  their teacher.json, score files (.npz), recovered sets with their done.json."""
  done = {"teachers": "teacher.json", "sre2l": "done.json"}
  out = []
  for kind in CACHE_KINDS:
    path = os.path.join(cache, kind)
    for name in sorted(os.listdir(path)) if os.path.isdir(path) else ():
      if name.startswith("."):
        continue
      if (name.endswith(".npz") and os.path.isfile(os.path.join(path, name)) if kind == "scores"
          else os.path.isfile(os.path.join(path, name, done[kind]))):
        out.append(os.path.join(kind, name))
  return out


def _copy_cache_entry(src: str, dest: str) -> None:
  """Copy one entry (a file, or a directory without its lock and training progress) through a
  temporary name, so a reader never sees half of it."""
  tmp = dest + ".copying"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(os.path.dirname(dest), exist_ok=True)
  if os.path.isdir(src):
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(".*", "progress"))
  else:
    shutil.copyfile(src, tmp)
  os.replace(tmp, dest)


def archive_caches(cache: str, to: str, already: str | None = None) -> list[str]:
  """Copy every finished cache entry under `cache` that `to` lacks (entries never change once
  finished), and `already` too where given (a GPU run sends back only what it made). Returns
  the entries copied, relative to the cache."""
  copied = []
  for rel in _finished_cache_entries(cache):
    if not any(os.path.exists(os.path.join(d, rel)) for d in (to, already) if d):
      _copy_cache_entry(os.path.join(cache, rel), os.path.join(to, rel))
      copied.append(rel)
  return copied


def restore_caches(archived: str, cache: str) -> list[str]:
  """The archived cache entries copied into `cache` where it lacks them."""
  return archive_caches(archived, cache) if os.path.isdir(archived) else []


def grid_cell(rel: str) -> bool:
  """A grid cell's results.json, relative to the root: [cifar10/]<grid>/<labels>/<cell>/."""
  return bool(grid_and_variant(rel)[1]) and os.path.dirname(rel).count(os.sep) in (2, 3)


def archive(root: str, to: str, keep=grid_cell, cache: str | None = None) -> list[str]:
  """Copy every finished cell's results.json (the paths relative to root that `keep` accepts;
  results.json is a workdir's last file; through report.portable_record, so it names no
  directory of this machine) to the same path under `to`: all a report row needs and all `run`
  needs to skip the cell, so the record outlives the machine (run roots do not).
  The rest of a workdir (checkpoints, the set) stays behind, and what `archive_unfinished` kept
  of the cell before it finished is dropped. Paths into the cells' cache (`cache`, default
  `cache_root(root)`) are written as $DCJAX_CACHE/... Returns the cells copied."""
  cache = cache or cache_root(root)
  copied = []
  for path in report._find(root):  # pylint: disable=protected-access
    rel = os.path.relpath(path, root)
    if keep(rel):
      dest = os.path.dirname(os.path.join(to, rel))
      os.makedirs(dest, exist_ok=True)
      with open(path, encoding="utf-8") as f:
        text = f.read()
      # The record is committed: its dataset and split names lose this machine's directories
      # and the cache paths lose its home (report.portable_record); `run` reads only its
      # students, a report only names them.
      with open(os.path.join(to, rel), "w", encoding="utf-8") as f:
        f.write(report.portable_record(text, {cache: "$DCJAX_CACHE"}))
      _drop_unfinished(dest)
      copied.append(os.path.dirname(rel))
  return copied


# What an unfinished cell keeps across machines: its config, its finished students and the
# manifest of the set they trained on, all small JSON. On another machine the runner recomputes
# the set and keeps those students only if it comes out the same (dcjax.benchmark.workdir);
# checkpoints (the running student) and the set's PNGs stay behind.
_UNFINISHED = ("config.json", os.path.join("compressed", "manifest.json"))


def finished_students(workdir: str) -> list[str]:
  """The finished students' files (runs/seed_N.json) of a workdir, sorted."""
  runs = os.path.join(workdir, "runs")
  if not os.path.isdir(runs):
    return []
  return sorted(f for f in os.listdir(runs) if f.startswith("seed_") and f.endswith(".json"))


def _drop_unfinished(cell: str) -> None:
  for name in _UNFINISHED:
    if os.path.exists(os.path.join(cell, name)):
      os.remove(os.path.join(cell, name))
  shutil.rmtree(os.path.join(cell, "runs"), ignore_errors=True)
  if os.path.isdir(os.path.join(cell, "compressed")) and not os.listdir(
      os.path.join(cell, "compressed")):
    os.rmdir(os.path.join(cell, "compressed"))


def archive_unfinished(root: str, to: str, keep=grid_cell) -> list[tuple[str, int]]:
  """Copy what an unfinished cell under root has finished (`_UNFINISHED` and runs/seed_N.json:
  its finished students) to the same path under `to`, replacing what an earlier call kept
  there, so a machine that stops mid-cell loses at most its running student. Cells `to` holds
  finished are left alone. Returns (cell, finished students) per cell copied."""
  out = []
  for dirpath, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # skip runs being replaced
    rel = os.path.relpath(dirpath, root)
    if ("results.json" in files or "config.json" not in files
        or not keep(os.path.join(rel, "results.json"))):
      continue
    students = finished_students(dirpath)
    if not students or not os.path.isfile(os.path.join(dirpath, _UNFINISHED[1])):
      continue
    dest = os.path.join(to, rel)
    if os.path.exists(os.path.join(dest, "results.json")):
      continue
    _drop_unfinished(dest)
    for name in _UNFINISHED + tuple(os.path.join("runs", f) for f in students):
      os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
      shutil.copyfile(os.path.join(dirpath, name), os.path.join(dest, name))
    out.append((rel, len(students)))
  return out


def restore(archived: str, root: str) -> list[str]:
  """Copy the archived cells (`archive`, `archive_unfinished`) into root where root has nothing
  of them yet: a finished cell's results.json, an unfinished one's files whole. A cell root
  has started is left to root (its files are as new as the archive's or newer). Returns the
  cells copied."""
  copied = []
  if not os.path.isdir(archived):
    return copied
  for dirpath, dirs, files in os.walk(archived):
    dirs.sort()
    if "results.json" not in files and "config.json" not in files:
      continue
    dirs[:] = []  # a cell's runs/ and compressed/ are copied with it
    rel = os.path.relpath(dirpath, archived)
    dest = os.path.join(root, rel)
    if os.path.exists(os.path.join(dest, "results.json")) or os.path.exists(
        os.path.join(dest, "config.json")):
      continue
    shutil.copytree(dirpath, dest, dirs_exist_ok=True)
    copied.append(rel)
  return copied


def archive_command(parser, root: str, to: str, keep=grid_cell, what: str = "grid",
                    archive_fn=None) -> int:
  """The `archive` subcommand: one error line for a root that is not a directory.
  `archive_fn(root, to)` replaces `archive(root, to, keep)` (the PCA study's adds a set)."""
  if not os.path.isdir(root):
    parser.error(f"--root {root} is not a directory of {what} cells")
  copied = archive_fn(root, to) if archive_fn else archive(root, to, keep)
  print(f"{len(copied)} finished cell(s) archived in {to}")
  if archive_fn is None:
    print(unfinished_line(archive_unfinished(root, to, keep), to))
  return 0


def unfinished_line(kept: list[tuple[str, int]], to: str) -> str:
  return (f"{len(kept)} unfinished cell(s) with {sum(n for _, n in kept)} finished student(s) "
          f"archived in {to}")
