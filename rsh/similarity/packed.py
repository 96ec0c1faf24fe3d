"""Packed SSM rows: the top-k selections that write them, and reading them back.

A packed SSM is uint8[n, ceil(n / 8)]: row i is np.packbits of S[i] == +1
(big-endian bit order, padding bits 0). `top_k_scores_packed` (stage 1, float
cosine scores) and `top_k_packed` (stage 2, integer overlaps) write rows of it
straight from a block of scores; `unpack_ssm` and `ssm_rows` read it.
"""

from __future__ import annotations

import numpy as np

from rsh import ranking

__all__ = ["top_k_packed", "top_k_scores_packed", "unpack_ssm", "ssm_rows"]


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


def top_k_packed(values: np.ndarray, k: int, top: int) -> np.ndarray:
  """np.packbits of `ranking.top_k_mask(values, k)` for int values in [0, top].

  The k-th largest of each row comes by counting (`ranking.kth_largest_count`),
  with `need`, how many of the entries equal to it fit (k minus those above
  it). Every entry above it is kept, and of the tied ones the first `need` by
  column: the cut is found on the packed tied bits (a running count per byte,
  then the first bits of the byte where it reaches `need`), not by a
  cumulative sum over whole rows.

  values: uint16 or int32 [r, n] -> uint8[r, ceil(n / 8)].
  """
  r = np.arange(len(values))
  kth, need = ranking.kth_largest_count(values, k, top, return_need=True)
  kth = kth.astype(values.dtype)[:, None]
  packed = np.packbits(values > kth, axis=1)
  tied = np.packbits(values == kth, axis=1)
  run = np.cumsum(np.bitwise_count(tied), axis=1, dtype=np.int32)  # tied in bytes <= p
  p = (run < need[:, None]).sum(axis=1)                     # the byte of the need-th tie
  packed |= tied & np.where(np.arange(tied.shape[1]) < p[:, None], 0xFF, 0).astype(np.uint8)
  last = tied[r, p]
  packed[r, p] |= _FIRST_SET_BITS[last, need - (run[r, p] - np.bitwise_count(last))]
  return packed


def top_k_scores_packed(scores: np.ndarray, k: int) -> np.ndarray:
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
