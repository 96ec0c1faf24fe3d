"""Code-shape loss terms: how close codes are to +-1, and how balanced each bit is.

Two terms pull tanh codes h: f32[b, l] towards the corners +-1. They are
different formulas with different gradients, so they stay two terms:

  `binary_loss`        L_b = -mean_i sum_k h_ik^2   (thesis eq. 5.5, UAHM)
    A reward on the squared norm, summed over the l bits: range [-l, 0] for
    |h| <= 1, so its scale grows with the code length. Its gradient -2h / b is
    0 at h = 0 and largest at the corners: it sharpens codes that already lean
    one way and barely moves undecided ones. It keeps rewarding |h| > 1, so it
    needs bounded (tanh) codes.
  `quantisation_loss`  L_q = mean_ik (h_ik - sign(h_ik))^2   (DPSH, DUCH)
    The mean squared distance to the nearest corner, averaged over bits and
    batch: range [0, 1] for |h| <= 1 whatever l. Its gradient 2(h - sign h) / (b l)
    is largest at h = 0 and 0 at the corners, and it penalises |h| > 1.

For |h| <= 1, (h - sign h)^2 = 1 - 2|h| + h^2: not a multiple of -h^2 (plus a
constant) however the weight is scaled, so an option on one term would hide
a second formula behind one name. Use `binary` to reproduce UAHM (its
configs' numbers are eq. 5.5's; `recipe=tuned` divides its weight by l for a
per-bit mean); use `quantisation` in new methods (the cross-modal configs),
where a weight should not depend on the code length and codes may come from a
head that is not tanh-bounded.

`bit_balance_loss` is a different constraint: each bit +1 on half the batch.

Every function is jittable and differentiable, has no state, and returns an
f32[] scalar.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rsh.losses.checks import check_codes, check_rank2

Array = jax.Array


def binary_loss(codes: Array) -> Array:
  """L_b = -E_x ||H(x)||^2 (eq. 5.5): rewards codes near the corners +-1.

  Normalisation follows the equation literally: squared Euclidean norm, i.e. a
  SUM over the l bits, then the mean over the batch. Its range is therefore
  [-l, 0] and its scale grows with the code length (at w1 = 0.1 and l = 64 it
  can reach -6.4); divide the weight by l for a per-bit mean.

  Args:
    codes: f32[b, l] tanh codes of real images.

  Returns:
    f32[] scalar.
  """
  check_codes(codes, "binary_loss")
  return -jnp.mean(jnp.sum(jnp.square(codes), axis=-1))


def quantisation_loss(codes: Array) -> Array:
  """Mean squared distance of the codes to their signs (the quantisation error).

  Args:
    codes: f32[b, l] tanh codes.

  Returns:
    f32[] scalar: mean over the b * l elements of (h - sign(h))^2, the sign
    under stop_gradient (a constant target) and sign(0) = +1.
  """
  check_rank2("quantisation_loss", codes=codes)
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
  check_rank2("bit_balance_loss", codes=codes)
  return jnp.mean(jnp.square(jnp.mean(codes, axis=0)))
