"""Retrieval metrics, each a pure function of arrays, and `evaluate` for a protocol.

Ranking: codes by Hamming distance ascending, real features (`distance="cosine"`)
by cosine similarity descending; ties always by archive index (a stable order).
Relevance: integer labels `int[n]` are relevant when equal; multi-hot labels
`{0,1}[n, c]` when they share at least one label, with gain = number of shared
labels for NDCG and ACG.

`evaluate` returns a flat dict of python floats (curves as lists of floats):

  map@{k}                  thesis MAP@k: AP_i = (1/n_i) sum_{j<=k} P_i(j) rel_i(j),
                           n_i = relevant items in the top k (AP_i = 0 when n_i = 0)
  map@{k}/min_k_rel        the same sum normalised by min(k, R_i), R_i = all relevant
  map@all                  AP over the whole ranking, normalised by R_i
  map@{k}/hit_only         thesis AP averaged over queries with a hit in the top k
  map@{k}/tie_aware        expected thesis AP@k when every tie group (equal distance)
                           is in random order; short codes make many ties
  precision@{n}, recall@{n}
  precision@r{radius}      precision of the items within Hamming radius (0 when none)
  ndcg@{k}, acg@{k}        gain = shared labels; NDCG's ideal is the best order of
                           the whole archive
  classwise_map@{k}/{name} thesis MAP@k over the queries of each class (`name` from
                           `class_names`, else the label)
  classwise_map@{k}/tie_aware/{name}
                           its tie-aware twin: the class-wise mean of the expected AP@k;
                           unlike the plain one it does not depend on archive order
  pr_curve/cutoffs, pr_curve/precision, pr_curve/recall
                           after every `pr_step` retrieved items and at the end

`map_modes` picks which of "thesis", "min_k_rel", "all", "hit_only" to report.
Every mean is over queries, R_i = 0 gives recall 0.

Hamming rankings never compare-sort: distances are integers in 0..l, so each
query's ranking is a counting sort (numpy's stable sort of uint8/uint16 is a
radix sort: per-distance counts, prefix sums, one scatter), linear in the
archive. From it `evaluate` keeps per query only the relevance of the first
max(k, n) ranks, the relevant counts between PR cut-offs (one pass of segment
sums), and the ends of the tie group that k cuts and of the Hamming ball (binary
searches over the monotone ranked distances); MAP@all alone reads the positions
of every relevant item. All metrics then come from these small arrays at once.
Query blocks are ranked in threads (numpy releases the GIL) while XLA computes
the next block's distances.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from typing import Sequence

import numpy as np
from scipy import stats

from rsh import hamming

__all__ = [
    "MAP_MODES", "evaluate", "relevance", "rank", "average_precision", "precision_at",
    "recall_at", "pr_curve", "ndcg_at", "acg_at", "tie_aware_average_precision",
    "precision_within_radius",
]

MAP_MODES = {
    "thesis": "AP over the top k / relevant items found in the top k (0 when none)",
    "min_k_rel": "AP over the top k / min(k, all relevant)",
    "all": "AP over the whole ranking / all relevant (MAP@all)",
    "hit_only": "thesis AP, averaged only over queries with a relevant item in the top k",
}

# Queries ranked per numpy pass: rows of [archive] int64 orders stay in cache.
_ROWS = 32


# ----------------------------------------------------------------------------- checks


def _labels(x, name: str, n: int) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim == 1:
    if x.dtype.kind not in "iu":
      raise TypeError(f"evaluate: `{name}` must be integer class labels int[n] or a multi-hot "
                      f"matrix [n, classes]; got dtype {x.dtype}")
  elif x.ndim == 2:
    if x.dtype.kind not in "biuf" or (x.size and not np.isin(x, (0, 1)).all()):
      raise ValueError(f"evaluate: multi-hot `{name}` must hold only 0 and 1")
    x = x.astype(np.uint8)
  else:
    raise ValueError(f"evaluate: `{name}` must be 1-D labels or a 2-D multi-hot matrix; "
                     f"got shape {x.shape}")
  if len(x) != n:
    raise ValueError(f"evaluate: `{name}` has {len(x)} rows but there are {n} codes")
  return x


def _as_codes(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return hamming._check_codes(x, name, "evaluate")
  try:
    return hamming.pack_codes(x)
  except (TypeError, ValueError) as e:
    raise type(e)(f"evaluate: `{name}` is neither packed uint8 codes nor bits "
                  f"(for real features pass distance='cosine'): {e}") from None


def _check_cutoffs(cutoffs, n_archive: int) -> np.ndarray:
  c = np.asarray(cutoffs)
  if c.ndim != 1 or c.dtype.kind not in "iu" or not len(c):
    raise ValueError(f"evaluate: `pr_cutoffs` must be a non-empty 1-D list of ints; "
                     f"got {cutoffs!r}")
  if c[0] < 1 or c[-1] > n_archive or (np.diff(c) <= 0).any():
    raise ValueError(f"evaluate: `pr_cutoffs` must increase strictly within 1..{n_archive}")
  return c.astype(np.int64)


# ----------------------------------------------------------------------------- relevance


def relevance(query_labels, archive_labels) -> np.ndarray:
  """Gains `uint8[nq, na]`: 1 for equal integer labels; shared labels for multi-hot."""
  ql, al = np.asarray(query_labels), np.asarray(archive_labels)
  if ql.ndim != al.ndim or (ql.ndim == 2 and ql.shape[1] != al.shape[1]):
    raise ValueError(f"relevance: `query_labels` {ql.shape} and `archive_labels` {al.shape} "
                     "are not the same kind of labels")
  if ql.ndim == 1:
    return (ql[:, None] == al[None, :]).astype(np.uint8)
  shared = ql.astype(np.float32) @ al.astype(np.float32).T
  return np.rint(shared).astype(np.uint8 if ql.shape[1] < 256 else np.uint16)


class _Relevance:
  """Gains of archive items for blocks of queries, without the [nq, na] matrix."""

  def __init__(self, ql: np.ndarray, al: np.ndarray):
    self.multi = ql.ndim == 2
    if self.multi:
      if ql.shape[1] != al.shape[1]:
        raise ValueError(f"evaluate: multi-hot `query_labels` have {ql.shape[1]} classes but "
                         f"`archive_labels` have {al.shape[1]}")
      self.ql, self.al = ql.astype(np.float32), al.astype(np.float32).T.copy()
    else:
      # Archive labels as small ids so a gather by rank order touches few bytes.
      classes, ids = np.unique(al, return_inverse=True)
      self.small = ids.astype(np.uint8 if len(classes) < 255 else np.int32)
      pos = np.searchsorted(classes, ql)
      found = (pos < len(classes)) & (classes[np.minimum(pos, len(classes) - 1)] == ql)
      self.qid = np.where(found, pos, -1)  # -1 matches nothing

  def gains(self, rows: slice) -> np.ndarray:
    """uint8[b, na] gains in archive order (multi-label only)."""
    return np.rint(self.ql[rows] @ self.al).astype(np.uint8)

  def ranked(self, rows: slice, order: np.ndarray):
    """(relevant: bool[b, na], gains or None) in rank order."""
    if self.multi:
      g = np.take_along_axis(self.gains(rows), order, 1)
      return g > 0, g
    return self.small[order] == self.qid[rows, None], None


# ----------------------------------------------------------------------------- rankings


def _blocks(q: np.ndarray, a: np.ndarray, distance: str, rows: int = _ROWS):
  """Yields (query slice, scores[b, na]): Hamming distances or cosine similarities."""
  if distance == "hamming":
    for qs, d in hamming.distance_rows(q, a):
      for r0 in range(0, len(d), rows):
        yield slice(qs.start + r0, qs.start + min(r0 + rows, len(d))), d[r0:r0 + rows]
  else:
    qn, an = hamming.normalise_rows(q), hamming.normalise_rows(a)
    for r0 in range(0, len(q), rows):
      yield slice(r0, min(r0 + rows, len(q))), qn[r0:r0 + rows] @ an.T


def _order(scores: np.ndarray, distance: str) -> np.ndarray:
  """int64[b, na]: archive indices best first, ties by index, for a block of queries.

  Hamming distances are small integers: numpy's stable sort of uint8/uint16 is a
  counting (radix) sort, linear in the archive. Cosine similarities: a stable sort.
  """
  if distance == "hamming":
    return np.argsort(scores, axis=1, kind="stable")
  return np.argsort(-scores, axis=1, kind="stable")


def rank(query, archive, distance: str = "hamming") -> np.ndarray:
  """Full rankings int64[nq, na]: archive indices best first, ties by index.

  query/archive: packed uint8 codes (Hamming) or float features (`distance="cosine"`).
  """
  q, a = _inputs(query, archive, distance, "rank")
  return np.concatenate([_order(s, distance) for _, s in _blocks(q, a, distance)])


# ----------------------------------------------------------------------------- AP cores


def _safe_div(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def _sum_precision_top(rel_top: np.ndarray, k: int):
  """(sum of P(rank) over relevant ranks <= k, relevant within k), float64[b], int64[b]."""
  cum = np.cumsum(rel_top[:, :k], axis=1)
  return (rel_top[:, :k] * cum / np.arange(1, k + 1)).sum(1), cum[:, -1]


def _sum_precision_all(ranked_rel: np.ndarray) -> np.ndarray:
  """float64[b]: sum of P(rank) over all relevant items of each ranking."""
  b, m = ranked_rel.shape
  flat = np.flatnonzero(ranked_rel)  # row * m + rank - 1, increasing; cheaper than 2-D nonzero
  rows = flat // m
  start = np.searchsorted(flat, np.arange(b) * m)
  relrank = np.arange(1, len(flat) + 1) - start[rows]
  return np.bincount(rows, weights=relrank / (flat - rows * m + 1), minlength=b)


def _found_at(ranked_rel: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
  """int64[b, c]: relevant items within each of the increasing `cutoffs`.

  One pass of segment sums between cut-offs, in 16-bit counters where they fit.
  """
  starts = np.concatenate([[0], cutoffs[:-1]])
  acc = np.uint16 if np.diff(np.append(starts, cutoffs[-1])).max() < 2**16 else np.int64
  # reduceat's last segment runs to the end of the row: cut the row at the last cut-off.
  seg = np.add.reduceat(ranked_rel[:, :cutoffs[-1]].view(np.uint8), starts, axis=1, dtype=acc)
  return np.cumsum(seg, axis=1, dtype=np.int64)


# ----------------------------------------------------------------------------- public


def average_precision(ranked_relevance, k: int | None = None, mode: str = "thesis",
                      n_relevant=None) -> np.ndarray:
  """AP per query from relevance in rank order.

  Args:
    ranked_relevance: bool[nq, m], item j of row i relevant to query i.
    k: cut-off, 1 <= k <= m (mode "all" takes the whole list and ignores it).
    mode: one of `MAP_MODES`. "hit_only" gives the thesis AP per query; the
      averaging over queries with a hit is `evaluate`'s.
    n_relevant: int[nq], all relevant items per query (default: those in the
      list, right when the list is the whole ranking).

  Returns:
    float64[nq].
  """
  rel = np.asarray(ranked_relevance).astype(bool)
  if mode not in MAP_MODES:
    raise ValueError(f"average_precision: `mode` must be one of {sorted(MAP_MODES)}; got {mode!r}")
  n_rel = rel.sum(1) if n_relevant is None else np.asarray(n_relevant)
  if mode == "all":
    return _safe_div(_sum_precision_all(rel), n_rel)
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= rel.shape[1]:
    raise ValueError(f"average_precision: `k` must be an int in 1..{rel.shape[1]}; got {k!r}")
  total, found = _sum_precision_top(rel, k)
  if mode == "min_k_rel":
    return _safe_div(total, np.minimum(k, n_rel))
  return _safe_div(total, found)


def precision_at(ranked_relevance, n: int) -> np.ndarray:
  """float64[nq]: relevant items among the first n, over n."""
  rel = np.asarray(ranked_relevance).astype(bool)
  return rel[:, :n].sum(1) / n


def recall_at(ranked_relevance, n: int, n_relevant=None) -> np.ndarray:
  """float64[nq]: relevant items among the first n over all relevant (0 when none)."""
  rel = np.asarray(ranked_relevance).astype(bool)
  n_rel = rel.sum(1) if n_relevant is None else np.asarray(n_relevant)
  return _safe_div(rel[:, :n].sum(1), n_rel)


def pr_curve(ranked_relevance, cutoffs, n_relevant=None):
  """Precision and recall after each cut-off: (float64[nq, c], float64[nq, c])."""
  rel = np.asarray(ranked_relevance).astype(bool)
  cutoffs = np.asarray(cutoffs, np.int64)
  found = _found_at(rel, cutoffs)
  n_rel = rel.sum(1) if n_relevant is None else np.asarray(n_relevant)
  return found / cutoffs, _safe_div(found, n_rel[:, None])


def _dcg(gains: np.ndarray) -> np.ndarray:
  discount = 1.0 / np.log2(np.arange(2, gains.shape[1] + 2))
  return (np.exp2(gains.astype(np.float64)) - 1) @ discount


def ndcg_at(ranked_gain, k: int, ideal_gain) -> np.ndarray:
  """float64[nq]: DCG@k / ideal DCG@k, gain 2^g - 1 and discount log2(rank + 1).

  ranked_gain: int[nq, >=k] gains in rank order; ideal_gain: int[nq, >=k] the best
  gains of the whole archive, descending.
  """
  return _safe_div(_dcg(np.asarray(ranked_gain)[:, :k]), _dcg(np.asarray(ideal_gain)[:, :k]))


def acg_at(ranked_gain, k: int) -> np.ndarray:
  """float64[nq]: mean gain (shared labels) of the first k."""
  return np.asarray(ranked_gain)[:, :k].astype(np.float64).mean(1)


def precision_within_radius(distances, relevant, radius: int = 2) -> np.ndarray:
  """float64[nq]: share of relevant items among those within `radius` (0 if none).

  distances: int[nq, na]; relevant: bool[nq, na].
  """
  within = np.asarray(distances) <= radius
  return _safe_div((within & np.asarray(relevant, bool)).sum(1), within.sum(1))


def _harmonic(n: int) -> np.ndarray:
  """H[i] = sum_{t=1}^{i} 1/t for i in 0..n."""
  return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])


def tie_aware_average_precision(group_sizes, group_relevant, k: int | None = None,
                                mode: str = "thesis") -> np.ndarray:
  """Expected AP when the items of each tie group come in random order.

  Closed form in the spirit of McSherry & Najork (2008): a relevant item at
  position e of a group of N items with r relevant, after C items and R_b
  relevant ones, contributes on average (r/N)(R_b + 1 + (e-1)(r-1)/(N-1)) / (C+e),
  summed over e with harmonic numbers. For the thesis normaliser (relevant items
  in the top k) the group cut by k is conditioned on how many relevant items it
  puts in the top k (hypergeometric), so the result is E[AP], not a ratio of
  expectations.

  Args:
    group_sizes: int[nq, G] items per tie group, groups in rank order (zeros allowed).
    group_relevant: int[nq, G] relevant items per group.
    k: cut-off; None for the whole ranking ("all").
    mode: "thesis", "min_k_rel" or "all".

  Returns:
    float64[nq].
  """
  n = np.asarray(group_sizes, np.int64)
  r = np.asarray(group_relevant, np.int64)
  if mode not in ("thesis", "min_k_rel", "all"):
    raise ValueError(f"tie_aware_average_precision: `mode` must be 'thesis', 'min_k_rel' or "
                     f"'all'; got {mode!r}")
  before = np.cumsum(n, 1) - n
  rel_before = np.cumsum(r, 1) - r
  total_rel = r.sum(1)
  harm = _harmonic(int(n.sum(1).max(initial=0)))
  if mode == "all" or k is None:
    taken = n
  else:
    taken = np.clip(k - before, 0, n)

  def expected(m, rel, size, c, rb):
    """E[sum of P(rank) over relevant] for the first m of a group, elementwise."""
    a = harm[c + m] - harm[c]
    alpha = _safe_div(rel, size)
    beta = _safe_div(rel - 1, size - 1)
    return alpha * ((rb + 1) * a + beta * (m - (c + 1) * a))

  if mode == "all" or k is None:
    return _safe_div(expected(n, r, n, before, rel_before).sum(1), total_rel)
  whole = taken == n
  e_whole = np.where(whole, expected(n, r, n, before, rel_before), 0).sum(1)
  cut = (taken > 0) & ~whole  # at most one group per row: the one k falls inside
  e_cut = np.where(cut, expected(taken, r, n, before, rel_before), 0).sum(1)
  if mode == "min_k_rel":
    return _safe_div(e_whole + e_cut, np.minimum(k, total_rel))
  # thesis: the normaliser n_i = R_b + X is random when a group is cut.
  found_whole = np.where(whole, r, 0).sum(1)
  out = _safe_div(e_whole, found_whole)
  rows = np.nonzero(cut.any(1))[0]
  if len(rows):
    g = cut[rows].argmax(1)
    size, rel = n[rows, g][:, None], r[rows, g][:, None]
    m, c, rb = taken[rows, g][:, None], before[rows, g][:, None], rel_before[rows, g][:, None]
    x = np.arange(int(m.max()) + 1)[None, :]
    pmf = stats.hypergeom.pmf(x, size, rel, m)
    a = harm[c + m] - harm[c]
    given_x = _safe_div(x, m) * ((rb + 1) * a + _safe_div(x - 1, m - 1) * (m - (c + 1) * a))
    ap = _safe_div(e_whole[rows, None] + given_x, rb + x)
    out[rows] = (np.where(x <= m, pmf, 0) * ap).sum(1)
  return out


# ----------------------------------------------------------------------------- evaluate


def _inputs(query, archive, distance: str, fn: str):
  """Checked (query, archive): packed codes for "hamming", float32 for "cosine"."""
  if distance == "hamming":
    q, a = _as_codes(query, "query_codes"), _as_codes(archive, "archive_codes")
    if q.shape[1] != a.shape[1]:
      raise ValueError(f"{fn}: `query_codes` have {8 * q.shape[1]} bits but `archive_codes` "
                       f"have {8 * a.shape[1]}")
  elif distance == "cosine":
    q = hamming._check_features(query, "query_codes", fn)
    a = hamming._check_features(archive, "archive_codes", fn)
    if q.shape[1] != a.shape[1]:
      raise ValueError(f"{fn}: `query_codes` have {q.shape[1]} features but `archive_codes` "
                       f"have {a.shape[1]}")
  else:
    raise ValueError(f"{fn}: `distance` must be 'hamming' or 'cosine'; got {distance!r}")
  if len(a) == 0:
    raise ValueError(f"{fn}: `archive_codes` is empty")
  if len(q) == 0:
    raise ValueError(f"{fn}: `query_codes` is empty")
  return q, a


class _Protocol:
  """Ranks one block of queries and keeps the little each metric needs.

  Per query: the relevance (and scores) of the first ranks, the relevant items
  within each PR cut-off, the ends of the tie group that k cuts and of the
  Hamming ball. The metrics are computed from these for all queries at once.
  Blocks run in threads: numpy's sorts and gathers release the GIL.
  """

  def __init__(self, rel, distance, k, n, cutoffs, modes, radius):
    self.rel, self.distance = rel, distance
    self.k, self.n, self.cutoffs, self.modes, self.radius = k, n, cutoffs, modes, radius

  def __call__(self, rows: slice, scores: np.ndarray) -> dict:
    k, top = self.k, max(self.k, self.n)
    order = _order(scores, self.distance)
    ranked_rel, ranked_gain = self.rel.ranked(rows, order)
    out = dict(count=np.bitwise_count(np.packbits(ranked_rel, axis=1)).sum(1, dtype=np.int64),
               rel_top=ranked_rel[:, :top].copy(),
               scores_top=np.take_along_axis(scores, order[:, :k], 1))
    if self.cutoffs is not None:
      out["found_cut"] = _found_at(ranked_rel, self.cutoffs)
    if "all" in self.modes:
      out["sum_all"] = _sum_precision_all(ranked_rel)
    # The tie group that k cuts ends where the ranked scores pass its value.
    end = _ranks_within(scores, order, out["scores_top"][:, -1], self.distance)
    out["tie_end"], out["tie_found_end"] = end, _prefix_count(ranked_rel, end)
    if self.distance == "hamming":
      within = _ranks_within(scores, order, np.full(len(scores), self.radius), self.distance)
      out["radius_n"], out["radius_found"] = within, _prefix_count(ranked_rel, within)
    if ranked_gain is not None:
      out["gain_top"] = ranked_gain[:, :k].astype(np.int64)
      out["ideal_top"] = -np.sort(-self.rel.gains(rows).astype(np.int64), axis=1)[:, :k]
    return out


def _prefix_count(rel: np.ndarray, c: np.ndarray) -> np.ndarray:
  """int64[b]: True values among the first c[i] of row i."""
  return np.array([np.count_nonzero(r[:ci]) for r, ci in zip(rel, c)], np.int64)


def _ranks_within(scores: np.ndarray, order: np.ndarray, value: np.ndarray, distance: str):
  """int64[b]: how many ranks score at least as well as `value[i]` in row i.

  Scores are monotone along the ranking, so a binary search over ranks reads
  only log2(na) scores per row.
  """
  b, m = order.shape
  rows = np.arange(b)
  lo, hi = np.zeros(b, np.int64), np.full(b, m, np.int64)
  while (lo < hi).any():
    mid = (lo + hi) // 2
    s = scores[rows, order[rows, np.minimum(mid, m - 1)]]
    inside = (s <= value) if distance == "hamming" else (s >= value)
    go = lo < hi
    lo = np.where(go & inside, mid + 1, lo)
    hi = np.where(go & ~inside, mid, hi)
  return lo


def _tie_groups(scores_top: np.ndarray, rel_top: np.ndarray, end, found_end):
  """Tie groups reaching into the top k, for `tie_aware_average_precision`.

  Groups are runs of equal scores among the first k ranks; the last one (the
  one k cuts) extends to rank `end` and holds `found_end` relevant items up to
  there, minus those ranked before it.
  """
  b, k = scores_top.shape
  group = np.zeros((b, k), np.int64)
  np.cumsum(scores_top[:, 1:] != scores_top[:, :-1], axis=1, out=group[:, 1:])
  last = group[:, -1]
  rows = np.arange(b)
  inside = group < last[:, None]
  before = inside.sum(1)
  flat = rows[:, None] * k + group
  sizes = np.bincount(flat[inside], minlength=b * k).reshape(b, k)
  rel_sizes = np.bincount(flat[inside & rel_top[:, :k]], minlength=b * k).reshape(b, k)
  sizes[rows, last] = end - before
  rel_sizes[rows, last] = found_end - (inside & rel_top[:, :k]).sum(1)
  return sizes, rel_sizes


def _threads() -> int:
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:
    return os.cpu_count() or 1


def evaluate(query_codes, archive_codes, query_labels, archive_labels, k: int = 100,
             n: int = 20, *, distance: str = "hamming", class_names: Sequence[str] | None = None,
             pr_step: int | None = 500, pr_cutoffs=None,
             map_modes: Sequence[str] = ("thesis", "min_k_rel", "all", "hit_only"),
             radius: int = 2, threads: int | None = None) -> dict:
  """Scores a retrieval protocol: every metric of the module docstring.

  Args:
    query_codes: uint8[nq, l // 8] packed codes; or bits [nq, l] (bool, {0, 1}, ±1),
      packed here; or float[nq, f] features with `distance="cosine"`.
    archive_codes: the same for the archive, [na, ...].
    query_labels: int[nq] class labels or {0,1}[nq, c] multi-hot.
    archive_labels: int[na] or {0,1}[na, c], the same kind as `query_labels`.
    k: MAP / NDCG / ACG cut-off (<= na). n: precision / recall cut-off (<= na).
    distance: "hamming" or "cosine".
    class_names: names for the class-wise keys (indexed by label).
    pr_step: PR curve every `pr_step` retrieved items, plus the end; None: no curve.
    pr_cutoffs: explicit PR cut-offs (increasing ints in 1..na); overrides `pr_step`.
    map_modes: which MAP conventions to report (see `MAP_MODES`).
    radius: Hamming radius of `precision@r{radius}` (Hamming only).
    threads: numpy worker threads ranking query blocks (default: all usable cores).

  Returns:
    dict of python floats, and lists of floats for "pr_curve/*".
  """
  q, a = _inputs(query_codes, archive_codes, distance, "evaluate")
  nq, na = len(q), len(a)
  for name, v in (("k", k), ("n", n), ("radius", radius)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (name == "radius"):
      raise ValueError(f"evaluate: `{name}` must be an int >= {int(name != 'radius')}; got {v!r}")
    if name != "radius" and v > na:
      raise ValueError(f"evaluate: `{name}`={v} is larger than the archive ({na} items)")
  modes = tuple(map_modes)
  for m in modes:
    if m not in MAP_MODES:
      raise ValueError(f"evaluate: unknown `map_modes` entry {m!r}; "
                       f"choose from {sorted(MAP_MODES)}")
  ql = _labels(query_labels, "query_labels", nq)
  al = _labels(archive_labels, "archive_labels", na)
  if ql.ndim != al.ndim:
    raise ValueError(f"evaluate: `query_labels` {ql.shape} and `archive_labels` {al.shape} are "
                     "not the same kind (integer labels vs multi-hot)")
  if pr_cutoffs is not None:
    cutoffs = _check_cutoffs(pr_cutoffs, na)
  elif pr_step:
    cutoffs = np.arange(pr_step, na + 1, pr_step, dtype=np.int64)
    if not len(cutoffs) or cutoffs[-1] != na:
      cutoffs = np.append(cutoffs, na)
  else:
    cutoffs = None
  protocol = _Protocol(_Relevance(ql, al), distance, int(k), int(n), cutoffs, modes,
                       int(radius))

  parts = []
  workers = threads or _threads()
  if workers == 1:
    parts = [protocol(rows, s) for rows, s in _blocks(q, a, distance)]
  else:
    # Blocks rank in parallel, a bounded number in flight; XLA computes the next
    # distances on its own threads meanwhile.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      pending = collections.deque()
      for rows, s in _blocks(q, a, distance):
        pending.append(pool.submit(protocol, rows, s))
        if len(pending) >= 2 * workers:
          parts.append(pending.popleft().result())
      parts += [f.result() for f in pending]
  r = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

  sum_k, found_k = _sum_precision_top(r["rel_top"], k)
  found_n, n_rel = r["rel_top"][:, :n].sum(1), r["count"]
  ap_k = _safe_div(sum_k, found_k)
  out = {}
  if "thesis" in modes:
    out[f"map@{k}"] = ap_k.mean()
  if "min_k_rel" in modes:
    out[f"map@{k}/min_k_rel"] = _safe_div(sum_k, np.minimum(k, n_rel)).mean()
  if "all" in modes:
    out["map@all"] = _safe_div(r["sum_all"], n_rel).mean()
  if "hit_only" in modes:
    out[f"map@{k}/hit_only"] = ap_k[found_k > 0].mean() if (found_k > 0).any() else 0.0
  sizes, rel_sizes = _tie_groups(r["scores_top"], r["rel_top"], r["tie_end"], r["tie_found_end"])
  ap_tie = tie_aware_average_precision(sizes, rel_sizes, k, "thesis")
  out[f"map@{k}/tie_aware"] = ap_tie.mean()
  out[f"precision@{n}"] = (found_n / n).mean()
  out[f"recall@{n}"] = _safe_div(found_n, n_rel).mean()
  if distance == "hamming":
    out[f"precision@r{radius}"] = _safe_div(r["radius_found"], r["radius_n"]).mean()
  if "gain_top" in r:  # multi-hot: gain = shared labels
    gain, ideal = r["gain_top"], r["ideal_top"]
  else:
    gain = r["rel_top"][:, :k].astype(np.int64)
    ideal = (np.arange(k)[None, :] < n_rel[:, None]).astype(np.int64)
  out[f"ndcg@{k}"] = _safe_div(_dcg(gain), _dcg(ideal)).mean()
  out[f"acg@{k}"] = acg_at(gain, k).mean()
  out.update(_classwise(ap_k, ql, f"classwise_map@{k}", class_names))
  out.update(_classwise(ap_tie, ql, f"classwise_map@{k}/tie_aware", class_names))
  if cutoffs is not None:
    out["pr_curve/cutoffs"] = [int(c) for c in cutoffs]
    out["pr_curve/precision"] = [float(v) for v in (r["found_cut"] / cutoffs).mean(0)]
    out["pr_curve/recall"] = [float(v) for v in
                              _safe_div(r["found_cut"], n_rel[:, None]).mean(0)]
  return {key: (float(v) if np.ndim(v) == 0 else v) for key, v in out.items()}


def _classwise(ap: np.ndarray, ql: np.ndarray, prefix: str, class_names) -> dict:
  out = {}
  if ql.ndim == 1:
    classes = np.unique(ql)
    members = [(c, ql == c) for c in classes]
  else:
    members = [(c, ql[:, c] > 0) for c in range(ql.shape[1]) if ql[:, c].any()]
  for c, m in members:
    if class_names is not None:
      if not 0 <= c < len(class_names):
        raise ValueError(f"evaluate: label {c} has no entry in `class_names` "
                         f"({len(class_names)} names)")
      name = class_names[c]
    else:
      name = str(c)
    out[f"{prefix}/{name}"] = ap[m].mean()
  return out
