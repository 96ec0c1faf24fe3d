"""rsh.hamming against slow obvious references (numpy unpackbits)."""

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from rsh import hamming

FAST = settings(max_examples=40, deadline=None)


def brute_distances(q, db):
  """int64[nq, n] by unpacking every bit."""
  return np.unpackbits(q[:, None, :] ^ db[None, :, :], axis=-1).sum(-1).astype(np.int64)


# ----------------------------------------------------------------------------- packing


@FAST
@given(n=st.integers(0, 12), l=st.sampled_from([8, 16, 40, 64, 72]), seed=st.integers(0, 2**16),
       form=st.sampled_from(["bool", "01", "pm1", "sign", "float_pm1"]))
def test_pack_unpack_round_trip(n, l, seed, form):
  bits = np.random.default_rng(seed).integers(0, 2, (n, l)).astype(bool)
  x = {"bool": bits, "01": bits.astype(np.int32), "pm1": np.where(bits, 1, -1).astype(np.int8),
       "sign": np.where(bits, 1, np.where(np.arange(l) % 2, 0, -1)).astype(np.float32),
       "float_pm1": np.where(bits, 1.0, -1.0)}[form]
  packed = hamming.pack_codes(x)
  assert packed.dtype == np.uint8 and packed.shape == (n, l // 8)
  np.testing.assert_array_equal(packed, np.packbits(bits, axis=1))  # numpy bit order
  np.testing.assert_array_equal(hamming.unpack_codes(packed), bits.astype(np.uint8))
  np.testing.assert_array_equal(hamming.unpack_codes(packed, signed=True),
                                np.where(bits, 1, -1).astype(np.int8))
  assert hamming.num_bits(packed) == l


def test_pack_most_significant_bit_first():
  x = np.zeros((1, 16), bool)
  x[0, 0] = x[0, 15] = True
  np.testing.assert_array_equal(hamming.pack_codes(x), [[0b10000000, 0b00000001]])


@FAST
@given(n=st.integers(1, 9), nbytes=st.sampled_from([1, 3, 4, 8, 9]), seed=st.integers(0, 2**16))
def test_word_views_keep_distances(n, nbytes, seed):
  codes = np.random.default_rng(seed).integers(0, 256, (n, nbytes), dtype=np.uint8)
  for dtype in (np.uint32, np.uint64):
    w = hamming.code_words(codes, dtype)
    assert w.dtype == dtype and w.shape == (n, -(-nbytes // np.dtype(dtype).itemsize))
    d = np.bitwise_count(w[:, None, :] ^ w[None, :, :]).sum(-1)
    np.testing.assert_array_equal(d, brute_distances(codes, codes))


# ----------------------------------------------------------------------------- distances


@FAST
@given(nq=st.integers(1, 20), n=st.integers(1, 300), nbytes=st.sampled_from([1, 4, 8, 16, 33]),
       seed=st.integers(0, 2**16))
def test_hamming_distances(nq, n, nbytes, seed):
  rng = np.random.default_rng(seed)
  q = rng.integers(0, 256, (nq, nbytes), dtype=np.uint8)
  db = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
  d = hamming.hamming_distances(q, db)
  assert d.dtype == (np.uint8 if nbytes < 32 else np.uint16)
  np.testing.assert_array_equal(d, brute_distances(q, db))


def test_hamming_distances_refuses_huge_matrices():
  q = np.zeros((1000, 8), np.uint8)
  db = np.zeros((10, 8), np.uint8)
  with pytest.raises(ValueError, match="max_bytes"):
    hamming.hamming_distances(q, db, max_bytes=1000)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument():
  codes = np.zeros((4, 8), np.uint8)
  with pytest.raises(ValueError, match="multiple of 8"):
    hamming.pack_codes(np.ones((2, 12), bool))
  with pytest.raises(ValueError, match="binarise"):
    hamming.pack_codes(np.full((2, 8), 0.3))
  with pytest.raises(ValueError, match="NaN"):
    hamming.pack_codes(np.full((2, 8), np.nan))
  with pytest.raises(TypeError, match="`x`"):
    hamming.pack_codes(np.array([["a"] * 8]))
  with pytest.raises(ValueError, match="2-D"):
    hamming.pack_codes(np.ones(8, bool))
  with pytest.raises(TypeError, match="`q` must be packed codes"):
    hamming.hamming_distances(np.zeros((4, 8), np.int64), codes)
