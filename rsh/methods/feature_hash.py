"""A hashing MLP on a frozen features view (`configs/ssm_hash.py`; the shared
network of the metric-learning family and of the thesis ch. 4).

The batch holds `x`, rows of the features view `config.data.input`: f32[b, d]
(e.g. `efficientnet_lite0`), or f32[b, v, d], v augmented views of each image
(e.g. `efficientnet_lite0/dihedral`: the features of its 8 dihedral
transforms, `rsh.features`), of which each step draws one per row: augmentation
at no backbone cost. Inputs are standardised with the training rows' mean and
std per feature (`config.model.standardise`, over every view) and, in training,
get Gaussian noise of std `config.model.noise`.

Network "hasher" (`config.losses.*.on`), `rsh.models.mlp.HashMLP` with
`config.model.hidden`, `activation`, `output` (tanh | sigmoid | linear). Keys the
terms read: `hash` (f32[b, l] in [-1, 1]; the code is its sign), `logits`,
`sigmoid` (sigmoid head), and `hash_aug` / `logits_aug` / `sigmoid_aug`: a
second independent draw of views and noise of the same rows, made only when a
bound term reads one (e.g. NT-Xent between two views); plus the batch inputs
(`similarity`: the training SSM, `labels`).

MIRS (`configs/mirs.py`): `config.model.dwt = dict(group, eps, momentum, target)`
puts a Domain Whitening Transform before the MLP (`mlp.WhitenedHashMLP`): each
row is whitened with its domain's statistics (`Prepared.domain_ids`: 0 the main
data, 1 the rows of `config.data.domain`), the batch's in training, the
running ones of `target` (default 0, the main data's) when encoding. The
method's own batch inputs: `domains` (int32[b]), `source_domain` (bool[b], the
row is of the added domain: a term's `mask="source_domain"` reads the labels of
those rows only), and `clusters` (int32[b]: K-means, `rsh.kmeans`, of the
standardised training features into `config.model.clusters` clusters, seeded
by `config.seed`; made when a term reads them, e.g. `interclass`).

Encoders: the training view's, and every other view of the same backbone
(`features/<b>`, `<b>/dihedral_mean`, `<b>/dihedral`); a [n, v, d] view is
encoded from the mean of its v features. A retrieval entry's `input` picks one.

The frozen backbone in the step (`config.model.backbone`, e.g.
"efficientnet_lite0", with `config.data.input = "pixels"`): the batch holds
images; each step draws random augmentations of their RGB bands
(`config.model.augment`: crop, per-band gain, dihedral; `rsh.frozen`), runs the
backbone on them (network "backbone", no optimiser state, never updated), and
trains the hasher on those features, standardised with the cached features
view's statistics. Encoders: pixels (through the backbone) and the backbone's
cached views (the same features of unaugmented images, fast).
"""

from __future__ import annotations

import logging
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rsh import data as rdata
from rsh import features as rfeatures
from rsh import frozen
from rsh import kmeans as rkmeans
from rsh import losses as rlosses
from rsh import method as rmethod
from rsh import update
from rsh import weights as rweights
from rsh.models import mlp

log = logging.getLogger(__name__)

NETS = ("hasher",)


def _rows(config, data) -> tuple[str, np.ndarray]:
  view = data.view_name(config.data.get("input"))
  x = data.train_rows(view)
  if x.ndim not in (2, 3) or x.dtype.kind != "f":
    raise ValueError(f"config.data.input={config.data.get('input')!r}: the feature-hashing "
                     "method reads a features view, f32[n, d] or f32[n, v, d] (e.g. "
                     f"efficientnet_lite0, efficientnet_lite0/dihedral); {view!r} is "
                     f"{x.dtype}{list(x.shape)}")
  return view, x


DWT_KEYS = ("group", "eps", "momentum", "target")


def _model(config, data=None, d: int | None = None) -> nn.Module:
  """The hashing MLP, behind a Domain Whitening Transform when `config.model.dwt`."""
  net = _mlp(config)
  raw = config.model.get("dwt")
  if not raw:
    return net
  if data is None:
    raise ValueError("config.model.dwt whitens cached features: set config.model.backbone="
                     "None (the frozen backbone in the step has no domain whitening)")
  opts = dict(raw)
  unknown = sorted(set(opts) - set(DWT_KEYS))
  if unknown:
    raise ValueError(f"config.model.dwt.{unknown[0]} is not an option (options: "
                     f"{', '.join(DWT_KEYS)})")
  domains = int(data.domain_ids.max()) + 1
  group, target = int(opts.get("group", 32)), int(opts.get("target", 0))
  if group < 1 or d % group:
    raise ValueError(f"config.model.dwt.group={group} must divide the feature width {d}")
  if not 0 <= target < domains:
    raise ValueError(f"config.model.dwt.target={target}: the data has {domains} domain(s) "
                     "(0: the main data, 1: config.data.domain's rows)")
  return mlp.WhitenedHashMLP(mlp=net, num_domains=domains, group=group,
                             eps=float(opts.get("eps", 1e-3)),
                             momentum=float(opts.get("momentum", 0.1)), target=target)


def _mlp(config) -> mlp.HashMLP:
  m = config.model
  hidden = tuple(int(w) for w in m.get("hidden", (1024, 512)))
  if any(w < 1 for w in hidden):
    raise ValueError(f"config.model.hidden must be positive widths; got {hidden}")
  for key, known in (("activation", tuple(mlp.ACTIVATIONS)), ("output", mlp.OUTPUTS)):
    if m.get(key, known[0]) not in known:
      raise ValueError(f"config.model.{key} must be one of {', '.join(known)}; "
                       f"got {m.get(key)!r}")
  return mlp.HashMLP(hidden=hidden, bits=rmethod.code_bits(config),
                     activation=m.get("activation", "leaky_relu"), output=m.get("output", "tanh"))


def related_views(data, view: str) -> tuple[str, ...]:
  """`view` and the other views of the same backbone's features, where they exist."""
  prefix = rfeatures.FEATURES
  if not view.startswith(prefix):
    return (view,)
  backbone = view[len(prefix):].partition("/")[0]
  names = [f"{prefix}{backbone}"] + [f"{prefix}{backbone}/{a}" for a in rfeatures.AUGMENTED]
  known = set(data.view_names())
  return tuple(dict.fromkeys([view] + [n for n in names if n in known]))


def _stats(config, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  d = x.shape[-1]
  if config.model.get("standardise", True):
    return rdata.channel_stats(x)
  return np.zeros(d, np.float32), np.ones(d, np.float32)


def _noise(config) -> float:
  noise = float(config.model.get("noise", 0.0))
  if noise < 0:
    raise ValueError(f"config.model.noise must be >= 0; got {noise}")
  return noise


def build(config, data, terms=None) -> rmethod.Method:
  if config.model.get("backbone"):
    return _build_backbone(config, data, terms)
  view, train_x = _rows(config, data)
  d = train_x.shape[-1]
  model = _model(config, data, d)
  whitened = isinstance(model, mlp.WhitenedHashMLP)
  bound = rlosses.bind(config.losses, nets=NETS, terms=terms)
  mean, std = _stats(config, train_x)
  noise = _noise(config)
  tx = update.optimizer(config.optim)

  def init(rng):
    return update.TrainState.create(
        {"hasher": update.init_net(model, tx, rng, jnp.zeros((2, d), jnp.float32))})

  inputs = lambda nets, x, rng: draw_inputs(x, rng, mean, std, noise)
  encode = make_encoder(model, mean, std, d)
  return rmethod.Method(
      init=init, step=make_step(model, bound, tx, inputs, whitened=whitened), encode=encode,
      encoders={v: encode for v in related_views(data, view)}, terms=bound,
      batch_inputs=_batch_inputs(config, data, train_x, mean, std, bound),
      step_inputs=("domains",) if whitened else ())


def _batch_inputs(config, data, train_x, mean, std, bound) -> dict[str, rmethod.BatchInput]:
  """The method's own batch inputs: domain ids, the source-domain mask, K-means clusters."""
  domains = data.domain_ids[data.split.train]
  out = {"domains": lambda src, idx: domains[idx],
         "source_domain": lambda src, idx: domains[idx] == 1}
  if "clusters" in rlosses.input_keys(bound):
    clusters = _clusters(config, data, train_x, mean, std)
    out["clusters"] = lambda src, idx: clusters[idx]
  return out


def _clusters(config, data, train_x, mean, std) -> np.ndarray:
  """int32[n_train]: K-means of the standardised training features (a [n, v, d] view:
  of each row's mean over its views)."""
  k = config.model.get("clusters", 10)
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(train_x):
    raise ValueError(f"config.model.clusters must be an integer in 1..{len(train_x)} (the "
                     f"training rows); got {k!r}")
  x = train_x.mean(axis=1) if train_x.ndim == 3 else train_x
  result = rkmeans.kmeans((x - mean) / std, int(k), seed=int(config.seed))
  labels = np.asarray(data.labels[data.split.train])
  if labels.ndim == 1:
    purity = sum(np.bincount(labels[result.assign == c]).max(initial=0)
                 for c in range(int(k))) / len(labels)
    log.info("clusters: K-means of %d training rows into %d clusters (%d iterations), "
             "class purity %.3f", len(x), k, result.iterations, purity)
  return np.asarray(result.assign, np.int32)


def _build_backbone(config, data, terms) -> rmethod.Method:
  """The hasher on a frozen backbone's features of randomly augmented images."""
  name = str(config.model.backbone)
  if data.view_name(config.data.get("input")) != rdata.PIXELS:
    raise ValueError(f"config.model.backbone={name!r} runs the backbone on the images: set "
                     f"config.data.input='pixels' (it is {config.data.get('input')!r}), or "
                     "config.model.backbone=None to train on a cached features view")
  missing = [b for b in rdata.RGB if b not in data.band_names]
  if missing:
    raise ValueError(f"config.model.backbone={name!r} needs the bands {' '.join(rdata.RGB)}; "
                     f"config.data.bands has {' '.join(data.band_names)}")
  rgb_bands = np.asarray(rdata.band_indices(data.band_names, rdata.RGB))
  size = int(data.images.shape[1])
  aug = frozen.augmentation(config.model.get("augment"), size)
  backbone = frozen.Backbone(name)
  feature_view = data.view_name(name)  # the cached features: statistics and fast encoders
  mean, std = _stats(config, data.train_rows(feature_view))
  noise = _noise(config)
  model = _model(config)
  bound = rlosses.bind(config.losses, nets=NETS, terms=terms)
  tx = update.optimizer(config.optim)
  d = backbone.feature_dim
  variables = rweights.load_pretrained(name, data.feature_options.get("weights"))

  def init(rng):
    return update.TrainState.create(
        {"hasher": update.init_net(model, tx, rng, jnp.zeros((2, d), jnp.float32)),
         "backbone": frozen.frozen_net(variables)})

  rgb = lambda x: (jnp.asarray(x, jnp.float32)[..., rgb_bands] + 1.0) / 2.0  # signed -> [0, 1]

  def inputs(nets, x, rng):
    k_aug, k_noise = jax.random.split(rng)
    f = (backbone(nets["backbone"], frozen.augment_rgb(rgb(x), k_aug, aug)) - mean) / std
    return f + noise * jax.random.normal(k_noise, f.shape, f.dtype) if noise else f

  forward = jax.jit(lambda nets, x: model.apply(
      {"params": nets["hasher"].params}, (backbone(nets["backbone"], rgb(x)) - mean) / std))

  def encode_pixels(state, x) -> Mapping[str, np.ndarray]:
    return update.in_batches(lambda chunk: forward(state.nets, chunk), np.asarray(x), 64)

  encode_features = make_encoder(model, mean, std, d)
  encoders = {v: encode_features for v in related_views(data, feature_view)}
  return rmethod.Method(init=init, step=make_step(model, bound, tx, inputs),
                        encode=encode_pixels, encoders={rdata.PIXELS: encode_pixels, **encoders},
                        terms=bound)


def draw_inputs(x, rng, mean, std, noise: float):
  """One training input per row: a random one of its v views (x f32[b, v, d]) or
  the row itself (f32[b, d]), standardised, plus Gaussian noise of std `noise`."""
  k_view, k_noise = jax.random.split(rng)
  x = jnp.asarray(x, jnp.float32)
  if x.ndim == 3:
    pick = jax.random.randint(k_view, (x.shape[0],), 0, x.shape[1])
    x = jnp.take_along_axis(x, pick[:, None, None], axis=1)[:, 0]
  x = (x - mean) / std
  return x + noise * jax.random.normal(k_noise, x.shape, x.dtype) if noise else x


def make_step(model, bound, tx, inputs, whitened: bool = False):
  """The pure step: one update of the hasher on its bound terms. `inputs(nets, x,
  rng) -> f32[b, d]` makes the hasher's training inputs from the batch's `x`
  (a random view of cached features, or a frozen backbone on augmented images);
  every other network of the state is passed through unchanged. `whitened`: the
  model whitens by the batch's `domains` and keeps running statistics (those of
  the first pass; a second, augmented pass whitens with its own batch's)."""
  needs_aug = any(k.endswith("_aug") for k in rlosses.input_keys(bound))

  def step(state: update.TrainState, batch, rng):
    k_x, k_aug = jax.random.split(rng)
    net = state.nets["hasher"]
    x = inputs(state.nets, batch["x"], k_x)
    x_aug = inputs(state.nets, batch["x"], k_aug) if needs_aug else None

    def apply(params, rows):
      if whitened:
        return update.apply(model, params, net.batch_stats, rows, batch["domains"])
      return model.apply({"params": params}, rows, train=True), net.batch_stats

    def forward(params):
      out, stats = apply(params, x)
      out = dict(out)
      if x_aug is not None:
        out.update({f"{k}_aug": v for k, v in apply(params, x_aug)[0].items()})
      return out, stats

    new, metrics = update.update_net(net, tx, forward, bound["hasher"], batch, "hasher")
    return update.TrainState(step=state.step + 1, nets={**state.nets, "hasher": new}), metrics

  return step


def make_encoder(model, mean, std, d: int) -> rmethod.Encode:
  """{output: f32[n, ...]} of features rows f32[n, d] (or f32[n, v, d]: their mean)."""
  forward = jax.jit(lambda variables, x: model.apply(variables, (x - mean) / std))

  def encode(state, x) -> Mapping[str, np.ndarray]:
    x = np.asarray(x, np.float32)
    if x.ndim == 3:
      x = x.mean(axis=1)
    if x.ndim != 2 or x.shape[1] != d:
      raise ValueError(f"the hashing MLP encodes features [n, {d}] (or [n, v, {d}]); got "
                       f"rows of shape {list(x.shape)}")
    net = state.nets["hasher"]
    variables = {"params": net.params, **({"batch_stats": net.batch_stats}
                                          if net.batch_stats else {})}
    return update.in_batches(lambda chunk: forward(variables, chunk), x)

  return encode
