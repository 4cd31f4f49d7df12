"""Issue #13's round trip on real data: dcjax's own Fashion-MNIST sets re-evaluated as given sets.

  python experiments/evaluate_roundtrip.py run --root RUNS [--seeds 1] [--ipc 10] [--dry-run]
  python experiments/evaluate_roundtrip.py report --root RUNS [--out results]

`run` makes three sets with the benchmark (random and herding: configs/benchmark.py; PCA:
configs/pca.py:full, EL2N-easy, 2x2 tiles) into RUNS/<set>/original, then trains the same
student seeds on each set read back through configs/evaluate.py: as its `compressed/` folder
(dcjax manifest), as an `.npz` of its arrays, and (for the pruned sets, whose images are
training images) as a `.npy` list of the training-split indices behind it. The fairness
baselines are off: every run is the same students on the same pixels, so per-seed top-1, top-5
and final loss must be bitwise equal to the original's. Resumable (fmnist_grid's cell runner:
finished runs are skipped, an interrupted one resumes). `report` writes
OUT/evaluate_roundtrip.md from whatever finished.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT_DIR)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fmnist_grid  # noqa: E402

from dcjax.data import store  # noqa: E402

# set name -> (config, overrides of the original run, overrides an evaluation of it needs)
SETS = {
    "random": ("benchmark.py", {"method": "random"}, {}),
    "herding": ("benchmark.py", {"method": "herding"}, {}),
    "pca": ("pca.py:full", {}, {"combine.k": 2, "eval.augment": "tile_dsa"}),
}
KINDS = ("folder", "npz", "indices")  # the ways a set is read back


def _main_py(config: str, workdir: str, flags: dict) -> list[str]:
  return ([sys.executable, os.path.join(ROOT_DIR, "main.py"),
           f"--config={os.path.join(ROOT_DIR, 'configs', config)}", f"--workdir={workdir}"]
          + [f"--config.{k}={v}" for k, v in flags.items()])


def originals(root: str, ipc: int, seeds: int) -> list[dict]:
  return [dict(name=f"{name} ipc={ipc}: original", workdir=os.path.join(root, name, "original"),
               argv=_main_py(config, os.path.join(root, name, "original"),
                             {"ipc": ipc, "seeds": seeds, "progress": False} | flags))
          for name, (config, flags, _) in SETS.items()]


def derive(original_dir: str) -> dict[str, tuple[str, dict]]:
  """The given-set forms of a finished original run: kind -> (path, evaluate.py overrides)."""
  compressed = os.path.join(original_dir, "compressed")
  images, labels, manifest = store.read_compressed(compressed)
  out = {"folder": (compressed, {})}
  npz = os.path.join(original_dir, "set.npz")
  if not os.path.exists(npz):
    np.savez(npz + ".tmp.npz", images=images, labels=labels)
    os.replace(npz + ".tmp.npz", npz)
  out["npz"] = (npz, {"test_dataset": manifest["dataset"]})
  sources = [f["source_indices"] for f in manifest["files"]]
  if all(len(s) == 1 for s in sources):  # a pruned set: its images are training images
    idx = os.path.join(original_dir, "indices.npy")
    if not os.path.exists(idx):
      np.save(idx + ".tmp.npy", np.asarray([s[0] for s in sources], np.int64))
      os.replace(idx + ".tmp.npy", idx)
    out["indices"] = (idx, {"dataset": manifest["dataset"]})
  return out


def evaluations(root: str, ipc: int, seeds: int) -> list[dict]:
  todo = []
  for name, (_, _, needs) in SETS.items():
    original = os.path.join(root, name, "original")
    if fmnist_grid._finished_seeds(original) < seeds:
      continue  # its original has not finished: nothing to read back yet
    for kind, (path, flags) in derive(original).items():
      workdir = os.path.join(root, name, kind)
      todo.append(dict(name=f"{name} ipc={ipc}: as {kind}", workdir=workdir,
                       argv=_main_py("evaluate.py", workdir,
                                     {"compressed": path, "seeds": seeds, "progress": False,
                                      "fairness.enabled": False} | flags | needs)))
  return todo


def _results(workdir: str) -> dict | None:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _per_seed(r: dict) -> list[tuple]:
  return [(x["seed"], x["top1"], x["top5"], x["final_loss"]) for x in r["runs"]]


def _cpu() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    return f"{len(names)}-core {names[0]}"
  except (OSError, IndexError):
    return platform.machine()


def write_report(root: str, out: str) -> str:
  rows, verdicts = [], []
  for name in SETS:
    base = _results(os.path.join(root, name, "original"))
    if base is None:
      continue
    for kind in ("original",) + KINDS:
      r = base if kind == "original" else _results(os.path.join(root, name, kind))
      if r is None:
        continue
      same = "—" if kind == "original" else ("yes" if _per_seed(r) == _per_seed(base) else "**no**")
      if kind != "original":
        verdicts.append(same == "yes")
      read_as = {"original": "original benchmark run", "folder": "its `compressed/` folder",
                 "npz": "an `.npz` of its arrays", "indices": "a `.npy` index list"}[kind]
      combine = (r.get("config") or {}).get("combine", {})
      label = name + (f" (k={combine['k']}, {combine.get('resample')} kernel)"
                      if combine.get("k", 1) > 1 else "")
      for x in r["runs"]:
        rows.append(f"| {label} IPC {r['ipc']} | {read_as} | {x['seed']} | {x['top1']:.2f} | "
                    f"{x['top5']:.2f} | {x['final_loss']!r} | "
                    f"{r['storage']['image_bytes'] / 1000:.1f} KB | {same} |")
  import jax
  versions = (f"Python {platform.python_version()}, jax {jax.__version__}, "
              f"{_cpu()}")
  text = "\n".join([
      "# dcjax's own sets re-evaluated with `configs/evaluate.py` (issue #13)", "",
      f"Generated {datetime.date.today()} by `experiments/evaluate_roundtrip.py report` from "
      f"the runs that finished ({versions}). Fashion-MNIST, the small-data protocol (DSA on "
      "normalised images, 301 epochs), selection seed 0. \"original\" is the benchmark run that "
      "wrote the set (random / herding: `configs/benchmark.py --config.method=M`; PCA: "
      "`configs/pca.py:full`, EL2N-easy, 2x2 tiles); the other rows train the same student "
      "seeds on that set read back by `main.py --config=configs/evaluate.py "
      "--config.compressed=PATH --config.fairness.enabled=False` (a PCA set's tiles are "
      "combined images, not training images, so it has no index-list form). \"bitwise\": "
      "per-seed top-1, top-5 and final loss all equal to the original's. Stored bytes: the "
      "files given (PNG for a folder, raw uint8 for an `.npz`, the list itself for an index "
      "list).", "",
      "| set | read as | seed | top-1 % | top-5 % | final loss | stored | bitwise |",
      "|---|---|---:|---:|---:|---:|---:|:---:|", *rows, "",
      (f"{sum(verdicts)} of {len(verdicts)} read-backs bitwise equal to their original."
       if verdicts else "No read-back has finished yet."), ""])
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, "evaluate_roundtrip.md")
  with open(path, "w") as f:
    f.write(text)
  return path


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  r = sub.add_parser("run", help="run (or resume) the originals and their read-backs")
  r.add_argument("--root", required=True)
  r.add_argument("--ipc", type=int, default=10)
  r.add_argument("--seeds", type=int, default=1)
  r.add_argument("--dry-run", action="store_true", help="print the commands only")
  r.add_argument("extra", nargs="*", help="more main.py flags for every run, after --")
  p = sub.add_parser("report", help="write OUT/evaluate_roundtrip.md")
  p.add_argument("--root", required=True)
  p.add_argument("--out", default=os.path.join(ROOT_DIR, "results"))
  args = parser.parse_args(argv)
  if args.command == "report":
    print(write_report(args.root, args.out))
    return 0
  rc = 0
  for todo in (originals, evaluations):  # the read-backs need their originals' sets
    cells = todo(args.root, args.ipc, args.seeds)
    for cell in cells:
      cell["argv"] += args.extra
    rc = max(rc, fmnist_grid.run_cells(cells, args.seeds, args.dry_run))
  return rc


if __name__ == "__main__":
  sys.exit(main())
