"""Loss terms as pure functions of arrays, the registry of terms, and their binding.

Two layers:
  1. Array functions, one module per family: pure, jittable, differentiable,
     no state, every one re-exported here (`rsh.losses.binary_loss`):
       `adversarial`  generator / discriminator GAN losses (label smoothing),
                      ACGAN's class cross-entropy, gradient penalty;
       `hashing`      binary (eq. 5.5), quantisation (own or shared target),
                      bit balance (per bit or per code);
       `contrastive`  NT-Xent, InfoNCE, angular, intra-modal top-k;
       `metric`       triplets: given, stacked (MiLAN), batch-hard, batch-all,
                      semi-hard (each with an optional row `mask`); MiLAN's
                      push and code balance;
       `interclass`   MIRS's inter-class triplets from K-means clusters;
       `pairwise`     label similarity, pairwise likelihood, semantic (eq. 5.6).
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

Keys the built-in terms read by default (`LOSSES`):
  UAHM's terms, in UAHM's names (adversarial_d, adversarial_g, binary, semantic):
    real_logit: f32[b]      D's logit on real images;
    fake_logit: f32[b']     D's logit on generated images;
    real_hash:  f32[b, l]   D's tanh code H(x) of the real images;
    similarity: i8[b, b]    SSM block of the batch, +-1 (a batch input).
  Generic terms:
    hash:       f32[b, l]   tanh codes (quantisation, bit_balance), or any codes
                            (triplet, batch_hard, batch_all, semi_hard);
    sigmoid:    f32[b, l]   sigmoid codes in [0, 1] (MiLAN's push, balance);
    labels:     [b, c]      multi-hot labels, a batch input (pairwise; the
                            metric terms also take int[b] class ids);
    grad_norms: f32[b]      norms of D's input gradients (gradient_penalty).
  ACGAN (thesis ch. 4): `classification` reads `labels` and the logits the
  config names (`real_class_logit` / `fake_class_logit`, f32[b, c]).
  No default, so the config names them: pairwise's codes_a / codes_b,
  nt_xent's, infonce's and angular's a / b, shared_quantisation's a / b (and
  c / d, read only when named), intra_topk's x (which codes or features of
  which modality is the method's choice).
UAHM's step also offers `real_feature`, `real_image` and `fake_hash`,
`fake_feature`, `fake_image` (D-side terms see real_* and fake_*, G-side terms
fake_*, differentiable in G's parameters); the cross-modal step offers
`s1_hash`, `s2_hash`, `s1_feature`, `s2_feature` and more (rsh/methods/crossmodal.py).
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

from rsh.losses.adversarial import (classification_loss, discriminator_adversarial_loss,
                                    generator_adversarial_loss, gradient_penalty_loss)
from rsh.losses.contrastive import angular_loss, infonce_loss, intra_topk_loss, nt_xent_loss
from rsh.losses.hashing import (binary_loss, bit_balance_loss, quantisation_loss,
                                shared_quantisation_loss)
from rsh.losses.interclass import interclass_loss, interclass_mask
from rsh.losses.metric import (MINERS, batch_all_loss, batch_hard_loss, code_balance_loss,
                               pairwise_distances, positive_mask, push_loss, semi_hard_loss,
                               stacked_triplet_loss, triplet_loss)
from rsh.losses.pairwise import label_similarity, pairwise_similarity_loss, semantic_loss

Array = jax.Array

__all__ = [
    "Bound", "LOSSES", "MINERS", "MissingInputError", "Term", "angular_loss", "as_term",
    "batch_all_loss", "batch_hard_loss", "binary_loss", "bind", "bit_balance_loss",
    "classification_loss", "code_balance_loss", "discriminator_adversarial_loss",
    "generator_adversarial_loss", "gradient_penalty_loss", "infonce_loss", "input_keys", "interclass_loss", "interclass_mask",
    "intra_topk_loss", "label_similarity", "nt_xent_loss", "pairwise_distances",
    "pairwise_similarity_loss", "positive_mask", "push_loss", "quantisation_loss", "resolve",
    "semantic_loss", "semi_hard_loss", "shared_quantisation_loss", "stacked_triplet_loss",
    "total_loss", "triplet_loss",
]


@dataclasses.dataclass(frozen=True)
class Term:
  """A loss function of arrays and, per array argument, the key it reads by
  default (None: no default, the config must name the key). `optional` names
  array arguments read only when the config binds them to a key (e.g. a
  miner's `mask="labelled"`); otherwise the function's default (None) holds."""
  fn: Callable[..., Array]
  inputs: Mapping[str, str | None]
  optional: tuple[str, ...] = ()


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
    # UAHM (thesis ch. 5): its own key names are the defaults.
    "adversarial_d": Term(discriminator_adversarial_loss,
                          {"real_logits": "real_logit", "fake_logits": "fake_logit"}),
    "adversarial_g": Term(generator_adversarial_loss, {"fake_logits": "fake_logit"}),
    "binary": Term(binary_loss, {"codes": "real_hash"}),
    "semantic": Term(semantic_loss, {"codes": "real_hash", "similarity": "similarity"}),
    # Generic terms (the cross-modal configs name their s1_* / s2_* keys).
    "pairwise": Term(pairwise_similarity_loss,
                     {"codes_a": None, "codes_b": None,
                      "labels_a": "labels", "labels_b": "labels"}),
    "quantisation": Term(quantisation_loss, {"codes": "hash"}),
    "bit_balance": Term(bit_balance_loss, {"codes": "hash"}),
    # DUCH: one target for several codes of the same items (c, d only when bound).
    "shared_quantisation": Term(shared_quantisation_loss, {"a": None, "b": None}, ("c", "d")),
    "nt_xent": Term(nt_xent_loss, {"a": None, "b": None}),
    "infonce": Term(infonce_loss, {"a": None, "b": None}),
    "angular": Term(angular_loss, {"a": None, "b": None}),
    "intra_topk": Term(intra_topk_loss, {"x": None}),
    "gradient_penalty": Term(gradient_penalty_loss, {"grad_norms": "grad_norms"}),
    # ACGAN's auxiliary classifier (eq. 4.8): the config names real_ / fake_class_logit.
    "classification": Term(classification_loss, {"logits": None, "labels": "labels"}),
    # Metric learning (MiLAN, thesis ch. 4): triplet terms on the codes, the
    # code-shape terms on the sigmoid outputs.
    "triplet": Term(stacked_triplet_loss, {"codes": "hash"}),
    "batch_hard": Term(batch_hard_loss, {"codes": "hash", "labels": "labels"}, ("mask",)),
    "batch_all": Term(batch_all_loss, {"codes": "hash", "labels": "labels"}, ("mask",)),
    "semi_hard": Term(semi_hard_loss, {"codes": "hash", "labels": "labels"}, ("mask",)),
    # MIRS: triplets from K-means clusters of the frozen features (a method's
    # `clusters` batch input, rsh/methods/feature_hash.py).
    "interclass": Term(interclass_loss, {"codes": "hash", "labels": "labels",
                                         "clusters": "clusters"}, ("mask",)),
    "push": Term(push_loss, {"codes": "sigmoid"}),
    "balance": Term(code_balance_loss, {"codes": "sigmoid"}),
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
  entry's own name. An argument whose term has no default key must be named.
  Every mistake raises a ValueError naming the key.
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
    options = [p for p, v in params.items() if v.default is not inspect.Parameter.empty
               and p not in term.optional]
    inputs, kwargs = dict(term.inputs), {}
    for key, value in entry.items():
      if key in inputs or key in term.optional:
        inputs[key] = str(value)
      elif key in options:
        kwargs[key] = value
      else:
        known = ", ".join([*inputs, *term.optional])
        raise ValueError(f"{where}.{key}: not an input ({known}) nor an "
                         f"option ({', '.join(options) or 'none'}) of the term")
    unnamed = [arg for arg, key in inputs.items() if key is None]
    if unnamed:
      raise ValueError(f"{where}: the term has no default key for {', '.join(unnamed)}; "
                       f"name each (e.g. {where}.{unnamed[0]}=\"s1_hash\")")
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
