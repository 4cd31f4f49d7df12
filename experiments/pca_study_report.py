"""The report of experiments/pca_study.py: OUT/pca_study.md and its figures, from whatever cells
have finished under RUNS (`python experiments/pca_study.py report --root RUNS --out OUT`).

Figures: pca_study_gap.png (the sharpness gap: each resampling's students on the sharp and on
the resampled split, the full-resolution random reference as a line), pca_study_acc_vs_ipc.png
(each selection method alone and as PCA's P step), pca_study_tiles.png (stored images of a
PCA cell, one row per class, so a reader sees what PCA stores).
"""

from __future__ import annotations

import collections
import os
import re
import sys
import textwrap

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT_DIR)

from dcjax.benchmark import report  # noqa: E402
from dcjax.data import store  # noqa: E402

DATASET_NAMES = {"fmnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
EARLIER = "pca_study_validation.md"  # a frozen report of cells whose results.json were lost
PART_TITLES = {
    "gap": "(a) The sharpness gap of Combine: random images, full resolution vs 2x2 tiles",
    "prune": "(b) Each selection method alone (k = 1) and as PCA's P step (k = 2)",
    "k": "(c) Tiles per side k",
    "augment": "(d) The training view: tile_dsa vs the paper's RandomResizedCrop in a tile",
    "ladder": "(e) Fashion-MNIST at 56 px: a 2x2 tile holds a whole 28 px image",
}


def load(root: str) -> list[dict]:
  """Every finished cell under root, with _path, _split, _dataset, _part, _cell from its path
  (root/<split>/<dataset>/<part>/<cell>_ipc<ipc>/results.json)."""
  out = []
  for path in report._find(root):
    r = report.load_result(path)
    parts = os.path.relpath(path, root).split(os.sep)
    if len(parts) != 5:
      continue
    r["_split"], r["_dataset"], r["_part"] = parts[:3]
    r["_cell"] = parts[3].rsplit("_ipc", 1)[0]
    r["_path"] = path
    out.append(r)
  return out


def _acc(mean: float, std: float, n: int) -> str:
  return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def _sharp(r: dict) -> str:
  n = len(r["runs"])
  return _acc(r["top1_mean"], r["top1_std"], n) + (
      "" if n in (3, 5) else f" ({n} seed{'s' * (n > 1)})")


def _resampled(r: dict) -> tuple[str, str]:
  t = r.get("resampled_test")
  if not t:
    return "—", "—"
  shift = t["top1_mean"] - r["top1_mean"]
  return _acc(t["top1_mean"], t["top1_std"], len(r["runs"])), f"{shift:+.2f}"


def _describe(r: dict) -> str:
  """What a cell ran, read back from its config: method, k, kernels, view, sharpening."""
  c = r.get("config") or {}
  ev, comb = c.get("eval", {}), c.get("combine", {})
  method = r["method"] if r["method"] != "pca" else f"pca[{c.get('pca', {}).get('prune')}]"
  k = comb.get("k", r.get("combine_k", 1))
  text = f"{method}, k={k}, {r['recipe']['augment']}"
  if k > 1:
    text += f", {comb.get('resample', 'linear')}↓ {ev.get('resample', 'linear')}↑"
  if ev.get("sharpen"):
    text += f", sharpen {ev['sharpen']:g}"
  if ev.get("crop_scale") and r["recipe"]["augment"] == "tile_crop":
    text += f", scale {ev['crop_scale'][0]:g}-{ev['crop_scale'][1]:g}"
  return text


_K2 = re.compile(r"_k_2$")
_KERNEL_SUFFIX = re.compile(r"_(?:linear|cubic|lanczos3|area|nearest)(?:_sharpen_[0-9.]+)?$")


def _row(part: str, cell: str) -> str:
  """A cell's row: outside the gap part the kernel is the one chosen per IPC (nearest at IPC
  10, area at IPC 1 on Fashion-MNIST), so 'PCA_random_area' at IPC 1 and 'PCA_random_nearest'
  at IPC 10 share the row 'PCA_random'; the setting column names each IPC's kernel."""
  return cell if part == "gap" else _KERNEL_SUFFIX.sub("", cell)


def _settings(rs: dict[int, dict]) -> str:
  texts = {ipc: _describe(r) for ipc, r in sorted(rs.items())}
  if len(set(texts.values())) == 1:
    return next(iter(texts.values()))
  return "; ".join(f"IPC {ipc}: {t}" for ipc, t in texts.items())


def _rows_by_part(results: list[dict]) -> dict:
  """(split, dataset, part) -> {(row, ipc): result}. The k part's k = 2 cell is the augment
  part's tile_dsa row, and the prune part's PCA row of its P where that part did not run it
  (the same set, view and kernel); augment cells run at another k (`--view-k`, named
  '..._k_3_tile_crop..._cubic') borrow the k part's cell at that k. A borrowed cell has the
  kernel of the cells it is compared with. Rows drop the kernel from the cell's name (_row)
  unless two cells of one part and IPC differ only by it: then each keeps its own row."""
  raw = collections.defaultdict(dict)  # (split, dataset, part) -> {(cell, ipc): result}
  for r in results:
    raw[r["_split"], r["_dataset"], r["_part"]][r["_cell"], r["ipc"]] = r
  for split, dataset, part in list(raw):
    if part in ("augment", "prune"):
      rows = raw[split, dataset, part]
      for (name, ipc), r in raw.get((split, dataset, "k"), {}).items():
        kernel = m.group(0) if (m := _KERNEL_SUFFIX.search(name)) else ""
        base = name[:len(name) - len(kernel)]
        if _K2.search(base):
          rows.setdefault((_K2.sub("_tile_dsa" if part == "augment" else "", base) + kernel,
                           ipc), r)
        elif part == "augment" and any(
            n.startswith(base + "_tile") and n.endswith(kernel) and i == ipc for n, i in rows):
          rows.setdefault((base + "_tile_dsa" + kernel, ipc), r)
  by = {}
  for (split, dataset, part), cells in raw.items():
    count = collections.Counter((_row(part, name), ipc) for name, ipc in cells)
    by[split, dataset, part] = {
        (_row(part, name) if count[_row(part, name), ipc] == 1 else name, ipc): r
        for (name, ipc), r in cells.items()}
  return by


def report_markdown(results: list[dict]) -> str:
  by = _rows_by_part(results)
  machines = sorted({f"{r['environment'].get('backend')} ({r['environment'].get('machine')}), "
                     f"jax {r['environment'].get('jax')}" for r in results})
  lines = ["# The PCA study (issue #14)", "",
           "ConvNet-3 students under the small-data protocol (SGD, DSA on normalised images, "
           "301 epochs), hard labels; top-1 (%) mean ± std over student seeds (ddof 0). "
           "IPC counts stored images: a 2x2 cell stores 4 x IPC source images per class at "
           "half resolution in the same number of images. Produced by "
           "`experiments/pca_study.py report` from real runs on " + "; ".join(machines) + ".",
           ""]
  for split in ("validation", "test"):
    keys = sorted({k for k in by if k[0] == split},
                  key=lambda k: (k[1], list(PART_TITLES).index(k[2])))
    if not keys:
      continue
    lines += [f"## {split.capitalize()} split" + (
        " (500 training images per class held out; choices are made here)"
        if split == "validation" else " (reported once, 5 seeds)"), ""]
    if split == "test":
      lines += against_the_best_baseline(results)
    for _, dataset, part in keys:
      cells = by[split, dataset, part]
      ipcs = sorted({ipc for _, ipc in cells})
      # Rows in the order the cells ran (pca_study.part_cells' order).
      first = {}
      for (name, _), r in cells.items():
        first[name] = min(first.get(name, r["created"]), r["created"])
      names = sorted(first, key=lambda n: (first[n], n))
      lines += [f"### {DATASET_NAMES.get(dataset, dataset)} — {PART_TITLES[part]}", ""]
      head = "| cell | setting | " + " | ".join(
          f"IPC {i} sharp | IPC {i} resampled | IPC {i} shift" for i in ipcs) + " |"
      lines += [head, "|---|---|" + "---:|---:|---:|" * len(ipcs)]
      for name in names:
        setting = _settings({i: cells[name, i] for i in ipcs if (name, i) in cells})
        row = []
        for i in ipcs:
          r = cells.get((name, i))
          row += [_sharp(r), *_resampled(r)] if r else ["—", "—", "—"]
        lines.append(f"| {name.replace('_', ' ')} | {setting} | "
                     + " | ".join(row) + " |")
      split_names = sorted({report.portable_name(r.get("test_split", "?"))
                            + f", {r.get('test_examples', '?')} images"
                            for r in cells.values()})
      lines += ["", "Tested on " + "; ".join(split_names) + ". *resampled*: the same students "
                "on that split passed through the cell's own down/up resampling "
                "(data.test_resample_size); *shift* = resampled − sharp, the train/test "
                "sharpness shift the cell leaves open.", ""]
  return "\n".join(lines)


def _setting(r: dict) -> tuple[str, str, str, int]:
  """A PCA cell's (P, kernel, view, k), as configs/pca.py's VALIDATED holds them."""
  c = r.get("config") or {}
  return (c.get("pca", {}).get("prune"), c.get("combine", {}).get("resample", "linear"),
          r["recipe"]["augment"], r["combine_k"])


def _validated(dataset: str, ipc: int) -> tuple[str, str, str, int] | None:
  from configs import pca  # pylint: disable=import-outside-toplevel
  return pca.VALIDATED.get((dataset, ipc))


def against_the_best_baseline(results: list[dict]) -> list[str]:
  """The issue's target on the test split: each 2x2 PCA cell on test (prune and augment
  parts) against the best selection method alone (k = 1, prune part) of the same dataset and
  stored-image budget; the cell of configs/pca.py's validated setting is marked, so an earlier
  setting's test figure stays visible without being the one reported."""
  rows = []
  tests = [r for r in results if r["_split"] == "test"]
  for dataset, ipc in sorted({(r["_dataset"], r["ipc"]) for r in tests}):
    here = [r for r in tests if (r["_dataset"], r["ipc"]) == (dataset, ipc)]
    baselines = [r for r in here if r["method"] != "pca" and r["_part"] == "prune"]
    if not baselines:
      continue
    best = max(baselines, key=lambda r: r["top1_mean"])
    chosen = _validated(dataset, ipc)
    pcas = [r for r in here if r["method"] == "pca" and r["combine_k"] > 1
            and r["_part"] in ("prune", "augment", "k")]
    for r in sorted(pcas, key=lambda r: (_setting(r) != chosen, -r["top1_mean"])):
      delta = r["top1_mean"] - best["top1_mean"]
      mark = " (configs/pca.py)" if _setting(r) == chosen else ""
      rows.append(f"| {DATASET_NAMES.get(dataset, dataset)} | {ipc} | {_describe(r)}{mark} | "
                  f"{_sharp(r)} | {best['method']} ({len(baselines)} compared) | {_sharp(best)} "
                  f"| {delta:+.2f} | {'yes' if delta >= 0 else 'no'} |")
  if not rows:
    return []
  return ["### PCA against the best real-image baseline of the same budget", "",
          "| dataset | IPC | PCA | PCA top-1 | best baseline | its top-1 | Δ | PCA ≥ best |",
          "|---|---:|---|---:|---|---:|---:|---|", *rows, "",
          "Baselines: the selection methods of the prune part that finished on test, each alone "
          "(k = 1, DSA) at the same number of stored images per class. *(configs/pca.py)*: the "
          "setting validated for that dataset and IPC (`VALIDATED`), the figure to quote; other "
          "rows are settings tested before a later validation choice replaced them.", ""]


def plot_gap(results: list[dict], path: str) -> bool:
  """Grouped bars per (dataset, IPC) panel: sharp and resampled top-1 of every tiled gap cell,
  the full-resolution random cell as a dashed line."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  gap = [r for r in results if r["_part"] == "gap" and r["_split"] == "validation"]
  panels = sorted({(r["_dataset"], r["ipc"]) for r in gap})
  if not panels:
    return False
  fig = Figure(figsize=(5.5 * len(panels), 4.2), layout="constrained")
  FigureCanvasAgg(fig)
  for ax, (dataset, ipc) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
    cells = sorted((r for r in gap if (r["_dataset"], r["ipc"]) == (dataset, ipc)),
                   key=lambda r: r["created"])  # the order the cells ran
    tiled = [r for r in cells if r.get("resampled_test")]
    xs = range(len(tiled))
    ax.bar([x - 0.2 for x in xs], [r["top1_mean"] for r in tiled], 0.4,
           yerr=[r["top1_std"] for r in tiled], label="sharp split", color="tab:blue")
    ax.bar([x + 0.2 for x in xs], [r["resampled_test"]["top1_mean"] for r in tiled], 0.4,
           yerr=[r["resampled_test"]["top1_std"] for r in tiled], label="resampled split",
           color="tab:orange")
    for r in cells:
      if not r.get("resampled_test"):
        ax.axhline(r["top1_mean"], color="k", ls="--", lw=1,
                   label=f"random {ipc}/class, full resolution")
    ax.set_xticks(list(xs), [r["_cell"].replace("random_2x2_", "").replace("_", " ")
                             for r in tiled], rotation=40, ha="right", fontsize=7)
    lo = min([r["top1_mean"] for r in cells] + [r["resampled_test"]["top1_mean"] for r in tiled])
    hi = max([r["top1_mean"] for r in cells] + [r["resampled_test"]["top1_mean"] for r in tiled])
    ax.set_ylim(max(0, lo - 10), min(100, hi + 10))  # room for the legend, differences visible
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)}, IPC {ipc}: random 4x{ipc}/class in "
                 "2x2 tiles", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(True, axis="y", alpha=0.3)
  fig.savefig(path, dpi=120)
  return True


def plot_prune(results: list[dict], path: str) -> bool:
  """Top-1 vs IPC, one panel per dataset on the test split (validation where a dataset has no
  test cell yet): each selection method alone (dashed), PCA with configs/pca.py's validated
  setting per IPC (thick black line; prune or augment part) and PCA with other P steps of the
  prune part (solid, thin)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  cells = [r for r in results if r["_part"] in ("prune", "augment", "k")]
  tested = {r["_dataset"] for r in cells if r["_split"] == "test"}
  panels = sorted({(r["_dataset"], r["_split"]) for r in cells
                   if r["_split"] == ("test" if r["_dataset"] in tested else "validation")})
  by_panel = {}
  for dataset, split in panels:
    lines = collections.defaultdict(list)
    for r in cells:
      if (r["_dataset"], r["_split"]) != (dataset, split):
        continue
      pca = r["method"] == "pca"
      if pca and _setting(r) == _validated(dataset, r["ipc"]):
        chosen = lines["PCA (configs/pca.py)", "chosen"]
        if r["ipc"] not in [c["ipc"] for c in chosen]:  # the k part's k = 2 = the prune part's
          chosen.append(r)
      elif r["_part"] == "prune":
        name = (r.get("config") or {}).get("pca", {}).get("prune") if pca else r["method"]
        label = f"PCA[{name}], k={r['combine_k']}, {r['recipe']['augment']}" if pca else name
        lines[label, "pca" if pca else "alone"].append(r)
    if lines:
      by_panel[dataset, split] = lines
  if not by_panel:
    return False
  fig = Figure(figsize=(5.5 * len(by_panel), 4.0), layout="constrained")
  FigureCanvasAgg(fig)
  colours = {}
  for ax, ((dataset, split), lines) in zip(fig.subplots(1, len(by_panel), squeeze=False)[0],
                                          by_panel.items()):
    for (label, kind), rs in sorted(lines.items(), key=lambda kv: (kv[0][1] != "chosen", kv[0])):
      rs.sort(key=lambda r: r["ipc"])
      style = dict(color="black", ls="-", lw=2.5, marker="o", zorder=3) if kind == "chosen" else (
          dict(color=colours.setdefault(re.sub(r"^PCA\[(\w+)\].*", r"\1", label),
                                        f"C{len(colours)}"),
               ls="-" if kind == "pca" else "--", lw=1, marker="o" if kind == "pca" else "s",
               alpha=0.6 if kind == "pca" else 1.0))
      ax.errorbar([r["ipc"] for r in rs], [r["top1_mean"] for r in rs],
                  yerr=[r["top1_std"] for r in rs], capsize=3, label=label, **style)
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["ipc"] for rs in lines.values() for r in rs}))
    ax.get_xaxis().set_major_formatter("{x:g}")
    ax.set_xlabel("stored images per class")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)} ({split})", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
  fig.savefig(path, dpi=120)
  return True


def tile_cells(results: list[dict]) -> dict[str, tuple[dict, str]]:
  """Per dataset, the PCA cell whose stored images the tile figure shows, with its set's
  folder: combined tiles (k > 1), the largest IPC (the most to see), the test split before
  validation, configs/pca.py's validated setting before others, the prune part before the k
  and augment parts; only cells whose compressed set is still there
  (`archive` keeps these sets, so the figure can be redrawn from the repository's record)."""
  picks = {}
  def order(r):
    return (-r["ipc"], r["_split"] != "test", _setting(r) != _validated(r["_dataset"], r["ipc"]),
            r["_part"] != "prune", r["_cell"])
  for r in sorted((r for r in results if r["method"] == "pca" and r["combine_k"] > 1), key=order):
    if r["_dataset"] not in picks:
      folder = os.path.join(os.path.dirname(r["_path"]), "compressed")
      if store.is_compressed_set(folder):
        picks[r["_dataset"]] = (r, folder)
  return picks


def plot_tiles(results: list[dict], path: str, per_class: int = 4) -> bool:
  """Stored images of each dataset's tile_cells pick: up to `per_class` per class, one row
  per class (blank where the class stores fewer), one panel per dataset."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  import numpy as np

  picks = tile_cells(results)
  if not picks:
    return False
  fig = Figure(figsize=(1.25 * per_class * len(picks) + 0.5, 8.5), layout="constrained")
  FigureCanvasAgg(fig)
  for ax, (dataset, (r, folder)) in zip(fig.subplots(1, len(picks), squeeze=False)[0],
                                        sorted(picks.items())):
    images, labels, manifest = store.read_compressed(folder)
    names = manifest.get("class_names") or [str(c) for c in range(int(labels.max()) + 1)]
    rows = []
    for c in range(int(labels.max()) + 1):
      mine = images[labels == c][:per_class]
      mine = np.concatenate([mine, np.full((per_class - len(mine), *images.shape[1:]), 255,
                                           images.dtype)]) if len(mine) < per_class else mine
      rows.append(np.concatenate(list(np.pad(mine, ((0, 0), (1, 1), (1, 1), (0, 0)),
                                             constant_values=255)), axis=1))
    grid = np.concatenate(rows, axis=0)
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray")
    ax.set_axis_off()
    ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)}, IPC {r['ipc']} ({r['_split']} run)\n"
                 f"{_describe(r)}\nrows: " + textwrap.fill(", ".join(names[:10]), 40),
                 fontsize=7)
  fig.savefig(path, dpi=120)
  return True


def write_report(root: str, out: str) -> str:
  results = load(root)
  if not results:
    raise SystemExit(f"error: no finished cell under {root}")
  os.makedirs(out, exist_ok=True)
  md = report_markdown(results)
  figures = [("pca_study_gap.png", plot_gap, "The sharpness gap"),
             ("pca_study_acc_vs_ipc.png", plot_prune, "Accuracy vs IPC per selection method"),
             ("pca_study_tiles.png", plot_tiles, "What PCA stores")]
  for name, plot, title in figures:
    if plot(results, os.path.join(out, name)):
      md += f"\n![{title}]({name})\n"
  if os.path.exists(os.path.join(out, EARLIER)):
    md += (f"\nThe validation cells of the session of 2026-12-03 (the sharpness gap, the prune "
           f"part at IPC 1 and 10, where configs/pca.py's kernels and P were chosen) are in "
           f"[{EARLIER}]({EARLIER}); their raw results were lost with that machine.\n")
  with open(os.path.join(out, "pca_study.md"), "w", encoding="utf-8") as f:
    f.write(md)
  return md
