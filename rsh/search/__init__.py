"""Exact search over packed binary codes: top-k, radius, cosine, sharded, FAISS.

Codes are `rsh.hamming`'s packed bytes, `uint8[n, l // 8]`. Rankings are by
distance ascending (cosine similarity descending for `cosine_search`), ties broken
by archive index (a stable order), so every search here has one exact answer,
whatever the blocking or sharding. Ties and top-k go through `rsh.ranking`.

Top-k never sorts the archive and never materialises the `[nq, n]` distance
matrix. The archive is cut into groups of `GROUP` consecutive codes and the
kernel (`hamming.group_minima`) emits only each group's minimum distance per
query. The k groups with the smallest `(minimum, group index)` hold the exact top
k (any other group has k better codes in front of each of its members), so only
`k * GROUP` candidates per query are scored again and ordered. Group minima of
32 groups in turn prune the groups the same way on large archives. Distances are
small integers, so every ordering left is numpy's stable sort of uint8/uint16
(`ranking.top_k_ascending`), a linear-time counting (radix) sort. The kernel puts
queries on the minor (vector) axis: each archive word is broadcast against a block
of queries held in L1, which is what makes the XOR-popcount run at memory speed on
CPU. Query passes run in threads, one per core: numpy's gathers, popcounts and sorts
release the GIL, so one pass's host work runs beside another's kernel.

`sharded_search` runs the same algorithm in pure JAX under `jax.shard_map`,
the archive split over all devices of a `jax.sharding.Mesh`: per-shard top-k,
then a merge by `(distance, global index)`. Its results equal `search`'s.
`to_faiss` / `from_faiss` move the same bytes in and out of FAISS binary indexes.

One job per module: `rsh.search.topk` (`search`), `rsh.search.radius`
(`radius_search`), `rsh.search.cosine` (`cosine_search`), `rsh.search.sharded`
(`sharded_search`), `rsh.search.faiss_io` (`to_faiss`, `from_faiss`) and
`rsh.search.resident` (`ResidentArchive`, `topk_words`: the archive laid out once
on the device, for repeated small query batches and one-call encode + search),
`rsh.search.stream` (`stream_search`: the same exact top-k over an archive larger
than memory, e.g. a memory-mapped code file of `rsh.search.codefile`, read chunk by
chunk and merged by `(distance, global index)` with `merge_topk`, also across
processes), `rsh.search.protocol_streamed` (`evaluate_streamed`: the protocol's
metrics over such an archive from per-distance counts, `rsh.search.distance_counts`)
and `rsh.search.approx` (the approximate tier: FAISS `IndexBinaryIVF` /
`IndexBinaryHNSW` built from packed codes, `approx_search`, and recall@k against
the exact answer, plain and tie-aware).
"""

from rsh.search.approx import (approx_search, distance_recall_at_k, recall_at_k, to_faiss_hnsw,
                               to_faiss_ivf)
from rsh.search.cosine import cosine_search
from rsh.search.faiss_io import from_faiss, to_faiss
from rsh.search.radius import radius_search
from rsh.search.resident import ResidentArchive, packed_words, pruning_levels, topk_words
from rsh.search.sharded import sharded_search
from rsh.search.protocol_streamed import evaluate_streamed
from rsh.search.stream import merge_topk, stream_search
from rsh.search.topk import GROUP, SUPERGROUP, search

__all__ = [
    "to_faiss_ivf", "to_faiss_hnsw", "approx_search", "recall_at_k", "distance_recall_at_k",
    "evaluate_streamed",
    "search", "radius_search", "cosine_search", "sharded_search", "to_faiss", "from_faiss",
    "ResidentArchive", "topk_words", "packed_words", "pruning_levels",
    "stream_search", "merge_topk",
]
