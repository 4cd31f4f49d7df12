"""Small file helpers shared by the I/O layer and the runners: one atomic write, the umask-
honouring file mode, the cache location, and the lock that keeps two runs on one machine from
filling one cache entry at once."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from typing import IO, Any, Callable, Iterator


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


def file_sha256(path: str) -> str:
  """The sha256 (hex) of a file's bytes, read in 1 MB chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


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


@contextlib.contextmanager
def cache_fill_lock(lock_file: str, enabled: bool = True) -> Iterator[None]:
  """Hold an exclusive lock on `lock_file` (flock: released when the process ends, however it
  ends) while filling a cache entry, so that runs started side by side on one machine (the
  grid's --workers) fill it once: the second waits, then finds the entry complete, instead of
  training the same teacher into the same checkpoint directory. Callers check for the finished
  entry again inside the lock; the lock file is a hidden file inside the entry's directory (or
  beside an entry that is one file) and is never deleted (a deleted lock file would let a third
  run lock a new one). `enabled=False` (a multi-process run, whose processes fill one entry
  together and may share no lock across hosts) or a platform without flock: no lock."""
  try:
    import fcntl
  except ImportError:  # not POSIX
    enabled = False
  if not enabled:
    yield
    return
  os.makedirs(os.path.dirname(os.path.abspath(lock_file)), exist_ok=True)
  with open(lock_file, "a+b") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      print(f"waiting for another run filling {os.path.dirname(lock_file)}", file=sys.stderr,
            flush=True)
      fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def fill_lock_file(entry: str) -> str:
  """The lock file of cache entry `entry` (a directory): hidden, inside it."""
  return os.path.join(entry, ".fill.lock")
