"""MIRS's inter-class triplets: triplets of a batch built from clusters of the frozen
features (K-means, `rsh.kmeans`) rather than from classes alone.

The MIRS slides (Sprengel, Schwarz, Hoffmann) add triplets "based on the cluster
association" and keep only images with shared features from different classes,
after Milbich et al. (TPAMI 2020, "Sharing Matters for Generalization in Deep
Metric Learning"). `interclass_mask` enumerates them, `interclass_loss` is the
batch-all triplet loss over them; both pure and jittable, like `rsh.losses.metric`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rsh.losses.checks import check_rank2, check_same
from rsh.losses.metric import (_REDUCES, _check_labels, _reduce_triplets, _rows_taking_part,
                               pairwise_distances, positive_mask)

Array = jax.Array

INTERCLASS_PAIRS = ("positive", "negative")


def interclass_mask(labels: Array, clusters: Array, *, pair: str = "positive",
                    mask: Array | None = None) -> Array:
  """Which (anchor, positive, negative) of a batch are MIRS inter-class triplets.

  The MIRS slides add triplets "based on the cluster association" of the frozen
  features (K-means, `rsh.kmeans`), taking only images "with shared features from
  different classes", i.e. pairs of different classes in one cluster:

    pair="positive"  (the slides; Milbich et al. 2020's shared characteristics):
                     p shares a's cluster and no label with a; n is in another
                     cluster (of any class);
    pair="negative"  (hard negatives from the clusters): p shares a label with a;
                     n shares a's cluster and no label with a.

  Args:
    labels: int[b] class ids or multi-hot [b, c].
    clusters: int[b] cluster ids of the rows' frozen features.
    pair: which pair of the triplet is the inter-class one (see above).
    mask: optional bool[b], the rows that take part (None: all).

  Returns:
    bool[b, b, b] indexed [a, p, n]; a, p and n pairwise distinct.
  """
  where = "interclass_mask"
  if pair not in INTERCLASS_PAIRS:
    raise ValueError(f"{where}: pair must be one of {', '.join(INTERCLASS_PAIRS)}, got {pair!r}")
  _check_labels(where, labels)
  if jnp.ndim(clusters) != 1:
    raise ValueError(f"{where}: clusters must be int[batch], got shape "
                     f"{tuple(jnp.shape(clusters))}")
  check_same(where, 0, "batch", labels=labels, clusters=clusters)
  clusters = jnp.asarray(clusters)
  b = clusters.shape[0]
  off = ~jnp.eye(b, dtype=bool) & _rows_taking_part(where, clusters, mask)
  same_class, same_cluster = positive_mask(labels), clusters[:, None] == clusters[None, :]
  inter = ~same_class & same_cluster & off        # different classes, one cluster
  if pair == "positive":
    ap, an = inter, ~same_cluster & off
  else:
    ap, an = same_class & off, inter
  return ap[:, :, None] & an[:, None, :] & off[None, :, :]


def interclass_loss(codes: Array, labels: Array, clusters: Array, mask: Array | None = None,
                    *, pair: str = "positive", margin: float = 0.2, normalise: bool = True,
                    squared: bool = True, reduce: str = "nonzero") -> Array:
  """Triplet loss over every inter-class triplet of the batch (`interclass_mask`).

  Args:
    codes: f32[b, l] codes.
    labels: int[b] class ids or multi-hot [b, c].
    clusters: int[b] cluster ids of the rows' frozen features.
    mask: optional bool[b], the rows that take part (None: all).
    pair, margin, normalise, squared, reduce: as in `interclass_mask` and
      `batch_all_loss`.

  Returns:
    f32[] scalar; 0.0 when the batch holds no inter-class triplet.
  """
  where = "interclass_loss"
  if reduce not in _REDUCES:
    raise ValueError(f"{where}: unknown reduce {reduce!r}; known: "
                     f"{', '.join(map(repr, _REDUCES))}")
  check_rank2(where, codes=codes)
  check_same(where, 0, "batch", codes=codes, clusters=clusters)
  valid = interclass_mask(labels, clusters, pair=pair, mask=mask)
  d = pairwise_distances(codes, normalise=normalise, squared=squared)
  return _reduce_triplets(d, valid, margin, reduce)
