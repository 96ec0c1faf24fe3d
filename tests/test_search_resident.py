"""rsh.search.ResidentArchive / topk_words against rsh.search.search and numpy brute force."""

import functools

import jax
import numpy as np
import pytest

from rsh import hamming
from rsh import search


def brute_search(q, db, k):
  """numpy: popcount of every code, stable argsort (ties by archive index)."""
  d = np.bitwise_count(q[:, None, :] ^ db[None, :, :]).sum(-1, dtype=np.int64)
  order = np.argsort(d, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(d, order, 1), order


def codes(rng, n, nbytes, values=256):
  """Random codes; values < 256 draws bytes from a few values: almost every code tied."""
  return rng.integers(0, values, (n, nbytes), dtype=np.uint8)


def assert_exact(arch, q, db, k, levels=None):
  d, i = arch.search(q, k, levels=levels)
  sd, si = search.search(q, db, k)
  assert d.dtype == sd.dtype and i.dtype == si.dtype and d.shape == (len(q), k)
  np.testing.assert_array_equal(d, sd)
  np.testing.assert_array_equal(i, si)
  bd, bi = brute_search(q, db, k)
  np.testing.assert_array_equal(d, bd)
  np.testing.assert_array_equal(i, bi)


# n, bytes per code, k, forced levels (None: pruning_levels), the levels that run.
CASES = [
    (5000, 2, 1, None, 2),     # 16 bits, 157 groups, 5 groups of groups
    (5000, 2, 5, 2, 2),        # two levels forced: k = all 5 top entries
    (5000, 2, 10, None, 1),
    (5000, 2, 10, 0, 0),       # no pruning forced
    (5000, 2, 40, None, 0),    # n < 4 k GROUP
    (300, 2, 10, 1, 1),        # n < k GROUP: every group is kept
    (3001, 3, 7, None, 1),     # 24 bits: words zero-padded
    (20000, 8, 3, None, 2),    # 64 bits, two words
]


@pytest.mark.parametrize("n, nbytes, k, levels, runs", CASES)
def test_equals_search_and_brute_force_with_ties(n, nbytes, k, levels, runs):
  rng = np.random.default_rng(n + k)
  db = codes(rng, n, nbytes)
  arch = search.ResidentArchive(db, bits=8 * nbytes)
  assert (arch.n, arch.bits) == (n, 8 * nbytes)
  assert (arch.levels(k) if levels is None else levels) == runs
  for nq in (1, 7):
    assert_exact(arch, codes(rng, nq, nbytes), db, k, levels)
  tied = codes(rng, n, nbytes, values=3)
  assert_exact(search.ResidentArchive(tied), codes(rng, 7, nbytes, values=3), tied, k, levels)


@pytest.mark.parametrize("levels", [1, 2])
def test_each_neighbour_in_its_own_group(levels):
  # The k nearest codes lie in k different groups (and groups of groups), every other
  # code is far: keeping fewer than k groups at any level loses one of them.
  n, k = 5000, 4
  q = np.zeros((1, 2), np.uint8)
  db = np.full((n, 2), 0xFF, np.uint8)
  near = [70, 1100, 2900, 4990]  # groups 2, 34, 90, 155; groups of groups 0, 1, 2, 4
  db[near] = [[0x01, 0], [0x03, 0], [0x01, 0], [0, 0]]  # distances 1, 2, 1, 0
  d, i = search.ResidentArchive(db).search(q, k, levels=levels)
  np.testing.assert_array_equal(d, [[0, 1, 1, 2]])
  np.testing.assert_array_equal(i, [[4990, 70, 2900, 1100]])


def test_query_batches_one_code_and_no_queries():
  rng = np.random.default_rng(2)
  db = codes(rng, 1000, 2, values=5)
  arch = search.ResidentArchive(db)
  assert_exact(arch, codes(rng, search.resident.QUERY_BATCH + 9, 2, values=5), db, 6)
  d, i = arch.search(db[17], 3)  # one code, uint8[l // 8]
  assert d.shape == i.shape == (1, 3) and d[0, 0] == 0
  assert i[0, 0] == np.flatnonzero((db == db[17]).all(1))[0]  # its first copy
  d, i = arch.search(db[:0], 3)
  assert d.shape == i.shape == (0, 3)
  d, i = arch.search(db[:2], 1000)  # k = n, as search allows
  np.testing.assert_array_equal(i, search.search(db[:2], db, 1000)[1])


def test_topk_words_in_a_callers_jit():
  rng = np.random.default_rng(4)
  db = codes(rng, 6000, 6)
  q = codes(rng, 3, 6)
  arch = search.ResidentArchive(db)
  k = 5

  @functools.partial(jax.jit, static_argnames=("n", "k", "levels"))
  def query(packed, words_t, n, k, levels):
    return search.topk_words(search.packed_words(packed), words_t, n, k, levels)

  sd, si = search.search(q, db, k)
  for j in range(len(q)):
    d, i = query(q[j], arch.words_t, arch.n, k, arch.levels(k))
    np.testing.assert_array_equal(d, sd[j])
    np.testing.assert_array_equal(i, si[j])


@pytest.mark.parametrize("nbytes", [1, 3, 4, 6, 8, 33])
def test_packed_words_is_code_words(nbytes):
  x = codes(np.random.default_rng(nbytes), 5, nbytes)
  np.testing.assert_array_equal(search.packed_words(x), hamming.code_words(x, np.uint32))
  np.testing.assert_array_equal(search.packed_words(x[0]), hamming.code_words(x, np.uint32)[0])


def test_pruning_levels_follows_search_rule():
  assert search.pruning_levels(1000, 64) == 0
  assert search.pruning_levels(10**6, 64) == 2
  assert search.pruning_levels(10**6, 1) == 3
  assert search.pruning_levels(4 * 64 * 32, 64) == 1


def test_bad_inputs_name_the_problem():
  db = np.zeros((100, 2), np.uint8)
  arch = search.ResidentArchive(db)
  with pytest.raises(TypeError, match="`codes` must be packed codes uint8"):
    search.ResidentArchive(db.astype(np.int32))
  with pytest.raises(ValueError, match="`codes` is empty"):
    search.ResidentArchive(db[:0])
  with pytest.raises(ValueError, match="`bits`=32 but `codes` holds 16-bit"):
    search.ResidentArchive(db, bits=32)
  with pytest.raises(TypeError, match="`queries` must be packed codes uint8"):
    arch.search(db.astype(np.float32), 3)
  with pytest.raises(ValueError, match="`queries` has 24-bit codes .* archive has 16-bit"):
    arch.search(np.zeros((2, 3), np.uint8), 3)
  with pytest.raises(ValueError, match="`k` must be >= 1"):
    arch.search(db[:2], 0)
  with pytest.raises(ValueError, match="larger than the archive"):
    arch.search(db[:2], 101)
  with pytest.raises(TypeError, match="`k` must be an int"):
    arch.search(db[:2], 2.0)
  with pytest.raises(ValueError, match="`levels`=2 .* at least k=3"):
    arch.search(db[:2], 3, levels=2)
  with pytest.raises(ValueError, match="`words_t` has 100 columns"):
    search.topk_words(arch.words_t[0, :1], arch.words_t[:, :100], 100, 3, 0)
