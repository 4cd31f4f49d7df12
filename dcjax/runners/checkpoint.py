"""Checkpoints: orbax `CheckpointManager` behind one small interface.

A checkpoint holds a pytree of arrays (train state, keys as raw key data) and a JSON dict of
metadata (epoch, config digest, metrics). Saves are synchronous so that a process killed right
after `save` returns has the checkpoint on disk (orbax writes to a temporary directory and
renames, so a kill mid-save leaves the previous checkpoint as the latest).
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

# Room a save needs beyond its arrays' bytes: orbax's metadata files (measured: a width-8
# ConvNet-3 checkpoint is 78.5 KB in 19 files for 12.6 KB of arrays) and filesystem blocks.
SAVE_MARGIN_BYTES = 256 << 10


class Checkpointer:
  """Numbered checkpoints under `directory`, keeping the newest `max_to_keep`."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False),
        item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Save `state` (pytree of arrays) and `meta` (JSON-serialisable) as checkpoint `step`.

    A save that cannot fit raises OSError(ENOSPC) before orbax writes anything: when one of
    orbax's (0.12) concurrent writes hits a full disk, it logs every writer thread's traceback
    and its closed event loop reports more as unraisable exceptions, a screen of duplicates in
    front of the caller's one error line. Needing twice the arrays' bytes plus a margin (the
    temporary copy beside the previous checkpoint) leaves only a disk filled by someone else
    mid-save to that path."""
    need = 2 * sum(int(x.nbytes) for x in jax.tree.leaves(state)) + SAVE_MARGIN_BYTES
    free = shutil.disk_usage(self.directory).free
    if free < need:
      raise OSError(errno.ENOSPC, f"No space left on device (a checkpoint needs {need} bytes, "
                    f"{free} free)", self.directory)
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    """Restore checkpoint `step` into the structure, shapes and shardings of `target`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"])

  def read_meta(self, step: int) -> dict:
    out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"])

  def close(self) -> None:
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
