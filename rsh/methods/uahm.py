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
from rsh import method as rmethod
from rsh import losses as rlosses
from rsh import update
from rsh.models import dcgan

NETS = ("discriminator", "generator")
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


def _outputs(prefix: str, out: Mapping[str, Any], images) -> dict[str, Any]:
  return {f"{prefix}_hash": out.get("hash"), f"{prefix}_logit": out.get("logit"),
          f"{prefix}_feature": out.get("feature"), f"{prefix}_image": images}


G_PASS = ("shared", "separate")


def make_train_step(config, gen, disc, bound):
  """The pure step: one Adam update of D, then one of G against the updated D
  (thesis §5.3). `batch`: `x` f32[b, 64, 64, c] in [-1, 1] and what the
  terms read (e.g. `similarity` i8[b, b]). `bound`: the loss terms per network,
  `rsh.losses.bind(config.losses, nets=NETS (NETS[:1] without G), terms=...)`.

  `config.model.g_pass`: "shared" (default) runs G's forward pass once: D's step
  reads its images and G's step pulls its gradient back through the same pass
  (`update.update_net_from`); "separate" runs G again inside G's step. G's
  parameters, statistics and noise are the same in both, so are the images."""
  bits = int(config.model.bits)
  tx = update.optimizer(config.optim)
  fake_updates_stats = _d_stats(config) == "real_and_fake"
  g_pass = config.model.get("g_pass", "shared")
  if g_pass not in G_PASS:
    raise ValueError(f"config.model.g_pass must be one of {', '.join(G_PASS)}; got {g_pass!r}")

  def step(state: update.TrainState, batch, rng):
    d, x = state.nets["discriminator"], batch["x"]
    z = jax.random.uniform(rng, (x.shape[0], bits), minval=-1.0, maxval=1.0)
    fake = None
    if gen is not None:
      g = state.nets["generator"]
      g_apply = lambda params: update.apply(gen, params, g.batch_stats, z)
      if g_pass == "shared":
        fake, g_pull, g_stats = jax.vjp(g_apply, g.params, has_aux=True)
      else:
        fake = g_apply(g.params)[0]
      fake = jax.lax.stop_gradient(fake)

    def d_forward(params):
      # Real and fake pass D as separate batches; see d_stats above.
      out, stats = update.apply(disc, params, d.batch_stats, x)
      outputs = _outputs("real", out, x)
      if fake is not None:
        fake_out, fake_stats = update.apply(disc, params, stats, fake)
        outputs.update(_outputs("fake", fake_out, fake))
        stats = fake_stats if fake_updates_stats else stats
      return outputs, stats

    d, metrics = update.update_net(d, tx, d_forward, bound["discriminator"], batch, "d")
    nets = {"discriminator": d}
    if gen is not None:
      def through_d(images):  # D's own step updates D
        return _outputs("fake", update.apply(disc, d.params, d.batch_stats, images)[0], images)

      if g_pass == "shared":
        nets["generator"], g_metrics = update.update_net_from(
            g, tx, fake, g_pull, g_stats, through_d, bound["generator"], batch, "g")
      else:
        def g_forward(params):
          images, stats = g_apply(params)
          return through_d(images), stats

        nets["generator"], g_metrics = update.update_net(g, tx, g_forward, bound["generator"],
                                                         batch, "g")
      metrics.update(g_metrics)
    return update.TrainState(step=state.step + 1, nets=nets), metrics

  return step


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

  def generate(state, n: int, seed: int = 0) -> np.ndarray:
    g, z = state.nets["generator"], jax.random.uniform(
        jax.random.PRNGKey(seed), (n, int(config.model.bits)), minval=-1, maxval=1)
    return np.asarray(gen.apply({"params": g.params, "batch_stats": g.batch_stats}, z, train=False))

  return rmethod.Method(
      init=lambda rng: init_state(config, gen, disc, rng),
      step=make_train_step(config, gen, disc, bound),
      encode=make_encoder(disc, data.train_x if _d_stats(config) == "recalibrate" else None,
                          int(config.train.batch_size)),
      terms=bound, generate=generate if gen is not None else None)
