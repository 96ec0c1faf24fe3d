"""rsh.ranking against a plain stable argsort (ties by index)."""

from hypothesis import given, settings, strategies as st
import numpy as np

from rsh import ranking

FAST = settings(max_examples=40, deadline=None)


@FAST
@given(r=st.integers(0, 6), c=st.integers(1, 80), k=st.integers(1, 90), values=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_top_k_equals_stable_argsort(r, c, k, values, seed):
  rng = np.random.default_rng(seed)
  scores = rng.integers(0, values, (r, c))  # few values: ties everywhere
  want_asc = np.argsort(scores, axis=1, kind="stable")
  want_desc = np.argsort(-scores, axis=1, kind="stable")
  for x in (scores.astype(np.uint8), scores.astype(np.float32)):
    np.testing.assert_array_equal(ranking.top_k_ascending(x, k), want_asc[:, :k])
  for x in (scores.astype(np.int32), scores.astype(np.float32)):  # signed: it negates
    np.testing.assert_array_equal(ranking.top_k_descending(x, k), want_desc[:, :k])
  np.testing.assert_array_equal(ranking.top_k_ascending(scores), want_asc)
  np.testing.assert_array_equal(ranking.top_k_descending(scores.astype(np.float32)), want_desc)
  if k < c:
    mask = np.zeros((r, c), bool)
    np.put_along_axis(mask, want_desc[:, :k], True, 1)
    np.testing.assert_array_equal(ranking.top_k_mask(scores, k), mask)
    kth = ranking.kth_largest_count(scores, k, values - 1) if r else None
    if r:
      np.testing.assert_array_equal(kth, np.sort(scores, axis=1)[:, c - k])
      np.testing.assert_array_equal(ranking.top_k_mask(scores, k, kth), mask)
      kth2, need = ranking.kth_largest_count(scores, k, values - 1, return_need=True)
      np.testing.assert_array_equal(kth2, kth)
      np.testing.assert_array_equal(need, k - (scores > kth[:, None]).sum(1))
      assert ((need >= 1) & (need <= (scores == kth[:, None]).sum(1))).all()


@FAST
@given(nq=st.integers(1, 9), n=st.integers(1, 40), f=st.integers(1, 5), rows=st.integers(1, 10),
       cols=st.integers(1, 50), seed=st.integers(0, 2**16))
def test_cosine_blocks_tile_the_score_matrix(nq, n, f, rows, cols, seed):
  rng = np.random.default_rng(seed)
  q = rng.integers(-2, 3, (nq, f)).astype(np.float32)  # some zero rows
  db = rng.integers(-2, 3, (n, f)).astype(np.float32)
  norm_q = np.linalg.norm(q, axis=1, keepdims=True)
  norm_db = np.linalg.norm(db, axis=1)
  cos = (q @ db.T) / np.where(norm_q > 0, norm_q, 1) / np.where(norm_db > 0, norm_db, 1)
  for unit, want in ((True, cos), (False, cos * norm_q)):
    got = np.full((nq, n), np.nan, np.float32)
    for r0, c0, s in ranking.cosine_blocks(q, db, rows, cols, normalise_queries=unit):
      assert s.dtype == np.float32
      got[r0:r0 + s.shape[0], c0:c0 + s.shape[1]] = s
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(ranking.normalise_rows(q), axis=1),
                             (norm_q[:, 0] > 0).astype(np.float32), rtol=1e-6)
