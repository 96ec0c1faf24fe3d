"""`radius_search`: every code within a Hamming radius of each query."""

from __future__ import annotations

import numpy as np

from rsh import hamming

__all__ = ["radius_search"]


def radius_search(q, db, radius: int):
  """All codes within Hamming distance `radius` of each query.

  Args:
    q: uint8[nq, l // 8]; db: uint8[n, l // 8] packed codes.
    radius: int in 0..l (0: equal codes only).

  Returns:
    (distances, indices): two lists of nq arrays, int32[m_i] each, ordered by
    (distance, index).
  """
  q, db = hamming.check_pair(q, db, "radius_search")
  l = 8 * db.shape[1]
  radius = hamming.check_int(radius, "radius", "radius_search", 0, l,
                             f"the code length ({l} bits)")
  hits = [[] for _ in range(len(q))]
  for qs, a0, d in hamming.distance_blocks(q, db):
    rows, cols = np.nonzero(d <= radius)
    bounds = np.searchsorted(rows, np.arange(d.shape[0] + 1))
    for r in range(d.shape[0]):
      c = cols[bounds[r]:bounds[r + 1]]
      hits[qs.start + r].append((d[r, c], c + a0))
  dists, idxs = [], []
  for h in hits:
    dd = np.concatenate([x[0] for x in h]).astype(np.int32)
    ii = np.concatenate([x[1] for x in h]).astype(np.int32)
    order = np.argsort(dd, kind="stable")  # indices arrive ascending: ties stay by index
    dists.append(dd[order])
    idxs.append(ii[order])
  return dists, idxs
