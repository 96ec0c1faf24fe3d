"""`ResidentArchive`: exact top-k for small query batches, the archive laid out once.

`rsh.search.search` lays the archive out again on every call (host word views,
grouped device blocks), which is right for a batch of thousands of queries and
dominates the time of one query (about 19 ms of a 10^6 x 64-bit search). Here the
archive is put on the device once as `uint32[W, n_pad]`, codes on the minor (vector)
axis, and one query is a single jitted call: XOR + popcount against every code,
minima of `GROUP` consecutive codes, minima of `GROUP` groups and so on
(`pruning_levels`), then the k best entries of each level from the top down keep
only `k * GROUP` codes, scored again and ordered by `lax.top_k`. The pruning is
`rsh.search`'s argument (the k entries with the smallest `(minimum, index)` hold the
exact top k), and candidates stay in index order, so the answer is exactly
`search`'s, ties by archive index included. A batch of queries is the same function
under `jax.vmap`, at most `QUERY_BATCH` queries a call.

`topk_words` is that function for one query, pure and jittable, so a caller can
jit an encoder and the search together; `packed_words` is `hamming.code_words`'s
word view of packed bytes inside jit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from rsh import hamming
from rsh.search.topk import GROUP

__all__ = ["ResidentArchive", "topk_words", "packed_words", "pruning_levels", "QUERY_BATCH"]

# Queries per vmapped call of `ResidentArchive.search`; a call's batch is padded to a
# power of two up to this, so few shapes are compiled.
QUERY_BATCH = 32


def pruning_levels(n: int, k: int) -> int:
  """Levels of group minima for top-k over n codes: one more while >= 4k groups remain.

  `rsh.search.search`'s rule (below 4k groups the pruning does not pay), applied
  to groups of groups as well.
  """
  levels, size = 0, n
  while -(-size // GROUP) >= 4 * k:
    levels, size = levels + 1, -(-size // GROUP)
  return levels


def packed_words(packed):
  """uint8[..., l // 8] -> uint32[..., ceil(l / 32)], jittable: `hamming.code_words`'s view.

  Little-endian words of the zero-padded bytes, so the words equal
  `hamming.code_words(codes, np.uint32)` (and those of `ResidentArchive.words_t`).
  """
  packed = jnp.asarray(packed)
  pad = [(0, 0)] * (packed.ndim - 1) + [(0, -packed.shape[-1] % 4)]
  packed = jnp.pad(packed, pad).reshape(*packed.shape[:-1], -1, 4).astype(jnp.uint32)
  return (packed << jnp.array([0, 8, 16, 24], jnp.uint32)).sum(-1, dtype=jnp.uint32)


def _distances(q_words, words_t):
  """uint32[W], uint32[W, c] -> uint32[c]: XOR + popcount summed over words."""
  return hamming.distance_kernel(q_words[None], words_t, jnp.uint32)[0]


def _check_levels(n: int, k: int, levels: int, n_pad: int, fn: str) -> None:
  if n_pad % GROUP or n_pad < n:
    raise ValueError(f"{fn}: `words_t` has {n_pad} columns; it needs at least n={n}, padded "
                     f"to a multiple of GROUP={GROUP} (use ResidentArchive(codes).words_t)")
  hamming.check_k(k, n, fn)
  if (isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 0
      or -(-n // GROUP**int(levels)) < k):
    raise ValueError(f"{fn}: `levels`={levels!r} must be an int >= 0 that leaves at least "
                     f"k={k} entries at the top level ({n} codes / {GROUP}^levels); "
                     f"pruning_levels(n, k) = {pruning_levels(n, k)}")


def topk_words(q_words, words_t, n: int, k: int, levels: int):
  """Exact top-k of one query over a resident archive, pure and jittable.

  Args:
    q_words: uint32[W], the query's words (`packed_words` of its packed bytes).
    words_t: uint32[W, n_pad], archive words (`ResidentArchive.words_t`), n_pad a
      multiple of `GROUP`; columns from n on are ignored.
    n: codes in the archive (static).
    k: neighbours, 1 <= k <= n (static).
    levels: levels of group minima (static), usually `pruning_levels(n, k)`; at
      least k groups must remain at the top level.

  Returns:
    (distances: int32[k], indices: int32[k]), ordered by (distance, index).
  """
  n_words, n_pad = words_t.shape
  _check_levels(n, k, levels, n_pad, "topk_words")
  sentinel = jnp.uint32(32 * n_words + 1)  # above any distance
  d = jnp.where(jnp.arange(n_pad) < n, _distances(q_words, words_t), sentinel)
  # minima[j]: minimum of each group of GROUP entries of minima[j - 1], padded with
  # the sentinel to whole groups so the next level's children are all in bounds.
  minima = [d]
  for _ in range(levels):
    m = minima[-1].reshape(-1, GROUP).min(1)
    minima.append(jnp.pad(m, (0, -m.shape[0] % GROUP), constant_values=sentinel))
  cand = jnp.arange(n_pad)
  for level in range(levels, 0, -1):
    values = minima[level] if level == levels else minima[level][cand]
    # lax.top_k puts the lower position first on ties; positions are in index order.
    _, best = lax.top_k(-values.astype(jnp.float32), k)
    groups = jnp.sort(best if level == levels else cand[best])
    cand = (groups[:, None] * GROUP + jnp.arange(GROUP)).ravel()  # ascending
  if levels:
    d = jnp.where(cand < n, _distances(q_words, words_t[:, cand]), sentinel)
  _, best = lax.top_k(-d.astype(jnp.float32), k)
  return d[best].astype(jnp.int32), cand[best].astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("n", "k", "levels"))
def _topk_batch(q_words, words_t, n, k, levels):
  """uint32[b, W] -> (int32[b, k], int32[b, k]): `topk_words` under vmap."""
  return jax.vmap(lambda q: topk_words(q, words_t, n, k, levels))(q_words)


class ResidentArchive:
  """Packed codes laid out once on the device for repeated small query batches.

  `search` gives exactly `rsh.search.search`'s answer. For one query over 10^6
  64-bit codes it costs well under a millisecond where `search` spends about 19 ms
  laying the archive out; for thousands of queries at once `search` is the tool.

  Attributes:
    n: codes in the archive.
    bits: code length l.
    words_t: uint32[ceil(l / 32), n_pad] device array, n_pad = n rounded up to a
      multiple of `GROUP` (padding is zeros, masked in the search); what
      `topk_words` takes.
  """

  def __init__(self, codes: np.ndarray, *, bits: int | None = None):
    """Lays `codes: uint8[n, l // 8]` (packed, `hamming.pack_codes`) out on the device.

    Args:
      codes: uint8[n, l // 8] packed archive codes, n >= 1.
      bits: the code length l, checked against `codes` when given.
    """
    fn = "ResidentArchive"
    codes = hamming.check_codes(codes, "codes", fn)
    if len(codes) == 0:
      raise ValueError(f"{fn}: `codes` is empty")
    if len(codes) >= 2**31 - 1:
      raise ValueError(f"{fn}: `codes` has {len(codes)} codes; indices are int32")
    if bits is not None and hamming.check_int(bits, "bits", fn) != 8 * codes.shape[1]:
      raise ValueError(f"{fn}: `bits`={bits} but `codes` holds {8 * codes.shape[1]}-bit codes "
                       f"({codes.shape[1]} bytes each)")
    self.n, self.nbytes = codes.shape
    self.bits = 8 * self.nbytes
    words = hamming.code_words(codes, np.uint32)
    words = hamming.pad_rows(words, -(-self.n // GROUP) * GROUP, value=0)
    self.words_t = jax.device_put(np.ascontiguousarray(words.T))

  def __repr__(self):
    return f"ResidentArchive(n={self.n}, bits={self.bits})"

  def levels(self, k: int) -> int:
    """The pruning levels `search` uses for k (`pruning_levels(n, k)`)."""
    return pruning_levels(self.n, hamming.check_k(k, self.n, "ResidentArchive.levels"))

  def search(self, queries, k: int, *, levels: int | None = None):
    """Exact k nearest archive codes by Hamming distance, ties by archive index.

    Args:
      queries: uint8[q, l // 8] packed query codes, or one code uint8[l // 8].
      k: neighbours per query, 1 <= k <= n (as `rsh.search.search`).
      levels: levels of group minima; None: `pruning_levels(n, k)` (set only to
        test the pruning).

    Returns:
      (distances: int32[q, k], ascending; indices: int32[q, k] into the archive),
      equal to `rsh.search.search(queries, codes, k)`; q = 1 for one code.
    """
    fn = "ResidentArchive.search"
    q = np.asarray(queries)
    if q.ndim == 1:
      q = q.reshape(1, -1)
    q = hamming.check_codes(q, "queries", fn)
    if q.shape[1] != self.nbytes:
      raise ValueError(f"{fn}: `queries` has {8 * q.shape[1]}-bit codes ({q.shape[1]} bytes) "
                       f"but the archive has {self.bits}-bit codes ({self.nbytes} bytes)")
    k = hamming.check_k(k, self.n, fn)
    levels = pruning_levels(self.n, k) if levels is None else levels
    _check_levels(self.n, k, levels, self.words_t.shape[1], fn)
    q_words = hamming.code_words(q, np.uint32)
    out_d = np.empty((len(q), k), np.int32)
    out_i = np.empty((len(q), k), np.int32)
    for s in range(0, len(q), QUERY_BATCH):
      block = q_words[s:s + QUERY_BATCH]
      b = len(block)
      padded = hamming.pad_rows(block, 1 << (b - 1).bit_length())  # 1, 2, 4, ... QUERY_BATCH
      d, i = _topk_batch(jnp.asarray(padded), self.words_t, self.n, k, levels)
      out_d[s:s + b], out_i[s:s + b] = np.asarray(d)[:b], np.asarray(i)[:b]
    return out_d, out_i
