"""SRe2L's recover settings, chosen on the validation split (issue #15: no tuning on test).

  python experiments/sre2l_recover.py run --root RUNS [--datasets fmnist,cifar10] [--ipcs 10]
      [--settings NAME,...] [--seeds 3] [--dry-run]
  python experiments/sre2l_recover.py archive --root RUNS [--to results/sre2l_recover_runs]
  python experiments/sre2l_recover.py report --root results/sre2l_recover_runs --out results

Every cell is one `main.py` run of configs/sre2l.py (CIFAR-10: :cifar10_shared) on the
validation split (500 training images per class held out), into
RUNS/validation/<dataset>/<protocol>/<setting>_ipc<ipc>/, with experiments/fmnist_grid.py's
runner (a finished cell is skipped, an interrupted one resumes). The settings vary one recover
knob at a time around SRe2L's small-dataset recipe (its `recover_cifar.sh`, VILA-Lab/SRe2L:
1000 Adam iterations, lr 0.25, r_bn 0.01, first layer x10, 4 px roll jitter) plus a random
flip per batch (configs/benchmark.py's `sre2l`, the `default` setting; SRe2L flips in its
ImageNet and Tiny-ImageNet recovery, not in its CIFAR script: `no flip` is that script
exactly). Each setting is
trained with the teacher's soft labels (the protocol SRe2L is made for) and with hard labels
(small_data); one recovered set serves both (the recover cache is keyed by teacher and
settings). The choice is the best soft-label mean; the hard column answers "do synthesised
images collapse without soft labels" for every setting, not only the chosen one.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT_DIR)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fmnist_grid  # noqa: E402
import grid_archive  # noqa: E402
from dcjax.benchmark import workdir  # noqa: E402

DATASETS = {"fmnist": "", "cifar10": "cifar10_shared"}  # configs/sre2l.py argument
PROTOCOLS = {"soft": "soft", "hard": "small_data"}
VALIDATION_PER_CLASS = 500
SETTINGS = {  # name -> config.sre2l overrides (the default: SRe2L's CIFAR recipe + flips)
    "default": {},
    "lr 0.1": {"lr": 0.1},
    "lr 0.5": {"lr": 0.5},
    "r_bn 0.001": {"r_bn": 0.001},
    "r_bn 0.1": {"r_bn": 0.1},
    "r_bn 1": {"r_bn": 1.0},
    "iterations 500": {"iterations": 500},
    "iterations 2000": {"iterations": 2000},
    "first_bn x1": {"first_bn_multiplier": 1.0},
    "no jitter or flip": {"jitter": 0, "flip": False},
    "no flip": {"flip": False},  # SRe2L's recover_cifar.py as released (added 2026-12-07)
}


def slug(name: str) -> str:
  return "".join(c if c.isalnum() or c in ".-" else "_" for c in name)


def cells(args) -> list[dict]:
  out = []
  for dataset in args.datasets.split(","):
    config = os.path.join(ROOT_DIR, "configs", "sre2l.py")
    if DATASETS[dataset]:
      config += f":{DATASETS[dataset]}"
    for ipc in fmnist_grid._ints(args.ipcs):
      for setting in args.settings.split(","):
        for protocol, recipe in PROTOCOLS.items():
          flags = {"ipc": ipc, "seeds": args.seeds, "progress": False, "eval.protocol": recipe,
                   "data.validation_per_class": VALIDATION_PER_CLASS}
          flags |= {f"sre2l.{k}": v for k, v in SETTINGS[setting].items()}
          workdir = os.path.join(args.root, "validation", dataset, protocol,
                                 f"{slug(setting)}_ipc{ipc}")
          argv = [sys.executable, os.path.join(ROOT_DIR, "main.py"), f"--config={config}",
                  f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()]
          out.append(dict(name=f"{dataset} {setting} ipc={ipc} {protocol}", workdir=workdir,
                          argv=argv + args.extra, ipc=ipc, dataset=dataset,
                          labels=protocol))
  return out


def load(root: str) -> list[dict]:
  """(dataset, protocol, setting, ipc, result) of every finished cell under root."""
  out = []
  by_slug = {slug(name): name for name in SETTINGS}
  for path in sorted(glob.glob(os.path.join(root, "validation", "*", "*", "*", "results.json"))):
    cell = os.path.dirname(path)
    dataset, protocol = cell.split(os.sep)[-3:-1]
    setting, _, ipc = os.path.basename(cell).rpartition("_ipc")
    if setting not in by_slug or protocol not in PROTOCOLS or not ipc.isdigit():
      continue
    with open(path, encoding="utf-8") as f:
      out.append(dict(dataset=dataset, protocol=protocol, setting=by_slug[setting],
                      ipc=int(ipc), result=json.load(f)))
  return out


def _recover_cell(rel: str) -> bool:
  """A sweep cell's results.json, relative to the root: validation/<dataset>/<protocol>/<cell>/."""
  parts = rel.split(os.sep)
  return (len(parts) == 5 and parts[0] == "validation" and parts[1] in DATASETS
          and parts[2] in PROTOCOLS and parts[4] == "results.json")


def choose(rows: list[dict], dataset: str, ipc: int) -> str | None:
  """The setting with the best soft-label validation mean, if it is ahead of `default` (the
  recipe the config starts from) by more than one pooled std (sqrt of the mean of the two
  variances); otherwise `default` — the project's rule for every choice made on validation
  (README "PCA": a later setting replaces the current one only when it is ahead by more than
  one pooled std), so noise between eleven settings does not pick one. None: no soft cell finished."""
  soft = {r["setting"]: r["result"] for r in rows
          if (r["dataset"], r["ipc"], r["protocol"]) == (dataset, ipc, "soft")}
  if not soft:
    return None
  best = max(soft, key=lambda s: soft[s]["top1_mean"])
  base = soft.get("default")
  if base is None or best == "default":
    return best
  pooled = ((soft[best]["top1_std"] ** 2 + base["top1_std"] ** 2) / 2) ** 0.5
  return best if soft[best]["top1_mean"] - base["top1_mean"] > pooled else "default"


def recover_settings(sre2l: dict) -> dict:
  """What a config's `sre2l` block recovers with (cache locations dropped), JSON-normalised."""
  out = {k: v for k, v in sre2l.items() if k != "cache_dir"}
  out["teacher"] = {k: v for k, v in sre2l["teacher"].items() if k != "cache_dir"}
  return json.loads(json.dumps(out))


def config_settings(dataset: str) -> dict:
  """`recover_settings` of configs/sre2l.py as the grid's SRe2L cells of `dataset` load it."""
  import importlib
  config = importlib.import_module("configs.sre2l").get_config(DATASETS[dataset])
  return recover_settings(config.sre2l.to_dict())


def grid_ready(root: str, dataset: str, ipc: int = 10) -> str | None:
  """None if SRe2L's grid cells of `dataset` may run: the sweep under root has every setting's
  soft-label cell at `ipc` and configs/sre2l.py holds the chosen cell's recover settings (the
  ones its results.json records). Otherwise the reason, in a few words."""
  rows = [r for r in load(root) if (r["dataset"], r["ipc"]) == (dataset, ipc)]
  soft = {r["setting"]: r["result"] for r in rows if r["protocol"] == "soft"}
  if len(soft) < len(SETTINGS):
    return f"its recover sweep has finished {len(soft)} of {len(SETTINGS)} settings"
  best = choose(rows, dataset, ipc)
  want = recover_settings(soft[best]["config"]["sre2l"])
  held = config_settings(dataset)
  # As a resumed run compares configs: a field dcjax added later, unset (None), is no
  # difference (teacher.model_kwargs.impl is absent from the cells recorded before it).
  differ = workdir.config_differences(want, held)
  if differ:
    return (f"configs/sre2l.py does not hold the chosen setting {best!r} (differs in "
            f"{', '.join(d.split(' ')[0] for d in differ)}); put it there first")
  return None


def _seeds(n: int) -> str:
  return f"{n} seed" + ("s" if n != 1 else "")


def report_markdown(rows: list[dict]) -> str:
  lines = ["# SRe2L's recover settings on the validation split",
           "",
           "Generated by `experiments/sre2l_recover.py report` from the cells that finished. "
           f"Validation split: {VALIDATION_PER_CLASS} training images per class held out; the "
           "recover teacher and the soft-label teacher never see them. One recover knob "
           "varies at a time around SRe2L's small-dataset recipe (`recover_cifar.sh`: 1000 "
           "Adam iterations, lr 0.25 cosine, r_bn 0.01, first BatchNorm x10, 4 px roll jitter) "
           "plus a random flip per batch (`default`; `no flip` is SRe2L's CIFAR script "
           "exactly). The setting is "
           "chosen by the soft-label mean: the best one, if it is ahead of `default` by more "
           "than one pooled std, else `default`; hard labels (small_data) are shown for every "
           "setting to answer whether synthesised images collapse without soft labels. "
           "Cells ran with dcjax's direct CPU convolutions unless they name another path "
           "(results.json `environment.conv_path`; Winograd from 2026-12-06, `fused`, Winograd "
           "and the fused norm -> ReLU -> pool, from that evening): the paths compute "
           "the same function and differ by float rounding (BENCHMARKS.md).",
           ""]
  for dataset, ipc in sorted({(r["dataset"], r["ipc"]) for r in rows}):
    at = {(r["setting"], r["protocol"]): r["result"] for r in rows
          if (r["dataset"], r["ipc"]) == (dataset, ipc)}
    best = choose(rows, dataset, ipc)
    n = sum(1 for s in SETTINGS if (s, "soft") in at)
    mark = "chosen" if n == len(SETTINGS) else "leading"  # chosen once every setting finished
    lines += [f"## {dataset}, IPC {ipc}", "",
              "| setting | soft top-1 (%) | hard top-1 (%) |", "|---|---|---|"]
    for setting in SETTINGS:
      cols = []
      for protocol in PROTOCOLS:
        r = at.get((setting, protocol))
        conv = (r or {}).get("environment", {}).get("conv_path")
        cols.append("—" if r is None else
                    f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f} ({_seeds(len(r['runs']))}"
                    + (f", {conv} CPU layers" if conv and conv != "custom" else "") + ")")
      if cols == ["—", "—"]:
        continue
      name = f"**{setting}** ({mark})" if setting == best else setting
      lines.append(f"| {name} | {cols[0]} | {cols[1]} |")
    lines.append("")
    if best is not None:
      what = f"**{best}** ({SETTINGS[best] or 'SRe2L CIFAR recipe + flips'})"
      top = max((s for s in SETTINGS if (s, "soft") in at),
                key=lambda s: at[(s, "soft")]["top1_mean"])
      why = ("the best soft-label mean" if best == top else
             f"{top!r} is ahead by no more than one pooled std, so `default` stays")
      lines.append(f"Chosen: {what}, {why}, of the {n} settings."
                   if mark == "chosen" else
                   f"Leading so far: {what}, {why}, of the {n} of {len(SETTINGS)} settings that "
                   "finished; the choice is made when all have.")
      lines.append("")
  return "\n".join(lines)


def plot(rows: list[dict], path: str) -> bool:
  """Soft and hard validation top-1 per setting, one panel per (dataset, IPC)."""
  groups = sorted({(r["dataset"], r["ipc"]) for r in rows})
  if not groups:
    return False
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4), squeeze=False)
  for ax, (dataset, ipc) in zip(axes[0], groups):
    at = {(r["setting"], r["protocol"]): r["result"] for r in rows
          if (r["dataset"], r["ipc"]) == (dataset, ipc)}
    names = [s for s in SETTINGS if any((s, p) in at for p in PROTOCOLS)]
    x = np.arange(len(names))
    for i, protocol in enumerate(PROTOCOLS):
      means = [at[(s, protocol)]["top1_mean"] if (s, protocol) in at else np.nan for s in names]
      stds = [at[(s, protocol)]["top1_std"] if (s, protocol) in at else 0 for s in names]
      ax.bar(x + (i - 0.5) * 0.4, means, 0.4, yerr=stds, label=f"{protocol} labels")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"SRe2L recover settings: {dataset}, IPC {ipc}")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def write_report(root: str, out: str) -> str:
  rows = load(root)
  if not rows:
    raise SystemExit(f"error: no finished sre2l_recover cell under {root}")
  os.makedirs(out, exist_ok=True)
  text = report_markdown(rows)
  if plot(rows, os.path.join(out, "sre2l_recover.png")):
    text += "\n![soft and hard validation top-1 per recover setting](sre2l_recover.png)\n"
  path = os.path.join(out, "sre2l_recover.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return path


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  r = sub.add_parser("run", help="run (or resume) the settings' cells")
  r.add_argument("--root", required=True)
  r.add_argument("--datasets", default="fmnist")
  r.add_argument("--ipcs", default="10")
  r.add_argument("--settings", default=",".join(SETTINGS))
  r.add_argument("--seeds", type=int, default=3)
  r.add_argument("--dry-run", action="store_true", help="print the commands only")
  r.add_argument("--workers", type=fmnist_grid.positive_int, default=1, metavar="N",
                 help="run N cells at once (fmnist_grid.py run --workers)")
  r.add_argument("extra", nargs="*", help="more main.py flags, after --")
  a = sub.add_parser("archive", help="copy every finished cell's results.json into TO (the "
                     "record outlives the machine; scripts/grid_queue.sh seeds RUNS from it)")
  a.add_argument("--root", required=True)
  a.add_argument("--to", default=os.path.join(ROOT_DIR, "results", "sre2l_recover_runs"))
  p = sub.add_parser("report", help="write OUT/sre2l_recover.md and its figure")
  p.add_argument("--root", required=True)
  p.add_argument("--out", default=os.path.join(ROOT_DIR, "results"))
  return parser


def _check_run_args(parser: argparse.ArgumentParser, args) -> None:
  for name, allowed in (("datasets", DATASETS), ("settings", SETTINGS)):
    unknown = set(getattr(args, name).split(",")) - set(allowed)
    if unknown:
      parser.error(f"unknown {name} {sorted(unknown)}; choose from {list(allowed)}")
  try:
    fmnist_grid._ints(args.ipcs)
  except ValueError:
    parser.error(f"--ipcs takes comma-separated integers, got {args.ipcs!r}")


def plan(argv: list[str]) -> tuple[list[dict], int, str]:
  """(cells, seeds, root) of `run`'s arguments, without running anything (the queue's status)."""
  parser = _parser()
  args = parser.parse_args(["run", *argv])
  _check_run_args(parser, args)
  return cells(args), args.seeds, args.root


def main(argv: list[str] | None = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  if args.command == "report":
    print(write_report(args.root, args.out))
    return 0
  if args.command == "archive":
    return grid_archive.archive_command(parser, args.root, args.to, keep=_recover_cell,
                                        what="sre2l_recover")
  _check_run_args(parser, args)
  return fmnist_grid.run_cells(cells(args), args.seeds, args.dry_run, root=args.root,
                              workers=args.workers)


if __name__ == "__main__":
  sys.exit(main())
