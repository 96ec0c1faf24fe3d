"""UAHM (thesis ch. 5) and its baselines, one method selected by config.

UAHM: a DCGAN whose discriminator also emits a tanh hash code (D: adversarial +
w1 binary + w2 semantic loss, G: adversarial). GAN-RGB / GAN-MS: `model.head =
"gan"`, non-binary D features. DHNN-MS: `model.adversarial = False`, no G.

Networks "discriminator" and "generator" (`config.losses.*.on`); D-side terms
read `real_*` / `fake_*`, G-side terms `fake_*` (`_hash _logit _feature _image`).

D's BatchNorm running statistics are what every code is computed with (the
hash layer is tanh(BN(dense))), so where they come from is `config.model.d_stats`:
  - "real" (default): only D's pass over real images updates them (the fake
    pass is normalised by its own batch statistics; its update is dropped);
  - "recalibrate": as "real", and before encoding they are re-estimated exactly
    (mean of per-batch moments) on the training images, per evaluated state;
  - "real_and_fake": the literal DCGAN/thesis code: half their weight is then
    generated images, which drift with G and skew the codes (docs/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rsh import data as rdata
from rsh import gan
from rsh import method as rmethod
from rsh import losses as rlosses
from rsh import update
from rsh.models import dcgan

NETS = gan.NETS
D_STATS = ("real", "recalibrate", "real_and_fake")


def _d_stats(config) -> str:
  mode = config.model.get("d_stats", "real")
  if mode not in D_STATS:
    raise ValueError(f"config.model.d_stats must be one of {', '.join(D_STATS)}; got {mode!r}")
  return mode


def build_models(config):
  bits = rmethod.code_bits(config)
  channels = len(rdata.resolve_bands(config.data.bands))
  impl = config.model.get("conv_impl", "phase")
  disc = dcgan.Discriminator(channels=channels, bits=bits, head=config.model.head, impl=impl)
  gen = (dcgan.Generator(channels=channels, impl=impl)
         if config.model.adversarial else None)
  return gen, disc


def init_state(config, gen, disc, rng) -> update.TrainState:
  k_d, k_g = jax.random.split(rng)
  tx = update.optimizer(config.optim)
  nets = {"discriminator": update.init_net(disc, tx, k_d, jnp.zeros((2, 64, 64, disc.channels)))}
  if gen is not None:
    nets["generator"] = update.init_net(gen, tx, k_g, jnp.zeros((2, int(config.model.bits))))
  return update.TrainState.create(nets)


def make_gan(config, gen, disc) -> gan.Gan:
  """UAHM's networks on the shared GAN step (`rsh.gan`): z has the code's length
  (thesis §5.3), G and D see images only; `config.model.g_pass` "shared"
  (default) or "separate" (`rsh.gan`)."""
  return gan.Gan(discriminator=disc, generator=gen, noise_dim=int(config.model.bits),
                 d_stats="real_and_fake" if _d_stats(config) == "real_and_fake" else "real",
                 g_pass=config.model.get("g_pass", "shared"))


def make_train_step(config, gen, disc, bound):
  """The pure step of `rsh.gan`: one Adam update of D, then one of G against the
  updated D (thesis §5.3). `batch`: `x` f32[b, 64, 64, c] in [-1, 1] and what the
  terms read (e.g. `similarity` i8[b, b]). `bound`: the loss terms per network,
  `rsh.losses.bind(config.losses, nets=NETS (NETS[:1] without G), terms=...)`."""
  return gan.make_step(make_gan(config, gen, disc), update.optimizer(config.optim), bound)


def make_encoder(disc, calibration_images=None, calibration_batch: int = 64):
  """`encode(state, images f32[n, 64, 64, c]) -> {"hash"|"feature": f32[n, .]}`;
  with `calibration_images`, D's statistics are re-estimated first (once per state)."""
  forward = jax.jit(lambda params, stats, x: {
      k: v for k, v in disc.apply({"params": params, "batch_stats": stats}, x,
                                  train=False).items() if k in ("hash", "feature")})
  calibrated = {}  # step -> batch stats: the query and archive share one pass

  def encode(state: update.TrainState, images) -> dict[str, np.ndarray]:
    d = state.nets["discriminator"]
    stats = d.batch_stats  # or recalibrated below
    if calibration_images is not None:
      step = int(jax.device_get(state.step))
      if step not in calibrated:
        calibrated.clear()
        calibrated[step] = update.recalibrate_batch_stats(
            disc, d.params, stats, calibration_images, calibration_batch, dcgan.BN_MOMENTUM)
      stats = calibrated[step]
    return update.in_batches(lambda x: forward(d.params, stats, x), images)

  return encode


def build(config, data, terms=None) -> rmethod.Method:
  if data.view_name(config.data.get("input")) != "pixels":
    raise ValueError(f"config.data.input={config.data.input!r}: {config.name} trains on "
                     "pixels (a GAN on images), not on another view")
  gen, disc = build_models(config)
  bound = rlosses.bind(config.losses, nets=NETS if gen else NETS[:1], terms=terms)
  return rmethod.Method(
      init=lambda rng: init_state(config, gen, disc, rng),
      step=make_train_step(config, gen, disc, bound),
      encode=make_encoder(disc, data.train_x if _d_stats(config) == "recalibrate" else None,
                          int(config.train.batch_size)),
      terms=bound, generate=(gan.make_generate(make_gan(config, gen, disc)) if gen is not None
                                 else None))
