"""Data parallelism: a 1-D `data` mesh over all local devices, batches split over it.

A step is written as if for one device and jitted with the state replicated and
the batch sharded (`rsh.train.jit_step`); XLA inserts the gradient all-reduce.
"""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh named `data` over all local devices (data parallelism)."""
  devices = np.asarray(devices if devices is not None else jax.local_devices())
  return Mesh(devices.reshape(-1), ("data",))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Puts each array of a host batch on the mesh, split along its first axis.

  Arrays whose first axis does not divide by the device count (a `[b, b]`
  similarity block does, `[b, b]` rows are split like images) raise, since a
  silent replication would change the maths.
  """
  n_dev = mesh.devices.size
  out = {}
  for name, x in batch.items():
    if x.shape[0] % n_dev:
      raise ValueError(
          f"batch[{name!r}] has leading size {x.shape[0]}, not divisible by the "
          f"{n_dev} devices; choose a batch size that is a multiple of {n_dev}")
    spec = P("data", *([None] * (x.ndim - 1)))
    out[name] = jax.device_put(x, NamedSharding(mesh, spec))
  return out


def replicate(tree, mesh: Mesh):
  """A replicated copy of `tree` (never an alias: the step donates its state)."""
  # `may_alias=False` alone still lets one device's shard share the input's
  # buffer on a multi-device mesh, so go through host memory (once per run).
  return jax.device_put(jax.device_get(tree), NamedSharding(mesh, P()))
