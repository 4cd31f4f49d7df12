"""Multi-process runs: 2 processes x 2 CPU devices (jax.distributed, gloo collectives) compute
what one process with 4 CPU devices computes, for scoring (dynamics.score_dynamics) and for a
student's training epoch and test pass (train.train_student, train.evaluate).

Each run is a subprocess of tests/multihost_worker.py, so its device count and its distributed
set-up are its own (this pytest process has 8 devices and no coordinator)."""

import os
import socket
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from dcjax.runners import distributed

WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")
TIMEOUT_S = 300

needs_gloo = pytest.mark.skipif(
    not distributed.gloo_available(),
    reason="this jaxlib has no gloo CPU collectives, needed for multi-process CPU runs")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(out, num_cpu_devices, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(num_cpu_devices))
  log = open(f"{out}.{args[-1] if args else 'single'}.log", "w+")  # args[-1]: the process id
  return subprocess.Popen([sys.executable, WORKER, str(out), *map(str, args)], env=env,
                          stdout=log, stderr=subprocess.STDOUT, text=True), log


def wait_all(runs):
  """Waits for every worker; the first failure (or the timeout) kills the rest, which would
  otherwise wait for their peer in a collective until JAX's heartbeat timeout."""
  deadline = time.monotonic() + TIMEOUT_S
  try:
    while any(p.poll() is None for p, _ in runs):
      if time.monotonic() > deadline or any(p.poll() for p, _ in runs):
        break
      time.sleep(0.2)
  finally:
    for p, _ in runs:
      if p.poll() is None:
        p.kill()  # SIGKILL: JAX's preemption notifier catches SIGTERM
        p.wait()
  failures = []
  for p, log in runs:
    log.seek(0)
    if p.returncode != 0:
      failures.append(f"worker {p.args[2:]} exited with {p.returncode}:\n{log.read()[-3000:]}")
    log.close()
  assert not failures, "\n\n".join(failures)


@needs_gloo
def test_two_processes_match_one(tmp_path):
  multi, single = tmp_path / "multi.npz", tmp_path / "single.npz"
  coordinator = f"localhost:{free_port()}"
  # All three at once: the two workers must run together, and the reference overlaps them.
  wait_all([launch(multi, 2, coordinator, 2, 0), launch(multi, 2, coordinator, 2, 1),
            launch(single, 4)])
  a, b = np.load(multi), np.load(single)
  assert int(a["process_count"]) == 2 and int(b["process_count"]) == 1
  assert int(a["device_count"]) == int(b["device_count"]) == 4
  assert sorted(a.files) == sorted(b.files)
  assert {"scores/el2n", "scores/forgetting", "scores/aum"} <= set(a.files)
  # The same programs on the same 4-device mesh; only the all-reduces differ (gloo across
  # processes vs XLA:CPU's in-process ones), which may sum in another order: float32 rounding,
  # ~1e-7 per step (measured: at most 1.2e-7 absolute over every output), hence rtol 1e-5 and,
  # for values near zero (AUM margins, biases), atol 1e-6. Top-1 / top-5 and the forgetting
  # counts must agree exactly.
  for name in a.files:
    if name == "process_count":
      continue
    if name in ("top1", "top5", "scores/forgetting"):
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    else:
      np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
  assert 0.0 <= float(a["top1"]) <= float(a["top5"]) <= 100.0


def test_initialize_is_a_no_op_without_coordinator():
  from dcjax.benchmark import config_args  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(dict(distributed=dict(
      coordinator_address=None, num_processes=None, process_id=None, local_device_ids=None,
      cpu_collectives="gloo")))
  assert distributed.initialize(**config_args.distributed_args(config)) is False
  no_block = ml_collections.ConfigDict(dict(job="benchmark"))
  assert distributed.initialize(**config_args.distributed_args(no_block)) is False
  assert distributed.initialize() is False


def test_single_process_helpers_are_the_plain_calls():
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top

  from dcjax import train  # pylint: disable=g-import-not-at-top

  mesh = train.make_mesh()
  sharded, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
  assert distributed.process_slice(sharded, 16) == slice(0, 16)
  assert distributed.process_slice(replicated, 16) == slice(0, 16)
  g = distributed.global_array(sharded, x)
  assert g.sharding == sharded
  np.testing.assert_array_equal(distributed.to_host(g), x)
  keys = distributed.global_array(replicated, jax.random.split(jax.random.key(1), 2))
  assert keys.sharding.is_equivalent_to(replicated, keys.ndim)
  np.testing.assert_array_equal(jax.random.key_data(keys),
                                jax.random.key_data(jax.random.split(jax.random.key(1), 2)))


@pytest.mark.parametrize("n", [0, 1, 7, 99, 100])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_process_indices_split_in_order_and_nearly_even(n, count):
  from dcjax import sources  # pylint: disable=g-import-not-at-top

  parts = [sources.process_indices(n, i, count) for i in range(count)]
  np.testing.assert_array_equal(np.concatenate(parts), np.arange(n))
  sizes = [len(p) for p in parts]
  assert max(sizes) - min(sizes) <= 1
  picked = np.array([5, 3, 9])
  np.testing.assert_array_equal(sources.process_indices(picked, 0, 1), picked)
  with pytest.raises(ValueError, match="process_index"):
    sources.process_indices(n, count, count)
