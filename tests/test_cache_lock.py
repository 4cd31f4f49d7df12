"""dcjax.data.files.cache_fill_lock: runs side by side on one machine fill a cache entry once
(the second waits for the first); a multi-process run takes no lock."""

import os
import subprocess
import sys
import time

from dcjax.data import files

HOLDER = """
import sys, time
from dcjax.data import files
with files.cache_fill_lock(files.fill_lock_file(sys.argv[1])):
  print("held", flush=True)
  time.sleep(1.5)
  open(sys.argv[1] + "/teacher.json", "w").write("filled")
"""


def test_a_second_run_waits_for_the_first_to_fill_the_entry(tmp_path, capsys):
  entry = str(tmp_path / "cache" / "teacher")
  done = tmp_path / "cache" / "teacher" / "teacher.json"
  lock = files.fill_lock_file(entry)
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, entry], stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    # Unlocked (a multi-process run): no waiting, the entry is not filled yet.
    with files.cache_fill_lock(lock, enabled=False):
      assert not done.exists()
    t = time.monotonic()
    with files.cache_fill_lock(lock):
      assert done.read_text() == "filled"
    assert time.monotonic() - t > 0.3
    assert capsys.readouterr().err.startswith(f"waiting for another run filling {entry}")
  finally:
    holder.wait(timeout=60)
  # Free again: taken at once, nothing said; the lock file stays (flock, not its existence, locks).
  with files.cache_fill_lock(lock):
    pass
  assert capsys.readouterr().err == "" and lock == f"{entry}/.fill.lock"
  assert os.path.exists(lock)
