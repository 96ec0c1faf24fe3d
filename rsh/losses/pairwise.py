"""Supervised pairwise loss terms: codes whose inner products follow a similarity.

  `label_similarity`          S_ij in [0, 1] from two multi-hot label matrices;
  `pairwise_similarity_loss`  DPSH / DCMH pairwise likelihood of S given codes
                              (the cross-modal IRSC / IASC terms);
  `semantic_loss`             UAHM's eq. 5.6: H_i . H_j / l regressed onto a
                              +-1 similarity (the SSM of the batch).

Labels are multi-hot, [b, c] of 0 / 1 (any integer or real dtype). Every loss
is jittable and differentiable, has no state, and returns an f32[] scalar.
Shapes are checked eagerly (`rsh.losses.checks`); matmuls use
`Precision.HIGHEST`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rsh.losses.checks import HIGHEST, check_codes, check_rank2, check_same

Array = jax.Array

_MEASURES = ("any", "jaccard")


def label_similarity(labels_a: Array, labels_b: Array, *, measure: str = "any") -> Array:
  """Semantic similarity S_ij of two sets of multi-hot labels.

  Args:
    labels_a: [b, c] multi-hot labels (any non-zero entry counts as present).
    labels_b: [b', c] multi-hot labels over the same c classes.
    measure: "any": S_ij = 1 where the label sets share at least one label,
      else 0 (the usual multi-label hashing similarity); "jaccard":
      S_ij = |A_i n B_j| / |A_i u B_j|, 0 where both sets are empty.

  Returns:
    f32[b, b'] in [0, 1].
  """
  where = "label_similarity"
  check_rank2(where, labels_a=labels_a, labels_b=labels_b)
  check_same(where, 1, "number of classes", labels_a=labels_a, labels_b=labels_b)
  if measure not in _MEASURES:
    raise ValueError(f"{where}: unknown measure {measure!r}; known: "
                     f"{', '.join(map(repr, _MEASURES))}")
  ya = (jnp.asarray(labels_a) != 0).astype(jnp.float32)
  yb = (jnp.asarray(labels_b) != 0).astype(jnp.float32)
  inter = jnp.matmul(ya, yb.T, precision=HIGHEST)  # |A_i n B_j|, exact integers
  if measure == "any":
    return (inter > 0).astype(jnp.float32)
  union = jnp.sum(ya, axis=1)[:, None] + jnp.sum(yb, axis=1)[None, :] - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def pairwise_similarity_loss(codes_a: Array, codes_b: Array, labels_a: Array,
                             labels_b: Array, *, measure: str = "any",
                             alpha: float | None = None) -> Array:
  """Pairwise likelihood of the label similarity given the codes (DPSH, DCMH).

  theta_ij = alpha * <a_i, b_j>, S = label_similarity(labels_a, labels_b),
  loss = mean_ij [log(1 + e^theta_ij) - S_ij theta_ij]: exactly the binary
  cross-entropy of sigmoid(theta_ij) against S_ij. For hard S in {0, 1} it is
  DPSH's negative log-likelihood (minimum 0 as theta -> +-inf); for soft
  Jaccard S its minimum, at sigmoid(theta) = S, is the entropy of S, not 0.
  Written with `softplus`, finite for any theta. The multi-label extension of
  the IRSC / IASC pairwise term. Inter-modal: a = S1 codes, b = S2 codes;
  intra-modal: a = b = one modality's codes.

  Args:
    codes_a: f32[b, l] tanh codes.
    codes_b: f32[b', l] tanh codes (same code length).
    labels_a: [b, c] multi-hot labels of codes_a's items.
    labels_b: [b', c] multi-hot labels of codes_b's items.
    measure: "any" or "jaccard" (see `label_similarity`).
    alpha: scale of the inner products. None: 0.5 * 32 / l, i.e. DPSH's 0.5
      at 32 bits, scaled so that theta's range [-16, 16] for +-1 codes does
      not grow with the code length l (at 0.5 and l = 128 it would be +-64,
      saturating the sigmoid).

  Returns:
    f32[] scalar: the mean over the b * b' pairs.
  """
  where = "pairwise_similarity_loss"
  check_rank2(where, codes_a=codes_a, codes_b=codes_b, labels_a=labels_a, labels_b=labels_b)
  check_same(where, 1, "code length", codes_a=codes_a, codes_b=codes_b)
  check_same(where, 0, "batch", codes_a=codes_a, labels_a=labels_a)
  check_same(where, 0, "batch", codes_b=codes_b, labels_b=labels_b)
  s = label_similarity(labels_a, labels_b, measure=measure)
  if alpha is None:
    alpha = 0.5 * 32 / codes_a.shape[1]
  theta = alpha * jnp.matmul(codes_a, codes_b.T, precision=HIGHEST)
  return jnp.mean(jax.nn.softplus(theta) - s * theta)


def semantic_loss(codes: Array, similarity: Array, *, include_diagonal: bool = True) -> Array:
  """L_s = E_{x_i, x_j} (H(x_i) . H(x_j) / l - S_ij)^2 (eq. 5.6).

  The normalised inner product H_i . H_j / l lies in [-1, 1] and equals
  1 - 2 * hamming / l for +-1 codes, so the term makes Hamming distances follow
  the SSM: 0 for similar pairs (S = +1), l for dissimilar ones (S = -1).

  Normalisation: eq. 5.6 is an expectation over two independent draws from
  the data, estimated on a batch by the mean over all b * b ordered pairs,
  the diagonal i = j included (independent draws can coincide). On the
  diagonal S_ii = +1 (an image is its own nearest neighbour in both kNN
  stages), so those b terms pull ||H_i||^2 towards l, like the binary loss.
  `include_diagonal=False` averages over the b * (b - 1) pairs i != j instead.
  S need not be symmetric (row = anchor); both (i, j) and (j, i) count.

  Args:
    codes: f32[b, l] tanh codes of the real images of a batch.
    similarity: [b, b] similarities of those images, +1 similar / -1 dissimilar; any
      real or integer dtype (the SSM rows arrive as int8).
    include_diagonal: whether the b pairs (i, i) count.

  Returns:
    f32[] scalar.
  """
  h, s = codes, similarity
  check_codes(h, "semantic_loss")
  b, l = h.shape
  if s.shape != (b, b):
    raise ValueError(f"semantic_loss: similarity must be [{b}, {b}] for {b} codes, "
                     f"got shape {tuple(s.shape)}")
  inner = jnp.matmul(h, h.T, precision=HIGHEST) / l
  sq = jnp.square(inner - s.astype(inner.dtype))
  if include_diagonal:
    return jnp.mean(sq)
  if b < 2:
    raise ValueError("semantic_loss: include_diagonal=False needs at least 2 codes")
  return (jnp.sum(sq) - jnp.sum(jnp.diagonal(sq))) / (b * (b - 1))
