"""Cross-modal hashing of paired Sentinel-1 / Sentinel-2 patches (SPEC §4).

One CNN per modality (`rsh.models.crossmodal`), trained from scratch, each
with a tanh hash head into the same l bits; the loss terms alone make the
three configs:

  configs/crossmodal.py  supervised: inter- and intra-modal pairwise terms on
                         multi-label similarity, quantisation, bit balance;
  configs/sscm.py        self-supervised (after SS-CM-RSIR): InfoNCE between
                         the modalities, angular, intra-modal top-k cosine;
  configs/duch.py        contrastive-adversarial (after DUCH): NT-Xent inter-
                         and intra-modal (two augmented views), a code
                         discriminator with gradient penalty, quantisation,
                         bit balance.

`config.data.inputs` maps each modality to its data view (`{"s1": "s1",
"s2": "pixels"}`): the batch holds one array per modality under its name,
rows of the same pairs. Every view is standardised per channel with the
training set's mean and std (S1 in dB and S2 reflectances alike).

Networks (`config.losses.*.on`): "encoders" (both CNNs, one optimiser) and,
with `config.model.discriminator`, "discriminator". Keys the terms read:
  `<m>_hash`, `<m>_feature` for each modality m (and `<m>_hash_aug`,
  `<m>_feature_aug` of a second, augmented view when a term reads one);
  `<m>_logit`: the discriminator's logit on m's codes (both sides);
  `grad_norms`: |d logit / d code| at codes interpolated between the
  modalities (discriminator side, for the gradient penalty);
  `labels`: the pairs' multi-hot labels (a batch input, supervised terms only).
One step: the discriminator's update on the current codes (if any), then the
encoders' against the updated discriminator (as a GAN's G follows its D).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rsh import augment as raug
from rsh import data as rdata
from rsh import method as rmethod
from rsh import losses as rlosses
from rsh import update
from rsh.models import crossmodal as cm

NETS = ("encoders", "discriminator")


def modalities(config, data) -> dict[str, str]:
  """`config.data.inputs` -> {modality: canonical view name}, checked."""
  inputs = config.data.get("inputs")
  if config.data.get("input") not in (None, "pixels"):
    # One key per thing: `data.input` is a single-view method's view, which this one ignores.
    raise ValueError(f"config.data.input={config.data.input!r} is the view of a single-view "
                     "method; the cross-modal method reads config.data.inputs "
                     "(modality -> view), e.g. --config.data.inputs.s2=pixels")
  if not inputs or len(inputs) < 2:
    raise ValueError("config.data.inputs must map two or more modalities to data views, "
                     f"e.g. dict(s1='s1', s2='pixels'); got {inputs!r}")
  return {str(m): data.view_name(v) for m, v in dict(inputs).items()}


def build(config, data, terms=None) -> rmethod.Method:
  views = modalities(config, data)
  mods = tuple(views)
  bits = rmethod.code_bits(config)
  m = config.model
  model = cm.CrossModalHasher(mods, bits, tuple(m.get("widths", (32, 64, 128))),
                              int(m.get("feature_dim", 256)))
  disc = cm.CodeDiscriminator(tuple(m.get("disc_hidden", (128, 64)))) if m.get(
      "discriminator", False) else None
  bound = rlosses.bind(config.losses, nets=NETS if disc else NETS[:1], terms=terms)
  train_rows = {mod: data.train_rows(v) for mod, v in views.items()}
  for mod, x in train_rows.items():
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
      raise ValueError(f"modality {mod!r} (view {views[mod]!r}) must be square images "
                       f"[n, h, h, c] for the CNN encoder, got {list(x.shape)}")
  stats = {mod: rdata.channel_stats(x) for mod, x in train_rows.items()}
  tx = update.optimizer(config.optim)

  def standardise(mod, x):
    mean, std = stats[mod]
    return (jnp.asarray(x, jnp.float32) - mean) / std

  def init(rng):
    k_e, k_d = jax.random.split(rng)
    example = {mod: jnp.zeros((2,) + x.shape[1:], jnp.float32) for mod, x in train_rows.items()}
    nets = {"encoders": update.init_net(model, tx, k_e, example)}
    if disc is not None:
      nets["discriminator"] = update.init_net(disc, tx, k_d, jnp.zeros((2, bits)))
    return update.TrainState.create(nets)

  step = make_step(model, disc, bound, tx, mods, standardise,
                   noise=float(m.get("augment_noise", 0.1)))
  encoders: Mapping[str, rmethod.Encode] = {
      views[mod]: make_encoder(model, mod, standardise) for mod in mods}
  return rmethod.Method(init=init, step=step, encode=encoders[views[mods[0]]],
                        encoders=encoders, terms=bound,
                        batch_views={mod: views[mod] for mod in mods})


def make_step(model, disc, bound, tx, mods, standardise, noise: float):
  """The pure step: the code discriminator's update (if any, on the codes
  under stop-gradient, with its gradient-penalty inputs), then the encoders'
  (with augmented views when a bound term reads `*_aug`)."""
  needs_aug = any(k.endswith("_aug") for k in rlosses.input_keys(bound))

  def logits(params, out):
    return {f"{mod}_logit": disc.apply({"params": params}, out[f"{mod}_hash"]) for mod in mods}

  def step(state: update.TrainState, batch, rng):
    k_aug, k_gp = jax.random.split(rng)
    enc = state.nets["encoders"]
    x = {mod: standardise(mod, batch[mod]) for mod in mods}
    metrics, nets = {}, {}
    d_params = None
    if disc is not None:
      d = state.nets["discriminator"]
      out, _ = update.apply(model, enc.params, enc.batch_stats, x)
      codes = jax.lax.stop_gradient(out)
      a, b = codes[f"{mods[0]}_hash"], codes[f"{mods[1]}_hash"]
      eps = jax.random.uniform(k_gp, (a.shape[0], 1))
      mixed = eps * a + (1.0 - eps) * b

      def d_forward(params):
        one = lambda c: disc.apply({"params": params}, c[None])[0]
        grads = jax.vmap(jax.grad(one))(mixed)
        norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=-1) + 1e-12)
        return {**logits(params, codes), "grad_norms": norms}, d.batch_stats

      nets["discriminator"], d_metrics = update.update_net(d, tx, d_forward,
                                                           bound["discriminator"], batch, "d")
      metrics.update(d_metrics)
      d_params = nets["discriminator"].params

    def e_forward(params):
      out, new_stats = update.apply(model, params, enc.batch_stats, x)
      if needs_aug:
        x_aug = {mod: raug.random_flips_noise(x[mod], jax.random.fold_in(k_aug, i), noise)
                 for i, mod in enumerate(mods)}
        out_aug, new_stats = update.apply(model, params, new_stats, x_aug)
        out.update({f"{k}_aug": v for k, v in out_aug.items()})
      if d_params is not None:
        out.update(logits(d_params, out))
      return out, new_stats

    nets["encoders"], e_metrics = update.update_net(enc, tx, e_forward, bound["encoders"],
                                                    batch, "enc")
    metrics.update(e_metrics)
    return update.TrainState(step=state.step + 1, nets=nets), metrics

  return step


def make_encoder(model, mod: str, standardise) -> rmethod.Encode:
  """The encoder of one modality: {output: f32[n, ...]} of its rows, in fixed-shape batches."""
  forward = jax.jit(lambda params, bstats, x: {
      k[len(mod) + 1:]: v for k, v in model.apply(
          {"params": params, "batch_stats": bstats}, {mod: standardise(mod, x)},
          train=False).items()})

  def encode(state, x) -> dict[str, np.ndarray]:
    e = state.nets["encoders"]
    return update.in_batches(lambda chunk: forward(e.params, e.batch_stats, chunk), x)

  return encode
