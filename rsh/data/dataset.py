"""The `Dataset` every source returns, the source registry and `load`.

Every source returns the same `Dataset` of raw digital numbers, with the band
order of its last axis stated in `band_names`: never assumed downstream. A
source is a module that registers its loader here by name (`register`):
`rsh.data.eurosat_folder` ("folder"), `rsh.data.tfds_eurosat` ("tfds"),
`rsh.data.demo` ("demo"), `rsh.data.bigearthnet` ("bigearthnet") and
`rsh.data.demo_crossmodal` ("demo_crossmodal"); `rsh.data` imports them all.
A source declares the `load` options only it takes (`register(options=)`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

import numpy as np

from rsh.data import bands
from rsh.data.bands import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A labelled image set, as raw digital numbers.

  Attributes:
    images: uint16[n, h, w, b] (h = w = 64 for EuroSAT), raw digital numbers.
    labels: int32[n] in [0, len(class_names)) (one class per image), or
      uint8[n, len(class_names)] of 0 / 1 (multi-hot: any number of classes
      per image).
    class_names: tuple[str]; label i is class_names[i].
    band_names: tuple[str] of length b, the order of the last axis of `images`.
    source: str, where it came from (e.g. "folder", "demo", "tfds:eurosat/all").
    files: tuple[str] of length n (paths relative to the source), or None.
    views: {name: array[n, ...]}: other data of the same rows, e.g. a second
      modality ("s1" beside the S2 pixels); `Prepared.view(name)` serves them.
    splits: {name: int[k] row indices}: sets the source ships (e.g. official
      train / val / test lists); `Prepared.indices(name)` serves them.
  """
  images: np.ndarray
  labels: np.ndarray
  class_names: tuple[str, ...]
  band_names: tuple[str, ...]
  source: str
  files: tuple[str, ...] | None = None
  views: dict | None = None
  splits: dict | None = None

  def __post_init__(self):
    # Frozen: normalise the containers once, here, then check everything.
    set_ = lambda k, v: object.__setattr__(self, k, v)
    set_("class_names", tuple(str(c) for c in self.class_names))
    set_("band_names", tuple(str(b) for b in self.band_names))
    if self.files is not None:
      set_("files", tuple(str(f) for f in self.files))
    images, labels = self.images, np.asarray(self.labels)
    what = f"Dataset(source={self.source!r})"
    if not isinstance(images, np.ndarray) or images.dtype != np.uint16 or images.ndim != 4:
      raise DataError(f"{what}: images must be a uint16[n, h, w, b] numpy array, not "
                      f"{getattr(images, 'dtype', type(images))}{list(np.shape(images))}")
    n = images.shape[0]
    if labels.ndim == 2:
      set_("labels", _multi_hot(labels, n, len(self.class_names), what))
    else:
      if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{what}: labels must be int[{n}] (one per image), not "
                        f"{labels.dtype}{list(labels.shape)}")
      set_("labels", labels.astype(np.int32, copy=False))
    if not self.class_names or len(set(self.class_names)) != len(self.class_names):
      raise DataError(f"{what}: class_names must be non-empty and unique: {self.class_names}")
    if labels.ndim == 1 and n and (labels.min() < 0 or labels.max() >= len(self.class_names)):
      raise DataError(f"{what}: labels must lie in [0, {len(self.class_names)}), found "
                      f"{labels.min()}..{labels.max()}")
    if len(self.band_names) != images.shape[-1]:
      raise DataError(f"{what}: {len(self.band_names)} band_names {self.band_names} for "
                      f"{images.shape[-1]} bands")
    bands.resolve_bands(self.band_names)  # known and unique
    if self.files is not None and len(self.files) != n:
      raise DataError(f"{what}: {len(self.files)} files for {n} images")
    for name, v in (self.views or {}).items():
      if len(v) != n or name == "pixels" or name.startswith("features/"):
        raise DataError(f"{what}: view {name!r} must have {n} rows and not be named "
                        f"'pixels' or 'features/...' (got {len(v)} rows)")
    for name, idx in (self.splits or {}).items():
      idx = np.asarray(idx)
      if idx.ndim != 1 or idx.dtype.kind not in "iu" or (idx.size and (
          idx.min() < 0 or idx.max() >= n)):
        raise DataError(f"{what}: split {name!r} must be row indices int[k] in [0, {n})")

  def __len__(self):
    return len(self.labels)

  @property
  def multi_label(self) -> bool:
    """Whether `labels` are multi-hot uint8[n, c] rather than class ids int32[n]."""
    return self.labels.ndim == 2

  def counts(self) -> dict[str, int]:
    """Images per class, in label order (an image counts once for each of its classes)."""
    if self.multi_label:
      c = self.labels.sum(0, dtype=np.int64)
    else:
      c = np.bincount(self.labels, minlength=len(self.class_names))
    return dict(zip(self.class_names, c.tolist()))


def _multi_hot(labels: np.ndarray, n: int, c: int, what: str) -> np.ndarray:
  """Checked multi-hot labels as uint8[n, c]."""
  if (labels.shape != (n, c)
      or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_)):
    raise DataError(f"{what}: multi-hot labels must be int[{n}, {c}] (one row per image, "
                    f"one column per class), not {labels.dtype}{list(labels.shape)}")
  if labels.size and not np.isin(labels, (0, 1)).all():
    raise DataError(f"{what}: multi-hot labels must be 0 or 1, found "
                    f"{labels.min()}..{labels.max()}")
  return labels.astype(np.uint8, copy=False)


# -- the source registry -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
  """A registered source: its loader and the `load` options only it takes.

  `load(source=, sub=, dir=, cache_dir=, seed=, n_per_class=, progress=, **options)`
  returns the `Dataset` (`sub` is what follows ':' in the source name, e.g.
  "eurosat/rgb" of "tfds:eurosat/rgb"; `options` are those of `options` that
  the caller set, i.e. not None).
  """
  name: str
  load: Callable[..., Dataset]
  options: tuple[str, ...] = ()


# name -> Source, in registration order ("folder", "tfds", "demo", ...).
SOURCES: dict[str, Source] = {}
# What every loader is given: no source option may take one of these names.
_COMMON = ("source", "sub", "dir", "cache_dir", "seed", "n_per_class", "progress")


def register(name: str, *, options: Sequence[str] = ()):
  """Decorator: registers a loader as source `name` (see `Source`).

  Args:
    name: the source name `load` dispatches on.
    options: the names of the `load` keyword options this source takes
      (e.g. ("split",)); `load` refuses them for every other source.
  """
  options = tuple(options)
  clash = [o for o in options if o in _COMMON or not str(o).isidentifier()]
  if clash:
    raise ValueError(f"source {name!r}: options {clash} must be identifiers other than "
                     f"the arguments every source takes ({', '.join(_COMMON)})")

  def decorate(fn):
    SOURCES[name] = Source(name, fn, options)
    return fn

  return decorate


def known_options() -> tuple[str, ...]:
  """Every `load` option some registered source takes, sorted."""
  return tuple(sorted({o for s in SOURCES.values() for o in s.options}))


def check_options(source: str, *, n_per_class: int | None = None, **options) -> dict:
  """The `load` options that apply, checked against what `source` takes.

  Args:
    source: a source name, as for `load`.
    n_per_class: checked to be >= 1 when given.
    **options: source options; None means "not given".

  Returns:
    {option: value} of the options given (not None).

  Raises:
    DataError: an unknown source, an option no source takes (listing the known
      ones), an option another source takes ("X only applies to source=..."),
      or n_per_class < 1.
  """
  kind = str(source).partition(":")[0]
  if kind not in SOURCES:
    raise DataError(f"unknown data source {source!r}; known: {', '.join(SOURCES)}")
  unknown = [o for o in options if o not in known_options()]
  if unknown:
    raise DataError(f"unknown load option{'s' * (len(unknown) > 1)} {', '.join(unknown)}; "
                    f"known: {', '.join(known_options())}")
  given = {}
  for option, value in options.items():
    if value is None:
      continue
    if option not in SOURCES[kind].options:
      takers = "/".join(s.name for s in SOURCES.values() if option in s.options)
      shown = f"split={value!r}" if option == "split" else option
      raise DataError(f"{shown} only applies to source={takers}, not {source!r}")
    given[option] = value
  if n_per_class is not None and int(n_per_class) < 1:
    raise DataError(f"n_per_class must be >= 1, not {n_per_class}")
  return given


def load(source: str, *, dir: str | os.PathLike | None = None,
         cache_dir: str | os.PathLike | bool | None = None, seed: int = 0,
         n_per_class: int | None = None, split: str | None = None,
         band_names: Sequence[str] | str | None = None,
         progress: bool | None = None, **options) -> Dataset:
  """Loads a dataset.

  Args:
    source: "folder" (`dir/<Class>/*.tif`), "demo" (procedural, no files),
      "tfds" = "tfds:eurosat/all" / "tfds:eurosat/rgb" (`dir` is the tfds data dir),
      "bigearthnet" (`dir` holds the BigEarthNet S2 and S1 roots,
      `rsh.data.bigearthnet`) or "demo_crossmodal" (procedural S2 / S1 pairs).
    dir: the data folder (folder, bigearthnet) or tfds data_dir (tfds; default
      tfds's own).
    cache_dir: cache root for folder, tfds and bigearthnet reads: None =
      $RSH_CACHE_DIR or ~/.cache/rsh; False or "none" = no cache.
    seed: the demos' seed, and which images `n_per_class` (or bigearthnet's
      `limit`) keeps.
    n_per_class: demo: images per class (default 100); folder and tfds: keep at
      most this many random images of each class (default all); refused by
      the multi-label sources.
    split: tfds split (default "train", the only one EuroSAT has); only tfds.
    band_names: folder only: the band order of the files, when they are not
      13-band EuroSAT-MS GeoTIFFs.
    progress: show a progress bar while reading files (default: when many, on a tty).
    **options: options only some sources take (`Source.options`), e.g.
      bigearthnet's `bands`, `size`, `exclude`, `countries`, `limit`; None
      means not given. An option no source takes, or one another source takes,
      is a DataError.

  Returns:
    A `Dataset`, classes in label order, images in file order within a class.
  """
  given = check_options(source, n_per_class=n_per_class, split=split,
                        band_names=band_names, **options)
  kind, _, sub = str(source).partition(":")
  return SOURCES[kind].load(source=str(source), sub=sub, dir=dir, cache_dir=cache_dir,
                            seed=seed, n_per_class=n_per_class, progress=progress, **given)


def subsample(ds: Dataset, n_per_class: int, seed: int = 0) -> Dataset:
  """At most `n_per_class` random images of each class, kept in their order."""
  if ds.multi_label:
    raise DataError(f"{ds.source}: n_per_class needs one class per image, not multi-hot labels")
  rng = np.random.default_rng(int(seed))
  keep = []
  for c in range(len(ds.class_names)):
    idx = np.flatnonzero(ds.labels == c)
    if len(idx) > n_per_class:
      idx = np.sort(rng.choice(idx, n_per_class, replace=False))
    keep.append(idx)
  keep = np.concatenate(keep)
  return dataclasses.replace(
      ds, images=ds.images[keep], labels=ds.labels[keep],
      files=None if ds.files is None else tuple(ds.files[i] for i in keep),
      views=None if ds.views is None else {k: v[keep] for k, v in ds.views.items()},
      splits=None)  # row indices of the full set no longer apply
