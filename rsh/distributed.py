"""Many processes, one run: JAX's own distributed runtime, one writer, rows in shares.

A multi-host run is N copies of the same program (`launch/`), one per host or
per accelerator, joined by `jax.distributed.initialize`. Every process runs
every line of rsh; what differs is only

- **who writes**: process 0 alone (`is_writer`) writes the workdir's files
  (config.json, histories, TensorBoard, results.json, figures), the caches,
  and holds the workdir lock; orbax checkpoints are written and read by every
  process together (orbax's multi-host rules);
- **which rows**: a process builds only its share of each global batch
  (`rsh.sharding.process_rows`), and encodes only its share of an evaluated
  set, the codes (not the images) then gathered to every process
  (`sharded_encoder`), so every process ranks the same codes.

With one process (the default, and every notebook) each function here is the
identity or a constant: single-process code pays nothing. JAX is imported only
where it is used, so the data layer can ask `is_writer` without loading it.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Any, Callable, Mapping

import numpy as np

log = logging.getLogger(__name__)


def _slurm_step(env: Mapping[str, str]) -> bool:
  """Inside `srun` with more than one task: JAX reads the rest from SLURM."""
  return int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_STEP_ID" in env


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, detect: bool = False,
               env: Mapping[str, str] | None = None) -> bool:
  """Joins the processes of a multi-host run; returns whether it is one.

  From the arguments (`rsh.main`'s --coordinator_address, --num_processes,
  --process_id; `launch/local.py` passes them), else JAX's own environment
  variables (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), else,
  with `detect` (--multihost) or inside a SLURM job step of more than one task,
  what JAX finds itself (SLURM, a Cloud TPU slice, Open MPI). Otherwise nothing
  is done: one process. Must run before anything starts JAX's backend.

  Raises:
    ValueError: an incomplete or inconsistent set of arguments.
  """
  import jax
  env = os.environ if env is None else env
  given = {"coordinator_address": coordinator_address or env.get("JAX_COORDINATOR_ADDRESS"),
           "num_processes": _int(num_processes, env.get("JAX_NUM_PROCESSES"), "num_processes"),
           "process_id": _int(process_id, env.get("JAX_PROCESS_ID"), "process_id")}
  if any(v is not None for v in given.values()):
    missing = [k for k, v in given.items() if v is None]
    if missing:
      raise ValueError(f"a multi-process run needs --coordinator_address, --num_processes and "
                       f"--process_id together (or JAX's JAX_* variables); missing: "
                       f"{', '.join('--' + k for k in missing)}")
    n, i = given["num_processes"], given["process_id"]
    if n < 1 or not 0 <= i < n:
      raise ValueError(f"--process_id must be in [0, --num_processes); got process_id={i}, "
                       f"num_processes={n}")
    if n == 1:
      return False
    jax.distributed.initialize(**given)
  elif detect or _slurm_step(env):
    try:
      jax.distributed.initialize()  # JAX reads the cluster's own variables
    except ValueError as e:
      raise ValueError(f"--multihost: JAX found no cluster to join ({e}); give "
                       "--coordinator_address, --num_processes and --process_id") from None
  else:
    return False
  log.info("process %d of %d (%d devices in all, %d here)", jax.process_index(),
           jax.process_count(), jax.device_count(), jax.local_device_count())
  return jax.process_count() > 1


def _int(value, text: str | None, name: str) -> int | None:
  if value is not None:
    return int(value)
  if text in (None, ""):
    return None
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"JAX_{name.upper()}={text!r} is not an integer") from None


def process_count() -> int:
  import jax
  return jax.process_count()


def is_writer() -> bool:
  """Whether this process writes the run's files and caches: process 0 of a
  multi-host run, and any process that has not even loaded JAX (one process)."""
  jax = sys.modules.get("jax")
  return jax is None or jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (nothing with one process)."""
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def host_local(tree: Any) -> Any:
  """`tree` with each array spread over other processes' devices replaced by this
  process's copy (a replicated state is whole on every device), so that
  single-process code (an encoder, a figure) can run on it here, alone."""
  import jax
  if jax.process_count() == 1:
    return tree

  def local(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if not x.is_fully_replicated:
        raise ValueError(f"an array of shape {x.shape} is split across processes, not "
                         "replicated: it has no whole copy here")
      return x.addressable_data(0)
    return x
  return jax.tree.map(local, tree)


def row_share(n: int, index: int | None = None, count: int | None = None) -> tuple[int, int]:
  """[lo, hi): process `index`'s contiguous share of n rows; the shares of
  processes 0..count-1 in order are the rows 0..n-1 (only the last may be short)."""
  import jax
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  size = math.ceil(n / count) if n else 0
  return min(index * size, n), min((index + 1) * size, n)


def gather_rows(x: np.ndarray, n: int) -> np.ndarray:
  """Every process's `row_share` of n rows, in order: `x` is this process's
  share; each pads to the same size, all gather, the padding is cut."""
  import jax
  count = jax.process_count()
  if count == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils
  size = math.ceil(n / count) if n else 0
  x = np.asarray(x)
  pad = np.zeros((size - len(x),) + x.shape[1:], x.dtype)
  every = multihost_utils.process_allgather(np.concatenate([x, pad]), tiled=True)
  return np.asarray(every)[:n]


def sharded_encoder(encode: Callable[[Any, Any], Mapping[str, np.ndarray]]):
  """`encode(state, rows)` with each process encoding its `row_share` of the rows
  (on its own copy of the state) and the outputs (codes, never the images)
  gathered, so every process returns the whole of every output."""
  import jax
  if jax.process_count() == 1:
    return encode

  def sharded(state, rows):
    n = len(rows)
    lo, hi = row_share(n)
    # An empty share still runs the encoder once (on row 0): the outputs' shapes
    # and dtypes are those of the others'.
    mine = encode(host_local(state), rows[lo:hi] if hi > lo else rows[:1])
    return {k: gather_rows(np.asarray(v)[:hi - lo], n) for k, v in mine.items()}
  return sharded
