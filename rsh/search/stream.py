"""`stream_search`: exact top-k over an archive read in chunks (memmaps, code files).

The archive is the outer loop: a chunk of consecutive codes is read, the exact
top-k of every query against it is found (`rsh.search.search`, or
`sharded_search` on accelerators / a given mesh), its indices are made global,
the lists are merged into the running top-k by `(distance, global index)`, and
the chunk is dropped before the next one is read. Memory is bounded by the chunk
(and the `[nq, k]` lists), not by the archive: a memory-mapped archive of 10^9
codes costs page cache, not RSS (the chunk's pages are released from this
process's mapping once it is scanned; see `_release_pages`).

With several processes (`rsh.distributed`), each scans its `row_share` of the
chunks; the per-process lists are gathered and merged the same way
(`merge_topk`, a pure function), so every process returns the whole answer.
Results equal `search(q, np.asarray(codes), k)` exactly, ties included.
"""

from __future__ import annotations

import mmap
import os
import sys

import numpy as np

from rsh import distributed
from rsh import hamming
from rsh.search import codefile
from rsh.search import topk

__all__ = ["stream_search", "merge_topk", "CHUNK_BYTES"]

# Archive bytes per chunk by default (2^24 codes of 64 bits). Chunks are whole
# `hamming.ARCHIVE_BLOCK`s, so every full chunk has the kernels' shapes (compiled
# once). `search` holds about three copies of a chunk at once (the mapped pages,
# its device layout, transient transposes). Measured at 64 bits, 1,000 queries,
# k = 100 (2 cores): chunks of 2^20 to 2^24 codes run at the same speed at 10^7
# codes, and the whole process peaks at 0.63 GB RSS at 10^7 and 0.87 GB at 10^8.
CHUNK_BYTES = 1 << 27

# Distance of a padding entry in a merged list (above any real distance).
_PAD_DISTANCE = np.iinfo(np.int32).max


def merge_topk(dists, indices, k: int):
  """Merges top-k lists into one by `(distance, global index)`; index -1 is padding.

  The exact top-k of a union of disjoint archive parts is the k smallest
  `(distance, index)` pairs of the parts' own top-k lists, whichever part (chunk,
  process) each came from and in whatever order the lists are given.

  Args:
    dists: int[nq, m], or int[p, nq, m] for p lists (e.g. one per process).
    indices: int64 of the same shape: global archive indices, -1 for padding.
    k: entries to keep; each row must hold at least k real ones.

  Returns:
    distances: int32[nq, k] ascending; indices: int64[nq, k], ties by index.
  """
  d, i = np.asarray(dists), np.asarray(indices)
  if d.shape != i.shape or d.ndim not in (2, 3):
    raise ValueError(f"merge_topk: `dists` {d.shape} and `indices` {i.shape} must have one "
                     "shape, [nq, m] or [p, nq, m]")
  if d.ndim == 3:  # [p, nq, m] -> [nq, p * m]
    d = np.concatenate(list(d), axis=1) if len(d) else np.empty(d.shape[1:2] + (0,), d.dtype)
    i = np.concatenate(list(i), axis=1) if len(i) else np.empty(d.shape, np.int64)
  k = hamming.check_int(k, "k", "merge_topk", 1)
  real = i >= 0
  if (real.sum(axis=1) < k).any():
    raise ValueError(f"merge_topk: a row holds fewer than k={k} real entries")
  key = np.where(real, d, _PAD_DISTANCE).astype(np.int64)
  order = np.lexsort((i, key), axis=-1)[:, :k]  # by distance, then index
  return (np.take_along_axis(key, order, 1).astype(np.int32),
          np.take_along_axis(i, order, 1).astype(np.int64))


def _archive(codes, fn: str):
  """(array-like uint8[n, W], CodeFile or None) from an array, a CodeFile or a path."""
  if isinstance(codes, (str, os.PathLike)):
    codes = codefile.open_codes(codes)
  if isinstance(codes, codefile.CodeFile):
    return codes.codes, codes
  if not (hasattr(codes, "shape") and hasattr(codes, "dtype") and hasattr(codes, "__getitem__")):
    codes = np.asarray(codes)  # a list: small; arrays (memmaps, zarr, h5py) are never read whole
  if np.dtype(codes.dtype) != np.uint8:
    raise TypeError(f"{fn}: `codes` must be packed codes uint8[n, l // 8] (see pack_codes); "
                    f"got dtype {codes.dtype}")
  if len(codes.shape) != 2 or codes.shape[1] == 0:
    raise ValueError(f"{fn}: `codes` must be 2-D packed codes [n, l // 8]; got shape "
                     f"{tuple(codes.shape)}")
  return codes, None


def _ids(ids, file, n: int, fn: str):
  """The id map (None: row indices) from `ids`: False, True (the file's) or int[n]."""
  if ids is False or ids is None:
    return None
  if ids is True:
    if file is None:
      raise TypeError(f"{fn}: ids=True maps indices to a code file's ids; `codes` is an array, "
                      "not a code file (pass ids=<int[n] array>)")
    return file.ids
  if not hasattr(ids, "shape"):
    ids = np.asarray(ids)
  if tuple(ids.shape) != (n,) or np.dtype(ids.dtype).kind not in "iu":
    raise ValueError(f"{fn}: `ids` must be int[{n}] (one per code); got "
                     f"{np.dtype(ids.dtype)}{list(ids.shape)}")
  return ids


def _default_chunk(nbytes: int) -> int:
  """`CHUNK_BYTES` of codes: whole `ARCHIVE_BLOCK`s, or for very long codes (over 1 kbit)
  a part of one (a multiple of 2^16, so still few shapes)."""
  codes = CHUNK_BYTES // nbytes
  unit = hamming.ARCHIVE_BLOCK if codes >= hamming.ARCHIVE_BLOCK else 1 << 16
  return max(unit, codes // unit * unit)


def _release_pages(codes) -> None:
  """Drops a read-only memmap's pages from this process's mapping.

  A scanned page of a mapped file stays mapped, and counts in the process's RSS,
  until the mapping is dropped: scanning 10^9 64-bit codes would leave 8 GB
  resident. MADV_DONTNEED on a read-only shared file mapping only unmaps the pages
  (they stay in the page cache; a later read faults them back in): no data is lost.
  Not done on writable or copy-on-write maps, whose dirty pages it would discard.
  """
  mm = getattr(codes, "_mmap", None)
  if mm is None or getattr(codes, "mode", None) != "r" or not hasattr(mmap, "MADV_DONTNEED"):
    return
  try:
    mm.madvise(mmap.MADV_DONTNEED)
  except (OSError, ValueError):  # a closed map, or a platform without it: only memory
    pass


def _chunk_topk(q, block: np.ndarray, k: int, start: int, mesh):
  """Exact top-min(k, len(block)) of one chunk: (int32[nq, kk], global int64[nq, kk])."""
  kk = min(k, len(block))
  if mesh is None:
    d, i = topk.search(q, block, kk)
  else:
    from rsh.search import sharded  # pylint: disable=g-import-not-at-top
    d, i = sharded.sharded_search(q, block, kk, mesh=mesh)
  return d, i.astype(np.int64) + start


def _mesh(mesh, fn: str):
  """The mesh the chunks go through: the given one, all local accelerators, or None
  (CPU: `search`, whose threads already use every core, beats the pure-JAX sort)."""
  import jax  # pylint: disable=g-import-not-at-top
  if mesh is None:
    if jax.default_backend() == "cpu":
      return None
    from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top
    return Mesh(np.array(jax.local_devices()), ("archive",))
  if "archive" not in mesh.axis_names:
    raise ValueError(f"{fn}: `mesh` needs an axis named 'archive'; has {mesh.axis_names}")
  here = jax.process_index()
  if any(d.process_index != here for d in mesh.devices.flat):
    raise ValueError(f"{fn}: `mesh` must hold only this process's devices (each process "
                     "scans its own chunks on its own devices)")
  return mesh


def _gather(best, nq: int, k: int):
  """Every process's top-k lists, gathered and merged (`merge_topk`)."""
  d = np.full((nq, k), _PAD_DISTANCE, np.int32)
  i = np.full((nq, k), -1, np.int64)
  if best is not None:
    w = best[0].shape[1]
    d[:, :w], i[:, :w] = best
  # One int32 array (int64 indices as two int32 halves): JAX without x64 would
  # narrow an int64 array on its way through the collective.
  mine = np.concatenate([d, i.view(np.int32)], axis=1)[None]
  every = distributed.gather_rows(mine, distributed.process_count())  # [p, nq, 3k]
  ds = np.ascontiguousarray(every[:, :, :k])
  is_ = np.ascontiguousarray(every[:, :, k:]).view(np.int64)
  return merge_topk(ds, is_, k)


def stream_search(q, codes, k: int, *, chunk: int | None = None, mesh=None, progress=None,
                  ids=False):
  """Exact k nearest codes by Hamming distance, the archive read one chunk at a time.

  Equal to `rsh.search.search(q, np.asarray(codes), k)` (ties by archive index),
  without ever holding the archive: chunks of `chunk` consecutive codes are
  searched and merged into a running top-k by `(distance, global index)`.

  Args:
    q: uint8[nq, l // 8] packed query codes.
    codes: uint8[n, l // 8]: an array, a (read-only) np.memmap, any array-like
      sliced lazily (zarr, h5py), a `codefile.CodeFile`, or a code file's path.
    k: neighbours per query, 1 <= k <= n.
    chunk: codes per chunk (default: `CHUNK_BYTES` of codes, whole
      `hamming.ARCHIVE_BLOCK`s). Memory grows with it, speed hardly (see CHUNK_BYTES).
    mesh: a `jax.sharding.Mesh` of this process's devices with an axis "archive":
      each chunk goes through `sharded_search` on it. Default: all local devices
      on an accelerator backend, `search` (host threads) on CPU.
    progress: a tqdm bar over the chunks; default: when stderr is a terminal (on
      process 0 only).
    ids: False: indices are rows of `codes`. True: they are mapped through the
      code file's `ids`. An int[n] array: mapped through it.

  Returns:
    distances: int32[nq, k], ascending; indices: int64[nq, k] (rows, or ids).

  With several processes (`rsh.distributed`), call it on every process with the
  same arguments: each scans its share of the chunks and all return the result.
  """
  fn = "stream_search"
  arch, file = _archive(codes, fn)
  q = hamming.check_codes(q, "q", fn)
  n, nbytes = int(arch.shape[0]), int(arch.shape[1])
  if q.shape[1] != nbytes:
    raise ValueError(f"{fn}: `q` has {8 * q.shape[1]}-bit codes but `codes` has "
                     f"{8 * nbytes}-bit codes")
  if n == 0:
    raise ValueError(f"{fn}: `codes` is empty")
  k = hamming.check_k(k, n, fn)
  id_map = _ids(ids, file, n, fn)
  chunk = (_default_chunk(nbytes) if chunk is None
           else hamming.check_int(chunk, "chunk", fn, 1, 2**31 - 2, "int32 indices (2^31 - 2)"))
  mesh = _mesh(mesh, fn)
  n_chunks = -(-n // chunk)
  procs = distributed.process_count()
  lo, hi = distributed.row_share(n_chunks) if procs > 1 else (0, n_chunks)
  bar = _bar(progress, hi - lo, chunk)
  best = None
  try:
    for c in range(lo, hi):
      start = c * chunk
      block = np.asarray(arch[start:min(n, start + chunk)])  # a view of a memmap's pages
      new = _chunk_topk(q, block, k, start, mesh)
      del block
      _release_pages(arch)
      best = new if best is None else merge_topk(np.concatenate([best[0], new[0]], 1),
                                                 np.concatenate([best[1], new[1]], 1),
                                                 min(k, best[0].shape[1] + new[0].shape[1]))
      if bar is not None:
        bar.update(1)
  finally:
    if bar is not None:
      bar.close()
  dist, idx = _gather(best, len(q), k) if procs > 1 else best
  if id_map is not None:
    idx = np.asarray(id_map[idx.ravel()], np.int64).reshape(idx.shape)
  return dist.astype(np.int32), idx.astype(np.int64)


def _bar(progress, total: int, chunk: int):
  """A tqdm bar over `total` chunks, or None."""
  if progress is None:
    progress = sys.stderr.isatty() and distributed.is_writer()
  if not progress:
    return None
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(total=total, unit="chunk", desc=f"stream_search ({chunk} codes a chunk)")
