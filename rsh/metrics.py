"""Retrieval metrics, each a pure function of arrays (`rsh.protocol.evaluate` runs them all).

Ranking: codes by Hamming distance ascending, real features (`distance="cosine"`)
by cosine similarity descending; ties always by archive index (a stable order).
Relevance: integer labels `int[n]` are relevant when equal; multi-hot labels
`{0,1}[n, c]` when they share at least one label, with gain = number of shared
labels for NDCG and ACG.

`rsh.protocol.evaluate` reports them as a flat dict of python floats (curves as
lists of floats):

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

`MAP_MODES` names the MAP conventions ("thesis", "min_k_rel", "all", "hit_only").
Every mean is over queries, R_i = 0 gives recall 0.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from rsh import hamming
from rsh import ranking

__all__ = [
    "MAP_MODES", "relevance", "rank", "average_precision", "precision_at", "recall_at",
    "pr_curve", "ndcg_at", "acg_at", "tie_aware_average_precision", "precision_within_radius",
    "safe_div", "sum_precision_top", "sum_precision_all", "found_at", "dcg",
]

MAP_MODES = {
    "thesis": "AP over the top k / relevant items found in the top k (0 when none)",
    "min_k_rel": "AP over the top k / min(k, all relevant)",
    "all": "AP over the whole ranking / all relevant (MAP@all)",
    "hit_only": "thesis AP, averaged only over queries with a relevant item in the top k",
}


# ----------------------------------------------------------------------------- relevance


def relevance(query_labels, archive_labels) -> np.ndarray:
  """Gains `uint8[nq, na]`: 1 for equal integer labels; shared labels for multi-hot."""
  ql, al = np.asarray(query_labels), np.asarray(archive_labels)
  for name, x in (("query_labels", ql), ("archive_labels", al)):
    if x.ndim not in (1, 2):
      raise ValueError(f"relevance: `{name}` must be int[n] labels or a multi-hot [n, classes] "
                       f"matrix; got shape {x.shape}")
  if ql.ndim != al.ndim or (ql.ndim == 2 and ql.shape[1] != al.shape[1]):
    raise ValueError(f"relevance: `query_labels` {ql.shape} and `archive_labels` {al.shape} "
                     "are not the same kind of labels")
  if ql.ndim == 1:
    return (ql[:, None] == al[None, :]).astype(np.uint8)
  shared = ql.astype(np.float32) @ al.astype(np.float32).T
  return np.rint(shared).astype(np.uint8 if ql.shape[1] < 256 else np.uint16)


# ----------------------------------------------------------------------------- rankings


def rank(query, archive, distance: str = "hamming") -> np.ndarray:
  """Full rankings int64[nq, na]: archive indices best first, ties by index.

  query/archive: packed uint8 codes (Hamming) or float features (`distance="cosine"`).
  """
  q, a = ranking.check_inputs(query, archive, distance, "rank")
  blocks = ranking.score_blocks(q, a, distance)
  return np.concatenate([ranking.order(s, distance) for _, s in blocks])


# ----------------------------------------------------------------------------- checks
# Host-side and O(1) (shapes, dtypes, scalars) except where noted: the hot paths of
# `rsh.protocol.evaluate` call the cores below once per query block.


def _ranked(x, name: str, fn: str, dtype=bool) -> np.ndarray:
  """`x` as a 2-D [nq, m] array (relevance or gains in rank order)."""
  x = np.asarray(x)
  if x.dtype.kind not in "biuf":
    raise TypeError(f"{fn}: `{name}` must be a bool or numeric array [queries, ranks]; "
                    f"got dtype {x.dtype}")
  if x.ndim != 2:
    raise ValueError(f"{fn}: `{name}` must be 2-D [queries, ranks]; got shape {x.shape} "
                     "(use x[None] for a single query)")
  return x if dtype is None else x.astype(dtype)


def _n_relevant(n_relevant, rel: np.ndarray, fn: str) -> np.ndarray:
  """All relevant items per query: int[nq] given, else those in `rel`."""
  if n_relevant is None:
    return rel.sum(1)
  n_rel = np.asarray(n_relevant)
  if n_rel.shape != (len(rel),):
    raise ValueError(f"{fn}: `n_relevant` must have one entry per query, shape ({len(rel)},); "
                     f"got shape {n_rel.shape}")
  return n_rel


def _cutoff(value, name: str, fn: str, m: int) -> int:
  """A cut-off in 1..m, m the ranks per query."""
  return hamming.check_int(value, name, fn, 1, m, f"the ranks per query ({m})")


def _cutoffs(cutoffs, fn: str, m: int) -> np.ndarray:
  """Strictly increasing int64 cut-offs within 1..m (a pass over the few cut-offs only)."""
  c = np.asarray(cutoffs)
  if c.ndim != 1 or not len(c) or c.dtype.kind not in "iu":
    raise ValueError(f"{fn}: `cutoffs` must be a non-empty 1-D array of ints; got "
                     f"{c.dtype} of shape {c.shape}")
  if c[0] < 1 or c[-1] > m or (np.diff(c) <= 0).any():
    raise ValueError(f"{fn}: `cutoffs` must increase strictly within 1..{m} (the ranks per "
                     f"query); got {c[0]}..{c[-1]}")
  return c.astype(np.int64)


# ----------------------------------------------------------------------------- AP cores


def safe_div(a, b):
  """float64 a / b, 0 where b <= 0 (broadcast)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b > 0)


def sum_precision_top(rel_top: np.ndarray, k: int):
  """(sum of P(rank) over relevant ranks <= k, relevant within k), float64[b], int64[b]."""
  rel_top = _ranked(rel_top, "rel_top", "sum_precision_top", None)
  k = _cutoff(k, "k", "sum_precision_top", rel_top.shape[1])
  cum = np.cumsum(rel_top[:, :k], axis=1)
  return (rel_top[:, :k] * cum / np.arange(1, k + 1)).sum(1), cum[:, -1]


def sum_precision_all(ranked_rel: np.ndarray) -> np.ndarray:
  """float64[b]: sum of P(rank) over all relevant items of each ranking."""
  ranked_rel = _ranked(ranked_rel, "ranked_rel", "sum_precision_all", None)
  b, m = ranked_rel.shape
  flat = np.flatnonzero(ranked_rel)  # row * m + rank - 1, increasing; cheaper than 2-D nonzero
  start = np.searchsorted(flat, np.arange(b + 1) * m)  # each row's run in `flat`
  counts = np.diff(start)
  # Rows and row starts repeated over each row's run: no division of every position by m.
  relrank = np.arange(1, len(flat) + 1) - np.repeat(start[:-1], counts)
  rank = flat + 1 - np.repeat(np.arange(b) * m, counts)
  return np.bincount(np.repeat(np.arange(b), counts), weights=relrank / rank, minlength=b)


def found_at(ranked_rel: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
  """int64[b, c]: relevant items within each of the increasing `cutoffs`.

  One pass of segment sums between cut-offs, in 16-bit counters where they fit.
  """
  ranked_rel = _ranked(ranked_rel, "ranked_rel", "found_at", None)
  cutoffs = _cutoffs(cutoffs, "found_at", ranked_rel.shape[1])
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
      averaging over queries with a hit is `rsh.protocol.evaluate`'s.
    n_relevant: int[nq], all relevant items per query (default: those in the
      list, right when the list is the whole ranking).

  Returns:
    float64[nq].
  """
  rel = _ranked(ranked_relevance, "ranked_relevance", "average_precision")
  if mode not in MAP_MODES:
    raise ValueError(f"average_precision: `mode` must be one of {sorted(MAP_MODES)}; got {mode!r}")
  n_rel = _n_relevant(n_relevant, rel, "average_precision")
  if mode == "all":
    return safe_div(sum_precision_all(rel), n_rel)
  k = _cutoff(k, "k", "average_precision", rel.shape[1])
  total, found = sum_precision_top(rel, k)
  if mode == "min_k_rel":
    return safe_div(total, np.minimum(k, n_rel))
  return safe_div(total, found)


def precision_at(ranked_relevance, n: int) -> np.ndarray:
  """float64[nq]: relevant items among the first n (1 <= n <= ranks), over n."""
  rel = _ranked(ranked_relevance, "ranked_relevance", "precision_at")
  n = _cutoff(n, "n", "precision_at", rel.shape[1])
  return rel[:, :n].sum(1) / n


def recall_at(ranked_relevance, n: int, n_relevant=None) -> np.ndarray:
  """float64[nq]: relevant items among the first n over all relevant (0 when none)."""
  rel = _ranked(ranked_relevance, "ranked_relevance", "recall_at")
  n = _cutoff(n, "n", "recall_at", rel.shape[1])
  n_rel = _n_relevant(n_relevant, rel, "recall_at")
  return safe_div(rel[:, :n].sum(1), n_rel)


def pr_curve(ranked_relevance, cutoffs, n_relevant=None):
  """Precision and recall after each cut-off: (float64[nq, c], float64[nq, c])."""
  rel = _ranked(ranked_relevance, "ranked_relevance", "pr_curve")
  cutoffs = _cutoffs(cutoffs, "pr_curve", rel.shape[1])
  n_rel = _n_relevant(n_relevant, rel, "pr_curve")
  found = found_at(rel, cutoffs)
  return found / cutoffs, safe_div(found, n_rel[:, None])


def dcg(gains: np.ndarray) -> np.ndarray:
  """float64[nq]: DCG of gains int[nq, m] in rank order, gain 2^g - 1, discount log2(rank + 1)."""
  gains = _ranked(gains, "gains", "dcg", None)
  discount = 1.0 / np.log2(np.arange(2, gains.shape[1] + 2))
  return (np.exp2(gains.astype(np.float64)) - 1) @ discount


def ndcg_at(ranked_gain, k: int, ideal_gain) -> np.ndarray:
  """float64[nq]: DCG@k / ideal DCG@k, gain 2^g - 1 and discount log2(rank + 1).

  ranked_gain: int[nq, >=k] gains in rank order; ideal_gain: int[nq, >=k] the best
  gains of the whole archive, descending.
  """
  ranked_gain = _ranked(ranked_gain, "ranked_gain", "ndcg_at", None)
  ideal_gain = _ranked(ideal_gain, "ideal_gain", "ndcg_at", None)
  k = _cutoff(k, "k", "ndcg_at", ranked_gain.shape[1])
  if len(ideal_gain) != len(ranked_gain) or ideal_gain.shape[1] < k:
    raise ValueError(f"ndcg_at: `ideal_gain` must be [{len(ranked_gain)}, >= {k}] like "
                     f"`ranked_gain` {ranked_gain.shape} (k={k}); got shape {ideal_gain.shape}")
  return safe_div(dcg(ranked_gain[:, :k]), dcg(ideal_gain[:, :k]))


def acg_at(ranked_gain, k: int) -> np.ndarray:
  """float64[nq]: mean gain (shared labels) of the first k."""
  ranked_gain = _ranked(ranked_gain, "ranked_gain", "acg_at", None)
  k = _cutoff(k, "k", "acg_at", ranked_gain.shape[1])
  return ranked_gain[:, :k].astype(np.float64).mean(1)


def precision_within_radius(distances, relevant, radius: int = 2) -> np.ndarray:
  """float64[nq]: share of relevant items among those within `radius` (0 if none).

  distances: int[nq, na]; relevant: bool[nq, na]; radius: int >= 0 (0: equal codes).
  """
  fn = "precision_within_radius"
  distances = _ranked(distances, "distances", fn, None)
  relevant = _ranked(relevant, "relevant", fn)
  if relevant.shape != distances.shape:
    raise ValueError(f"{fn}: `relevant` {relevant.shape} and `distances` {distances.shape} "
                     "must have the same shape")
  radius = hamming.check_int(radius, "radius", fn, 0)
  within = distances <= radius
  return safe_div((within & relevant).sum(1), within.sum(1))


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
  fn = "tie_aware_average_precision"
  n = _ranked(group_sizes, "group_sizes", fn, np.int64)
  r = _ranked(group_relevant, "group_relevant", fn, np.int64)
  if mode not in ("thesis", "min_k_rel", "all"):
    raise ValueError(f"tie_aware_average_precision: `mode` must be 'thesis', 'min_k_rel' or "
                     f"'all'; got {mode!r}")
  if r.shape != n.shape:
    raise ValueError(f"{fn}: `group_relevant` {r.shape} and `group_sizes` {n.shape} must "
                     "have the same shape")
  if k is not None and mode != "all":
    k = hamming.check_int(k, "k", fn, 1)
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
    alpha = safe_div(rel, size)
    beta = safe_div(rel - 1, size - 1)
    return alpha * ((rb + 1) * a + beta * (m - (c + 1) * a))

  if mode == "all" or k is None:
    return safe_div(expected(n, r, n, before, rel_before).sum(1), total_rel)
  whole = taken == n
  e_whole = np.where(whole, expected(n, r, n, before, rel_before), 0).sum(1)
  cut = (taken > 0) & ~whole  # at most one group per row: the one k falls inside
  e_cut = np.where(cut, expected(taken, r, n, before, rel_before), 0).sum(1)
  if mode == "min_k_rel":
    return safe_div(e_whole + e_cut, np.minimum(k, total_rel))
  # thesis: the normaliser n_i = R_b + X is random when a group is cut.
  found_whole = np.where(whole, r, 0).sum(1)
  out = safe_div(e_whole, found_whole)
  rows = np.nonzero(cut.any(1))[0]
  if len(rows):
    g = cut[rows].argmax(1)
    size, rel = n[rows, g][:, None], r[rows, g][:, None]
    m, c, rb = taken[rows, g][:, None], before[rows, g][:, None], rel_before[rows, g][:, None]
    x = np.arange(int(m.max()) + 1)[None, :]
    pmf = stats.hypergeom.pmf(x, size, rel, m)
    a = harm[c + m] - harm[c]
    given_x = safe_div(x, m) * ((rb + 1) * a + safe_div(x - 1, m - 1) * (m - (c + 1) * a))
    ap = safe_div(e_whole[rows, None] + given_x, rb + x)
    out[rows] = (np.where(x <= m, pmf, 0) * ap).sum(1)
  return out

