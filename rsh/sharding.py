"""Data parallelism: a 1-D `data` mesh over every process's devices, batches split over it.

A step is written as if for one device and jitted with the state replicated and
the batch sharded (`rsh.train.jit_step`); XLA inserts the gradient all-reduce.
With several processes (`rsh.distributed`) each builds only its rows of a global
batch (`process_rows`) and `shard_batch` joins them into one global array.
"""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh named `data` over all devices of all processes (data parallelism)."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), ("data",))


def check_batch_size(size: int, mesh: Mesh) -> None:
  """Refuses, before any work, a global batch that does not split over the devices."""
  n_dev = mesh.devices.size
  if size % n_dev:
    raise ValueError(
        f"config.train.batch_size={size} does not split over the {n_dev} devices "
        f"({jax.process_count()} process(es)); choose a multiple of {n_dev}")


def process_rows(mesh: Mesh, size: int) -> tuple[int, int]:
  """[lo, hi): the rows of a global batch of `size` this process's devices hold."""
  index = NamedSharding(mesh, P("data")).addressable_devices_indices_map((size,))
  starts = [s[0].start or 0 for s in index.values()]
  stops = [size if s[0].stop is None else s[0].stop for s in index.values()]
  lo, hi = min(starts), max(stops)
  if hi - lo != sum(b - a for a, b in zip(starts, stops)):
    raise ValueError("this process's devices hold rows of the batch that are not contiguous")
  return lo, hi


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Puts each array of a batch on the mesh, split along its first axis.

  With one process `batch` is the whole global batch; with several it is this
  process's rows of it (`process_rows`), and the global array is made from every
  process's part. Arrays whose first axis does not divide by the device count
  (a `[b, b]` similarity block is split by rows, like images) raise, since a
  silent replication would change the maths.
  """
  n_dev, n_local = mesh.devices.size, len(mesh.local_devices)
  out = {}
  for name, x in batch.items():
    if x.shape[0] % n_local:
      raise ValueError(
          f"batch[{name!r}] has leading size {x.shape[0]}, not divisible by the "
          f"{n_local} devices; choose a batch size that is a multiple of {n_dev}")
    spec = NamedSharding(mesh, P("data", *([None] * (x.ndim - 1))))
    if n_local == n_dev:
      out[name] = jax.device_put(x, spec)
    else:
      shape = (x.shape[0] * n_dev // n_local,) + x.shape[1:]
      out[name] = jax.make_array_from_process_local_data(spec, np.asarray(x), shape)
  return out


def replicate(tree, mesh: Mesh):
  """A replicated copy of `tree` (never an alias: the step donates its state)."""
  # `may_alias=False` alone still lets one device's shard share the input's
  # buffer on a multi-device mesh, so go through host memory (once per run).
  return jax.device_put(jax.device_get(tree), NamedSharding(mesh, P()))
