"""`evaluate`: a retrieval protocol, every metric of `rsh.metrics` at once.

The metrics, the keys they are reported under and the MAP conventions
(`metrics.MAP_MODES`) are defined in `rsh.metrics`; this module ranks the archive
for every query (`rsh.ranking`) and feeds the formulas.

Hamming rankings never compare-sort: distances are integers in 0..l, so each
query's ranking is a counting sort (numpy's stable sort of uint8/uint16 is a
radix sort: per-distance counts, prefix sums, one scatter), linear in the
archive; the relevance in rank order is one bounds-check-free gather of small
class ids. From it `evaluate` keeps per query only the relevance of the first
max(k, n) ranks, the relevant counts between PR cut-offs (one pass of segment
sums), and the ends of the tie group that k cuts and of the Hamming ball (counts
of the scores within those values, read off the first k ranks where the run ends
there); MAP@all alone reads the positions of every relevant item. With integer
labels the relevant items of a query are its class's archive size, counted once.
All metrics then come from these small arrays at once. Leave-one-out (a set queries
itself) gives each query's own row a score worse than any item's: ranked last and cut off.
Query blocks are ranked in threads (numpy releases the GIL) while XLA computes
the next block's distances.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from typing import Sequence

import numpy as np

from rsh import hamming
from rsh import metrics
from rsh import ranking

__all__ = ["evaluate"]


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


def _check_settings(q: np.ndarray, na: int, k, n, distance: str, radius, pr_step, pr_cutoffs,
                    map_modes, loo: bool = False):
  """`evaluate`'s checked (k, n, radius, pr_step, map modes); `na`: items a query ranks."""
  what = f"the archive ({na} items{', less the query itself: leave_one_out' if loo else ''})"
  k = hamming.check_int(k, "k", "evaluate", 1, na, what)
  n = hamming.check_int(n, "n", "evaluate", 1, na, what)
  # radius 0: exact-match codes; at most the code length (Hamming only).
  bits = 8 * q.shape[1] if distance == "hamming" else None
  radius = hamming.check_int(radius, "radius", "evaluate", 0, bits,
                             f"the code length ({bits} bits)")
  if pr_step is not None and pr_cutoffs is None:  # 0 (like None): no curve
    pr_step = hamming.check_int(pr_step, "pr_step", "evaluate", 0)
  modes = tuple(map_modes)
  for m in modes:
    if m not in metrics.MAP_MODES:
      raise ValueError(f"evaluate: unknown `map_modes` entry {m!r}; "
                       f"choose from {sorted(metrics.MAP_MODES)}")
  return k, n, radius, pr_step, modes


def _check_label_pair(query_labels, archive_labels, nq: int, na: int):
  """Checked (query labels, archive labels), both integer labels or both multi-hot."""
  ql = _labels(query_labels, "query_labels", nq)
  al = _labels(archive_labels, "archive_labels", na)
  if ql.ndim != al.ndim:
    raise ValueError(f"evaluate: `query_labels` {ql.shape} and `archive_labels` {al.shape} are "
                     "not the same kind (integer labels vs multi-hot)")
  return ql, al


def _check_loo(leave_one_out, nq: int, na: int) -> bool:
  """Leave-one-out needs the archive to be the query rows (their codes may be another view)."""
  if not isinstance(leave_one_out, (bool, np.bool_)):
    raise TypeError(f"evaluate: `leave_one_out` must be True or False; got {leave_one_out!r}")
  if leave_one_out and na != nq:
    raise ValueError(f"evaluate: leave_one_out=True ranks the query set against itself, but "
                     f"`archive_codes` has {na} rows and `query_codes` {nq}")
  return bool(leave_one_out)


def _pr_cutoffs(pr_cutoffs, pr_step, n_archive: int) -> np.ndarray | None:
  """int64 PR cut-offs: `pr_cutoffs` checked, else every `pr_step` plus the end; None: none."""
  if pr_cutoffs is not None:
    c = np.asarray(pr_cutoffs)
    if c.ndim != 1 or c.dtype.kind not in "iu" or not len(c):
      raise ValueError(f"evaluate: `pr_cutoffs` must be a non-empty 1-D list of ints; "
                       f"got {pr_cutoffs!r}")
    if c[0] < 1 or c[-1] > n_archive or (np.diff(c) <= 0).any():
      raise ValueError(f"evaluate: `pr_cutoffs` must increase strictly within 1..{n_archive}")
    return c.astype(np.int64)
  if not pr_step:
    return None
  cutoffs = np.arange(pr_step, n_archive + 1, pr_step, dtype=np.int64)
  if not len(cutoffs) or cutoffs[-1] != n_archive:
    cutoffs = np.append(cutoffs, n_archive)
  return cutoffs


# ----------------------------------------------------------------------------- relevance


class _Relevance:
  """Gains of archive items for blocks of queries, without the [nq, na] matrix."""

  def __init__(self, ql: np.ndarray, al: np.ndarray, loo: bool = False):
    self.multi = ql.ndim == 2
    if self.multi:
      if ql.shape[1] != al.shape[1]:
        raise ValueError(f"evaluate: multi-hot `query_labels` have {ql.shape[1]} classes but "
                         f"`archive_labels` have {al.shape[1]}")
      self.ql, self.al = ql.astype(np.float32), al.astype(np.float32).T.copy()
    else:
      # Archive labels as small ids so a gather by rank order touches few bytes; query
      # ids of the same dtype (an id no archive item has when the label is absent), so
      # the comparison in rank order needs no up-cast.
      classes, ids = np.unique(al, return_inverse=True)
      dtype = np.uint8 if len(classes) < 255 else np.int32
      self.small = ids.astype(dtype)
      pos = np.searchsorted(classes, ql)
      found = (pos < len(classes)) & (classes[np.minimum(pos, len(classes) - 1)] == ql)
      self.qid = np.where(found, pos, 255 if dtype == np.uint8 else -1).astype(dtype)
      # Relevant items per query: the archive size of its class (0 when absent).
      sizes = np.bincount(ids.ravel(), minlength=len(classes))
      self.n_rel = np.where(found, sizes[np.minimum(pos, len(classes) - 1)], 0).astype(np.int64)
      if loo:  # the query's own row is not among its relevant items
        self.n_rel -= self.small == self.qid

  def gains(self, rows: slice) -> np.ndarray:
    """uint8[b, na] gains in archive order (multi-label only)."""
    return np.rint(self.ql[rows] @ self.al).astype(np.uint8)

  def ranked(self, rows: slice, order: np.ndarray):
    """(relevant: bool[b, na], gains or None) in rank order."""
    if self.multi:
      g = np.take_along_axis(self.gains(rows), order, 1)
      return g > 0, g
    # mode="wrap" skips the bounds checks (every index is in range): the same gather,
    # about 1.6x faster than fancy indexing.
    return np.take(self.small, order, mode="wrap") == self.qid[rows, None], None


# ----------------------------------------------------------------------------- evaluate


class _Protocol:
  """Ranks one block of queries and keeps the little each metric needs.

  Per query: the relevance (and scores) of the first ranks, the relevant items
  within each PR cut-off, the ends of the tie group that k cuts and of the
  Hamming ball. `report` computes the metrics from these for all queries at once.
  Blocks run in threads: numpy's sorts and gathers release the GIL.
  """

  def __init__(self, rel, distance, k, n, cutoffs, modes, radius, loo=False):
    self.rel, self.distance, self.loo = rel, distance, loo
    self.k, self.n, self.cutoffs, self.modes, self.radius = k, n, cutoffs, modes, radius

  def __call__(self, rows: slice, scores: np.ndarray) -> dict:
    k, top = self.k, max(self.k, self.n)
    if self.loo:  # each query's own row ranks last (see `_without_self`) and is cut off
      scores = _without_self(scores, rows)
    order = ranking.order(scores, self.distance)[:, :scores.shape[1] - self.loo]
    ranked_rel, ranked_gain = self.rel.ranked(rows, order)
    out = dict(rel_top=ranked_rel[:, :top].copy(),
               scores_top=np.take_along_axis(scores, order[:, :k], 1))
    if self.rel.multi:  # single labels: the class sizes, counted once in `_Relevance`
      out["count"] = np.bitwise_count(np.packbits(ranked_rel, axis=1)).sum(1, dtype=np.int64)
    if self.cutoffs is not None:
      out["found_cut"] = metrics.found_at(ranked_rel, self.cutoffs)
    if "all" in self.modes:
      out["sum_all"] = metrics.sum_precision_all(ranked_rel)
    # The tie group that k cuts ends where the ranked scores pass its value.
    end = _ranks_within(scores, out["scores_top"], out["scores_top"][:, -1], self.distance)
    out["tie_end"], out["tie_found_end"] = end, _prefix_count(ranked_rel, end)
    if self.distance == "hamming":
      within = _ranks_within(scores, out["scores_top"], np.full(len(scores), self.radius),
                             self.distance)
      out["radius_n"], out["radius_found"] = within, _prefix_count(ranked_rel, within)
    if ranked_gain is not None:
      out["gain_top"] = ranked_gain[:, :k].astype(np.int64)
      # The best order of every item ranked (all but the query itself with leave-one-out).
      out["ideal_top"] = np.sort(ranked_gain, axis=1)[:, ::-1][:, :k].astype(np.int64)
    return out


  def report(self, r: dict, ql: np.ndarray, class_names) -> dict:
    """Every metric from `_rank_all`'s joined arrays `r`: numpy scalars, and lists
    of floats for "pr_curve/*"; keys in `rsh.metrics`' order."""
    k, n, modes, cutoffs = self.k, self.n, self.modes, self.cutoffs
    sum_k, found_k = metrics.sum_precision_top(r["rel_top"], k)
    found_n = r["rel_top"][:, :n].sum(1)
    n_rel = r["count"] if self.rel.multi else self.rel.n_rel
    ap_k = metrics.safe_div(sum_k, found_k)
    out = {}
    if "thesis" in modes:
      out[f"map@{k}"] = ap_k.mean()
    if "min_k_rel" in modes:
      out[f"map@{k}/min_k_rel"] = metrics.safe_div(sum_k, np.minimum(k, n_rel)).mean()
    if "all" in modes:
      out["map@all"] = metrics.safe_div(r["sum_all"], n_rel).mean()
    if "hit_only" in modes:
      out[f"map@{k}/hit_only"] = ap_k[found_k > 0].mean() if (found_k > 0).any() else 0.0
    sizes, rel_sizes = _tie_groups(r["scores_top"], r["rel_top"], r["tie_end"],
                                   r["tie_found_end"])
    ap_tie = metrics.tie_aware_average_precision(sizes, rel_sizes, k, "thesis")
    out[f"map@{k}/tie_aware"] = ap_tie.mean()
    out[f"precision@{n}"] = (found_n / n).mean()
    out[f"recall@{n}"] = metrics.safe_div(found_n, n_rel).mean()
    if self.distance == "hamming":
      out[f"precision@r{self.radius}"] = metrics.safe_div(r["radius_found"], r["radius_n"]).mean()
    if "gain_top" in r:  # multi-hot: gain = shared labels
      gain, ideal = r["gain_top"], r["ideal_top"]
    else:
      gain = r["rel_top"][:, :k].astype(np.int64)
      ideal = (np.arange(k)[None, :] < n_rel[:, None]).astype(np.int64)
    out[f"ndcg@{k}"] = metrics.safe_div(metrics.dcg(gain), metrics.dcg(ideal)).mean()
    out[f"acg@{k}"] = metrics.acg_at(gain, k).mean()
    out.update(_classwise(ap_k, ql, f"classwise_map@{k}", class_names))
    out.update(_classwise(ap_tie, ql, f"classwise_map@{k}/tie_aware", class_names))
    if cutoffs is not None:
      out["pr_curve/cutoffs"] = [int(c) for c in cutoffs]
      out["pr_curve/precision"] = [float(v) for v in (r["found_cut"] / cutoffs).mean(0)]
      out["pr_curve/recall"] = [float(v) for v in
                                metrics.safe_div(r["found_cut"], n_rel[:, None]).mean(0)]
    return out


def _without_self(scores: np.ndarray, rows: slice) -> np.ndarray:
  """A copy of `scores` with query i's own row worse than any item: the dtype's largest
  distance (above the code length: `hamming.distance_dtype`) or a cosine of -inf. Ranked
  last, it is in no tie group, radius or cut-off <= na - 1; the rest keep their order."""
  s = np.array(scores)
  worst = np.iinfo(s.dtype).max if s.dtype.kind == "u" else -np.inf
  s[np.arange(len(s)), np.arange(rows.start, rows.stop)] = worst
  return s


def _prefix_count(rel: np.ndarray, c: np.ndarray) -> np.ndarray:
  """int64[b]: True values among the first c[i] of row i (one masked pass over max(c) ranks)."""
  m = int(c.max(initial=0))
  head = rel[:, :m] & (np.arange(m) < c[:, None])
  return np.bitwise_count(np.packbits(head, axis=1)).sum(1, dtype=np.int64)


def _ranks_within(scores: np.ndarray, scores_top: np.ndarray, value: np.ndarray,
                  distance: str) -> np.ndarray:
  """int64[b]: how many ranks score at least as well as `value[i]` in row i.

  Scores are monotone along the ranking, so this is a count over the row in any
  order. Where `value` is passed within the first ranks (`scores_top`, the k best
  scores of each row) the count is read there; other rows count their whole row of
  `scores` (one comparison pass, counted 8 per byte).
  """
  value = np.asarray(value)
  if distance == "hamming":
    value = np.minimum(value, np.iinfo(scores.dtype).max).astype(scores.dtype)
    inside_top = scores_top <= value[:, None]
  else:
    inside_top = scores_top >= value[:, None]
  out = inside_top.sum(1, dtype=np.int64)
  full = np.flatnonzero(inside_top[:, -1])  # the k-th rank is inside: the run may go on
  if len(full):
    s, v = scores[full], value[full, None]
    inside = (s <= v) if distance == "hamming" else (s >= v)
    out[full] = np.bitwise_count(np.packbits(inside, axis=1)).sum(1, dtype=np.int64)
  return out


def _tie_groups(scores_top: np.ndarray, rel_top: np.ndarray, end, found_end):
  """Tie groups reaching into the top k, for `metrics.tie_aware_average_precision`.

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
             radius: int = 2, threads: int | None = None, leave_one_out: bool = False) -> dict:
  """Scores a retrieval protocol: every metric of `rsh.metrics`' docstring.

  Args:
    query_codes: uint8[nq, l // 8] packed codes; or bits [nq, l] (bool, {0, 1}, ±1),
      packed here; or float[nq, f] features with `distance="cosine"`.
    archive_codes: the same for the archive, [na, ...].
    query_labels: int[nq] class labels or {0,1}[nq, c] multi-hot.
    archive_labels: int[na] or {0,1}[na, c], the same kind as `query_labels`.
    k: MAP / NDCG / ACG cut-off (<= na). n: precision / recall cut-off (<= na).
    distance: "hamming" or "cosine".
    class_names: names for the class-wise keys (indexed by label).
    pr_step: PR curve every `pr_step` (>= 1) retrieved items, plus the end; None or 0: no
      curve.
    pr_cutoffs: explicit PR cut-offs (increasing ints in 1..na); overrides `pr_step`.
    map_modes: which MAP conventions to report (see `metrics.MAP_MODES`).
    radius: Hamming radius of `precision@r{radius}` (Hamming only), 0..l; 0 counts the
      exact-match codes.
    threads: numpy worker threads ranking query blocks (default: all usable cores).
    leave_one_out: the archive is the query set, row for row (same labels; its codes may
      come from another view): query i ranks it without row i, for every metric. k, n and
      the PR cut-offs are then checked against na - 1.

  Returns:
    dict of python floats, and lists of floats for "pr_curve/*".
  """
  q, a = ranking.check_inputs(query_codes, archive_codes, distance, "evaluate")
  loo = _check_loo(leave_one_out, len(q), len(a))
  k, n, radius, pr_step, modes = _check_settings(q, len(a) - loo, k, n, distance, radius,
                                                 pr_step, pr_cutoffs, map_modes, loo)
  ql, al = _check_label_pair(query_labels, archive_labels, len(q), len(a))
  if loo and not np.array_equal(ql, al):
    raise ValueError("evaluate: leave_one_out=True needs `archive_labels` equal to "
                     "`query_labels` row for row (the archive is the query set)")
  cutoffs = _pr_cutoffs(pr_cutoffs, pr_step, len(a) - loo)
  protocol = _Protocol(_Relevance(ql, al, loo), distance, k, n, cutoffs, modes, radius, loo)
  out = protocol.report(_rank_all(protocol, q, a, distance, threads), ql, class_names)
  return {key: (float(v) if np.ndim(v) == 0 else v) for key, v in out.items()}


def _rank_all(protocol: _Protocol, q: np.ndarray, a: np.ndarray, distance: str,
              threads: int | None) -> dict:
  """`protocol` run on every block of queries; its arrays joined over all queries.

  Blocks rank in parallel, a bounded number in flight; XLA computes the next
  distances on its own threads meanwhile.
  """
  parts = []
  workers = threads or _threads()
  if workers == 1:
    parts = [protocol(rows, s) for rows, s in ranking.score_blocks(q, a, distance)]
  else:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      pending = collections.deque()
      for rows, s in ranking.score_blocks(q, a, distance):
        pending.append(pool.submit(protocol, rows, s))
        if len(pending) >= 2 * workers:
          parts.append(pending.popleft().result())
      parts += [f.result() for f in pending]
  return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


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
