"""rsh.image_quality: Inception Score and Frechet distance against known values, closed
forms and a slow reference square root."""

from __future__ import annotations

import numpy as np
import pytest

from rsh import image_quality as iq


def random_spd(rng, d: int, floor: float = 0.1) -> np.ndarray:
  """A random, well-conditioned symmetric positive definite [d, d] matrix."""
  a = rng.normal(size=(d, d))
  return a @ a.T / d + floor * np.eye(d)


def ref_trace_sqrt(ca: np.ndarray, cb: np.ndarray) -> float:
  """Tr((C_a C_b)^{1/2}) from the eigenvalues of the non-symmetric product itself."""
  eig = np.linalg.eigvals(ca @ cb)
  return float(np.sqrt(np.clip(eig.real, 0.0, None)).sum())


# ----------------------------------------------------------------------------- Frechet distance


@pytest.mark.parametrize("n, d", [(200, 16), (10, 64)])
def test_frechet_distance_of_a_set_with_itself_is_zero(n, d):
  x = np.random.default_rng(0).normal(size=(n, d)) * np.linspace(0.5, 3.0, d)
  fd = iq.frechet_distance(x, x)
  assert np.isfinite(fd) and fd >= 0.0
  assert fd <= 1e-6 * np.trace(np.cov(x, rowvar=False))


def test_frechet_distance_is_symmetric():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))
  b = rng.normal(size=(250, 8)) @ rng.normal(size=(8, 8)) + 0.5
  ab, ba = iq.frechet_distance(a, b), iq.frechet_distance(b, a)
  assert ab > 0.0
  assert ab == pytest.approx(ba, rel=1e-9)


def test_frechet_distance_of_gaussian_samples_approaches_the_closed_form():
  rng = np.random.default_rng(2)
  d = 4
  m1, m2 = rng.normal(size=d), rng.normal(size=d)
  c1, c2 = random_spd(rng, d), random_spd(rng, d)
  a = rng.multivariate_normal(m1, c1, size=20000)
  b = rng.multivariate_normal(m2, c2, size=20000)
  exact = iq.gaussian_frechet_distance(m1, c1, m2, c2)
  assert exact > 0.5
  assert iq.frechet_distance(a, b) == pytest.approx(exact, rel=0.03)


def test_gaussian_frechet_distance_for_diagonal_covariances():
  rng = np.random.default_rng(3)
  m1, m2 = rng.normal(size=6), rng.normal(size=6)
  s1, s2 = rng.uniform(0.1, 4.0, size=6), rng.uniform(0.1, 4.0, size=6)
  hand = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
  got = iq.gaussian_frechet_distance(m1, np.diag(s1), m2, np.diag(s2))
  assert got == pytest.approx(hand, rel=1e-9)


def test_gaussian_frechet_distance_matches_a_slow_square_root_for_non_commuting_covariances():
  rng = np.random.default_rng(4)
  d = 12
  m1, m2 = rng.normal(size=d), rng.normal(size=d)
  c1, c2 = random_spd(rng, d, floor=0.5), random_spd(rng, d, floor=0.5)
  assert not np.allclose(c1 @ c2, c2 @ c1)
  ref = np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2.0 * ref_trace_sqrt(c1, c2)
  assert iq.gaussian_frechet_distance(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-6)


def test_frechet_distance_uses_the_unbiased_sample_moments():
  rng = np.random.default_rng(9)
  a, b = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 1.0
  moments = [(x.mean(0), np.cov(x, rowvar=False, ddof=1)) for x in (a, b)]
  want = iq.gaussian_frechet_distance(*moments[0], *moments[1])
  assert iq.frechet_distance(a, b) == pytest.approx(want, rel=1e-12)
  assert iq.frechet_distance(a.astype(np.float32), b) == pytest.approx(want, rel=1e-5)


def test_frechet_distance_is_finite_for_rank_deficient_covariances():
  rng = np.random.default_rng(5)
  a = rng.normal(size=(10, 64))
  b = rng.normal(size=(12, 64)) * 2.0 + 1.0
  fd = iq.frechet_distance(a, b)
  assert np.isfinite(fd) and fd > 0.0
  assert fd == pytest.approx(iq.frechet_distance(b, a), rel=1e-9)
  # The mean term alone: ||m_a - m_b||^2 <= FID (the trace term is a squared distance too).
  assert fd >= np.sum((a.mean(0) - b.mean(0)) ** 2) * (1 - 1e-9)


@pytest.mark.parametrize("a_shape, b_shape, what", [
    ((5,), (5, 3), "2-D"),
    ((5, 3), (5, 4), "different feature dimensions"),
    ((1, 3), (5, 3), "at least 2 rows"),
])
def test_frechet_distance_refuses_bad_shapes(a_shape, b_shape, what):
  with pytest.raises(ValueError, match=what):
    iq.frechet_distance(np.ones(a_shape), np.ones(b_shape))


def test_frechet_distance_refuses_non_finite_values():
  a = np.random.default_rng(6).normal(size=(5, 3))
  b = a.copy()
  b[2, 1] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    iq.frechet_distance(a, b)
  with pytest.raises(ValueError, match="non-finite"):
    iq.frechet_distance(np.where(b == b, a, np.inf), a)


# ----------------------------------------------------------------------------- Inception score


def test_inception_score_of_identical_rows_is_one():
  row = np.random.default_rng(7).normal(size=10) * 3.0
  mean, std = iq.inception_score(np.tile(row, (100, 1)), splits=10)
  assert mean == pytest.approx(1.0, abs=1e-9)
  assert std == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("n", [2, 7, 50])
def test_inception_score_of_distinct_confident_rows_is_n(n):
  mean, std = iq.inception_score(100.0 * np.eye(n), splits=1)
  assert mean == pytest.approx(n, rel=1e-6)
  assert std == 0.0


def test_inception_score_takes_the_marginal_per_split():
  # 10 splits of 10 rows, each split one confident row per class: every split scores 10.
  # One marginal over all 100 rows would give the same here, so also check a layout where
  # it would not: split k confident in class k only -> each split scores 1.
  spread = np.tile(100.0 * np.eye(10), (10, 1))
  assert iq.inception_score(spread, splits=10) == pytest.approx((10.0, 0.0), rel=1e-6, abs=1e-9)
  blocks = np.repeat(100.0 * np.eye(10), 10, axis=0)
  assert iq.inception_score(blocks, splits=10) == pytest.approx((1.0, 0.0), abs=1e-9)
  assert iq.inception_score(blocks, splits=1) == pytest.approx((10.0, 0.0), rel=1e-6, abs=1e-9)


def test_inception_score_drops_the_remainder_rows():
  base = 100.0 * np.eye(4)  # three splits of 4 distinct confident rows: each scores 4
  extra = np.tile(100.0 * np.eye(4)[:1], (2, 1))  # 14 // 3 = 4: 2 remainder rows, class 0
  got = iq.inception_score(np.concatenate([base, base, base, extra]), splits=3)
  assert got == pytest.approx((4.0, 0.0), rel=1e-6, abs=1e-9)
  # Kept, the same two rows would change the last split (14 // 2 = 7 rows per split).
  assert iq.inception_score(np.concatenate([base, base, base, extra]), splits=2)[1] > 0.1


def test_inception_score_std_over_splits():
  first = 100.0 * np.eye(4)                       # scores 4
  second = np.tile(100.0 * np.eye(4)[:1], (4, 1))  # scores 1
  mean, std = iq.inception_score(np.concatenate([first, second]), splits=2)
  assert mean == pytest.approx(2.5, rel=1e-6)
  assert std == pytest.approx(1.5, rel=1e-6)


def test_inception_score_matches_a_direct_formula():
  rng = np.random.default_rng(8)
  logits = rng.normal(size=(30, 5)) * 2.0
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  scores = []
  for chunk in np.split(p, 3):
    p_y = chunk.mean(0)
    scores.append(np.exp(np.mean(np.sum(chunk * np.log(chunk / p_y), axis=1))))
  got = iq.inception_score(logits.astype(np.float32), splits=3)
  assert got == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-5)


@pytest.mark.parametrize("logits, splits, what", [
    (np.zeros((10, 3)), 0, "splits` must be >= 1; got 0"),
    (np.zeros((4, 3)), 5, "4 images cannot fill 5 splits"),
    (np.zeros(10), 1, r"2-D .* got shape \(10,\)"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), 1, "non-finite"),
    (np.array([[0.0, np.inf], [1.0, 2.0]]), 1, "non-finite"),
])
def test_inception_score_refuses_bad_input(logits, splits, what):
  with pytest.raises(ValueError, match=what):
    iq.inception_score(logits, splits=splits)
