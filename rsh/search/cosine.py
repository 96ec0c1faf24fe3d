"""`cosine_search`: exact top-k of real features by cosine similarity."""

from __future__ import annotations

import numpy as np

from rsh import hamming
from rsh import ranking

__all__ = ["cosine_search"]


def cosine_search(q, db, k: int):
  """Exact k most cosine-similar archive features, ties broken by archive index.

  Args:
    q: float[nq, f] query features; db: float[n, f] archive features (NaN refused;
      an all-zero row has similarity 0 to everything).
    k: 1 <= k <= n.

  Returns:
    similarities: float32[nq, k], descending; indices: int32[nq, k] into `db`.
  """
  q = ranking.check_features(q, "q", "cosine_search")
  db = ranking.check_features(db, "db", "cosine_search")
  if q.shape[1] != db.shape[1]:
    raise ValueError(f"cosine_search: `q` has {q.shape[1]} features but `db` has {db.shape[1]}")
  if len(db) == 0:
    raise ValueError("cosine_search: `db` is empty")
  k = hamming.check_k(k, len(db), "cosine_search")
  cols = min(len(db), max(1 << 16, 4 * k))
  rows = int(np.clip(hamming.BUDGET // cols, 1, hamming.QUERY_BLOCK))
  out_s = np.empty((len(q), k), np.float32)
  out_i = np.empty((len(q), k), np.int32)
  best = None
  for q0, a0, s in ranking.cosine_blocks(q, db, rows, cols):
    i = ranking.top_k_descending(s, k)
    v = np.take_along_axis(s, i, 1)
    if a0:  # earlier blocks first: on equal scores they win
      v, i = np.concatenate([best[0], v], 1), np.concatenate([best[1], i + a0], 1)
      j = ranking.top_k_descending(v, k)
      v, i = np.take_along_axis(v, j, 1), np.take_along_axis(i, j, 1)
    best = (v, i)
    if a0 + s.shape[1] == len(db):  # the query block's last archive block
      out_s[q0:q0 + len(s)], out_i[q0:q0 + len(s)] = best
  return out_s, out_i
