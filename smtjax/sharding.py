"""Device mesh and sharding rules, in one place.

The mesh has a `data` axis and an `fsdp` axis. Batches are split over both (every device sees its own
rows); parameters and optimizer state are replicated over `data` and, when fsdp > 1, each array is split
over `fsdp` along its largest dimension that divides evenly (FSDP/ZeRO-3 style); XLA inserts the
gathers. Everything else (scalars, keys) is replicated.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from smtjax.errors import ConfigError

BATCH_AXES = ('data', 'fsdp')


def make_mesh(shape: tuple[int, int], devices=None) -> Mesh:
  """The (data, fsdp) mesh of `shape` (`config.mesh_shape`, `config.Run.mesh_shape`) over `devices` (default all)."""
  devices = jax.devices() if devices is None else devices
  data, fsdp = shape
  return Mesh(np.asarray(devices).reshape(data, fsdp), ('data', 'fsdp'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def param_spec(shape, fsdp: int) -> P:
  """Shard the largest dimension divisible by `fsdp` over the fsdp axis; replicate small/odd arrays."""
  if fsdp == 1 or not shape:
    return P()
  dims = sorted(range(len(shape)), key=lambda i: -shape[i])
  for i in dims:
    if shape[i] % fsdp == 0 and shape[i] >= fsdp:
      spec = [None] * len(shape)
      spec[i] = 'fsdp'
      return P(*spec)
  return P()


def tree_shardings(mesh: Mesh, abstract_tree):
  """NamedShardings for a pytree of arrays/ShapeDtypeStructs by the rule above."""
  fsdp = mesh.shape['fsdp']
  return jax.tree.map(lambda a: NamedSharding(mesh, param_spec(a.shape, fsdp)), abstract_tree)


def global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
  """Assembles each process's rows into global arrays sharded over the batch axes."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def initialize_distributed(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1,
                           auto: bool = False) -> None:
  """Starts JAX's multi-controller runtime (one process per host) before any device is used.

  Explicit: coordinator 'host:port', the process count and this process's id (multi-node GPU clusters).
  `auto=True`: `jax.distributed.initialize()` with no arguments, which detects Cloud TPU pod slices,
  SLURM and Open MPI launches itself. Nothing happens for a single process. On CPU the cross-process
  collectives go through gloo.
  """
  if not auto and num_processes <= 1:
    return
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if auto:
    jax.distributed.initialize()
  else:
    if not coordinator_address or not 0 <= process_id < num_processes:
      raise ConfigError(f'multi-process run needs --coordinator_address (got {coordinator_address!r}) and '
                       f'0 <= --process_id < --num_processes (got {process_id}, {num_processes})')
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
