"""Loss terms of cross-modal (Sentinel-1 / Sentinel-2) hashing, as pure array functions.

Two encoders emit codes or features for the two images of each pair: row i of
`a` (e.g. the S1 image) and row i of `b` (the S2 image) show the same place.
Labels are multi-hot, [b, c] of 0 / 1 (any integer or real dtype).

  Supervised (labels):
    `label_similarity`        S_ij in [0, 1] from two label matrices;
    `pairwise_similarity_loss` DPSH / DCMH pairwise likelihood of S given codes.
  Code shape:
    `quantisation_loss`       codes near +-1;
    `bit_balance_loss`        each bit +1 on half the batch.
  Self-supervised (no labels):
    `nt_xent_loss`            SimCLR's NT-Xent over [a; b];
    `infonce_loss`            cross-modal InfoNCE (other modality's items only);
    `angular_loss`            angular distance of each pair;
    `intra_topk_loss`         pull each item's k nearest items of its modality;
    `gradient_penalty_loss`   WGAN-GP on given gradient norms.

Every function is jittable and differentiable, has no state, and returns an
f32[] scalar unless stated. Shapes are checked eagerly (they are static under
`jax.jit`): a ValueError names the function and the shapes. Matmuls use
`Precision.HIGHEST` (bf16 passes would put ~1e-2 error on the inner products).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

_HIGHEST = jax.lax.Precision.HIGHEST
_MEASURES = ("any", "jaccard")


def _check_rank2(where: str, **arrays: Array) -> None:
  for name, x in arrays.items():
    if jnp.ndim(x) != 2:
      raise ValueError(f"{where}: {name} must be rank 2 [batch, dim], got shape "
                       f"{tuple(jnp.shape(x))}")


def _check_same(where: str, axis: int, what: str, **arrays: Array) -> None:
  sizes = {name: jnp.shape(x)[axis] for name, x in arrays.items()}
  if len(set(sizes.values())) > 1:
    shapes = ", ".join(f"{name} {tuple(jnp.shape(x))}" for name, x in arrays.items())
    raise ValueError(f"{where}: {', '.join(arrays)} must have the same {what}, got {shapes}")


def _normalise(x: Array, eps: float = 1e-8) -> Array:
  """Rows of x / max(||x||, eps) (torch's F.normalize): a zero row stays zero and
  its gradient stays finite (the max picks the constant, whose gradient is 0)."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def _cosine(a: Array, b: Array) -> Array:
  """f32[b, b'] cosine similarities of the rows of a and b (zero rows: 0)."""
  return jnp.matmul(_normalise(a), _normalise(b).T, precision=_HIGHEST)


# ----------------------------------------------------------------------------
# Supervised: label similarity and the pairwise likelihood.


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
  _check_rank2(where, labels_a=labels_a, labels_b=labels_b)
  _check_same(where, 1, "number of classes", labels_a=labels_a, labels_b=labels_b)
  if measure not in _MEASURES:
    raise ValueError(f"{where}: unknown measure {measure!r}; known: "
                     f"{', '.join(map(repr, _MEASURES))}")
  ya = (jnp.asarray(labels_a) != 0).astype(jnp.float32)
  yb = (jnp.asarray(labels_b) != 0).astype(jnp.float32)
  inter = jnp.matmul(ya, yb.T, precision=_HIGHEST)  # |A_i n B_j|, exact integers
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
  _check_rank2(where, codes_a=codes_a, codes_b=codes_b, labels_a=labels_a, labels_b=labels_b)
  _check_same(where, 1, "code length", codes_a=codes_a, codes_b=codes_b)
  _check_same(where, 0, "batch", codes_a=codes_a, labels_a=labels_a)
  _check_same(where, 0, "batch", codes_b=codes_b, labels_b=labels_b)
  s = label_similarity(labels_a, labels_b, measure=measure)
  if alpha is None:
    alpha = 0.5 * 32 / codes_a.shape[1]
  theta = alpha * jnp.matmul(codes_a, codes_b.T, precision=_HIGHEST)
  return jnp.mean(jax.nn.softplus(theta) - s * theta)


# ----------------------------------------------------------------------------
# Code shape.


def quantisation_loss(codes: Array) -> Array:
  """Mean squared distance of the codes to their signs (the quantisation error).

  Args:
    codes: f32[b, l] tanh codes.

  Returns:
    f32[] scalar: mean over the b * l elements of (h - sign(h))^2, the sign
    under stop_gradient (a constant target) and sign(0) = +1.
  """
  _check_rank2("quantisation_loss", codes=codes)
  target = jax.lax.stop_gradient(jnp.where(codes >= 0, 1.0, -1.0).astype(codes.dtype))
  return jnp.mean(jnp.square(codes - target))


def bit_balance_loss(codes: Array) -> Array:
  """Bit balance: each bit should be +1 on half the batch and -1 on the other half.

  Args:
    codes: f32[b, l] tanh codes.

  Returns:
    f32[] scalar: mean over the l bits of (mean over the batch of h_ik)^2;
    0 for a balanced matrix of +-1 codes, 1 when a bit is constant everywhere.
  """
  _check_rank2("bit_balance_loss", codes=codes)
  return jnp.mean(jnp.square(jnp.mean(codes, axis=0)))


# ----------------------------------------------------------------------------
# Self-supervised: contrastive, angular, neighbourhood, gradient penalty.


def nt_xent_loss(a: Array, b: Array, *, temperature: float = 0.5) -> Array:
  """SimCLR's NT-Xent (normalised temperature-scaled cross-entropy).

  Over the 2b vectors z = [a; b], each L2-normalised (z / max(||z||, 1e-8)):
  for anchor i the positive is its partner (i <-> i + b), the negatives are
  the other 2b - 2 vectors (the anchor itself excluded):
    l_i = -log exp(cos(z_i, z_p(i)) / t) / sum_{k != i} exp(cos(z_i, z_k) / t).
  Inter-modal: a = S1, b = S2; intra-modal: a, b = two augmented views.

  Args:
    a: f32[b, d] representations of the first item of each pair.
    b: f32[b, d] representations of their partners (same shape).
    temperature: t > 0.

  Returns:
    f32[] scalar: the mean of l_i over all 2b anchors.
  """
  where = "nt_xent_loss"
  _check_rank2(where, a=a, b=b)
  _check_same(where, 0, "batch", a=a, b=b)
  _check_same(where, 1, "dimension", a=a, b=b)
  n = a.shape[0]
  z = jnp.concatenate([a, b], axis=0)
  logits = _cosine(z, z) / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
  partner = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  log_p = jax.nn.log_softmax(logits, axis=1)
  return -jnp.mean(jnp.take_along_axis(log_p, partner[:, None], axis=1))


def infonce_loss(a: Array, b: Array, *, temperature: float = 0.1) -> Array:
  """Cross-modal InfoNCE (a mutual-information lower bound; SS-CM-RSIR's inter-modal term).

  logits_ij = cos(a_i, b_j) / t; each item's positive is its partner in the
  other modality and only the other modality's items are its negatives:
    loss = 0.5 * (mean_i CE(logits[i, :], i) + mean_j CE(logits[:, j], j)).

  Args:
    a: f32[b, d] representations of one modality (e.g. S1).
    b: f32[b, d] representations of the other (e.g. S2), same shape.
    temperature: t > 0.

  Returns:
    f32[] scalar.
  """
  where = "infonce_loss"
  _check_rank2(where, a=a, b=b)
  _check_same(where, 0, "batch", a=a, b=b)
  _check_same(where, 1, "dimension", a=a, b=b)
  logits = _cosine(a, b) / temperature
  rows = jnp.diagonal(jax.nn.log_softmax(logits, axis=1))
  cols = jnp.diagonal(jax.nn.log_softmax(logits, axis=0))
  return -0.5 * (jnp.mean(rows) + jnp.mean(cols))


def angular_loss(a: Array, b: Array, *, eps: float = 1e-6) -> Array:
  """Angular distance of each pair's two representations (SS-CM-RSIR's
  term eliminating the inter-modal discrepancy).

  Args:
    a: f32[b, d] representations of one modality.
    b: f32[b, d] representations of the other, same shape.
    eps: the cosine is clipped to [-1 + eps, 1 - eps] before arccos, whose
      gradient is infinite at +-1 (identical or opposite pairs).

  Returns:
    f32[] scalar in [0, 1]: mean_i arccos(cos(a_i, b_i)) / pi (a zero vector
    has cosine 0 with anything, i.e. distance 0.5).
  """
  where = "angular_loss"
  _check_rank2(where, a=a, b=b)
  _check_same(where, 0, "batch", a=a, b=b)
  _check_same(where, 1, "dimension", a=a, b=b)
  cos = jnp.sum(_normalise(a) * _normalise(b), axis=1)
  return jnp.mean(jnp.arccos(jnp.clip(cos, -1.0 + eps, 1.0 - eps))) / jnp.pi


def intra_topk_loss(x: Array, *, k: int = 3) -> Array:
  """Within one modality, raise the cosine similarity of each item's k nearest items.

  C = cosine matrix of the rows of x, the diagonal excluded; each row's
  neighbours are its k largest entries, chosen on stop_gradient(C) (the
  choice is a constant, the similarities at those places are pulled up).

  Args:
    x: f32[b, d] representations of one modality.
    k: neighbours per item, 1 <= k < b (a static Python int).

  Returns:
    f32[] scalar: 1 - mean of C over the b * k chosen places, in [0, 2].
  """
  where = "intra_topk_loss"
  _check_rank2(where, x=x)
  n = x.shape[0]
  if not 1 <= k < n:
    raise ValueError(f"{where}: k must satisfy 1 <= k < batch, got k={k} for x of shape "
                     f"{tuple(x.shape)}")
  c = _cosine(x, x)
  masked = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, jax.lax.stop_gradient(c))
  _, idx = jax.lax.top_k(masked, k)
  return 1.0 - jnp.mean(jnp.take_along_axis(c, idx, axis=1))


def gradient_penalty_loss(grad_norms: Array, *, target: float = 1.0) -> Array:
  """WGAN-GP's gradient penalty on given gradient norms.

  The method computes ||grad_x D(x)|| at codes interpolated between real and
  fake ones and offers those norms as an input; this term only penalises them.

  Args:
    grad_norms: f32[b] one norm per interpolated sample.
    target: the norm aimed at (1, a 1-Lipschitz critic).

  Returns:
    f32[] scalar: mean_i (grad_norms_i - target)^2.
  """
  if jnp.ndim(grad_norms) != 1:
    raise ValueError(f"gradient_penalty_loss: grad_norms must be rank 1 [batch], got shape "
                     f"{tuple(jnp.shape(grad_norms))}")
  return jnp.mean(jnp.square(grad_norms - target))
