"""Test-wide set-up: 8 simulated CPU devices, set before JAX starts, so sharding code is tested."""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep XLA from spreading one test over both cores' worth of threads in ways that starve others.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
