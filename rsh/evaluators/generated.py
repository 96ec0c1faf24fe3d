"""`generated_quality`: Inception Score and FID of a generator's images (thesis eq. 4.13, 4.14).

    config.evals.quality = dict(type="generated_quality", samples=5000, splits=10)

Generates `samples` images with balanced class labels (class i % c for image i)
from a fixed seed, so every evaluated state draws the same z, and scores them
with a frozen ImageNet classifier:
  - IS from its 1000 ImageNet logits (mean and std over `splits` chunks);
  - FID between its penultimate features of the generated images and of every
    real training image; and the floor: FID between two halves of the real
    training images (a random halving; what FID reads between two samples of
    the same distribution at this size: FID is biased upwards at small n).
The backbone is `backbone`, else Inception-v3 when `config.data.weights` names
its file, else EfficientNet-Lite0 (its ImageNet logits and 1,280-d penultimate
features, packaged weights): every key names it (`generated/<backbone>/fid`),
and numbers on EfficientNet-Lite0 are not the paper's metric.
Images reach the backbone as `rsh.features` feeds it: RGB reflectance in [0, 1]
(G's tanh output mapped by (x + 1) / 2, the inverse of the pixels view), times
the gain 2, clipped, resized bilinearly from 64 to its input size (224 or 299,
the size its filters and pooling were trained at) and ImageNet-normalised; real
and generated images pass the same path, so the resize is no difference
between them, but FID values depend on it and compare only at equal settings.
"""

from __future__ import annotations

import numpy as np

from rsh import data as rdata
from rsh import features
from rsh import image_quality
from rsh import weights as rweights
from rsh.evaluators.base import Evaluator


class GeneratedQuality(Evaluator):
  """IS and FID of the method's generated images against the real training images."""
  options = ("samples", "splits", "backbone", "seed", "prefix")
  in_loop = False   # `in_loop=True` adds the curve: a generation + backbone pass per eval

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    where = f"config.evals.{name}"
    if getattr(ctx, "generate", None) is None:
      raise ValueError(f"{where}: the method {ctx.config.method!r} generates no images")
    labels = ctx.data.labels
    if np.ndim(labels) != 1:
      raise ValueError(f"{where}: generated images are asked for by class id; the data's "
                       "labels are multi-hot")
    self.samples = self._int("samples", 5000, 2)
    self.splits = self._int("splits", 10, 1)
    if self.samples // self.splits < 1:
      raise ValueError(f"{where}.splits={self.splits}: more splits than the "
                       f"{self.samples} samples")
    self.seed = self._int("seed", 0, 0)
    weights = ctx.config.data.get("weights")
    self.backbone = self.cfg.get("backbone") or ("inception_v3" if weights
                                                 else "efficientnet_lite0")
    if self.backbone not in rweights.BACKBONES:
      raise ValueError(f"{where}.backbone={self.backbone!r}: one of "
                       f"{', '.join(rweights.BACKBONES)}")
    self.prefix = self.cfg.get("prefix", f"generated/{self.backbone}/")
    self.rgb = rdata.band_indices(ctx.data.band_names, rdata.RGB) if all(
        b in ctx.data.band_names for b in rdata.RGB) else None
    if self.rgb is None:
      raise ValueError(f"{where}: the backbone sees the bands {' '.join(rdata.RGB)}; the "
                       f"data has {' '.join(ctx.data.band_names)}")
    if len(ctx.data.split.train) < 4:
      raise ValueError(f"{where}: FID needs at least 4 real training images (two halves)")
    self._real = None

  def _int(self, key, default, low):
    value = self.cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f"config.evals.{self.name}.{key} must be an integer >= {low}; "
                       f"got {value!r}")
    return int(value)

  def _classifier(self):
    """The backbone's ImageNet classifier layer (kernel, bias), numpy."""
    spec = rweights.get(self.backbone)
    opts = self.ctx.data.feature_options
    variables = rweights.load_pretrained(spec.name, opts.get("weights"),
                                         cache_dir=opts.get("cache_dir"))
    layer = variables["params"][spec.classifier]
    return np.asarray(layer["kernel"], np.float64), np.asarray(layer["bias"], np.float64)

  def _features(self, rgb: np.ndarray, cache: bool) -> np.ndarray:
    opts = {k: v for k, v in self.ctx.data.feature_options.items()
            if k in ("weights", "gain", "cache_dir")}
    return features.extract(self.backbone, rgb, cache=cache, progress=False, **opts)

  def real(self) -> dict:
    """The real training images' features, their IS and the real-vs-real floor (once)."""
    if self._real is None:
      data = self.ctx.data
      feats = self._features(data.rgb(data.split.train), cache=True)
      halves = np.random.default_rng(self.seed).permutation(len(feats))
      a, b = np.array_split(halves, 2)
      kernel, bias = self._classifier()
      self._real = dict(features=feats, classifier=(kernel, bias), out={
          "is_real": image_quality.inception_score(
              feats @ kernel + bias, min(self.splits, len(feats)))[0],
          "fid_real_halves": image_quality.frechet_distance(feats[a], feats[b])})
    return self._real

  def score(self, images: np.ndarray) -> dict[str, float]:
    """IS and FID of generated images f32[n, 64, 64, c] in [-1, 1]."""
    real = self.real()
    rgb = np.clip((images[..., self.rgb] + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
    feats = self._features(rgb, cache=False)
    kernel, bias = real["classifier"]
    mean, std = image_quality.inception_score(feats @ kernel + bias,
                                              min(self.splits, len(feats)))
    return {"is": mean, "is_std": std,
            "fid": image_quality.frechet_distance(feats, real["features"]),
            **real["out"], "samples": float(len(images))}

  def labels(self, n: int) -> np.ndarray:
    return np.arange(n) % len(self.ctx.data.class_names)

  def precheck(self, state) -> None:
    """The whole path on 2 generated images (and the real features, kept)."""
    self.score(self.ctx.generate(state, self.labels(2), self.seed))

  def run(self, state, final: bool) -> dict[str, float]:
    del final
    return self.score(self.ctx.generate(state, self.labels(self.samples), self.seed))
