"""`evaluate_streamed`: retrieval metrics over an archive too big for score rows.

`rsh.protocol.evaluate` ranks a whole score row per query: fine for 10^5 codes, not
for a memory-mapped archive of 10^8-10^9. Here the archive is read once in chunks
(`rsh.search.distance_counts.count_by_distance`) and every metric comes from what that
keeps per query: the archive items per (gain, Hamming distance), and the exact top
max(k, n) by `(distance, archive index)`, the protocol's ranking.

Keys equal to `evaluate`'s of the same name (Hamming, no leave-one-out):
  map@{k}, map@{k}/min_k_rel, map@{k}/hit_only   the top k's relevance (R_i from the counts)
  map@{k}/tie_aware               from the counts: the tie groups are the distances
  precision@{n}, recall@{n}       the top n
  precision@r{radius}             the counts within the radius (0 for an empty ball)
  ndcg@{k}, acg@{k}               the top k's gains; NDCG's ideal from the items per gain
  classwise_map@{k}/{name}, classwise_map@{k}/tie_aware/{name}
New keys (from the counts alone):
  map@all/tie_aware               expected AP over the whole ranking, each tie group
                                  (distance) in random order (McSherry & Najork)
  recall@r{radius}                relevant items within the radius / all relevant
  pr_radius/radius, pr_radius/precision, pr_radius/recall
                                  the PR curve by Hamming radius 0..l (precision 0 for an
                                  empty ball, as precision@r)
  n_relevant                      list of ints: relevant archive items per query

Not given: map@all and pr_curve/* rank ties by archive index all the way down, so they
need where each relevant item sits inside its tie group beyond the top k; the counts
say how many relevant items share a distance, not their index order. (A second pass,
the per-distance offsets known, could place them, at the cost of a stable sort of every
[nq, chunk] block, the sort this module avoids.) Their tie-aware twins are map@all/tie_aware
and pr_radius/*.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
from scipy import stats

from rsh import hamming
from rsh import metrics
from rsh.search import distance_counts

__all__ = ["evaluate_streamed", "tie_aware_ap"]

# Harmonic numbers up to this come from a table (whose cumulative rounding stays ~1e-16
# there); beyond, from their asymptotic series.
_TABLE = 1 << 10


# ----------------------------------------------------------------------------- tie-aware AP


@functools.lru_cache(maxsize=1)
def _harmonic_table() -> np.ndarray:
  """H[x] = sum_{t=1}^{x} 1/t for x in 0.._TABLE (the cumulative sums `metrics` uses)."""
  return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, _TABLE + 1))])


def _harmonic_gap(c, m) -> np.ndarray:
  """float64: H(c + m) - H(c), elementwise, int c, m >= 0.

  `metrics.tie_aware_average_precision` tabulates H up to the archive size (8 GB at 10^9
  codes); here a small table, and beyond it H(x) = ln x + gamma + 1/(2x) - 1/(12x^2)
  + 1/(120x^4) (next term 1/(252 x^6) < 4e-21). Where c is past the table, the gap is the
  series' terms differenced, ln(e/c) as log1p(m / c): a gap of 1/c at c = 10^9 keeps ~15
  digits, where a difference of two table entries near H = 21 would keep ~7.
  """
  c, m = np.asarray(c, np.int64), np.asarray(m, np.int64)
  table, e = _harmonic_table(), c + m

  def series(x):  # H(x) for x >= _TABLE (x clipped there where not used)
    x = np.maximum(x, _TABLE).astype(np.float64)
    return np.log(x) + np.euler_gamma + 0.5 / x - 1 / (12 * x**2) + 1 / (120 * x**4)

  cf, mf = np.maximum(c, _TABLE).astype(np.float64), m.astype(np.float64)
  ef = cf + mf
  both = (np.log1p(mf / cf) - mf / (2 * cf * ef) + (1 / (12 * cf**2) - 1 / (12 * ef**2))
          + (1 / (120 * ef**4) - 1 / (120 * cf**4)))
  low_c = table[np.minimum(c, _TABLE)]
  return np.where(e <= _TABLE, table[np.minimum(e, _TABLE)] - low_c,
                  np.where(c < _TABLE, series(e) - low_c, both))


def _expected(m, r, size, c, rb) -> np.ndarray:
  """E[sum of P(rank) over the relevant items among the first m of a tie group].

  The group: `size` items, `r` relevant, after `c` items of which `rb` relevant. A
  relevant item at place e is there with probability r/size and finds on average
  rb + 1 + (e - 1)(r - 1)/(size - 1) relevant ones up to itself, at rank c + e.
  """
  a = _harmonic_gap(c, m)
  alpha, beta = metrics.safe_div(r, size), metrics.safe_div(r - 1, size - 1)
  return alpha * ((rb + 1) * a + beta * (m - (c + 1) * a))


def tie_aware_ap(items: np.ndarray, relevant: np.ndarray, k: int):
  """(thesis AP@k, AP@all) per query, float64[nq] each, tie groups in random order.

  items, relevant: int64[nq, G] per tie group in rank order (here: per distance). The
  formulas of `metrics.tie_aware_average_precision` (modes "thesis" and "all"), with
  harmonic numbers that need no table the size of the archive (`_harmonic_gap`).
  """
  n, r = np.asarray(items, np.int64), np.asarray(relevant, np.int64)
  before, rel_before = np.cumsum(n, 1) - n, np.cumsum(r, 1) - r
  ap_all = metrics.safe_div(_expected(n, r, n, before, rel_before).sum(1), r.sum(1))
  taken = np.clip(k - before, 0, n)
  whole = taken == n
  e_whole = np.where(whole, _expected(n, r, n, before, rel_before), 0).sum(1)
  ap_k = metrics.safe_div(e_whole, np.where(whole, r, 0).sum(1))
  cut = (taken > 0) & ~whole  # at most one group a row: the one k falls inside
  rows = np.flatnonzero(cut.any(1))
  if len(rows):
    # The normaliser (relevant items in the top k) is random when a group is cut: condition
    # on the X relevant items among its first m (hypergeometric), so this is E[AP].
    g = cut[rows].argmax(1)
    size, rel = n[rows, g][:, None], r[rows, g][:, None]
    m, c, rb = taken[rows, g][:, None], before[rows, g][:, None], rel_before[rows, g][:, None]
    x = np.arange(int(m.max()) + 1)[None, :]
    pmf = np.where(x <= m, stats.hypergeom.pmf(x, size, rel, m), 0)
    a = _harmonic_gap(c, m)
    given_x = (metrics.safe_div(x, m)
               * ((rb + 1) * a + metrics.safe_div(x - 1, m - 1) * (m - (c + 1) * a)))
    ap_k[rows] = (pmf * metrics.safe_div(e_whole[rows, None] + given_x, rb + x)).sum(1)
  return ap_k, ap_all


# ----------------------------------------------------------------------------- report


def _ideal_gains(by_gain: np.ndarray, k: int) -> np.ndarray:
  """int64[nq, k]: the k largest gains of the archive, descending, from items per gain."""
  top = by_gain.shape[1] - 1
  at_least = np.cumsum(by_gain[:, ::-1], 1)  # [:, j]: items with gain >= top - j
  return top - (at_least[:, :, None] <= np.arange(k)[None, None, :]).sum(1)


def _classwise(ap: np.ndarray, ql: np.ndarray, prefix: str, class_names) -> dict:
  """Mean AP over the queries of each class (multi-hot: each label a query has)."""
  if ql.ndim == 1:
    members = [(c, ql == c) for c in np.unique(ql)]
  else:
    members = [(c, ql[:, c] > 0) for c in range(ql.shape[1]) if ql[:, c].any()]
  out = {}
  for c, m in members:
    if class_names is not None and not 0 <= c < len(class_names):
      raise ValueError(f"evaluate_streamed: label {c} has no entry in `class_names` "
                       f"({len(class_names)} names)")
    out[f"{prefix}/{class_names[c] if class_names is not None else c}"] = float(ap[m].mean())
  return out


def _report(counts, ql: np.ndarray, k: int, n: int, radius: int, class_names) -> dict:
  """Every key of the module docstring from `DistanceCounts`."""
  items, relevant = counts.items, counts.relevant
  by_gain = counts.by_gain_distance.sum(2)
  n_rel = relevant.sum(1)
  rel_top, gain_top = counts.gains > 0, counts.gains
  ap_k = metrics.average_precision(rel_top, k, "thesis")
  found_k = rel_top[:, :k].sum(1)
  found_n = rel_top[:, :n].sum(1)
  ap_tie, ap_tie_all = tie_aware_ap(items, relevant, k)
  within, within_rel = np.cumsum(items, 1), np.cumsum(relevant, 1)
  out = {
      f"map@{k}": ap_k.mean(),
      f"map@{k}/min_k_rel": metrics.average_precision(rel_top, k, "min_k_rel", n_rel).mean(),
      f"map@{k}/hit_only": ap_k[found_k > 0].mean() if (found_k > 0).any() else 0.0,
      f"map@{k}/tie_aware": ap_tie.mean(),
      "map@all/tie_aware": ap_tie_all.mean(),
      f"precision@{n}": (found_n / n).mean(),
      f"recall@{n}": metrics.safe_div(found_n, n_rel).mean(),
      f"precision@r{radius}": metrics.safe_div(within_rel[:, radius], within[:, radius]).mean(),
      f"recall@r{radius}": metrics.safe_div(within_rel[:, radius], n_rel).mean(),
      f"ndcg@{k}": metrics.ndcg_at(gain_top, k, _ideal_gains(by_gain, k)).mean(),
      f"acg@{k}": metrics.acg_at(gain_top, k).mean(),
  }
  out = {key: float(v) for key, v in out.items()}
  out.update(_classwise(ap_k, ql, f"classwise_map@{k}", class_names))
  out.update(_classwise(ap_tie, ql, f"classwise_map@{k}/tie_aware", class_names))
  out["pr_radius/radius"] = list(range(items.shape[1]))
  out["pr_radius/precision"] = [float(v) for v in metrics.safe_div(within_rel, within).mean(0)]
  out["pr_radius/recall"] = [float(v) for v in
                             metrics.safe_div(within_rel, n_rel[:, None]).mean(0)]
  out["n_relevant"] = [int(v) for v in n_rel]
  return out


def evaluate_streamed(query_codes, archive_codes, query_labels, archive_labels, *,
                      k: int = 100, n: int = 20, radius: int = 2, chunk: int | None = None,
                      class_names: Sequence[str] | None = None, progress=None) -> dict:
  """Retrieval metrics of a Hamming protocol, the archive read once in chunks.

  Args:
    query_codes: uint8[nq, l // 8] packed codes.
    archive_codes: uint8[na, l // 8]: an array, a read-only np.memmap (any array-like
      sliced lazily), a `codefile.CodeFile` or a code file's path; never read whole.
    query_labels: int[nq] class labels or {0,1}[nq, c] multi-hot.
    archive_labels: int[na] or {0,1}[na, c] (the same kind), e.g. a memmap; read a
      chunk at a time.
    k: MAP / NDCG / ACG cut-off, 1..na. n: precision / recall cut-off, 1..na.
    radius: Hamming radius of precision@r / recall@r, 0..l.
    chunk: archive codes a chunk (default: `stream.CHUNK_BYTES` of codes). Memory grows
      with it (about four copies of a chunk), speed hardly.
    class_names: names for the class-wise keys (indexed by label).
    progress: a tqdm bar over the chunks (default: when stderr is a terminal).

  Returns:
    dict of python floats; lists for "pr_radius/*" and "n_relevant". Keys: the module
    docstring's (those `evaluate` also has mean the same; map@all and pr_curve/* it
    cannot give).
  """
  fn = "evaluate_streamed"
  q = hamming.check_codes(query_codes, "query_codes", fn)
  a = distance_counts.check_archive(archive_codes, q, fn)
  bits, na = 8 * q.shape[1], int(a.shape[0])
  radius = hamming.check_int(radius, "radius", fn, 0, bits, f"the code length ({bits} bits)")
  for value, name in ((k, "k"), (n, "n")):
    hamming.check_int(value, name, fn, 1, na, f"the archive ({na} codes)")
  counts = distance_counts.count_by_distance(q, a, query_labels, archive_labels,
                                             top=max(k, n), chunk=chunk, progress=progress)
  ql = np.asarray(query_labels)
  return _report(counts, ql, k, n, radius, class_names)
