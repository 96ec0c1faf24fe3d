"""A dataset after band selection and the seeded split: what a run is given."""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np

from rsh.data import bands as rbands
from rsh.data import dataset as rdataset
from rsh.data import split as rsplit

log = logging.getLogger(__name__)

RGB = ("B04", "B03", "B02")
SETS = ("query", "archive", "train")


@dataclasses.dataclass
class Prepared:
  """A dataset after band selection and the query / archive / train split.

  `images` are raw digital numbers (uint16) of the selected bands, so large
  archives stay 4x smaller than as float; `signed` chunks are made on demand.
  The split's sets are named (`"query"`, `"archive"`, `"train"`), so an
  evaluator's query set and archive are configuration.
  """
  dataset: rdataset.Dataset       # all bands, as loaded
  images: np.ndarray              # uint16[n, 64, 64, c], the config's bands
  labels: np.ndarray              # int32[n]
  band_names: tuple[str, ...]
  split: rsplit.Split

  @property
  def class_names(self):
    return self.dataset.class_names

  def indices(self, name: str) -> np.ndarray:
    if name not in SETS:
      raise ValueError(f"unknown image set {name!r}; known: {', '.join(SETS)}")
    return getattr(self.split, name)

  def signed(self, idx) -> np.ndarray:
    """f32[len(idx), 64, 64, c] in [-1, 1]: what the networks see."""
    return np.asarray(rbands.to_signed(rbands.normalise(self.images[idx])), np.float32)

  def x(self, name: str) -> "_Lazy":
    """The named set's images as `signed` would give them, sliced on demand."""
    return _Lazy(self, self.indices(name))

  @functools.cached_property
  def train_x(self) -> np.ndarray:
    """f32[n_train, 64, 64, c] in [-1, 1], held in memory: batches are cut from it."""
    return rbands.to_signed(rbands.normalise(self.images[self.split.train]))

  def rgb(self, idx) -> np.ndarray | None:
    """f32[len(idx), 64, 64, 3] in [0, 1] (B04 B03 B02), or None without them."""
    names = self.dataset.band_names
    if not all(b in names for b in RGB):
      return None
    sel = rbands.band_indices(names, RGB)
    return np.asarray(rbands.normalise(self.dataset.images[idx][..., sel]), np.float32)


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


def prepare(config) -> Prepared:
  """Loads `config.data`, selects its bands and makes the seeded paper split."""
  d = config.data
  ds = rdataset.load(d.source, dir=d.get("dir"), cache_dir=d.get("cache_dir"),
                     seed=config.seed, n_per_class=d.get("n_per_class"))
  bands = rbands.resolve_bands(d.bands)
  sel = rbands.band_indices(ds.band_names, bands)
  split = rsplit.paper_split(ds.labels, d.n_query, d.get("n_train"), config.seed)
  log.info("data: %s, %d images, %d classes, bands %s; %d query / %d archive / %d train",
           d.source, len(ds.labels), len(ds.class_names), " ".join(bands),
           len(split.query), len(split.archive), len(split.train))
  return Prepared(dataset=ds, images=ds.images[..., sel], labels=ds.labels,
                  band_names=tuple(bands), split=split)
