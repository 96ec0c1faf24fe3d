"""Unsupervised semantic similarity matrix (SSM) of a training set (UAHM, thesis §5.1.4).

    feats = spectral.fuse(spectral.local_histogram(images, 32, 4), spatial, eta=6.0)
    packed = two_stage_knn(feats, k1=500, k2=300)          # uint8[n, ceil(n / 8)]
    batch_similarity = ssm_rows(packed, batch_idx)          # int8[b, b] of +-1
    ssm_quality(packed, labels)                             # {"accuracy", "iou"}

or all at once with `build_ssm`. The spectral features and their fusion (Table
5.1, eq. 5.9) are `rsh.spectral`'s. Definitions, with the thesis lines
(`spec/sources/uahm_thesis.txt`) they come from:

- Stage 1 (eq. 5.10, l.1107-1110): S1[i, j] = +1 if x_j is among the K1 nearest
  of x_i by cosine distance.
- Stage 2 (eq. 5.11, l.1112-1119): the distance of i and j is the Hamming
  distance of the rows S1[i] and S1[j] (how many neighbours they do not
  share), = 2 * K1 - 2 * |N_i & N_j|; S2[i, j] = +1 if j is among the K2
  nearest of i under it, i.e. the K2 largest overlaps |N_i & N_j|.
- S = S1 AND S2 (eq. 5.12, l.1121-1124).
- Quality (eq. 5.16, 5.17, l.1246-1259): accuracy sums over every (i, j),
  diagonal included, and divides by N^2; IoU = |{S=1} & {GT=1}| / |{S=1} | {GT=1}|
  with GT[i, j] = +1 when i and j share a label (so GT's diagonal is +1).

Choices the thesis leaves open:

- A point is its own nearest neighbour in both stages (cosine distance 0,
  Hamming distance 0): row i of S1 holds i and K1 - 1 others, row i of S2 holds
  i and K2 - 1 others, so S[i, i] = +1, which agrees with GT's diagonal that
  eq. 5.16 counts. Self is put first explicitly, so exact duplicates cannot
  push a point out of its own neighbour set.
- Ties are broken by index: among equally distant points the lower index
  wins (`rsh.ranking`'s top-k). Stage 2 distances are small integers, so ties
  there are the rule, not the exception, and this makes S a deterministic
  function of the features.
- S is not symmetric: j may be among the neighbours of i without i being
  among those of j. `ssm_rows` returns S[idx][:, idx] as it is, row = anchor.
- A zero feature vector has cosine 0 with everything.

K1 = 500 and K2 = 300 are the thesis' values for 5,000 training images
(l.1226, l.1291). For another training-set size callers pass
`scale_k(500, n)` and `scale_k(300, n)`, which keep each image's neighbours
the same share of the set (10 % and 6 %).

Scale: nothing N x N is ever held as float. Stage 1 scores a block of rows
against all points (BLAS, float32) and keeps a boolean top-K1 mask, stored
packed (N^2 / 8 bytes). Stage 2 needs every overlap |N_i & N_j| = (A A^T)_ij
with A the 0/1 matrix of S1: it is popcount(row_i AND row_j) over the packed
rows as 32-bit words, counted exactly by a jitted XLA loop in square blocks,
only the upper triangle of blocks since A A^T is symmetric; the mirrored
blocks wait as uint16 until their row block comes (at most N^2 / 4 of them,
365 MB at N = 27,000). Each row block's K2 largest overlaps are then picked by
counting (overlaps are integers in 0..K1), never by sorting. At N = 27,000
(K1 = 2,700, K2 = 1,620) on 2 CPU cores the first stage's matrix products are
most of the time: `benchmarks/ssm.py` prints each stage's seconds.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from rsh import ranking
from rsh import spectral as rspectral

log = logging.getLogger(__name__)

__all__ = [
    "scale_k", "cosine_knn", "two_stage_knn", "unpack_ssm", "ssm_rows", "ssm_quality", "build_ssm",
]

# Work arrays of a block hold about this many (row, column) entries; each entry
# costs 15-30 bytes across scores or overlaps, their sorted or counted copies
# and the masks (~0.9 GB at most per block).
_BLOCK_ENTRIES = 1 << 25
# Progress bars appear by default from this many points on.
_PROGRESS_FROM = 4000


# ---------------------------------------------------------------------------
# Two-stage kNN (eq. 5.10 - 5.12).

def scale_k(k: int, n: int, n_ref: int = 5000) -> int:
  """K1 or K2 for `n` training images, given the thesis' value `k` for `n_ref`.

  round(k * n / n_ref) (halves round up), at least 1 and at most n - 1, so
  every image keeps the same share of the set as neighbours:
  scale_k(500, 27000) = 2700, scale_k(300, 600) = 36.
  """
  if n < 1 or n_ref < 1:
    raise ValueError(f"n and n_ref must be >= 1, got n={n}, n_ref={n_ref}")
  return int(min(max(1, math.floor(k * n / n_ref + 0.5)), max(1, n - 1)))


def _check_features(features) -> np.ndarray:
  x = np.asarray(features)
  if x.ndim != 2:
    raise ValueError(f"features must be [n, d], got shape {x.shape}")
  x = x.astype(np.float32, copy=False)
  if not np.isfinite(x).all():
    raise ValueError("features contains NaN or inf")
  return x


def _check_ks(n: int, k1: int, k2: int | None = None) -> None:
  if not 1 <= k1 < n:
    raise ValueError(f"k1 must be in [1, n) with n = {n} (a point is its own first "
                     f"neighbour, so k1 = n would make every pair similar), got k1={k1}")
  if k2 is not None and not 1 <= k2 <= n:
    raise ValueError(f"k2 must be in [1, n] with n = {n}, got k2={k2}")


def _block_rows(n: int, block: int | None) -> int:
  if block is None:
    block = max(64, (_BLOCK_ENTRIES // max(n, 1)) // 64 * 64)
  if block < 1:
    raise ValueError(f"block must be >= 1, got {block}")
  return int(min(block, n))


def _progress(n: int, progress: bool | None, **kwargs):
  disable = (n < _PROGRESS_FROM) if progress is None else not progress
  return tqdm.tqdm(disable=disable, leave=False, **kwargs)


def _cosine_blocks(x: np.ndarray, k: int, block: int,
                   progress: bool | None) -> Iterator[tuple[int, np.ndarray]]:
  """Yields (start, scores f32[b, n]) per block of rows, each row's self scored +inf."""
  n = len(x)
  # Row i ranks j by x_i . x_j / |x_j|: its cosine times the row's constant
  # |x_i|. Integer-valued features then give exactly equal scores to equally
  # distant points, so ties are decided by index, not by rounding.
  with _progress(n, progress, total=n, desc=f"SSM kNN-1 (K1={k})", unit="img") as bar:
    for start, _, scores in ranking.cosine_blocks(x, x, block, normalise_queries=False):
      r = np.arange(len(scores))
      scores[r, start + r] = np.inf  # self first, whatever the duplicates
      yield start, scores
      bar.update(len(scores))


def cosine_knn(features, k: int, *, block: int | None = None,
               progress: bool | None = None) -> np.ndarray:
  """The first-stage neighbour lists: the k nearest of each point by cosine.

  Args:
    features: float[n, d], finite.
    k: neighbours per point, self included (1 <= k < n).
    block: rows scored at once (default: ~32M scores per block).
    progress: tqdm bar; default on from 4,000 points.

  Returns:
    int32[n, k], nearest first (column 0 is the point itself); ties by index.
  """
  x = _check_features(features)
  n = len(x)
  _check_ks(n, k)
  out = np.empty((n, k), np.int32)
  for start, scores in _cosine_blocks(x, k, _block_rows(n, block), progress):
    out[start:start + len(scores)] = ranking.top_k_descending(scores, k)
  return out


# Words of 32 bits ANDed per step of the stage-2 kernel's loop (rows are padded
# with zero words to a multiple of it).
_UNROLL = 4


@functools.partial(jax.jit, static_argnums=(4, 5))
def _overlap_block(words: jax.Array, words_t: jax.Array, r0: jax.Array, c0: jax.Array,
                   b: int, dtype) -> jax.Array:
  """|N_i & N_j| for rows r0 + [0, b) against rows c0 + [0, b), exact.

  words: uint32[m, W], the packed S1 rows as words; words_t: uint32[W, m], the
  same transposed. Returns dtype[b, b] = popcount(row_i AND row_j) summed over
  the W words: per word, a [b] column against a [b] row (vector lanes), the
  [b, b] accumulator updated in place by a loop over the words.
  """
  a = jax.lax.dynamic_slice_in_dim(words, r0, b, axis=0)      # [b, W]
  bt = jax.lax.dynamic_slice_in_dim(words_t, c0, b, axis=1)   # [W, b]

  def step(s, acc):
    for t in range(_UNROLL):
      w = s * _UNROLL + t
      col = jax.lax.dynamic_index_in_dim(a, w, axis=1, keepdims=False)
      row = jax.lax.dynamic_index_in_dim(bt, w, axis=0, keepdims=False)
      acc = acc + jax.lax.population_count(col[:, None] & row[None, :]).astype(jnp.int32)
    return acc

  acc = jax.lax.fori_loop(0, a.shape[1] // _UNROLL, step, jnp.zeros((b, b), jnp.int32))
  return acc.astype(dtype)


def _first_set_bits() -> np.ndarray:
  """uint8[256, 9]: entry [v, j] is byte v with only its first j set bits kept.

  First = most significant, i.e. the lowest columns in np.packbits order.
  """
  table = np.zeros((256, 9), np.uint8)
  for v in range(256):
    kept = 0
    for j in range(1, 9):
      rest = v & ~kept
      if rest:
        kept |= 1 << (rest.bit_length() - 1)
      table[v, j] = kept
  return table


_FIRST_SET_BITS = _first_set_bits()


def _top_k_packed(values: np.ndarray, k: int, top: int) -> np.ndarray:
  """np.packbits of `ranking.top_k_mask(values, k)` for int values in [0, top].

  The k-th largest of each row comes by counting (as `ranking.kth_largest_count`),
  which also gives `need`, how many of the entries equal to it fit (k minus those
  above it). Every entry above it is kept, and of the tied ones the first
  `need` by column: the cut is found on the packed tied bits (a running count
  per byte, then the first bits of the byte where it reaches `need`), not by a
  cumulative sum over whole rows.

  values: uint16 or int32 [r, n] -> uint8[r, ceil(n / 8)].
  """
  r = np.arange(len(values))
  # One bincount per row: each row's counts stay in cache.
  counts = np.stack([np.bincount(row, minlength=top + 1) for row in values])
  at_least = np.zeros((len(values), top + 2), np.int64)     # [r, v]: #entries >= v
  at_least[:, :-1] = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
  kth = (at_least >= k).sum(axis=1) - 1
  need = k - at_least[r, kth + 1]                           # 1 <= need <= #tied
  kth = kth.astype(values.dtype)[:, None]
  packed = np.packbits(values > kth, axis=1)
  tied = np.packbits(values == kth, axis=1)
  run = np.cumsum(np.bitwise_count(tied), axis=1, dtype=np.int32)  # tied in bytes <= p
  p = (run < need[:, None]).sum(axis=1)                     # the byte of the need-th tie
  packed |= tied & np.where(np.arange(tied.shape[1]) < p[:, None], 0xFF, 0).astype(np.uint8)
  last = tied[r, p]
  packed[r, p] |= _FIRST_SET_BITS[last, need - (run[r, p] - np.bitwise_count(last))]
  return packed


def _top_k_scores_packed(scores: np.ndarray, k: int) -> np.ndarray:
  """np.packbits of `ranking.top_k_mask(scores, k)` for float scores.

  Partitions for the k-th largest of each row and keeps every entry >= it;
  only rows where that keeps more than k (ties at the k-th value, rare for
  float scores) go through `ranking.top_k_mask`'s cut by index.

  scores: float32[r, n] -> uint8[r, ceil(n / 8)].
  """
  n = scores.shape[1]
  kth = np.partition(scores, n - k, axis=1)[:, n - k, None]
  packed = np.packbits(scores >= kth, axis=1)
  over = np.nonzero(np.bitwise_count(packed).sum(axis=1, dtype=np.int64) > k)[0]
  if over.size:
    packed[over] = np.packbits(ranking.top_k_mask(scores[over], k, kth[over, 0]), axis=1)
  return packed


def _first_stage(x: np.ndarray, k1: int, block: int, b: int, progress: bool | None) -> np.ndarray:
  """S1 as packed 0/1 rows, zero-padded for the stage-2 kernel.

  Padding (zeros, which AND to nothing) makes whole blocks of `b` rows and
  whole kernel steps of 32-bit words; `block` is stage 1's rows per block.

  x: float32[n, d] -> uint8[ceil(n / b) * b, 4 * W], W a multiple of `_UNROLL`;
  row i's first ceil(n / 8) bytes are np.packbits of S1[i] == +1.
  """
  n = len(x)
  n_bytes = (n + 7) // 8
  n_words = -(-n_bytes // (4 * _UNROLL)) * _UNROLL
  s1 = np.zeros((-(-n // b) * b, 4 * n_words), np.uint8)
  for start, scores in _cosine_blocks(x, k1, block, progress):
    s1[start:start + len(scores), :n_bytes] = _top_k_scores_packed(scores, k1)
  return s1


def _second_stage(s1: np.ndarray, n: int, k1: int, k2: int, b: int, progress: bool | None,
                  timings: dict[str, float]) -> np.ndarray:
  """S = S1 AND S2 from `_first_stage`'s padded S1, in row blocks of `b`.

  Block (I, J >= I) of overlaps is computed once by `_overlap_block` and its
  transpose kept for row block J; the kernels of row block I + 1 are
  dispatched before row block I is ranked, so XLA counts while numpy ranks.
  Adds the seconds spent waiting for the kernels and ranking to `timings`.

  Returns uint8[n, ceil(n / 8)].
  """
  n_bytes = (n + 7) // 8
  m = len(s1) // b
  words = s1.view(np.uint32)
  words, words_t = jnp.asarray(words), jnp.asarray(np.ascontiguousarray(words.T))
  s = np.empty((n, n_bytes), np.uint8)
  count = np.uint16 if k1 < np.iinfo(np.uint16).max else np.int32
  waiting: dict[tuple[int, int], np.ndarray] = {}
  clock = {"stage2_overlap_wait_s": 0.0, "stage2_assemble_s": 0.0, "stage2_rank_s": 0.0}

  def dispatch(bi):
    return [_overlap_block(words, words_t, bi * b, bj * b, b, count) for bj in range(bi, m)]

  pending = dispatch(0)
  with _progress(n, progress, total=n, desc=f"SSM kNN-2 (K2={k2})", unit="img") as bar:
    for bi in range(m):
      r0, r1 = bi * b, min(n, (bi + 1) * b)
      t = time.perf_counter()
      pending = [np.asarray(blk) for blk in pending]
      clock["stage2_overlap_wait_s"] += time.perf_counter() - t
      t = time.perf_counter()
      overlap = np.empty((b, n), count)
      for bj in range(bi):
        c1 = min(n, (bj + 1) * b)
        overlap[:, bj * b:c1] = waiting.pop((bj, bi)).T[:, :c1 - bj * b]
      for bj, blk in zip(range(bi, m), pending):
        c1 = min(n, (bj + 1) * b)
        overlap[:, bj * b:c1] = blk[:, :c1 - bj * b]
        if bj > bi:
          waiting[(bi, bj)] = blk
      pending = dispatch(bi + 1) if bi + 1 < m else []
      overlap = overlap[:r1 - r0]
      r = np.arange(r1 - r0)
      if not np.all(overlap[r, r0 + r] == k1):  # |N_i| = K1
        raise RuntimeError("stage-2 overlap counts are wrong: a row of S1 does not hold "
                           "K1 neighbours")
      overlap[r, r0 + r] = k1 + 1  # self first, whatever the duplicates
      clock["stage2_assemble_s"] += time.perf_counter() - t
      t = time.perf_counter()
      s[r0:r1] = _top_k_packed(overlap, k2, k1 + 1) & s1[r0:r1, :n_bytes]
      clock["stage2_rank_s"] += time.perf_counter() - t
      bar.update(r1 - r0)
  for key, value in clock.items():
    timings[key] = timings.get(key, 0.0) + value
  return s


def two_stage_knn(features, k1: int, k2: int, *, block: int | None = None,
                  progress: bool | None = None, return_s1: bool = False):
  """The SSM S = S1 AND S2 of eq. 5.10 - 5.12, as packed bits.

  Memory is O(n^2 / 8) for S1 and S plus O(block * n) work arrays, plus up to
  n^2 / 4 uint16 of stage-2 blocks awaiting their mirror (see the module
  docstring); no dense float n x n is formed. The seconds of each stage are
  logged (INFO, with `extra={"timings": {...}}`).

  Args:
    features: float[n, d], finite (cast to float32).
    k1: first-stage neighbours per point, self included (1 <= k1 < n).
    k2: second-stage neighbours per point, self included (1 <= k2 <= n).
    block: rows per block in both stages (default: ~32M entries per block,
      and at most 2,048 rows in stage 2 so that its symmetry saves work).
    progress: tqdm bars; default on from 4,000 points.
    return_s1: also return S1.

  Returns:
    S as uint8[n, ceil(n / 8)]: row i is np.packbits of S[i] == +1 (big-endian
    bit order, padding bits 0); with `return_s1`, (S, S1) in the same layout.
  """
  x = _check_features(features)
  n = len(x)
  _check_ks(n, k1, k2)
  # Stage 2 computes only the upper triangle of blocks, so it wants several.
  b = _block_rows(n, block if block is not None else min(_block_rows(n, None), 2048))
  timings = {}
  t = time.perf_counter()
  s1 = _first_stage(x, k1, _block_rows(n, block), b, progress)
  timings["stage1_s"] = time.perf_counter() - t
  t = time.perf_counter()
  s = _second_stage(s1, n, k1, k2, b, progress, timings)
  timings["stage2_s"] = time.perf_counter() - t
  log.info("SSM two-stage kNN of %d points: stage 1 (K1=%d) %.1f s, stage 2 (K2=%d) %.1f s",
           n, k1, timings["stage1_s"], k2, timings["stage2_s"], extra={"timings": timings})
  if return_s1:
    return s, np.ascontiguousarray(s1[:n, :(n + 7) // 8])
  return s


# ---------------------------------------------------------------------------
# Reading and judging a packed SSM.

def unpack_ssm(packed, n: int) -> np.ndarray:
  """int8[n, n] of +-1 from packed rows uint8[n, ceil(n / 8)]; for small n."""
  packed = np.asarray(packed, np.uint8)
  if packed.shape != (n, (n + 7) // 8):
    raise ValueError(f"packed must be uint8[{n}, {(n + 7) // 8}], got shape {packed.shape}")
  bits = np.unpackbits(packed, axis=1, count=n).astype(np.int8)
  return 2 * bits - 1


def ssm_rows(packed, idx) -> np.ndarray:
  """The SSM block of a batch, S[idx][:, idx], without unpacking whole rows.

  Args:
    packed: uint8[n, ceil(n / 8)] from `two_stage_knn`.
    idx: int[b] row indices into the training set (repeats allowed).

  Returns:
    int8[b, b] of +-1; entry (p, q) = S[idx[p], idx[q]] (row = anchor; S is
    not symmetric).
  """
  packed = np.asarray(packed)
  idx = np.asarray(idx)
  if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
    raise ValueError(f"idx must be a 1-D integer array, got {idx.dtype}{list(idx.shape)}")
  if idx.size and (idx.min() < 0 or idx.max() >= min(len(packed), packed.shape[1] * 8)):
    raise ValueError(f"idx must lie in [0, {len(packed)}), got range "
                     f"[{idx.min()}, {idx.max()}]")
  rows = packed[idx]                                        # [b, n / 8]
  shift = (7 - (idx & 7)).astype(np.uint8)
  bits = (rows[:, idx >> 3] >> shift[None, :]) & 1
  return (2 * bits.astype(np.int8) - 1)


def ssm_quality(packed, labels, *, block: int = 4096) -> dict[str, float]:
  """Accuracy and IoU of an SSM against the labels (eq. 5.16, 5.17).

  GT[i, j] = +1 when labels[i] == labels[j]. Both metrics run over all n^2
  entries, diagonal included, as eq. 5.16 sums over every (i, j) and divides
  by N^2. Memory: the packed rows of `block` images and one packed row per class.

  Args:
    packed: uint8[n, ceil(n / 8)] from `two_stage_knn`.
    labels: int[n] class of each row.

  Returns:
    {"accuracy": fraction of entries where S == GT,
     "iou": |{S=1} & {GT=1}| / |{S=1} | {GT=1}|}.
  """
  packed = np.asarray(packed, np.uint8)
  labels = np.asarray(labels)
  if labels.ndim != 1 or packed.ndim != 2 or len(labels) != len(packed):
    raise ValueError(f"labels must be [n] with n = {len(packed)} (the rows of packed), "
                     f"got shape {labels.shape}")
  n = len(labels)
  if packed.shape[1] != (n + 7) // 8:
    raise ValueError(f"packed must be uint8[{n}, {(n + 7) // 8}], got shape {packed.shape}")
  _, cls = np.unique(labels, return_inverse=True)
  cls = cls.ravel()
  per_class = np.bincount(cls)
  class_rows = np.stack([np.packbits(cls == c) for c in range(len(per_class))])
  valid = np.packbits(np.ones(n, bool))                     # zero where bits pad
  both = predicted = 0
  for start in range(0, n, block):
    rows = packed[start:start + block] & valid
    predicted += int(np.bitwise_count(rows).sum(dtype=np.int64))
    both += int(np.bitwise_count(rows & class_rows[cls[start:start + block]]).sum(dtype=np.int64))
  truth = int((per_class.astype(np.int64) ** 2).sum())
  union = predicted + truth - both
  return {"accuracy": 1.0 - (union - both) / float(n) ** 2,
          "iou": both / union}


# ---------------------------------------------------------------------------

def build_ssm(images, *, spectral: str = "local_hist", n_bins: int = 32, n_patches: int = 4,
              spatial_features=None, eta: float = 6.0, k1: int = 500, k2: int = 300,
              block: int | None = None, progress: bool | None = None):
  """Features -> two-stage kNN: the training set's SSM and what went into it.

  Args:
    images: float[n, h, w, c] in [0, 1] (may be None when spectral="none").
    spectral: one of `rsh.spectral.SPECTRAL`; "none" uses the spatial features alone.
    n_bins, n_patches: histogram settings (see `rsh.spectral.local_histogram`).
    spatial_features: float[n, d] (e.g. `rsh.features.extract(...)`) or None
      for spectral features only.
    eta: weight of the spatial part in the fusion (eq. 5.9).
    k1, k2: neighbours per point in the two stages, self included; scale the
      thesis' 500 / 300 with `scale_k` when n != 5,000.
    block, progress: see `two_stage_knn`.

  Returns:
    (packed S uint8[n, ceil(n / 8)], info) with info = {"n", "k1", "k2",
    "feature_dim", "positives_per_row" (mean +1 entries per row of S),
    "seconds", "features" (tuple of the parts used)}.
  """
  start = time.perf_counter()
  if spectral not in rspectral.SPECTRAL:
    raise ValueError(f"spectral must be one of {rspectral.SPECTRAL}, got {spectral!r}")
  if spectral == "none" and spatial_features is None:
    raise ValueError("spectral='none' needs spatial_features")
  spec = None if spectral == "none" else rspectral.spectral_features(
      images, spectral, n_bins=n_bins, n_patches=n_patches)
  if spatial_features is not None:
    spatial_features = np.asarray(spatial_features, np.float32)
    n = len(spec) if spec is not None else len(spatial_features)
    if spatial_features.ndim != 2 or len(spatial_features) != n:
      raise ValueError(f"spatial_features must be [n, d] with n = {n} images, "
                       f"got shape {spatial_features.shape}")
  if spec is None:
    feats, parts = spatial_features, ("spatial",)
    desc = f"spatial only ({feats.shape[1]}-d)"
  elif spatial_features is None:
    feats, parts = spec, (spectral,)
    desc = f"spectral only ({spectral}, {spec.shape[1]}-d)"
  else:
    feats, parts = rspectral.fuse(spec, spatial_features, eta), (spectral, "spatial")
    desc = (f"fused {spectral} ({spec.shape[1]}-d) + {eta:g} x spatial "
            f"({spatial_features.shape[1]}-d)")
  log.info("SSM features: %s for %d images; K1=%d K2=%d", desc, len(feats), k1, k2)
  packed = two_stage_knn(feats, k1, k2, block=block, progress=progress)
  n = len(feats)
  info = {"n": n, "k1": int(k1), "k2": int(k2), "feature_dim": int(feats.shape[1]),
          "positives_per_row": float(np.bitwise_count(packed).sum(dtype=np.int64) / n),
          "seconds": time.perf_counter() - start, "features": parts}
  log.info("SSM built in %.1f s: %.1f similar per row", info["seconds"],
           info["positives_per_row"])
  return packed, info
