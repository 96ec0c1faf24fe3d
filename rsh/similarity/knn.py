"""The two-stage kNN of the SSM (eq. 5.10 - 5.12): S = S1 AND S2, as packed bits.

Stage 1 scores blocks of rows against all points (`rsh.ranking.cosine_blocks`)
and keeps each row's top K1 as packed bits. Stage 2 counts every overlap
|N_i & N_j| of two rows of S1 exactly, as popcount(row_i AND row_j) over 32-bit
words in a jitted XLA loop (`_overlap_block`), in square blocks of which only
the upper triangle is computed, and keeps each row's K2 largest by counting
(`rsh.similarity.packed.top_k_packed`). The definitions and the choices the
thesis leaves open are in `rsh.similarity`'s docstring.
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
from rsh.similarity import packed as rpacked

log = logging.getLogger(__name__)

__all__ = ["scale_k", "cosine_knn", "two_stage_knn"]

# Work arrays of a block hold about this many (row, column) entries; each entry
# costs 15-30 bytes across scores or overlaps, their sorted or counted copies
# and the masks (~0.9 GB at most per block).
_BLOCK_ENTRIES = 1 << 25
# Progress bars appear by default from this many points on.
_PROGRESS_FROM = 4000


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
    s1[start:start + len(scores), :n_bytes] = rpacked.top_k_scores_packed(scores, k1)
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
      s[r0:r1] = rpacked.top_k_packed(overlap, k2, k1 + 1) & s1[r0:r1, :n_bytes]
      clock["stage2_rank_s"] += time.perf_counter() - t
      bar.update(r1 - r0)
  for key, value in clock.items():
    timings[key] = timings.get(key, 0.0) + value
  return s


def two_stage_knn(features, k1: int, k2: int, *, block: int | None = None,
                  progress: bool | None = None, return_s1: bool = False):
  """The SSM S = S1 AND S2 of eq. 5.10 - 5.12, as packed bits.

  Memory is O(n^2 / 8) for S1 and S plus O(block * n) work arrays, plus up to
  n^2 / 4 uint16 of stage-2 blocks awaiting their mirror (see `rsh.similarity`'s
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
