"""The PCA study of issue #14, resumable, and its report.

  python experiments/pca_study.py run --root RUNS [--datasets fmnist,cifar10] [--ipcs 10,1]
      [--parts gap,prune,k,augment,ladder] [--kernel K] [--sharpen S] [--prune M] [--seeds 3]
      [--ks 1,2,3] [--view-k 2] [--split validation|test] [--only NAME,...] [--dry-run]
  python experiments/pca_study.py report --root RUNS --out results
  python experiments/pca_study.py archive --root RUNS [--to results/pca_study_runs]

Every cell is one `main.py` run of configs/pca.py:full (CIFAR-10: :full,cifar10_shared) with
overrides, into RUNS/<split>/<dataset>/<part>/<cell>_ipc<ipc>/ (experiments/fmnist_grid.py's
runner: a finished cell is skipped, an interrupted one resumes, rerunning continues). Settings
are chosen on `--split validation` (500 training images per class held out, 3 seeds) and
reported once on `--split test` (5 seeds). Run roots live outside the repository and do not
outlive a machine: `archive` copies each finished cell's results.json into
results/pca_study_runs/ (committed), from which `report --root results/pca_study_runs` rebuilds
the tables and `cp -rn results/pca_study_runs/. RUNS/` lets a new machine skip those cells.

Parts (IPC counts stored images; a k x k image stores k^2 sources):
  gap      the sharpness gap of Combine: random IPC/class at full resolution against random
           4*IPC/class stored as 2x2 tiles (14 px on Fashion-MNIST, 16 px on CIFAR-10) and
           trained on one whole tile per view (tile_dsa), for each resampling kernel (the same
           kernel down into the tile and up to the view; and area down / lanczos3 up) and the
           per-view sharpness augmentation; every tiled cell is also tested on the split passed
           through the same down/up resampling (data.test_resample_size): the difference is the
           train/test shift left to close.
  prune    each selection method alone (k = 1, the protocol's DSA) and as PCA's P step (k = 2,
           tile_dsa) under --kernel / --sharpen.
  k        PCA (--prune) at k = 1, 2, 3.
  augment  PCA's view: the paper's RandomResizedCrop inside a tile (tile_crop, scale 0.08-1 and
           0.5-1) and tile_dsa without its view flip (tile_dsa_noflip: DSA's own flip only)
           against tile_dsa, which is the k part's k = 2 cell (run once, reported in both
           tables); `--view-k K` runs them at k = K (where the validated k moved from 2).
  ladder   Fashion-MNIST upsampled to 56 px, where a 2x2 tile holds a whole 28 px image, so
           Combine loses nothing by construction: random, P (--prune) and PCA (--prune,
           k = 2). PCA must beat P here or the pipeline has a bug. Scores are computed at 28 px
           (the same images; scores.image_size) so the ranking is the other parts' ranking.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT_DIR)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fmnist_grid  # noqa: E402
import grid_archive  # noqa: E402

from dcjax import resample  # noqa: E402

DATASETS = {  # configs/pca.py argument, image size
    "fmnist": ("full", 28),
    "cifar10": ("full,cifar10_shared", 32),
}
PARTS = ("gap", "prune", "k", "augment", "ladder")
PRUNES = ("random", "el2n_easy", "el2n_hard", "ccs", "herding", "kcenter")
VALIDATION_PER_CLASS = 500
_BASELINE = {"combine.k": 1, "eval.augment": "dsa"}  # a selection method alone


def _tiled(k: int, size: int, kernel: str, sharpen: float = 0.0, **more) -> dict:
  """Overrides of a k x k PCA cell whose students (k > 1) are also tested on the resampled
  split."""
  out = {"combine.k": k, "eval.augment": "tile_dsa", "combine.resample": kernel,
         "eval.resample": kernel}
  if k > 1:  # at k = 1 nothing is resampled
    out["data.test_resample_size"] = size // k
  if sharpen:
    out["eval.sharpen"] = sharpen
  return out | more


def part_cells(part: str, dataset: str, args) -> list[tuple[str, dict]]:
  """(cell name, overrides) of one part on one dataset."""
  size = DATASETS[dataset][1]
  kernel, sharpen, prune = args.kernel, args.sharpen, args.prune
  chosen = f"{kernel}" + (f" sharpen {sharpen:g}" if sharpen else "")
  if part == "gap":
    cells = [("random full-res", {"method": "random", **_BASELINE})]
    cells += [(f"random 2x2 {m}", {"method": "random", **_tiled(2, size, m)})
              for m in resample.METHODS]
    cells.append(("random 2x2 area-lanczos3", {"method": "random",
                                               **_tiled(2, size, "lanczos3",
                                                        **{"combine.resample": "area"})}))
    cells += [(f"random 2x2 {m} sharpen {s:g}", {"method": "random", **_tiled(2, size, m, s)})
              for m in ("linear", "lanczos3") for s in (1.0, 2.0)]
    return cells
  if part == "prune":
    cells = []
    for m in PRUNES:
      cells.append((m, {"method": m, **_BASELINE}))
      cells.append((f"PCA {m} {chosen}", {"method": "pca", "pca.prune": m,
                                          **_tiled(2, size, kernel, sharpen)}))
    return cells
  if part == "k":
    return [(f"PCA {prune} k={k} {chosen}", {"method": "pca", "pca.prune": prune,
                                             **_tiled(k, size, kernel, sharpen)})
            for k in fmnist_grid._ints(args.ks)]  # pylint: disable=protected-access
  if part == "augment":  # its tile_dsa row is the k part's cell at the same k (the same run)
    k = args.view_k
    base = {"method": "pca", "pca.prune": prune, **_tiled(k, size, kernel, sharpen)}
    at = "" if k == 2 else f"k={k} "  # k = 2 keeps the names of the cells that ran first
    return [
        (f"PCA {prune} {at}tile_crop {lo:g}-1 {chosen}",
         base | {"eval.augment": "tile_crop", "eval.crop_scale": f"({lo},1.0)"})
        for lo in (0.08, 0.5)] + [
        (f"PCA {prune} {at}tile_dsa_noflip {chosen}",
         base | {"eval.augment": "tile_dsa_noflip"})]
  if part == "ladder":
    if dataset != "fmnist":
      return []
    at56 = {"data.image_size": 56, "scores.image_size": 28}
    return [("random 56px", {"method": "random", **_BASELINE, **at56}),
            (f"P {prune} 56px", {"method": prune, **_BASELINE, **at56}),
            (f"PCA {prune} 56px {chosen}", {"method": "pca", "pca.prune": prune,
                                            **_tiled(2, 56, kernel, sharpen), **at56})]
  raise ValueError(part)


def reuse_identical(todo: list[dict], every: list[dict], seeds: int) -> list[str]:
  """Cells of `todo` whose main.py command (all but --workdir) equals that of a finished cell
  of `every` (e.g. the k part's k = 2 cell and the prune part's PCA cell at the same P and
  kernel): copy that cell's config.json, runs/ and results.json into the unfinished one instead
  of training the same students again. Returns the names of the cells filled this way."""
  def key(cell):
    return tuple(a for a in cell["argv"] if not a.startswith("--workdir="))
  finished = {}
  for c in every:
    if fmnist_grid._finished_seeds(c["workdir"]) >= seeds:  # pylint: disable=protected-access
      finished.setdefault(key(c), c)
  filled = []
  for c in todo:
    src = finished.get(key(c))
    if src is None or src["workdir"] == c["workdir"] or (
        fmnist_grid._finished_seeds(c["workdir"]) >= seeds):  # pylint: disable=protected-access
      continue
    os.makedirs(c["workdir"], exist_ok=True)
    for name in ("config.json", "runs"):
      there = os.path.join(src["workdir"], name)
      if os.path.isdir(there):
        shutil.copytree(there, os.path.join(c["workdir"], name), dirs_exist_ok=True)
      elif os.path.exists(there):
        shutil.copyfile(there, os.path.join(c["workdir"], name))
    shutil.copyfile(os.path.join(src["workdir"], "results.json"),
                    os.path.join(c["workdir"], "results.json"))  # last: marks it finished
    print(f"{c['name']}: the same run as {src['name']} (finished): results copied", flush=True)
    filled.append(c["name"])
  return filled


def slug(name: str) -> str:
  return "".join(c if c.isalnum() or c in ".-" else "_" for c in name)


def cells(args) -> list[dict]:
  out = []
  for dataset in args.datasets.split(","):
    config_arg = DATASETS[dataset][0]
    for ipc in fmnist_grid._ints(args.ipcs):
      for part in args.parts.split(","):
        for name, overrides in part_cells(part, dataset, args):
          flags = {"ipc": ipc, "seeds": args.seeds, "progress": False} | overrides
          if args.split == "validation":
            flags["data.validation_per_class"] = VALIDATION_PER_CLASS
          workdir = os.path.join(args.root, args.split, dataset, part, f"{slug(name)}_ipc{ipc}")
          argv = [sys.executable, os.path.join(ROOT_DIR, "main.py"),
                  f"--config={os.path.join(ROOT_DIR, 'configs', 'pca.py')}:{config_arg}",
                  f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()]
          out.append(dict(name=f"{dataset} {part}: {name} ipc={ipc}", cell=name, workdir=workdir,
                          argv=argv + args.extra))
  return out


def _study_cell(rel: str) -> bool:
  """A study cell's results.json relative to the root: <split>/<dataset>/<part>/<cell>/."""
  return len(rel.split(os.sep)) == 5


def archive(root: str, to: str) -> list[str]:
  """Copy root/<split>/<dataset>/<part>/<cell>/results.json of every finished cell to the same
  path under `to` (grid_archive.archive), and the compressed set of each dataset's cell that the
  report's tile figure shows (pca_study_report.tile_cells: a few hundred KB of PNGs at most),
  so the figure can be redrawn from the record. Returns the relative paths copied."""
  import pca_study_report
  copied = grid_archive.archive(root, to, _study_cell)
  for _, folder in pca_study_report.tile_cells(pca_study_report.load(root)).values():
    dest = os.path.join(to, os.path.relpath(folder, root))
    if not os.path.isdir(dest):
      shutil.copytree(folder, dest)
      copied.append(os.path.relpath(folder, root))
  return copied


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  r = sub.add_parser("run", help="run (or resume) the study's cells")
  r.add_argument("--root", required=True)
  r.add_argument("--datasets", default="fmnist,cifar10")
  r.add_argument("--ipcs", default="10,1")
  r.add_argument("--parts", default=",".join(PARTS))
  r.add_argument("--kernel", default="linear", choices=resample.METHODS,
                 help="resampling of the prune / k / augment / ladder parts (chosen by gap)")
  r.add_argument("--sharpen", type=float, default=0.0)
  r.add_argument("--prune", default="el2n_easy", choices=PRUNES,
                 help="PCA's P step in the k, augment and ladder parts (chosen by prune)")
  r.add_argument("--ks", default="1,2,3",
                 help="the k part's k values (the issue's 1,2,3; 4 where 3 wins at the edge)")
  r.add_argument("--view-k", type=int, default=2,
                 help="k of the augment part's cells (the validated k where it moved from 2)")
  r.add_argument("--seeds", type=int, default=3)
  r.add_argument("--split", choices=("validation", "test"), default="validation")
  r.add_argument("--only", default="",
                 help="comma-separated cell names (as printed by --dry-run, e.g. "
                      "'random full-res,PCA herding nearest'): run just these cells")
  r.add_argument("--dry-run", action="store_true", help="print the commands only")
  r.add_argument("extra", nargs="*", help="more main.py flags, after --")
  p = sub.add_parser("report", help="write OUT/pca_study.md and its figures")
  p.add_argument("--root", required=True)
  p.add_argument("--out", default=os.path.join(ROOT_DIR, "results"))
  a = sub.add_parser("archive", help="copy every finished cell's results.json into TO (the "
                                     "repository's record; `cp -rn TO/. RUNS/` skips them again)")
  a.add_argument("--root", required=True)
  a.add_argument("--to", default=os.path.join(ROOT_DIR, "results", "pca_study_runs"))
  args = parser.parse_args(argv)
  if args.command == "report":
    import pca_study_report
    print(pca_study_report.write_report(args.root, args.out))
    return 0
  if args.command == "archive":
    return grid_archive.archive_command(parser, args.root, args.to, what="study",
                                        archive_fn=archive)
  for name, allowed in (("datasets", DATASETS), ("parts", PARTS)):
    unknown = set(getattr(args, name).split(",")) - set(allowed)
    if unknown:
      parser.error(f"unknown {name} {sorted(unknown)}; choose from {list(allowed)}")
  if not re.fullmatch(r"[1-9]\d*(,[1-9]\d*)*", args.ks):
    parser.error(f"--ks takes comma-separated integers >= 1, got {args.ks!r}")
  if args.view_k < 2:
    parser.error(f"--view-k must be >= 2 (the views are tile views), got {args.view_k}")
  todo = cells(args)
  if args.only:
    wanted = set(args.only.split(","))
    known = {c["cell"] for c in todo}
    if wanted - known:
      parser.error(f"unknown cells {sorted(wanted - known)}; these parts have {sorted(known)}")
    todo = [c for c in todo if c["cell"] in wanted]
  if not args.dry_run:
    reuse_identical(todo, cells(argparse.Namespace(**{**vars(args), "parts": ",".join(PARTS)})),
                    args.seeds)
  return fmnist_grid.run_cells(todo, args.seeds, args.dry_run)


if __name__ == "__main__":
  sys.exit(main())
