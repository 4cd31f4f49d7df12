"""The workdir policy of a benchmark run: what a workdir holds, when a run may resume, extend
or replace what is there, and who writes it in a multi-process run.

  W/config.json        the run's config (written first, checked on resume)
  W/compressed/        the compressed set (dcjax.data.store)
  W/checkpoints/seed_N the running student's checkpoints
  W/runs/seed_N.json   each finished student
  W/tensorboard/       training curves
  W/results.json       written last (atomically): a workdir holds a finished run or none
  W/.lock              held (flock) by the running process 0: one run per workdir at a time
  .W.replaced-*        (beside W) a finished run being overwritten, until the new one finishes

A finished run is replaced only with overwrite, or extended: the same config with more seeds
keeps the finished seeds and trains the new ones. An unfinished run resumes with the same
config; its finished seeds are kept only if the set it recomputes is the one they trained on
(the same images and labels, by the manifest's sha256 per file): an unfinished run copied
to another machine (config.json, runs/ and compressed/manifest.json, as the grid archives it)
whose set comes out different there trains them again. Multi-process runs share one workdir
(a shared filesystem); process 0 writes it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import socket

import jax

from dcjax.benchmark import results as results_schema
from dcjax.data import store
from dcjax.data.files import write_json_atomic
from dcjax.errors import UserError

RESULTS = results_schema.FILENAME
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(results_schema.Run))
COMPRESSED = "compressed"
CONFIG = "config.json"
LOCK = ".lock"
CHECKPOINTS = "checkpoints"
RUNS = "runs"
# Config fields that may change between a run and its resumption.
RESUMABLE_CHANGES = ("overwrite", "progress", "seeds", "distributed")


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
  """Dotted names of the fields that differ between two config dicts. A field one side lacks
  and the other leaves unset (None) is no difference: a field a later dcjax adds with an unset
  default (eval.model_kwargs.impl, 2026-12-06) leaves the earlier runs resumable."""
  out = []
  for k in sorted(set(old) | set(new)):
    a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
    if isinstance(a, dict) and isinstance(b, dict):
      out += config_differences(a, b, f"{prefix}{k}.")
    elif a != b and (a, b) not in (("<absent>", None), (None, "<absent>")):
      out.append(f"{prefix}{k} ({a!r} -> {b!r})")
  return out


def run_differences(old: dict, new: dict) -> list[str]:
  """Config differences that make two runs different runs (not RESUMABLE_CHANGES)."""
  return config_differences({k: v for k, v in old.items() if k not in RESUMABLE_CHANGES},
                            {k: v for k, v in new.items() if k not in RESUMABLE_CHANGES})


def read_json(path: str) -> dict:
  """A workdir's JSON file, or one UserError line naming it if it is unreadable."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read {path} ({e.__class__.__name__}: {e}); the workdir is "
                    f"damaged: delete that file to redo its part, or choose another "
                    f"--workdir") from None
  if not isinstance(value, dict):
    raise UserError(f"{path} does not hold a JSON object; the workdir is damaged: delete that "
                    f"file to redo its part, or choose another --workdir")
  return value


def is_writer() -> bool:
  return jax.process_index() == 0


def barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"dcjax.benchmark.{name}")


def set_identity(manifest: dict) -> list:
  """What a stored set is, for deciding whether students trained on it: each image's label and
  PNG sha256, in order (a manifest's timestamps and versions do not count)."""
  try:
    return [(f["label"], f["sha256"]) for f in manifest["files"]]
  except (KeyError, TypeError):
    return [None]  # a manifest of another shape identifies nothing: never equal to a real one


class Workdir:
  """One run's directory and its policy; `config` is the run's config as a JSON dict."""

  def __init__(self, path: str, config: dict, *, seeds: int, overwrite: bool):
    self.path, self.config, self.seeds, self.overwrite = path, config, seeds, overwrite
    self._lock = None

  def lock(self) -> None:
    """Hold an exclusive lock on the workdir (process 0) until `release` or process exit: a
    second run in the same workdir is refused in one line. The kernel drops the lock of a
    process that dies, so a killed run leaves no stale lock."""
    if not is_writer() or self._lock is not None:
      return
    os.makedirs(self.path, exist_ok=True)
    f = open(self.join(LOCK), "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      holder = f.read().strip() or "another process"
      f.close()
      raise UserError(f"workdir {self.path} is in use by {holder}; wait for it to finish or "
                      f"choose another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    self._lock = f

  def release(self) -> None:
    if self._lock is not None:
      self._lock.close()
      self._lock = None

  def join(self, *parts: str) -> str:
    return os.path.join(self.path, *parts)

  def check(self) -> None:
    """UserError, before anything is read or written, if the run may not go ahead here."""
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise UserError(f"workdir {self.path} exists and is not a directory")
    parent = os.path.dirname(os.path.abspath(self.path))
    while not os.path.exists(parent):
      parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
      raise UserError(f"workdir {self.path} cannot be created: {parent} is a file")
    if not os.access(parent if not os.path.isdir(self.path) else self.path, os.W_OK):
      raise UserError(f"workdir {self.path} is not writable")
    if os.path.exists(self.join(RESULTS)) and not self.overwrite:
      finished = read_json(self.join(RESULTS))
      saved = self.join(CONFIG)
      old = read_json(saved) if os.path.exists(saved) else {}
      if not isinstance(finished.get("runs"), list):
        raise UserError(f"{self.join(RESULTS)} has no list of runs; the workdir is damaged: "
                        f"delete that file to redo the run's end, or choose another --workdir")
      diff = run_differences(old, self.config)
      if diff or self.seeds <= len(finished["runs"]):
        raise UserError(f"workdir {self.path} already holds a finished run ({RESULTS}, "
                        f"{len(finished['runs'])} seeds"
                        + (f"; config differs: {'; '.join(diff)}" if diff else "")
                        + "); pass --config.overwrite=True to replace it, the same config with "
                        "more --config.seeds to extend it, or choose another --workdir")

  def prepare(self) -> None:
    """Create the workdir (process 0), or check that the unfinished run in it has the same
    config; with overwrite, drop the old run's checkpoints and finished seeds."""
    if not is_writer():
      return
    self.lock()
    saved = self.join(CONFIG)
    if self.overwrite and os.path.exists(self.join(RESULTS)):
      self._move_finished_run_aside()
    elif os.path.exists(saved):
      diff = run_differences(read_json(saved), self.config)
      if diff and not self.overwrite:
        raise UserError(f"workdir {self.path} holds an unfinished run with a different config "
                        f"({'; '.join(diff)}); rerun with the same config to resume it, pass "
                        f"--config.overwrite=True to start over, or choose another --workdir")
      if diff:  # overwrite an unfinished run of another config: start over
        for name in (CHECKPOINTS, RUNS):
          shutil.rmtree(self.join(name), ignore_errors=True)
    os.makedirs(self.path, exist_ok=True)
    write_json_atomic(saved, self.config)

  def _replaced(self) -> list[str]:
    parent, name = os.path.split(os.path.abspath(self.path))
    return sorted(os.path.join(parent, d) for d in os.listdir(parent)
                  if d.startswith(f".{name}.replaced-"))

  def _move_finished_run_aside(self) -> None:
    """Overwrite: the finished run is moved aside whole (one rename of the workdir) before
    anything new is written, and deleted only once the new run has finished; so a kill leaves
    the old run (beside the workdir) or the new one, never a mix."""
    parent, name = os.path.split(os.path.abspath(self.path))
    aside = os.path.join(parent, f".{name}.replaced-{os.getpid()}-{len(self._replaced())}")
    old_lock = self._lock
    os.rename(self.path, aside)
    os.makedirs(self.path)
    self._lock = None
    self.lock()
    old_lock.close()

  def trained_set(self) -> dict | None:
    """The manifest of the set this workdir's finished or interrupted students trained on; None
    if no student has started here (or this is not process 0)."""
    path = self.join(COMPRESSED, store.MANIFEST)
    if not is_writer() or not os.path.isfile(path):
      return None
    if not any(os.path.isdir(self.join(name)) for name in (RUNS, CHECKPOINTS)):
      return None
    return read_json(path)

  def drop_students_of_another_set(self, previous: dict | None, current: dict) -> int:
    """Delete the finished seeds and checkpoints if they trained on a set (`previous`, from
    `trained_set` before the set was rewritten) other than `current`; returns how many finished
    seeds were dropped (0: nothing to drop, or the same set). A PNG's sha256 stands for its
    pixels: a PNG encoder that wrote the same pixels differently would only cost a retraining."""
    if previous is None or set_identity(previous) == set_identity(current):
      return 0
    runs = self.join(RUNS)
    dropped = (len([f for f in os.listdir(runs) if f.endswith(".json")])
               if os.path.isdir(runs) else 0)
    for name in (RUNS, CHECKPOINTS):
      shutil.rmtree(self.join(name), ignore_errors=True)
    return dropped

  def finished_seed(self, seed: int) -> dict | None:
    path = self.join(RUNS, f"seed_{seed}.json")
    if not os.path.exists(path):
      return None
    run = read_json(path)
    required = set(RUN_FIELDS) - set(results_schema.OPTIONAL_RUN_FIELDS)
    if not required <= set(run) <= set(RUN_FIELDS):
      raise UserError(f"{path} is not a finished seed (fields {', '.join(sorted(run))}); delete "
                      f"it to train that seed again")
    return run

  def save_seed(self, seed: int, run: dict) -> None:
    if is_writer():
      os.makedirs(self.join(RUNS), exist_ok=True)
      write_json_atomic(self.join(RUNS, f"seed_{seed}.json"), run)

  def save_results(self, results: dict) -> None:
    """results.json, the run's last file; then the run it overwrote (if any) is deleted."""
    if is_writer():
      write_json_atomic(self.join(RESULTS), results)
      for old in self._replaced():
        shutil.rmtree(old, ignore_errors=True)
