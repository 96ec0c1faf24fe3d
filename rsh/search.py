"""Exact search over packed binary codes: top-k, radius, cosine, sharded, FAISS.

Codes are `rsh.hamming`'s packed bytes, `uint8[n, l // 8]`. Rankings are by
distance ascending (cosine similarity descending for `cosine_search`), ties broken
by archive index (a stable order), so every search here has one exact answer,
whatever the blocking or sharding. Ties and top-k go through `rsh.ranking`.

Top-k never sorts the archive and never materialises the `[nq, n]` distance
matrix. The archive is cut into groups of `GROUP` consecutive codes and the
kernel (`hamming.group_minima`) emits only each group's minimum distance per
query. The k groups with the smallest `(minimum, group index)` hold the exact top
k (any other group has k better codes in front of each of its members), so only
`k * GROUP` candidates per query are scored again and ordered. Group minima of
32 groups in turn prune the groups the same way on large archives. Distances are
small integers, so every ordering left is numpy's stable sort of uint8/uint16
(`ranking.top_k_ascending`), a linear-time counting (radix) sort. The kernel puts
queries on the minor (vector) axis: each archive word is broadcast against a block
of queries held in L1, which is what makes the XOR-popcount run at memory speed on
CPU. Query passes run in threads, one per core: numpy's gathers, popcounts and sorts
release the GIL, so one pass's host work runs beside another's kernel.

`sharded_search` runs the same algorithm in pure JAX under `jax.shard_map`,
the archive split over all devices of a `jax.sharding.Mesh`: per-shard top-k,
then a merge by `(distance, global index)`. Its results equal `search`'s.
`to_faiss` / `from_faiss` move the same bytes in and out of FAISS binary indexes.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from rsh import hamming
from rsh import ranking

__all__ = [
    "search", "radius_search", "cosine_search", "sharded_search", "to_faiss", "from_faiss",
]

# Consecutive codes whose minimum distance the kernel keeps (the pruning unit).
GROUP = 32
# Groups whose minimum the second level keeps, on archives large enough for it.
SUPERGROUP = 32


# ----------------------------------------------------------------------------- search


class _Archive:
  """Packed codes laid out for the kernels: host word views and device blocks.

  Host words are views of `db` where its rows are whole words (no copy); each
  block's device layout is built when the block is first asked for.
  """

  def __init__(self, db: np.ndarray):
    self.n, self.nbytes = db.shape
    self.l = 8 * self.nbytes
    self.dtype = hamming.distance_dtype(self.l)
    self.sentinel = int(np.iinfo(self.dtype).max)
    self.words32 = hamming.code_words(db, np.uint32)  # [n, W] for the kernels (views)
    # uint64 on the host where it fits: half the popcounts when re-scoring candidates.
    self.host_words = (hamming.code_words(db, np.uint64) if self.nbytes % 8 == 0
                       else self.words32)
    self._blocks = {}

  def blocks(self, k: int):
    starts = range(0, self.n, hamming.ARCHIVE_BLOCK)
    return [self._block(s, min(self.n, s + hamming.ARCHIVE_BLOCK), k) for s in starts]

  def _block(self, start: int, stop: int, k: int):
    n = stop - start
    m = -(-n // GROUP)
    if m < 4 * k:  # pruning would not pay: score the whole block
      key = (start, "direct")
      if key not in self._blocks:
        words = hamming.pad_rows(self.words32[start:stop], hamming.bucket(n, 256))
        self._blocks[key] = dict(mode="direct", start=start, n=n,
                                 words_t=jnp.asarray(words.T.copy()))
      return self._blocks[key]
    supergroup = SUPERGROUP if m >= 4 * k * SUPERGROUP else 0
    key = (start, supergroup)
    if key not in self._blocks:
      m_pad = hamming.bucket(m, SUPERGROUP)
      # Padding repeats the last real code, so a part-filled group keeps its true
      # minimum; groups of padding only are masked by `n_groups` in the kernel.
      words = hamming.pad_rows(self.words32[start:stop], m_pad * GROUP)
      # [W, GROUP, m] by way of [W, n]: numpy's copies are cheaper in two steps.
      grouped = np.ascontiguousarray(words.T).reshape(-1, m_pad, GROUP).transpose(0, 2, 1)
      # Host rows for the re-score: group j's words, [full, GROUP * W] (a view), and
      # a part-filled last group (padded by its last code) apart.
      host = self.host_words[start:stop]
      full = n // GROUP
      tail = (hamming.pad_rows(host[full * GROUP:], GROUP).reshape(1, -1)
              if n % GROUP else None)
      self._blocks[key] = dict(mode="groups", start=start, n=n, m=m, supergroup=supergroup,
                               grouped=jnp.asarray(np.ascontiguousarray(grouped)),
                               host_groups=host[:full * GROUP].reshape(full, -1),
                               tail=tail, full=full)
    return self._blocks[key]


# Group minima come back transposed ([nq, m], what the host ranks) when the matrix is
# at most this big: XLA's transpose is then cheaper than numpy's; above, numpy's.
_TRANSPOSE_MAX = 1 << 23


@functools.partial(jax.jit, static_argnames=("dtype",))
def _group_minima_t(q_words_t, db_grouped, n_groups, dtype):
  """`hamming.group_minima` without supergroups, returned as dtype[nq, m]."""
  minima, _ = hamming.group_minima(q_words_t, db_grouped, n_groups, dtype, 0)
  return minima.T


def _rescore(arch: _Archive, block: dict, groups: np.ndarray, q_host: np.ndarray):
  """Distances of the codes of `groups: int64[nq, g]` (ascending) to their queries.

  Returns dtype[nq, g * GROUP]: column `j * GROUP + r` is code `r` of group
  `groups[:, j]`, padding past the block's end at the sentinel.
  """
  nq, g = groups.shape
  n_words = q_host.shape[1]
  full, tail = block["full"], block["tail"]
  if full:
    rows = np.take(block["host_groups"], groups, axis=0, mode="clip")  # [nq, g, GROUP*W]
  else:
    rows = np.empty((nq, g, tail.shape[1]), tail.dtype)
  at_tail = groups >= full if tail is not None else None
  if at_tail is not None:
    rows[at_tail] = tail[0]
  rows = rows.reshape(nq, g, GROUP, n_words)
  np.bitwise_xor(rows, q_host[:, None, None, :], out=rows)
  x = np.bitwise_count(rows)
  d = x[..., 0].astype(arch.dtype)
  for w in range(1, n_words):
    d += x[..., w]
  if at_tail is not None:
    d[at_tail, block["n"] - full * GROUP:] = arch.sentinel
  return d.reshape(nq, g * GROUP)


def _block_topk(arch: _Archive, block: dict, q32: np.ndarray, q_host: np.ndarray, k: int):
  """Exact top-k of one archive block for a block of queries (host arrays).

  Returns (d: dtype[nq, kk], idx: int64[nq, kk]) ordered by (distance, index).
  """
  nq = len(q32)
  start, n = block["start"], block["n"]
  kk = min(k, n)
  nq_pad = hamming.bucket(nq)
  if block["mode"] == "direct":
    q_pad = jnp.asarray(hamming.pad_rows(q32, nq_pad))
    d = np.array(hamming.distance_kernel(q_pad, block["words_t"], arch.dtype))[:nq]
    d[:, n:] = arch.sentinel
    order = ranking.top_k_ascending(d, kk)
    return np.take_along_axis(d, order, 1), order + start
  q_t = jnp.asarray(np.ascontiguousarray(hamming.pad_rows(q32, nq_pad).T))
  grouped = block["grouped"]
  if not block["supergroup"] and grouped.shape[2] * nq_pad <= _TRANSPOSE_MAX:
    minima_t = np.asarray(_group_minima_t(q_t, grouped, block["m"], arch.dtype))
    groups = ranking.top_k_ascending(minima_t[:nq], kk)
  else:
    minima, superminima = hamming.group_minima(q_t, grouped, block["m"], arch.dtype,
                                               block["supergroup"])
    minima = np.asarray(minima)  # [m, nq]
    if block["supergroup"]:
      # The k best supergroups hold the k best groups (same argument as for codes).
      sup = ranking.top_k_ascending(np.ascontiguousarray(np.asarray(superminima)[:, :nq].T), kk)
      sup = np.sort(sup, axis=1)
      groups = (sup[:, :, None] * block["supergroup"] + np.arange(block["supergroup"]))
      groups = groups.reshape(nq, -1)
      values = np.take(minima.ravel(), groups * minima.shape[1] + np.arange(nq)[:, None])
      groups = np.take_along_axis(groups, ranking.top_k_ascending(values, kk), 1)
    else:
      groups = ranking.top_k_ascending(np.ascontiguousarray(minima[:, :nq].T), kk)
  groups.sort(axis=1)  # ascending groups -> candidates in index order -> stable ties
  d = _rescore(arch, block, groups, q_host)
  order = ranking.top_k_ascending(d, kk)
  idx = np.take_along_axis(groups, order // GROUP, 1) * GROUP + order % GROUP
  return np.take_along_axis(d, order, 1), idx + start


def _merge(best, new, k: int):
  """Merges two top-k lists; `best` holds only smaller archive indices than `new`."""
  if best is None:
    return new
  d = np.concatenate([best[0], new[0]], axis=1)
  i = np.concatenate([best[1], new[1]], axis=1)
  order = ranking.top_k_ascending(d, k)  # stable: on equal distance the earlier block wins
  return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


# Threads for the query passes of `search` (the cores this process may use), and the
# fewest queries worth a thread of their own.
_THREADS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 1)))
_MIN_THREAD_QUERIES = 64


@functools.lru_cache(maxsize=1)
def _pool():
  return concurrent.futures.ThreadPoolExecutor(_THREADS, thread_name_prefix="rsh-search")


def search(q, db, k: int):
  """Exact k nearest codes by Hamming distance, ties broken by archive index.

  Args:
    q: uint8[nq, l // 8] packed query codes.
    db: uint8[n, l // 8] packed archive codes.
    k: neighbours per query, 1 <= k <= n.

  Returns:
    distances: int32[nq, k], ascending; indices: int32[nq, k] into `db`.
  """
  q, db = hamming.check_pair(q, db, "search")
  k = hamming.check_k(k, len(db), "search")
  arch = _Archive(db)
  q32 = hamming.code_words(q, np.uint32)
  q_host = hamming.code_words(q, arch.host_words.dtype.type)
  out_d = np.empty((len(q), k), np.int32)
  out_i = np.empty((len(q), k), np.int32)
  blocks = arch.blocks(k)
  # Queries per pass: the host holds [queries, k * GROUP] candidates' words and
  # distances (or a direct block's [queries, codes] distances) at a time.
  n_words = arch.host_words.shape[1]
  widest = max(b["n"] if b["mode"] == "direct" else k * GROUP * (1 + n_words) for b in blocks)
  step = int(np.clip(hamming.BUDGET // widest, 1, hamming.QUERY_BLOCK))
  # Query passes run on `_THREADS` threads: numpy's sorts, gathers and popcounts
  # release the GIL, so the host work of one pass overlaps another's kernel.
  if len(q) >= 2 * _MIN_THREAD_QUERIES:
    step = min(step, max(_MIN_THREAD_QUERIES, -(-len(q) // _THREADS)))

  def run(s):
    best = None
    for block in blocks:
      best = _merge(best, _block_topk(arch, block, q32[s:s + step], q_host[s:s + step], k), k)
    out_d[s:s + step], out_i[s:s + step] = best

  starts = range(0, len(q), step)
  if len(starts) > 1 and _THREADS > 1:
    list(_pool().map(run, starts))
  else:
    for s in starts:
      run(s)
  return out_d, out_i


def radius_search(q, db, radius: int):
  """All codes within Hamming distance `radius` of each query.

  Args:
    q: uint8[nq, l // 8]; db: uint8[n, l // 8] packed codes.
    radius: int in 0..l (0: equal codes only).

  Returns:
    (distances, indices): two lists of nq arrays, int32[m_i] each, ordered by
    (distance, index).
  """
  q, db = hamming.check_pair(q, db, "radius_search")
  l = 8 * db.shape[1]
  radius = hamming.check_int(radius, "radius", "radius_search", 0, l,
                             f"the code length ({l} bits)")
  hits = [[] for _ in range(len(q))]
  for qs, a0, d in hamming.distance_blocks(q, db):
    rows, cols = np.nonzero(d <= radius)
    bounds = np.searchsorted(rows, np.arange(d.shape[0] + 1))
    for r in range(d.shape[0]):
      c = cols[bounds[r]:bounds[r + 1]]
      hits[qs.start + r].append((d[r, c], c + a0))
  dists, idxs = [], []
  for h in hits:
    dd = np.concatenate([x[0] for x in h]).astype(np.int32)
    ii = np.concatenate([x[1] for x in h]).astype(np.int32)
    order = np.argsort(dd, kind="stable")  # indices arrive ascending: ties stay by index
    dists.append(dd[order])
    idxs.append(ii[order])
  return dists, idxs


# ----------------------------------------------------------------------------- cosine


def cosine_search(q, db, k: int):
  """Exact k most cosine-similar archive features, ties broken by archive index.

  Args:
    q: float[nq, f] query features; db: float[n, f] archive features (NaN refused;
      an all-zero row has similarity 0 to everything).
    k: 1 <= k <= n.

  Returns:
    similarities: float32[nq, k], descending; indices: int32[nq, k] into `db`.
  """
  q = ranking.check_features(q, "q", "cosine_search")
  db = ranking.check_features(db, "db", "cosine_search")
  if q.shape[1] != db.shape[1]:
    raise ValueError(f"cosine_search: `q` has {q.shape[1]} features but `db` has {db.shape[1]}")
  if len(db) == 0:
    raise ValueError("cosine_search: `db` is empty")
  k = hamming.check_k(k, len(db), "cosine_search")
  cols = min(len(db), max(1 << 16, 4 * k))
  rows = int(np.clip(hamming.BUDGET // cols, 1, hamming.QUERY_BLOCK))
  out_s = np.empty((len(q), k), np.float32)
  out_i = np.empty((len(q), k), np.int32)
  best = None
  for q0, a0, s in ranking.cosine_blocks(q, db, rows, cols):
    i = ranking.top_k_descending(s, k)
    v = np.take_along_axis(s, i, 1)
    if a0:  # earlier blocks first: on equal scores they win
      v, i = np.concatenate([best[0], v], 1), np.concatenate([best[1], i + a0], 1)
      j = ranking.top_k_descending(v, k)
      v, i = np.take_along_axis(v, j, 1), np.take_along_axis(i, j, 1)
    best = (v, i)
    if a0 + s.shape[1] == len(db):  # the query block's last archive block
      out_s[q0:q0 + len(s)], out_i[q0:q0 + len(s)] = best
  return out_s, out_i


# ----------------------------------------------------------------------------- sharded


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
  """`search` with the archive sharded over all devices of a mesh.

  Each device finds its shard's exact top-k in pure JAX (group minima, then the
  candidates); the lists are merged by (distance, global index), so results equal
  `search`'s for any number of devices.

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


# ----------------------------------------------------------------------------- faiss


def _faiss():
  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("FAISS interop needs faiss: pip install faiss-cpu "
                      "(or: pip install -e '.[faiss]')") from e
  return faiss


def to_faiss(codes):
  """A `faiss.IndexBinaryFlat` holding packed `codes: uint8[n, l // 8]`.

  The bytes go in unchanged; FAISS's Hamming distances equal `search`'s.
  """
  codes = np.ascontiguousarray(hamming.check_codes(codes, "codes", "to_faiss"))
  index = _faiss().IndexBinaryFlat(8 * codes.shape[1])
  if len(codes):
    index.add(codes)
  return index


def from_faiss(index) -> np.ndarray:
  """The packed codes `uint8[n, l // 8]` stored in a FAISS binary index."""
  faiss = _faiss()
  if not isinstance(index, faiss.IndexBinary):
    raise TypeError(f"from_faiss: `index` must be a faiss binary index; got {type(index).__name__}")
  if index.ntotal == 0:
    return np.zeros((0, index.code_size), np.uint8)
  return np.asarray(index.reconstruct_n(0, index.ntotal), np.uint8).reshape(-1, index.code_size)
