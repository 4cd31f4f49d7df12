"""Score files: per-example scores saved once, reused by every pruning run on the same data.

A score file is one `.npz` (no pickle) holding

  <name>        float32 [M] per score, e.g. "el2n", "forgetting", "aum"
  __indices__   int64 [M], only if the rows are not the dataset's examples 0..N-1 in order:
                row r scores example __indices__[r]
  __meta__      uint8, a UTF-8 JSON object: format, format_version, dcjax_version, created
                (UTC, ISO 8601), dataset, split, fingerprint (`sources.fingerprint`), num_rows,
                scores (the names), score_config (how they were made: by convention model,
                epochs, k, seed, recipe, scores)

Keeping the provenance inside the one file means there is no sidecar to lose or to mismatch,
and one `os.replace` publishes arrays and metadata together: writes go to a temporary sibling
that is renamed into place, so a reader sees the previous file or the complete new one.

`load_scores` checks a file against the dataset it is used with (fingerprint, length, NaN) and
returns scores in dataset order; `import_scores` brings in one score array made elsewhere
(.npy / .npz / .txt / .csv), optionally with an index file mapping its rows to examples.

Host-side code: NumPy and JSON only.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

import dcjax
from dcjax.data.files import write_atomic
from dcjax.errors import UserError

FORMAT = "dcjax.scores"
FORMAT_VERSION = 1
META_KEY = "__meta__"
INDICES_KEY = "__indices__"
IMPORT_EXTENSIONS = (".npy", ".npz", ".txt", ".csv")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# Readable parts of a cache file name are cut to this length; the hash keeps names unique.
_PART_MAX = 40


def _some(indices: np.ndarray) -> str:
  """'[i, j, ...]': up to 5 of `indices`, for error messages."""
  return "[" + ", ".join(map(str, indices[:5])) + (", ..." if len(indices) > 5 else "") + "]"


def _canonical_json(obj: Any, what: str) -> str:
  try:
    return json.dumps(obj, sort_keys=True, allow_nan=False, separators=(",", ":"))
  except (TypeError, ValueError) as e:
    raise UserError(f"{what} must be JSON-serialisable (plain numbers, strings, lists, dicts): "
                    f"{e}") from None


# ---------------------------------------------------------------------------------------------
# Writing.


def _write_npz(f, arrays: dict[str, np.ndarray]) -> None:
  # One seam for the bytes that go to disk, so tests can crash a write half-way.
  np.savez(f, **arrays)


def _atomic_write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Writes `arrays` as an .npz at `path` atomically: the old file or the whole new one."""
  write_atomic(path, lambda f: _write_npz(f, arrays))


def _check_indices(indices: Any, m: int, who: str) -> np.ndarray:
  """Validates row -> example indices: integers [m], >= 0, distinct. Returns int64 [m]."""
  idx = np.asarray(indices)
  if idx.ndim == 2 and idx.shape[1] == 1:
    idx = idx[:, 0]
  if idx.ndim != 1 or idx.shape[0] != m:
    raise UserError(f"{who}: indices must be [M] with M={m} (one per score row), got shape "
                    f"{idx.shape}")
  if idx.dtype.kind == "f":  # e.g. read from a text file: accept whole numbers only
    bad = np.flatnonzero(~np.isfinite(idx) | (idx != np.round(idx)))
    if len(bad):
      raise UserError(f"{who}: indices must be whole numbers; rows {_some(bad)} are not")
    idx = idx.astype(np.int64)
  elif idx.dtype.kind not in "iu":
    raise UserError(f"{who}: indices must be integers, got dtype {idx.dtype}")
  idx = idx.astype(np.int64)
  if m and idx.min() < 0:
    raise UserError(f"{who}: indices must be >= 0; rows {_some(np.flatnonzero(idx < 0))} are "
                    "negative")
  uniq, counts = np.unique(idx, return_counts=True)
  if len(uniq) != m:
    raise UserError(f"{who}: indices must be distinct; {_some(uniq[counts > 1])} occur more "
                    "than once")
  return idx


def save_scores(path: str, scores: Mapping[str, np.ndarray], *, dataset: str, split: str,
                fingerprint: str, score_config: Mapping[str, Any],
                indices: np.ndarray | None = None) -> None:
  """Writes a score file (see the module docstring) atomically.

  Args:
    path: the .npz to write (its directory is created); an existing file is replaced.
    scores: {name: float [M]}, one or more, all of one length, no NaN; stored as float32.
    dataset, split: what the scores are of (e.g. "fashion_mnist", "train").
    fingerprint: `sources.fingerprint` of that dataset split.
    score_config: JSON-serialisable description of how the scores were made.
    indices: optional int [M], distinct: row r scores example indices[r]. None: row i is
      example i (then M is the dataset's length).
  Raises:
    UserError on bad input; nothing is written then.
  """
  if not isinstance(scores, Mapping) or not scores:
    raise UserError("save_scores needs at least one score: a dict {name: float array [N]}")
  arrays: dict[str, np.ndarray] = {}
  m = None
  for name, values in scores.items():
    if not isinstance(name, str) or not _NAME_RE.match(name):
      raise UserError(f"score name {name!r} must be letters, digits and _.+- (not starting "
                      "with _ or a symbol)")
    a = np.asarray(values)
    if a.ndim != 1 or a.dtype.kind not in "iuf":
      raise UserError(f"score {name!r} must be numbers [N], got {a.dtype} {a.shape}")
    if m is not None and a.shape[0] != m:
      raise UserError(f"scores have different lengths: {next(iter(scores))!r} has {m}, "
                      f"{name!r} has {a.shape[0]}")
    m = a.shape[0]
    a = a.astype(np.float32)
    nan = np.flatnonzero(np.isnan(a))
    if len(nan):
      raise UserError(f"score {name!r} is NaN at {len(nan)} row(s) {_some(nan)}; not saved")
    arrays[name] = a
  for what, value in (("dataset", dataset), ("split", split), ("fingerprint", fingerprint)):
    if not isinstance(value, str) or not value:
      raise UserError(f"save_scores: {what} must be a non-empty string, got {value!r}")
  if indices is not None:
    arrays[INDICES_KEY] = _check_indices(indices, m, "save_scores")
  meta = dict(format=FORMAT, format_version=FORMAT_VERSION, dcjax_version=dcjax.__version__,
              created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              dataset=dataset, split=split, fingerprint=fingerprint, num_rows=m,
              scores=list(scores), score_config=json.loads(_canonical_json(
                  dict(score_config), "score_config")))
  arrays[META_KEY] = np.frombuffer(json.dumps(meta, indent=1).encode(), np.uint8)
  _atomic_write_npz(path, arrays)


def score_path(cache_dir: str, dataset: str, split: str, score_config: Mapping[str, Any]) -> str:
  """Where the score file of (dataset, split, score_config) lives under `cache_dir`.

  The name is readable parts (dataset, split, and, where score_config has them, scores, model,
  epochs, k, seed) plus a 12-hex-digit sha256 of the canonical JSON of all three, so every
  distinct configuration (a different recipe too) gets its own file, e.g.
  `fashion_mnist-train-el2n+forgetting+aum-convnet-e20-k4-s0-1a2b3c4d5e6f.npz`.
  """
  config = dict(score_config)
  digest = hashlib.sha256(_canonical_json(
      dict(dataset=dataset, split=split, score_config=config), "score_config").encode())
  parts = [dataset, split]
  if "scores" in config:
    s = config["scores"]
    parts.append("+".join(map(str, s)) if isinstance(s, (list, tuple)) else str(s))
  for key, prefix in (("model", ""), ("epochs", "e"), ("k", "k"), ("seed", "s")):
    if key in config:
      parts.append(f"{prefix}{config[key]}")
  # Anything outside [A-Za-z0-9_.+-] (a path in "folder:/data/x", spaces) becomes "_".
  safe = [re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(p)).strip("._")[:_PART_MAX] or "_"
          for p in parts]
  return os.path.join(cache_dir, "-".join(safe) + f"-{digest.hexdigest()[:12]}.npz")


# ---------------------------------------------------------------------------------------------
# Reading.


def _read_meta(npz, path: str) -> dict:
  try:
    meta = json.loads(npz[META_KEY].tobytes().decode())
  except (KeyError, ValueError, UnicodeDecodeError):
    raise UserError(f"{path} is not a dcjax score file (no readable {META_KEY})") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise UserError(f"{path} is not a dcjax score file (format {meta.get('format')!r})"
                    if isinstance(meta, dict) else f"{path} is not a dcjax score file")
  if meta.get("format_version") != FORMAT_VERSION:
    raise UserError(f"{path} has score-file format version {meta.get('format_version')}; this "
                    f"dcjax reads version {FORMAT_VERSION}: recompute the scores")
  return meta


def _scatter(rows: dict[str, np.ndarray], indices: np.ndarray | None, n: int,
             what: str) -> dict[str, np.ndarray]:
  """Rows -> dataset order [n]; refuses indices >= n and examples no row covers."""
  if indices is None:
    return rows
  out_of_range = np.flatnonzero(indices >= n)
  if len(out_of_range):
    raise UserError(f"{what}: index {indices[out_of_range[0]]} (row {out_of_range[0]}) is "
                    f"outside the dataset's {n} examples ({len(out_of_range)} such row(s))")
  covered = np.zeros(n, bool)
  covered[indices] = True
  missing = np.flatnonzero(~covered)
  if len(missing):
    raise UserError(f"{what}: {len(missing)} of the dataset's {n} examples have no score, e.g. "
                    f"examples {_some(missing)}")
  out = {}
  for name, a in rows.items():
    full = np.empty(n, a.dtype)
    full[indices] = a
    out[name] = full
  return out


def _check_no_nan(name: str, a: np.ndarray, what: str) -> None:
  nan = np.flatnonzero(np.isnan(a))
  if len(nan):
    raise UserError(f"{what}: score {name!r} is NaN at {len(nan)} example(s), indices "
                    f"{_some(nan)}")


def load_scores(path: str, *, fingerprint: str, n: int) -> tuple[dict[str, np.ndarray], dict]:
  """Reads a score file for a dataset with `fingerprint` and `n` examples.

  Returns:
    ({name: float32 [n]} in dataset order, meta dict as written by `save_scores`).
  Raises:
    UserError if the file is missing or not a score file, or was made for other data (its
    fingerprint or length differs; both values are named), or holds NaN (up to 5 indices named).
  """
  if not os.path.isfile(path):
    raise UserError(f"score file {path} does not exist")
  try:
    with np.load(path, allow_pickle=False) as npz:
      meta = _read_meta(npz, path)
      names = [k for k in npz.files if k not in (META_KEY, INDICES_KEY)]
      rows = {k: npz[k] for k in names}
      indices = npz[INDICES_KEY] if INDICES_KEY in npz.files else None
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f"{path} is not a readable score file ({type(e).__name__}: {e})") from None
  if meta.get("fingerprint") != fingerprint:
    raise UserError(f"{path} was computed on other data: its fingerprint is "
                    f"{meta.get('fingerprint')}, this dataset's is {fingerprint} (dataset "
                    f"{meta.get('dataset')!r} split {meta.get('split')!r}); recompute the scores")
  m = int(meta.get("num_rows", -1))
  if indices is None and m != n:
    raise UserError(f"{path} holds scores for {m} examples, but the dataset has {n}; recompute "
                    "the scores")
  if not names or any(a.shape != (m,) for a in rows.values()) or (
      indices is not None and indices.shape != (m,)):
    raise UserError(f"{path} is damaged: its arrays do not all have the {m} rows its metadata "
                    "says")
  scores = _scatter(rows, indices, n, path)
  for name, a in scores.items():
    _check_no_nan(name, a, path)
  return {k: a.astype(np.float32) for k, a in scores.items()}, meta


# ---------------------------------------------------------------------------------------------
# Importing scores made elsewhere.


def _read_csv(path: str, name: str) -> np.ndarray:
  """One column of numbers: the only column, or the column whose header is `name`."""
  with open(path, newline="") as f:
    rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
  if not rows:
    raise UserError(f"{path} is empty")

  def numeric(row):
    try:
      [float(c) for c in row]
      return True
    except ValueError:
      return False

  header = None if numeric(rows[0]) else [c.strip() for c in rows[0]]
  body = rows[1:] if header else rows
  width = len(rows[0])
  if header is not None and name in header:
    col = header.index(name)
  elif width == 1:
    col = 0
  else:
    raise UserError(f"{path} has {width} columns; give a one-column file or a header row with "
                    f"a column named {name!r}" + (f" (header: {', '.join(header)})" if header
                                                   else ""))
  try:
    return np.array([float(r[col]) for r in body], np.float64)
  except (ValueError, IndexError):
    raise UserError(f"{path}: column {col} is not all numbers (rows of unequal length or text "
                    "below the header)") from None


def _read_array(path: str, name: str, what: str) -> np.ndarray:
  """A 1-D array from .npy / .npz / .txt / .csv (an [M, 1] column is accepted)."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in IMPORT_EXTENSIONS:
    raise UserError(f"{what} {path}: unknown extension {ext or '(none)'!r}; use one of "
                    f"{', '.join(IMPORT_EXTENSIONS)}")
  if not os.path.isfile(path):
    raise UserError(f"{what} {path} does not exist")
  try:
    if ext == ".npy":
      a = np.load(path, allow_pickle=False)
    elif ext == ".npz":
      with np.load(path, allow_pickle=False) as npz:
        keys = [k for k in npz.files if k not in (META_KEY, INDICES_KEY)]
        if name in npz.files:
          a = npz[name]
        elif len(keys) == 1:
          a = npz[keys[0]]
        else:
          raise UserError(f"{what} {path} holds arrays {', '.join(keys) or '(none)'}; name one "
                          f"of them (looked for {name!r})")
    elif ext == ".txt":
      a = np.loadtxt(path, dtype=np.float64, ndmin=1)
    else:
      a = _read_csv(path, name)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f"{what} {path} is not readable ({type(e).__name__}: {e})") from None
  if a.ndim == 2 and a.shape[1] == 1:
    a = a[:, 0]
  if a.ndim != 1 or a.dtype.kind not in "iuf":
    raise UserError(f"{what} {path} must hold one number per row [M], got {a.dtype} {a.shape}")
  return a


def import_scores(array_path: str, index_path: str | None, *, n: int, fingerprint: str,
                  name: str) -> np.ndarray:
  """One per-example score array made outside dcjax (e.g. published ImageNet scores).

  Args:
    array_path: .npy, .npz (the array called `name`, or its only array), .txt (whitespace-
      separated numbers) or .csv (the only column, or the column headed `name`). A dcjax score
      file (.npz with metadata) is read with `load_scores`, so its fingerprint is checked.
    index_path: optional file of the same kinds with one example index per score row: row r
      scores example index[r]. None: row i is example i.
    n: the dataset's number of examples; fingerprint: its `sources.fingerprint`.
    name: the score's name (for `.npz` keys, `.csv` headers and messages).
  Returns:
    float32 [n] in dataset order.
  Raises:
    UserError if a file is unreadable or of an unknown kind, lengths disagree, indices are out
    of range or repeated, some examples are not covered (naming how many), or a score is NaN.
  """
  if array_path.lower().endswith(".npz") and os.path.isfile(array_path):
    try:
      with np.load(array_path, allow_pickle=False) as npz:
        ours = META_KEY in npz.files
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise UserError(f"score array {array_path} is not readable ({type(e).__name__}: {e})"
                      ) from None
    if ours:
      if index_path is not None:
        raise UserError(f"{array_path} is a dcjax score file, which carries its own indices; "
                        "drop the index file")
      scores, _ = load_scores(array_path, fingerprint=fingerprint, n=n)
      if name not in scores:
        raise UserError(f"{array_path} has no score {name!r}; it has {', '.join(scores)}")
      return scores[name]
  what = f"score array {name!r}"
  a = _read_array(array_path, name, what)
  if index_path is None:
    if len(a) != n:
      raise UserError(f"{what} {array_path} has {len(a)} rows, but the dataset has {n} examples;"
                      " give an index file mapping rows to examples")
    out = a
  else:
    idx = _check_indices(_read_array(index_path, "index", "index file"), len(a),
                         f"index file {index_path}")
    out = _scatter({name: a}, idx, n, f"{what} with index file {index_path}")[name]
  out = out.astype(np.float32)
  _check_no_nan(name, out, f"{what} {array_path}")
  return out
