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
with `config.model.discriminator`, "discriminator" (its own optimiser when
`config.optim.discriminator` is set, else one like the encoders'). Keys the
terms read:
  `<m>_hash`, `<m>_feature` for each modality m (and `<m>_hash_aug`,
  `<m>_feature_aug` of a second, augmented view when a term reads one);
  `<m>_logit` (`<m>_logit_aug`): the discriminator's logit on m's codes (of
  the augmented view), on both sides;
  `grad_norms` (`grad_norms_aug`): |d logit / d code| at codes interpolated
  between the modalities' (augmented) codes, discriminator side, for the
  gradient penalty: one mixing weight per row (`config.model.gp_mix="row"`)
  or per entry (`"element"`, DUCH's public code);
  `labels`: the pairs' multi-hot labels (a batch input, supervised terms only).
One step: the encoders' forward pass, then the discriminator's update (if any)
on its codes under stop-gradient, then the encoders' update against the
updated discriminator (as a GAN's G follows its D), pulled back through the
same forward pass. BatchNorm running statistics: of the clean pass and then
the augmented one (`config.model.aug_bn_stats=True`, the default), or of the
clean pass alone (False: the codes retrieval encodes are clean ones).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

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
  gp_mix = str(m.get("gp_mix", "row"))
  if gp_mix not in ("row", "element"):
    raise ValueError(f"config.model.gp_mix must be 'row' or 'element', got {gp_mix!r}")
  stats = {mod: rdata.channel_stats(x) for mod, x in train_rows.items()}
  txs = {"encoders": update.optimizer(config.optim)}
  if disc is not None:
    txs["discriminator"] = discriminator_optimizer(config.optim)

  def standardise(mod, x):
    mean, std = stats[mod]
    return (jnp.asarray(x, jnp.float32) - mean) / std

  def init(rng):
    k_e, k_d = jax.random.split(rng)
    example = {mod: jnp.zeros((2,) + x.shape[1:], jnp.float32) for mod, x in train_rows.items()}
    nets = {"encoders": update.init_net(model, txs["encoders"], k_e, example)}
    if disc is not None:
      nets["discriminator"] = update.init_net(disc, txs["discriminator"], k_d,
                                              jnp.zeros((2, bits)))
    return update.TrainState.create(nets)

  step = make_step(model, disc, bound, txs, mods, standardise,
                   noise=float(m.get("augment_noise", 0.1)),
                   aug_bn_stats=bool(m.get("aug_bn_stats", True)), gp_mix=gp_mix)
  encoders: Mapping[str, rmethod.Encode] = {
      views[mod]: make_encoder(model, mod, standardise) for mod in mods}
  return rmethod.Method(init=init, step=step, encode=encoders[views[mods[0]]],
                        encoders=encoders, terms=bound,
                        batch_views={mod: views[mod] for mod in mods})


def discriminator_optimizer(optim) -> optax.GradientTransformation:
  """The code discriminator's optimiser: `config.optim.discriminator` when set
  (DUCH's public code gives it its own Adam), else one like the encoders'.

  `weight_decay` is PyTorch's `Adam(weight_decay=wd)`: wd * params added to
  the gradient before Adam's moments (add_decayed_weights, then adam), not
  AdamW's decoupled decay (`optax.adamw`), which bypasses the moments.
  """
  own = optim.get("discriminator")
  if own is None:
    return update.optimizer(optim)
  adam = update.optimizer(own)
  wd = float(own.get("weight_decay", 0.0))
  return optax.chain(optax.add_decayed_weights(wd), adam) if wd else adam


def make_step(model, disc, bound, txs, mods, standardise, noise: float,
              aug_bn_stats: bool = True, gp_mix: str = "row"):
  """The pure step: the encoders' forward pass (with augmented views when a
  bound term reads `*_aug`), the code discriminator's update (if any: on the
  codes under stop-gradient, with its gradient-penalty inputs), then the
  encoders' update. `txs`: {network: optax transformation}."""
  wanted = rlosses.input_keys(bound)
  needs_aug = any(k.endswith("_aug") for k in wanted)
  a_mod, b_mod = mods[0], mods[1]

  def with_logits(params, out: Mapping) -> dict:
    # D's logit on the clean and the augmented codes alike, where a term reads it.
    return {f"{m}_logit{s}": disc.apply({"params": params}, out[f"{m}_hash{s}"])
            for m in mods for s in ("", "_aug")
            if f"{m}_logit{s}" in wanted and f"{m}_hash{s}" in out}

  def enc_forward(enc, x, k_aug):
    def forward(params):
      out, new_stats = update.apply(model, params, enc.batch_stats, x)
      if needs_aug:
        x_aug = {mod: raug.random_flips_noise(x[mod], jax.random.fold_in(k_aug, i), noise)
                 for i, mod in enumerate(mods)}
        out_aug, aug_stats = update.apply(model, params, new_stats, x_aug)
        if aug_bn_stats:
          new_stats = aug_stats
        out.update({f"{k}_aug": v for k, v in out_aug.items()})
      return out, new_stats
    return forward

  def d_forward(d, codes, k_gp):
    mixes = {"grad_norms": ("", k_gp), "grad_norms_aug": ("_aug", jax.random.fold_in(k_gp, 1))}
    mixes = {k: v for k, v in mixes.items() if k in wanted}

    def forward(params):
      out = with_logits(params, codes)
      one = lambda c: disc.apply({"params": params}, c[None])[0]
      for key, (suffix, k) in mixes.items():
        a, b = codes[f"{a_mod}_hash{suffix}"], codes[f"{b_mod}_hash{suffix}"]
        eps = jax.random.uniform(k, (a.shape[0], 1 if gp_mix == "row" else a.shape[1]))
        grads = jax.vmap(jax.grad(one))(eps * a + (1.0 - eps) * b)
        out[key] = jnp.sqrt(jnp.sum(jnp.square(grads), axis=-1) + 1e-12)
      return out, d.batch_stats
    return forward

  def step(state: update.TrainState, batch, rng):
    k_aug, k_gp = jax.random.split(rng)
    enc = state.nets["encoders"]
    x = {mod: standardise(mod, batch[mod]) for mod in mods}
    forward = enc_forward(enc, x, k_aug)
    if disc is None:
      e_net, metrics = update.update_net(enc, txs["encoders"], forward, bound["encoders"],
                                         batch, "enc")
      return update.TrainState(step=state.step + 1, nets={"encoders": e_net}), metrics
    # One forward pass serves both updates: D reads its codes (as DUCH's public
    # code, which trains D on the same codes the encoders' loss is taken of).
    out, pull, new_stats = jax.vjp(forward, enc.params, has_aux=True)
    codes = jax.lax.stop_gradient(out)
    d_net, metrics = update.update_net(state.nets["discriminator"], txs["discriminator"],
                                       d_forward(state.nets["discriminator"], codes, k_gp),
                                       bound["discriminator"], batch, "d")
    head = lambda y: {**y, **with_logits(d_net.params, y)}
    e_net, e_metrics = update.update_net_from(enc, txs["encoders"], out, pull, new_stats, head,
                                              bound["encoders"], batch, "enc")
    return (update.TrainState(step=state.step + 1, nets={"encoders": e_net,
                                                         "discriminator": d_net}),
            {**metrics, **e_metrics})

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
