"""FAISS interop: packed codes into and out of FAISS binary indexes."""

from __future__ import annotations

import numpy as np

from rsh import hamming

__all__ = ["to_faiss", "from_faiss"]


def _faiss():
  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("FAISS interop needs faiss: pip install faiss-cpu "
                      "(or: pip install -e '.[faiss]')") from e
  return faiss


def to_faiss(codes):
  """A `faiss.IndexBinaryFlat` holding packed `codes: uint8[n, l // 8]`.

  The bytes go in unchanged; FAISS's Hamming distances equal `rsh.search.search`'s.
  """
  codes = np.ascontiguousarray(hamming.check_codes(codes, "codes", "to_faiss"))
  index = _faiss().IndexBinaryFlat(8 * codes.shape[1])
  if len(codes):
    index.add(codes)
  return index


def from_faiss(index) -> np.ndarray:
  """The packed codes `uint8[n, l // 8]` stored in a FAISS binary index."""
  faiss = _faiss()
  if not isinstance(index, faiss.IndexBinary):
    raise TypeError(f"from_faiss: `index` must be a faiss binary index; got {type(index).__name__}")
  if index.ntotal == 0:
    return np.zeros((0, index.code_size), np.uint8)
  return np.asarray(index.reconstruct_n(0, index.ntotal), np.uint8).reshape(-1, index.code_size)
