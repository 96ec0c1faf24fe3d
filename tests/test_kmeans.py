"""rsh.kmeans against the truth of separated blobs and a slow numpy Lloyd reference."""

import numpy as np
import pytest

from rsh import kmeans as km


def blobs(n_per, centres, sd, seed):
  """f32[len(centres) * n_per, d] Gaussian blobs and the int[n] true labels."""
  rng = np.random.default_rng(seed)
  centres = np.asarray(centres, np.float64)
  labels = np.repeat(np.arange(len(centres)), n_per)
  x = centres[labels] + sd * rng.standard_normal((len(labels), centres.shape[1]))
  return x.astype(np.float32), labels


def overlapping(seed=0, n=300, d=8, k=6):
  """Blobs that overlap, so Lloyd's iterations move for several steps."""
  centres = 1.5 * np.random.default_rng(seed + 100).standard_normal((k, d))
  return blobs(n // k, centres, 1.0, seed)[0]


def numpy_lloyd(x, centroids, steps):
  """Slow obvious Lloyd in float64: (int[n] assignment, f64[k, d] centroids, inertia)."""
  x, c = x.astype(np.float64), centroids.astype(np.float64)
  for _ in range(steps + 1):
    d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    ids = d2.argmin(1)
    if _ == steps:
      break
    assert np.bincount(ids, minlength=len(c)).all(), "reference has no empty-cluster rule"
    c = np.stack([x[ids == j].mean(0) for j in range(len(c))])
  return ids, c, d2[np.arange(len(x)), ids].sum()


def same_partition(a, b):
  """Whether labelings a and b are equal up to a relabelling (a bijection)."""
  pairs = set(zip(a.tolist(), b.tolist()))
  return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def aligned_copy(x, align=64):
  """x copied to an address that is a multiple of `align` bytes (the zero-copy path)."""
  raw = np.empty(x.nbytes + align, np.uint8)
  start = -raw.ctypes.data % align
  out = raw[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
  out[:] = x
  assert out.ctypes.data % align == 0
  return out


# ----------------------------------------------------------------------------- results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_separated_blobs_are_recovered_exactly(seed):
  centres = 20.0 * np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
  x, labels = blobs(40, centres, 0.1, seed)
  fit = km.kmeans(x, 5, seed=seed)
  assert fit.centroids.dtype == np.float32 and fit.centroids.shape == (5, 3)
  assert fit.assign.dtype == np.int32 and fit.assign.shape == (200,)
  assert same_partition(fit.assign, labels)
  means = np.stack([x[fit.assign == j].astype(np.float64).mean(0) for j in range(5)])
  np.testing.assert_allclose(fit.centroids, means, rtol=0, atol=1e-5)
  within = sum(((x[labels == j] - x[labels == j].mean(0)) ** 2).sum() for j in range(5))
  np.testing.assert_allclose(fit.inertia, within, rtol=1e-5)
  assert 1 <= fit.iterations <= 3


def test_matches_numpy_lloyd_from_the_same_init():
  x = overlapping()
  init = km.kmeanspp_init(x, 6, seed=3, chunk=64)
  fit = km.kmeans(x, 6, seed=3, init=init, iters=10, tol=0.0, chunk=64)
  ids, centroids, inertia = numpy_lloyd(x, init, fit.iterations)
  ref_ids, ref_centroids, _ = numpy_lloyd(x, init, 10)
  assert fit.iterations > 3  # the data make Lloyd work, not stop at once
  np.testing.assert_array_equal(fit.assign, ids)
  np.testing.assert_allclose(fit.centroids, centroids, rtol=0, atol=1e-5)
  np.testing.assert_allclose(fit.inertia, inertia, rtol=1e-5)
  # stopping early means a fixed point: ten reference steps land on the same answer
  np.testing.assert_array_equal(fit.assign, ref_ids)
  np.testing.assert_allclose(fit.centroids, ref_centroids, rtol=0, atol=1e-5)
  # the default init is this k-means++ init
  np.testing.assert_array_equal(km.kmeans(x, 6, seed=3, iters=0).centroids, init)


def test_kmeanspp_init_draws_distinct_rows_spread_over_blobs():
  centres = 50.0 * np.eye(8)
  x, labels = blobs(10, centres, 0.1, 0)
  init = km.kmeanspp_init(x, 8, seed=0)
  rows = [np.flatnonzero((x == c).all(1)) for c in init]
  assert all(len(r) == 1 for r in rows)  # each centre is one row of x, copied exactly
  assert sorted(labels[np.concatenate(rows)].tolist()) == list(range(8))  # one per blob


def test_assign_matches_brute_force():
  x = overlapping(seed=1)
  centroids = x[[3, 70, 150, 290]] + 0.25
  ids, d2 = km.assign(x, centroids, chunk=77)
  brute = ((x[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(-1)
  assert ids.dtype == np.int32 and d2.dtype == np.float32
  np.testing.assert_array_equal(ids, brute.argmin(1))
  np.testing.assert_allclose(d2, brute.min(1), rtol=1e-5, atol=1e-5)
  # ties go to the lowest index
  ids, _ = km.assign(x[:5], np.stack([x[0], x[0], x[1]]))
  assert ids[0] == 0 and ids[1] == 2


def test_chunked_equals_unchunked():
  x = overlapping(seed=2)
  whole = km.kmeans(x, 6, seed=5, iters=10, tol=0.0)
  for chunk in (37, 128):  # neither divides n = 300
    np.testing.assert_array_equal(km.kmeanspp_init(x, 6, seed=5, chunk=chunk),
                                  km.kmeanspp_init(x, 6, seed=5))
    part = km.kmeans(x, 6, seed=5, iters=10, tol=0.0, chunk=chunk)
    np.testing.assert_array_equal(part.assign, whole.assign)
    np.testing.assert_allclose(part.centroids, whole.centroids, rtol=0, atol=1e-5)
    np.testing.assert_allclose(part.inertia, whole.inertia, rtol=1e-6)
    assert part.iterations == whole.iterations


def test_input_layouts_give_the_same_fit():
  """float64, Fortran order and a 64-byte-aligned buffer (handed over without a copy)."""
  x = overlapping(seed=2)[:256]
  ref = km.kmeans(x, 6, seed=1, iters=5, chunk=64)
  for other in (x.astype(np.float64), np.asfortranarray(x), aligned_copy(x)):
    fit = km.kmeans(other, 6, seed=1, iters=5, chunk=64)
    np.testing.assert_array_equal(fit.assign, ref.assign)
    np.testing.assert_array_equal(fit.centroids, ref.centroids)


def test_inertia_never_increases_with_iterations():
  x = overlapping(seed=4)
  inertias = [km.kmeans(x, 6, seed=2, iters=i, tol=0.0).inertia for i in (0, 1, 2, 5, 20)]
  assert all(b <= a * (1 + 1e-7) for a, b in zip(inertias, inertias[1:])), inertias
  assert inertias[-1] < inertias[0]


def test_empty_cluster_takes_the_farthest_row():
  x, labels = blobs(10, [[0.0, 0.0], [10.0, 0.0]], 0.1, 0)
  init = np.array([[0.0, 0.0], [100.0, 100.0]], np.float32)  # nobody's nearest
  far = int(np.argmax((x.astype(np.float64) ** 2).sum(1)))
  one = km.kmeans(x, 2, seed=0, init=init, iters=1)
  np.testing.assert_array_equal(one.centroids[1], x[far])
  fit = km.kmeans(x, 2, seed=0, init=init)
  assert same_partition(fit.assign, labels) and np.bincount(fit.assign).min() == 10


def test_edge_k():
  x = overlapping(seed=5)[:12]
  fit = km.kmeans(x, 1, seed=0)
  np.testing.assert_allclose(fit.centroids[0], x.astype(np.float64).mean(0), atol=1e-5)
  assert not fit.assign.any()
  fit = km.kmeans(x, 12, seed=0)  # every row its own centre
  assert sorted(fit.assign.tolist()) == list(range(12)) and fit.inertia == 0


# ----------------------------------------------------------------------------- seeding


def test_same_seed_is_bitwise_deterministic_across_fresh_compilations():
  x = overlapping(seed=6)
  first = km.kmeans(x, 6, seed=11, iters=5, chunk=100)
  for kernel in (km._pp_chunk, km._assign_chunk, km._lloyd_chunk):
    kernel.clear_cache()
  for _ in range(2):
    again = km.kmeans(x, 6, seed=11, iters=5, chunk=100)
    np.testing.assert_array_equal(again.centroids, first.centroids)
    np.testing.assert_array_equal(again.assign, first.assign)
    assert again.inertia == first.inertia and again.iterations == first.iterations


def test_different_seeds_give_different_inits():
  x = np.random.default_rng(0).uniform(size=(200, 2)).astype(np.float32)
  inits = [km.kmeanspp_init(x, 5, seed=s) for s in range(4)]
  assert all(not np.array_equal(a, b) for i, a in enumerate(inits) for b in inits[i + 1:])
  starts = [km.kmeans(x, 5, seed=s, iters=0).assign for s in (0, 1)]
  assert not same_partition(*starts)


# ----------------------------------------------------------------------------- bad inputs

GOOD = np.arange(20, dtype=np.float32).reshape(10, 2)


@pytest.mark.parametrize("x, k, kwargs, match", [
    (GOOD[0], 2, {}, "2-D"),
    (GOOD[None], 2, {}, "2-D"),
    (GOOD.astype(np.int32), 2, {}, "float"),
    (GOOD.astype(bool), 2, {}, "float"),
    (np.zeros((0, 2), np.float32), 1, {}, "empty"),
    (np.where(np.arange(20).reshape(10, 2) == 7, np.nan, GOOD), 2, {}, "NaN.*row 3"),
    (np.where(np.arange(20).reshape(10, 2) == 13, np.inf, GOOD), 2, {}, "infinite.*row 6"),
    (np.where(np.arange(20).reshape(10, 2) == 0, 1e30, GOOD.astype(np.float64)), 2, {},
     "too large.*row 0"),
    (GOOD, 0, {}, "`k` must be >= 1"),
    (GOOD, 11, {}, "k`=11.*10"),
    (GOOD, 2.0, {}, "`k` must be an int"),
    (GOOD, 2, {"seed": -1}, "`seed` must be >= 0"),
    (GOOD, 2, {"seed": None}, "`seed` must be an int"),
    (GOOD, 2, {"iters": -1}, "`iters`"),
    (GOOD, 2, {"tol": -1.0}, "`tol`"),
    (GOOD, 2, {"tol": float("nan")}, "`tol`"),
    (GOOD, 2, {"chunk": 0}, "`chunk`"),
    (GOOD, 2, {"init": GOOD[:3]}, "`init` must have k=2 rows"),
    (GOOD, 2, {"init": GOOD[:2, :1]}, r"`init` must be a float array \[2, 2\]"),
    (GOOD, 2, {"init": np.full((2, 2), np.nan)}, "`init` contains NaN"),
])
def test_bad_inputs_raise_value_errors(x, k, kwargs, match):
  kwargs = {"seed": 0, **kwargs}
  with pytest.raises(ValueError, match=match):
    km.kmeans(x, k, **kwargs)
  if "init" not in kwargs and "iters" not in kwargs and "tol" not in kwargs:
    with pytest.raises(ValueError, match=match):
      km.kmeanspp_init(x, k, **kwargs)


def test_assign_bad_inputs():
  with pytest.raises(ValueError, match=r"`centroids` must be a float array \[k, 2\]"):
    km.assign(GOOD, np.zeros((3, 5), np.float32))
  with pytest.raises(ValueError, match="`centroids` contains NaN"):
    km.assign(GOOD, np.full((1, 2), np.inf))
  with pytest.raises(ValueError, match="NaN.*row 0"):
    km.assign(np.full((2, 2), np.nan, np.float32), GOOD[:1])
  with pytest.raises(ValueError, match="2-D"):
    km.assign(GOOD.ravel(), GOOD[:1])
