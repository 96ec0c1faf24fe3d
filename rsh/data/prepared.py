"""A dataset after band selection and the seeded split: what a run is given.

Its rows are seen through named **views**:

  "pixels"               the config's bands, f32[n, 64, 64, c] in [-1, 1] (sliced on demand)
  "features/<backbone>"  frozen penultimate-layer features f32[n, d] of the RGB bands
                         (`rsh.features`), computed on first use and cached on disk
  any key of `Dataset.views` e.g. "s1" / "s2": a modality a source loads beside its pixels

`config.data.input` names the view a method trains and encodes on; a bare
backbone name ("efficientnet_lite0") means its features view. Labels are
`int32[n]` classes or multi-hot `uint8[n, c]`; sets are named ("query",
"archive", "train", plus any split a source ships in `Dataset.splits`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import numpy as np

from rsh.data import bands as rbands
from rsh.data import split as rsplit

log = logging.getLogger(__name__)

RGB = ("B04", "B03", "B02")
SETS = ("query", "archive", "train")
PIXELS = "pixels"
FEATURES = "features/"


@dataclasses.dataclass
class Prepared:
  """A dataset after band selection and the query / archive / train split.

  `images` are raw digital numbers (uint16) of the selected bands, so large
  archives stay 4x smaller than as float; `signed` chunks are made on demand.
  """
  dataset: Any                    # rsh.data.Dataset, all bands as loaded
  images: np.ndarray              # uint16[n, 64, 64, c], the config's bands
  labels: np.ndarray              # int32[n] or multi-hot uint8[n, classes]
  band_names: tuple[str, ...]
  split: rsplit.Split
  feature_options: dict = dataclasses.field(default_factory=dict)  # features.extract kwargs
  max_dn: int = rbands.MAX_DN     # the pixels view's saturation level (`bands.normalise`)
  _views: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def class_names(self):
    return self.dataset.class_names

  @property
  def multi_label(self) -> bool:
    return np.ndim(self.labels) == 2

  @property
  def set_names(self) -> tuple[str, ...]:
    return SETS + tuple(s for s in self.dataset.splits or {} if s not in SETS)

  def indices(self, name: str) -> np.ndarray:
    if name in SETS:
      return getattr(self.split, name)
    extra = self.dataset.splits or {}
    if name in extra:
      return np.asarray(extra[name], np.int64)
    raise ValueError(f"unknown image set {name!r}; known: {', '.join(self.set_names)}")

  def signed(self, idx) -> np.ndarray:
    """f32[len(idx), 64, 64, c] in [-1, 1]: what the networks see."""
    return np.asarray(rbands.to_signed(rbands.normalise(self.images[idx], self.max_dn)),
                      np.float32)

  # ----------------------------------------------------------------------- views

  def view_names(self) -> tuple[str, ...]:
    from rsh import features  # the backbone table; jax only when features are used
    return ((PIXELS,) + tuple(FEATURES + b for b in features.BACKBONES)
            + tuple(self.dataset.views or {}))

  def view_name(self, name: str | None) -> str:
    """The canonical view for `name` ("efficientnet_lite0" -> "features/efficientnet_lite0")."""
    name = PIXELS if name in (None, "") else str(name)
    if name not in self.view_names() and FEATURES + name in self.view_names():
      name = FEATURES + name
    if name not in self.view_names():
      raise ValueError(f"unknown data view {name!r}; known: {', '.join(self.view_names())} "
                       "(a backbone name alone means its features)")
    if name.startswith(FEATURES) and not self.feature_options.get("weights"):
      from rsh import weights  # a backbone without packaged weights needs a file
      spec = weights.get(name[len(FEATURES):])
      if spec.default_path is None:
        raise ValueError(f"the view {name} needs {spec.title} weights: pass "
                         f"--config.data.weights=PATH, a {spec.what} state dict (.pth)")
    return name

  def view(self, name: str | None = PIXELS):
    """All rows of a view: an array, or for pixels an on-demand slicer."""
    name = self.view_name(name)
    if name == PIXELS:
      return _Lazy(self, np.arange(len(self.labels)))
    extra = self.dataset.views or {}
    if name in extra:
      return extra[name]
    if name not in self._views:
      self._views[name] = self._features(name[len(FEATURES):])
    return self._views[name]

  def x(self, name: str, view: str | None = PIXELS):
    """The named set's rows of a view (pixels sliced on demand)."""
    idx = self.indices(name)
    if self.view_name(view) == PIXELS:
      return _Lazy(self, idx)
    return self.view(view)[idx]

  def train_rows(self, view: str | None = PIXELS) -> np.ndarray:
    """The training set's rows of a view, in memory: batches are cut from them."""
    if self.view_name(view) == PIXELS:
      return self.train_x
    return np.asarray(self.x("train", view))

  @functools.cached_property
  def train_x(self) -> np.ndarray:
    """f32[n_train, 64, 64, c] in [-1, 1], held in memory: batches are cut from it."""
    return rbands.to_signed(rbands.normalise(self.images[self.split.train], self.max_dn))

  def rgb(self, idx) -> np.ndarray | None:
    """f32[len(idx), 64, 64, 3] in [0, 1] (B04 B03 B02), or None without them."""
    names = self.dataset.band_names
    if not all(b in names for b in RGB):
      return None
    sel = rbands.band_indices(names, RGB)
    return np.asarray(rbands.normalise(self.dataset.images[idx][..., sel]), np.float32)

  def _features(self, backbone: str) -> np.ndarray:
    rgb = self.rgb(np.arange(len(self.labels)))
    if rgb is None:
      raise ValueError(f"the view features/{backbone} needs the bands {' '.join(RGB)}; "
                       f"the data has {' '.join(self.dataset.band_names)}")
    from rsh import features
    return features.extract(backbone, rgb, **self.feature_options)


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


def official_split(ds, n_query: int | None, n_train: int | None, seed: int) -> rsplit.Split:
  """The sets a source ships (`Dataset.splits` "train", "val", "test"): queries
  from "test" (a seeded `n_query` of them, None = all), the archive "train" +
  "val", training on "train" (a seeded `n_train` of it, None = all)."""
  shipped = ds.splits or {}
  missing = [s for s in ("train", "val", "test") if s not in shipped]
  if missing:
    raise ValueError(f"config.data.split='official' needs the source's train / val / test "
                     f"sets; {ds.source} ships {sorted(shipped) or 'none'}")
  rng = lambda stream: np.random.default_rng((int(seed), 2**34 + stream))
  def take(idx, k, stream, what):
    idx = rng(stream).permutation(np.sort(np.asarray(idx, np.int64)))
    if k is None:
      return idx
    if not 1 <= int(k) <= len(idx):
      raise ValueError(f"{what}={k}: the official set has {len(idx)} patches")
    return idx[:int(k)]
  query = take(shipped["test"], n_query, 0, "config.data.n_query")
  archive = rng(1).permutation(np.sort(np.concatenate(
      [np.asarray(shipped["train"], np.int64), np.asarray(shipped["val"], np.int64)])))
  train = take(shipped["train"], n_train, 2, "config.data.n_train")
  if not len(query) or not len(archive) or not len(train):
    raise ValueError(f"{ds.source}: an empty official set (test {len(query)}, "
                     f"train + val {len(archive)}, train {len(train)})")
  return rsplit.Split(query, archive, train)


def prepare(config) -> Prepared:
  """Loads `config.data`, selects its bands and makes the seeded split.

  Class labels get the paper split (per class `n_query` queries, `n_train`
  training images); multi-hot labels a seeded random one (`n_query` queries
  in all, `n_train` training images in all, None = the whole archive);
  `config.data.split="official"` the sets the source ships (`official_split`).
  `config.data.options` are the source's own load options (e.g. bigearthnet's
  `countries`, `exclude`, `bands`).
  """
  from rsh.data import load  # the source registry
  d = config.data
  source_options = {k: (tuple(v) if isinstance(v, list) else v)
                    for k, v in dict(d.get("options") or {}).items() if v is not None}
  ds = load(d.source, dir=d.get("dir"), cache_dir=d.get("cache_dir"),
            seed=config.seed, n_per_class=d.get("n_per_class"), **source_options)
  bands = rbands.resolve_bands(d.bands)
  sel = rbands.band_indices(ds.band_names, bands)
  labels = np.asarray(ds.labels)
  kind = d.get("split", "random")
  if kind == "official":
    split = official_split(ds, d.get("n_query"), d.get("n_train"), config.seed)
  elif kind != "random":
    raise ValueError(f"config.data.split must be 'random' or 'official', not {kind!r}")
  elif labels.ndim == 2:
    split = rsplit.random_split(len(labels), d.n_query, d.get("n_train"), config.seed)
  else:
    try:
      split = rsplit.paper_split(labels, d.n_query, d.get("n_train"), config.seed,
                                 class_names=ds.class_names)
    except rbands.DataError as e:  # named as the user sets them
      raise rbands.DataError(str(e).replace("n_query=", "config.data.n_query=").replace(
          "n_train=", "config.data.n_train=")) from None
  log.info("data: %s, %d images, %d classes, bands %s; %d query / %d archive / %d train",
           d.source, len(labels), len(ds.class_names), " ".join(bands),
           len(split.query), len(split.archive), len(split.train))
  options = {"weights": d.get("weights")} if d.get("weights") else {}
  out = Prepared(dataset=ds, images=ds.images[..., sel], labels=ds.labels,
                 band_names=tuple(bands), split=split, feature_options=options,
                 max_dn=int(d.get("max_dn", rbands.MAX_DN)))
  out.view_name(d.get("input"))  # an unknown view is named before anything is trained
  return out
