"""`search`: exact top-k by Hamming distance, pruned by group minima.

The archive is cut into groups of `GROUP` consecutive codes; the kernel
(`hamming.group_minima`) emits each group's minimum distance per query, the k
best groups (and on large archives the k best supergroups of `SUPERGROUP`
groups before them) hold the exact top k, and only their codes are scored
again and ordered (see `rsh.search`'s docstring for why this is exact).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from rsh import hamming
from rsh import ranking

__all__ = ["GROUP", "SUPERGROUP", "search"]

# Consecutive codes whose minimum distance the kernel keeps (the pruning unit).
GROUP = 32
# Groups whose minimum the second level keeps, on archives large enough for it.
SUPERGROUP = 32


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
