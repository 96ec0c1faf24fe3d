"""Self-supervised loss terms on paired representations (no labels), as pure array functions.

Two encoders (or two augmented views) emit codes or features for the two items
of each pair: row i of `a` (e.g. the S1 image) and row i of `b` (the S2 image)
show the same place.

  `nt_xent_loss`     SimCLR's NT-Xent over [a; b];
  `infonce_loss`     cross-modal InfoNCE (other modality's items only);
  `angular_loss`     angular distance of each pair;
  `intra_topk_loss`  pull each item's k nearest items of its modality.

Every function is jittable and differentiable, has no state, and returns an
f32[] scalar. Shapes are checked eagerly (`rsh.losses.checks`). Cosines use
`Precision.HIGHEST` matmuls.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rsh.losses.checks import HIGHEST, check_rank2, check_same
from rsh.losses.checks import l2_normalise as _normalise
from rsh.losses.hashing import reduced

Array = jax.Array


def _cosine(a: Array, b: Array) -> Array:
  """f32[b, b'] cosine similarities of the rows of a and b (zero rows: 0)."""
  return jnp.matmul(_normalise(a), _normalise(b).T, precision=HIGHEST)


def nt_xent_loss(a: Array, b: Array, *, temperature: float = 0.5,
                 reduction: str = "mean") -> Array:
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
    reduction: "mean" (per anchor) or "sum" of l_i over the 2b anchors (DUCH's
      public code sums, which weighs the term 2b times more against other terms).

  Returns:
    f32[] scalar: the mean (or sum) of l_i over all 2b anchors.
  """
  where = "nt_xent_loss"
  check_rank2(where, a=a, b=b)
  check_same(where, 0, "batch", a=a, b=b)
  check_same(where, 1, "dimension", a=a, b=b)
  n = a.shape[0]
  z = jnp.concatenate([a, b], axis=0)
  logits = _cosine(z, z) / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
  partner = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  log_p = jax.nn.log_softmax(logits, axis=1)
  return reduced(-jnp.take_along_axis(log_p, partner[:, None], axis=1), reduction,
                 where)


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
  check_rank2(where, a=a, b=b)
  check_same(where, 0, "batch", a=a, b=b)
  check_same(where, 1, "dimension", a=a, b=b)
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
  check_rank2(where, a=a, b=b)
  check_same(where, 0, "batch", a=a, b=b)
  check_same(where, 1, "dimension", a=a, b=b)
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
  check_rank2(where, x=x)
  n = x.shape[0]
  if not 1 <= k < n:
    raise ValueError(f"{where}: k must satisfy 1 <= k < batch, got k={k} for x of shape "
                     f"{tuple(x.shape)}")
  c = _cosine(x, x)
  masked = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, jax.lax.stop_gradient(c))
  _, idx = jax.lax.top_k(masked, k)
  return 1.0 - jnp.mean(jnp.take_along_axis(c, idx, axis=1))
