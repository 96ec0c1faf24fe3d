"""UAHM (thesis ch. 5) and its baselines, one method file selected by config.

- UAHM: DCGAN whose discriminator also emits a tanh hash code; D is trained with
  adversarial + w1 * binary + w2 * semantic loss, G with the adversarial loss.
- GAN-RGB / GAN-MS: `model.head = "gan"`, adversarial losses only; retrieval on
  the discriminator's non-binary feature with cosine similarity.
- DHNN-MS: `model.adversarial = False`, `model.head = "hash"`: no generator,
  binary + semantic losses only.

Which network a loss term trains is `config.losses.<name>.on`
("discriminator" or "generator"); its weight is `config.losses.<name>.weight`.

D's BatchNorm running statistics are what every retrieval code is computed
with (the hash layer is tanh(BN(dense))), so where they come from is a config
choice, `config.model.d_stats`:
  - "real" (default): only D's pass over real images updates them; the pass
    over generated images is normalised by its own batch statistics, as in
    DCGAN, but its running-average update is dropped;
  - "recalibrate": as "real" while training, and before encoding the running
    statistics are re-estimated exactly (the mean of per-batch moments) over the
    training images with the parameters being evaluated;
  - "real_and_fake": the literal DCGAN/thesis code: both passes update them, so
    at steady state about half their weight is generated images, whose
    statistics drift with G. It skews every code (docs/RESULTS.md measures it).
"""

from __future__ import annotations

import logging
import pathlib
import time
from typing import Any, Mapping

import flax
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsh import data as rdata
from rsh import evaluation
from rsh import losses as rlosses
from rsh import similarity
from rsh import train as rtrain
from rsh.models import dcgan

log = logging.getLogger(__name__)


@flax.struct.dataclass
class GanState:
  """Everything a UAHM run carries between steps (a pytree).

  `g` is an empty dict for DHNN-MS, which has no generator.
  """
  step: jax.Array
  d: dict   # {"params", "batch_stats", "opt_state"}
  g: dict


D_STATS = ("real", "recalibrate", "real_and_fake")


def _d_stats(config) -> str:
  mode = config.model.get("d_stats", "real")
  if mode not in D_STATS:
    raise ValueError(f"config.model.d_stats must be one of {', '.join(D_STATS)}; got {mode!r}")
  return mode


def _split_weights(config, terms=None) -> tuple[dict[str, float], dict[str, float]]:
  known = {**rlosses.LOSSES, **(terms or {})}
  d_w, g_w = {}, {}
  for name, term in config.losses.items():
    if name not in known:
      raise ValueError(f"unknown loss term config.losses.{name}; known terms: "
                       f"{', '.join(sorted(known))}")
    on = term.get("on", "discriminator")
    if on not in ("discriminator", "generator"):
      raise ValueError(f"config.losses.{name}.on must be 'discriminator' or "
                       f"'generator', got {on!r}")
    (d_w if on == "discriminator" else g_w)[name] = float(term.weight)
  return d_w, g_w


def _optimizer(config) -> optax.GradientTransformation:
  return optax.adam(config.optim.lr, b1=config.optim.b1, b2=config.optim.b2,
                    eps=config.optim.get("eps", 1e-8))


def build_models(config):
  bits = int(config.model.bits)
  if bits % 8:
    raise ValueError(f"config.model.bits must be a multiple of 8, got {bits}")
  channels = len(rdata.resolve_bands(config.data.bands))
  disc = dcgan.Discriminator(channels=channels, bits=bits, head=config.model.head)
  gen = (dcgan.Generator(channels=channels, impl=config.model.get("conv_impl", "phase"))
         if config.model.adversarial else None)
  return gen, disc


def init_state(config, gen, disc, rng) -> GanState:
  bits = int(config.model.bits)
  channels = len(rdata.resolve_bands(config.data.bands))
  k_d, k_g = jax.random.split(rng)
  tx = _optimizer(config)
  d_vars = disc.init(k_d, jnp.zeros((2, 64, 64, channels)), train=False)
  d = {"params": d_vars["params"], "batch_stats": d_vars["batch_stats"],
       "opt_state": tx.init(d_vars["params"])}
  g = {}
  if gen is not None:
    g_vars = gen.init(k_g, jnp.zeros((2, bits)), train=False)
    g = {"params": g_vars["params"], "batch_stats": g_vars["batch_stats"],
         "opt_state": tx.init(g_vars["params"])}
  return GanState(step=jnp.zeros((), jnp.int32), d=d, g=g)


def make_train_step(config, gen, disc, terms: Mapping[str, Any] | None = None):
  """Returns the pure step `(state, batch, rng) -> (state, metrics)`.

  One Adam update of D, then one of G with the updated D (thesis §5.3), both
  inside the same jitted function. `batch` holds `image: f32[b, 64, 64, c]` in
  [-1, 1] and `similarity: i8[b, b]` (the SSM block of the batch).
  """
  d_weights, g_weights = _split_weights(config, terms)
  bits = int(config.model.bits)
  tx = _optimizer(config)
  fake_updates_stats = _d_stats(config) == "real_and_fake"

  def d_apply(params, stats, x):
    return disc.apply({"params": params, "batch_stats": stats}, x, train=True,
                      mutable=["batch_stats"])

  def g_apply(params, stats, z):
    return gen.apply({"params": params, "batch_stats": stats}, z, train=True,
                     mutable=["batch_stats"])

  def step(state: GanState, batch, rng):
    x = batch["image"]
    z = jax.random.uniform(rng, (x.shape[0], bits), minval=-1.0, maxval=1.0)
    metrics = {}

    fake = None
    if gen is not None:
      fake, _ = g_apply(state.g["params"], state.g["batch_stats"], z)
      fake = jax.lax.stop_gradient(fake)

    def d_loss(params):
      # Real and fake go through D as separate batches (as in DCGAN), so each
      # is normalised by its own batch statistics. Only the real pass feeds the
      # running averages unless d_stats="real_and_fake": they are what the
      # codes of real images are computed with (module docstring).
      real_out, upd = d_apply(params, state.d["batch_stats"], x)
      outputs = _outputs("real", real_out, x)
      stats = upd["batch_stats"]
      if fake is not None:
        fake_out, upd = d_apply(params, stats, fake)
        outputs.update(_outputs("fake", fake_out, fake))
        if fake_updates_stats:
          stats = upd["batch_stats"]
      loss, values = rlosses.total_loss(d_weights, outputs, batch, terms=terms)
      return loss, (values, stats)

    (d_total, (d_values, d_stats)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(
        state.d["params"])
    updates, d_opt = tx.update(d_grads, state.d["opt_state"], state.d["params"])
    d_params = optax.apply_updates(state.d["params"], updates)
    new_d = {"params": d_params, "batch_stats": d_stats, "opt_state": d_opt}
    metrics["d_loss"] = d_total
    metrics.update({f"d/{k}": v for k, v in d_values.items()})

    new_g = state.g
    if gen is not None:
      def g_loss(params):
        fake, upd = g_apply(params, state.g["batch_stats"], z)
        # D's statistics from this pass are thrown away: only D's own step
        # updates D.
        fake_out, _ = d_apply(d_params, d_stats, fake)
        loss, values = rlosses.total_loss(
            g_weights, _outputs("fake", fake_out, fake), batch, terms=terms)
        return loss, (values, upd["batch_stats"])

      (g_total, (g_values, g_stats)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(
          state.g["params"])
      updates, g_opt = tx.update(g_grads, state.g["opt_state"], state.g["params"])
      new_g = {"params": optax.apply_updates(state.g["params"], updates),
               "batch_stats": g_stats, "opt_state": g_opt}
      metrics["g_loss"] = g_total
      metrics.update({f"g/{k}": v for k, v in g_values.items()})

    return GanState(step=state.step + 1, d=new_d, g=new_g), metrics

  return step


def _outputs(prefix: str, out: Mapping[str, jax.Array], images) -> dict[str, Any]:
  """D's heads as loss-term inputs: `{prefix}_hash`, `_logit`, `_feature`, `_image`."""
  return {f"{prefix}_hash": out.get("hash"), f"{prefix}_logit": out.get("logit"),
          f"{prefix}_feature": out.get("feature"), f"{prefix}_image": images}


def recalibrate_batch_stats(disc, d: Mapping[str, Any], images, batch_size: int) -> dict:
  """D's BatchNorm running statistics re-estimated exactly on `images`.

  Each layer's running mean / variance becomes the mean over full batches of
  its batch moments (train-mode forward passes, so every layer sees inputs
  normalised as in training). Starting the running averages at zero, one update
  leaves (1 - momentum) * moment, which is how the moments are read out.
  """
  n = len(images)
  size = min(batch_size, n)
  zeros = jax.tree.map(jnp.zeros_like, d["batch_stats"])

  @jax.jit
  def moments(params, x):
    _, upd = disc.apply({"params": params, "batch_stats": zeros}, x, train=True,
                        mutable=["batch_stats"])
    return jax.tree.map(lambda v: v / (1.0 - dcgan.BN_MOMENTUM), upd["batch_stats"])

  total, count = None, 0
  for start in range(0, n - size + 1, size):
    m = moments(d["params"], jnp.asarray(images[start:start + size]))
    total = m if total is None else jax.tree.map(jnp.add, total, m)
    count += 1
  return jax.tree.map(lambda v: v / count, total)


def make_encoder(disc, batch_size: int = 256, calibration_images=None,
                 calibration_batch: int = 64):
  """Returns `encode(state, images f32[n, 64, 64, c]) -> dict of f32[n, l]`.

  With `calibration_images` (d_stats="recalibrate"), D's running statistics
  are first re-estimated on them for the state being encoded (once per state).
  """

  @jax.jit
  def forward(d, x):
    out = disc.apply({"params": d["params"], "batch_stats": d["batch_stats"]}, x, train=False)
    return {k: v for k, v in out.items() if k in ("hash", "feature")}

  calibrated = {}  # step -> batch stats: the query and archive share one pass

  def encode(state: GanState, images: np.ndarray) -> dict[str, np.ndarray]:
    d = state.d
    if calibration_images is not None:
      step = int(jax.device_get(state.step))
      if step not in calibrated:
        calibrated.clear()
        calibrated[step] = recalibrate_batch_stats(disc, d, calibration_images,
                                                   calibration_batch)
      d = {**d, "batch_stats": calibrated[step]}
    outs = []
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      pad = batch_size - len(chunk)
      if pad:  # a fixed shape: one compilation for the whole archive
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      out = jax.device_get(forward(d, chunk))
      outs.append({k: v[:batch_size - pad] for k, v in out.items()})
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

  return encode


def generate(config, gen, state: GanState, n: int, seed: int = 0) -> np.ndarray:
  z = jax.random.uniform(jax.random.PRNGKey(seed), (n, int(config.model.bits)), minval=-1, maxval=1)
  return np.asarray(gen.apply({"params": state.g["params"], "batch_stats": state.g["batch_stats"]},
                              z, train=False))


def train_and_evaluate(config, workdir, terms: Mapping[str, rlosses.Term] | None = None) -> dict:
  """Trains the config's model in `workdir` (resuming if possible), evaluates it.

  `terms` are extra or replacement loss terms `fn(outputs, batch) -> scalar`
  (e.g. written in a notebook), used wherever `config.losses` names them. D-side
  terms see `real_*` and `fake_*` outputs, G-side terms `fake_*`: `_hash`,
  `_logit`, `_feature` and `_image` (see `_outputs`).
  """
  workdir = pathlib.Path(workdir)
  t_start = time.time()
  prepared = evaluation.prepare_data(config)
  gen, disc = build_models(config)
  train_idx = prepared.split.train
  batch_size = int(config.train.batch_size)
  if batch_size > len(train_idx):
    raise ValueError(f"config.train.batch_size={batch_size} is larger than the "
                     f"training set ({len(train_idx)} images)")

  # The training images, as the GAN sees them: selected bands, [-1, 1].
  x_train = rdata.to_signed(rdata.normalise(prepared.images[train_idx]))

  ssm_packed, ssm_info = None, {}
  needs_ssm = config.losses.get("semantic") is not None
  if needs_ssm:
    ssm_packed, ssm_info = evaluation.build_training_ssm(config, prepared)

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    idx = rdata.batch_at(np.arange(len(train_idx)), batch_size, config.seed, step)
    batch = {"image": x_train[idx]}
    if ssm_packed is not None:
      batch["similarity"] = similarity.ssm_rows(ssm_packed, idx)
    return batch

  rng = jax.random.PRNGKey(config.seed)
  init_rng, train_rng = jax.random.split(rng)
  state = init_state(config, gen, disc, init_rng)
  step_fn = make_train_step(config, gen, disc, terms=terms)
  encode = make_encoder(disc, calibration_images=(
      x_train if _d_stats(config) == "recalibrate" else None), calibration_batch=batch_size)

  def eval_fn(state, step):
    return evaluation.retrieval_metrics(config, prepared, encode(state, prepared.query_x()),
                                        encode(state, prepared.archive_x()), binary_key="hash",
                                        light=step != config.train.num_steps)

  loop = rtrain.LoopConfig(
      num_steps=int(config.train.num_steps),
      checkpoint_every=int(config.train.checkpoint_every),
      eval_every=int(config.train.eval_every),
      log_every=int(config.train.log_every),
      progress=bool(config.train.get("progress", True)))
  state, history = rtrain.run(workdir=workdir, state=state, step_fn=step_fn, batch_fn=batch_fn,
                              rng=train_rng, loop=loop, eval_fn=eval_fn)

  # The final evaluation, in full (PR curve, class-wise), and the figures.
  q_out = encode(state, prepared.query_x())
  a_out = encode(state, prepared.archive_x())
  metrics = evaluation.retrieval_metrics(config, prepared, q_out, a_out, binary_key="hash")
  metrics.update({f"ssm/{k}": v for k, v in ssm_info.items() if np.ndim(v) == 0})
  baseline = evaluation.random_projection_metrics(config, prepared)
  fake = generate(config, gen, state, 16, seed=config.seed) if gen is not None else None
  evaluation.save_figures(workdir, config, prepared, metrics, history, q_out, a_out, fake,
                          baseline=baseline)
  return evaluation.results_dict(config, prepared, metrics, baseline, history,
                                 seconds=time.time() - t_start)
