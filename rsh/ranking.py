"""Ranking primitives shared by Hamming search, cosine search, the metrics and the SSM.

Every ranking here has one exact answer: ties are broken by the lower (archive,
column) index, so results do not depend on blocking or on the machine.

- Cosine scores (`normalise_rows`, `cosine_blocks`): float32 matrix products of
  query blocks against archive blocks, never the whole `[nq, n]` matrix at once.
- Top-k (`top_k_ascending`, `top_k_descending`, `top_k_mask`): the k smallest
  (distances) or largest (similarities) columns of each row. Ascending is numpy's
  stable argsort, a linear counting (radix) sort on the small integers of
  Hamming distances; descending partitions around the k-th value and sorts only
  the k kept, with the k-th value's ties cut by index (`top_k_mask`), so it
  equals a stable argsort of `-scores` cut to k.
- Rankings for the metrics (`check_inputs`, `score_blocks`, `order`): scores by
  Hamming distance or cosine similarity for blocks of queries, and their orders.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from rsh import hamming

__all__ = [
    "normalise_rows", "cosine_blocks", "top_k_ascending", "top_k_descending", "top_k_mask",
    "kth_largest_count", "check_features", "check_inputs", "score_blocks", "order",
]

# Queries ranked per numpy pass in `score_blocks`: rows of [archive] int64 orders stay
# in cache.
_ROWS = 32


# ----------------------------------------------------------------------------- cosine


def check_features(x, name: str, fn: str) -> np.ndarray:
  """`x` as finite float32[n, f] features; errors name the function `fn` and `name`."""
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


def cosine_blocks(q: np.ndarray, db: np.ndarray, rows: int, cols: int | None = None, *,
                  normalise_queries: bool = True) -> Iterator[tuple[int, int, np.ndarray]]:
  """Cosine scores of queries against an archive, one block at a time.

  Args:
    q: float32[nq, f] queries; db: float32[n, f] archive (checked, finite).
    rows: queries per block. cols: archive items per block (default: all).
    normalise_queries: True: both sides are unit rows (`normalise_rows`) and the
      scores are the cosines. False: scores are q_i . db_j / |db_j| (reciprocal
      norms from float64), the cosine times row i's constant |q_i|: the same
      ranking per query, and integer-valued features give exactly equal scores
      to equally distant points, so ties are decided by index, not by rounding.
      All-zero rows score 0 either way.

  Yields:
    (query start, archive start, float32[b, c] scores), query blocks outermost,
    archive blocks in order; each score block is a fresh array.
  """
  if normalise_queries:
    q, db = normalise_rows(q), normalise_rows(db)
    inv = None
  else:
    norms = np.sqrt(np.einsum("ij,ij->i", db, db, dtype=np.float64))
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
  if q.ndim != 2 or db.ndim != 2 or q.shape[1] != db.shape[1]:
    raise ValueError(f"cosine_blocks: `q` {q.shape} and `db` {db.shape} must be 2-D features "
                     "of one size (see check_features)")
  cols = len(db) if cols is None else cols
  hamming.check_int(rows, "rows", "cosine_blocks", 1)
  if len(db):
    hamming.check_int(cols, "cols", "cosine_blocks", 1)
  for r0 in range(0, len(q), rows):
    for c0 in range(0, len(db), cols):
      scores = q[r0:r0 + rows] @ db[c0:c0 + cols].T
      if inv is not None:
        scores *= inv[None, c0:c0 + cols]
      yield r0, c0, scores


# ----------------------------------------------------------------------------- top-k


def _check_scores(x, name: str, fn: str) -> None:
  """O(1): `x` is a 2-D numeric numpy array [rows, columns]."""
  dtype = getattr(x, "dtype", None)
  if dtype is None or not hasattr(x, "ndim") or np.dtype(dtype).kind not in "biuf":
    raise TypeError(f"{fn}: `{name}` must be a numeric array [rows, columns]; got "
                    f"{type(x).__name__} of dtype {dtype}")
  if x.ndim != 2:
    raise ValueError(f"{fn}: `{name}` must be 2-D [rows, columns]; got shape {x.shape}")


def _check_distance(distance, fn: str) -> None:
  if distance not in ("hamming", "cosine"):
    raise ValueError(f"{fn}: `distance` must be 'hamming' or 'cosine'; got {distance!r}")


def top_k_ascending(values: np.ndarray, k: int | None = None) -> np.ndarray:
  """Columns of the k smallest `(value, column)` per row, in that order.

  values: [r, c] -> int64[r, min(k, c)] (all c when k is None, k >= 1). numpy's
  stable sort of 8/16-bit integers is a radix (counting) sort: linear, and ties stay
  in column order.
  """
  _check_scores(values, "values", "top_k_ascending")
  if k is not None:
    hamming.check_int(k, "k", "top_k_ascending", 1)
  order = np.argsort(values, axis=1, kind="stable")
  return order if k is None else order[:, :k]


def top_k_descending(scores: np.ndarray, k: int | None = None) -> np.ndarray:
  """Columns of the k largest per row, ties by smallest column, without sorting whole rows.

  scores: float or signed int [r, c] (no NaN; it is negated) -> int64[r, min(k, c)]
  (all c when k is None, k >= 1), best first: equal to a stable argsort of `-scores`
  cut to k.
  """
  _check_scores(scores, "scores", "top_k_descending")
  if k is not None:
    hamming.check_int(k, "k", "top_k_descending", 1)
  c = scores.shape[1]
  if k is None or k >= c:
    return np.argsort(-scores, axis=1, kind="stable")
  cols = np.nonzero(top_k_mask(scores, k))[1].reshape(-1, k)  # ascending column
  order = np.argsort(-np.take_along_axis(scores, cols, 1), axis=1, kind="stable")
  return np.take_along_axis(cols, order, 1)


def top_k_mask(scores: np.ndarray, k: int, kth: np.ndarray | None = None) -> np.ndarray:
  """bool[b, n]: the k largest entries of each row; equal scores go to the lower index.

  `kth` (the k-th largest of each row, [b]) may be given when it is cheaper to
  find than by partitioning (see `kth_largest_count`).
  """
  _check_scores(scores, "scores", "top_k_mask")
  n = scores.shape[1]
  k = hamming.check_int(k, "k", "top_k_mask", 1, n, f"the columns of `scores` ({n})")
  if kth is None:
    kth = np.partition(scores, n - k, axis=1)[:, n - k]
  kth = np.asarray(kth)[:, None]
  above = scores > kth
  tied = scores == kth
  need = k - above.sum(axis=1)
  mask = above | tied
  over = np.nonzero(tied.sum(axis=1) > need)[0]
  if over.size:  # rows where not every tied entry fits: keep the first `need`
    rank = np.cumsum(tied[over], axis=1, dtype=np.int32)
    mask[over] = above[over] | (tied[over] & (rank <= need[over, None]))
  return mask


def kth_largest_count(values: np.ndarray, k: int, top: int, *, return_need: bool = False):
  """The k-th largest of each row of int values in [0, top], by counting.

  For values that repeat a lot (SSM stage-2 overlaps): np.partition
  (introselect) slows down on repeats; on clustered features it took ~20x longer
  than counting.

  values: int[r, c] -> int64[r]. With `return_need`, (kth, need): need[i] = k
  minus the entries of row i above its k-th largest, i.e. how many of the
  entries equal to it a top-k keeps (1 <= need <= those entries).
  """
  _check_scores(values, "values", "kth_largest_count")
  k = hamming.check_int(k, "k", "kth_largest_count", 1, values.shape[1],
                        f"the columns of `values` ({values.shape[1]})")
  hamming.check_int(top, "top", "kth_largest_count", 0)
  # One bincount per row: each row's counts stay in cache and no [b, n] key
  # array is needed.
  counts = np.stack([np.bincount(row, minlength=top + 1) for row in values])
  at_least = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]    # [r, v]: #entries >= v
  kth = (at_least >= k).sum(axis=1) - 1
  if not return_need:
    return kth
  r = np.arange(len(values))
  return kth, k - (at_least[r, kth] - counts[r, kth])


# ----------------------------------------------------------------------------- rankings


def _as_codes(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return hamming.check_codes(x, name, "evaluate")
  try:
    return hamming.pack_codes(x)
  except (TypeError, ValueError) as e:
    raise type(e)(f"evaluate: `{name}` is neither packed uint8 codes nor bits "
                  f"(for real features pass distance='cosine'): {e}") from None


def check_inputs(query, archive, distance: str, fn: str):
  """Checked (query, archive): packed codes for "hamming" (bits are packed), float32
  features for "cosine"; both non-empty, of one code length or feature size."""
  if distance == "hamming":
    q, a = _as_codes(query, "query_codes"), _as_codes(archive, "archive_codes")
    if q.shape[1] != a.shape[1]:
      raise ValueError(f"{fn}: `query_codes` have {8 * q.shape[1]} bits but `archive_codes` "
                       f"have {8 * a.shape[1]}")
  elif distance == "cosine":
    q = check_features(query, "query_codes", fn)
    a = check_features(archive, "archive_codes", fn)
    if q.shape[1] != a.shape[1]:
      raise ValueError(f"{fn}: `query_codes` have {q.shape[1]} features but `archive_codes` "
                       f"have {a.shape[1]}")
  else:
    _check_distance(distance, fn)
  if len(a) == 0:
    raise ValueError(f"{fn}: `archive_codes` is empty")
  if len(q) == 0:
    raise ValueError(f"{fn}: `query_codes` is empty")
  return q, a


def score_blocks(q: np.ndarray, a: np.ndarray, distance: str, rows: int = _ROWS):
  """Yields (query slice, scores[b, na]): Hamming distances or cosine similarities.

  q, a: as `check_inputs` returns them. Hamming distances come from
  `hamming.distance_rows` (the next block is computed by XLA meanwhile).
  """
  _check_distance(distance, "score_blocks")
  hamming.check_int(rows, "rows", "score_blocks", 1)
  if distance == "hamming":
    for qs, d in hamming.distance_rows(q, a):
      for r0 in range(0, len(d), rows):
        yield slice(qs.start + r0, qs.start + min(r0 + rows, len(d))), d[r0:r0 + rows]
  else:
    for r0, _, scores in cosine_blocks(q, a, rows):
      yield slice(r0, min(r0 + rows, len(q))), scores


def order(scores: np.ndarray, distance: str) -> np.ndarray:
  """int64[b, na]: archive indices best first, ties by index, for a block of queries.

  Hamming distances are small integers: numpy's stable sort of uint8/uint16 is a
  counting (radix) sort, linear in the archive. Cosine similarities: a stable sort.
  """
  _check_distance(distance, "order")
  if distance == "hamming":
    return top_k_ascending(scores)
  return top_k_descending(scores)
