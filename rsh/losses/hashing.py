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

`bit_balance_loss` is a different constraint: each bit +1 on half the batch
(`per="bit"`), or each code with as many +1 as -1 bits (`per="code"`, DUCH's
public code). `shared_quantisation_loss` pulls several codes of one item (its
modalities, its augmented views) towards one common corner, the sign of their
mean (DUCH's public code); `quantisation_loss` pulls each code to its own sign.

Reductions: `reduction="mean"` (the default) averages over every entry, so a
weight does not depend on the batch size or the code length; `"sum"` adds them
up, as DUCH's public code does, so a term's scale grows with b (and l). Under
Adam the overall scale of the loss does not matter, but the ratio of two terms
does: a summed quantisation term weighs l times more against a per-anchor
contrastive term than the mean of the same entries.

Every function is jittable and differentiable, has no state, and returns an
f32[] scalar.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rsh.losses.checks import check_codes, check_rank2, check_same

Array = jax.Array
REDUCTIONS = ("mean", "sum")


def reduced(values: Array, reduction: str, where: str) -> Array:
  """The mean or the sum of every entry of `values` (f32[...]) -> f32[]."""
  if reduction == "mean":
    return jnp.mean(values)
  if reduction == "sum":
    return jnp.sum(values)
  raise ValueError(f"{where}: reduction must be one of {', '.join(REDUCTIONS)}, got "
                   f"{reduction!r}")


def _sign(x: Array) -> Array:
  """+-1 of x with sign(0) = +1, as a constant (no gradient flows into a target)."""
  return jax.lax.stop_gradient(jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype))


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


def quantisation_loss(codes: Array, *, reduction: str = "mean") -> Array:
  """Squared distance of the codes to their own signs (the quantisation error).

  Args:
    codes: f32[b, l] tanh codes.
    reduction: "mean" or "sum" over the b * l entries.

  Returns:
    f32[] scalar: the mean (or sum) over the b * l elements of (h - sign(h))^2,
    the sign under stop_gradient (a constant target) and sign(0) = +1.
  """
  check_rank2("quantisation_loss", codes=codes)
  return reduced(jnp.square(codes - _sign(codes)), reduction, "quantisation_loss")


def shared_quantisation_loss(a: Array, b: Array, c: Array | None = None,
                             d: Array | None = None, *, reduction: str = "mean") -> Array:
  """Squared distance of several codes of the same items to one shared target.

  The target of row i is sign(mean of the given codes' row i), under
  stop_gradient and sign(0) = +1: the modalities (and augmented views) of an
  item are pulled towards the same corner, not each towards its own. DUCH's
  public code does this with a target B kept per training item and refreshed
  once an epoch from the codes of the epoch before; this is its per-step form
  (the current codes' mean, no memory of earlier steps).

  Args:
    a, b: f32[b, l] codes of the same b items (e.g. S1 and S2 codes).
    c, d: optional further f32[b, l] codes of them (e.g. the augmented views').
    reduction: "mean" or "sum" over the m * b * l entries of the m codes given.

  Returns:
    f32[] scalar.
  """
  where = "shared_quantisation_loss"
  codes = {k: v for k, v in dict(a=a, b=b, c=c, d=d).items() if v is not None}
  check_rank2(where, **codes)
  check_same(where, 0, "batch", **codes)
  check_same(where, 1, "code length", **codes)
  stacked = jnp.stack(list(codes.values()))
  target = _sign(jnp.mean(stacked, axis=0))
  return reduced(jnp.square(stacked - target), reduction, where)


def bit_balance_loss(codes: Array, *, per: str = "bit", reduction: str = "mean") -> Array:
  """Balance: +1 as often as -1, per bit over the batch or per code over its bits.

  Args:
    codes: f32[b, l] tanh codes.
    per: "bit": each bit's (mean over the batch of h_ik)^2, a bit +1 on half
      the images; "code": each code's (mean over its l bits of h_ik)^2, half of
      a code's bits +1 (DUCH's public code).
    reduction: "mean": means inside and outside the square, the mean over the
      l bits (or b codes) of the squared mean; 0 for balanced +-1 codes, 1 when
      a bit (or a code) is constant. "sum": sums in both places, e.g. per code
      sum_i (sum_k h_ik)^2, b * l^2 times the mean form (per bit b^2 * l).

  Returns:
    f32[] scalar.
  """
  where = "bit_balance_loss"
  check_rank2(where, codes=codes)
  if per not in ("bit", "code"):
    raise ValueError(f"{where}: per must be 'bit' or 'code', got {per!r}")
  totals = (jnp.sum if reduction == "sum" else jnp.mean)(codes, axis=0 if per == "bit" else 1)
  return reduced(jnp.square(totals), reduction, where)  # (an unknown reduction raises here)
