"""A dataset after band selection and the seeded split: what a run is given.

Its rows are seen through named **views**:

  "pixels"               the config's bands, f32[n, 64, 64, c] in [-1, 1] (sliced on demand)
  any key of `Dataset.views` e.g. "s1" / "s2": a modality a source loads beside its pixels
  "<prefix><name>"       a derived view, computed from the others on first use and
                         registered from above the data layer (`register_view`):
                         "features/<backbone>", frozen CNN features of the RGB
                         bands, is registered by `rsh.features`

`config.data.input` names the view a method trains and encodes on; a bare
derived name ("efficientnet_lite0") means its derived view. Labels are
`int32[n]` classes or multi-hot `uint8[n, c]`; sets are named ("query",
"archive", "train", plus any split a source ships in `Dataset.splits`).

Data on disk (a BigEarthNet store's memory maps, `rsh.data.lazy.on_disk`) is never
read whole: the bands are selected per row read (`lazy.Bands`), and the sets and
training rows of every view are `lazy.Rows`, gathered per batch or block.

`with_training_rows(prepared, images, labels, origin)` adds rows to the training
set only (e.g. a generator's images, `rsh.generated`): the query and archive
rows, and every view of them, stay byte for byte what they were.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import types
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from rsh.data import bands as rbands
from rsh.data import dataset as rdataset
from rsh.data import lazy as rlazy
from rsh.data import split as rsplit

log = logging.getLogger(__name__)

SETS = ("query", "archive", "train")
PIXELS = "pixels"


@dataclasses.dataclass(frozen=True)
class DerivedView:
  """A view computed from a `Prepared`'s other data, e.g. backbone features.

  The data layer knows pixels and a source's own views; a derived view is
  registered from above it (`register_view`), by the module that computes it.
  """
  prefix: str                                  # e.g. "features/": its names are prefix + name
  names: Callable[[], Sequence[str]]           # the names after the prefix (e.g. backbones)
  compute: Callable[[Any, str], np.ndarray]    # (Prepared, name) -> all rows, e.g. f32[n, d]
  check: Callable[[Any, str], None] | None = None  # (Prepared, name): refuse at prepare time


_DERIVED: dict[str, DerivedView] = {}
DERIVED = types.MappingProxyType(_DERIVED)   # prefix -> DerivedView, read-only


def register_view(view: DerivedView) -> DerivedView:
  """Adds a derived view (its `prefix` names it); a second one under the same
  prefix replaces the first (a module reloaded in a notebook)."""
  if not view.prefix.endswith("/"):
    raise ValueError(f"a derived view's prefix ends with '/', got {view.prefix!r}")
  _DERIVED[view.prefix] = view
  return view


# Old names, for one release: the RGB triple lives in `rsh.data.bands`, and the
# features view's prefix in `rsh.features`, which registers it.
_MOVED = {"RGB": ("rsh.data.bands.RGB", rbands.RGB),
          "FEATURES": ("rsh.features.FEATURES", "features/")}


def __getattr__(name: str):
  if name in _MOVED:
    where, value = _MOVED[name]
    warnings.warn(f"rsh.data.prepared.{name} moved to {where}", DeprecationWarning, stacklevel=2)
    return value
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _derived(name: str) -> tuple[DerivedView, str] | None:
  for prefix, view in _DERIVED.items():
    if name.startswith(prefix):
      return view, name[len(prefix):]
  return None


@dataclasses.dataclass
class Prepared:
  """A dataset after band selection and the query / archive / train split.

  `images` are raw digital numbers (uint16) of the selected bands, so large
  archives stay 4x smaller than as float; `signed` chunks are made on demand.
  On disk (`lazy.on_disk`): the source's memory map, or a `lazy.Bands` of it.
  """
  dataset: Any                    # rsh.data.Dataset, all bands as loaded
  images: np.ndarray              # uint16[n, 64, 64, c], the config's bands
  labels: np.ndarray              # int32[n] or multi-hot uint8[n, classes]
  band_names: tuple[str, ...]
  split: rsplit.Split
  feature_options: dict = dataclasses.field(default_factory=dict)  # derived views' options
  max_dn: int = rbands.MAX_DN     # the pixels view's saturation level (`bands.normalise`)
  # `with_training_rows`: the blocks of rows whose derived views are computed
  # apart and stacked (the source's rows, then the added ones), and where the
  # added rows came from (results.json's `generated`).
  parts: tuple = ()
  added: dict | None = None
  _views: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def class_names(self):
    return self.dataset.class_names

  @property
  def domain_ids(self) -> np.ndarray:
    """int32[n]: 0 for the main data's rows (the target domain), 1 for rows added by
    `with_training_rows` (a second domain's, or a generator's)."""
    sizes = [len(p.labels) for p in self.parts] or [len(self.labels)]
    return np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)

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
    return self._scale(self.images[idx])

  def _scale(self, dn) -> np.ndarray:
    """f32 in [-1, 1] of raw digital numbers `dn` (elementwise)."""
    return np.asarray(rbands.to_signed(rbands.normalise(dn, self.max_dn)), np.float32)

  # ----------------------------------------------------------------------- views

  def view_names(self) -> tuple[str, ...]:
    return ((PIXELS,) + tuple(prefix + n for prefix, v in _DERIVED.items() for n in v.names())
            + tuple(self.dataset.views or {}))

  def view_name(self, name: str | None) -> str:
    """The canonical view for `name` ("efficientnet_lite0" -> "features/efficientnet_lite0")."""
    name = PIXELS if name in (None, "") else str(name)
    known = self.view_names()
    if name not in known:
      name = next((p + name for p in _DERIVED if p + name in known), name)
    if name not in known:
      hint = ("a backbone name alone means its features" if _DERIVED else
              "derived views such as backbone features are registered by importing rsh.features")
      raise ValueError(f"unknown data view {name!r}; known: {', '.join(known)} ({hint})")
    derived = _derived(name)
    if derived is not None and derived[0].check is not None:
      derived[0].check(self, derived[1])  # e.g. a backbone without packaged weights
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
      view, sub = _derived(name)
      self._views[name] = (np.concatenate([p.view(name) for p in self.parts]) if self.parts
                           else view.compute(self, sub))
    return self._views[name]

  def x(self, name: str, view: str | None = PIXELS):
    """The named set's rows of a view (pixels, and any view on disk, read on demand:
    `lazy.Rows`)."""
    idx = self.indices(name)
    if self.view_name(view) == PIXELS:
      return _Lazy(self, idx)
    rows = self.view(view)
    return rlazy.Rows(rows, idx) if rlazy.on_disk(rows) else rows[idx]

  def train_rows(self, view: str | None = PIXELS) -> np.ndarray | rlazy.Rows:
    """The training set's rows of a view, in memory: batches are cut from them; on disk,
    a `lazy.Rows` that reads each batch's rows (the same numbers)."""
    if self.view_name(view) == PIXELS:
      return self.train_x
    rows = self.x("train", view)
    return rows if isinstance(rows, rlazy.Rows) else np.asarray(rows)

  @functools.cached_property
  def train_x(self) -> np.ndarray | rlazy.Rows:
    """f32[n_train, 64, 64, c] in [-1, 1], held in memory: batches are cut from it;
    on disk, a `lazy.Rows` that scales each batch's rows as it reads them."""
    if rlazy.on_disk(self.images):
      return _Lazy(self, self.split.train)
    return rbands.to_signed(rbands.normalise(self.images[self.split.train], self.max_dn))

  def rgb(self, idx) -> np.ndarray | None:
    """f32[len(idx), 64, 64, 3] in [0, 1] (B04 B03 B02, scaled by `max_dn`), or
    None without them."""
    # The selected bands when they hold R, G, B (the same numbers), else the source's.
    images, names = self.images, self.band_names
    if not all(b in names for b in rbands.RGB):
      images, names = self.dataset.images, self.dataset.band_names
    if not all(b in names for b in rbands.RGB):
      return None
    sel = rbands.band_indices(names, rbands.RGB)
    return np.asarray(rbands.normalise(images[idx][..., sel], self.max_dn), np.float32)


class _Lazy(rlazy.Rows):
  """Rows `idx` of `Prepared.signed`, sliced without materialising them all
  (`x[:]` is itself; `np.asarray(x)` all of them)."""

  def __init__(self, prepared: Prepared, idx: np.ndarray):
    super().__init__(prepared.images, idx, transform=prepared._scale, dtype=np.float32)
    self.prepared = prepared


def with_training_rows(prepared: Prepared, images: np.ndarray, labels: np.ndarray,
                       origin: dict) -> Prepared:
  """`prepared` with m more rows in its training set, and nowhere else.

  Args:
    prepared: class-labelled, without a source's own views (e.g. `s1`), and
      not already given rows.
    images: uint16[m, h, w, c], raw digital numbers of `prepared.band_names`
      (the same h, w, and scale `prepared.max_dn`).
    labels: int[m] class ids of `prepared.class_names`.
    origin: where the rows came from, kept as `added` (results.json says it).

  Returns:
    A `Prepared` of n + m rows: rows 0..n-1 are `prepared`'s (the same query,
    archive and split), rows n.. the added ones, appended to `split.train`.
    A derived view (e.g. backbone features) is computed for each block apart
    and stacked, so the query and archive rows of every view are exactly
    `prepared`'s (and its on-disk feature cache is reused).
  """
  images, labels = np.asarray(images), np.asarray(labels)
  if prepared.parts or prepared.multi_label or prepared.dataset.views:
    why = ("it already has added rows" if prepared.parts else "its labels are multi-hot"
           if prepared.multi_label else f"its source has views {sorted(prepared.dataset.views)}")
    raise rbands.DataError(f"cannot add training rows to this dataset: {why}")
  if images.dtype != np.uint16 or images.shape[1:] != prepared.images.shape[1:]:
    raise rbands.DataError(f"added training rows must be uint16{['m', *prepared.images.shape[1:]]}"
                           f" (bands {' '.join(prepared.band_names)}), not "
                           f"{images.dtype}{list(images.shape)}")
  classes = len(prepared.class_names)
  if labels.shape != images.shape[:1] or labels.dtype.kind not in "iu" or (
      labels.size and (labels.min() < 0 or labels.max() >= classes)):
    raise rbands.DataError(f"added training rows need one class id in [0, {classes}) each; "
                           f"got {labels.dtype}{list(labels.shape)} for {len(images)} rows")
  ds = rdataset.Dataset(images=images, labels=labels, class_names=prepared.class_names,
                        band_names=prepared.band_names, source=str(origin.get("source", "added")))
  m, n = len(images), len(prepared.labels)
  block = Prepared(dataset=ds, images=images, labels=ds.labels, band_names=prepared.band_names,
                   split=rsplit.Split(*(np.zeros(0, np.int64),) * 2, np.arange(m, dtype=np.int64)),
                   feature_options=prepared.feature_options, max_dn=prepared.max_dn)
  split = prepared.split._replace(train=np.concatenate(
      [prepared.split.train, np.arange(n, n + m, dtype=np.int64)]))
  return dataclasses.replace(
      prepared, images=np.concatenate([prepared.images, images]),
      labels=np.concatenate([prepared.labels, ds.labels]), split=split,
      parts=(prepared, block), added=dict(origin), _views={})


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


def _select(images, sel: list[int]):
  """The bands `sel` of images [n, h, w, b]: `images` itself when `sel` is all of them
  in order (nothing writes to either, so no copy is needed); else a copy in memory,
  or on disk a `lazy.Bands`, which selects per row read: never a copy of the archive."""
  if sel == list(range(images.shape[-1])):
    return images
  return rlazy.Bands(images, sel) if rlazy.on_disk(images) else images[..., sel]


def prepare(config) -> Prepared:
  """Loads `config.data`, selects its bands and makes the seeded split.

  Class labels get the paper split (per class `n_query` queries, `n_train`
  training images); multi-hot labels a seeded random one (`n_query` queries
  in all, `n_train` training images in all, None = the whole archive);
  `config.data.split="official"` the sets the source ships (`official_split`).
  `config.data.options` are the source's own load options (e.g. bigearthnet's
  `countries`, `exclude`, `bands`).
  """
  d = config.data
  source_options = {k: (tuple(v) if isinstance(v, list) else v)
                    for k, v in dict(d.get("options") or {}).items() if v is not None}
  ds = rdataset.load(d.source, dir=d.get("dir"), cache_dir=d.get("cache_dir"),
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
  out = Prepared(dataset=ds, images=_select(ds.images, sel), labels=ds.labels,
                 band_names=tuple(bands), split=split, feature_options=options,
                 max_dn=int(d.get("max_dn", rbands.MAX_DN)))
  out.view_name(d.get("input"))  # an unknown view is named before anything is trained
  return out
