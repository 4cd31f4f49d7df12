"""Merge many benchmark workdirs into one table (CSV, Markdown) and two plots.

Each run's `results.json` (written by `dcjax.benchmark.run`) is one result; `collect` finds them,
`to_rows` flattens them into one row each, `write_csv` / `to_markdown` tabulate the rows, and
`plot_accuracy_vs_ipc` / `plot_accuracy_vs_storage` draw top-1 accuracy against images per class
and against stored bytes; `write` does all of it for a list of workdirs (the `dcjax report`
command and experiments/report.py).
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from numbers import Real
from typing import Any, Mapping

from dcjax.benchmark import results as results_schema
from dcjax.errors import UserError

RESULTS = results_schema.FILENAME  # the name dcjax.benchmark writes

ROW_FIELDS = ("dataset", "model", "protocol", "method", "ipc", "n_seeds", "top1", "top5",
              "image_bytes", "soft_label_bytes", "total_bytes", "epochs")
# DD-Ranking's fairness scores of evaluated sets (dcjax.benchmark.fairness): columns shown when
# any row has them ("" elsewhere).
FAIRNESS_FIELDS = ("ior", "hlr", "lrs")

# Field -> accepted type(s), from the one schema (dcjax.benchmark.results).
_REQUIRED: dict[str, Any] = results_schema.REQUIRED


# ---- finding and loading results ----

def _expand(path_or_glob: str) -> list[str]:
  if any(c in path_or_glob for c in "*?["):  # glob syntax (a literal '[' in a name is rare)
    paths = sorted(glob.glob(path_or_glob, recursive=True))
    if not paths:
      raise UserError(f"{path_or_glob!r} matches nothing")
    return paths
  if not os.path.exists(path_or_glob):
    raise UserError(f"no such file or directory: {path_or_glob}")
  return [path_or_glob]


def _find(path: str) -> list[str]:
  """The results.json files at or under `path` (a results.json or a directory), sorted."""
  if os.path.isfile(path):
    if os.path.basename(path) != RESULTS:
      raise UserError(f"{path} is neither a directory nor a {RESULTS}")
    return [path]
  found = []
  for root, dirs, files in os.walk(path):
    dirs.sort()  # deterministic order, whatever the file system's
    if RESULTS in files:
      found.append(os.path.join(root, RESULTS))
  return found


def _validate(result: Any, path: str) -> dict:
  def bad(why: str) -> UserError:
    return UserError(f"malformed {path}: {why}")

  if not isinstance(result, dict):
    raise bad("not a JSON object")
  for field, kind in _REQUIRED.items():
    if field not in result:
      raise bad(f"missing field {field!r}")
    value = result[field]
    # bool is an int subclass; a true/false accuracy or ipc is still a mistake.
    if not isinstance(value, kind) or isinstance(value, bool):
      raise bad(f"field {field!r} has the wrong type ({type(value).__name__})")
  if not result["runs"] or not all(
      isinstance(r, dict) and isinstance(r.get("top1"), Real) for r in result["runs"]):
    raise bad("'runs' must be a non-empty list of objects with a numeric 'top1'")
  storage = result["storage"]
  if not isinstance(storage.get("image_bytes"), int):
    raise bad("'storage' needs an integer 'image_bytes'")
  if any(k.endswith("_bytes") and not isinstance(v, int) for k, v in storage.items()):
    raise bad("every 'storage' *_bytes entry must be an integer")
  if not isinstance(result.get("recipe", {}), dict):
    raise bad("'recipe' must be an object")
  return result


def load_result(path: str) -> dict:
  """One results.json, validated; UserError naming the file if it is unreadable or malformed."""
  try:
    with open(path, encoding="utf-8") as f:
      result = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"malformed {path}: {e}") from None
  return _validate(result, path)


def collect(paths_or_globs: str | Iterable[str]) -> list[dict]:
  """Every results.json under the given directories / files / glob patterns, loaded.

  Directories are searched recursively and those without a results.json are skipped; a path
  that does not exist, a pattern matching nothing, or a malformed results.json is a UserError.
  Each file is read once even if several arguments reach it. Each returned dict is the file's
  content plus "results_path", where it was read from.
  """
  if isinstance(paths_or_globs, str):
    paths_or_globs = [paths_or_globs]
  seen: set[str] = set()
  results = []
  for arg in paths_or_globs:
    for path in _expand(arg):
      for file in _find(path):
        real = os.path.realpath(file)
        if real in seen:
          continue
        seen.add(real)
        results.append(dict(load_result(file), results_path=file))
  return results


# ---- table ----

def total_bytes(result: dict) -> int:
  """What the compressed set costs to store with its labels, as the paper counts it: the images
  plus, for soft labels, the pre-computed label file (`soft_label_bytes`). The teacher
  (`teacher_bytes`) is the other way to give soft labels, relabelling on the fly instead of
  reading a file: one or the other is stored, never both, so it is not added here (the grid's
  storage table sets it beside the labels)."""
  storage = result["storage"]
  return int(storage["image_bytes"]) + int(storage.get("soft_label_bytes", 0))


def _sort_key(row: dict) -> tuple:
  return (row["dataset"], row["protocol"], row["ipc"], row["method"], row.get("model", ""))


def to_rows(results: Iterable[dict]) -> list[dict]:
  """One flat row per result with the ROW_FIELDS keys, sorted by dataset, protocol, ipc,
  method (then model). top1/top5 are "mean ± std" strings over seeds (2 decimals, in %)."""
  rows = []
  for r in results:
    storage = r["storage"]
    fair = r.get("fairness") or {}
    method = r["method"]
    if r.get("given"):  # an evaluated set: name it
      method = f"{method} {os.path.basename(os.path.normpath(r['given']['path']))}"
    rows.append(dict(
        dataset=r["dataset"], model=r["model"], protocol=r["protocol"], method=method,
        ipc=r["ipc"], n_seeds=len(r["runs"]),
        top1=f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f}",
        top5=f"{r['top5_mean']:.2f} ± {r['top5_std']:.2f}",
        image_bytes=storage["image_bytes"],
        soft_label_bytes=storage.get("soft_label_bytes", 0),
        total_bytes=total_bytes(r),
        epochs=r.get("recipe", {}).get("epochs", ""),
        ior=f"{fair['ior']:+.2f}" if "ior" in fair else "",
        hlr=f"{fair['hlr']:.2f}" if "hlr" in fair else "",
        lrs=f"{fair['lrs']:.3f}" if "lrs" in fair else ""))
  return sorted(rows, key=_sort_key)


def write_csv(rows: Sequence[dict], path: str) -> None:
  """Rows as a UTF-8 CSV with a header (ROW_FIELDS order; any extra keys after them)."""
  fields = list(ROW_FIELDS) + [k for k in (rows[0] if rows else {}) if k not in ROW_FIELDS]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)


def portable_name(name: str) -> str:
  """A dataset or split name without this machine's directories, for reports kept in a
  repository: 'parquet:/a/b/cifar10-jpeg[...] test' -> 'parquet:cifar10-jpeg[...] test'."""
  return _MACHINE_DIRS.sub(r"\1", name)


def portable_record(text: str, dirs: Mapping[str, str] | None = None) -> str:
  """A results.json text for a repository: its dataset and split names through portable_name,
  each directory of `dirs` (say the run's cache) written as its name there ('$DCJAX_CACHE'),
  and this user's home directory (where the default caches of teachers and score files live)
  written as '~', so the record names no directory of this machine."""
  home = os.path.expanduser("~").rstrip("/")
  text = portable_name(text)
  for path, name in (dirs or {}).items():
    text = re.sub(rf'"{re.escape(os.path.abspath(path).rstrip("/"))}/', f'"{name}/', text)
  if home and home != "/":  # a JSON text writes '/' unescaped, so the path is found as is
    text = re.sub(rf'"{re.escape(home)}/', '"~/', text)
  return text


# A parquet:/folder: source's absolute directories, up to its own name (which may carry
# [holdout ...] or [train:val]); also matched inside a JSON text, so no quote is crossed.
_MACHINE_DIRS = re.compile(r"(parquet:|folder:)/[^\[\]:\"]*/")


def human_bytes(n: int) -> str:
  """Decimal units (1 KB = 1000 B), as the benchmark's own log lines use."""
  for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
    if n >= size:
      return f"{n / size:.1f} {unit}"
  return f"{n} B"


def to_markdown(rows: Sequence[dict]) -> str:
  """A GitHub-flavoured Markdown table of the rows, sorted by dataset, protocol, ipc, method.

  Byte columns are shown human-readable (the CSV keeps exact integers); numbers right-aligned.
  """
  fields = list(ROW_FIELDS)
  if any(row.get("ior") for row in rows):
    fields += list(FAIRNESS_FIELDS)
  numeric = {"ipc", "n_seeds", "top1", "top5", "image_bytes", "soft_label_bytes",
             "total_bytes", "epochs", *FAIRNESS_FIELDS}

  def cell(field: str, value: Any) -> str:
    text = human_bytes(value) if field.endswith("_bytes") else str(value)
    return text.replace("|", "\\|")  # a '|' in a name would split the cell

  lines = ["| " + " | ".join(fields) + " |",
           "|" + "|".join("---:" if f in numeric else "---" for f in fields) + "|"]
  for row in sorted(rows, key=_sort_key):
    lines.append("| " + " | ".join(cell(f, row[f]) for f in fields) + " |")
  return "\n".join(lines) + "\n"


# ---- plots ----

def _points(results: Sequence[dict]) -> list[dict]:
  """Plotted points {dataset, label, ipc, bytes, mean, std}: one per (dataset, model, method, protocol, epochs, ipc), seeds of repeated runs pooled.

  A line is labelled "method (protocol)", plus the model and epochs where those vary for that
  method and protocol, so runs that differ only in those are not joined into one line.
  """
  if not results:
    raise UserError("no results to plot")
  epochs = lambda r: r.get("recipe", {}).get("epochs", "")
  groups: dict[tuple, list[dict]] = defaultdict(list)
  for r in results:
    groups[(r["dataset"], r["model"], r["method"], r["protocol"], epochs(r), r["ipc"])].append(r)
  # Models / epochs seen per (dataset, method, protocol) line.
  models, epochs_seen = defaultdict(set), defaultdict(set)
  for dataset, model, method, protocol, ep, _ in groups:
    models[dataset, method, protocol].add(model)
    epochs_seen[dataset, method, protocol].add(ep)
  points = []
  for (dataset, model, method, protocol, ep, ipc), rs in sorted(
      groups.items(), key=lambda kv: tuple(map(str, kv[0][:5])) + (kv[0][5],)):
    label = f"{method} ({protocol})"
    if len(models[dataset, method, protocol]) > 1:
      label += f" {model}"
    if len(epochs_seen[dataset, method, protocol]) > 1:
      label += f" {ep} ep"
    if len(rs) == 1:
      mean, std = rs[0]["top1_mean"], rs[0]["top1_std"]
    else:  # repeated runs of one setting: pool their seeds (std ddof=0, as results.json's)
      top1 = [run["top1"] for r in rs for run in r["runs"]]
      mean = sum(top1) / len(top1)
      std = math.sqrt(sum((t - mean) ** 2 for t in top1) / len(top1))
    points.append(dict(dataset=dataset, label=label, method=method, protocol=protocol,
                       ipc=ipc, mean=mean, std=std,
                       bytes=sum(total_bytes(r) for r in rs) / len(rs)))
  return points


# Line colours, one per method: matplotlib's ten, then hues none of them is close to (a
# translucent copy of a colour read as that colour: k-Center and SRe2L looked alike).
PALETTE = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9",
           "#000000", "#000080", "#e6ab02", "#008080", "#ff00ff", "#67001f", "#7fff00")


def _plot(points: list[dict], x: str, xlabel: str, path: str, annotate_ipc: bool,
          sharey: bool = False):
  """Draws and saves the figure; returns it (matplotlib's Figure) for inspection."""
  # The object-oriented API with an explicit Agg canvas: no pyplot global state, no GUI backend,
  # safe in scripts, tests and threads.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.lines import Line2D
  from matplotlib.ticker import FuncFormatter, NullFormatter, ScalarFormatter

  datasets = sorted({p["dataset"] for p in points})
  # One colour per method, one line style and marker per protocol, so that many lines (8
  # methods x 2 label protocols) stay tellable apart; the legend sits outside the axes.
  methods = sorted({p.get("method", p["label"]) for p in points})
  protocols = sorted({p.get("protocol", "") for p in points})
  color = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}
  style = {q: ("-", "--", ":", "-.")[i % 4] for i, q in enumerate(protocols)}
  marker = {q: "osD^"[i % 4] for i, q in enumerate(protocols)}
  fig = Figure(figsize=(5.5 * len(datasets) + 2.2, 4.2), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, len(datasets), squeeze=False, sharey=sharey)[0]
  for ax, dataset in zip(axes, datasets):
    lines: dict[str, list[dict]] = defaultdict(list)
    for p in points:
      if p["dataset"] == dataset:
        lines[p["label"]].append(p)
    for label, pts in sorted(lines.items()):
      pts = sorted(pts, key=lambda p: p[x])
      q = pts[0].get("protocol", "")
      ax.errorbar([p[x] for p in pts], [p["mean"] for p in pts], yerr=[p["std"] for p in pts],
                  marker=marker[q], linestyle=style[q], markersize=4, capsize=3, label=label,
                  color=color[pts[0].get("method", label)])
    if annotate_ipc:  # once per IPC and protocol, not at every point: the first protocol's
      # above its highest point, the others' below their lowest (one IPC's hard-label points
      # and a smaller IPC's soft-label ones can share a stretch of the byte axis)
      groups: dict[tuple, list[dict]] = defaultdict(list)
      for p in points:
        if p["dataset"] == dataset:
          groups[p["ipc"], p.get("protocol", "")].append(p)
      for (ipc, q), pts in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        above = q == protocols[0]
        end = (max if above else min)(pts, key=lambda p: p["mean"] + (p["std"] if above
                                                                      else -p["std"]))
        ax.annotate(f"ipc {ipc}" + (f", {q}" if len(protocols) > 1 else ""),
                    (end[x], end["mean"] + (end["std"] if above else -end["std"])),
                    textcoords="offset points", xytext=(0, 4 if above else -4), ha="center",
                    va="bottom" if above else "top", fontsize=7)
    ax.set_xscale("log")
    if x == "ipc":  # label the ipcs actually run, not powers of ten
      ticks = sorted({p["ipc"] for p in points if p["dataset"] == dataset})
      ax.set_xticks(ticks)
      ax.xaxis.set_major_formatter(ScalarFormatter())
      ax.xaxis.set_minor_formatter(NullFormatter())
    else:  # bytes: readable units on the decades only
      ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(int(v))))
      ax.xaxis.set_minor_formatter(NullFormatter())
      ticks = narrow_log_ticks([p[x] for p in points if p["dataset"] == dataset])
      if ticks:
        ax.set_xticks(ticks)
    ax.set_title(dataset)
    ax.set_xlabel(xlabel)
    if ax is axes[0] or not sharey:
      ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
  if all(p["label"] == f"{p.get('method')} ({p.get('protocol')})" for p in points):
    # Each line is one method under one protocol: a legend of methods (colours) and one of
    # protocols (line styles), not every pairing spelt out (22 entries for the grid's 11 rows).
    fig.legend([Line2D([], [], color=color[m]) for m in methods], methods, title="method",
               loc="outside right upper", fontsize=7, title_fontsize=8)
    if len(protocols) > 1:
      fig.legend([Line2D([], [], color="black", linestyle=style[q], marker=marker[q],
                         markersize=4) for q in protocols], protocols, title="protocol",
                 loc="outside right lower", fontsize=7, title_fontsize=8)
  else:
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:  # every label once, across panels
      for h, lab in zip(*ax.get_legend_handles_labels()):
        if lab not in labels:
          handles.append(h)
          labels.append(lab)
    fig.legend(handles, labels, loc="outside right upper", fontsize=7)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  return fig


def _round_sig(v: float, digits: int) -> float:
  return round(v, digits - 1 - math.floor(math.log10(abs(v)))) if v else 0.0


def narrow_log_ticks(xs: Sequence[float]) -> list[float] | None:
  """Ticks for a log axis whose data (the positive `xs`) spans fewer than two powers of ten,
  where the decades alone would label it with one tick or none: the ends, with the power of
  ten between them or else their geometric mean, with the fewest significant digits (2-5) that
  keep them apart. None where two or more powers of ten lie inside the range (the decades
  label the axis) or there is no positive value."""
  xs = [v for v in xs if v > 0]
  if not xs:
    return None
  lo, hi = min(xs), max(xs)
  decades = [10.0 ** p for p in range(math.ceil(math.log10(lo)), math.floor(math.log10(hi)) + 1)]
  if len(decades) > 1:
    return None
  span = (lo, decades[0] if decades else math.sqrt(lo * hi), hi)
  for digits in (2, 3, 4, 5):
    ticks = {_round_sig(v, digits) for v in span}
    if len(ticks) == len(set(span)):
      return sorted(ticks)
  return sorted(set(span))


def plot_accuracy_vs_ipc(results: Sequence[dict], path: str, sharey: bool = False) -> None:
  """Top-1 (mean ± std over seeds) against images per class (log x), one panel per dataset
  and one line per (method, protocol); saved as an image at `path` (format from its suffix).
  sharey: one accuracy axis for every panel (panels that are views of one dataset)."""
  _plot(_points(results), "ipc", "images per class", path, annotate_ipc=False, sharey=sharey)


def plot_accuracy_vs_storage(results: Sequence[dict], path: str) -> None:
  """Top-1 against total stored bytes (log x; see `total_bytes`), points labelled by ipc."""
  _plot(_points(results), "bytes", "stored bytes (images + soft-label file)", path,
        annotate_ipc=True)


def write(workdirs: Sequence[str], out: str) -> tuple[str, int]:
  """Every results.json under `workdirs` (directories, files or globs) -> out/results.csv,
  out/results.md, out/acc_vs_ipc.png and out/acc_vs_storage.png. Returns (the Markdown table,
  the number of results); a UserError, with nothing written, where none is found."""
  results = collect(workdirs)
  if not results:
    raise UserError(f"no {RESULTS} under {' '.join(workdirs)}")
  os.makedirs(out, exist_ok=True)
  rows = to_rows(results)
  markdown = to_markdown(rows)
  write_csv(rows, os.path.join(out, "results.csv"))
  with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
    f.write(markdown)
  plot_accuracy_vs_ipc(results, os.path.join(out, "acc_vs_ipc.png"))
  plot_accuracy_vs_storage(results, os.path.join(out, "acc_vs_storage.png"))
  return markdown, len(results)
