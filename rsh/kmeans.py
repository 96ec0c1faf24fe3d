"""K-means as pure, seeded, chunked functions (k-means++ seeding, Lloyd iterations).

    kmeanspp_init   D^2 sampling (Arthur & Vassilvitskii 2007): the first centre a
                    uniformly drawn row, each next one a row drawn with probability
                    proportional to its squared distance to the nearest centre so far.
    kmeans          k-means++ (or `init`), then Lloyd iterations: assign every row to
                    its nearest centroid, move each centroid to the mean of its rows;
                    stop after `iters` updates, when the relative change of the inertia
                    is below `tol`, or when no assignment changed (a fixed point).
    assign          the nearest centroid of every row and the squared distance to it.

Memory. `x` stays where the caller keeps it (a numpy array or memmap, e.g. 10^6 x 2048
float32 = 8 GB). The host streams it in chunks of `chunk` rows, each copied into one
64-byte-aligned float32 staging buffer (a zero-copy hand-over on XLA CPU; an unaligned
numpy slice would be copied into a freshly allocated buffer on every pass, several times
slower) and zero-padded to the chunk size, so every jitted kernel compiles once. Nothing
of n x d or n x k is built; the host keeps a few arrays of n numbers (distances,
assignments). Passes over the data: max(k - 1, 1) for k-means++, then one per Lloyd
iteration plus one. Every pass checks that its distances are finite, which is how NaN/inf
rows are caught without an extra pass; the error names the first bad row.

Numerics. Lloyd assigns by |x|^2 - 2 x.c + |c|^2 with HIGHEST matmul precision; the
argmin drops |x|^2 (constant per row), so ties go to the lowest centroid index among
equal values of |c|^2 - 2 x.c. The distances returned (and the inertia, the re-seeding,
k-means++) are sum((x - c)^2) computed directly, free of the expansion's cancellation
when |x|^2 >> the distance; that costs one more read of the chunk, in 1024-row blocks.
Per-chunk cluster sums are float32 (segment_sum); chunks are accumulated in float64 on
the host, so the chunk size changes centroids only by float32 rounding within a chunk
(about 1e-7 relative).

Empty clusters. After an assignment leaves m clusters empty, the j-th empty cluster (in
index order) is re-seeded with the j-th farthest row from its own centroid (ties: lowest
row index); non-empty clusters take their mean. Both steps can only lower the inertia,
and the choice is deterministic. Iteration does not stop on `tol` while a cluster is
empty, except when the inertia is 0 (no row can be moved closer).

Determinism. All randomness is jax.random from `jax.random.key(seed)` (fold_in 0: the
first centre, fold_in 1: the k uniforms of the D^2 draws); no global state. The same
seed gives bitwise the same result, in one process or across fresh compilations.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST
_ALIGN = 64  # bytes: XLA CPU aliases host buffers with this alignment instead of copying


class KMeans(NamedTuple):
  """A k-means fit.

  Attributes:
    centroids: f32[k, d].
    assign: int32[n], the nearest centroid of each row (ties: lowest index).
    inertia: sum over rows of the squared distance to their centroid.
    iterations: Lloyd iterations run (centroid updates).
  """
  centroids: np.ndarray
  assign: np.ndarray
  inertia: float
  iterations: int


# ----------------------------------------------------------------------------
# Validation.


def _rows(x, fn: str) -> np.ndarray:
  """`x` as a 2-D float numpy array (no copy, no cast: chunks are cast as they stream)."""
  x = np.asarray(x)
  if x.dtype.kind != "f":
    raise ValueError(f"{fn}: `x` must be a float array [n, d]; got dtype {x.dtype}")
  if x.ndim != 2:
    raise ValueError(f"{fn}: `x` must be 2-D [n, d]; got shape {x.shape}")
  if not x.shape[0] or not x.shape[1]:
    raise ValueError(f"{fn}: `x` is empty (shape {x.shape}); k-means needs rows")
  return x


def _int(value, name: str, fn: str, lo: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{fn}: `{name}` must be an int; got {type(value).__name__} {value!r}")
  if value < lo:
    raise ValueError(f"{fn}: `{name}` must be >= {lo}; got {value}")
  return int(value)


def _k(k, n: int, fn: str) -> int:
  k = _int(k, "k", fn, 1)
  if k > n:
    raise ValueError(f"{fn}: `k`={k} clusters need at least {k} rows; `x` has {n}")
  return k


def _centroids(c, k: int | None, d: int, fn: str, name: str) -> np.ndarray:
  """`c` as finite f32[k, d] (k free when None)."""
  c = np.asarray(c)
  if c.dtype.kind not in "fiu" or c.ndim != 2 or c.shape[1] != d or not c.shape[0]:
    raise ValueError(f"{fn}: `{name}` must be a float array [{k or 'k'}, {d}]; got "
                     f"shape {c.shape} dtype {c.dtype}")
  if k is not None and c.shape[0] != k:
    raise ValueError(f"{fn}: `{name}` must have k={k} rows; got {c.shape[0]}")
  c = c.astype(np.float32)
  if not np.isfinite(c).all():
    raise ValueError(f"{fn}: `{name}` contains NaN or infinite values")
  return c


# ----------------------------------------------------------------------------
# Streaming x through the device in chunks.


class _Chunks:
  """Iterates `x`'s rows as (start, stop, device f32[size, d]), the tail zero-padded.

  One aligned staging buffer serves every pass; a caller must be done with a chunk
  (its results fetched to the host) before asking for the next one.
  """

  def __init__(self, x: np.ndarray, chunk: int):
    self.x, self.size = x, min(chunk, len(x))
    self._stage = None

  def _staged(self, part: np.ndarray) -> np.ndarray:
    if self._stage is None:
      nbytes = self.size * self.x.shape[1] * 4
      raw = np.empty(nbytes + _ALIGN, np.uint8)
      start = -raw.ctypes.data % _ALIGN
      self._stage = raw[start:start + nbytes].view(np.float32).reshape(self.size, -1)
    np.copyto(self._stage[:len(part)], part, casting="same_kind")
    self._stage[len(part):] = 0
    return self._stage

  def __iter__(self) -> Iterator[tuple[int, int, jax.Array]]:
    for s in range(0, len(self.x), self.size):
      part = self.x[s:s + self.size]
      direct = (len(part) == self.size and part.dtype == np.float32
                and part.flags.c_contiguous and part.ctypes.data % _ALIGN == 0)
      yield s, s + len(part), jax.device_put(part if direct else self._staged(part))


# ----------------------------------------------------------------------------
# Per-chunk kernels (each compiles once per chunk, d and k).


@jax.jit
def _pp_chunk(xc, centre):
  return jnp.sum(jnp.square(xc - centre), axis=1)


def _nearest(xc, centroids):
  """int32[m] nearest centroid ids and f32[m] squared distances of rows xc: f32[m, d]."""
  cc = jnp.sum(centroids * centroids, axis=1)
  part = cc[None, :] - 2 * jnp.dot(xc, centroids.T, precision=_HIGHEST)
  ids = jnp.argmin(part, axis=1).astype(jnp.int32)
  # The distance itself, directly: free of the expansion's cancellation (|x|^2 >> d2).
  # Mapped over row blocks, as centroids[ids] on the whole chunk is an [m, d] temporary.
  d2 = jax.lax.map(lambda row: jnp.sum(jnp.square(row[0] - centroids[row[1]])), (xc, ids),
                   batch_size=min(1024, xc.shape[0]))
  return ids, d2


@jax.jit
def _assign_chunk(xc, centroids):
  return _nearest(xc, centroids)


@jax.jit
def _lloyd_chunk(xc, n_valid, centroids):
  """_nearest plus the chunk's f32[k, d] cluster sums and int32[k] counts."""
  k = centroids.shape[0]
  ids, d2 = _nearest(xc, centroids)
  valid = jnp.arange(xc.shape[0]) < n_valid
  seg = jnp.where(valid, ids, k)  # padding rows land in a dropped extra segment
  sums = jax.ops.segment_sum(xc, seg, num_segments=k + 1)[:k]
  counts = jax.ops.segment_sum(valid.astype(jnp.int32), seg, num_segments=k + 1)[:k]
  return ids, d2, sums, counts


# ----------------------------------------------------------------------------
# Host passes.


def _finite(d2: np.ndarray, x: np.ndarray, fn: str) -> None:
  """Raises ValueError naming the first bad row of `x` when distances d2 are not finite:
  NaN/inf values, or values whose squared distances overflow float32."""
  if np.isfinite(d2).all():
    return
  big = float(np.finfo(np.float32).max) / 4  # |x - c|^2 <= 2|x|^2 + 2|c|^2
  for problem, test in (("contains NaN or infinite values", lambda r: ~np.isfinite(r).all(1)),
                        ("has values too large for float32 squared distances",
                         lambda r: np.square(r, dtype=np.float64).sum(1) > big)):
    for start in range(0, len(x), 4096):
      bad = np.flatnonzero(test(np.asarray(x[start:start + 4096])))
      if bad.size:
        raise ValueError(f"{fn}: `x` {problem} (first in row {start + int(bad[0])})")
  raise ValueError(f"{fn}: squared distances overflow float32; scale `x` down")


def _assign_pass(x, centroids, chunks: _Chunks, fn: str, sums: bool):
  """Nearest ids int32[n], distances f32[n] and, when `sums`, f64[k, d] sums, counts."""
  n, k = len(x), len(centroids)
  ids, d2 = np.empty(n, np.int32), np.empty(n, np.float32)
  total, counts = np.zeros((k, x.shape[1])), np.zeros(k, np.int64)
  c = jnp.asarray(centroids)
  for s, e, xc in chunks:
    if sums:
      out = _lloyd_chunk(xc, e - s, c)
      total += np.asarray(out[2], np.float64)
      counts += np.asarray(out[3])
    else:
      out = _assign_chunk(xc, c)
    ids[s:e], d2[s:e] = np.asarray(out[0])[:e - s], np.asarray(out[1])[:e - s]
    _finite(d2[s:e], x, fn)
  return ids, d2, total, counts


def _update(x, total, counts, d2) -> np.ndarray:
  """Lloyd's centroid step: cluster means; empty clusters take the farthest rows."""
  centroids = (total / np.maximum(counts, 1)[:, None]).astype(np.float32)
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    far = np.argsort(-d2, kind="stable")[:empty.size]
    centroids[empty] = x[far]
  return centroids


def _kmeanspp(x: np.ndarray, k: int, seed: int, chunks: _Chunks, fn: str) -> np.ndarray:
  """k-means++ centres f32[k, d] (with k = 1, one pass still checks `x` is finite)."""
  n = len(x)
  key = jax.random.key(seed)
  first = int(jax.random.randint(jax.random.fold_in(key, 0), (), 0, n))
  draws = np.asarray(jax.random.uniform(jax.random.fold_in(key, 1), (k,)), np.float64)
  centres = np.empty((k, x.shape[1]), np.float32)
  centres[0] = x[first]
  d2 = np.full(n, np.inf, np.float32)
  for j in range(1, max(k, 2)):
    centre = jnp.asarray(centres[j - 1])
    for s, e, xc in chunks:
      np.minimum(d2[s:e], np.asarray(_pp_chunk(xc, centre))[:e - s], out=d2[s:e])
      _finite(d2[s:e], x, fn)
    if j == k:
      break
    cum = np.cumsum(d2, dtype=np.float64)
    if cum[-1] > 0:
      row = int(np.searchsorted(cum, draws[j] * cum[-1], side="right"))
    else:  # every row sits on a centre already: fall back to a uniform draw
      row = int(draws[j] * n)
    centres[j] = x[min(row, n - 1)]
  return centres


# ----------------------------------------------------------------------------
# Public API.


def kmeanspp_init(x, k: int, *, seed: int, chunk: int = 65536) -> np.ndarray:
  """k-means++ (D^2 sampling) initial centres, the ones `kmeans(x, k, seed=seed)` uses.

  Args:
    x: float[n, d] rows (numpy array or memmap; streamed in chunks, never copied whole).
    k: number of centres, 1 <= k <= n.
    seed: non-negative int for `jax.random.key`.
    chunk: rows per device chunk.

  Returns:
    f32[k, d] centres, each a row of `x`.

  Raises:
    ValueError: on a bad `x` (not 2-D float, empty, non-finite), `k`, `seed` or `chunk`.
  """
  fn = "kmeanspp_init"
  x = _rows(x, fn)
  k, seed = _k(k, len(x), fn), _int(seed, "seed", fn, 0)
  chunks = _Chunks(x, _int(chunk, "chunk", fn, 1))
  return _kmeanspp(x, k, seed, chunks, fn)


def assign(x, centroids, *, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
  """The nearest centroid of every row, streamed in chunks.

  Args:
    x: float[n, d] rows.
    centroids: float[k, d].
    chunk: rows per device chunk.

  Returns:
    (int32[n] centroid ids (ties: lowest index), f32[n] squared distances to them).

  Raises:
    ValueError: on a bad `x`, `centroids` (shape, non-finite) or `chunk`.
  """
  fn = "assign"
  x = _rows(x, fn)
  c = _centroids(centroids, None, x.shape[1], fn, "centroids")
  chunks = _Chunks(x, _int(chunk, "chunk", fn, 1))
  ids, d2, _, _ = _assign_pass(x, c, chunks, fn, sums=False)
  return ids, d2


def kmeans(x, k: int, *, seed: int, iters: int = 50, tol: float = 1e-6,
           chunk: int = 65536, init=None) -> KMeans:
  """K-means: k-means++ seeding, then Lloyd iterations (see the module docstring).

  Args:
    x: float[n, d] rows (numpy array or memmap; streamed in chunks, never copied whole).
    k: number of clusters, 1 <= k <= n.
    seed: non-negative int; seeds k-means++ (unused when `init` is given).
    iters: most Lloyd iterations (centroid updates); 0 returns the initial centres.
    tol: stop when |inertia change| < tol * previous inertia (and no cluster is empty).
    chunk: rows per device chunk.
    init: optional float[k, d] initial centroids instead of k-means++.

  Returns:
    KMeans(centroids f32[k, d], assign int32[n], inertia, iterations), where `assign`
    and `inertia` belong to the returned centroids.

  Raises:
    ValueError: on a bad `x` (not 2-D float, empty, non-finite), `k`, `seed`, `iters`,
      `tol`, `chunk` or `init`.
  """
  fn = "kmeans"
  x = _rows(x, fn)
  k, seed = _k(k, len(x), fn), _int(seed, "seed", fn, 0)
  iters = _int(iters, "iters", fn, 0)
  is_real = isinstance(tol, (int, float, np.floating)) and not isinstance(tol, bool)
  if not is_real or not tol >= 0:
    raise ValueError(f"{fn}: `tol` must be a float >= 0; got {tol!r}")
  chunks = _Chunks(x, _int(chunk, "chunk", fn, 1))
  if init is not None:
    init = _centroids(init, k, x.shape[1], fn, "init")
  centroids = _kmeanspp(x, k, seed, chunks, fn) if init is None else init
  ids, d2, total, counts = _assign_pass(x, centroids, chunks, fn, sums=True)
  inertia = float(np.sum(d2, dtype=np.float64))
  done = 0
  while done < iters and inertia > 0:
    centroids = _update(x, total, counts, d2)
    done += 1
    prev, prev_ids = inertia, ids
    ids, d2, total, counts = _assign_pass(x, centroids, chunks, fn, sums=True)
    inertia = float(np.sum(d2, dtype=np.float64))
    if counts.all() and (abs(prev - inertia) < tol * prev or np.array_equal(ids, prev_ids)):
      break
  return KMeans(centroids, ids, inertia, done)
