"""Multi-process (multi-host) JAX: start-up, and host arrays <-> global arrays on a mesh.

Every process runs the same program on the same host data (the same seed, the same split), and
the mesh's 'data' axis spans the devices of all processes (`jax.devices()`). Host arrays become
global `jax.Array`s through `jax.make_array_from_process_local_data`, each process giving only
the part its own devices hold:

  global_array(sharding, x)  x is the whole value, known to every process (a batch, a replicated
                             training set, parameters): a process transfers the rows its devices
                             hold (all of x when the sharding replicates it).
  process_slice(sharding, n) which rows of an n-row, batch-sharded array this process holds.
  from_process_local(...)    a batch-sharded global array from each process's own rows, for
                             data read per process (`sources.process_indices`).
  to_host(tree)              numpy values of (possibly multi-process) arrays; gathers across
                             processes only when a process does not hold the whole value.

In one process these reduce to what the code did before (`jax.device_put`, `slice(0, n)`,
`np.asarray`), so single-process results do not change.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from dcjax.errors import UserError

_log = logging.getLogger(__name__)


def gloo_available() -> bool:
  """Whether the installed jaxlib has the gloo CPU collectives (cross-process CPU all-reduce)."""
  try:
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return hasattr(_jax, "make_gloo_tcp_collectives")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids=None,
               cpu_collectives: str = "gloo") -> bool:
  """Starts `jax.distributed`; call before any JAX computation.

  coordinator_address: "host:port" of process 0; None: a single-process run, nothing is done;
  "auto": let JAX detect the cluster (SLURM, Open MPI, a Cloud TPU pod). num_processes,
  process_id, local_device_ids (None: detected by JAX where it can). cpu_collectives: "gloo" or
  "mpi", the cross-process collectives of CPU devices (set before the CPU backend starts).
  Returns whether a distributed system was started. (The benchmark passes its
  `config.distributed` block.)
  """
  if not coordinator_address:
    return False
  if cpu_collectives == "gloo" and not gloo_available():
    raise UserError("distributed.cpu_collectives='gloo' but this jaxlib has no gloo collectives; "
                    "install a jaxlib built with them or use cpu_collectives='mpi'")
  # Must be set before the CPU backend is created, which jax.distributed.initialize precedes.
  jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  kwargs = dict(num_processes=num_processes, process_id=process_id,
                local_device_ids=(None if local_device_ids is None
                                  else [int(i) for i in local_device_ids]))
  address = None if coordinator_address == "auto" else coordinator_address
  try:
    jax.distributed.initialize(address, **kwargs)
  except (ValueError, TypeError) as e:  # missing / inconsistent fields, no cluster detected
    raise UserError(f"cannot start jax.distributed ({e}); set distributed.coordinator_address, "
                    "num_processes and process_id (or run under a cluster JAX detects)") from e
  _log.info("jax.distributed: process %d of %d, %d local / %d global devices",
            jax.process_index(), jax.process_count(), jax.local_device_count(),
            jax.device_count())
  return True


def _process_block(sharding: jax.sharding.Sharding, shape: tuple) -> tuple[slice, ...]:
  """Per dimension, the contiguous range of a global array of `shape` on this process's
  devices."""
  indices = list(sharding.addressable_devices_indices_map(tuple(shape)).values())
  block = []
  for dim, n in enumerate(shape):
    ranges = sorted({(idx[dim].indices(n)[:2] if idx else (0, n)) for idx in indices})
    if not ranges:
      block.append(slice(0, 0))
      continue
    lo, hi = ranges[0][0], ranges[0][1]
    for start, stop in ranges[1:]:
      if start > hi:
        raise ValueError(f"this process's devices hold non-contiguous parts of {sharding} "
                         f"(axis {dim}); use a mesh that lists each process's devices together")
      hi = max(hi, stop)
    block.append(slice(lo, hi))
  return tuple(block)


def process_slice(sharding: jax.sharding.Sharding, n: int) -> slice:
  """The rows of a global [n, ...] array sharded on axis 0 that this process's devices hold.

  With a 1-D mesh over `jax.devices()` (train.make_mesh) every process holds one contiguous
  block, the same size in every process when the mesh divides n; a sharding that replicates
  axis 0 gives slice(0, n).
  """
  return _process_block(sharding, (n,))[0]


def _global_leaf(sharding: NamedSharding, x: Any) -> jax.Array:
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(_global_leaf(sharding, jax.random.key_data(x)),
                                    impl=jax.random.key_impl(x))
  x = np.asarray(x)
  local = x[_process_block(sharding, x.shape)] if x.ndim else x
  return jax.make_array_from_process_local_data(sharding, local, x.shape)


def global_array(sharding: NamedSharding, tree: Any) -> Any:
  """A pytree of host values (numpy or jax arrays, or PRNG keys) as global arrays of `sharding`.

  Every process must pass the same values (the same data, or parameters made from the same
  key): each transfers only the rows its devices hold, so nothing is checked or exchanged
  across processes. In one process this is `jax.device_put(tree, sharding)`.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: _global_leaf(sharding, x), tree)


def from_process_local(sharding: NamedSharding, local: np.ndarray, global_rows: int) -> jax.Array:
  """A global [global_rows, ...] array sharded on axis 0 from this process's rows `local`
  (those of `process_slice(sharding, global_rows)`). In one process: device_put(local)."""
  return jax.make_array_from_process_local_data(sharding, local,
                                                (global_rows, *np.shape(local)[1:]))


def process_sum_and_max(value: int) -> tuple[int, int]:
  """(sum, max) of an integer over all processes (a collective: every process calls it)."""
  values = np.asarray(multihost_utils.process_allgather(np.int64(value))).reshape(-1)
  return int(values.sum()), int(values.max())


def to_host(tree: Any) -> Any:
  """A pytree of arrays as numpy arrays of their global values.

  An array this process holds whole (all of it on its devices, or replicated) is read locally;
  an array sharded across processes is all-gathered, so every process must call this together.
  """
  def leaf(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(leaf, tree)
