"""Small file helpers shared by the I/O layer and the runners: one atomic write, the umask-
honouring file mode, and the cache location."""

from __future__ import annotations

import json
import os
import tempfile
from typing import IO, Any, Callable


def umask_mode(base: int = 0o666) -> int:
  """`base` (0o666 for files, 0o777 for directories) less the process's umask, as open() and
  mkdir() would create them (tempfile makes files 0600 and directories 0700 whatever the
  umask; results shared with a group must stay readable)."""
  mask = os.umask(0)
  os.umask(mask)
  return base & ~mask


def write_atomic(path: str, write: Callable[[IO[bytes]], None], suffix: str = "") -> None:
  """Write a file via a temporary sibling and os.replace: readers see the old file or the
  complete new one, never a half. `write(f)` writes the bytes to the binary file object `f`;
  the data is fsynced before the rename and the file gets the umask's usual mode."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", suffix=suffix,
                             dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:  # A file object, so np.savez does not append ".npz".
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, umask_mode())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_json_atomic(path: str, obj: Any) -> None:
  """`obj` as indented JSON at `path`, atomically (`write_atomic`)."""
  text = json.dumps(obj, indent=2) + "\n"
  write_atomic(path, lambda f: f.write(text.encode()), suffix=".json")


def cache_dir(kind: str) -> str:
  """Default cache directory for `kind` ('teachers', 'scores'): $DCJAX_CACHE/kind, else
  $XDG_CACHE_HOME/dcjax/kind, else ~/.cache/dcjax/kind."""
  base = os.environ.get("DCJAX_CACHE") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dcjax")
  return os.path.join(base, kind)
