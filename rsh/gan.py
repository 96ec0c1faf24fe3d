"""The one GAN step every GAN method is made of: D's update, then G's against the new D.

    gan = rsh.gan.Gan(generator=G, discriminator=D, noise_dim=100,
                      g_inputs=lambda z, batch: (z, onehot(batch["labels"])))
    step = rsh.gan.make_step(gan, tx, bound)      # (state, batch, rng) -> (state, metrics)

The networks are "discriminator" and "generator" (`config.losses.*.on`); without
a generator (DHNN-MS) the step is D's update alone. D's loss terms read
`real_*` and `fake_*` (`hash`, `logit`, `class_logit`, `feature`, `image`), G's
`fake_*` through the updated D, each merged over the batch (e.g. `labels`,
`similarity`).

What a method chooses (the fields of `Gan`):
  - what G and D are called with: `g_inputs(z, batch)` (UAHM: `(z,)`; a
    conditional GAN adds the batch's one-hot labels, so each fake has the class
    of the real image beside it) and `d_inputs(images, batch)` (C-DCGAN adds
    the labels, ACGAN does not);
  - `d_stats`: which of D's passes update its BatchNorm running statistics:
    "real" (only the pass over real images; the fake pass is normalised by its
    own batch statistics and its update dropped) or "real_and_fake" (the literal
    DCGAN code: the fake pass's update is kept);
  - `g_pass`: "shared" runs G's forward pass once: D's update reads its images
    and G's update pulls its gradient back through the same pass
    (`update.update_net_from`); "separate" runs G again inside G's update. G's
    parameters, statistics and noise are the same in both, so are the images.
Label smoothing (thesis §4.1.1: D's targets 0.9 / 0.1) is an option of D's
adversarial term (`config.losses.adversarial_d.real_target / fake_target`): it
changes D's targets only; G's term keeps target 1.

z ~ U[-1, 1]^noise_dim, drawn from the step's rng (thesis §4.1.2 and ch. 5).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsh import update

NETS = ("discriminator", "generator")
D_STATS = ("real", "real_and_fake")
G_PASS = ("shared", "separate")
# Keys of D's outputs a loss term may read, each as real_<key> and fake_<key>.
OUTPUT_KEYS = ("hash", "logit", "class_logit", "feature")


def outputs(prefix: str, out: Mapping[str, Any], images) -> dict[str, Any]:
  """D's outputs under the keys the loss terms read: `{prefix}_{hash,logit,...,image}`."""
  return {**{f"{prefix}_{k}": out.get(k) for k in OUTPUT_KEYS}, f"{prefix}_image": images}


@dataclasses.dataclass(frozen=True)
class Gan:
  """The two networks and how the step calls them (see the module docstring)."""
  discriminator: nn.Module
  generator: nn.Module | None
  noise_dim: int
  g_inputs: Callable[[jax.Array, Mapping[str, Any]], tuple] = lambda z, batch: (z,)
  d_inputs: Callable[[jax.Array, Mapping[str, Any]], tuple] = lambda x, batch: (x,)
  d_stats: str = "real"
  g_pass: str = "shared"

  def __post_init__(self):
    if self.d_stats not in D_STATS:
      raise ValueError(f"d_stats must be one of {', '.join(D_STATS)}; got {self.d_stats!r}")
    if self.g_pass not in G_PASS:
      raise ValueError(f"config.model.g_pass must be one of {', '.join(G_PASS)}; "
                       f"got {self.g_pass!r}")


def noise(rng: jax.Array, n: int, dim: int) -> jax.Array:
  """z ~ U[-1, 1]^dim, f32[n, dim]."""
  return jax.random.uniform(rng, (n, dim), minval=-1.0, maxval=1.0)


def make_step(gan: Gan, tx: optax.GradientTransformation,
              bound: Mapping[str, list]) -> Callable:
  """The pure step `(state, batch, rng) -> (state, metrics)`: one optimiser update
  of D, then one of G against the updated D. `batch`: `x` f32[b, 64, 64, c] in
  [-1, 1] and what the terms and `g_inputs` / `d_inputs` read. `bound`: the loss
  terms per network, `rsh.losses.bind(config.losses, nets=NETS (NETS[:1] without
  G), terms=...)`."""
  gen, disc = gan.generator, gan.discriminator
  fake_updates_stats = gan.d_stats == "real_and_fake"

  def step(state: update.TrainState, batch, rng):
    d, x = state.nets["discriminator"], batch["x"]
    z = noise(rng, x.shape[0], gan.noise_dim)
    fake = None
    if gen is not None:
      g = state.nets["generator"]
      g_apply = lambda params: update.apply(gen, params, g.batch_stats, *gan.g_inputs(z, batch))
      if gan.g_pass == "shared":
        fake, g_pull, g_stats = jax.vjp(g_apply, g.params, has_aux=True)
      else:
        fake = g_apply(g.params)[0]
      fake = jax.lax.stop_gradient(fake)

    def d_forward(params):
      # Real and fake pass D as separate batches; see d_stats above.
      out, stats = update.apply(disc, params, d.batch_stats, *gan.d_inputs(x, batch))
      outs = outputs("real", out, x)
      if fake is not None:
        fake_out, fake_stats = update.apply(disc, params, stats, *gan.d_inputs(fake, batch))
        outs.update(outputs("fake", fake_out, fake))
        stats = fake_stats if fake_updates_stats else stats
      return outs, stats

    d, metrics = update.update_net(d, tx, d_forward, bound["discriminator"], batch, "d")
    nets = {"discriminator": d}
    if gen is not None:
      def through_d(images):  # D's own step updates D
        out = update.apply(disc, d.params, d.batch_stats, *gan.d_inputs(images, batch))[0]
        return outputs("fake", out, images)

      if gan.g_pass == "shared":
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


def make_generate(gan: Gan, chunk: int = 256) -> Callable:
  """`generate(state, labels int[n], seed) -> f32[n, 64, 64, c]`: G in eval mode on
  z drawn from `seed` (all n at once, so the images do not depend on `chunk`),
  `chunk` images a pass. `labels` reach G through `g_inputs` as the batch's
  `labels`; an unconditional G reads only n = len(labels)."""
  gen = gan.generator
  if gen is None:
    raise ValueError("a method without a generator generates no images")
  forward = jax.jit(lambda params, stats, z, labels: gen.apply(
      {"params": params, "batch_stats": stats}, *gan.g_inputs(z, {"labels": labels}),
      train=False))

  def generate(state, labels, seed: int = 0) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
      raise ValueError(f"generate: labels must be int[n] class ids, got shape {labels.shape}")
    g, n = state.nets["generator"], len(labels)
    z = noise(jax.random.PRNGKey(seed), n, gan.noise_dim)
    if n <= chunk:
      return np.asarray(forward(g.params, g.batch_stats, z, jnp.asarray(labels)))
    out = []
    for start in range(0, n, chunk):  # a fixed shape: the last chunk padded
      zc, lc = z[start:start + chunk], labels[start:start + chunk]
      pad = chunk - len(lc)
      if pad:
        zc = jnp.concatenate([zc, jnp.zeros((pad, gan.noise_dim), zc.dtype)])
        lc = np.concatenate([lc, np.zeros(pad, lc.dtype)])
      out.append(np.asarray(forward(g.params, g.batch_stats, zc, jnp.asarray(lc)))[:chunk - pad])
    return np.concatenate(out)

  return generate
