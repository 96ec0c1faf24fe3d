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
with A the 0/1 matrix of S1: it is computed in square blocks as a bfloat16
matrix product with float32 accumulation (exact: the entries are 0/1 and the
sums stay far below 2^24), only the upper triangle of blocks since A A^T is
symmetric; the mirrored blocks wait as uint16 until their row block comes
(at most N^2 / 4 of them, 365 MB at N = 27,000).
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


@functools.partial(jax.jit, static_argnums=1)
def _unpack_rows(packed: jax.Array, n: int) -> jax.Array:
  """uint8[b, ceil(n / 8)] -> bfloat16[b, n] of 0/1."""
  return jnp.unpackbits(packed, axis=1, count=n).astype(jnp.bfloat16)


@functools.partial(jax.jit, static_argnums=2)
def _overlaps(rows: jax.Array, cols_packed: jax.Array, n: int) -> jax.Array:
  """|N_i & N_j| for a block pair: bf16[b, n] x uint8[c, n / 8] -> f32[b, c], exact."""
  cols = jnp.unpackbits(cols_packed, axis=1, count=n).astype(jnp.bfloat16)
  return jax.lax.dot_general(rows, cols, (((1,), (1,)), ((), ())),
                             preferred_element_type=jnp.float32)


def two_stage_knn(features, k1: int, k2: int, *, block: int | None = None,
                  progress: bool | None = None, return_s1: bool = False):
  """The SSM S = S1 AND S2 of eq. 5.10 - 5.12, as packed bits.

  Memory is O(n^2 / 8) for S1 and S plus O(block * n) work arrays, plus up to
  n^2 / 4 uint16 of stage-2 blocks awaiting their mirror (see the module
  docstring); no dense float n x n is formed.

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
  n_bytes = (n + 7) // 8
  # Stage 2 computes only the upper triangle of blocks, so it wants several.
  b = _block_rows(n, block if block is not None else min(_block_rows(n, None), 2048))
  m = -(-n // b)

  # Stage 1: A = S1 as packed 0/1 rows, padded to whole blocks for fixed shapes.
  s1 = np.zeros((m * b, n_bytes), np.uint8)
  for start, scores in _cosine_blocks(x, k1, _block_rows(n, block), progress):
    s1[start:start + len(scores)] = np.packbits(ranking.top_k_mask(scores, k1), axis=1)

  # Stage 2: overlaps row block by row block; block (I, J > I) is computed once
  # and its transpose kept for row block J.
  s = np.zeros((n, n_bytes), np.uint8)
  mirror = np.uint16 if k1 < np.iinfo(np.uint16).max else np.int32
  waiting: dict[tuple[int, int], np.ndarray] = {}
  with _progress(n, progress, total=n, desc=f"SSM kNN-2 (K2={k2})", unit="img") as bar:
    for bi in range(m):
      r0, r1 = bi * b, min(n, (bi + 1) * b)
      rows = _unpack_rows(s1[r0:r0 + b], n)
      pending = [_overlaps(rows, s1[bj * b:(bj + 1) * b], n) for bj in range(bi, m)]
      overlap = np.empty((b, n), np.int32)
      for bj in range(bi):
        c1 = min(n, (bj + 1) * b)
        overlap[:, bj * b:c1] = waiting.pop((bj, bi)).T[:, :c1 - bj * b]
      for bj, blk in zip(range(bi, m), pending):
        blk = np.asarray(blk)
        c1 = min(n, (bj + 1) * b)
        overlap[:, bj * b:c1] = blk[:, :c1 - bj * b]
        if bj > bi:
          waiting[(bi, bj)] = blk.astype(mirror)
      overlap = overlap[:r1 - r0]
      r = np.arange(r1 - r0)
      if not np.all(overlap[r, r0 + r] == k1):  # |N_i| = K1: the product was exact
        raise RuntimeError("stage-2 overlap counts are inexact; the backend's "
                           "bfloat16 matmul did not accumulate in float32")
      overlap[r, r0 + r] = k1 + 1  # self first, whatever the duplicates
      near = ranking.top_k_mask(overlap, k2, ranking.kth_largest_count(overlap, k2, k1 + 1))
      near &= np.unpackbits(s1[r0:r1], axis=1, count=n).view(bool)
      s[r0:r1] = np.packbits(near, axis=1)
      bar.update(r1 - r0)
  if return_s1:
    return s, s1[:n]
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
