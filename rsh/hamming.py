"""Packed binary codes and exact Hamming search.

Codes are stored packed, eight bits a byte, most significant bit first: exactly
`numpy.packbits(bits, axis=1)`, so `codes: uint8[n, l // 8]` with `l` any multiple
of 8. FAISS binary indexes take the same bytes (`to_faiss` / `from_faiss`); their
Hamming distances equal ours because XOR + popcount does not care about bit order.

Distances are XOR + `lax.population_count` over 32-bit words in a jitted kernel.
Rankings are by distance ascending, ties broken by archive index (a stable order),
so every search here has one exact answer, whatever the blocking or sharding.

Top-k never sorts the archive and never materialises the `[nq, n]` distance
matrix. The archive is cut into groups of `GROUP` consecutive codes and the
kernel emits only each group's minimum distance per query. The k groups with the
smallest `(minimum, group index)` hold the exact top k (any other group has k
better codes in front of each of its members), so only `k * GROUP` candidates per
query are scored again and ordered. Group minima of 32 groups in turn prune the
groups the same way on large archives. Distances are small integers, so every
ordering left is numpy's stable sort of uint8/uint16, a linear-time counting
(radix) sort. The kernel puts queries on the minor (vector) axis: each archive
word is broadcast against a block of queries held in L1, which is what makes the
XOR-popcount run at memory speed on CPU.

`sharded_search` runs the same algorithm in pure JAX under `jax.shard_map`,
the archive split over all devices of a `jax.sharding.Mesh`: per-shard top-k,
then a merge by `(distance, global index)`. Its results equal `search`'s.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

__all__ = [
    "pack_codes", "unpack_codes", "code_words", "num_bits", "hamming_distances", "search",
    "distance_rows", "radius_search", "cosine_search", "normalise_rows", "sharded_search",
    "to_faiss", "from_faiss",
]

# Consecutive codes whose minimum distance the kernel keeps (the pruning unit).
GROUP = 32
# Groups whose minimum the second level keeps, on archives large enough for it.
SUPERGROUP = 32
# Codes per archive block: bounds the kernel's output, [queries, block / GROUP] bytes.
ARCHIVE_BLOCK = 1 << 20
# Queries per kernel call: their words stay in L1 while the archive streams past.
QUERY_BLOCK = 1024
# Elements (queries x candidates) in flight on the host at once: bounds memory.
_BUDGET = 1 << 24


# ----------------------------------------------------------------------------- packing


def pack_codes(x) -> np.ndarray:
  """Packs binary codes into bytes, most significant bit first (numpy.packbits).

  Args:
    x: `[n, l]` bits as bool, {0, 1}, ±1, or sign values in {-1, 0, 1} (any int or
      float dtype, numpy or JAX); a bit is set where `x > 0`. `l` a multiple of 8.

  Returns:
    codes: uint8[n, l // 8].
  """
  x = np.asarray(x)
  if x.dtype.kind not in "biuf":
    raise TypeError(f"pack_codes: `x` must be a bool, integer or float array of bits; "
                    f"got dtype {x.dtype}")
  if x.ndim != 2:
    raise ValueError(f"pack_codes: `x` must be 2-D [n, l]; got shape {x.shape} "
                     "(use x.reshape(1, -1) for a single code)")
  if x.shape[1] == 0 or x.shape[1] % 8:
    raise ValueError(f"pack_codes: code length l={x.shape[1]} of `x` is not a positive "
                     "multiple of 8")
  if x.dtype.kind == "b":
    bits = x
  else:
    if x.dtype.kind == "f" and np.isnan(x).any():
      raise ValueError("pack_codes: `x` contains NaN")
    if x.size and not np.isin(x, (-1, 0, 1)).all():
      raise ValueError(
          f"pack_codes: `x` must hold bits (bool, {{0, 1}}, ±1 or sign values); got values "
          f"in [{x.min()}, {x.max()}]: binarise first, e.g. pack_codes(h >= 0)")
    bits = x > 0
  return np.packbits(bits, axis=1)


def unpack_codes(codes, *, signed: bool = False) -> np.ndarray:
  """Inverse of `pack_codes`.

  Args:
    codes: uint8[n, l // 8].
    signed: return ±1 instead of {0, 1}.

  Returns:
    uint8[n, l] in {0, 1}, or int8[n, l] in {-1, 1} when `signed`.
  """
  codes = _check_codes(codes, "codes", "unpack_codes")
  bits = np.unpackbits(codes, axis=1)
  return (2 * bits.astype(np.int8) - 1) if signed else bits


def num_bits(codes) -> int:
  """l, the code length in bits, of packed `codes: uint8[n, l // 8]`."""
  return 8 * np.shape(codes)[1]


def code_words(codes, dtype=np.uint32) -> np.ndarray:
  """The kernel's word view of packed codes: uint32[n, ceil(l / 32)] (or uint64).

  Bytes are zero-padded to whole words, which adds nothing to any distance; the
  order of bits inside a word is irrelevant to XOR + popcount.
  """
  codes = np.ascontiguousarray(_check_codes(codes, "codes", "code_words"))
  size = np.dtype(dtype).itemsize
  if np.dtype(dtype) not in (np.dtype(np.uint32), np.dtype(np.uint64)):
    raise TypeError(f"code_words: `dtype` must be uint32 or uint64; got {np.dtype(dtype)}")
  pad = -codes.shape[1] % size
  if pad:
    codes = np.concatenate([codes, np.zeros((len(codes), pad), np.uint8)], axis=1)
  return codes.view(dtype)


# ----------------------------------------------------------------------------- checks


def _check_codes(x, name: str, fn: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype != np.uint8:
    raise TypeError(f"{fn}: `{name}` must be packed codes uint8[n, l // 8] (see pack_codes); "
                    f"got dtype {x.dtype}")
  if x.ndim != 2 or x.shape[1] == 0:
    raise ValueError(f"{fn}: `{name}` must be 2-D packed codes [n, l // 8]; got shape {x.shape}")
  return x


def _check_pair(q, db, fn: str):
  q = _check_codes(q, "q", fn)
  db = _check_codes(db, "db", fn)
  if q.shape[1] != db.shape[1]:
    raise ValueError(f"{fn}: `q` has {8 * q.shape[1]}-bit codes but `db` has "
                     f"{8 * db.shape[1]}-bit codes")
  if len(db) == 0:
    raise ValueError(f"{fn}: `db` is empty")
  if len(db) >= 2**31 - 1:
    raise ValueError(f"{fn}: `db` has {len(db)} codes; indices are int32")
  return q, db


def _check_k(k, n: int, fn: str) -> int:
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
    raise TypeError(f"{fn}: `k` must be an int; got {type(k).__name__}")
  if k < 1:
    raise ValueError(f"{fn}: `k` must be >= 1; got {k}")
  if k > n:
    raise ValueError(f"{fn}: `k`={k} is larger than the archive `db` ({n} codes)")
  return int(k)


def _dist_dtype(l: int):
  """Smallest unsigned type holding 0..l plus a sentinel above l."""
  return np.uint8 if l < 255 else np.uint16


def _sentinel(l: int) -> int:
  return int(np.iinfo(_dist_dtype(l)).max)


def _bucket(n: int, lo: int = 8) -> int:
  """n rounded up to a multiple of a power of two >= lo, at most 1/8 above n.

  Few distinct shapes, so few compilations, and little padding to compute.
  """
  step = max(lo, 1 << max(0, int(n).bit_length() - 4))
  return max(lo, -(-int(n) // step) * step)


def _pad_rows(x: np.ndarray, rows: int, value=None) -> np.ndarray:
  """x padded to `rows` rows with copies of its last row (or zeros)."""
  if len(x) == rows:
    return x
  out = np.empty((rows,) + x.shape[1:], x.dtype)
  out[:len(x)] = x
  out[len(x):] = x[-1] if value is None and len(x) else 0
  return out


# ----------------------------------------------------------------------------- kernels


@functools.partial(jax.jit, static_argnames=("dtype",))
def _distance_kernel(q_words, db_words_t, dtype):
  """uint32[nq, W], uint32[W, n] -> dtype[nq, n]: XOR + popcount, summed over words."""
  d = None
  for w in range(q_words.shape[1]):
    x = lax.population_count(q_words[:, w, None] ^ db_words_t[w][None, :])
    d = x if d is None else d + x
  return d.astype(dtype)


def _group_minima(q_words_t, db_grouped, n_groups, dtype, supergroup):
  """Minimum distance per group of consecutive codes, without the distance matrix.

  Args:
    q_words_t: uint32[W, nq], queries on the minor axis.
    db_grouped: uint32[W, GROUP, m]; `[w, g, j]` is word w of code `j * GROUP + g`.
    n_groups: groups that hold real codes; the rest read as the sentinel.
    supergroup: also return minima over this many consecutive groups (0: none).

  Returns:
    minima: dtype[m, nq], and dtype[m // supergroup, nq] when `supergroup` (queries
    stay minor: XLA's transpose of the large one would cost more than the kernel).
  """
  n_words, group, m = db_grouped.shape
  out = None
  # One fused loop: per archive word, broadcast against all queries (vector lanes),
  # accumulate the popcount over words and the minimum over the group's members.
  for g in range(group):
    d = None
    for w in range(n_words):
      x = lax.population_count(db_grouped[w, g][:, None] ^ q_words_t[w][None, :])
      d = x if d is None else d + x
    out = d if out is None else jnp.minimum(out, d)
  sentinel = jnp.iinfo(dtype).max
  out = jnp.where(jnp.arange(m)[:, None] < n_groups, out, sentinel).astype(dtype)
  if not supergroup:
    return out, None
  return out, out.reshape(m // supergroup, supergroup, -1).min(1)


_group_minima_kernel = jax.jit(_group_minima, static_argnames=("dtype", "supergroup"))


def _smallest(values: np.ndarray, k: int) -> np.ndarray:
  """Columns of the k smallest `(value, column)` per row, in that order.

  values: uint8/uint16[r, c] -> int64[r, min(k, c)]. numpy's stable sort of 8/16-bit
  integers is a radix (counting) sort: linear, and ties stay in column order.
  """
  return np.argsort(values, axis=1, kind="stable")[:, :k]


# ----------------------------------------------------------------------------- search


class _Archive:
  """Packed codes laid out once for the kernels: host words and device blocks."""

  def __init__(self, db: np.ndarray):
    self.n, self.nbytes = db.shape
    self.l = 8 * self.nbytes
    self.dtype = _dist_dtype(self.l)
    self.sentinel = _sentinel(self.l)
    self.words32 = code_words(db, np.uint32)  # [n, W] for the kernels
    # uint64 on the host where it fits: half the popcounts when re-scoring candidates.
    self.host_words = (code_words(db, np.uint64) if self.nbytes % 8 == 0 else self.words32)
    self._blocks = {}

  def blocks(self, k: int):
    starts = range(0, self.n, ARCHIVE_BLOCK)
    return [self._block(s, min(self.n, s + ARCHIVE_BLOCK), k) for s in starts]

  def _block(self, start: int, stop: int, k: int):
    n = stop - start
    m = -(-n // GROUP)
    if m < 4 * k:  # pruning would not pay: score the whole block
      key = (start, "direct")
      if key not in self._blocks:
        words = _pad_rows(self.words32[start:stop], _bucket(n, 256))
        self._blocks[key] = dict(mode="direct", start=start, n=n,
                                 words_t=jnp.asarray(words.T.copy()))
      return self._blocks[key]
    supergroup = SUPERGROUP if m >= 4 * k * SUPERGROUP else 0
    key = (start, supergroup)
    if key not in self._blocks:
      m_pad = _bucket(m, SUPERGROUP)
      # Padding repeats the last real code, so a part-filled group keeps its true
      # minimum; groups of padding only are masked by `n_groups` in the kernel.
      words = _pad_rows(self.words32[start:stop], m_pad * GROUP)
      grouped = words.reshape(m_pad, GROUP, -1).transpose(2, 1, 0)
      self._blocks[key] = dict(mode="groups", start=start, n=n, m=m, supergroup=supergroup,
                               grouped=jnp.asarray(np.ascontiguousarray(grouped)))
    return self._blocks[key]


def _block_topk(arch: _Archive, block: dict, q32: np.ndarray, q_host: np.ndarray, k: int):
  """Exact top-k of one archive block for a block of queries (host arrays).

  Returns (d: dtype[nq, kk], idx: int64[nq, kk]) ordered by (distance, index).
  """
  nq = len(q32)
  start, n = block["start"], block["n"]
  kk = min(k, n)
  nq_pad = _bucket(nq)
  if block["mode"] == "direct":
    d = np.array(_distance_kernel(jnp.asarray(_pad_rows(q32, nq_pad)), block["words_t"],
                                    arch.dtype))[:nq]
    d[:, n:] = arch.sentinel
    order = _smallest(d, kk)
    return np.take_along_axis(d, order, 1), order + start
  q_t = jnp.asarray(np.ascontiguousarray(_pad_rows(q32, nq_pad).T))
  minima, superminima = _group_minima_kernel(q_t, block["grouped"], block["m"], arch.dtype,
                                             block["supergroup"])
  minima = np.asarray(minima)  # [m, nq_pad]
  if block["supergroup"]:
    # The k best supergroups hold the k best groups (same argument as for codes).
    sup = np.sort(_smallest(np.ascontiguousarray(np.asarray(superminima)[:, :nq].T), kk), axis=1)
    groups = (sup[:, :, None] * block["supergroup"] + np.arange(block["supergroup"]))
    groups = groups.reshape(nq, -1)
    values = minima[groups, np.arange(nq)[:, None]]
    groups = np.take_along_axis(groups, _smallest(values, kk), 1)
  else:
    groups = _smallest(np.ascontiguousarray(minima[:, :nq].T), kk)
  groups.sort(axis=1)  # ascending groups -> candidates in index order -> stable ties
  cand = (groups[:, :, None] * GROUP + np.arange(GROUP)).reshape(nq, -1)
  words = arch.host_words[start:start + n]
  cand_c = np.minimum(cand, n - 1)
  d = None
  for w in range(words.shape[1]):
    x = np.bitwise_count(words[cand_c, w] ^ q_host[:, w, None])
    d = x.astype(arch.dtype) if d is None else d + x
  d[cand >= n] = arch.sentinel
  order = _smallest(d, kk)
  return np.take_along_axis(d, order, 1), np.take_along_axis(cand, order, 1) + start


def _merge(best, new, k: int):
  """Merges two top-k lists; `best` holds only smaller archive indices than `new`."""
  if best is None:
    return new
  d = np.concatenate([best[0], new[0]], axis=1)
  i = np.concatenate([best[1], new[1]], axis=1)
  order = _smallest(d, k)  # stable: on equal distance the earlier block wins
  return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def search(q, db, k: int):
  """Exact k nearest codes by Hamming distance, ties broken by archive index.

  Args:
    q: uint8[nq, l // 8] packed query codes.
    db: uint8[n, l // 8] packed archive codes.
    k: neighbours per query, 1 <= k <= n.

  Returns:
    distances: int32[nq, k], ascending; indices: int32[nq, k] into `db`.
  """
  q, db = _check_pair(q, db, "search")
  k = _check_k(k, len(db), "search")
  arch = _Archive(db)
  q32 = code_words(q, np.uint32)
  q_host = code_words(q, arch.host_words.dtype.type)
  out_d = np.empty((len(q), k), np.int32)
  out_i = np.empty((len(q), k), np.int32)
  blocks = arch.blocks(k)
  # Queries per pass: the host holds [queries, k * GROUP] candidates (or a direct
  # block's [queries, codes] distances) at a time.
  widest = max(b["n"] if b["mode"] == "direct" else k * GROUP * 2 for b in blocks)
  step = int(np.clip(_BUDGET // widest, 1, QUERY_BLOCK))
  for s in range(0, len(q), step):
    best = None
    for block in blocks:
      best = _merge(best, _block_topk(arch, block, q32[s:s + step], q_host[s:s + step], k), k)
    out_d[s:s + step], out_i[s:s + step] = best
  return out_d, out_i


def hamming_distances(q, db, *, max_bytes: int = 1 << 30) -> np.ndarray:
  """The full Hamming distance matrix, computed in blocks by the jitted kernel.

  Args:
    q: uint8[nq, l // 8]; db: uint8[n, l // 8] packed codes.
    max_bytes: refuse results larger than this; use `search` or `radius_search`,
      which never build the matrix (1,000 x 10M codes would be 10 GB).

  Returns:
    uint8[nq, n] (uint16 when l >= 256).
  """
  q, db = _check_pair(q, db, "hamming_distances")
  dtype = _dist_dtype(8 * q.shape[1])
  size = len(q) * len(db) * np.dtype(dtype).itemsize
  if size > max_bytes:
    raise ValueError(f"hamming_distances: the [{len(q)}, {len(db)}] result would take "
                     f"{size / 2**30:.1f} GiB > `max_bytes`; use search() or radius_search()")
  out = np.empty((len(q), len(db)), dtype)
  for qs, a0, d in _distance_blocks(q, db):
    out[qs, a0:a0 + d.shape[1]] = d
  return out


def _distance_blocks(q: np.ndarray, db: np.ndarray):
  """Yields (query slice, archive start, dtype[nq_b, n_b] distances), bounded blocks."""
  dtype = _dist_dtype(8 * q.shape[1])
  q32, db32 = code_words(q, np.uint32), code_words(db, np.uint32)
  cols = min(_bucket(len(db), 256), ARCHIVE_BLOCK)
  rows = int(np.clip(_BUDGET // cols, 1, QUERY_BLOCK))
  for a0 in range(0, len(db), cols):
    n = min(cols, len(db) - a0)
    words_t = jnp.asarray(np.ascontiguousarray(_pad_rows(db32[a0:a0 + n], _bucket(n, 256)).T))
    for q0 in range(0, len(q), rows):
      qb = q32[q0:q0 + rows]
      d = _distance_kernel(jnp.asarray(_pad_rows(qb, _bucket(len(qb)))), words_t, dtype)
      yield slice(q0, q0 + len(qb)), a0, np.asarray(d)[:len(qb), :n]


def distance_rows(q, db, *, rows: int = 256):
  """Distances to the whole archive for successive blocks of queries.

  Each next block is dispatched to the kernel before the current one is handed
  out, so XLA computes it on its own threads while the caller works (metrics rank
  one block while the next one's distances are computed).

  Args:
    q: uint8[nq, l // 8]; db: uint8[n, l // 8] packed codes.
    rows: queries per block (fewer when n is large: at most 2^24 distances a block).

  Yields:
    (query slice, uint8[b, n] distances; uint16 when l >= 256).
  """
  q, db = _check_pair(q, db, "distance_rows")
  n = len(db)
  dtype = _dist_dtype(8 * q.shape[1])
  q32 = code_words(q, np.uint32)
  words_t = jnp.asarray(np.ascontiguousarray(
      _pad_rows(code_words(db, np.uint32), -(-n // 256) * 256).T))
  rows = int(np.clip(min(rows, _BUDGET // n), 1, QUERY_BLOCK))

  def dispatch(s):
    qb = q32[s:s + rows]
    d = _distance_kernel(jnp.asarray(_pad_rows(qb, _bucket(len(qb)))), words_t, dtype)
    return s, len(qb), d

  pending = dispatch(0) if len(q) else None
  while pending is not None:
    s, b, dev = pending
    pending = dispatch(s + rows) if s + rows < len(q) else None
    yield slice(s, s + b), np.asarray(dev)[:b, :n]


def radius_search(q, db, radius: int):
  """All codes within Hamming distance `radius` of each query.

  Args:
    q: uint8[nq, l // 8]; db: uint8[n, l // 8] packed codes.
    radius: int >= 0.

  Returns:
    (distances, indices): two lists of nq arrays, int32[m_i] each, ordered by
    (distance, index).
  """
  q, db = _check_pair(q, db, "radius_search")
  if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
    raise ValueError(f"radius_search: `radius` must be an int >= 0; got {radius!r}")
  hits = [[] for _ in range(len(q))]
  for qs, a0, d in _distance_blocks(q, db):
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


def _check_features(x, name: str, fn: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype.kind not in "fiub":
    raise TypeError(f"{fn}: `{name}` must be a real-valued array [n, f]; got dtype {x.dtype}")
  if x.ndim != 2:
    raise ValueError(f"{fn}: `{name}` must be 2-D [n, f]; got shape {x.shape}")
  x = x.astype(np.float32)
  if not np.isfinite(x).all():
    raise ValueError(f"{fn}: `{name}` contains NaN or infinite values")
  return x


def normalise_rows(x: np.ndarray) -> np.ndarray:
  """float32[n, f] rows scaled to unit length; all-zero rows stay zero."""
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.where(norm > 0, norm, 1).astype(np.float32)


def top_k_desc(scores: np.ndarray, k: int):
  """k largest per row, ties by smallest column, without sorting whole rows.

  scores: float32[r, c] -> (values float32[r, k] descending, columns int64[r, k]).
  """
  r, c = scores.shape
  if k >= c:
    order = np.argsort(-scores, axis=1, kind="stable")
  else:
    neg = -scores
    kth = np.partition(neg, k - 1, axis=1)[:, k - 1:k]
    less = neg < kth
    # On the k-th value keep only the first columns needed: ties go by index.
    need = k - less.sum(1, keepdims=True)
    take = less | ((neg == kth) & (np.cumsum(neg == kth, axis=1) <= need))
    cols = np.nonzero(take)[1].reshape(r, k)
    order = np.take_along_axis(cols, np.argsort(np.take_along_axis(neg, cols, 1), axis=1,
                                                kind="stable"), 1)
  return np.take_along_axis(scores, order, 1), order


def cosine_search(q, db, k: int):
  """Exact k most cosine-similar archive features, ties broken by archive index.

  Args:
    q: float[nq, f] query features; db: float[n, f] archive features (NaN refused;
      an all-zero row has similarity 0 to everything).
    k: 1 <= k <= n.

  Returns:
    similarities: float32[nq, k], descending; indices: int32[nq, k] into `db`.
  """
  q = _check_features(q, "q", "cosine_search")
  db = _check_features(db, "db", "cosine_search")
  if q.shape[1] != db.shape[1]:
    raise ValueError(f"cosine_search: `q` has {q.shape[1]} features but `db` has {db.shape[1]}")
  if len(db) == 0:
    raise ValueError("cosine_search: `db` is empty")
  k = _check_k(k, len(db), "cosine_search")
  qn, dbn = normalise_rows(q), normalise_rows(db)
  cols = min(len(db), max(1 << 16, 4 * k))
  rows = int(np.clip(_BUDGET // cols, 1, QUERY_BLOCK))
  out_s = np.empty((len(q), k), np.float32)
  out_i = np.empty((len(q), k), np.int32)
  for q0 in range(0, len(q), rows):
    best = None
    for a0 in range(0, len(db), cols):
      s = qn[q0:q0 + rows] @ dbn[a0:a0 + cols].T
      v, i = top_k_desc(s, min(k, s.shape[1]))
      if best is not None:  # earlier blocks first: on equal scores they win
        v, i = np.concatenate([best[0], v], 1), np.concatenate([best[1], i + a0], 1)
        v, j = top_k_desc(v, k)
        i = np.take_along_axis(i, j, 1)
        best = (v, i)
      else:
        best = (v, i + a0)
    out_s[q0:q0 + rows], out_i[q0:q0 + rows] = best
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
    minima, _ = _group_minima(q_t, grouped, (valid + GROUP - 1) // GROUP, dtype, 0)
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
  q, db = _check_pair(q, db, "sharded_search")
  k = _check_k(k, len(db), "sharded_search")
  if mesh is None:
    mesh = Mesh(np.array(jax.local_devices()), ("archive",))
  if "archive" not in mesh.axis_names:
    raise ValueError(f"sharded_search: `mesh` needs an axis named 'archive'; has {mesh.axis_names}")
  devices = mesh.shape["archive"]
  n, l = len(db), 8 * db.shape[1]
  dtype = _dist_dtype(l)
  # Shards of whole groups; padding repeats the last code and is masked by index.
  per_shard = _bucket(-(-n // devices), GROUP)
  k_local = min(k, per_shard)
  direct = 4 * k_local * GROUP > per_shard
  words = _pad_rows(code_words(db, np.uint32), devices * per_shard)
  grouped = words.reshape(-1, GROUP, words.shape[1]).transpose(2, 1, 0)
  rows = jax.device_put(words, NamedSharding(mesh, P("archive", None)))
  grouped = jax.device_put(np.ascontiguousarray(grouped),
                           NamedSharding(mesh, P(None, None, "archive")))
  run = _sharded_fn(mesh, n, per_shard, k_local, k, dtype, direct)
  q32 = code_words(q, np.uint32)
  out_d = np.empty((len(q), k), np.int32)
  out_i = np.empty((len(q), k), np.int32)
  step = int(np.clip(_BUDGET // (k_local * GROUP * devices), 8, QUERY_BLOCK))
  for s in range(0, len(q), step):
    qb = q32[s:s + step]
    q_t = jnp.asarray(np.ascontiguousarray(_pad_rows(qb, _bucket(len(qb))).T))
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
  codes = np.ascontiguousarray(_check_codes(codes, "codes", "to_faiss"))
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
