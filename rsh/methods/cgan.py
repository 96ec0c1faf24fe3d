"""Class-conditional GANs of thesis ch. 4 (Fig. 4.4): C-DCGAN and ACGAN on the shared GAN step.

Both: G(z, y), z ~ U[-1, 1]^100 and y one-hot, the DCGAN generator
(`rsh.models.cgan`). `config.model.conditioning`:
  - "input" (C-DCGAN, `configs/cdcgan.py`): D(x, y) sees the one-hot label
    tiled onto the image's channels and outputs one real/fake logit;
  - "auxiliary" (ACGAN, `configs/acgan.py`): D(x) sees the image only and
    outputs a real/fake logit and class logits (`real_class_logit`,
    `fake_class_logit`, read by the `classification` term, eq. 4.8).
Each fake of a step has the class of the real image beside it in the batch
(the batch's `labels`, a step input), so D sees real and fake of the same
class mix. The step is `rsh.gan.make_step` (D, then G against the new D).

No codes: the method is a generator of labelled images, `generate(state,
labels, seed)`; its evaluator is `generated_quality` (IS, FID), its figure
`generated_by_class.png` (a row of generated images per class beside real ones).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rsh import data as rdata
from rsh import gan
from rsh import losses as rlosses
from rsh import method as rmethod
from rsh import update
from rsh.models import cgan

GRID = 8  # images per class in the figure, generated and real


def build_models(config, num_classes: int):
  channels = len(rdata.resolve_bands(config.data.bands))
  impl = config.model.get("conv_impl", "phase")
  conditioning = config.model.conditioning
  if conditioning not in cgan.CONDITIONINGS:
    raise ValueError(f"config.model.conditioning must be one of "
                     f"{', '.join(cgan.CONDITIONINGS)}; got {conditioning!r}")
  gen = cgan.ConditionalGenerator(channels=channels, num_classes=num_classes, impl=impl)
  disc = cgan.ConditionalDiscriminator(channels=channels, num_classes=num_classes,
                                       conditioning=conditioning, impl=impl,
                                       batch_norm=bool(config.model.get("d_batch_norm", True)))
  return gen, disc


def make_gan(config, gen, disc) -> gan.Gan:
  k = disc.num_classes
  onehot = lambda batch: jax.nn.one_hot(batch["labels"], k, dtype=jnp.float32)
  d_inputs = ((lambda x, batch: (x, onehot(batch))) if disc.conditioning == "input"
              else (lambda x, batch: (x, None)))
  return gan.Gan(discriminator=disc, generator=gen, noise_dim=int(config.model.noise_dim),
                 g_inputs=lambda z, batch: (z, onehot(batch)), d_inputs=d_inputs,
                 d_stats=config.model.get("d_stats", "real"),
                 g_pass=config.model.get("g_pass", "shared"))


def init_state(config, gen, disc, rng) -> update.TrainState:
  k_d, k_g = jax.random.split(rng)
  tx = update.optimizer(config.optim)
  y = jnp.zeros((2, disc.num_classes))
  return update.TrainState.create({
      "discriminator": update.init_net(disc, tx, k_d, jnp.zeros((2, 64, 64, disc.channels)),
                                       y if disc.conditioning == "input" else None),
      "generator": update.init_net(gen, tx, k_g, jnp.zeros((2, int(config.model.noise_dim))), y)})


def _no_codes(state, rows):
  raise ValueError("a conditional GAN (configs/cdcgan.py, acgan.py) makes images, not codes: "
                   "its evaluator is generated_quality, not retrieval")


def make_figures(data, generate, seed: int):
  """`figures(state, workdir)`: generated_by_class.png, GRID generated and GRID
  real training images of each class, one row per class."""
  def figures(state, workdir):
    from rsh import plots  # matplotlib only when figures are drawn
    k = len(data.class_names)
    labels = np.repeat(np.arange(k), GRID)
    fake = generate(state, labels, seed).reshape((k, GRID) + data.train_x.shape[1:])
    train_labels = data.labels[data.split.train]
    real = np.full(fake.shape, -1.0, np.float32)   # black where a class has fewer
    for c in range(k):
      rows = data.train_x[np.flatnonzero(train_labels == c)[:GRID]]
      real[c, :len(rows)] = rows
    plots.class_grid(fake, real, data.class_names, workdir / "generated_by_class.png",
                     bands=data.band_names)
  return figures


def build(config, data, terms=None) -> rmethod.Method:
  if data.view_name(config.data.get("input")) != "pixels":
    raise ValueError(f"config.data.input={config.data.input!r}: {config.name} trains on "
                     "pixels (a GAN on images), not on another view")
  if np.ndim(data.labels) != 1:
    raise ValueError(f"{config.name} is conditioned on one class per image; the data's "
                     "labels are multi-hot")
  gen, disc = build_models(config, len(data.class_names))
  bound = rlosses.bind(config.losses, nets=gan.NETS, terms=terms)
  spec = make_gan(config, gen, disc)
  generate = gan.make_generate(spec)
  return rmethod.Method(
      init=lambda rng: init_state(config, gen, disc, rng),
      step=gan.make_step(spec, update.optimizer(config.optim), bound),
      encode=_no_codes, terms=bound, generate=generate, conditional=True,
      figures=make_figures(data, generate, int(config.seed)), step_inputs=("labels",))
