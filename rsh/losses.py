"""Loss terms as pure functions of arrays, the registry of terms, and their binding.

Two layers:
  1. Array functions (`generator_adversarial_loss`, `discriminator_adversarial_loss`,
     `binary_loss`, `semantic_loss`; the cross-modal S1 / S2 terms in
     `rsh.losses_crossmodal`): pure, jittable, differentiable, no state.
  2. Terms bound to their inputs by the config (kauldron's keyed losses):
       config.losses.semantic = dict(weight=0.1, on="discriminator",
                                     codes="real_hash", similarity="similarity")
     names the registered term `semantic` (or `type=...`), the network whose
     gradient it joins (`on`), its weight, and for each array argument the key
     it reads from the step's inputs (the batch merged with the model outputs);
     any other key is a keyword option of the function (e.g. `real_target`).
     `bind(config.losses, nets=..., terms=...)` turns that into one list of
     `Bound` terms per network, `total_loss(bound, inputs)` sums them.
     A notebook adds or swaps a term by passing `terms={"mine": fn}` (a plain
     function of arrays, or a `Term`); nothing global changes. A config can also
     name a term defined anywhere importable as `type="package.module:fn"`.

Keys the built-in terms read by default:
  real_logit: f32[b]      D's logit on real images;
  fake_logit: f32[b']     D's logit on generated images;
  real_hash:  f32[b, l]   D's tanh code H(x) of the real images;
  similarity: i8[b, b]    SSM block of the batch, +-1 (a batch input).
UAHM's step also offers `real_feature`, `real_image` and `fake_hash`,
`fake_feature`, `fake_image` (D-side terms see real_* and fake_*, G-side terms
fake_*, differentiable in G's parameters).
The cross-modal terms (pairwise, quantisation, bit_balance, nt_xent, infonce,
angular, intra_topk, gradient_penalty) read by default:
  s1_hash, s2_hash:       f32[b, l]  the two encoders' tanh codes of each pair;
  s1_feature, s2_feature: f32[b, d]  their features (pre-hash representations);
  labels:                 [b, c]     multi-hot labels (a batch input);
  grad_norms:             f32[b]     norms of D's input gradients (WGAN-GP).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rsh import losses_crossmodal as cm

Array = jax.Array


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
  _check_codes(codes, "binary_loss")
  return -jnp.mean(jnp.sum(jnp.square(codes), axis=-1))


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
# Terms, their registry and their binding to inputs.


@dataclasses.dataclass(frozen=True)
class Term:
  """A loss function of arrays and, per array argument, the key it reads by default."""
  fn: Callable[..., Array]
  inputs: Mapping[str, str]


def as_term(obj) -> Term:
  """A `Term`, or a plain function whose arguments without defaults are its
  inputs (each reads the key of its own name unless the config binds it)."""
  if isinstance(obj, Term):
    return obj
  if not callable(obj):
    raise TypeError(f"a loss term must be a function or a rsh.losses.Term, got {obj!r}")
  params = inspect.signature(obj).parameters.values()
  return Term(obj, {p.name: p.name for p in params if p.default is inspect.Parameter.empty
                    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)})


# Read-only: extend it by passing `terms=` (merged over it), never by mutating
# the module.
LOSSES: Mapping[str, Term] = types.MappingProxyType({
    "adversarial_d": Term(discriminator_adversarial_loss,
                          {"real_logits": "real_logit", "fake_logits": "fake_logit"}),
    "adversarial_g": Term(generator_adversarial_loss, {"fake_logits": "fake_logit"}),
    "binary": Term(binary_loss, {"codes": "real_hash"}),
    "semantic": Term(semantic_loss, {"codes": "real_hash", "similarity": "similarity"}),
    # Cross-modal S1 / S2 hashing (rsh/losses_crossmodal.py).
    "pairwise": Term(cm.pairwise_similarity_loss,
                     {"codes_a": "s1_hash", "codes_b": "s2_hash",
                      "labels_a": "labels", "labels_b": "labels"}),
    "quantisation": Term(cm.quantisation_loss, {"codes": "s1_hash"}),
    "bit_balance": Term(cm.bit_balance_loss, {"codes": "s1_hash"}),
    "nt_xent": Term(cm.nt_xent_loss, {"a": "s1_hash", "b": "s2_hash"}),
    "infonce": Term(cm.infonce_loss, {"a": "s1_feature", "b": "s2_feature"}),
    "angular": Term(cm.angular_loss, {"a": "s1_feature", "b": "s2_feature"}),
    "intra_topk": Term(cm.intra_topk_loss, {"x": "s1_feature"}),
    "gradient_penalty": Term(cm.gradient_penalty_loss, {"grad_norms": "grad_norms"}),
})


def resolve(type_name: str, terms: Mapping[str, Any] | None = None) -> Term:
  """A term by registry name (`terms` first, then `LOSSES`) or `"module:attr"`."""
  known = {**LOSSES, **(terms or {})}
  if type_name in known:
    return as_term(known[type_name])
  if ":" in type_name:
    module, _, attr = type_name.partition(":")
    try:
      return as_term(getattr(importlib.import_module(module), attr))
    except (ImportError, AttributeError) as e:
      raise ValueError(f"cannot import loss term {type_name!r}: {e}") from None
  raise ValueError(f"unknown loss term {type_name!r}; known terms: {', '.join(sorted(known))} "
                   "(or 'package.module:function')")


@dataclasses.dataclass(frozen=True)
class Bound:
  """One configured term: its function, its inputs' keys, options and weight."""
  name: str
  fn: Callable[..., Array]
  inputs: Mapping[str, str]     # argument -> key of the step's inputs
  options: Mapping[str, Any]    # keyword options of `fn`
  weight: Any


def bind(losses_config: Mapping[str, Any], *, nets: Sequence[str],
         terms: Mapping[str, Any] | None = None) -> dict[str, list[Bound]]:
  """`config.losses` -> {network: [Bound, ...]} in the config's order.

  Each entry is `dict(weight=w, on=<network>, type=<term>, <argument>=<key>,
  <option>=<value>)`; `on` defaults to the first of `nets`, `type` to the
  entry's own name. Every mistake raises a ValueError naming the key.
  """
  out: dict[str, list[Bound]] = {net: [] for net in nets}
  for name, entry in losses_config.items():
    entry = dict(entry)
    where = f"config.losses.{name}"
    term = resolve(str(entry.pop("type", name)), terms)
    on = entry.pop("on", nets[0])
    if on not in nets:
      raise ValueError(f"{where}.on must be one of {', '.join(map(repr, nets))}, got {on!r}")
    if "weight" not in entry:
      raise ValueError(f"{where} needs a weight")
    weight = entry.pop("weight")
    if isinstance(weight, (int, float, np.number)):
      weight = float(weight)
    params = inspect.signature(term.fn).parameters
    options = [p for p, v in params.items() if v.default is not inspect.Parameter.empty]
    inputs, kwargs = dict(term.inputs), {}
    for key, value in entry.items():
      if key in inputs:
        inputs[key] = str(value)
      elif key in options:
        kwargs[key] = value
      else:
        raise ValueError(f"{where}.{key}: not an input ({', '.join(inputs)}) nor an "
                         f"option ({', '.join(options) or 'none'}) of the term")
    out[on].append(Bound(name, term.fn, inputs, kwargs, weight))
  return out


def input_keys(bound: Mapping[str, Sequence[Bound]]) -> set[str]:
  """Every key the bound terms read (the runner provides the batch ones)."""
  return {key for terms in bound.values() for b in terms for key in b.inputs.values()}


class MissingInputError(ValueError):
  """A bound term reads a key the step does not provide (e.g. a typo in the config)."""


def _need(inputs: Mapping[str, Any], key: str, term: str, arg: str) -> Any:
  value = inputs.get(key)
  if value is None:
    have = sorted(k for k, v in inputs.items() if v is not None)
    raise MissingInputError(f"loss term {term!r} reads {arg}={key!r}, which the step does not "
                   f"provide; it has {have}")
  return value


def total_loss(bound: Sequence[Bound], inputs: Mapping[str, Any]
               ) -> tuple[Array, dict[str, Array]]:
  """Weighted sum of bound terms, e.g. L_D = L_DA + w1 L_b + w2 L_s (eq. 5.8).

  Args:
    bound: the terms of one network (`bind(...)[net]`), summed in this order.
      Weights are Python / numpy numbers or jax scalars (e.g. a schedule).
    inputs: the arrays the terms read (the batch merged with model outputs; a
      None value counts as missing).

  Returns:
    (total f32[], {name: f32[] value of the term, unweighted}). A term whose
    weight is a literal 0 is still computed and reported (an ablation keeps
    its curve) but left out of the sum, so a NaN in it cannot leak into the
    total or the gradients.

  Raises:
    ValueError: a term returned a non-scalar.
    MissingInputError: a term's input is missing (the message names the term
      and key; a ValueError, so the CLI prints it as one line).
  """
  total = jnp.zeros((), jnp.float32)
  values = {}
  for b in bound:
    args = {arg: _need(inputs, key, b.name, arg) for arg, key in b.inputs.items()}
    value = jnp.asarray(b.fn(**args, **b.options))
    if value.ndim != 0:
      raise ValueError(f"loss term {b.name!r} must return a scalar, got shape {value.shape}")
    values[b.name] = value
    if isinstance(b.weight, (int, float, np.number)) and b.weight == 0:
      continue
    total = total + b.weight * value
  return total, values
