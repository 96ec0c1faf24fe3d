"""rsh.similarity and rsh.spectral against hand-worked examples and slow obvious references."""

import logging

import hypothesis
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import strategies as st

from rsh import similarity
from rsh.similarity import knn as sim_knn
from rsh.similarity import packed as sim_packed
from rsh import spectral as rspectral


# ---------------------------------------------------------------------------
# Slow, obvious references.

def dense_two_stage_knn(x, k1, k2):
  """S1, S2, S as int8[n, n] of +-1, straight from eq. 5.10 - 5.12.

  Self is each point's first neighbour in both stages; ties go to the lower
  index (stable argsort). Cosines are rounded to 9 decimals so that exactly
  equal cosines (duplicates, integer features) tie here too.
  """
  x = np.asarray(x, np.float64)
  n = len(x)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  xn = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
  cos = np.round(xn @ xn.T, 9)
  np.fill_diagonal(cos, np.inf)
  s1 = -np.ones((n, n), np.int8)
  np.put_along_axis(s1, np.argsort(-cos, axis=1, kind="stable")[:, :k1], 1, axis=1)
  hamming = (s1[:, None, :] != s1[None, :, :]).sum(-1)   # differing neighbours
  np.fill_diagonal(hamming, -1)
  s2 = -np.ones((n, n), np.int8)
  np.put_along_axis(s2, np.argsort(hamming, axis=1, kind="stable")[:, :k2], 1, axis=1)
  s = np.where((s1 == 1) & (s2 == 1), 1, -1).astype(np.int8)
  return s1, s2, s


def loop_histogram(x, n_bins, n_patches):
  """Table 5.1 histograms with one np.histogram call per image, band and patch."""
  n, h, w, c = x.shape
  g = int(round(n_patches ** 0.5))
  rows = [(h * i // g, h * (i + 1) // g) for i in range(g)]
  cols = [(w * i // g, w * (i + 1) // g) for i in range(g)]
  out = []
  for img in x:
    feat = []
    for band in range(c):
      for r0, r1 in rows:
        for c0, c1 in cols:
          values = np.clip(img[r0:r1, c0:c1, band], 0, 1)
          counts, _ = np.histogram(values, bins=n_bins, range=(0.0, 1.0))
          feat.append(counts / values.size)
    out.append(np.concatenate(feat))
  return np.asarray(out, np.float32)


def dense_quality(s, labels):
  gt = np.where(labels[:, None] == labels[None, :], 1, -1)
  both = np.sum((s == 1) & (gt == 1))
  union = np.sum((s == 1) | (gt == 1))
  return {"accuracy": np.mean(s == gt), "iou": both / union}


def pack(s):
  return np.packbits(s == 1, axis=1)


# ---------------------------------------------------------------------------
# Hand-worked example.

def test_hand_worked_example():
  # Unit vectors at these angles: cosine distance grows with the angle gap.
  # Cluster 0 = points 0-3, cluster 1 = points 4-7; point 3 (60 deg) lies
  # nearer cluster 1's first points than its own.
  angles = np.deg2rad([0, 10, 25, 60, 80, 92, 108, 130])
  x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
  # K1 = 3: each point, then its two nearest by angle gap.
  neighbours = [[0, 1, 2], [1, 0, 2], [2, 1, 0], [3, 4, 5],
                [4, 5, 3], [5, 4, 6], [6, 5, 7], [7, 6, 5]]
  s1_sets = [{0, 1, 2}, {0, 1, 2}, {0, 1, 2}, {3, 4, 5},
             {3, 4, 5}, {4, 5, 6}, {5, 6, 7}, {5, 6, 7}]
  # K2 = 3 by shared neighbours. Row 5 (N = {4, 5, 6}) shares 2 with each of
  # 3, 4, 6 and 7: the tie goes to the lower indices 3 and 4. Row 6 shares 3
  # with 7 and 2 with 5.
  s2_sets = [{0, 1, 2}, {0, 1, 2}, {0, 1, 2}, {3, 4, 5},
             {3, 4, 5}, {3, 4, 5}, {5, 6, 7}, {5, 6, 7}]
  # S = S1 AND S2: row 5 loses 3 (not in its S1) and 6 (not in its S2).
  s_sets = [{0, 1, 2}, {0, 1, 2}, {0, 1, 2}, {3, 4, 5},
            {3, 4, 5}, {4, 5}, {5, 6, 7}, {5, 6, 7}]

  def dense(sets):
    out = -np.ones((8, 8), np.int8)
    for i, cols in enumerate(sets):
      out[i, sorted(cols)] = 1
    return out

  np.testing.assert_array_equal(similarity.cosine_knn(x, 3), neighbours)
  packed, packed_s1 = similarity.two_stage_knn(x, 3, 3, return_s1=True)
  np.testing.assert_array_equal(similarity.unpack_ssm(packed_s1, 8), dense(s1_sets))
  np.testing.assert_array_equal(similarity.unpack_ssm(packed, 8), dense(s_sets))
  ref_s1, ref_s2, ref_s = dense_two_stage_knn(x, 3, 3)
  np.testing.assert_array_equal(ref_s1, dense(s1_sets))
  np.testing.assert_array_equal(ref_s2, dense(s2_sets))
  np.testing.assert_array_equal(ref_s, dense(s_sets))
  # Not symmetric: 3 counts 5 as similar, 5 does not count 3.
  assert similarity.unpack_ssm(packed, 8)[3, 5] == 1
  assert similarity.unpack_ssm(packed, 8)[5, 3] == -1
  # 23 positives, 32 same-class pairs, 20 in both: IoU 20 / 35, 15 of 64 wrong.
  quality = similarity.ssm_quality(packed, np.array([0, 0, 0, 0, 1, 1, 1, 1]))
  assert quality["iou"] == pytest.approx(20 / 35)
  assert quality["accuracy"] == pytest.approx(49 / 64)


# ---------------------------------------------------------------------------
# Two-stage kNN against the dense reference.

@pytest.mark.parametrize("n, d, k1, k2, block", [
    (2, 3, 1, 1, None),
    (2, 3, 1, 2, None),
    (9, 4, 3, 2, 4),
    (33, 8, 5, 9, 8),       # k2 > k1
    (64, 16, 10, 6, 64),
    (100, 32, 99, 100, 7),  # k1 = n - 1, k2 = n
    (150, 12, 20, 12, 37),
])
def test_two_stage_knn_matches_dense_reference(n, d, k1, k2, block):
  x = np.random.default_rng(n * 1000 + d).normal(size=(n, d)).astype(np.float32)
  packed, packed_s1 = similarity.two_stage_knn(x, k1, k2, block=block, return_s1=True)
  ref_s1, _, ref_s = dense_two_stage_knn(x, k1, k2)
  assert packed.dtype == np.uint8 and packed.shape == (n, (n + 7) // 8)
  np.testing.assert_array_equal(similarity.unpack_ssm(packed_s1, n), ref_s1)
  np.testing.assert_array_equal(similarity.unpack_ssm(packed, n), ref_s)


@pytest.mark.parametrize("n, k1, k2, block", [(40, 6, 4, 16), (70, 12, 9, 32), (50, 49, 20, 50)])
def test_two_stage_knn_ties_break_by_index(n, k1, k2, block):
  # 0/1 features in 4 dimensions: only 16 distinct points, so most cosines tie
  # exactly (duplicates, and e.g. (1,0,0,0) vs (1,1,1,1) seen from (1,1,0,0)).
  x = np.random.default_rng(n).integers(0, 2, size=(n, 4)).astype(np.float32)
  packed, packed_s1 = similarity.two_stage_knn(x, k1, k2, block=block, return_s1=True)
  ref_s1, _, ref_s = dense_two_stage_knn(x, k1, k2)
  np.testing.assert_array_equal(similarity.unpack_ssm(packed_s1, n), ref_s1)
  np.testing.assert_array_equal(similarity.unpack_ssm(packed, n), ref_s)
  s = similarity.unpack_ssm(packed, n)
  assert np.all(np.diag(s) == 1)                            # self is always similar
  assert np.all((s == 1).sum(1) <= min(k1, k2))


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(data=st.data())
def test_two_stage_knn_property(data):
  n = data.draw(st.integers(2, 24), label="n")
  x = data.draw(hnp.arrays(np.float32, (n, 3), elements=st.integers(0, 2).map(float)), label="x")
  k1 = data.draw(st.integers(1, n - 1), label="k1")
  k2 = data.draw(st.integers(1, n), label="k2")
  block = data.draw(st.sampled_from([None, 5, 8]), label="block")
  packed = similarity.two_stage_knn(x, k1, k2, block=block)
  np.testing.assert_array_equal(similarity.unpack_ssm(packed, n), dense_two_stage_knn(x, k1, k2)[2])


@pytest.mark.parametrize("r, n, k, top, dtype", [
    (7, 1, 1, 3, np.uint16),
    (9, 13, 1, 2, np.uint16),
    (9, 13, 13, 2, np.uint16),     # k = n: every entry
    (20, 64, 17, 3, np.uint16),    # few values: long runs of ties
    (16, 203, 50, 40, np.uint16),
    (5, 300, 299, 1, np.int32),
    (6, 1000, 123, 700, np.int32),
])
def test_top_k_packed_equals_top_k_mask(r, n, k, top, dtype):
  # The stage-2 selection: the k largest counts of each row, ties to the lower
  # column, against rsh.ranking's mask (a cumulative sum over whole rows).
  from rsh import ranking
  rng = np.random.default_rng(r * n + k)
  values = rng.integers(0, top + 1, size=(r, n)).astype(dtype)
  values[0] = top                                            # one row all tied
  got = sim_packed.top_k_packed(values, k, top)
  want = np.packbits(ranking.top_k_mask(values, k), axis=1)
  np.testing.assert_array_equal(got, want)
  assert (np.bitwise_count(got).sum(axis=1) == k).all()


@pytest.mark.parametrize("n, k, levels", [(1, 1, 0), (50, 1, 0), (50, 7, 0), (50, 7, 3),
                                           (203, 60, 5), (203, 202, 2)])
def test_top_k_scores_packed_equals_top_k_mask(n, k, levels):
  # The stage-1 selection; levels > 0: scores on a few values, so ties at the
  # k-th value (cut by index) are common.
  from rsh import ranking
  rng = np.random.default_rng(n + k)
  scores = rng.normal(size=(11, n)).astype(np.float32)
  if levels:
    scores = np.round(scores * levels / 2)
  scores[:, 0] = np.inf
  got = sim_packed.top_k_scores_packed(scores, k)
  np.testing.assert_array_equal(got, np.packbits(ranking.top_k_mask(scores, k), axis=1))


@pytest.mark.parametrize("rows, n_words, b", [(8, 4, 8), (24, 12, 8), (64, 40, 32)])
def test_overlap_block_is_the_product_of_the_0_1_rows(rows, n_words, b):
  # popcount(row_i AND row_j) summed over words = (A A^T)_ij for A the 0/1 bits.
  rng = np.random.default_rng(rows)
  bits = rng.random((rows, 32 * n_words)) < 0.3
  bits[:, -5:] = False                                      # padding stays zero
  words = np.packbits(bits, axis=1).view(np.uint32)
  a = bits.astype(np.int64)
  want = a @ a.T
  for r0 in range(0, rows, b):
    for c0 in range(0, rows, b):
      got = sim_knn._overlap_block(words, np.ascontiguousarray(words.T), r0, c0, b, np.uint16)
      assert got.dtype == np.uint16
      np.testing.assert_array_equal(np.asarray(got), want[r0:r0 + b, c0:c0 + b])


def test_two_stage_knn_logs_its_stage_times(caplog):
  x = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
  with caplog.at_level(logging.INFO, logger="rsh.similarity"):
    similarity.two_stage_knn(x, 5, 3, block=8)
  timings = [r.timings for r in caplog.records if hasattr(r, "timings")]
  assert len(timings) == 1
  assert {"stage1_s", "stage2_s", "stage2_overlap_wait_s", "stage2_rank_s"} <= set(timings[0])
  assert all(v >= 0 for v in timings[0].values())


def test_cosine_knn_is_nearest_first_and_scale_invariant():
  x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
  nn = similarity.cosine_knn(x, 7, block=16)
  np.testing.assert_array_equal(nn[:, 0], np.arange(50))
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  cos = xn @ xn.T
  np.fill_diagonal(cos, np.inf)
  np.testing.assert_array_equal(nn, np.argsort(-cos, axis=1, kind="stable")[:, :7])
  scaled = x * np.random.default_rng(1).uniform(0.1, 10, size=(50, 1)).astype(np.float32)
  np.testing.assert_array_equal(similarity.cosine_knn(scaled, 7), nn)


def test_scale_k():
  assert similarity.scale_k(500, 5000) == 500
  assert similarity.scale_k(500, 27000) == 2700
  assert similarity.scale_k(300, 27000) == 1620
  assert similarity.scale_k(300, 600) == 36
  assert similarity.scale_k(500, 50) == 5
  assert similarity.scale_k(300, 25) == 2       # 1.5 rounds up
  assert similarity.scale_k(300, 5) == 1        # at least 1
  assert similarity.scale_k(500, 4, n_ref=4) == 3  # at most n - 1


# ---------------------------------------------------------------------------
# Spectral features and fusion.

def _images(rng, n, h, w, c):
  # Digital numbers / 4095 like the real data, plus the edge values 0, 1/2, 1.
  x = rng.integers(0, 4096, size=(n, h, w, c)) / 4095
  x.flat[:3] = [0.0, 0.5, 1.0]
  return x.astype(np.float32)


@pytest.mark.parametrize("n_bins, n_patches, h, w", [(8, 1, 6, 6), (32, 4, 8, 8),
                                                     (5, 9, 7, 11), (16, 16, 64, 64)])
def test_local_histogram_matches_loop(n_bins, n_patches, h, w):
  x = _images(np.random.default_rng(n_bins), 5, h, w, 3)
  got = rspectral.local_histogram(x, n_bins, n_patches, chunk=2)
  assert got.shape == (5, 3 * n_patches * n_bins) and got.dtype == np.float32
  np.testing.assert_allclose(got, loop_histogram(x, n_bins, n_patches), rtol=1e-6)
  np.testing.assert_allclose(got.reshape(5, 3 * n_patches, n_bins).sum(-1), 1.0, rtol=1e-6)


def test_global_histogram_and_raw_colour():
  x = _images(np.random.default_rng(0), 4, 8, 8, 2)
  np.testing.assert_allclose(rspectral.global_histogram(x, 10), loop_histogram(x, 10, 1),
                             rtol=1e-6)
  np.testing.assert_array_equal(rspectral.raw_colour(x), x.reshape(4, -1))
  np.testing.assert_array_equal(rspectral.spectral_features(x, "raw"), x.reshape(4, -1))
  assert rspectral.spectral_features(x, "none") is None


def test_histogram_clips_out_of_range_values():
  x = np.array([-0.5, 0.0, 0.99, 1.0, 1.5, 0.3], np.float32).reshape(1, 1, 6, 1)
  np.testing.assert_allclose(rspectral.global_histogram(x, 2)[0], [3 / 6, 3 / 6])


def test_fuse():
  spectral = np.ones((3, 2), np.float32)
  spatial = np.arange(6, dtype=np.float32).reshape(3, 2)
  np.testing.assert_array_equal(rspectral.fuse(spectral, spatial, 6.0),
                                np.concatenate([spectral, 6 * spatial], 1))
  np.testing.assert_array_equal(rspectral.fuse(spectral, None), spectral)


# ---------------------------------------------------------------------------
# Reading and judging packed SSMs.

def test_ssm_rows_and_quality_match_dense():
  rng = np.random.default_rng(3)
  for n in (1, 8, 13, 100):
    s = np.where(rng.random((n, n)) < 0.3, 1, -1).astype(np.int8)
    packed = pack(s)
    np.testing.assert_array_equal(similarity.unpack_ssm(packed, n), s)
    idx = rng.integers(0, n, size=min(n, 17))
    got = similarity.ssm_rows(packed, idx)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, s[idx][:, idx])
    labels = rng.integers(0, 4, size=n)
    got, want = similarity.ssm_quality(packed, labels, block=7), dense_quality(s, labels)
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    assert got["iou"] == pytest.approx(want["iou"])


def test_ssm_quality_of_perfect_and_string_labels():
  labels = np.array(["a", "b", "a", "c", "b"])
  gt = np.where(labels[:, None] == labels[None, :], 1, -1)
  assert similarity.ssm_quality(pack(gt), labels) == {"accuracy": 1.0, "iou": 1.0}


def test_build_ssm(caplog):
  rng = np.random.default_rng(0)
  images = _images(rng, 30, 8, 8, 3)
  spatial = rng.normal(size=(30, 5)).astype(np.float32)
  with caplog.at_level(logging.INFO, logger="rsh.similarity"):
    packed, info = similarity.build_ssm(images, n_bins=4, n_patches=4, k1=5, k2=3)
  assert "spectral only" in caplog.text
  want = similarity.two_stage_knn(rspectral.local_histogram(images, 4, 4), 5, 3)
  np.testing.assert_array_equal(packed, want)
  assert info["feature_dim"] == 48 and info["n"] == 30 and info["k1"] == 5
  assert 1 <= info["positives_per_row"] <= 3

  packed, info = similarity.build_ssm(images, spectral="raw", spatial_features=spatial,
                                      eta=2.0, k1=5, k2=3)
  fused = np.concatenate([images.reshape(30, -1), 2 * spatial], 1)
  np.testing.assert_array_equal(packed, similarity.two_stage_knn(fused, 5, 3))
  assert info["features"] == ("raw", "spatial")

  packed, info = similarity.build_ssm(None, spectral="none", spatial_features=spatial,
                                      k1=5, k2=3)
  np.testing.assert_array_equal(packed, similarity.two_stage_knn(spatial, 5, 3))


# ---------------------------------------------------------------------------
# Bad input.

def test_bad_input_names_the_argument():
  x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
  with pytest.raises(ValueError, match="k1"):
    similarity.two_stage_knn(x, 10, 3)
  with pytest.raises(ValueError, match="k1"):
    similarity.two_stage_knn(x, 0, 3)
  with pytest.raises(ValueError, match="k2"):
    similarity.two_stage_knn(x, 3, 11)
  with pytest.raises(ValueError, match="k"):
    similarity.cosine_knn(x, 10)
  bad = x.copy()
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match="features"):
    similarity.two_stage_knn(bad, 3, 3)
  with pytest.raises(ValueError, match="features"):
    similarity.two_stage_knn(x[0], 3, 3)
  packed = similarity.two_stage_knn(x, 3, 3)
  with pytest.raises(ValueError, match="labels"):
    similarity.ssm_quality(packed, np.zeros(9))
  with pytest.raises(ValueError, match="idx"):
    similarity.ssm_rows(packed, np.array([0, 10]))
  with pytest.raises(ValueError, match="idx"):
    similarity.ssm_rows(packed, np.array([0.0, 1.0]))
  images = np.random.default_rng(0).random((2, 4, 4, 1)).astype(np.float32)
  with pytest.raises(ValueError, match="n_patches"):
    rspectral.local_histogram(images, 4, 3)
  with pytest.raises(ValueError, match="n_bins"):
    rspectral.local_histogram(images, 0, 1)
  images[0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="x"):
    rspectral.local_histogram(images, 4, 1)
  with pytest.raises(ValueError, match="spectral"):
    similarity.build_ssm(images, spectral="moments", k1=1, k2=1)
  with pytest.raises(ValueError, match="spatial_features"):
    similarity.build_ssm(images[:, :, :, :], spectral="none", k1=1, k2=1)
  with pytest.raises(ValueError, match="spatial_features"):
    similarity.build_ssm(np.zeros((2, 4, 4, 1), np.float32), spatial_features=np.zeros((3, 2)),
                         k1=1, k2=1)
  with pytest.raises(ValueError, match="spatial"):
    rspectral.fuse(np.zeros((2, 2)), np.zeros((3, 2)))


def test_progress_bar_does_not_change_the_result(capsys):
  x = np.random.default_rng(5).normal(size=(40, 6)).astype(np.float32)
  quiet = similarity.two_stage_knn(x, 6, 4, block=16, progress=False)
  shown = similarity.two_stage_knn(x, 6, 4, block=16, progress=True)
  np.testing.assert_array_equal(quiet, shown)
  assert "SSM kNN-2" in capsys.readouterr().err
