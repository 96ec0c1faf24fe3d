"""What every hashing method shares around training: the data it is given, the
similarity matrix it may learn from, and how its codes are judged and shown.

Methods call these; they never import each other.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Mapping

import numpy as np

from rsh import data as rdata
from rsh import hamming
from rsh import metrics as rmetrics
from rsh import similarity

log = logging.getLogger(__name__)

RGB = ("B04", "B03", "B02")


@dataclasses.dataclass
class Prepared:
  """A dataset after band selection and the query / archive / train split.

  `images` are raw digital numbers (uint16) of the selected bands, so large
  archives stay 4x smaller than as float; `normalised` chunks are made on demand.
  """
  dataset: rdata.Dataset          # all bands, as loaded
  images: np.ndarray              # uint16[n, 64, 64, c], the config's bands
  labels: np.ndarray              # int32[n]
  band_names: tuple[str, ...]
  split: rdata.Split

  @property
  def class_names(self):
    return self.dataset.class_names

  def signed(self, idx) -> np.ndarray:
    """f32[len(idx), 64, 64, c] in [-1, 1]: what the networks see."""
    return np.asarray(rdata.to_signed(rdata.normalise(self.images[idx])), np.float32)

  def query_x(self) -> "_Lazy":
    return _Lazy(self, self.split.query)

  def archive_x(self) -> "_Lazy":
    return _Lazy(self, self.split.archive)

  def rgb(self, idx) -> np.ndarray | None:
    """f32[len(idx), 64, 64, 3] in [0, 1] (B04 B03 B02), or None without them."""
    names = self.dataset.band_names
    if not all(b in names for b in RGB):
      return None
    sel = rdata.band_indices(names, RGB)
    return np.asarray(rdata.normalise(self.dataset.images[idx][..., sel]), np.float32)


class _Lazy:
  """An index range of `Prepared.signed`, sliced without materialising it all."""

  def __init__(self, prepared: Prepared, idx: np.ndarray):
    self.prepared, self.idx = prepared, idx
    self.shape = (len(idx),) + prepared.images.shape[1:]
    self.dtype = np.float32

  def __len__(self):
    return len(self.idx)

  def __getitem__(self, s):
    return self.prepared.signed(self.idx[s])


def prepare_data(config) -> Prepared:
  """Loads `config.data`, selects its bands and makes the seeded paper split."""
  d = config.data
  ds = rdata.load(d.source, dir=d.get("dir"), cache_dir=d.get("cache_dir"),
                  seed=config.seed, n_per_class=d.get("n_per_class"))
  bands = rdata.resolve_bands(d.bands)
  sel = rdata.band_indices(ds.band_names, bands)
  split = rdata.paper_split(ds.labels, d.n_query, d.get("n_train"), config.seed)
  log.info("data: %s, %d images, %d classes, bands %s; %d query / %d archive / %d train",
           d.source, len(ds.labels), len(ds.class_names), " ".join(bands),
           len(split.query), len(split.archive), len(split.train))
  return Prepared(dataset=ds, images=ds.images[..., sel], labels=ds.labels,
                  band_names=tuple(bands), split=split)


def build_training_ssm(config, prepared: Prepared):
  """The unsupervised SSM of the training set (thesis §5.2), and its quality.

  K1 and K2 are given for 5,000 training images (`config.ssm.n_ref`); smaller
  training sets scale them proportionally so each image keeps the same share
  of the set as neighbours.
  """
  c = config.ssm
  idx = prepared.split.train
  n = len(idx)
  k1 = similarity.scale_k(int(c.k1), n, int(c.n_ref))
  k2 = similarity.scale_k(int(c.k2), n, int(c.n_ref))
  images = np.asarray(rdata.normalise(prepared.images[idx]), np.float32)
  spatial = None
  if c.spatial != "none":
    rgb = prepared.rgb(idx)
    if rgb is None:
      raise ValueError(f"config.ssm.spatial={c.spatial!r} needs the bands {RGB} in the data")
    from rsh import features  # only when a backbone is asked for
    spatial = features.extract(c.spatial, rgb, weights=c.get("weights"))
  else:
    log.info("SSM: config.ssm.spatial='none', spectral features only")
  packed, info = similarity.build_ssm(
      images, spectral=c.spectral, n_bins=int(c.n_bins), n_patches=int(c.n_patches),
      spatial_features=spatial, eta=float(c.eta), k1=k1, k2=k2)
  quality = similarity.ssm_quality(packed, prepared.labels[idx])
  info = {**{k: v for k, v in info.items() if np.ndim(v) == 0}, **quality, "k1": k1, "k2": k2}
  log.info("SSM: n=%d K1=%d K2=%d spatial=%s accuracy=%.4f IoU=%.4f", n, k1, k2,
           c.spatial, quality["accuracy"], quality["iou"])
  return packed, info


def retrieval_metrics(config, prepared: Prepared, query_out: Mapping[str, np.ndarray],
                      archive_out: Mapping[str, np.ndarray], binary_key: str = "hash",
                      light: bool = False) -> dict[str, float]:
  """Scores a model's outputs for the query and archive sets.

  `hash` outputs are scored twice: as codes (sign, Hamming ranking) under
  `binary/...` and as real vectors (cosine ranking) under `nonbinary/...`;
  `feature` outputs (GAN baselines) only as real vectors. The method's primary
  numbers (`map@100`, ...) are the binary ones when codes exist.
  """
  e = config.eval
  ql = prepared.labels[prepared.split.query]
  al = prepared.labels[prepared.split.archive]
  names = None if light else prepared.class_names
  out = {}
  if binary_key in query_out:
    q, a = query_out[binary_key], archive_out[binary_key]
    codes_q, codes_a = hamming.pack_codes(q >= 0), hamming.pack_codes(a >= 0)
    binary = rmetrics.evaluate(codes_q, codes_a, ql, al, k=int(e.k), n=int(e.n),
                               class_names=names, pr_step=int(e.pr_step))
    out.update({f"binary/{k}": v for k, v in binary.items()})
    nonbin = rmetrics.evaluate(q, a, ql, al, k=int(e.k), n=int(e.n), distance="cosine",
                               class_names=names, pr_step=int(e.pr_step))
    primary = binary
  else:
    q, a = query_out["feature"], archive_out["feature"]
    nonbin = rmetrics.evaluate(q, a, ql, al, k=int(e.k), n=int(e.n), distance="cosine",
                               class_names=names, pr_step=int(e.pr_step))
    primary = nonbin
  out.update({f"nonbinary/{k}": v for k, v in nonbin.items()})
  out.update(primary)
  return out


def random_projection_metrics(config, prepared: Prepared) -> dict[str, float]:
  """The same protocol for sign(random projection) codes of the same pixels.

  Pixels are the config's bands in [-1, 1], centred by the training mean (a
  random hyperplane through the data, not through the corner of the cube).
  """
  bits = int(config.model.bits)
  rng = np.random.default_rng(config.seed + 1)
  dim = int(np.prod(prepared.images.shape[1:]))
  proj = rng.standard_normal((dim, bits)).astype(np.float32)
  mean = prepared.signed(prepared.split.train).reshape(len(prepared.split.train), -1).mean(0)

  def codes(idx):
    out = []
    for s in range(0, len(idx), 1024):
      x = prepared.signed(idx[s:s + 1024]).reshape(-1, dim) - mean
      out.append(x @ proj >= 0)
    return hamming.pack_codes(np.concatenate(out))

  e = config.eval
  res = rmetrics.evaluate(codes(prepared.split.query), codes(prepared.split.archive),
                          prepared.labels[prepared.split.query],
                          prepared.labels[prepared.split.archive],
                          k=int(e.k), n=int(e.n), pr_step=int(e.pr_step),
                          class_names=prepared.class_names)
  return {k: v for k, v in res.items() if np.ndim(v) == 0}


def results_dict(config, prepared: Prepared, metrics: dict, baseline: dict, history: list,
                 seconds: float) -> dict:
  scalars = {k: v for k, v in metrics.items() if np.ndim(v) == 0}
  curves = {k: v for k, v in metrics.items() if np.ndim(v) != 0}
  return {
      "method": config.method,
      "name": config.get("name", config.method),
      "variant": config.get("variant"),
      "data_source": config.data.source,
      "data_dir": config.data.get("dir"),
      "bands": list(prepared.band_names),
      "bits": int(config.model.bits),
      "n_query": int(len(prepared.split.query)),
      "n_archive": int(len(prepared.split.archive)),
      "n_train": int(len(prepared.split.train)),
      "seed": int(config.seed),
      "k": int(config.eval.k),
      "n": int(config.eval.n),
      "metrics": scalars,
      "curves": {k: np.asarray(v).tolist() for k, v in curves.items()},
      "baselines": {"random_projection": baseline},
      "history": history,
      "seconds": round(seconds, 1),
  }


def save_figures(workdir, config, prepared: Prepared, metrics, history, query_out, archive_out,
                 fake, baseline: Mapping[str, float] | None = None) -> None:
  """PR curve, MAP vs steps, generated images, top-10 retrievals (PNG files).

  `baseline`: random projection's metrics, drawn as reference lines.
  """
  from rsh import plots  # matplotlib only when figures are drawn
  workdir = pathlib.Path(workdir)
  plots.pr_curve(metrics, workdir / "pr_curve.png")
  plots.map_vs_steps(history, workdir / "map_vs_steps.png", k=int(config.eval.k),
                     reference={"random projection": baseline} if baseline else None)
  if fake is not None:
    plots.image_grid(fake, prepared.band_names, workdir / "generated.png")
  key = "hash" if "hash" in query_out else "feature"
  plots.retrievals(prepared, query_out[key], archive_out[key], workdir / "retrievals.png",
                   binary=key == "hash", seed=config.seed)
