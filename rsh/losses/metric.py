"""Metric-learning loss terms: triplets of codes and labels (MiLAN, IGARSS 2018; thesis ch. 4).

A triplet (a, p, n) is an anchor, a positive sharing a label with it and a
negative sharing none; it pays relu(d(a, p) - d(a, n) + margin):

  `triplet_loss`          aligned anchor / positive / negative rows;
  `stacked_triplet_loss`  a batch laid out [anchors; positives; negatives]
                          (MiLAN's two-class batches of 90 = 30 triplets);
  `batch_hard_loss`       per anchor, its hardest positive and negative
                          (Hermans et al. 2017);
  `batch_all_loss`        every valid triplet of the batch;
  `semi_hard_loss`        per positive pair, the semi-hard negative (FaceNet;
                          TF-Addons' `triplet_semihard_loss`);
  (MIRS's inter-class triplets from clusters: `rsh.losses.interclass`).
MiLAN's code-shape terms on sigmoid outputs s in [0, 1]:
  `push_loss`             -mean (s - 0.5)^2, a reward pushing s to 0 or 1;
  `code_balance_loss`     each code half ones.

Distances (`pairwise_distances`) are by default squared Euclidean between
L2-normalised rows, as in MiLAN's public code (margin 0.2); `squared=False`
takes the root (with a finite gradient at 0), `normalise=False` uses the raw
codes. Labels are int[b] class ids or multi-hot [b, c] (`positive_mask`).
The miners take an optional `mask` (bool[b]): only those rows are anchors,
positives or negatives (e.g. the labelled domain's rows of a mixed batch).

Every loss is jittable and differentiable, has no state, and returns an f32[]
scalar; the miners return 0.0 (with zero gradients) when the batch holds no
valid triplet. Python options (`normalise`, `squared`, `soft`, `reduce`) are
static under jit. Shapes are checked eagerly; matmuls use `Precision.HIGHEST`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rsh.losses.checks import HIGHEST, check_rank2, check_same
from rsh.losses.checks import l2_normalise as _normalise
from rsh.losses.pairwise import label_similarity

Array = jax.Array

_REDUCES = ("nonzero", "mean")


def _root(d: Array) -> Array:
  """sqrt(d) of d >= 0, exactly 0 where d == 0 with a zero (not infinite) gradient."""
  return jnp.where(d > 0.0, jnp.sqrt(jnp.maximum(d, 1e-16)), 0.0)


def _masked_mean(values: Array, mask: Array) -> Array:
  """Mean of `values` where `mask`; 0.0 when the mask is empty."""
  total = jnp.sum(jnp.where(mask, values, 0.0))
  return (total / jnp.maximum(jnp.sum(mask), 1)).astype(jnp.float32)


def pairwise_distances(x: Array, *, normalise: bool = True, squared: bool = True) -> Array:
  """Euclidean distances between the rows of x.

  Args:
    x: f32[b, l] codes.
    normalise: first divide each row by max(||row||, 1e-8) (a zero row stays 0).
    squared: squared distances |a|^2 + |b|^2 - 2 a.b, clipped at 0; False: their
      root, with a finite gradient where the distance is 0.

  Returns:
    f32[b, b], symmetric, the diagonal exactly 0. Off it, two identical rows
    may get a rounding error of ~1e-7 (squared) or its root ~5e-4, with a
    large but finite gradient.
  """
  check_rank2("pairwise_distances", x=x)
  z = _normalise(x) if normalise else jnp.asarray(x)
  sq = jnp.sum(jnp.square(z), axis=1)
  d = sq[:, None] + sq[None, :] - 2.0 * jnp.matmul(z, z.T, precision=HIGHEST)
  d = jnp.where(jnp.eye(z.shape[0], dtype=bool), 0.0, jnp.maximum(d, 0.0))
  return d if squared else _root(d)


def _check_labels(where: str, labels: Array) -> None:
  if jnp.ndim(labels) not in (1, 2):
    raise ValueError(f"{where}: labels must be int[batch] class ids or multi-hot "
                     f"[batch, classes], got shape {tuple(jnp.shape(labels))}")


def positive_mask(labels: Array) -> Array:
  """Which pairs of items are positives: same class, or at least one shared label.

  Args:
    labels: int[b] class ids, or multi-hot [b, c] (0 / 1, any numeric or bool
      dtype; any non-zero entry counts). The rank decides which.

  Returns:
    bool[b, b], symmetric, the diagonal included (True, except for a
    multi-hot row without labels, which shares nothing, not even with itself).
  """
  _check_labels("positive_mask", labels)
  labels = jnp.asarray(labels)
  if labels.ndim == 1:
    return labels[:, None] == labels[None, :]
  return label_similarity(labels, labels) > 0


def _rows_taking_part(where, codes, mask) -> Array:
  """bool[b, b]: both rows of a pair are in `mask` (all True when it is None)."""
  b = codes.shape[0]
  if mask is None:
    return jnp.ones((b, b), bool)
  if jnp.shape(mask) != (b,):
    raise ValueError(f"{where}: mask must be bool[{b}] (one per row), got shape "
                     f"{tuple(jnp.shape(mask))}")
  m = jnp.asarray(mask).astype(bool)
  return m[:, None] & m[None, :]


def _prepare(where, codes, labels, normalise, squared, mask=None):
  """Checked shapes -> (f32[b, b] distances, bool[b, b] positives, negatives), the
  diagonal in neither, nor any row outside `mask`."""
  check_rank2(where, codes=codes)
  _check_labels(where, labels)
  check_same(where, 0, "batch", codes=codes, labels=labels)
  d = pairwise_distances(codes, normalise=normalise, squared=squared)
  same = positive_mask(labels)
  off = ~jnp.eye(d.shape[0], dtype=bool) & _rows_taking_part(where, codes, mask)
  return d, same & off, ~same & off


def triplet_loss(anchor: Array, positive: Array, negative: Array, *, margin: float = 0.2,
                 normalise: bool = True, squared: bool = True) -> Array:
  """Triplet margin loss of given triplets (MiLAN's term, thesis ch. 4).

  Args:
    anchor: f32[t, l] codes of the anchors.
    positive: f32[t, l] codes of their positives (row i goes with anchor i).
    negative: f32[t, l] codes of their negatives.
    margin: the margin m.
    normalise, squared: as in `pairwise_distances`.

  Returns:
    f32[] scalar: mean_i relu(d(a_i, p_i) - d(a_i, n_i) + m).
  """
  where = "triplet_loss"
  check_rank2(where, anchor=anchor, positive=positive, negative=negative)
  check_same(where, 0, "batch", anchor=anchor, positive=positive, negative=negative)
  check_same(where, 1, "code length", anchor=anchor, positive=positive, negative=negative)
  if anchor.shape[0] == 0:
    raise ValueError(f"{where}: needs at least one triplet, got shape {tuple(anchor.shape)}")
  a, p, n = ((_normalise(x) if normalise else jnp.asarray(x))
             for x in (anchor, positive, negative))
  d_ap, d_an = jnp.sum(jnp.square(a - p), axis=1), jnp.sum(jnp.square(a - n), axis=1)
  if not squared:
    d_ap, d_an = _root(d_ap), _root(d_an)
  return jnp.mean(jax.nn.relu(d_ap - d_an + margin)).astype(jnp.float32)


def stacked_triplet_loss(codes: Array, *, margin: float = 0.2, normalise: bool = True,
                         squared: bool = True) -> Array:
  """`triplet_loss` of a batch stacked as [anchors; positives; negatives].

  MiLAN's sampler draws n = 2/3 of the batch from one class (anchors, then
  positives) and the last third from another (negatives).

  Args:
    codes: f32[3t, l]: rows 0..t-1 anchors, t..2t-1 their positives, 2t..3t-1
      their negatives.
    margin, normalise, squared: as in `triplet_loss`.

  Returns:
    f32[] scalar: `triplet_loss` of the three thirds.
  """
  where = "stacked_triplet_loss"
  check_rank2(where, codes=codes)
  b = codes.shape[0]
  if b == 0 or b % 3:
    raise ValueError(f"{where}: the batch must be a positive multiple of 3 "
                     f"([anchors; positives; negatives]), got shape {tuple(codes.shape)}")
  t = b // 3
  return triplet_loss(codes[:t], codes[t:2 * t], codes[2 * t:], margin=margin,
                      normalise=normalise, squared=squared)


def batch_hard_loss(codes: Array, labels: Array, mask: Array | None = None, *,
                    margin: float = 0.2, normalise: bool = True, squared: bool = True,
                    soft: bool = False) -> Array:
  """Batch-hard triplet loss (Hermans, Beyer and Leibe 2017).

  Per anchor a: d_hp = max d(a, p) over the other rows sharing a label with a,
  d_hn = min d(a, n) over the rows sharing none.

  Args:
    codes: f32[b, l] codes.
    labels: int[b] class ids or multi-hot [b, c] (see `positive_mask`).
    mask: optional bool[b], the rows that take part (None: all).
    margin, normalise, squared: as in `triplet_loss`.
    soft: softplus(d_hp - d_hn) instead of relu(d_hp - d_hn + margin).

  Returns:
    f32[] scalar: the mean per-anchor loss over the anchors with at least one
    positive and one negative; 0.0 when there is none.
  """
  d, pos, neg = _prepare("batch_hard_loss", codes, labels, normalise, squared, mask)
  valid = jnp.any(pos, axis=1) & jnp.any(neg, axis=1)
  d_hp = jnp.where(valid, jnp.max(jnp.where(pos, d, -jnp.inf), axis=1), 0.0)
  d_hn = jnp.where(valid, jnp.min(jnp.where(neg, d, jnp.inf), axis=1), 0.0)
  per = jax.nn.softplus(d_hp - d_hn) if soft else jax.nn.relu(d_hp - d_hn + margin)
  return _masked_mean(per, valid)


def batch_all_loss(codes: Array, labels: Array, mask: Array | None = None, *,
                   margin: float = 0.2, normalise: bool = True, squared: bool = True,
                   reduce: str = "nonzero") -> Array:
  """Batch-all triplet loss: every valid triplet of the batch (an f32[b, b, b] tensor).

  Valid: a != p, p shares a label with a, n shares none.

  Args:
    codes: f32[b, l] codes.
    labels: int[b] class ids or multi-hot [b, c] (see `positive_mask`).
    mask: optional bool[b], the rows that take part (None: all).
    margin, normalise, squared: as in `triplet_loss`.
    reduce: "nonzero": the mean of relu(d_ap - d_an + margin) over the valid
      triplets whose loss is > 1e-16 (omoindrot's batch_all,
      pytorch-metric-learning's AvgNonZeroReducer); "mean": over all valid
      triplets.

  Returns:
    f32[] scalar; 0.0 when no triplet counts.
  """
  where = "batch_all_loss"
  if reduce not in _REDUCES:
    raise ValueError(f"{where}: unknown reduce {reduce!r}; known: "
                     f"{', '.join(map(repr, _REDUCES))}")
  d, pos, neg = _prepare(where, codes, labels, normalise, squared, mask)
  return _reduce_triplets(d, pos[:, :, None] & neg[:, None, :], margin, reduce)


def _reduce_triplets(d: Array, valid: Array, margin: float, reduce: str) -> Array:
  """`batch_all_loss`'s reduction of relu(d_ap - d_an + margin) over `valid` [a, p, n]."""
  per = jax.nn.relu(d[:, :, None] - d[:, None, :] + margin)
  counted = valid & (per > 1e-16) if reduce == "nonzero" else valid
  total = jnp.sum(jnp.where(valid, per, 0.0))
  return (total / jnp.maximum(jnp.sum(counted), 1)).astype(jnp.float32)


def semi_hard_loss(codes: Array, labels: Array, mask: Array | None = None, *,
                   margin: float = 0.2, normalise: bool = True, squared: bool = True) -> Array:
  """Semi-hard triplet loss (Schroff et al. 2015), TF-Addons' `triplet_semihard_loss`.

  For every positive pair (a, p), a != p, the negative is the one with the
  smallest d(a, n) among the negatives of a with d(a, n) > d(a, p) (strictly);
  if there is none, the negative with the largest d(a, n). TF-Addons' default
  (squared Euclidean, "L_2") on L2-normalised embeddings is this with the
  defaults here and margin=1.0. Two edge cases differ from TF-Addons: a pair
  whose anchor has no negative is skipped (TF uses d_an = 0 there), and a
  batch without positive pairs gives 0.0 (TF: 0 / 0).

  Args:
    codes: f32[b, l] codes.
    labels: int[b] class ids or multi-hot [b, c] (see `positive_mask`).
    mask: optional bool[b], the rows that take part (None: all).
    margin, normalise, squared: as in `triplet_loss`.

  Returns:
    f32[] scalar: the mean of relu(d_ap - d_an + margin) over the positive
    pairs whose anchor has a negative; 0.0 when there is none.
  """
  d, pos, neg = _prepare("semi_hard_loss", codes, labels, normalise, squared, mask)
  d_an = d[:, None, :]                                  # [a, p, n]
  outside = neg[:, None, :] & (d_an > d[:, :, None])
  semi = jnp.min(jnp.where(outside, d_an, jnp.inf), axis=2)
  hardest = jnp.max(jnp.where(neg, d, -jnp.inf), axis=1)
  valid = pos & jnp.any(neg, axis=1)[:, None]
  chosen = jnp.where(jnp.any(outside, axis=2), semi, hardest[:, None])
  chosen = jnp.where(valid, chosen, 0.0)
  return _masked_mean(jax.nn.relu(d - chosen + margin), valid)


def push_loss(codes: Array, *, center: float = 0.5) -> Array:
  """MiLAN's push term: a reward for codes far from `center`.

  MiLAN weights it by beta = 0.001 (its public code's
  `- beta * mean ||s - 0.5||^2 / K`).

  Args:
    codes: f32[b, l] sigmoid outputs (center 0.5; center 0 for tanh codes).
    center: the undecided value.

  Returns:
    f32[] scalar: -mean over the b * l entries of (s - center)^2.
  """
  check_rank2("push_loss", codes=codes)
  return -jnp.mean(jnp.square(codes - center)).astype(jnp.float32)


def code_balance_loss(codes: Array, *, center: float = 0.5) -> Array:
  """MiLAN's balance term: each code should be half ones.

  Per code over its bits, unlike `bit_balance_loss`, which asks each bit to
  be balanced over the batch (the mean over the batch of one column); one
  can hold without the other (e.g. every code 0101...: codes balanced, bits
  constant).

  Args:
    codes: f32[b, l] sigmoid outputs (center 0.5; center 0 for tanh codes).
    center: the value of a balanced code's mean.

  Returns:
    f32[] scalar: mean over the b codes of (mean over its l bits - center)^2.
  """
  check_rank2("code_balance_loss", codes=codes)
  return jnp.mean(jnp.square(jnp.mean(codes, axis=1) - center)).astype(jnp.float32)


# The terms that mine their triplets within a batch: they need a positive and a
# negative per anchor there (the runner refuses one-class P x K batches for them).
MINERS = (batch_hard_loss, batch_all_loss, semi_hard_loss)
