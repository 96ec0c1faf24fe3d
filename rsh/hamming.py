"""Packed binary codes and exact Hamming distances: the run path.

Codes are stored packed, eight bits a byte, most significant bit first: exactly
`numpy.packbits(bits, axis=1)`, so `codes: uint8[n, l // 8]` with `l` any multiple
of 8. FAISS binary indexes take the same bytes (`rsh.search.to_faiss` /
`from_faiss`); their Hamming distances equal ours because XOR + popcount does not
care about bit order.

Distances are XOR + `lax.population_count` over 32-bit words in jitted kernels:
`distance_kernel` for distances, `group_minima` for the minimum distance of each
group of consecutive codes (the pruning step of `rsh.search`). `hamming_distances`
gives the full matrix and `distance_blocks` the same in bounded blocks;
`distance_rows` whole-archive rows of successive query blocks (what the metrics
rank). Search (top-k, radius, cosine, sharded, FAISS) is `rsh.search`; the checks,
shape helpers and block sizes here are shared with it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

__all__ = [
    "pack_codes", "unpack_codes", "code_words", "num_bits", "hamming_distances",
    "distance_rows", "distance_blocks", "distance_kernel", "group_minima", "distance_dtype",
    "check_codes", "check_pair", "check_k", "check_int", "bucket", "pad_rows",
]

# Codes per archive block: bounds a kernel's output ([queries, block] distances, or
# [queries, block / GROUP] group minima in `rsh.search`).
ARCHIVE_BLOCK = 1 << 20
# Queries per kernel call: their words stay in L1 while the archive streams past.
QUERY_BLOCK = 1024
# Elements (queries x candidates) in flight on the host at once: bounds memory.
BUDGET = 1 << 24


# ----------------------------------------------------------------------------- packing


def pack_codes(x) -> np.ndarray:
  """Packs binary codes into bytes, most significant bit first (numpy.packbits).

  Args:
    x: `[n, l]` bits as bool, {0, 1}, ±1, or sign values in {-1, 0, 1} (any int or
      float dtype, numpy or JAX); a bit is set where `x > 0`. `l` a multiple of 8.

  Returns:
    codes: uint8[n, l // 8].
  """
  x = np.asarray(x)
  if x.dtype.kind not in "biuf":
    raise TypeError(f"pack_codes: `x` must be a bool, integer or float array of bits; "
                    f"got dtype {x.dtype}")
  if x.ndim != 2:
    raise ValueError(f"pack_codes: `x` must be 2-D [n, l]; got shape {x.shape} "
                     "(use x.reshape(1, -1) for a single code)")
  if x.shape[1] == 0 or x.shape[1] % 8:
    raise ValueError(f"pack_codes: code length l={x.shape[1]} of `x` is not a positive "
                     "multiple of 8")
  if x.dtype.kind == "b":
    bits = x
  else:
    if x.dtype.kind == "f" and np.isnan(x).any():
      raise ValueError("pack_codes: `x` contains NaN")
    if x.size and not np.isin(x, (-1, 0, 1)).all():
      raise ValueError(
          f"pack_codes: `x` must hold bits (bool, {{0, 1}}, ±1 or sign values); got values "
          f"in [{x.min()}, {x.max()}]: binarise first, e.g. pack_codes(h >= 0)")
    bits = x > 0
  return np.packbits(bits, axis=1)


def unpack_codes(codes, *, signed: bool = False) -> np.ndarray:
  """Inverse of `pack_codes`.

  Args:
    codes: uint8[n, l // 8].
    signed: return ±1 instead of {0, 1}.

  Returns:
    uint8[n, l] in {0, 1}, or int8[n, l] in {-1, 1} when `signed`.
  """
  codes = check_codes(codes, "codes", "unpack_codes")
  bits = np.unpackbits(codes, axis=1)
  return (2 * bits.astype(np.int8) - 1) if signed else bits


def num_bits(codes) -> int:
  """l, the code length in bits, of packed `codes: uint8[n, l // 8]`."""
  shape, dtype = np.shape(codes), getattr(codes, "dtype", None)
  if dtype is None:
    dtype = np.asarray(codes).dtype
  if np.dtype(dtype) != np.uint8:
    raise TypeError(f"num_bits: `codes` must be packed codes uint8[n, l // 8] (see pack_codes); "
                    f"got dtype {dtype}")
  if len(shape) != 2:
    raise ValueError(f"num_bits: `codes` must be 2-D packed codes [n, l // 8]; got shape {shape}")
  return 8 * shape[1]


def code_words(codes, dtype=np.uint32) -> np.ndarray:
  """The kernel's word view of packed codes: uint32[n, ceil(l / 32)] (or uint64).

  Bytes are zero-padded to whole words, which adds nothing to any distance; the
  order of bits inside a word is irrelevant to XOR + popcount.
  """
  codes = np.ascontiguousarray(check_codes(codes, "codes", "code_words"))
  size = np.dtype(dtype).itemsize
  if np.dtype(dtype) not in (np.dtype(np.uint32), np.dtype(np.uint64)):
    raise TypeError(f"code_words: `dtype` must be uint32 or uint64; got {np.dtype(dtype)}")
  pad = -codes.shape[1] % size
  if pad:
    codes = np.concatenate([codes, np.zeros((len(codes), pad), np.uint8)], axis=1)
  return codes.view(dtype)


# ----------------------------------------------------------------------------- checks


def check_codes(x, name: str, fn: str) -> np.ndarray:
  """`x` as packed codes uint8[n, l // 8]; errors name the function `fn` and argument `name`."""
  x = np.asarray(x)
  if x.dtype != np.uint8:
    raise TypeError(f"{fn}: `{name}` must be packed codes uint8[n, l // 8] (see pack_codes); "
                    f"got dtype {x.dtype}")
  if x.ndim != 2 or x.shape[1] == 0:
    raise ValueError(f"{fn}: `{name}` must be 2-D packed codes [n, l // 8]; got shape {x.shape}")
  return x


def check_pair(q, db, fn: str):
  """(q, db) as packed codes of one code length, `db` non-empty with int32 indices."""
  q = check_codes(q, "q", fn)
  db = check_codes(db, "db", fn)
  if q.shape[1] != db.shape[1]:
    raise ValueError(f"{fn}: `q` has {8 * q.shape[1]}-bit codes but `db` has "
                     f"{8 * db.shape[1]}-bit codes")
  if len(db) == 0:
    raise ValueError(f"{fn}: `db` is empty")
  if len(db) >= 2**31 - 1:
    raise ValueError(f"{fn}: `db` has {len(db)} codes; indices are int32")
  return q, db


def check_k(k, n: int, fn: str) -> int:
  """`k` as an int in 1..n, n the archive size."""
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
    raise TypeError(f"{fn}: `k` must be an int; got {type(k).__name__}")
  if k < 1:
    raise ValueError(f"{fn}: `k` must be >= 1; got {k}")
  if k > n:
    raise ValueError(f"{fn}: `k`={k} is larger than the archive `db` ({n} codes)")
  return int(k)


def check_int(value, name: str, fn: str, lo: int = 1, hi: int | None = None,
              hi_what: str = "") -> int:
  """`value` as an int in lo..hi (hi None: no upper bound), for a host-side entry point.

  Errors name the function `fn` and the argument `name`: TypeError for a non-integer
  (bools too), ValueError below `lo` or above `hi`; `hi_what` says what `hi` is,
  e.g. "the archive (100 items)".
  """
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{fn}: `{name}` must be an int; got {type(value).__name__} {value!r}")
  allowed = f">= {lo}" if hi is None else f"in {lo}..{hi}"
  if value < lo:
    raise ValueError(f"{fn}: `{name}` must be an int {allowed}; got {value}")
  if hi is not None and value > hi:
    raise ValueError(f"{fn}: `{name}`={value} is larger than {hi_what or hi}; it must be "
                     f"{allowed}")
  return int(value)


def distance_dtype(l: int):
  """Smallest unsigned type holding 0..l plus a sentinel above l."""
  return np.uint8 if l < 255 else np.uint16


def bucket(n: int, lo: int = 8) -> int:
  """n rounded up to a multiple of a power of two >= lo, at most 1/8 above n.

  Few distinct shapes, so few compilations, and little padding to compute.
  """
  step = max(lo, 1 << max(0, int(n).bit_length() - 4))
  return max(lo, -(-int(n) // step) * step)


def pad_rows(x: np.ndarray, rows: int, value=None) -> np.ndarray:
  """x padded to `rows` rows with copies of its last row (or zeros)."""
  if len(x) == rows:
    return x
  out = np.empty((rows,) + x.shape[1:], x.dtype)
  out[:len(x)] = x
  out[len(x):] = x[-1] if value is None and len(x) else 0
  return out


@functools.partial(jax.jit, static_argnames=("dtype",))
def distance_kernel(q_words, db_words_t, dtype):
  """uint32[nq, W], uint32[W, n] -> dtype[nq, n]: XOR + popcount, summed over words."""
  d = None
  for w in range(q_words.shape[1]):
    x = lax.population_count(q_words[:, w, None] ^ db_words_t[w][None, :])
    d = x if d is None else d + x
  return d.astype(dtype)


@functools.partial(jax.jit, static_argnames=("dtype", "supergroup"))
def group_minima(q_words_t, db_grouped, n_groups, dtype, supergroup):
  """Minimum distance per group of consecutive codes, without the distance matrix.

  The pruning kernel of `rsh.search` (groups of `rsh.search.GROUP` codes).

  Args:
    q_words_t: uint32[W, nq], queries on the minor axis.
    db_grouped: uint32[W, G, m]; `[w, g, j]` is word w of code `j * G + g`.
    n_groups: groups that hold real codes; the rest read as the sentinel.
    supergroup: also return minima over this many consecutive groups (0: none).

  Returns:
    minima: dtype[m, nq], and dtype[m // supergroup, nq] when `supergroup` (queries
    stay minor: XLA's transpose of the large one would cost more than the kernel).
  """
  n_words, group, m = db_grouped.shape
  out = None
  # One fused loop: per archive word, broadcast against all queries (vector lanes),
  # accumulate the popcount over words and the minimum over the group's members.
  for g in range(group):
    d = None
    for w in range(n_words):
      x = lax.population_count(db_grouped[w, g][:, None] ^ q_words_t[w][None, :])
      d = x if d is None else d + x
    out = d if out is None else jnp.minimum(out, d)
  sentinel = jnp.iinfo(dtype).max
  out = jnp.where(jnp.arange(m)[:, None] < n_groups, out, sentinel).astype(dtype)
  if not supergroup:
    return out, None
  return out, out.reshape(m // supergroup, supergroup, -1).min(1)


# ----------------------------------------------------------------------------- distances


def hamming_distances(q, db, *, max_bytes: int = 1 << 30) -> np.ndarray:
  """The full Hamming distance matrix, computed in blocks by the jitted kernel.

  Args:
    q: uint8[nq, l // 8]; db: uint8[n, l // 8] packed codes.
    max_bytes: refuse results larger than this; use `rsh.search.search` or
      `radius_search`, which never build the matrix (1,000 x 10M codes would be 10 GB).

  Returns:
    uint8[nq, n] (uint16 when l >= 256).
  """
  q, db = check_pair(q, db, "hamming_distances")
  dtype = distance_dtype(8 * q.shape[1])
  size = len(q) * len(db) * np.dtype(dtype).itemsize
  if size > max_bytes:
    raise ValueError(f"hamming_distances: the [{len(q)}, {len(db)}] result would take "
                     f"{size / 2**30:.1f} GiB > `max_bytes`; use search() or radius_search()")
  out = np.empty((len(q), len(db)), dtype)
  for qs, a0, d in distance_blocks(q, db):
    out[qs, a0:a0 + d.shape[1]] = d
  return out


def distance_blocks(q, db):
  """The distance matrix in bounded blocks, archive-major.

  Args:
    q: uint8[nq, l // 8]; db: uint8[n, l // 8] packed codes.

  Yields:
    (query slice, archive start, uint8[b, c] distances; uint16 when l >= 256).
  """
  q, db = check_pair(q, db, "distance_blocks")
  dtype = distance_dtype(8 * q.shape[1])
  q32, db32 = code_words(q, np.uint32), code_words(db, np.uint32)
  cols = min(bucket(len(db), 256), ARCHIVE_BLOCK)
  rows = int(np.clip(BUDGET // cols, 1, QUERY_BLOCK))
  for a0 in range(0, len(db), cols):
    n = min(cols, len(db) - a0)
    words_t = jnp.asarray(np.ascontiguousarray(pad_rows(db32[a0:a0 + n], bucket(n, 256)).T))
    for q0 in range(0, len(q), rows):
      qb = q32[q0:q0 + rows]
      d = distance_kernel(jnp.asarray(pad_rows(qb, bucket(len(qb)))), words_t, dtype)
      yield slice(q0, q0 + len(qb)), a0, np.asarray(d)[:len(qb), :n]


def distance_rows(q, db, *, rows: int = 256):
  """Distances to the whole archive for successive blocks of queries.

  Each next block is dispatched to the kernel before the current one is handed
  out, so XLA computes it on its own threads while the caller works (metrics rank
  one block while the next one's distances are computed).

  Args:
    q: uint8[nq, l // 8]; db: uint8[n, l // 8] packed codes.
    rows: queries per block (fewer when n is large: at most 2^24 distances a block).

  Yields:
    (query slice, uint8[b, n] distances; uint16 when l >= 256).
  """
  q, db = check_pair(q, db, "distance_rows")
  n = len(db)
  dtype = distance_dtype(8 * q.shape[1])
  q32 = code_words(q, np.uint32)
  words_t = jnp.asarray(np.ascontiguousarray(
      pad_rows(code_words(db, np.uint32), -(-n // 256) * 256).T))
  rows = int(np.clip(min(rows, BUDGET // n), 1, QUERY_BLOCK))

  def dispatch(s):
    qb = q32[s:s + rows]
    d = distance_kernel(jnp.asarray(pad_rows(qb, bucket(len(qb)))), words_t, dtype)
    return s, len(qb), d

  pending = dispatch(0) if len(q) else None
  while pending is not None:
    s, b, dev = pending
    pending = dispatch(s + rows) if s + rows < len(q) else None
    yield slice(s, s + b), np.asarray(dev)[:b, :n]
