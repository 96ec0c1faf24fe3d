"""rsh.search against slow obvious references (numpy unpackbits + stable argsort)."""

import json
import os
import pathlib
import subprocess
import sys

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from rsh import hamming
from rsh import ranking
from rsh import search
from rsh.search import topk as search_topk

FAST = settings(max_examples=40, deadline=None)
REPO = pathlib.Path(__file__).resolve().parents[1]


def brute_distances(q, db):
  """int64[nq, n] by unpacking every bit."""
  return np.unpackbits(q[:, None, :] ^ db[None, :, :], axis=-1).sum(-1).astype(np.int64)


def brute_search(q, db, k):
  d = brute_distances(q, db)
  order = np.argsort(d, axis=1, kind="stable")[:, :k]  # ties by archive index
  return np.take_along_axis(d, order, 1), order


def few_valued_codes(rng, n, nbytes, values=4):
  """Codes drawn from a few byte values: many exact ties."""
  return rng.integers(0, values, (n, nbytes), dtype=np.uint8)


# ----------------------------------------------------------------------------- top-k


@FAST
@given(nq=st.integers(1, 12), n=st.integers(1, 400), nbytes=st.sampled_from([1, 2, 8]),
       k=st.integers(1, 40), seed=st.integers(0, 2**16), ties=st.booleans())
def test_search_matches_brute_force_with_ties(nq, n, nbytes, k, seed, ties):
  rng = np.random.default_rng(seed)
  k = min(k, n)
  make = (lambda m: few_valued_codes(rng, m, nbytes)) if ties else (
      lambda m: rng.integers(0, 256, (m, nbytes), dtype=np.uint8))
  q, db = make(nq), make(n)
  d, i = search.search(q, db, k)
  bd, bi = brute_search(q, db, k)
  assert d.dtype == np.int32 and i.dtype == np.int32 and d.shape == (nq, k)
  np.testing.assert_array_equal(d, bd)
  np.testing.assert_array_equal(i, bi)


@pytest.mark.parametrize("n, nbytes, k, ties", [
    (5000, 8, 10, False),     # one level of group minima
    (30000, 4, 3, False),     # two levels (supergroups)
    (30000, 1, 3, True),      # two levels, almost every code tied
    (3001, 33, 7, False),     # 264-bit codes: uint16 distances
])
def test_search_group_pruning_is_exact(n, nbytes, k, ties):
  rng = np.random.default_rng(n + k)
  make = (lambda m: few_valued_codes(rng, m, nbytes, 3)) if ties else (
      lambda m: rng.integers(0, 256, (m, nbytes), dtype=np.uint8))
  q, db = make(37), make(n)
  d, i = search.search(q, db, k)
  bd, bi = brute_search(q, db, k)
  np.testing.assert_array_equal(d, bd)
  np.testing.assert_array_equal(i, bi)


def test_search_blocks_over_archive_and_queries(monkeypatch):
  # Tiny blocks: merging top-k lists across archive blocks and query passes.
  monkeypatch.setattr(hamming, "ARCHIVE_BLOCK", 2048)
  monkeypatch.setattr(hamming, "BUDGET", 4096)
  rng = np.random.default_rng(0)
  q, db = few_valued_codes(rng, 50, 2, 6), few_valued_codes(rng, 9000, 2, 6)
  d, i = search.search(q, db, 5)
  bd, bi = brute_search(q, db, 5)
  np.testing.assert_array_equal(d, bd)
  np.testing.assert_array_equal(i, bi)


@pytest.mark.parametrize("transpose_max, threads", [(0, 1), (1 << 30, 1), (1 << 30, 2)])
def test_search_paths_agree(monkeypatch, transpose_max, threads):
  # Group minima transposed by numpy or by XLA, query passes on one thread or two, and
  # a part-filled last group: the same exact answer.
  monkeypatch.setattr(search_topk, "_TRANSPOSE_MAX", transpose_max)
  monkeypatch.setattr(search_topk, "_THREADS", threads)
  rng = np.random.default_rng(7)
  for nbytes, ties in [(8, False), (5, True), (16, False)]:
    make = (lambda m: few_valued_codes(rng, m, nbytes, 3)) if ties else (
        lambda m: rng.integers(0, 256, (m, nbytes), dtype=np.uint8))
    q, db = make(150), make(4007)
    d, i = search.search(q, db, 9)
    bd, bi = brute_search(q, db, 9)
    np.testing.assert_array_equal(d, bd)
    np.testing.assert_array_equal(i, bi)


def test_search_k_equals_archive_and_no_queries():
  rng = np.random.default_rng(1)
  q, db = few_valued_codes(rng, 3, 1), few_valued_codes(rng, 11, 1)
  d, i = search.search(q, db, 11)
  np.testing.assert_array_equal(i, brute_search(q, db, 11)[1])
  d, i = search.search(q[:0], db, 4)
  assert d.shape == (0, 4) and i.shape == (0, 4)


@FAST
@given(nq=st.integers(1, 8), n=st.integers(1, 200), radius=st.integers(0, 10),
       seed=st.integers(0, 2**16))
def test_radius_search(nq, n, radius, seed):
  rng = np.random.default_rng(seed)
  q = rng.integers(0, 256, (nq, 2), dtype=np.uint8)
  db = rng.integers(0, 256, (n, 2), dtype=np.uint8)
  dists, idxs = search.radius_search(q, db, radius)
  bd = brute_distances(q, db)
  for row, d, i in zip(bd, dists, idxs):
    want = np.nonzero(row <= radius)[0]
    want = want[np.argsort(row[want], kind="stable")]
    np.testing.assert_array_equal(i, want)
    np.testing.assert_array_equal(d, row[want])


@FAST
@given(nq=st.integers(1, 8), n=st.integers(1, 120), f=st.integers(1, 6), k=st.integers(1, 20),
       seed=st.integers(0, 2**16))
def test_cosine_search_matches_stable_sort(nq, n, f, k, seed):
  rng = np.random.default_rng(seed)
  k = min(k, n)
  # Small integer features: exactly tied similarities, and some zero rows.
  q = rng.integers(-1, 2, (nq, f)).astype(np.float32)
  db = rng.integers(-1, 2, (n, f)).astype(np.float32)
  s, i = search.cosine_search(q, db, k)
  sims = ranking.normalise_rows(q) @ ranking.normalise_rows(db).T
  want = np.argsort(-sims, axis=1, kind="stable")[:, :k]
  np.testing.assert_array_equal(i, want)
  np.testing.assert_allclose(s, np.take_along_axis(sims, want, 1), rtol=1e-6)


# ----------------------------------------------------------------------------- sharded


def test_sharded_search_one_device_equals_search():
  rng = np.random.default_rng(3)
  for n, k in [(700, 5), (20000, 4)]:  # direct shards, then group-pruned shards
    q, db = few_valued_codes(rng, 20, 2, 5), few_valued_codes(rng, n, 2, 5)
    d, i = search.sharded_search(q, db, k)
    bd, bi = brute_search(q, db, k)
    np.testing.assert_array_equal(d, bd)
    np.testing.assert_array_equal(i, bi)


_FOUR_DEVICES = """
import json, sys
import numpy as np
import jax
from rsh import search
assert len(jax.devices()) == 4, jax.devices()
out = {}
rng = np.random.default_rng(3)
for n, k in [(5, 3), (700, 5), (20001, 4)]:
  q = rng.integers(0, 5, (20, 2), dtype=np.uint8)
  db = rng.integers(0, 5, (n, 2), dtype=np.uint8)
  d, i = search.sharded_search(q, db, k)
  out[str(n)] = [d.tolist(), i.tolist()]
json.dump(out, sys.stdout)
"""


def test_sharded_search_four_devices_equals_one():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  res = subprocess.run([sys.executable, "-c", _FOUR_DEVICES], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=300, check=True)
  four = json.loads(res.stdout)
  rng = np.random.default_rng(3)
  for n, k in [(5, 3), (700, 5), (20001, 4)]:
    q = rng.integers(0, 5, (20, 2), dtype=np.uint8)
    db = rng.integers(0, 5, (n, 2), dtype=np.uint8)
    d, i = search.search(q, db, k)  # one device, host path
    np.testing.assert_array_equal(four[str(n)][0], d)
    np.testing.assert_array_equal(four[str(n)][1], i)


# ----------------------------------------------------------------------------- faiss


def test_faiss_round_trip_and_equal_distances():
  faiss = pytest.importorskip("faiss")
  rng = np.random.default_rng(5)
  q = rng.integers(0, 256, (30, 8), dtype=np.uint8)
  db = rng.integers(0, 256, (2000, 8), dtype=np.uint8)
  index = search.to_faiss(db)
  assert isinstance(index, faiss.IndexBinaryFlat) and index.d == 64 and index.ntotal == 2000
  np.testing.assert_array_equal(search.from_faiss(index), db)
  fd, fi = index.search(q, 2000)  # every code: compare all distances, not only the top
  np.testing.assert_array_equal(np.sort(fd, axis=1), np.sort(brute_distances(q, db), axis=1))
  np.testing.assert_array_equal(np.take_along_axis(brute_distances(q, db), fi, 1), fd)
  d, _ = search.search(q, db, 50)
  np.testing.assert_array_equal(d, fd[:, :50])
  with pytest.raises(TypeError, match="index"):
    search.from_faiss(object())


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument():
  codes = np.zeros((4, 8), np.uint8)
  with pytest.raises(ValueError, match="`q` has 64-bit codes but `db` has 32-bit"):
    search.search(codes, np.zeros((4, 4), np.uint8), 1)
  with pytest.raises(TypeError, match="`db` must be packed codes"):
    search.search(codes, np.zeros((4, 64), np.float32), 1)
  with pytest.raises(ValueError, match="`k`=5 is larger than the archive"):
    search.search(codes, codes, 5)
  with pytest.raises(ValueError, match="`k` must be >= 1"):
    search.search(codes, codes, 0)
  with pytest.raises(ValueError, match="`db` is empty"):
    search.search(codes, codes[:0], 1)
  with pytest.raises(ValueError, match="`db` is empty"):
    search.sharded_search(codes, codes[:0], 1)
  with pytest.raises(ValueError, match="`radius`"):
    search.radius_search(codes, codes, -1)
  with pytest.raises(ValueError, match="`db` contains NaN"):
    search.cosine_search(np.ones((2, 3)), np.array([[1.0, np.nan, 0.0]]), 1)
  with pytest.raises(ValueError, match="`q` has 3 features but `db` has 2"):
    search.cosine_search(np.ones((2, 3)), np.ones((4, 2)), 1)
  with pytest.raises(ValueError, match="`k`=9 is larger"):
    search.cosine_search(np.ones((2, 3)), np.ones((4, 3)), 9)
