"""Approximate Hamming top-k on FAISS binary indexes (IVF, HNSW), and recall@k.

The exact tier is `rsh.search.search`; this is the tier that trades recall for
speed on archives where even a linear scan at memory speed is too slow per query.
`to_faiss_ivf` clusters the codes into `nlist` inverted lists (k-means on a
seeded sample) and a search scans only the `nprobe` lists nearest the query;
`to_faiss_hnsw` builds a graph walked greedily with a beam of `efSearch`.
`approx_search` runs either (or an exact `IndexBinaryFlat`) with its knob.

Two recalls, because Hamming distances are small integers and tie a lot: the
exact top-k (rsh keeps the lowest archive indices among codes tied at the k-th
distance) is one valid answer of many. `recall_at_k` asks for the exact ids;
`distance_recall_at_k` asks only that each result be as near as the exact k-th
neighbour, so any valid tie order scores 1. The ANN benchmark reports both and
reads the distance recall as the headline: the id recall counts an equally near
code as a miss (IVF probing every list scores below 1 on it).

faiss is an optional extra, imported when a function here first needs it.
"""

from __future__ import annotations

import math

import numpy as np

from rsh import hamming
from rsh.search import faiss_io

__all__ = ["to_faiss_ivf", "to_faiss_hnsw", "approx_search", "recall_at_k",
           "distance_recall_at_k", "default_nlist", "MISSING_DISTANCE"]

# FAISS fills a result slot it could not fill (id -1) with this distance.
MISSING_DISTANCE = 2**31 - 1
# FAISS's k-means warns below 39 training points per centroid.
MIN_POINTS_PER_LIST = 39
# Training points per list by default: just above FAISS's minimum. k-means costs
# train_size * nlist per iteration (minutes at 1e7 codes); 64 per list lifted
# one-probe recall only from 0.970 to 0.977 (2e5 clustered 64-bit codes).
TRAIN_PER_LIST = 40
# Codes per quantizer search batch when `add` assigns codes to lists.
ADD_BATCH = 1 << 14


def default_nlist(n: int) -> int:
  """About 4 * sqrt(n) lists (FAISS's rule of thumb), at most n // 39, at least 1.

  The upper bound keeps FAISS's 39 training points per list on small archives.
  """
  return max(1, min(round(4 * math.sqrt(n)), n // MIN_POINTS_PER_LIST))


def _codes(codes, fn: str) -> np.ndarray:
  codes = np.ascontiguousarray(hamming.check_codes(codes, "codes", fn))
  if len(codes) == 0:
    raise ValueError(f"{fn}: `codes` is empty; an index needs at least one code")
  return codes


def to_faiss_ivf(codes, *, nlist: int | None = None, train_size: int | None = None,
                 seed: int = 0):
  """A trained `faiss.IndexBinaryIVF` holding packed `codes: uint8[n, l // 8]`.

  Args:
    codes: uint8[n, l // 8], n >= 1; added with ids 0..n-1 (archive order).
    nlist: inverted lists, 1..n; None: `default_nlist(n)` (~4 sqrt(n)).
    train_size: codes the k-means is trained on, nlist..n; None: min(n, 40 * nlist).
      A seeded uniform sample of `codes` (all of them when train_size == n).
    seed: seeds the sample and FAISS's k-means, so a build is reproducible.

  Returns:
    The index with every code added and `nprobe` left at FAISS's default (1);
    pass `nprobe` to `approx_search`.
  """
  fn = "to_faiss_ivf"
  codes = _codes(codes, fn)
  n = len(codes)
  nlist = (default_nlist(n) if nlist is None else
           hamming.check_int(nlist, "nlist", fn, 1, n, f"the number of codes ({n})"))
  train_size = (min(n, TRAIN_PER_LIST * nlist) if train_size is None else
                hamming.check_int(train_size, "train_size", fn, nlist, n,
                                  f"the number of codes ({n})"))
  seed = hamming.check_int(seed, "seed", fn, lo=0)
  faiss = faiss_io._faiss()  # pylint: disable=protected-access
  d = 8 * codes.shape[1]
  quantizer = faiss.IndexBinaryFlat(d)
  # `add` assigns every code to a list with one quantizer search; FAISS's default
  # of 32 queries per batch opens OpenMP regions per 32 codes, which made the
  # add 15x slower (2e5 codes, 4000 lists, 2 busy cores) than batches of 16384.
  quantizer.query_batch_size = ADD_BATCH
  # The Python wrapper keeps a reference to the quantizer for the index's lifetime.
  index = faiss.IndexBinaryIVF(quantizer, d, nlist)
  index.cp.seed = seed
  if train_size == n:
    sample = codes
  else:
    # Sorted rows: the gather reads the archive front to back.
    rows = np.sort(np.random.default_rng(seed).choice(n, train_size, replace=False))
    sample = codes[rows]
  index.train(sample)
  index.add(codes)
  return index


def to_faiss_hnsw(codes, *, m: int = 32, ef_construction: int = 40):
  """A `faiss.IndexBinaryHNSW` holding packed `codes: uint8[n, l // 8]`.

  Args:
    codes: uint8[n, l // 8], n >= 1; added with ids 0..n-1 (archive order).
    m: graph neighbours per node and level (2 * m on the bottom level), >= 2.
    ef_construction: beam width while inserting (FAISS's default 40); wider
      builds a better graph, slower.
  """
  fn = "to_faiss_hnsw"
  codes = _codes(codes, fn)
  m = hamming.check_int(m, "m", fn, lo=2)
  ef_construction = hamming.check_int(ef_construction, "ef_construction", fn, lo=1)
  faiss = faiss_io._faiss()  # pylint: disable=protected-access
  index = faiss.IndexBinaryHNSW(8 * codes.shape[1], m)
  index.hnsw.efConstruction = ef_construction
  index.add(codes)
  return index


def _knob(value, name: str, owner, index, fn: str, hi: int | None = None, hi_what: str = ""):
  """`value` checked as an int knob that only an index of type `owner` has."""
  if value is None:
    return None
  if not isinstance(index, owner):
    raise ValueError(f"{fn}: `{name}` is a knob of {owner.__name__} indexes; `index` is an "
                     f"{type(index).__name__} (nprobe: IVF, ef_search: HNSW, none: flat)")
  return hamming.check_int(value, name, fn, 1, hi, hi_what)


def approx_search(index, q, k: int, *, nprobe: int | None = None,
                  ef_search: int | None = None):
  """Top-k of packed queries `q` in a FAISS binary index, approximately.

  Args:
    index: a `faiss.IndexBinary`: IVF (`to_faiss_ivf`), HNSW (`to_faiss_hnsw`) or
      flat (`to_faiss`, exact, no knob).
    q: uint8[nq, l // 8], the index's code length.
    k: 1..index.ntotal.
    nprobe: IVF only: lists scanned per query, 1..nlist; None: the index's own.
    ef_search: HNSW only: beam width of the search, >= 1 (FAISS searches with
      max(ef_search, k)); None: the index's own.
    The knob applies to this call only; the index is not changed.

  Returns:
    (dist int32[nq, k], idx int64[nq, k]), ascending by distance; FAISS orders
    ties as its heaps leave them, not by index. A slot left empty (an IVF probe
    whose lists hold fewer than k codes) has idx -1 and dist MISSING_DISTANCE.
  """
  fn = "approx_search"
  faiss = faiss_io._faiss()  # pylint: disable=protected-access
  if not isinstance(index, faiss.IndexBinary):
    raise TypeError(f"{fn}: `index` must be a faiss binary index (to_faiss_ivf, "
                    f"to_faiss_hnsw, to_faiss); got {type(index).__name__}")
  q = np.ascontiguousarray(hamming.check_codes(q, "q", fn))
  if q.shape[1] != index.code_size:
    raise ValueError(f"{fn}: `q` has {8 * q.shape[1]}-bit codes but `index` has "
                     f"{index.d}-bit codes")
  if index.ntotal == 0:
    raise ValueError(f"{fn}: `index` is empty")
  k = hamming.check_int(k, "k", fn, 1, index.ntotal,
                        f"the number of codes in `index` ({index.ntotal})")
  ivf, hnsw = faiss.IndexBinaryIVF, faiss.IndexBinaryHNSW
  nprobe = _knob(nprobe, "nprobe", ivf, index, fn, getattr(index, "nlist", None),
                 f"the index's nlist ({getattr(index, 'nlist', '?')})")
  ef_search = _knob(ef_search, "ef_search", hnsw, index, fn)
  # Search parameters rather than attributes: the call leaves the index as it was.
  params = None
  if nprobe is not None:
    params = faiss.SearchParametersIVF(nprobe=nprobe)
  elif ef_search is not None:
    params = faiss.SearchParametersHNSW(efSearch=ef_search)
  return index.search(q, k, params=params)


def _pair(approx, exact, names: tuple[str, str], fn: str):
  """(approx, exact) as 2-D integer arrays of one shape [nq >= 1, k >= 1]."""
  arrays = []
  for x, name in zip((approx, exact), names):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
      raise TypeError(f"{fn}: `{name}` must be an integer array; got dtype {x.dtype}")
    if x.ndim != 2 or 0 in x.shape:
      raise ValueError(f"{fn}: `{name}` must be 2-D [nq, k] with nq, k >= 1; got shape {x.shape}")
    arrays.append(x.astype(np.int64, copy=False))
  if arrays[0].shape != arrays[1].shape:
    raise ValueError(f"{fn}: `{names[0]}` has shape {arrays[0].shape} but `{names[1]}` has "
                     f"{arrays[1].shape}; recall@k compares k results with k")
  return arrays


def recall_at_k(approx_idx, exact_idx) -> float:
  """Mean over queries of the fraction of the exact top-k ids found in the approximate top-k.

  Args:
    approx_idx: int[nq, k], any order; -1 (a missing result) matches nothing.
    exact_idx: int[nq, k], ids >= 0, distinct within a row (`rsh.search.search`).

  Tied codes at the k-th distance make the exact ids one choice of many: an
  approximate result that returns another code at that distance scores a miss
  here. See `distance_recall_at_k` for the tie-aware recall.
  """
  approx, exact = _pair(approx_idx, exact_idx, ("approx_idx", "exact_idx"), "recall_at_k")
  if exact.min() < 0:
    raise ValueError("recall_at_k: `exact_idx` holds negative ids; exact results have none")
  # Key every id by its row so one flat `isin` does all rows: ids lie in
  # -1..stride-2, so row r's keys lie in r*stride-1..r*stride+stride-2, apart from
  # every other row's.
  stride = int(max(approx.max(), exact.max())) + 2
  rows = np.arange(len(exact), dtype=np.int64)[:, None] * stride
  found = np.isin(exact + rows, approx + rows)
  return float(found.mean())  # every row has k entries: the mean of the per-row fractions


def distance_recall_at_k(approx_dist, exact_dist) -> float:
  """Fraction of approximate results as near as the exact k-th neighbour (tie-aware recall@k).

  Args:
    approx_dist: int[nq, k], the approximate results' distances; missing results
      carry MISSING_DISTANCE (FAISS's fill), which counts as a miss.
    exact_dist: int[nq, k], the exact top-k distances; row i's largest is the
      exact k-th distance d_i.

  Returns:
    The mean over all nq * k results of [approx_dist <= d_i]. For results with
    distinct ids and true distances it is 1 exactly when the approximate top-k
    is an exact top-k under some tie order, and it is never below `recall_at_k`
    (every exact id found is within d_i).
  """
  approx, exact = _pair(approx_dist, exact_dist, ("approx_dist", "exact_dist"),
                        "distance_recall_at_k")
  kth = exact.max(axis=1, keepdims=True)
  return float((approx <= kth).mean())
