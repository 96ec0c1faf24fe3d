"""rsh.search.protocol_streamed against brute force and rsh.protocol.evaluate."""

import itertools
import math

import numpy as np
import pytest

from rsh import metrics
from rsh import protocol
from rsh.search import codefile
from rsh.search import distance_counts
from rsh.search import protocol_streamed as ps

# What evaluate reports that the counts cannot give (ties by index beyond the top k).
NOT_STREAMED = {"map@all", "pr_curve/cutoffs", "pr_curve/precision", "pr_curve/recall"}


def data(rng, nq, na, nbytes, multi, tied, classes=5):
  """(q, a, ql, al): tied codes are a few base codes repeated (many equal distances)."""
  if tied:
    base = rng.integers(0, 256, (6, nbytes), dtype=np.uint8)
    q, a = base[rng.integers(0, 6, nq)], base[rng.integers(0, 6, na)]
  else:
    q = rng.integers(0, 256, (nq, nbytes), dtype=np.uint8)
    a = rng.integers(0, 256, (na, nbytes), dtype=np.uint8)
  if multi:
    return q, a, (rng.random((nq, classes)) < 0.3).astype(np.uint8), \
        (rng.random((na, classes)) < 0.3).astype(np.uint8)
  # Query class 0 has no archive item; archive class `classes` no query.
  return q, a, rng.integers(0, classes, nq), rng.integers(1, classes + 1, na)


def brute_distances(q, a):
  return np.unpackbits(q[:, None, :] ^ a[None, :, :], axis=-1).sum(-1).astype(np.int64)


def brute_counts(q, a, ql, al):
  """int64[nq, gains + 1, l + 1] one (query, item) pair at a time."""
  d, g = brute_distances(q, a), metrics.relevance(ql, al).astype(np.int64)
  gains = ql.shape[1] if ql.ndim == 2 else 1
  out = np.zeros((len(q), gains + 1, 8 * q.shape[1] + 1), np.int64)
  for i in range(len(q)):
    for j in range(len(a)):
      out[i, g[i, j], d[i, j]] += 1
  return out


@pytest.mark.parametrize("nbytes,multi,classes,chunk,pairs", [
    (1, False, 5, 37, True), (8, False, 5, 100, True), (32, False, 5, 64, False),
    (2, True, 5, 45, True), (8, True, 19, 1000, False)])
def test_counts_and_top_equal_brute_force(nbytes, multi, classes, chunk, pairs):
  """Both ways of counting: two keys a value (small key ranges) and one (256 bits; 64
  bits with 19 multi-hot labels, BigEarthNet's)."""
  rng = np.random.default_rng(nbytes)
  q, a, ql, al = data(rng, 7, 230, nbytes, multi, tied=True, classes=classes)
  assert distance_counts._Counter(q, ql, multi, "test").pairs == pairs
  c = distance_counts.count_by_distance(q, a, ql, al, top=40, chunk=chunk, progress=False)
  assert c.by_gain_distance.dtype == np.int64
  np.testing.assert_array_equal(c.by_gain_distance, brute_counts(q, a, ql, al))
  d = brute_distances(q, a)
  order = np.argsort(d, axis=1, kind="stable")[:, :40]  # ties by archive index
  np.testing.assert_array_equal(c.indices, order)
  np.testing.assert_array_equal(c.distances, np.take_along_axis(d, order, 1))
  np.testing.assert_array_equal(c.gains, np.take_along_axis(metrics.relevance(ql, al), order, 1))


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("nbytes,tied,chunk,na,k,n", [
    (1, True, 53, 400, 25, 9), (2, False, 128, 400, 25, 9), (8, True, 97, 400, 25, 9),
    (16, False, 1000, 400, 25, 9),
    (1, True, 7, 60, 60, 60),  # k past most queries' relevant items: min_k_rel's min
    (4, True, 19, 120, 5, 30)])  # n > k
def test_same_keys_as_evaluate(multi, nbytes, tied, chunk, na, k, n):
  rng = np.random.default_rng(10 * nbytes + multi + na)
  q, a, ql, al = data(rng, 11, na, nbytes, multi, tied)
  radius = min(3, 8 * nbytes)
  want = protocol.evaluate(q, a, ql, al, k=k, n=n, radius=radius, class_names=list("abcdefg"))
  got = ps.evaluate_streamed(q, a, ql, al, k=k, n=n, radius=radius, chunk=chunk,
                             class_names=list("abcdefg"), progress=False)
  assert set(want) - set(got) == NOT_STREAMED
  assert {"map@all/tie_aware", f"recall@r{radius}", "pr_radius/precision", "n_relevant"} <= set(got)
  for key in set(want) & set(got):
    assert got[key] == pytest.approx(want[key], abs=1e-6), key
  assert isinstance(got[f"map@{k}"], float)


def test_radius_metrics_equal_brute_force():
  rng = np.random.default_rng(3)
  q, a, ql, al = data(rng, 9, 300, 1, multi=True, tied=False)
  got = ps.evaluate_streamed(q, a, ql, al, k=5, radius=2, chunk=70, progress=False)
  d, rel = brute_distances(q, a), metrics.relevance(ql, al) > 0
  n_rel = rel.sum(1)
  assert got["n_relevant"] == n_rel.tolist()
  for r in range(9):
    want = metrics.precision_within_radius(d, rel, r).mean()
    assert got["pr_radius/precision"][r] == pytest.approx(want, abs=1e-12)
    recall = metrics.safe_div((rel & (d <= r)).sum(1), n_rel).mean()
    assert got["pr_radius/recall"][r] == pytest.approx(recall, abs=1e-12)
  assert got["recall@r2"] == pytest.approx(got["pr_radius/recall"][2], abs=1e-15)
  assert got["pr_radius/recall"][-1] == pytest.approx((n_rel > 0).mean())


def expected_ap_by_enumeration(d, rel, k):
  """(E[thesis AP@k], E[AP@all]) per query over every order of the archive's ties."""
  perms = np.array(list(itertools.permutations(range(d.shape[1]))))
  out_k, out_all = [], []
  for di, ri in zip(d, rel):
    order = np.argsort(di[None, :] * len(di) + perms, axis=1)  # by distance, then random
    ranked = ri[order]
    out_k.append(metrics.average_precision(ranked, k, "thesis").mean())
    out_all.append(metrics.average_precision(ranked, mode="all").mean())
  return np.array(out_k), np.array(out_all)


@pytest.mark.parametrize("multi", [False, True])
def test_tie_aware_is_the_exact_expectation(multi):
  """Seven archive items, every one of the 7! tie orders: the closed form is E[AP]."""
  rng = np.random.default_rng(5 + multi)
  q, a, ql, al = data(rng, 4, 7, 1, multi, tied=True, classes=3)
  d, rel = brute_distances(q, a), metrics.relevance(ql, al) > 0
  for k in (1, 3, 7):
    want_k, want_all = expected_ap_by_enumeration(d, rel, k)
    got = ps.evaluate_streamed(q, a, ql, al, k=k, n=1, chunk=3, progress=False)
    assert got[f"map@{k}/tie_aware"] == pytest.approx(want_k.mean(), abs=1e-12)
    assert got["map@all/tie_aware"] == pytest.approx(want_all.mean(), abs=1e-12)
    counts = distance_counts.count_by_distance(q, a, ql, al, top=1, progress=False)
    ap_k, ap_all = ps.tie_aware_ap(counts.items, counts.relevant, k)
    np.testing.assert_allclose(ap_k, want_k, atol=1e-12)
    np.testing.assert_allclose(ap_all, want_all, atol=1e-12)


def test_tie_aware_equals_metrics_on_large_groups():
  """Groups past the harmonic table (_TABLE): the series agrees with metrics' cumsum."""
  rng = np.random.default_rng(7)
  items = rng.integers(0, 3000, (6, 17)) * (rng.random((6, 17)) < 0.7)
  relevant = rng.binomial(items, 0.3)
  assert items.sum(1).max() > 4 * ps._TABLE
  for k in (1, 50, 2500, 20000):
    ap_k, ap_all = ps.tie_aware_ap(items, relevant, k)
    want_k = metrics.tie_aware_average_precision(items, relevant, k, "thesis")
    np.testing.assert_allclose(ap_k, want_k, rtol=1e-9, atol=1e-12)
  want_all = metrics.tie_aware_average_precision(items, relevant, None, "all")
  np.testing.assert_allclose(ap_all, want_all, rtol=1e-9)


@pytest.mark.parametrize("c", [0, 5, ps._TABLE - 3, ps._TABLE, 70000, 10**9])
@pytest.mark.parametrize("m", [0, 1, 7, 90000])
def test_harmonic_gap(c, m):
  want = math.fsum(1.0 / t for t in range(c + 1, c + m + 1))
  assert ps._harmonic_gap(np.array([c]), np.array([m]))[0] == pytest.approx(want, rel=1e-12,
                                                                              abs=1e-300)


def test_code_file_and_memmap_labels(tmp_path):
  rng = np.random.default_rng(9)
  q, a, ql, al = data(rng, 6, 333, 8, multi=False, tied=True)
  with codefile.create(tmp_path / "a.rsh", len(a), 64) as w:
    w.append(a)
  np.save(tmp_path / "labels.npy", al.astype(np.int16))
  labels = np.load(tmp_path / "labels.npy", mmap_mode="r")
  want = ps.evaluate_streamed(q, a, ql, al, k=20, chunk=50, progress=False)
  for archive in (codefile.open_codes(tmp_path / "a.rsh"), tmp_path / "a.rsh",
                  str(tmp_path / "a.rsh"), codefile.open_codes(tmp_path / "a.rsh").codes):
    assert ps.evaluate_streamed(q, archive, ql, labels, k=20, chunk=128, progress=False) == want


def test_bad_inputs():
  rng = np.random.default_rng(11)
  q, a, ql, al = data(rng, 4, 50, 2, multi=False, tied=False)
  mq, ma, mql, mal = data(rng, 4, 50, 2, multi=True, tied=False)
  run = lambda *args, **kw: ps.evaluate_streamed(*args, progress=False, **kw)
  with pytest.raises(ValueError, match="50 archive codes"):
    run(q, a, ql, al[:-1], k=3)
  with pytest.raises(ValueError, match="4 query codes"):
    run(q, a, ql[:3], al, k=3)
  with pytest.raises(ValueError, match="16-bit codes but `archive_codes` 24-bit"):
    run(q, np.zeros((50, 3), np.uint8), ql, al, k=3)
  with pytest.raises(ValueError, match="not the same kind"):
    run(q, a, ql, mal, k=3)
  with pytest.raises(ValueError, match="not the same kind"):
    run(mq, ma, mql, mal[:, :3], k=3)
  bad = mal.copy()
  bad[47, 0] = 2  # in the last chunk: found when that chunk is read
  with pytest.raises(ValueError, match="only 0 and 1"):
    run(mq, ma, mql, bad, k=3, chunk=20)
  with pytest.raises(TypeError, match="integers"):
    run(q, a, ql, al.astype(np.float32), k=3)
  with pytest.raises(ValueError, match="larger than the archive"):
    run(q, a, ql, al, k=51)
  with pytest.raises(ValueError, match="larger than the code length"):
    run(q, a, ql, al, k=3, radius=17)
  with pytest.raises(TypeError, match="uint8"):
    run(q, a.astype(np.int32), ql, al, k=3)
  with pytest.raises(ValueError, match="empty"):
    run(q, a[:0], ql, al[:0], k=3)
  with pytest.raises(ValueError, match="chunk"):
    run(q, a, ql, al, k=3, chunk=0)
