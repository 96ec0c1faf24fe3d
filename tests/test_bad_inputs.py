"""Bad input to the retrieval API: one clear error naming the argument.

`rsh.protocol.evaluate`, `rsh.metrics`, `rsh.search`, `rsh.hamming`, `rsh.ranking`
and `rsh.shallow` (LSH / ITQ / CCA-ITQ fit and encode). Each case checks the
exception type and that the message names the culprit; the positive cases check
what must work (radius 0: the exact-match codes, against a numpy loop).
"""

import numpy as np
import pytest

from rsh import hamming
from rsh import metrics
from rsh import protocol
from rsh import ranking
from rsh import search
from rsh import shallow


def _codes(n=12, nbytes=2, seed=0):
  """Packed codes with many repeats (exact matches) and their integer labels."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (4, nbytes), dtype=np.uint8)
  return base[rng.integers(0, 4, n)], rng.integers(0, 3, n)


def _exact_match_precision(q, a, ql, al):
  """Mean over queries of relevant / retrieved among archive codes equal to the query."""
  out = []
  for i in range(len(q)):
    hits = [j for j in range(len(a)) if (q[i] == a[j]).all()]
    out.append(np.mean([ql[i] == al[j] for j in hits]) if hits else 0.0)
  return float(np.mean(out))


# ----------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(k=0), ValueError, r"evaluate: `k` must be an int in 1\.\.12; got 0"),
    (dict(k=-3), ValueError, r"`k` must be an int in 1\.\.12; got -3"),
    (dict(n=0), ValueError, r"evaluate: `n` must be an int in 1\.\.12; got 0"),
    (dict(k=13), ValueError, r"`k`=13 is larger than the archive \(12 items\)"),
    (dict(n=50), ValueError, r"`n`=50 is larger than the archive \(12 items\)"),
    (dict(k=2.5), TypeError, r"`k` must be an int; got float 2\.5"),
    (dict(n=True), TypeError, r"`n` must be an int; got bool"),
    (dict(radius=-1), ValueError, r"`radius` must be an int in 0\.\.16; got -1"),
    (dict(radius=17), ValueError, r"`radius`=17 is larger than the code length \(16 bits\)"),
    (dict(pr_step=-5), ValueError, r"`pr_step` must be an int >= 0; got -5"),
    (dict(pr_step=2.5), TypeError, r"`pr_step` must be an int"),
], ids=["k0", "k_negative", "n0", "k_above_archive", "n_above_archive", "k_float", "n_bool",
        "radius_negative", "radius_above_bits", "pr_step_negative", "pr_step_float"])
def test_evaluate_rejects_bad_cutoffs(kwargs, error, match):
  a, al = _codes()
  args = dict(k=3, n=2) | kwargs
  with pytest.raises(error, match=match):
    protocol.evaluate(a[:4], a, al[:4], al, **args)


@pytest.mark.parametrize("case, error, match", [
    ("labels_length", ValueError, r"`archive_labels` has 11 rows but there are 12 codes"),
    ("code_length", ValueError, r"`query_codes` have 8 bits but `archive_codes` have 16"),
    ("not_bits", ValueError, r"`query_codes` is neither packed uint8 codes nor bits"),
    ("empty_queries", ValueError, r"`query_codes` is empty"),
    ("one_d_codes", ValueError, r"`query_codes`.*2-D"),
], ids=lambda v: v if isinstance(v, str) and v.isidentifier() else "")
def test_evaluate_rejects_bad_codes_and_labels(case, error, match):
  a, al = _codes()
  q, ql = a[:4], al[:4]
  if case == "labels_length":
    al = al[:-1]
  elif case == "code_length":
    q = q[:, :1]
  elif case == "not_bits":
    q = np.full((4, 16), 0.3)
  elif case == "empty_queries":
    q, ql = q[:0], ql[:0]
  elif case == "one_d_codes":
    q = q[0]
  with pytest.raises(error, match=match):
    protocol.evaluate(q, a, ql, al, k=3, n=2)


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_radius_zero_is_the_exact_matches(seed):
  a, al = _codes(30, 2, seed)
  q, ql = a[:7], al[:7]
  r = protocol.evaluate(q, a, ql, al, k=5, n=3, radius=0, pr_step=None)
  assert r["precision@r0"] == pytest.approx(_exact_match_precision(q, a, ql, al), abs=1e-12)
  # The whole code length is allowed too: every archive item is within it.
  full = protocol.evaluate(q, a, ql, al, k=5, n=3, radius=16, pr_step=None)
  want = np.mean([(al == ql[i]).mean() for i in range(len(q))])
  assert full["precision@r16"] == pytest.approx(want, abs=1e-12)


# ----------------------------------------------------------------------------- metrics


_REL = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], bool)


@pytest.mark.parametrize("call, error, match", [
    pytest.param(lambda: metrics.precision_at(_REL, 0),
                 ValueError, r"precision_at: `n` must be an int in 1\.\.4; got 0",
                 id="precision_at_n0"),
    pytest.param(lambda: metrics.precision_at(_REL, 5),
                 ValueError, r"`n`=5 is larger than the ranks per query \(4\)",
                 id="precision_at_n_above_ranks"),
    pytest.param(lambda: metrics.recall_at(_REL, -1),
                 ValueError, r"recall_at: `n` must be an int in 1\.\.4; got -1",
                 id="recall_at_negative_n"),
    pytest.param(lambda: metrics.average_precision(_REL, 0),
                 ValueError, r"average_precision: `k` must be an int in 1\.\.4; got 0",
                 id="average_precision_k0"),
    pytest.param(lambda: metrics.average_precision(_REL[0], 2),
                 ValueError, r"`ranked_relevance` must be 2-D.*got shape \(4,\)",
                 id="average_precision_1d"),
    pytest.param(lambda: metrics.average_precision(_REL, 2, n_relevant=[1, 2, 3]),
                 ValueError, r"`n_relevant` must have one entry per query.*got shape \(3,\)",
                 id="average_precision_n_relevant_length"),
    pytest.param(lambda: metrics.acg_at(_REL, 0),
                 ValueError, r"acg_at: `k` must be an int in 1\.\.4; got 0", id="acg_at_k0"),
    pytest.param(lambda: metrics.ndcg_at(_REL, 3, _REL[:1]),
                 ValueError, r"ndcg_at: `ideal_gain` must be \[2, >= 3\]", id="ndcg_at_ideal_rows"),
    pytest.param(lambda: metrics.pr_curve(_REL, []),
                 ValueError, r"pr_curve: `cutoffs` must be a non-empty", id="pr_curve_no_cutoffs"),
    pytest.param(lambda: metrics.pr_curve(_REL, [2, 9]),
                 ValueError, r"pr_curve: `cutoffs` must increase strictly within 1\.\.4",
                 id="pr_curve_cutoff_above_ranks"),
    pytest.param(lambda: metrics.precision_within_radius(np.zeros((2, 4), int), _REL, -1),
                 ValueError, r"`radius` must be an int >= 0; got -1", id="radius_negative"),
    pytest.param(lambda: metrics.precision_within_radius(np.zeros((2, 3), int), _REL, 1),
                 ValueError, r"`relevant` \(2, 4\) and `distances` \(2, 3\)", id="radius_shapes"),
    pytest.param(lambda: metrics.tie_aware_average_precision([[2, 2]], [[1]], 2),
                 ValueError, r"`group_relevant` \(1, 1\) and `group_sizes` \(1, 2\)",
                 id="tie_aware_shapes"),
    pytest.param(lambda: metrics.relevance(np.zeros((2, 2, 2)), np.zeros((3, 2, 2))),
                 ValueError, r"relevance: `query_labels` must be int\[n\] labels",
                 id="relevance_3d"),
    pytest.param(lambda: metrics.sum_precision_top(_REL, 0),
                 ValueError, r"sum_precision_top: `k` must be an int in 1\.\.4; got 0",
                 id="sum_precision_top_k0"),
])
def test_metrics_reject_bad_arguments(call, error, match):
  with pytest.raises(error, match=match):
    call()


def test_precision_within_radius_zero_counts_equal_codes():
  a, al = _codes(20, 1, 3)
  q, ql = a[:5], al[:5]
  d = hamming.hamming_distances(q, a)
  got = metrics.precision_within_radius(d, ql[:, None] == al[None, :], 0).mean()
  assert got == pytest.approx(_exact_match_precision(q, a, ql, al), abs=1e-12)


# ----------------------------------------------------------------------------- search, hamming


@pytest.mark.parametrize("call, error, match", [
    pytest.param(lambda db: search.radius_search(db[:2], db, 17),
                 ValueError, r"radius_search: `radius`=17 is larger than the code length \(16 bits",
                 id="radius_above_bits"),
    pytest.param(lambda db: search.radius_search(db[:2], db, 1.5),
                 TypeError, r"radius_search: `radius` must be an int", id="radius_float"),
    pytest.param(lambda db: search.search(db[:2].astype(np.float32), db, 1),
                 TypeError, r"search: `q` must be packed codes uint8", id="float_queries"),
    pytest.param(lambda db: search.search(db[:2, :1], db, 1),
                 ValueError, r"`q` has 8-bit codes but `db` has 16-bit", id="code_length"),
    pytest.param(lambda db: search.search(db[0], db, 1),
                 ValueError, r"search: `q` must be 2-D packed codes", id="one_d_queries"),
    pytest.param(lambda db: search.search(db[:2], db, -2),
                 ValueError, r"search: `k` must be >= 1; got -2", id="k_negative"),
    pytest.param(lambda db: search.cosine_search(np.ones((2, 3)), np.ones((0, 3)), 1),
                 ValueError, r"cosine_search: `db` is empty", id="cosine_empty_archive"),
    pytest.param(lambda db: hamming.num_bits(db[0]),
                 ValueError, r"num_bits: `codes` must be 2-D", id="num_bits_1d"),
    pytest.param(lambda db: hamming.num_bits(np.ones((2, 16))),
                 TypeError, r"num_bits: `codes` must be packed codes uint8", id="num_bits_float"),
    pytest.param(lambda db: hamming.pack_codes(np.ones((2, 12))),
                 ValueError, r"code length l=12 of `x` is not a positive multiple of 8",
                 id="pack_12_bits"),
    pytest.param(lambda db: hamming.pack_codes(np.full((2, 8), 2)),
                 ValueError, r"pack_codes: `x` must hold bits", id="pack_not_bits"),
])
def test_search_and_hamming_reject_bad_arguments(call, error, match):
  db, _ = _codes()
  with pytest.raises(error, match=match):
    call(db)


def test_radius_search_zero_returns_exactly_the_equal_codes():
  db, _ = _codes(25, 2, 4)
  q = db[:6]
  dists, idxs = search.radius_search(q, db, 0)
  for i in range(len(q)):
    want = [j for j in range(len(db)) if (db[j] == q[i]).all()]
    np.testing.assert_array_equal(idxs[i], want)
    np.testing.assert_array_equal(dists[i], np.zeros(len(want)))


# ----------------------------------------------------------------------------- ranking


@pytest.mark.parametrize("call, error, match", [
    pytest.param(lambda: ranking.top_k_ascending(np.zeros((2, 5)), -1),
                 ValueError, r"top_k_ascending: `k` must be an int >= 1; got -1",
                 id="ascending_k_negative"),
    pytest.param(lambda: ranking.top_k_descending(np.zeros((2, 5)), 0),
                 ValueError, r"top_k_descending: `k` must be an int >= 1; got 0",
                 id="descending_k0"),
    pytest.param(lambda: ranking.top_k_descending(np.zeros(5), 2),
                 ValueError, r"top_k_descending: `scores` must be 2-D", id="descending_1d"),
    pytest.param(lambda: ranking.top_k_mask(np.zeros((2, 5)), 6),
                 ValueError, r"top_k_mask: `k`=6 is larger than the columns of `scores` \(5\)",
                 id="mask_k_above_columns"),
    pytest.param(lambda: ranking.order(np.zeros((2, 5)), "l2"),
                 ValueError, r"order: `distance` must be 'hamming' or 'cosine'; got 'l2'",
                 id="order_distance"),
    pytest.param(lambda: ranking.check_features(np.ones(3), "q", "f"),
                 ValueError, r"f: `q` must be 2-D", id="features_1d"),
])
def test_ranking_rejects_bad_arguments(call, error, match):
  with pytest.raises(error, match=match):
    call()


# ----------------------------------------------------------------------------- shallow


def _features(n=40, d=12, seed=0):
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _with_nan():
  x = _features()
  x[3, 5] = np.nan
  return x


@pytest.mark.parametrize("call, error, match", [
    pytest.param(lambda x: shallow.fit_itq(_with_nan(), 8, 0, 2),
                 ValueError, r"pca: `x` contains NaN or infinite values", id="itq_nan"),
    pytest.param(lambda x: shallow.fit_lsh(_with_nan(), 8, 0),
                 ValueError, r"fit_lsh: `x` contains NaN", id="lsh_nan"),
    pytest.param(lambda x: shallow.fit_cca_itq(x, _with_nan(), 4, 0, 2),
                 ValueError, r"cca: `y` contains NaN", id="cca_itq_nan"),
    pytest.param(lambda x: shallow.fit_lsh(x[0], 8, 0),
                 ValueError, r"fit_lsh: `x` must be rows \[n, \.\.\.\].*got shape \(12,\)",
                 id="lsh_1d"),
    pytest.param(lambda x: shallow.fit_itq(x[:0], 8, 0, 2),
                 ValueError, r"pca: `x` is empty", id="itq_empty"),
    pytest.param(lambda x: shallow.fit_itq(x, 8.5, 0, 2),
                 TypeError, r"pca: `bits` must be an int; got float", id="itq_float_bits"),
    pytest.param(lambda x: shallow.fit_itq(x, 0, 0, 2),
                 ValueError, r"pca: bits must be >= 1; got `bits`=0", id="itq_zero_bits"),
    pytest.param(lambda x: shallow.fit_itq(x, 8, 0, -1),
                 ValueError, r"fit_itq: `iterations` must be an int >= 0; got -1",
                 id="itq_negative_iterations"),
    pytest.param(lambda x: shallow.cca(x, x[:-1], 4),
                 ValueError, r"cca: `x` has 40 rows and `y` 39", id="cca_unpaired"),
    pytest.param(lambda x: shallow.cca(x, x, 4, reg=-1.0),
                 ValueError, r"cca: `reg` must be a finite number >= 0", id="cca_negative_reg"),
    pytest.param(lambda x: shallow.project(shallow.fit_lsh(x, 8, 0), x[:, :10]),
                 ValueError, r"project: rows of `x` have 10 values .* fitted on 12",
                 id="project_feature_size"),
    pytest.param(lambda x: shallow.project(shallow.fit_lsh(x, 8, 0), x[0]),
                 ValueError, r"project: `x` must be rows \[n, \.\.\.\]", id="project_1d"),
    pytest.param(lambda x: shallow.project(shallow.fit_lsh(x, 8, 0), _with_nan()),
                 ValueError, r"project: `x` contains NaN", id="project_nan"),
    pytest.param(lambda x: shallow.pool_rows(np.zeros((2, 4, 4, 1)), 0),
                 ValueError, r"pool_rows: `size` must be an int >= 1; got 0", id="pool_size0"),
])
def test_shallow_rejects_bad_arguments(call, error, match):
  with pytest.raises(error, match=match):
    call(_features())
