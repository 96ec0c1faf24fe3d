"""`count_by_distance`: one pass over an archive in chunks, the little its metrics need.

`rsh.search.protocol_streamed.evaluate_streamed` computes retrieval metrics from what
this keeps, never from score rows. The archive (codes and labels: arrays, memmaps, a
code file) is the outer loop, one chunk of consecutive codes at a time; per query it keeps

  * per Hamming distance d in 0..l, the archive items at distance d, jointly with their
    gain (class labels: relevant 0/1; multi-hot: shared labels 0..c): int64 counts
    [nq, gains + 1, l + 1];
  * the exact top m by `(distance, archive index)`, the protocol's ranking
    (`stream_search` on each chunk, merged with `merge_topk`), and those items' gains.

Counting: a jitted kernel turns each [queries, codes] block into keys d + (l + 1) * gain
(XOR-popcount distances; gains by equality of class ids, or AND-popcount of packed
multi-hot labels); where the squared key range is small, two neighbouring keys are one
value, so one host `np.bincount` per query row counts two pairs an element (about
0.75 ns a pair at 64 bits on one core; a jitted `segment_sum` of the same keys, XLA's
scatter on CPU, took ~5x longer). The next block's keys are computed by XLA meanwhile.

One process scans the whole archive (under `rsh.distributed`, every process would).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from rsh import hamming
from rsh.search import codefile
from rsh.search import stream

__all__ = ["count_by_distance", "check_archive", "DistanceCounts"]

# Paired keys while a query row's bincount table ((key range)^2 int64s) stays cache-sized.
_PAIR_BINS = 1 << 18


@dataclasses.dataclass(frozen=True)
class DistanceCounts:
  """What `evaluate_streamed` keeps of an archive, for `nq` queries of `l` bits.

  by_gain_distance: int64[nq, g + 1, l + 1], archive items per (gain, distance); gain
    is relevance 0/1 for class labels (g = 1), shared labels 0..c for multi-hot (g = c).
  distances: int32[nq, m], indices: int64[nq, m]: the exact top m by (distance, index).
  gains: int64[nq, m], the gains of those items.
  """
  by_gain_distance: np.ndarray
  distances: np.ndarray
  indices: np.ndarray
  gains: np.ndarray

  @property
  def items(self) -> np.ndarray:
    """int64[nq, l + 1]: archive items at each distance."""
    return self.by_gain_distance.sum(1)

  @property
  def relevant(self) -> np.ndarray:
    """int64[nq, l + 1]: relevant archive items (gain > 0) at each distance."""
    return self.by_gain_distance[:, 1:].sum(1)


# ----------------------------------------------------------------------------- checks


def check_archive(archive_codes, q: np.ndarray, fn: str):
  """uint8[n, l // 8] array-like (never read whole) from an array, a CodeFile or a path,
  checked against the queries `q` (uint8[nq, l // 8])."""
  a = archive_codes
  if isinstance(a, (str, os.PathLike)):
    a = codefile.open_codes(a)
  if isinstance(a, codefile.CodeFile):
    a = a.codes
  if not hasattr(a, "shape"):
    a = np.asarray(a)
  if np.dtype(a.dtype) != np.uint8 or len(a.shape) != 2:
    raise TypeError(f"{fn}: `archive_codes` must be packed codes uint8[n, l // 8]; got "
                    f"{np.dtype(a.dtype)}{list(a.shape)}")
  if a.shape[1] != q.shape[1]:
    raise ValueError(f"{fn}: `query_codes` have {8 * q.shape[1]}-bit codes but "
                     f"`archive_codes` {8 * a.shape[1]}-bit codes")
  if a.shape[0] == 0:
    raise ValueError(f"{fn}: `archive_codes` is empty")
  return a


def _labels(query_labels, archive_labels, nq: int, n: int, fn: str):
  """(query labels: int[nq] or uint8[nq, c], archive labels unread, multi-hot?)."""
  ql, al = np.asarray(query_labels), archive_labels
  if not hasattr(al, "shape"):
    al = np.asarray(al)
  shape, kind = tuple(al.shape), np.dtype(al.dtype).kind
  if ql.ndim not in (1, 2) or len(shape) != ql.ndim or (ql.ndim == 2 and shape[1] != ql.shape[1]):
    raise ValueError(f"{fn}: `query_labels` {ql.shape} and `archive_labels` {list(shape)} are "
                     "not the same kind of labels (int[n] classes, or multi-hot [n, c])")
  if len(ql) != nq or shape[0] != n:
    raise ValueError(f"{fn}: {len(ql)} query labels for {nq} query codes, {shape[0]} archive "
                     f"labels for {n} archive codes")
  if ql.ndim == 1 and (ql.dtype.kind not in "iu" or kind not in "iu"):
    raise TypeError(f"{fn}: class labels must be integers; got {ql.dtype} and {al.dtype}")
  if ql.ndim == 2:
    ql = _multi_hot(ql, "query_labels", fn)
  return ql, al, ql.ndim == 2


def _multi_hot(x: np.ndarray, name: str, fn: str) -> np.ndarray:
  """uint8 {0, 1} multi-hot rows, checked (archive labels: one chunk at a time)."""
  x = np.asarray(x)
  if x.dtype.kind not in "biuf" or (x.size and not np.isin(x, (0, 1)).all()):
    raise ValueError(f"{fn}: multi-hot `{name}` must hold only 0 and 1")
  return x.astype(np.uint8)


# ----------------------------------------------------------------------------- counting


@functools.partial(jax.jit, static_argnames=("bits", "trash", "pairs", "multi", "dtype"))
def _keys(q_words, db_words_t, q_lab, db_lab, n_valid, bits, trash, pairs, multi, dtype):
  """Keys d + (bits + 1) * gain of a [b, m] block; `trash` in the m - n_valid pad columns.

  q_words: uint32[b, W]; db_words_t: uint32[W, m]. Class labels: q_lab int32[b], db_lab
  int32[m], gain = equality. Multi-hot: uint32[b, V] and uint32[V, m], gain = popcount of
  the AND. pairs: int[b, m // 2] keys k0 + (trash + 1) * k1 of neighbouring columns.
  """
  d = hamming.distance_kernel(q_words, db_words_t, jnp.int32)
  if multi:
    g = sum(lax.population_count(q_lab[:, v, None] & db_lab[v][None, :]).astype(jnp.int32)
            for v in range(q_lab.shape[1]))
  else:
    g = (q_lab[:, None] == db_lab[None, :]).astype(jnp.int32)
  key = jnp.where(jnp.arange(d.shape[1])[None, :] < n_valid, d + (bits + 1) * g, trash)
  if pairs:
    key = key[:, 0::2] + (trash + 1) * key[:, 1::2]
  return key.astype(dtype)


class _Counter:
  """Accumulates `by_gain_distance` over chunks: `add(codes, labels)` one chunk."""

  def __init__(self, q: np.ndarray, ql: np.ndarray, multi: bool, fn: str):
    self.fn, self.multi, self.bits = fn, multi, 8 * q.shape[1]
    self.gains = ql.shape[1] if multi else 1
    self.trash = (self.bits + 1) * (self.gains + 1)  # one bin past every real key
    self.pairs = (self.trash + 1) ** 2 <= _PAIR_BINS
    top = (self.trash + 1) ** 2 if self.pairs else self.trash + 1
    self.dtype = np.uint16 if top <= 1 << 16 else np.int32
    self.q32 = hamming.code_words(q, np.uint32)
    if multi:  # labels packed like codes: shared labels are a popcount of the AND
      self.qlab = hamming.code_words(np.packbits(ql, axis=1), np.uint32)
    else:  # archive labels become the index of their class among the queries' (-1: none)
      self.classes, self.qlab = np.unique(ql, return_inverse=True)
      self.qlab = self.qlab.astype(np.int32)
    self.counts = np.zeros((len(q), self.trash), np.int64)

  def _archive_labels(self, labels) -> np.ndarray:
    """uint32[V, m] packed multi-hot words, or int32[m] query-class indices."""
    if self.multi:
      packed = np.packbits(_multi_hot(labels, "archive_labels", self.fn), axis=1)
      return np.ascontiguousarray(hamming.code_words(packed, np.uint32).T)
    labels = np.asarray(labels)
    pos = np.searchsorted(self.classes, labels)
    hit = self.classes[np.minimum(pos, len(self.classes) - 1)] == labels
    return np.where(hit, pos, -1).astype(np.int32)

  def _blocks(self, codes: np.ndarray, labels):
    """(query slice, device keys) of every block of a chunk, the next one dispatched early."""
    db32, lab = hamming.code_words(codes, np.uint32), self._archive_labels(labels)
    cols = min(hamming.bucket(len(codes), 256), hamming.ARCHIVE_BLOCK)
    rows = int(np.clip(hamming.BUDGET // cols, 1, hamming.QUERY_BLOCK))
    static = dict(bits=self.bits, trash=self.trash, pairs=self.pairs, multi=self.multi,
                  dtype=self.dtype)
    pending = None
    for a0 in range(0, len(codes), cols):
      m = min(cols, len(codes) - a0)
      width = hamming.bucket(m, 256)  # even: the pairs need it
      words_t = jnp.asarray(np.ascontiguousarray(hamming.pad_rows(db32[a0:a0 + m], width).T))
      lab_t = lab[..., a0:a0 + m]
      lab_t = jnp.asarray(np.pad(lab_t, [(0, 0)] * (lab_t.ndim - 1) + [(0, width - m)]))
      for q0 in range(0, len(self.q32), rows):
        qs = slice(q0, min(q0 + rows, len(self.q32)))
        b = hamming.bucket(qs.stop - q0)
        keys = _keys(jnp.asarray(hamming.pad_rows(self.q32[qs], b)), words_t,
                     jnp.asarray(hamming.pad_rows(self.qlab[qs], b)), lab_t, m, **static)
        if pending is not None:
          yield pending
        pending = (qs, keys)
    if pending is not None:
      yield pending

  def add(self, codes: np.ndarray, labels) -> None:
    """Counts one chunk: codes uint8[m, l // 8], its labels int[m] or {0,1}[m, c]."""
    size = self.trash + 1
    for qs, keys in self._blocks(codes, labels):
      keys = np.asarray(keys)
      for i, row in zip(range(qs.start, qs.stop), keys):
        h = np.bincount(row, minlength=size * size if self.pairs else size)
        if self.pairs:  # key k0 + size * k1: k0 counted down the columns, k1 along the rows
          h = h.reshape(size, size)
          h = h.sum(0) + h.sum(1)
        self.counts[i] += h[:self.trash]

  def result(self) -> np.ndarray:
    return self.counts.reshape(len(self.counts), self.gains + 1, self.bits + 1)


def _default_chunk(nbytes: int) -> int:
  """`stream.CHUNK_BYTES` of codes, in whole `hamming.ARCHIVE_BLOCK`s."""
  per = stream.CHUNK_BYTES // nbytes
  return max(hamming.ARCHIVE_BLOCK, per // hamming.ARCHIVE_BLOCK * hamming.ARCHIVE_BLOCK)


def _release(*arrays) -> None:
  """Scanned pages of read-only memmaps leave this process's RSS (see `stream`)."""
  for a in arrays:
    stream._release_pages(a)  # pylint: disable=protected-access


def _gains_of(ql: np.ndarray, al, idx: np.ndarray, multi: bool) -> np.ndarray:
  """int64[nq, m]: gains of archive items idx[nq, m] (rows read from `al` only there)."""
  flat = np.unique(idx)  # sorted: a memmap reads its rows in order
  rows = np.asarray(al[flat])
  at = np.searchsorted(flat, idx)
  if multi:
    rows = _multi_hot(rows, "archive_labels", "evaluate_streamed").astype(np.int64)
    return np.einsum("qc,qmc->qm", ql.astype(np.int64), rows[at])
  return (rows[at] == ql[:, None]).astype(np.int64)


def count_by_distance(query_codes, archive_codes, query_labels, archive_labels, *, top: int,
                      chunk: int | None = None, progress=None) -> DistanceCounts:
  """Counts per (query, gain, distance) and the exact top `top`, in one pass of chunks.

  Args: as `evaluate_streamed`; top: ranks kept per query (1..n).

  Returns:
    `DistanceCounts`.
  """
  fn = "evaluate_streamed"
  q = hamming.check_codes(query_codes, "query_codes", fn)
  if not len(q):
    raise ValueError(f"{fn}: `query_codes` is empty")
  a = check_archive(archive_codes, q, fn)
  n = int(a.shape[0])
  ql, al, multi = _labels(query_labels, archive_labels, len(q), n, fn)
  top = hamming.check_int(top, "max(k, n)", fn, 1, n, f"the archive ({n} codes)")
  chunk = (_default_chunk(q.shape[1]) if chunk is None
           else hamming.check_int(chunk, "chunk", fn, 1, 2**31 - 2))
  counter = _Counter(q, ql, multi, fn)
  bar = _bar(progress, -(-n // chunk), chunk)
  best = None
  try:
    for start in range(0, n, chunk):
      block = np.array(a[start:start + chunk])
      labels = np.array(al[start:start + chunk])
      _release(a, al)
      counter.add(block, labels)
      d, i = stream.stream_search(q, block, min(top, len(block)), chunk=len(block),
                                  progress=False)
      i = i + start
      if best is not None:
        d, i = stream.merge_topk(np.concatenate([best[0], d], 1), np.concatenate([best[1], i], 1),
                                 min(top, best[0].shape[1] + d.shape[1]))
      best = d, i
      if bar is not None:
        bar.update(1)
  finally:
    if bar is not None:
      bar.close()
  return DistanceCounts(counter.result(), best[0], best[1], _gains_of(ql, al, best[1], multi))


def _bar(progress, total: int, chunk: int):
  """A tqdm bar over `total` chunks, or None (default: when stderr is a terminal)."""
  if not (sys.stderr.isatty() if progress is None else progress):
    return None
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(total=total, unit="chunk", desc=f"evaluate_streamed ({chunk} codes a chunk)")
