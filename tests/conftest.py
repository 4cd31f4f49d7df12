"""Test-wide set-up: 8 simulated CPU devices, set before JAX starts, so sharding code is tested."""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep XLA from spreading one test over both cores' worth of threads in ways that starve others.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

# One persistent compilation cache for the whole session, this process and the subprocesses it
# starts (CLI, multi-process, resume tests inherit the environment): many tests compile the same
# small programs (the ConvNet step, the test pass) as fresh closures, and a cache hit skips
# XLA. Measured on tests/test_benchmark.py (2-core Xeon): 6m47s -> 4m05s of CPU time, same 39
# passes. A fresh directory per session, removed at exit, so no stale entries across versions.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import atexit
  import shutil
  import tempfile

  _cache = tempfile.mkdtemp(prefix="dcjax-tests-jax-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
