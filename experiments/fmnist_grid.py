"""The benchmark's grid (Fashion-MNIST or CIFAR-10), resumable, unattended, and its report.

  python experiments/fmnist_grid.py run --root RUNS [--dataset fmnist|cifar10]
      [--grid main|ablation] [--methods ...] [--ipcs 1,10,50] [--protocols hard,soft]
      [--seeds 5] [--selection-seeds 1:5,10:2,50:2] [--epochs 50:60] [--hard-protocol ...]
      [--background]
  python experiments/fmnist_grid.py status --root RUNS [the run's cell arguments]
  python experiments/fmnist_grid.py report --root RUNS [--dataset fmnist|cifar10] --out results
  python experiments/fmnist_grid.py archive --root RUNS [--to results/grid_runs]

`run` executes one `main.py` benchmark per cell (method x IPC x protocol; seeds inside a cell)
into RUNS/<grid>/<protocol>/<method>_ipc<ipc>_e<epochs>/. A finished cell (results.json with
--seeds seeds) is skipped, an interrupted one resumes from its checkpoints and a finished one
with fewer seeds is extended (its seeds kept), so rerunning the same command continues the
grid. Cells share the teacher and score caches ($DCJAX_CACHE). `--background` starts the same
`run` detached under `nice -n 19` (one process; its log and pid in RUNS/grid.log, RUNS/grid.pid;
refused while that pid runs), so the grid goes on while other work does and across sessions:
start it again after a stop and it continues. Before every cell `run` prints the cells done /
partly done / left and an ETA; `status` prints the same without running anything.

ETA (`progress`): the students left (seeds not finished, per cell) times the seconds of one
student of the same kind (dataset x hard / soft labels) and IPC: the median of the newest
ETA_RECENT_STUDENTS finished students (each the larger of its training seconds and its cell's
wall time outside setup per student), from the newest convolution path only; at an IPC with
none yet, a fixed cost plus a cost per image fitted to the kind's IPCs that have
(`student_seconds_model`); a kind with none at all reads every kind's, pooled. A second
figure, "with the CPU to itself", reads the 20th percentile instead (work beside the grid only
ever slows a student). Teachers, score files and SRe2L's recovery, made once, are not in it.

Datasets: `fmnist` (Debian's Fashion-MNIST; the layout RUNS/<grid>/...) and `cifar10` (the
project's parquet copy, ../shared/data/cifar10-jpeg: every config's `cifar10_shared` variant;
the layout RUNS/cifar10/<grid>/...). Selection seeds: `--selection-seeds IPC:N,...` runs the
methods whose selection draws random numbers (SELECTION_RANDOM) N times at that IPC; selection
seed s > 0 is the cell directory `..._sel<s>` run with --config.seed=100*s (so its students are
seeds 100s..100s+seeds-1, disjoint from every other selection's), and the report pools every
student of a cell's selections (mean ± std over all of them; the spread then includes the
selection's, as the DC paper's random-draw figures do).

Grids:
  main      methods {random, el2n_easy, el2n_hard, ccs, herding, kcenter, rded, sre2l, pca} x IPC x
            protocol {hard, soft}. "hard" is hard labels under --hard-protocol (default
            small_data: the distillation literature's SGD + DSA recipe that the published
            Fashion-MNIST rows use); "soft" is the benchmark's teacher-label protocol.
            `--methods rded_tile,rded_k1` add the rows of VARIANTS: RDED's own cells with
            PCA's tile view instead of the protocol's DSA (hard labels only), and RDED at
            factor 1, the recipe of its released 32 px scripts (both label kinds).
  ablation  PCA's parts at hard labels (ABLATION): Random and P (EL2N-easy; k=1, the
            protocol's augmentation), P+C (k=2 tiles, the protocol's augmentation), P+C+A
            (k=2, tile_dsa: configs/pca.py), P+C+A at k=3, with tile_crop at two crop-scale
            bounds, Random+C+A (PCA with random instead of EL2N-easy pruning) and P+C+A at
            100 and 1000 epochs (the schedule). Run it with
            --validation-per-class N to choose settings on held-out training images.

`report` collects every results.json under RUNS and writes OUT/fmnist.md (main table with the
published DC / DSA / IDC reference rows of method.md section 4, the three findings of method.md
section 2 stated from the cells that finished (experiments/grid_findings.py), the storage table,
the ablation table, and what ran: seeds, epochs, test or validation split) plus OUT/fmnist_acc_vs_ipc.png and
OUT/fmnist_acc_vs_storage.png. A cell whose schedule is shorter than its protocol's is marked
as reduced.

`archive` copies each finished cell's results.json into results/grid_runs/ (committed: run
roots do not outlive a machine), and of each unfinished cell its finished students
(experiments/grid_archive.py, which experiments/grid_queue.py's `record` and `restore` use with
the grid's caches); `report --root results/grid_runs` rebuilds the reports from it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT_DIR)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dcjax import protocols  # noqa: E402
from dcjax.benchmark import report, runner  # noqa: E402

import grid_archive  # noqa: E402
import grid_findings  # noqa: E402

MAIN_METHODS = ("random", "el2n_easy", "el2n_hard", "ccs", "herding", "kcenter", "rded", "sre2l",
                "pca")
# Methods whose selection (or synthesis) draws from the selection key: more than one selection
# seed measures that spread. EL2N, herding and PCA (EL2N-easy) are deterministic given scores.
SELECTION_RANDOM = ("random", "ccs", "kcenter", "rded", "sre2l", "rded_tile", "rded_k1")
# Rows of the main grid beside the issue's methods: a method's config with overrides, at the
# label kinds named (name -> (method, overrides, protocols)); the same config seeds as the
# method's own cells, so the same candidate draws.
# 'rded_tile' (a diagnostic, hard labels only): RDED's own k x k collages trained with PCA's
# tile view (tile_dsa: one whole tile resized to the image, then DSA) instead of the
# small-data protocol's DSA, whose crop only shifts the collage, so its students never see one
# tile at full size (the paper's ImageNet protocol, RandomResizedCrop 0.08-1, often crops
# inside a tile). It separates RDED's hard-label collapse in the DSA protocol from the view.
# 'rded_k1': RDED at factor 1, as its released scripts run it on 32 px data (CIFAR-10/100 and
# Tiny-ImageNet: `--factor 1`): each stored image is one real image's best crop at full size.
# The 'rded' row keeps factor 2, RDED's ImageNet recipe, the one the paper's benchmark ran.
VARIANTS = {"rded_tile": ("rded", {"eval.augment": "tile_dsa"}, ("hard",)),
            "rded_k1": ("rded", {"combine.k": 1}, ("hard", "soft"))}
# Notes printed under a table that has the row (method -> one sentence).
ROW_NOTES = {"kcenter": (
    "*k-Center* starts each class from a uniformly random member and adds the farthest ones "
    "(Sener & Savarese 2018, as DeepCore does), so at IPC 1 its set is a random draw of one "
    "image per class."), "rded_tile": (
    "*RDED (tile view)* is a diagnostic row, not a method of the grid: the RDED row's own sets "
    "(the same selections), trained with PCA's tile view (`tile_dsa`: one whole tile resized to "
    "the image, then DSA) instead of the protocol's DSA, which only shifts a k×k collage, so "
    "RDED's students there never see one of its tiles at full size."), "rded_k1": (
    "*RDED (factor 1)* is RDED as its released scripts run it on 32 px data (CIFAR-10/100, "
    "Tiny-ImageNet: factor 1): each stored image is one real image's lowest-loss crop at full "
    "size, no tiling; the *RDED* row tiles 2×2 (factor 2, its ImageNet recipe, which the "
    "paper's benchmark ran).")}
# Issue #15's selection seeds per IPC for the SELECTION_RANDOM methods (1 for the others) and
# students per selection: what a complete cell of the findings grid has.
ISSUE_SELECTIONS = {1: 5, 10: 2, 50: 2}
ISSUE_STUDENTS = 5
# Per dataset: (the config-file argument of each config, the subfolder of RUNS, report name).
DATASETS = {"fmnist": (dict(benchmark="", pca="full", rded="", sre2l=""), "", "fmnist"),
            "cifar10": (dict(benchmark="shared", pca="full,cifar10_shared", rded="cifar10_shared",
                             sre2l="cifar10_shared"), "cifar10", "cifar10")}
TITLES = {"fmnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
DISPLAY = {"random": "Random", "el2n_easy": "EL2N easy", "el2n_hard": "EL2N hard", "ccs": "CCS",
           "herding": "Herding", "kcenter": "k-Center", "rded": "RDED", "sre2l": "SRe2L",
           "pca": "PCA", "rded_tile": "RDED (tile view)", "rded_k1": "RDED (factor 1)",
           "forgetting_easy": "Forgetting easy", "forgetting_hard": "Forgetting hard",
           "aum_easy": "AUM easy", "aum_hard": "AUM hard"}
# PCA ablation variants at hard labels: name -> main.py config overrides (the grid adds IPC,
# seeds, protocol and epochs). "P+C+A" is PCA as first configured (EL2N-easy P, tile_dsa, the
# default linear kernel; configs/pca.py has since chosen herding and nearest); k = 1 under
# tile_dsa is P itself (one tile is the whole image), so the k row set is P / P+C+A / k=3.
ABLATION = {
    "Random": {"method": "random", "combine.k": 1},
    "P": {"method": "el2n_easy", "combine.k": 1},
    "P+C": {"method": "el2n_easy", "combine.k": 2},
    "P+C+A": {"method": "el2n_easy", "combine.k": 2, "eval.augment": "tile_dsa"},
    "P+C+A k=3": {"method": "el2n_easy", "combine.k": 3, "eval.augment": "tile_dsa"},
    "P+C+A (tile_crop 0.08-1)": {"method": "el2n_easy", "combine.k": 2,
                                 "eval.augment": "tile_crop", "eval.crop_scale": "(0.08,1.0)"},
    "P+C+A (tile_crop 0.5-1)": {"method": "el2n_easy", "combine.k": 2,
                                "eval.augment": "tile_crop", "eval.crop_scale": "(0.5,1.0)"},
    "Random+C+A": {"method": "random", "combine.k": 2, "eval.augment": "tile_dsa"},
    # The evaluation schedule (the protocol's: 301 epochs, lr x0.1 from 0-based epoch 152).
    "P+C+A 100 ep": {"method": "el2n_easy", "combine.k": 2, "eval.augment": "tile_dsa",
                     "eval.epochs": 100},
    "P+C+A 1000 ep": {"method": "el2n_easy", "combine.k": 2, "eval.augment": "tile_dsa",
                      "eval.epochs": 1000},
}


def _slug(name: str) -> str:
  """A variant's directory name: 'P+C+A (tile_crop 0.5-1)' -> 'PCA_tile_crop_0.5-1'."""
  s = re.sub(r"[+()=]", "", name).strip()
  return re.sub(r"\s+", "_", s)


# Published ConvNet-3 hard-label top-1 at IPC 1 / 10 / 50: (row, what it trains on, accuracies).
# Fashion-MNIST: method.md section 4. CIFAR-10: the DC paper's Table 1 (Zhao et al., ICLR 2021:
# its Random and Herding coreset baselines and DC), DSA (Zhao & Bilen, ICML 2021) and DM (Zhao &
# Bilen, WACV 2023), means as those papers and later ones' tables (e.g. MTT's Table 1) give them.
PUBLISHED = {
    "fmnist": (("DC", "distilled pixels", (70.5, 82.3, 83.6)),
               ("DSA", "distilled pixels", (70.6, 84.6, 88.7)),
               ("IDC (factor 2, DSA+CutMix)", "distilled pixels", (81.0, 86.0, 86.2)),
               ("IDC-I", "distilled pixels", (70.7, 85.3, 89.1))),
    "cifar10": (("Random", "real images", (14.4, 26.0, 43.4)),
                ("Herding", "real images", (21.5, 31.6, 40.4)),
                ("DC", "distilled pixels", (28.3, 44.9, 53.9)),
                ("DSA", "distilled pixels", (28.8, 52.1, 60.6)),
                ("DM", "distilled pixels", (26.0, 48.9, 63.0))),
}
PUBLISHED_NOTES = {
    "cifar10": ("The published rows are the original papers' (DC: Zhao et al. 2021, Table 1, "
                "with its Random and Herding baselines; DSA: Zhao & Bilen 2021; DM: Zhao & Bilen "
                "2023), ConvNet-3 on the original PNG CIFAR-10; this grid trains and tests on a "
                "JPEG-q75 copy of it."),
}
PUBLISHED_IPCS = (1, 10, 50)


def _ints(text: str) -> list[int]:
  return [int(t) for t in text.split(",") if t]


def _epochs_map(text: str) -> dict[int, int]:
  """'10:300,50:60' -> {10: 300, 50: 60}."""
  out = {}
  for item in filter(None, text.split(",")):
    ipc, _, epochs = item.partition(":")
    out[int(ipc)] = int(epochs)
  return out


def _selection_seeds(args, method: str, ipc: int) -> list[int]:
  if args.grid != "main" or method not in SELECTION_RANDOM:
    return [0]
  return list(range(args.selection_map.get(ipc, 1)))


def cells(args) -> list[dict]:
  """Every cell of the requested grid: name, workdir, main.py arguments, IPC."""
  config_args, subdir, _ = DATASETS[args.dataset]
  root = os.path.join(args.root, subdir) if subdir else args.root
  out = []
  for ipc in _ints(args.ipcs):
    for protocol in args.protocols.split(","):
      if args.grid == "ablation" and protocol != "hard":
        continue  # PCA uses hard labels only (method.md section 3)
      recipe = args.hard_protocol if protocol == "hard" else protocol
      epochs = args.epochs_map.get(ipc, protocols.PROTOCOLS[recipe]["epochs"])
      if args.grid == "main":  # a variant row runs at the label kinds it names
        variants = [(m, m, dict(VARIANTS[m][1]) if m in VARIANTS else {})
                    for m in args.methods.split(",")
                    if m not in VARIANTS or protocol in VARIANTS[m][2]]
      else:
        chosen = args.variants.split(",")
        variants = [(_slug(name), name, dict(overrides))
                    for name, overrides in ABLATION.items() if name in chosen]
      for slug, name, overrides in variants:
        method = VARIANTS.get(slug, (slug,))[0]  # the method a diagnostic variant runs
        config = {"pca": "pca", "rded": "rded", "sre2l": "sre2l"}.get(
            method if args.grid == "main" else "", "benchmark")
        if args.dataset == "cifar10" and config == "benchmark":
          config = "cifar10"  # configs/cifar10.py is the benchmark config on CIFAR-10
        config_arg = config_args["benchmark" if config == "cifar10" else config]
        if config == "pca":  # the P and kernel configs/pca.py validated for this IPC
          config_arg += f",ipc{ipc}"
        flags = {"ipc": ipc, "seeds": args.seeds, "eval.protocol": recipe, "eval.epochs": epochs,
                 "progress": False, **overrides}
        if args.grid == "main" and config in ("benchmark", "cifar10"):
          flags["method"] = method
        if args.validation_per_class:
          flags["data.validation_per_class"] = args.validation_per_class
        cell_epochs = overrides.get("eval.epochs", epochs)  # a schedule variant's own
        for sel in _selection_seeds(args, slug, ipc):
          workdir = os.path.join(root, args.grid, protocol,
                                 f"{slug}_ipc{ipc}_e{cell_epochs}" + (f"_sel{sel}" if sel else ""))
          argv = [sys.executable, os.path.join(ROOT_DIR, "main.py"),
                  f"--config={os.path.join(ROOT_DIR, 'configs', config + '.py')}"
                  # PCA's full setting scores like every other score-based cell of the grid
                  # (configs/benchmark.py's scores: one score file for EL2N, CCS and PCA).
                  + (f":{config_arg}" if config_arg else ""),
                  f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()]
          if sel:
            argv.append(f"--config.seed={100 * sel}")
          argv += args.extra
          out.append(dict(name=f"{name} ipc={ipc} {protocol}" + (f" sel {sel}" if sel else ""),
                          workdir=workdir, argv=argv, ipc=ipc, dataset=args.dataset,
                          labels=protocol))
  return out


def _finished_seeds(workdir: str) -> int:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return 0
  with open(path, encoding="utf-8") as f:
    return len(json.load(f)["runs"])


def run(args) -> int:
  return run_cells(cells(args), args.seeds, args.dry_run, root=args.root,
                   stop_after=args.stop_after, workers=args.workers)


# The ETA reads the newest finished students of a kind only: the code (dcjax.layers' paths) and
# the host (two machines of one `lscpu` name differed 1.55x) change between sessions.
ETA_RECENT_STUDENTS = 15


def student_kind(dataset: str, labels: str) -> tuple[str, str]:
  """(grid dataset, 'hard' or 'soft') of a student: what its cost depends on besides the IPC.
  A CIFAR-10 soft-label student (3 channels, 32 px, a teacher's forward pass per step) costs
  ~2x a Fashion-MNIST hard-label one. `dataset` is a DATASETS key or results.json's dataset
  ('fashion_mnist', 'parquet:<dir>/cifar10-jpeg'); `labels` a protocol name ('hard', 'soft')
  or a recipe's labels ('hard', 'teacher')."""
  name = os.path.basename(dataset.rstrip("/"))
  grid_name = next((k for k in DATASETS if name.startswith(k)),
                   "fmnist" if name == "fashion_mnist" else dataset)
  return grid_name, "hard" if labels == "hard" else "soft"


def _finished_student_seconds(root: str) -> dict[tuple[str, str], dict[int, list[float]]]:
  """student kind -> ipc -> seconds of the newest `ETA_RECENT_STUDENTS` finished students of
  that kind and IPC under root (by results.json's `created`: older students ran older code),
  each a cell's wall seconds per student, or a student's own training seconds where those are
  more. The cell's setup (its `setup_seconds`: scores, teachers, SRe2L's recover) is not a
  student's: it is left out where recorded. Only students of the newest cell's convolution path
  (results.json's environment.conv_path) count: a kind whose students all ran an older, slower
  path (Fashion-MNIST's soft IPC-10 sweep ran before the fused path, ~3x slower) would
  otherwise set its estimate from them."""
  dated = collections.defaultdict(list)
  newest = ("", None)
  for dirpath, _, files in os.walk(root):
    if "results.json" not in files:
      continue
    try:
      with open(os.path.join(dirpath, "results.json"), encoding="utf-8") as f:
        r = json.load(f)
      kind = student_kind(str(r["dataset"]), str(r["recipe"]["labels"]))
      train = [float(x["train_seconds"]) for x in r["runs"] if "train_seconds" in x]
      students_wall = float(r.get("wall_seconds", 0.0)) - float(r.get("setup_seconds") or 0.0)
      per_student = students_wall / max(1, len(r["runs"]))
      created = str(r.get("created", ""))
      path = (r.get("environment") or {}).get("conv_path")
      dated[kind, int(r["ipc"])] += [(created, path, max(t, per_student)) for t in train]
      newest = max(newest, (created, path), key=lambda x: x[0])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
      continue  # a corrupt or foreign file does not stop the grid
  out = collections.defaultdict(dict)
  for (kind, ipc), xs in dated.items():
    xs = sorted((x for x in xs if x[1] == newest[1]), key=lambda x: x[0])
    if xs:
      out[kind][ipc] = [sec for _, _, sec in xs[-ETA_RECENT_STUDENTS:]]
  return dict(out)


# The "alone" ETA's percentile of the newest students: work beside the queue (a test run: ~2.4x
# slower) only ever slows a student, and the newest students' seconds are bimodal (CIFAR-10
# hard IPC 10 on 2026-12-07: six at 108-127 s, nine at 195-289 s), so a low percentile reads
# the queue's pace with the CPU to itself where the median reads its recent pace.
ETA_ALONE_PERCENTILE = 20


def student_seconds_estimate(finished: dict[tuple[str, str], dict[int, list[float]]],
                             percentile: float = 50):
  """(kind, ipc) -> estimated seconds of one student (None when nothing has finished): the
  kind's own students where it has any (student_seconds_model of their per-IPC percentile),
  else every kind's students pooled per IPC. The median by default, not the mean: a cell that
  shared the CPU (a benchmark, the test suite) slows all of its students, and a mean carried
  that into every cell the ETA extrapolates."""
  def model(per_ipc):
    return student_seconds_model({ipc: float(np.percentile(xs, percentile))
                                  for ipc, xs in per_ipc.items() if xs})
  pooled = collections.defaultdict(list)
  for per_ipc in finished.values():
    for ipc, xs in per_ipc.items():
      pooled[ipc] += xs
  fallback = model(pooled)
  if fallback is None:
    return None
  own = {kind: model(per_ipc) for kind, per_ipc in finished.items()}
  return lambda kind, ipc: (own.get(kind) or fallback)(ipc)


def progress(todo: list[dict], seeds: int, root: str | None) -> dict:
  """Cells done / partly done / left and an ETA (seconds, or None) for the students left: at
  the recent pace (`eta_seconds`, the median student) and with the CPU to itself
  (`eta_alone_seconds`, ETA_ALONE_PERCENTILE)."""
  done = partial = left = 0
  students_left = collections.Counter()
  for cell in todo:
    n = _finished_seeds(cell["workdir"])
    if n < seeds:  # an unfinished run's students count towards the ETA, not towards done
      n = max(n, min(seeds - 1, len(grid_archive.finished_students(cell["workdir"]))))
    done += n >= seeds
    partial += 0 < n < seeds
    left += n == 0
    if n < seeds:
      kind = student_kind(cell.get("dataset", "fmnist"), cell.get("labels", "hard"))
      students_left[kind, cell.get("ipc", 0)] += seeds - n
  eta = eta_alone = None
  if root and students_left:
    finished = _finished_student_seconds(root)
    recent = student_seconds_estimate(finished)
    alone = student_seconds_estimate(finished, ETA_ALONE_PERCENTILE)
    if recent is not None:
      eta = sum(k * recent(kind, ipc) for (kind, ipc), k in students_left.items())
      eta_alone = sum(k * alone(kind, ipc) for (kind, ipc), k in students_left.items())
  return dict(done=done, partial=partial, left=left, total=len(todo), eta_seconds=eta,
              eta_alone_seconds=eta_alone)


def student_seconds_model(typical_seconds: dict[int, float]):
  """ipc -> estimated seconds of one student, from the typical (median) seconds of the finished
  students per IPC (None when there are none). An IPC with finished students is that figure.
  Another is a fixed cost plus a cost per stored image, fitted by least squares to the per-IPC
  figures (each IPC weighs the same) once two IPCs have finished; with one IPC, its seconds per
  image. A student's start-up, compiles and test pass do not grow with the IPC, so scaling IPC
  1's seconds per image up to IPC 50 would overestimate it ~2x (40 s at IPC 1, 215 s at IPC 10
  on the 2-core AMD machine: 20.6 s + 19.4 s per image, ~990 s at IPC 50 against ~1500 s)."""
  if not typical_seconds:
    return None
  xs, ys = list(typical_seconds), list(typical_seconds.values())
  fixed, per_image = 0.0, sum(y / x for x, y in zip(xs, ys)) / len(xs)
  if len(xs) >= 2:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
             / sum((x - mx) ** 2 for x in xs))
    if slope > 0:
      fixed, per_image = my - slope * mx, slope
      if fixed < 0:  # no negative fixed cost: a line through the origin instead
        fixed, per_image = 0.0, sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
  return lambda ipc: typical_seconds.get(ipc, fixed + per_image * ipc)


def progress_line(p: dict, workers: int = 1) -> str:
  """One line: cells done / partly / left and the ETA (shared by `workers` cells at once: the
  students' seconds over the workers, a rough figure)."""
  eta = p["eta_seconds"]
  if eta is not None and workers > 1:
    p = dict(p, eta_alone_seconds=None)
    eta /= workers
  when = ("nothing left" if p["done"] == p["total"] else
          "ETA unknown (no finished student yet)" if eta is None else
          f"ETA {eta / 3600:.1f} h (~{time.strftime('%Y-%m-%d %H:%M', time.localtime(time.time() + eta))})"
          + (f", {p['eta_alone_seconds'] / 3600:.1f} h with the CPU to itself"
             if p.get("eta_alone_seconds") is not None else "")
          + (f" with {workers} workers" if workers > 1 else ""))
  return (f"grid: {p['done']}/{p['total']} cells done, {p['partial']} partly, {p['left']} left; "
          + when)


def cpu_fingerprint() -> str:
  """This machine's CPU kind as a short hash (dcjax.benchmark.runner.cpu_fingerprint, which
  results.json records too): JAX's compilation cache key names the backend ('cpu') but not the
  CPU, so a cache copied to another CPU kind could load code compiled for it."""
  return runner.cpu_fingerprint()


def compilation_cache_env(root: str, environ: dict | None = None) -> dict:
  """The environment for the cells' processes: a persistent JAX compilation cache shared by
  every cell under root, in ROOT/.jax_cache/<CPU fingerprint> (an existing
  JAX_COMPILATION_CACHE_DIR is kept), and the grid's own teacher / score caches (`cache_root`).
  Every cell compiles the same student, test-pass and teacher programs; a cache hit loads the
  compiled program itself, so results are bitwise those of a fresh compile (BENCHMARKS.md: an
  IPC-1 cell 52 -> 42 s, the same final loss)."""
  env = dict(os.environ if environ is None else environ)
  env["DCJAX_CACHE"] = grid_archive.cache_root(root, env)
  if not env.get("JAX_COMPILATION_CACHE_DIR"):
    env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.path.abspath(root), ".jax_cache",
                                                    cpu_fingerprint())
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
  return env


def worker_cpus(workers: int, cpus: list[int] | None = None) -> list[list[int]]:
  """The CPUs each of `workers` cell processes is pinned to: this process's CPUs split into
  contiguous, near-equal groups (with more workers than CPUs, groups of one CPU, shared). XLA
  sizes its thread pools by the CPUs a process may use, so each cell runs on its own cores."""
  if cpus is None:  # macOS has no affinity calls: its CPUs by count (and no pinning)
    cpus = (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity")
            else range(os.cpu_count() or 1))
  cpus = sorted(cpus)
  if workers <= len(cpus):
    return [list(map(int, g)) for g in np.array_split(cpus, workers)]
  return [[cpus[i % len(cpus)]] for i in range(workers)]


_PIN_AND_EXEC = ("import os, sys; os.sched_setaffinity(0, map(int, sys.argv[1].split(','))); "
                 "os.execvp(sys.argv[2], sys.argv[2:])")


def _run_cell(cell: dict, root: str | None, cpus: list[int] | None = None) -> tuple[int, str]:
  """Run one cell's main.py (logging to <workdir>.log), pinned to `cpus` when given; (rc, the
  log's last line)."""
  os.makedirs(cell["workdir"], exist_ok=True)
  env = compilation_cache_env(root) if root else dict(os.environ)
  if cpus is not None:
    # Cells sharing one GPU each take memory as they need it, not 75 % of it up front.
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  argv = cell["argv"]
  if cpus is not None and hasattr(os, "sched_setaffinity"):
    # Pinned by a launcher that sets its affinity and execs the cell, not by preexec_fn: that
    # runs Python in a forked child of this threaded process (worker threads, and JAX's pools
    # under pytest), which can deadlock; without it subprocess can vfork/posix_spawn.
    argv = [sys.executable, "-c", _PIN_AND_EXEC, ",".join(map(str, cpus)), *argv]
  with open(cell["workdir"] + ".log", "a") as log:
    rc = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT_DIR, env=env)
  with open(cell["workdir"] + ".log", encoding="utf-8", errors="replace") as f:
    tail = f.read().strip().splitlines()[-1:]
  return rc, tail[0] if tail else ""


def run_cells(todo: list[dict], seeds: int, dry_run: bool = False, root: str | None = None,
              stop_after: float | None = None, workers: int = 1) -> int:
  """Run each cell's main.py command (logging to <workdir>.log) unless its workdir already
  holds `seeds` finished seeds; an interrupted cell resumes, one with fewer seeds is extended.
  With `root`, a progress line (cells done / left, ETA) is printed before each cell that runs.
  With `stop_after` (seconds), no cell starts once that much time has passed (a time-boxed
  machine: the cells left run next time). With `workers` > 1, that many cells run at once in
  the grid's order, each pinned to its share of the CPUs (`worker_cpus`) and, on a GPU, sharing
  it; caches two cells need (teachers, scores, SRe2L's recovered sets) are filled once
  (dcjax.data.files.cache_fill_lock). Results then differ from a one-worker run's at float
  rounding (XLA:CPU splits its reductions by thread count). Returns 1 if any cell failed (the
  others still run)."""
  failed = []
  start = time.monotonic()
  if workers > 1 and not dry_run:
    return _run_cells_parallel(todo, seeds, root, stop_after, workers)
  for i, cell in enumerate(todo):
    done = _finished_seeds(cell["workdir"]) >= seeds  # fewer: rerun extends the cell
    if (not done and not dry_run and stop_after is not None
        and time.monotonic() - start >= stop_after):
      print(f"stopped after {time.monotonic() - start:.0f} s (--stop-after {stop_after:g}): "
            f"{sum(_finished_seeds(c['workdir']) < seeds for c in todo[i:])} cell(s) left",
            flush=True)
      break
    if root and not done and not dry_run:
      print(progress_line(progress(todo, seeds, root)), flush=True)
    print(f"[{i + 1}/{len(todo)}] {cell['name']}: "
          f"{'done' if done else 'running'} -> {cell['workdir']}", flush=True)
    if done or dry_run:
      if dry_run and not done:
        print("  " + " ".join(cell["argv"]))
      continue
    t = time.perf_counter()
    rc, tail = _run_cell(cell, root)
    print(f"  rc={rc} in {time.perf_counter() - t:.0f} s: {tail}", flush=True)
    if rc:
      failed.append(cell["name"])
  if root and not dry_run:
    print(progress_line(progress(todo, seeds, root)), flush=True)
  if failed:
    print(f"{len(failed)} cell(s) failed: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


def _run_cells_parallel(todo: list[dict], seeds: int, root: str | None,
                        stop_after: float | None, workers: int) -> int:
  """run_cells with `workers` cells at once: each worker takes the next unfinished cell."""
  start = time.monotonic()
  pending = [(i, c) for i, c in enumerate(todo) if _finished_seeds(c["workdir"]) < seeds]
  print(f"{len(todo) - len(pending)} of {len(todo)} cells done; running the other "
        f"{len(pending)} with {workers} workers", flush=True)
  lock, failed, stopped = threading.Lock(), [], []

  def worker(cpus: list[int]) -> None:
    while True:
      with lock:
        if not pending or (stop_after is not None and time.monotonic() - start >= stop_after):
          if pending and not stopped:
            stopped.append(len(pending))
          return
        i, cell = pending.pop(0)
        print(f"[{i + 1}/{len(todo)}] {cell['name']}: running on CPUs "
              f"{cpus[0]}-{cpus[-1]} -> {cell['workdir']}", flush=True)
      t = time.perf_counter()
      rc, tail = _run_cell(cell, root, cpus)
      with lock:
        print(f"  [{i + 1}/{len(todo)}] {cell['name']}: rc={rc} in "
              f"{time.perf_counter() - t:.0f} s: {tail}", flush=True)
        if rc:
          failed.append(cell["name"])
        if root:
          print(progress_line(progress(todo, seeds, root), workers), flush=True)

  threads = [threading.Thread(target=worker, args=(cpus,), daemon=True)
             for cpus in worker_cpus(workers)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  if stopped:
    print(f"stopped after {time.monotonic() - start:.0f} s (--stop-after {stop_after:g}): "
          f"{stopped[0]} cell(s) left", flush=True)
  if failed:
    print(f"{len(failed)} cell(s) failed: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def lower_session_weight(pid: int, nice: int = 19) -> bool:
  """Give the session that `pid` leads the autogroup nice `nice` (Linux, sched(7)). With
  autogroup scheduling on, `nice` only ranks processes within a session, so a detached nice-19
  run (its own session) would otherwise take an equal CPU share against the user's session.
  False where there is no autogroup to set (another OS, autogroup off, no permission)."""
  try:
    with open(f"/proc/{pid}/autogroup", "w", encoding="utf-8") as f:
      f.write(str(nice))
    return True
  except OSError:
    return False


def start_background(root: str, argv: list[str]) -> int:
  """`run` with the same arguments, detached under nice -n 19; log and pid under root."""
  os.makedirs(root, exist_ok=True)
  pid_file, log_file = os.path.join(root, "grid.pid"), os.path.join(root, "grid.log")
  if os.path.exists(pid_file):
    try:
      with open(pid_file, encoding="utf-8") as f:
        pid = int(f.read().strip())
    except ValueError:
      pid = 0
    if pid and _pid_alive(pid):
      print(f"error: a grid already runs in {root} (pid {pid}); watch {log_file}",
            file=sys.stderr)
      return 2
  cmd = ["nice", "-n", "19", sys.executable, os.path.abspath(__file__)] + [
      a for a in argv if a != "--background"]
  with open(log_file, "a") as log:
    log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} started: {' '.join(cmd)}\n")
    log.flush()
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         cwd=ROOT_DIR, start_new_session=True)
  lower_session_weight(p.pid)
  with open(pid_file, "w") as f:
    f.write(f"{p.pid}\n")
  print(f"grid started in the background: pid {p.pid}, log {log_file} "
        f"(progress: tail -f {log_file}; stop: kill -- -{p.pid}, its running cell included)")
  return 0


# --- Report -------------------------------------------------------------------------------------


def _cell_text(rs: list[dict], protocol: str | None = None, augment: str | None = None) -> str:
  r = rs[-1]  # one result per cell; the newest if several
  text = (f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f}" if len(r["runs"]) > 1
          else f"{r['top1_mean']:.2f}")  # no spread from one seed
  marks = []
  if protocol and r["protocol"] != protocol:
    marks.append(f"protocol {r['protocol']}, augment {r['recipe']['augment']}")
  elif augment and r["recipe"].get("augment") != augment:
    marks.append(f"augment {r['recipe']['augment']}")
  full = protocols.PROTOCOLS.get(r["protocol"], {}).get("epochs")
  if full and r["recipe"]["epochs"] < full:
    marks.append(f"{r['recipe']['epochs']} ep")
  selections = r.get("_selection_seeds") or [0]
  if len(selections) > 1:
    marks.append(f"{len(r['runs'])} students over {len(selections)} selections")
  elif len(r["runs"]) != 5:
    marks.append(f"{len(r['runs'])} seed{'s' * (len(r['runs']) > 1)}")
  backends = r.get("_backends") or [r.get("environment", {}).get("backend", "cpu")]
  if set(backends) != {"cpu"}:  # which cells ran where: the CPU is the unmarked default
    marks.append("on " + "+".join(sorted(set(backends))))
  return text + (f" ({', '.join(marks)})" if marks else "")


def _short(r: dict, method: str) -> bool:
  """Whether a (pooled) cell has fewer selections or students than the issue's grid asks."""
  selections = r.get("_selection_seeds") or [r.get("selection_seed", 0)]
  wanted = ISSUE_SELECTIONS.get(r["ipc"], 1) if method in SELECTION_RANDOM else 1
  return len(selections) < wanted or len(r["runs"]) < ISSUE_STUDENTS * len(selections)


def teacher_line(results: list[dict]) -> str:
  """Which teacher the cells used, for soft labels (results.json 'teacher') or for the features
  a selection reads (herding, k-center, RDED's observer, PCA's P: 'feature_teacher'), told
  apart by its test figures (its cache entry's name also changes when the cache key's format
  does, for the same parameters). One sentence when every cell shares it; otherwise each
  teacher with its cell count: a teacher retrained elsewhere (another CPU kind, a lost cache)
  is another teacher, and its cells differ from the others by more than their students."""
  cells = collections.Counter()  # a selection seed's run counts as a cell, as in `status`
  for r in results:
    for t in r.get("_teachers") or [r.get("teacher") or r.get("feature_teacher")]:
      if not t:
        continue
      # A feature teacher names its cache entry, <dataset>-<model>-<hash>, not its model.
      name = os.path.basename(str(t.get("dir") or t.get("name") or "").rstrip("/"))
      model = t.get("model") or (name.rsplit("-", 2)[1] if name.count("-") >= 2 else None)
      cells[(model, t.get("top1"), t.get("top5"))] += 1
  if not cells:
    return ""

  def text(key):
    model, top1, top5 = key
    figures = ", ".join(f"top-{k} {v:.2f} %" for k, v in ((1, top1), (5, top5)) if v is not None)
    return f"`{model or '?'}`, {figures or 'no test figures recorded'} on the test split"

  if len(cells) == 1:
    return ("One teacher gave every soft label and every teacher-feature selection: "
            f"{text(next(iter(cells)))}.")
  return (f"The soft labels and teacher-feature selections come from {len(cells)} different "
          "teachers (told apart by their test figures; a teacher retrained on another CPU kind "
          "or after a lost cache is another teacher, so compare cells across them with care): "
          + "; ".join(f"{text(k)} in {n} cell(s)" for k, n in cells.most_common()) + ".")


def score_file_line(results: list[dict]) -> str:
  """Which score files the score selections (EL2N, CCS, a score-file P) read, told apart by the
  sha256 results.json records of the file's bytes (score_sha256; runs from before it existed
  say 'not recorded'); a selection seed's run counts as a cell."""
  cells = collections.Counter()
  for r in results:
    for path, sha in r.get("_score_files") or [(r.get("score_file"), r.get("score_sha256"))]:
      if path:
        cells[sha] += 1
  if not cells:
    return ""
  if len(cells) == 1 and None not in cells:
    return f"One score file gave every score selection (sha256 {next(iter(cells))}...)."
  parts = [f"sha256 {sha}... in {n} cell(s)" for sha, n in cells.most_common() if sha]
  if None in cells:
    parts.append(f"not recorded in {cells[None]} cell(s) (run before results.json held it)")
  return "The score selections read these score files: " + "; ".join(parts) + "."


def sre2l_teacher_line(results: list[dict]) -> str:
  """Which BatchNorm teachers SRe2L's cells recovered their images from (results.json
  'sre2l_teacher'), told apart by their test figures; runs from before the field existed say
  'not recorded'. A selection seed's run counts as a cell."""
  cells = collections.Counter()
  for r in results:
    if r["method"] != "sre2l":
      continue
    for t in r.get("_sre2l_teachers") or [r.get("sre2l_teacher")]:
      cells[(t["top1"], t["top5"]) if t else None] += 1
  if not cells:
    return ""
  unknown = f"{cells[None]} cell(s) (run before results.json held it)"
  if list(cells) == [None]:
    return ("SRe2L's cells do not record the BatchNorm teacher they recovered their images "
            f"from: {unknown}.")
  parts = [f"top-1 {a:.2f} %, top-5 {b:.2f} % in {n} cell(s)"
           for key, n in cells.most_common() if key for a, b in [key]]
  if None in cells:
    parts.append(f"not recorded in {unknown}")
  return ("SRe2L recovered its images from " + ("these BatchNorm teachers" if len(cells) > 1
          else "one BatchNorm teacher") + " (`sre2l.teacher`, test figures): "
          + "; ".join(parts) + ".")


def report_markdown(results: list[dict], dataset: str = "fmnist") -> str:
  by_key = collections.defaultdict(list)
  splits_seen, machines = set(), set()
  for r in results:
    grid, protocol_dir = grid_archive.grid_and_variant(r["_path"])
    label = "hard" if r["recipe"]["labels"] == "hard" else "soft"
    by_key[(grid, r.get("_variant") or r["method"], r["ipc"], label)].append(r)
    if grid == "main":  # the ablation names its own split
      splits_seen.add(report.portable_name(r.get("test_split", f"{r['dataset']} test")))
    env = r.get("environment", {})
    machines.add(f"{env.get('backend', '?')} ({env.get('machine', '?')}), jax {env.get('jax')}"
                 + (f", {env['conv_path']} CPU layers" if env.get("conv_path") else ""))
  for rs in by_key.values():  # a cell rerun at another schedule: rs[-1] is the newest record
    rs.sort(key=lambda r: str(r.get("created", "")))
  published = PUBLISHED.get(dataset, ())
  ipcs = sorted({k[2] for k in by_key if k[0] == "main"} | set(PUBLISHED_IPCS))
  lines = [f"# {TITLES[dataset]}: pruning, distillation and PCA under one protocol", "",
           "ConvNet-3 students trained on the compressed set, top-1 (%) on "
           + (", ".join(sorted(splits_seen)) or "the ablation's split") + "; mean ± std over seeds (ddof 0). "
           "Cells note a schedule shorter than the protocol's, a seed count other than 5, "
           "pooled selection seeds (mean ± std over every student of every selection), and a "
           "backend other than the CPU (`on gpu`: run by scripts/gpu_check.sh's grid step). "
           "Produced by `experiments/fmnist_grid.py report` from real runs on "
           + "; ".join(sorted(machines)) + ".", ""]
  main_cells = {k for k in by_key if k[0] == "main" and k[1] in MAIN_METHODS}
  full = len(MAIN_METHODS) * len(PUBLISHED_IPCS) * 2
  short = sorted(k for k in main_cells if _short(by_key[k][-1], k[1]))
  if len(main_cells) < full or short:
    lines += [f"**Reduced grid**: {len(main_cells)} of the {full} cells of the full grid "
              f"({len(MAIN_METHODS)} methods x IPC {'/'.join(map(str, PUBLISHED_IPCS))} x "
              f"hard/soft labels, {ISSUE_STUDENTS} students per selection, selection seeds "
              + "/".join(str(ISSUE_SELECTIONS[i]) for i in PUBLISHED_IPCS)
              + f" for {', '.join(DISPLAY[m] for m in SELECTION_RANDOM if m in MAIN_METHODS)}) ran; a missing cell "
              f"shows —" + (f"; {len(short)} ran with fewer students or selections (their "
                            "cells say how many)" if short else "") + ".", ""]
  for label in ("hard", "soft"):
    keys = [k for k in by_key if k[0] == "main" and k[3] == label]
    if not keys:
      continue
    # The table's protocol is its most common one; cells run under another say so.
    protocol = collections.Counter(by_key[k][-1]["protocol"] for k in keys).most_common(1)[0][0]
    recipe = next(by_key[k][-1]["recipe"] for k in keys if by_key[k][-1]["protocol"] == protocol)
    lines += [f"## {label.capitalize()} labels (protocol `{protocol}`: "
              f"{recipe['optimizer']} lr {recipe['lr']}, batch {recipe['batch_size']}, "
              f"augment {recipe['augment']}, mixing {recipe.get('mixing')})", "",
              "| method | " + " | ".join(f"IPC {i}" for i in ipcs) + " |",
              "|---|" + "---:|" * len(ipcs)]
    methods = [m for m in (*MAIN_METHODS, *VARIANTS) if any(k[1] == m for k in keys)]
    methods += sorted({k[1] for k in keys} - set(methods))
    for m in methods:
      row = [_cell_text(by_key[("main", m, i, label)], protocol, recipe["augment"])
             if by_key.get(("main", m, i, label)) else "—" for i in ipcs]
      lines.append(f"| {DISPLAY.get(m, m)} | " + " | ".join(row) + " |")
    if label == "hard":
      for name, kind, accs in published:
        pub = dict(zip(PUBLISHED_IPCS, accs))
        lines.append(f"| {name} (published, {kind}) | "
                     + " | ".join(f"{pub[i]:.1f}" if i in pub else "—" for i in ipcs) + " |")
    lines.append("")
    if label == "hard" and dataset in PUBLISHED_NOTES:
      lines += [PUBLISHED_NOTES[dataset], ""]
    shown = [m for m in ROW_NOTES if any(k[1] == m for k in keys)]
    if shown:
      lines += [" ".join(ROW_NOTES[m] for m in shown), ""]
  cells = [r for k, rs in by_key.items() if k[0] == "main" for r in rs]
  provenance = " ".join(x for x in (teacher_line(cells), score_file_line(cells),
                                     sre2l_teacher_line(cells)) if x)
  if provenance:
    lines += [provenance, ""]
  main = {(m, ipc, label): rs[-1] for (grid, m, ipc, label), rs in by_key.items()
          if grid == "main"}
  stem = DATASETS[dataset][2]  # write_report's plots, beside this file
  if main:
    lines += [f"![top-1 against images per class, hard and soft labels]({stem}_acc_vs_ipc.png)",
              ""]
  by_ipc = {ipc: [(n, accs[i]) for n, _, accs in published]
            for i, ipc in enumerate(PUBLISHED_IPCS)}
  lines += (grid_findings.findings_markdown(main, DISPLAY, by_ipc)
            + grid_findings.storage_markdown(main))
  if main:
    lines += [f"![top-1 against stored bytes (images + soft-label file), hard and soft labels "
              f"on one axis]({stem}_acc_vs_storage.png)", ""]
  abl = [k for k in by_key if k[0] == "ablation"]
  if abl:
    aipcs = sorted({k[2] for k in abl})
    rs = [r for k in abl for r in by_key[k]]
    where = sorted({report.portable_name(r.get("test_split", "?"))
                    + f" ({r.get('test_examples', '?')} images)" for r in rs})
    lines += ["## PCA ablation (hard labels)", "",
              "Tested on " + "; ".join(where) + ". Protocol "
              + ", ".join(sorted({f"`{r['protocol']}`" for r in rs}))
              + "; IPC counts stored images (a k×k tile stores k² source images).", "",
              "| variant | k | augmentation | epochs | " + " | ".join(f"IPC {i}" for i in aipcs)
              + " |", "|---|---:|---|---:|" + "---:|" * len(aipcs)]
    for variant in ABLATION:
      found = [by_key[("ablation", variant, i, "hard")][-1] for i in aipcs
               if by_key.get(("ablation", variant, i, "hard"))]
      if not found:
        continue
      r = found[0]
      aug = r["recipe"]["augment"]
      scale = (r.get("config") or {}).get("eval", {}).get("crop_scale")
      if scale:
        aug += f" (scale {scale[0]}-{scale[1]})"
      row = [_cell_text(by_key[("ablation", variant, i, "hard")])
             if by_key.get(("ablation", variant, i, "hard")) else "—" for i in aipcs]
      lines.append(f"| {variant} | {r.get('combine_k', 1)} | {aug} | {r['recipe']['epochs']} | "
                   + " | ".join(row) + " |")
    lines.append("")
    if any(r.get("_variant") for r in rs):  # write_report plots the same cells
      lines += [f"![the PCA ablation's variants per IPC]({stem}_ablation.png)", ""]
  return "\n".join(lines)


def _ablation_name(path: str) -> str | None:
  base = os.path.basename(os.path.normpath(path)).rsplit("_ipc", 1)[0]
  for name in ABLATION:
    if _slug(name) == base:
      return name
  return None


def pool_selections(results: list[dict]) -> list[dict]:
  """One result per cell: the runs of a cell's selection-seed directories (`..._sel<s>`)
  pooled, mean and std (ddof 0) over all of them; `_selection_seeds` lists the selections and
  `_selection_means` their own means."""
  groups = collections.defaultdict(list)
  for r in results:
    groups[re.sub(r"_sel\d+$", "", os.path.dirname(r["_path"]))].append(r)
  pooled = []
  for cell, rs in groups.items():
    rs = sorted(rs, key=lambda r: r.get("selection_seed", 0))
    if len(rs) == 1:
      pooled.append(rs[0])
      continue
    top1 = np.array([x["top1"] for r in rs for x in r["runs"]])
    top5 = np.array([x["top5"] for r in rs for x in r["runs"]])
    pooled.append(dict(rs[0], _path=os.path.join(cell, "results.json"),
                       runs=[x for r in rs for x in r["runs"]],
                       top1_mean=float(top1.mean()), top1_std=float(top1.std()),
                       top5_mean=float(top5.mean()), top5_std=float(top5.std()),
                       _selection_seeds=[r.get("selection_seed", 0) for r in rs],
                       _backends=[r.get("environment", {}).get("backend", "cpu") for r in rs],
                       _teachers=[r.get("teacher") or r.get("feature_teacher") for r in rs],
                       _score_files=[(r.get("score_file"), r.get("score_sha256")) for r in rs],
                       _sre2l_teachers=[r.get("sre2l_teacher") for r in rs],
                       _storages=[r["storage"] for r in rs],
                       _selection_means=[r["top1_mean"] for r in rs]))
  return pooled


def write_report(root: str, out: str, dataset: str = "fmnist") -> str:
  subdir, name = DATASETS[dataset][1], DATASETS[dataset][2]
  if subdir:
    root = os.path.join(root, subdir)
  # Only the grid's own cells (main/ or ablation/, then the label kind, then the cell): a run
  # root also holds SRe2L's recover sweep (validation-split cells) and anything else.
  paths = [p for p in report._find(root) if grid_archive.grid_cell(os.path.relpath(p, root))]
  if dataset == "fmnist":  # the other datasets' grids live in their own subfolders
    others = [os.path.join(os.path.abspath(root), d[1]) + os.sep for d in DATASETS.values() if d[1]]
    paths = [p for p in paths if not os.path.abspath(p).startswith(tuple(others))]
  results = []
  for p in paths:
    r = report.load_result(p)
    r["_path"] = p
    if grid_archive.grid_and_variant(p)[0] == "ablation":
      r["_variant"] = _ablation_name(os.path.dirname(p))
    else:  # the cell's method name (a PCA run's results.json says el2n_easy)
      r["_variant"] = os.path.basename(os.path.dirname(p)).rsplit("_ipc", 1)[0]
    results.append(r)
  if not results:
    raise SystemExit(f"error: no results.json under {root}")
  results = pool_selections(results)
  os.makedirs(out, exist_ok=True)
  md = report_markdown(results, dataset)
  with open(os.path.join(out, f"{name}.md"), "w", encoding="utf-8") as f:
    f.write(md)
  # One line per method and protocol across IPCs, named as in the table; the schedule of each
  # point (some IPCs ran reduced) is in the table, not in the legend.
  # Accuracy vs IPC: one panel per label kind (the plots' panels are per dataset), each method
  # one colour in both, one accuracy axis for both, so the soft - hard gap reads across.
  # Panels titled by the dataset's name, lines' protocols by their label kind.
  main = [dict(r, method=DISPLAY.get(r["_variant"], r["_variant"]), dataset=TITLES[dataset],
               protocol=("hard" if r["recipe"]["labels"] == "hard" else "soft") + " labels",
               recipe={k: v for k, v in r["recipe"].items() if k != "epochs"})
          for r in results if grid_archive.grid_and_variant(r["_path"])[0] == "main"]
  if main:
    report.plot_accuracy_vs_ipc(
        [dict(r, dataset=f"{r['dataset']}, {r['protocol']}") for r in main],
        os.path.join(out, f"{name}_acc_vs_ipc.png"), sharey=True)
    # Storage: hard and soft labels in one panel, on one byte axis, so what the label file adds
    # (finding 3) is the distance between a method's two lines.
    report.plot_accuracy_vs_storage(main, os.path.join(out, f"{name}_acc_vs_storage.png"))
  ablation = [r for r in results if grid_archive.grid_and_variant(r["_path"])[0] == "ablation"
              and r["_variant"]]
  if ablation:
    plot_ablation(ablation, os.path.join(out, f"{name}_ablation.png"))
  return md


def plot_ablation(results: list[dict], path: str) -> None:
  """Horizontal bars: top-1 of every ablation variant (mean ± std over seeds), one panel per
  IPC, variants in ABLATION's order, the split named in the title."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  ipcs = sorted({r["ipc"] for r in results})
  names = [n for n in ABLATION if any(r["_variant"] == n for r in results)]
  fig = Figure(figsize=(5.0 * len(ipcs), 0.45 * len(names) + 1.4), layout="constrained")
  FigureCanvasAgg(fig)
  for ax, ipc in zip(fig.subplots(1, len(ipcs), squeeze=False)[0], ipcs):
    cell = {r["_variant"]: r for r in results if r["ipc"] == ipc}  # newest last wins
    ys = list(range(len(names)))[::-1]
    means = [cell[n]["top1_mean"] if n in cell else 0.0 for n in names]
    stds = [cell[n]["top1_std"] if n in cell else 0.0 for n in names]
    ax.barh(ys, means, xerr=stds, capsize=3, color="tab:blue", alpha=0.8)
    for y, n, m in zip(ys, names, means):
      if n in cell:
        k = len(cell[n]["runs"])
        ax.annotate(f"{m:.1f} ({k} seed{'s' * (k > 1)})", (m, y), xytext=(4, -3),
                    textcoords="offset points", fontsize=7)
    ax.set_yticks(ys, names, fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("top-1 accuracy (%)")
    split = sorted({report.portable_name(r.get("test_split", "?")) for r in cell.values()})
    ax.set_title(f"IPC {ipc} — " + "; ".join(split), fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)


def positive_int(text: str) -> int:
  """argparse type: an integer >= 1."""
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
  return value


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  cell_args = argparse.ArgumentParser(add_help=False)  # shared by run and status
  cell_args.add_argument("--root", required=True)
  cell_args.add_argument("--dataset", choices=tuple(DATASETS), default="fmnist")
  cell_args.add_argument("--grid", choices=("main", "ablation"), default="main")
  cell_args.add_argument("--methods", default=",".join(MAIN_METHODS))
  cell_args.add_argument("--variants", default=",".join(ABLATION),
                         help="ablation variants to run (names as in ABLATION, comma-separated)")
  cell_args.add_argument("--ipcs", default="1,10,50")
  cell_args.add_argument("--protocols", default="hard,soft")
  cell_args.add_argument("--hard-protocol", default="small_data", choices=("small_data", "hard"))
  cell_args.add_argument("--seeds", type=int, default=5)
  cell_args.add_argument("--selection-seeds", default="",
                         help="per-IPC selection seeds of the SELECTION_RANDOM methods, e.g. "
                              "'1:5,10:2,50:2' (default one: seed 0)")
  cell_args.add_argument("--epochs", default="",
                         help="per-IPC epochs, e.g. '50:60' (reduced grid)")
  cell_args.add_argument("--validation-per-class", type=int, default=0,
                         help="test on examples held out of the training split (settings search)")
  cell_args.add_argument("extra", nargs="*", help="more main.py flags, after --")
  r = sub.add_parser("run", parents=[cell_args], help="run (or resume) the grid")
  r.add_argument("--dry-run", action="store_true", help="print the commands only")
  r.add_argument("--background", action="store_true",
                 help="start this run detached (nice -n 19), log in ROOT/grid.log")
  r.add_argument("--stop-after", type=float, default=None, metavar="S",
                 help="start no cell after S seconds (a time-boxed machine, e.g. a lent GPU)")
  r.add_argument("--workers", type=positive_int, default=1, metavar="N",
                 help="run N cells at once, each on its share of the CPUs (a machine with "
                      "more cores than one student uses well, or one GPU many small cells "
                      "leave idle); results differ from one worker's at float rounding")
  sub.add_parser("status", parents=[cell_args],
                 help="cells done / left and an ETA for these cell arguments; runs nothing")
  a = sub.add_parser("archive", help="copy every finished cell's results.json into TO (the "
                                     "repository's record; `cp -rn TO/. RUNS/` skips them again)")
  a.add_argument("--root", required=True)
  a.add_argument("--to", default=os.path.join(ROOT_DIR, "results", "grid_runs"))
  p = sub.add_parser("report", help="write OUT/<dataset>.md and its plots")
  p.add_argument("--root", required=True)
  p.add_argument("--dataset", choices=tuple(DATASETS), default="fmnist")
  p.add_argument("--out", default=os.path.join(ROOT_DIR, "results"))
  return parser


def _check_cell_args(parser: argparse.ArgumentParser, args) -> None:
  """Validates run / status arguments (errors exit through parser.error) and adds the maps."""
  try:
    args.epochs_map = _epochs_map(args.epochs)
    args.selection_map = _epochs_map(args.selection_seeds)
  except ValueError:
    parser.error(f"--epochs / --selection-seeds take IPC:N,... (e.g. '1:5,10:2'), got "
                 f"{args.epochs!r} / {args.selection_seeds!r}")
  if any(n < 1 for n in args.selection_map.values()):
    parser.error("--selection-seeds counts must be >= 1")
  if args.grid == "main":
    unknown = set(args.methods.split(",")) - set(DISPLAY)
    if unknown:
      parser.error(f"unknown methods {sorted(unknown)}; choose from {sorted(DISPLAY)}")
    methods, asked = set(args.methods.split(",")), set(args.protocols.split(","))
    if methods <= set(VARIANTS) and not any(asked & set(VARIANTS[m][2]) for m in methods):
      kinds = sorted({p for m in methods for p in VARIANTS[m][2]})
      parser.error(f"{args.methods} runs at {' / '.join(kinds)} labels only; add --protocols "
                   f"{','.join(kinds)}")
  else:
    unknown = set(args.variants.split(",")) - set(ABLATION)
    if unknown:
      parser.error(f"unknown variants {sorted(unknown)}; choose from {list(ABLATION)}")


def plan(argv: list[str]) -> tuple[list[dict], int, str]:
  """(cells, seeds, root) of `run`'s arguments, without running anything (the queue's status)."""
  parser = _parser()
  args = parser.parse_args(["status", *argv])
  _check_cell_args(parser, args)
  return cells(args), args.seeds, args.root


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = _parser()
  args = parser.parse_args(argv)
  if args.command == "report":
    print(write_report(args.root, args.out, args.dataset))
    return 0
  if args.command == "archive":
    return grid_archive.archive_command(parser, args.root, args.to)
  _check_cell_args(parser, args)
  if args.command == "status":
    todo = cells(args)
    print(progress_line(progress(todo, args.seeds, args.root)))
    for cell in todo:
      n = _finished_seeds(cell["workdir"])
      if n < args.seeds:
        n = max(n, len(grid_archive.finished_students(cell["workdir"])))
        print(f"  {cell['name']}: {n}/{args.seeds} seeds")
    return 0
  if args.background and not args.dry_run:
    return start_background(args.root, argv)
  return run(args)


if __name__ == "__main__":
  sys.exit(main())
