"""Small file helpers shared by the runners: atomic JSON writes and the cache location."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def write_json_atomic(path: str, obj: Any) -> None:
  """Write `obj` as JSON to `path` via a temporary sibling and os.replace: readers see the old
  file or the complete new one, never a half."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def cache_dir(kind: str) -> str:
  """Default cache directory for `kind` ('teachers', 'scores'): $DCJAX_CACHE/kind, else
  $XDG_CACHE_HOME/dcjax/kind, else ~/.cache/dcjax/kind."""
  base = os.environ.get("DCJAX_CACHE") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dcjax")
  return os.path.join(base, kind)
