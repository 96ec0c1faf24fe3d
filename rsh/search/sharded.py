"""`sharded_search`: `rsh.search.search` in pure JAX, the archive sharded over a mesh.

Each device finds its shard's exact top-k under `jax.shard_map` (group minima
of `GROUP` codes, then the candidates); the lists are merged by
`(distance, global index)`, so results equal `rsh.search.search`'s.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from rsh import hamming
from rsh.search.topk import GROUP

__all__ = ["sharded_search"]


def _local_topk(q_t, grouped, rows, *, n, per_shard, k, dtype, direct):
  """One shard's exact top-k in pure JAX (runs under shard_map).

  q_t: uint32[W, nq]; grouped: uint32[W, GROUP, m_local]; rows: uint32[per_shard, W].
  Returns (d: dtype[nq, k], global idx: int32[nq, k]) ordered by (distance, index).
  """
  offset = lax.axis_index("archive") * per_shard
  valid = n - offset  # codes of this shard that are real (may be <= 0)
  sentinel = jnp.iinfo(dtype).max
  nq = q_t.shape[1]
  if direct:
    cand = jnp.broadcast_to(jnp.arange(per_shard, dtype=jnp.int32), (nq, per_shard))
  else:
    m = grouped.shape[2]
    minima, _ = hamming.group_minima(q_t, grouped, (valid + GROUP - 1) // GROUP, dtype, 0)
    minima = minima.T  # [nq, m]
    ids = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), minima.shape)
    _, groups = lax.sort((minima, ids), dimension=1, num_keys=1, is_stable=True)
    groups = jnp.sort(groups[:, :k], axis=1)
    cand = (groups[:, :, None] * GROUP + jnp.arange(GROUP, dtype=jnp.int32)).reshape(nq, -1)
  codes = rows[cand]  # [nq, c, W]
  d = lax.population_count(codes ^ q_t.T[:, None, :]).astype(jnp.int32).sum(-1)
  d = jnp.where(cand < valid, d, sentinel).astype(dtype)
  d, cand = lax.sort((d, cand), dimension=1, num_keys=1, is_stable=True)
  return d[:, :k], cand[:, :k] + offset


@functools.lru_cache(maxsize=32)
def _sharded_fn(mesh, n, per_shard, k_local, k, dtype, direct):
  from jax.sharding import PartitionSpec as P
  local = functools.partial(_local_topk, n=n, per_shard=per_shard, k=k_local,
                            dtype=dtype, direct=direct)
  spmd = jax.shard_map(local, mesh=mesh,
                       in_specs=(P(), P(None, None, "archive"), P("archive", None)),
                       out_specs=(P(None, "archive"), P(None, "archive")))

  @jax.jit
  def run(q_t, grouped, rows):
    d, i = spmd(q_t, grouped, rows)  # [nq, devices * k_local]
    d, i = lax.sort((d, i), dimension=1, num_keys=2)  # merge: (distance, global index)
    return d[:, :k], i[:, :k]

  return run


def sharded_search(q, db, k: int, *, mesh=None):
  """`rsh.search.search` with the archive sharded over all devices of a mesh.

  Each device finds its shard's exact top-k in pure JAX (group minima, then the
  candidates); the lists are merged by (distance, global index), so results equal
  `rsh.search.search`'s for any number of devices.

  Args:
    q: uint8[nq, l // 8]; db: uint8[n, l // 8] packed codes; 1 <= k <= n.
    mesh: a `jax.sharding.Mesh` with an axis named "archive"; default: all local
      devices on one axis.

  Returns:
    distances: int32[nq, k]; indices: int32[nq, k].
  """
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  q, db = hamming.check_pair(q, db, "sharded_search")
  k = hamming.check_k(k, len(db), "sharded_search")
  if mesh is None:
    mesh = Mesh(np.array(jax.local_devices()), ("archive",))
  if "archive" not in mesh.axis_names:
    raise ValueError(f"sharded_search: `mesh` needs an axis named 'archive'; has {mesh.axis_names}")
  devices = mesh.shape["archive"]
  n, l = len(db), 8 * db.shape[1]
  dtype = hamming.distance_dtype(l)
  # Shards of whole groups; padding repeats the last code and is masked by index.
  per_shard = hamming.bucket(-(-n // devices), GROUP)
  k_local = min(k, per_shard)
  direct = 4 * k_local * GROUP > per_shard
  words = hamming.pad_rows(hamming.code_words(db, np.uint32), devices * per_shard)
  grouped = words.reshape(-1, GROUP, words.shape[1]).transpose(2, 1, 0)
  rows = jax.device_put(words, NamedSharding(mesh, P("archive", None)))
  grouped = jax.device_put(np.ascontiguousarray(grouped),
                           NamedSharding(mesh, P(None, None, "archive")))
  run = _sharded_fn(mesh, n, per_shard, k_local, k, dtype, direct)
  q32 = hamming.code_words(q, np.uint32)
  out_d = np.empty((len(q), k), np.int32)
  out_i = np.empty((len(q), k), np.int32)
  step = int(np.clip(hamming.BUDGET // (k_local * GROUP * devices), 8, hamming.QUERY_BLOCK))
  for s in range(0, len(q), step):
    qb = q32[s:s + step]
    q_t = jnp.asarray(np.ascontiguousarray(hamming.pad_rows(qb, hamming.bucket(len(qb))).T))
    d, i = run(q_t, grouped, rows)
    out_d[s:s + len(qb)] = np.asarray(d)[:len(qb)]
    out_i[s:s + len(qb)] = np.asarray(i)[:len(qb)]
  return out_d, out_i
