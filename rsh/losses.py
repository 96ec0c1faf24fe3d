"""Loss terms of UAHM (thesis eq. 5.3-5.8) as pure functions, and their composition.

Two layers:
  1. Array functions (`generator_adversarial_loss`, `discriminator_adversarial_loss`,
     `binary_loss`, `semantic_loss`): pure, jittable, differentiable, no state.
  2. Terms with the uniform signature `term(outputs, batch) -> scalar`, keyed by
     name in `LOSSES`, and `total_loss(weights, outputs, batch, terms=...)`, which
     sums the weighted terms a config names. A notebook adds or swaps a term by
     passing `terms={"mine": fn}` (merged over `LOSSES`); nothing global changes.

Keys the built-in terms read:
  outputs["real_logit"]: f32[b]      D's logit on real images;
  outputs["fake_logit"]: f32[b']     D's logit on generated images;
  outputs["real_hash"]:  f32[b, l]   D's tanh code H(x) of the real images;
  batch["similarity"]:   i8[b, b]    SSM block of the batch, +-1.
UAHM's step also gives every term `real_feature`, `real_image` and
`fake_hash`, `fake_feature`, `fake_image` (D-side terms see real_* and fake_*,
G-side terms fake_*, differentiable in G's parameters).
"""

from __future__ import annotations

import types
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Term = Callable[[Mapping[str, Any], Mapping[str, Any]], Array]


def generator_adversarial_loss(fake_logits: Array) -> Array:
  """L_GA = -E_z log D(G(z)) (eq. 5.3), the non-saturating generator loss.

  Args:
    fake_logits: f32[b] D's logits on generated images; D = sigmoid(logit).

  Returns:
    f32[] scalar. `log_sigmoid` keeps it finite (and its gradient non-zero)
    for any logit, where log(sigmoid(.)) underflows to log(0) below about -88.
  """
  return -jnp.mean(jax.nn.log_sigmoid(fake_logits))


def discriminator_adversarial_loss(real_logits: Array, fake_logits: Array, *,
                                   real_target: float = 1.0) -> Array:
  """L_DA = -E_x log D(x) - E_z log(1 - D(G(z))) (eq. 5.4).

  Args:
    real_logits: f32[b] D's logits on real images.
    fake_logits: f32[b'] D's logits on generated images.
    real_target: label of real images; 1.0 is eq. 5.4. A value below 1 (0.9 is
      usual) is one-sided label smoothing (Salimans et al., 2016): the real
      term becomes the cross-entropy with target `real_target`; fake targets
      stay 0.

  Returns:
    f32[] scalar: mean over real images + mean over generated images.
  """
  # log(1 - sigmoid(a)) = log_sigmoid(-a): finite for any logit.
  real = -(real_target * jax.nn.log_sigmoid(real_logits)
           + (1.0 - real_target) * jax.nn.log_sigmoid(-real_logits))
  fake = -jax.nn.log_sigmoid(-fake_logits)
  return jnp.mean(real) + jnp.mean(fake)


def binary_loss(h: Array) -> Array:
  """L_b = -E_x ||H(x)||^2 (eq. 5.5): rewards codes near the corners +-1.

  Normalisation follows the equation literally: squared Euclidean norm, i.e. a
  SUM over the l bits, then the mean over the batch. Its range is therefore
  [-l, 0] and its scale grows with the code length (at w1 = 0.1 and l = 64 it
  can reach -6.4); divide the weight by l for a per-bit mean.

  Args:
    h: f32[b, l] tanh codes of real images.

  Returns:
    f32[] scalar.
  """
  _check_codes(h, "binary_loss")
  return -jnp.mean(jnp.sum(jnp.square(h), axis=-1))


def semantic_loss(h: Array, s: Array, *, include_diagonal: bool = True) -> Array:
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
    h: f32[b, l] tanh codes of the real images of a batch.
    s: [b, b] similarities of those images, +1 similar / -1 dissimilar; any
      real or integer dtype (the SSM rows arrive as int8).
    include_diagonal: whether the b pairs (i, i) count.

  Returns:
    f32[] scalar.
  """
  _check_codes(h, "semantic_loss")
  b, l = h.shape
  if s.shape != (b, b):
    raise ValueError(f"semantic_loss: similarity must be [{b}, {b}] for {b} codes, "
                     f"got shape {tuple(s.shape)}")
  # HIGHEST: bf16 passes (TPU default) would put ~1e-2 error on h_i . h_j / l.
  inner = jnp.matmul(h, h.T, precision=jax.lax.Precision.HIGHEST) / l
  sq = jnp.square(inner - s.astype(inner.dtype))
  if include_diagonal:
    return jnp.mean(sq)
  if b < 2:
    raise ValueError("semantic_loss: include_diagonal=False needs at least 2 codes")
  return (jnp.sum(sq) - jnp.sum(jnp.diagonal(sq))) / (b * (b - 1))


def _check_codes(h: Array, where: str) -> None:
  if h.ndim != 2:
    raise ValueError(f"{where}: codes must be [batch, code_length], got shape {tuple(h.shape)}")


# ----------------------------------------------------------------------------
# Terms: term(outputs, batch) -> scalar.


def _need(mapping: Mapping[str, Any], key: str, term: str, where: str) -> Any:
  value = mapping.get(key) if mapping is not None else None
  if value is None:
    have = sorted(k for k, v in (mapping or {}).items() if v is not None)
    raise KeyError(f"loss term {term!r} needs {where}[{key!r}]; {where} has {have}")
  return value


def adversarial_g(outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Array:
  """`generator_adversarial_loss(outputs["fake_logit"])`."""
  del batch
  return generator_adversarial_loss(_need(outputs, "fake_logit", "adversarial_g", "outputs"))


def adversarial_d(outputs: Mapping[str, Any], batch: Mapping[str, Any], *,
                  real_target: float = 1.0) -> Array:
  """`discriminator_adversarial_loss(outputs["real_logit"], outputs["fake_logit"])`.

  For one-sided label smoothing register
  `functools.partial(adversarial_d, real_target=0.9)` under this name.
  """
  del batch
  return discriminator_adversarial_loss(
      _need(outputs, "real_logit", "adversarial_d", "outputs"),
      _need(outputs, "fake_logit", "adversarial_d", "outputs"), real_target=real_target)


def binary(outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Array:
  """`binary_loss(outputs["real_hash"])` (real images only, eq. 5.8)."""
  del batch
  return binary_loss(_need(outputs, "real_hash", "binary", "outputs"))


def semantic(outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> Array:
  """`semantic_loss(outputs["real_hash"], batch["similarity"])`."""
  return semantic_loss(_need(outputs, "real_hash", "semantic", "outputs"),
                       jnp.asarray(_need(batch, "similarity", "semantic", "batch")))


# Read-only: extend it by building a new dict (`{**LOSSES, "mine": fn}`) or by
# passing `terms=` to `total_loss`, never by mutating the module.
LOSSES: Mapping[str, Term] = types.MappingProxyType({
    "adversarial_d": adversarial_d,
    "adversarial_g": adversarial_g,
    "binary": binary,
    "semantic": semantic,
})


def total_loss(weights: Mapping[str, Any], outputs: Mapping[str, Any],
               batch: Mapping[str, Any], *,
               terms: Mapping[str, Term] | None = None) -> tuple[Array, dict[str, Array]]:
  """Weighted sum of named loss terms, e.g. L_D = L_DA + w1 L_b + w2 L_s (eq. 5.8).

  Args:
    weights: {term name: weight}; the terms to use, in this order. Weights
      are Python / numpy numbers or jax scalars (e.g. a schedule).
    outputs: model outputs the terms read (see the module docstring).
    batch: the batch the terms read (e.g. "similarity").
    terms: extra or replacement terms `fn(outputs, batch) -> scalar`, merged
      over `LOSSES` (so `{**LOSSES, "mine": fn}` and `{"mine": fn}` both work).

  Returns:
    (total f32[], {name: f32[] value of the term, unweighted}). A term whose
    weight is a literal 0 is still computed and reported (an ablation keeps
    its curve) but left out of the sum, so a NaN in it cannot leak into the
    total or the gradients.

  Raises:
    ValueError: a weight names an unknown term (the message lists the known
      ones), or a term returned a non-scalar.
    KeyError: a term's input is missing from `outputs` / `batch`.
  """
  known = dict(LOSSES) if terms is None else {**LOSSES, **terms}
  unknown = [name for name in weights if name not in known]
  if unknown:
    raise ValueError(f"unknown loss term(s) {unknown}; known terms: {sorted(known)}")
  total = jnp.zeros((), jnp.float32)
  values = {}
  for name, weight in weights.items():
    value = jnp.asarray(known[name](outputs, batch))
    if value.ndim != 0:
      raise ValueError(f"loss term {name!r} must return a scalar, got shape {value.shape}")
    values[name] = value
    if isinstance(weight, (int, float, np.number)) and weight == 0:
      continue
    total = total + weight * value
  return total, values
