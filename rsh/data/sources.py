"""Where images come from: a folder of GeoTIFFs, tensorflow-datasets, or the demo.

Every source returns the same `Dataset` of raw digital numbers, with the band
order of its last axis stated in `band_names`: never assumed downstream.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import sys
import tempfile
from typing import Sequence

import numpy as np

from rsh.data import bands
from rsh.data import demo
from rsh.data.bands import DataError

log = logging.getLogger(__name__)

SOURCES = ("folder", "tfds", "demo")
EUROSAT_CLASSES = demo.CLASS_NAMES
SIZE = 64
TIFF_SUFFIXES = (".tif", ".tiff")

# tfds `eurosat/all` builds its 'sentinel2' tensor by reading the very same
# EuroSAT-MS GeoTIFFs with tifffile and casting to float32 (see
# tensorflow_datasets/image_classification/eurosat.py, `_extract_channels`), so
# its last axis is in GeoTIFF order, B8A last.
TFDS_EUROSAT_ALL_BANDS = bands.EUROSAT_BANDS
# tfds `eurosat/rgb` holds the 8-bit JPEG RGB release of EuroSAT (key 'image').
TFDS_EUROSAT_RGB_BANDS = ("B04", "B03", "B02")
TFDS_NAMES = {"eurosat/all": ("sentinel2", TFDS_EUROSAT_ALL_BANDS),
              "eurosat/rgb": ("image", TFDS_EUROSAT_RGB_BANDS)}
# The RGB release is contrast-stretched to 8 bits: not digital numbers at all.
# Spreading 0..255 over 0..4095 makes `normalise` give x / 255, the usual [0, 1]
# scaling of 8-bit images, but its values are not comparable to `eurosat/all`.
RGB8_TO_DN = bands.MAX_DN / 255

_CACHE_VERSION = 1
_PROGRESS_MIN_FILES = 500


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A labelled image set, as raw digital numbers.

  Attributes:
    images: uint16[n, h, w, b] (h = w = 64 for EuroSAT), raw digital numbers.
    labels: int32[n] in [0, len(class_names)).
    class_names: tuple[str]; label i is class_names[i].
    band_names: tuple[str] of length b, the order of the last axis of `images`.
    source: str, where it came from (e.g. "folder", "demo", "tfds:eurosat/all").
    files: tuple[str] of length n (paths relative to the source), or None.
  """
  images: np.ndarray
  labels: np.ndarray
  class_names: tuple[str, ...]
  band_names: tuple[str, ...]
  source: str
  files: tuple[str, ...] | None = None

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
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
      raise DataError(f"{what}: labels must be int[{n}] (one per image), not "
                      f"{labels.dtype}{list(labels.shape)}")
    set_("labels", labels.astype(np.int32, copy=False))
    if not self.class_names or len(set(self.class_names)) != len(self.class_names):
      raise DataError(f"{what}: class_names must be non-empty and unique: {self.class_names}")
    if n and (labels.min() < 0 or labels.max() >= len(self.class_names)):
      raise DataError(f"{what}: labels must lie in [0, {len(self.class_names)}), found "
                      f"{labels.min()}..{labels.max()}")
    if len(self.band_names) != images.shape[-1]:
      raise DataError(f"{what}: {len(self.band_names)} band_names {self.band_names} for "
                      f"{images.shape[-1]} bands")
    bands.resolve_bands(self.band_names)  # known and unique
    if self.files is not None and len(self.files) != n:
      raise DataError(f"{what}: {len(self.files)} files for {n} images")

  def __len__(self):
    return len(self.labels)

  def counts(self) -> dict[str, int]:
    """Images per class, in label order."""
    c = np.bincount(self.labels, minlength=len(self.class_names))
    return dict(zip(self.class_names, c.tolist()))


def load(source: str, *, dir: str | os.PathLike | None = None,
         cache_dir: str | os.PathLike | bool | None = None, seed: int = 0,
         n_per_class: int | None = None, split: str | None = None,
         band_names: Sequence[str] | str | None = None,
         progress: bool | None = None) -> Dataset:
  """Loads a dataset.

  Args:
    source: "folder" (`dir/<Class>/*.tif`), "demo" (procedural, no files), or
      "tfds" = "tfds:eurosat/all" / "tfds:eurosat/rgb" (`dir` is the tfds data dir).
    dir: the data folder (folder) or tfds data_dir (tfds; default tfds's own).
    cache_dir: cache root for folder and tfds reads: None = $RSH_CACHE_DIR or
      ~/.cache/rsh; False or "none" = no cache.
    seed: the demo's seed, and which images `n_per_class` keeps.
    n_per_class: demo: images per class (default 100); folder and tfds: keep at
      most this many random images of each class (default all).
    split: tfds split (default "train", the only one EuroSAT has); only tfds.
    band_names: folder only: the band order of the files, when they are not
      13-band EuroSAT-MS GeoTIFFs.
    progress: show a progress bar while reading files (default: when many, on a tty).

  Returns:
    A `Dataset`, classes in label order, images in file order within a class.
  """
  kind, _, sub = str(source).partition(":")
  if kind not in SOURCES:
    raise DataError(f"unknown data source {source!r}; known: {', '.join(SOURCES)}")
  if split is not None and kind != "tfds":
    raise DataError(f"split={split!r} only applies to source=tfds, not {source!r}")
  if band_names is not None and kind != "folder":
    raise DataError(f"band_names only applies to source=folder, not {source!r}")
  if n_per_class is not None and int(n_per_class) < 1:
    raise DataError(f"n_per_class must be >= 1, not {n_per_class}")
  if kind == "demo":
    if dir is not None or sub:
      raise DataError(f"source=demo takes no dir and no sub-name (got dir={dir!r}, {source!r})")
    n = demo.DEFAULT_N_PER_CLASS if n_per_class is None else int(n_per_class)
    images, labels = demo.make_images(n, seed)
    return Dataset(images, labels, demo.CLASS_NAMES, bands.EUROSAT_BANDS, "demo")
  if kind == "folder":
    if sub:
      raise DataError(f"unknown data source {source!r}; did you mean 'folder'?")
    ds = load_folder(dir, cache_dir=cache_dir, band_names=band_names, progress=progress)
  else:
    ds = load_tfds(sub or "eurosat/all", data_dir=dir, split=split or "train",
                   cache_dir=cache_dir, progress=progress)
  return subsample(ds, n_per_class, seed) if n_per_class is not None else ds


def subsample(ds: Dataset, n_per_class: int, seed: int = 0) -> Dataset:
  """At most `n_per_class` random images of each class, kept in their order."""
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
      files=None if ds.files is None else tuple(ds.files[i] for i in keep))


# -- the cache ---------------------------------------------------------------


def cache_root(cache_dir: str | os.PathLike | bool | None) -> pathlib.Path | None:
  """The cache root directory, or None when caching is off (False or "none")."""
  if cache_dir is None or cache_dir is True:
    cache_dir = os.environ.get("RSH_CACHE_DIR") or pathlib.Path.home() / ".cache" / "rsh"
  if cache_dir is False or (isinstance(cache_dir, str) and cache_dir.lower() in ("none", "")):
    return None
  return pathlib.Path(cache_dir).expanduser()


def _cache_read(path: pathlib.Path | None):
  if path is None or not path.is_dir():
    return None
  try:
    meta = json.loads((path / "meta.json").read_text())
    images = np.load(path / "images.npy", allow_pickle=False)
    labels = np.load(path / "labels.npy", allow_pickle=False)
    if meta.get("version") != _CACHE_VERSION:
      return None
    ds = Dataset(images, labels, tuple(meta["class_names"]), tuple(meta["band_names"]),
                 meta["source"], None if meta["files"] is None else tuple(meta["files"]))
  except (OSError, ValueError, KeyError, TypeError) as e:
    # A damaged cache is only a lost shortcut: read the source again.
    log.warning("ignoring unreadable cache %s (%s)", path, e)
    return None
  log.info("loaded %d images from cache %s", len(ds), path)
  return ds


def _cache_write(path: pathlib.Path | None, ds: Dataset) -> None:
  """Writes `ds` to `path` atomically: a complete cache entry or none at all."""
  if path is None:
    return
  tmp = None
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    np.save(tmp / "images.npy", ds.images, allow_pickle=False)
    np.save(tmp / "labels.npy", ds.labels, allow_pickle=False)
    (tmp / "meta.json").write_text(json.dumps(dict(
        version=_CACHE_VERSION, class_names=ds.class_names, band_names=ds.band_names,
        source=ds.source, files=ds.files, shape=list(ds.images.shape))))
    if path.exists():  # a stale or damaged entry under the same key
      shutil.rmtree(path, ignore_errors=True)
    # The directory appears complete or not at all, even if we are killed.
    os.replace(tmp, path)
    tmp = None
    log.info("cached %d images in %s", len(ds), path)
  except OSError as e:
    # Another process won the race, or the cache is not writable: not fatal.
    log.warning("could not write cache %s (%s)", path, e)
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)


def _cache_path(cache_dir, kind: str, key: object) -> pathlib.Path | None:
  root = cache_root(cache_dir)
  if root is None:
    return None
  digest = hashlib.sha256(json.dumps([_CACHE_VERSION, key]).encode()).hexdigest()[:24]
  return root / "data" / f"{kind}-{digest}"


# -- folder ------------------------------------------------------------------


def _list_folder(root: pathlib.Path):
  """(class_names, [(relative path, label)]) of `root/<Class>/*.tif`."""
  if root is None:
    raise DataError("source=folder needs dir=<folder of <Class>/*.tif> (e.g. the "
                    "unzipped EuroSAT-MS download)")
  if not root.exists():
    raise DataError(f"data folder {root} does not exist")
  if not root.is_dir():
    raise DataError(f"data folder {root} is not a directory")
  classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
  if not classes:
    raise DataError(f"data folder {root} has no class folders (expected <Class>/*.tif)")
  files = []
  for label, name in enumerate(classes):
    found = []
    for p in sorted((root / name).iterdir()):
      if p.name.startswith("."):
        continue  # .DS_Store, editor swap files
      if p.is_dir() or p.suffix.lower() not in TIFF_SUFFIXES:
        raise DataError(f"{p}: not a .tif image; a class folder may only hold GeoTIFFs")
      found.append((f"{name}/{p.name}", label))
    if not found:
      raise DataError(f"class folder {root / name} has no .tif images")
    files.extend(sorted(found, key=lambda f: _natural_key(f[0])))
  return tuple(classes), files


def _natural_key(name: str):
  """'Forest_10.tif' after 'Forest_9.tif'."""
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _read_tiff(path: pathlib.Path, n_bands: int | None) -> np.ndarray:
  """One GeoTIFF as uint16[64, 64, b], or a DataError naming it."""
  import tifffile
  try:
    x = tifffile.imread(path)
  except Exception as e:  # tifffile raises many types on a broken file
    raise DataError(f"{path}: cannot read as TIFF ({type(e).__name__}: {e})") from None
  x = np.asarray(x)
  if x.ndim == 2:
    x = x[..., None]
  elif x.ndim == 3 and x.shape[1:] == (SIZE, SIZE) and x.shape[0] != SIZE:
    x = np.moveaxis(x, 0, -1)  # planar (band-first) layout
  if x.ndim != 3 or x.shape[:2] != (SIZE, SIZE):
    raise DataError(f"{path}: image is {'x'.join(map(str, x.shape))}, expected "
                    f"{SIZE}x{SIZE}[x bands]")
  if n_bands is not None and x.shape[-1] != n_bands:
    raise DataError(f"{path}: has {x.shape[-1]} bands, expected {n_bands} like the others")
  return _to_dn(x, str(path))


def _to_dn(x: np.ndarray, what: str) -> np.ndarray:
  """Any numeric image -> uint16 digital numbers, refusing what does not fit."""
  if x.dtype == np.uint16:
    return x
  if x.dtype.kind not in "uif":
    raise DataError(f"{what}: pixel type {x.dtype} is not a number")
  if x.dtype.kind == "f" and not np.isfinite(x).all():
    raise DataError(f"{what}: has non-finite values (NaN or inf)")
  lo, hi = x.min(), x.max()
  if lo < 0 or hi > np.iinfo(np.uint16).max:
    raise DataError(f"{what}: values {lo}..{hi} do not fit 16-bit digital numbers")
  return np.rint(x).astype(np.uint16) if x.dtype.kind == "f" else x.astype(np.uint16)


def _show_progress(progress: bool | None, n: int) -> bool:
  if progress is not None:
    return progress
  return n >= _PROGRESS_MIN_FILES and sys.stderr.isatty()


def load_folder(dir, *, cache_dir=None, band_names=None, progress=None) -> Dataset:
  """Reads `dir/<Class>/*.tif` (EuroSAT-MS layout); see `load`.

  Classes are the sub-folders sorted by name (label i = i-th name). Files with
  13 bands are taken as EuroSAT-MS GeoTIFFs (`bands.EUROSAT_BANDS`); any other
  band count needs `band_names`, their order in the files.
  """
  root = None if dir is None else pathlib.Path(dir).expanduser()
  classes, files = _list_folder(root)
  if band_names is not None:
    band_names = bands.resolve_bands(band_names)

  # Paths, sizes and mtimes identify the content well enough, without reading it.
  stats = []
  for rel, _ in files:
    st = (root / rel).stat()
    stats.append((rel, st.st_size, st.st_mtime_ns))
  cache = _cache_path(cache_dir, "folder", [stats, band_names])
  ds = _cache_read(cache)
  if ds is not None:
    return ds

  paths = [root / rel for rel, _ in files]
  # tifffile logs what it dislikes before raising; our error names the file instead.
  tiff_log = logging.getLogger("tifffile")
  level = tiff_log.level
  tiff_log.setLevel(logging.CRITICAL)
  try:
    images, band_names = _read_all(root, paths, band_names, progress)
  finally:
    tiff_log.setLevel(level)

  ds = Dataset(images, np.asarray([label for _, label in files], np.int32), classes,
               band_names, "folder", tuple(rel for rel, _ in files))
  log.info("read %d GeoTIFFs from %s", len(ds), root)
  _cache_write(cache, ds)
  return ds


def _read_all(root, paths, band_names, progress):
  """uint16[len(paths), 64, 64, b] and the band names, reading in parallel."""
  first = _read_tiff(paths[0], None)
  n_bands = first.shape[-1]
  if band_names is None:
    if n_bands != len(bands.EUROSAT_BANDS):
      raise DataError(f"{paths[0]}: has {n_bands} bands; only 13-band EuroSAT-MS files have "
                      "a known band order; pass band_names (e.g. --band_names=B04,B03,B02)")
    band_names = bands.EUROSAT_BANDS
  elif n_bands != len(band_names):
    raise DataError(f"{paths[0]}: has {n_bands} bands, but band_names lists "
                    f"{len(band_names)} ({' '.join(band_names)})")
  images = np.empty((len(paths), SIZE, SIZE, n_bands), np.uint16)
  images[0] = first

  def read(i):
    images[i] = _read_tiff(paths[i], n_bands)

  bar = None
  if _show_progress(progress, len(paths)):
    from tqdm import tqdm
    bar = tqdm(total=len(paths), initial=1, desc=f"reading {root}", unit="file")
  # tifffile releases the GIL while reading and decoding, so threads scale.
  workers = min(32, 4 * (os.cpu_count() or 1))
  pool = concurrent.futures.ThreadPoolExecutor(workers)
  try:
    futures = {pool.submit(read, i): i for i in range(1, len(paths))}
    for f in concurrent.futures.as_completed(futures):
      if f.exception() is not None:
        break  # stop early: one bad file among 27,000 should not cost a full read
      if bar is not None:
        bar.update()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    if bar is not None:
      bar.close()
  errors = {i: f.exception() for f, i in futures.items()
            if f.done() and not f.cancelled() and f.exception() is not None}
  if errors:
    raise errors[min(errors)]  # of the files read, the first bad one in file order
  return images, band_names


# -- tensorflow-datasets -----------------------------------------------------

_HOW_TO_GET = ("or read the unzipped EuroSAT-MS GeoTIFFs instead: "
               "--config.data.source=folder --config.data.dir=PATH for rsh.main, "
               "--source=folder --dir=PATH for rsh.data")


def _import_tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataError(f"source=tfds needs tensorflow-datasets ({e}); install it with "
                    f"`pip install rsh[tfds]` (or `pip install tensorflow-datasets`), "
                    f"{_HOW_TO_GET}") from None
  return tfds


def _tfds_records(name: str, data_dir, split: str):
  """(records, count, label names, data dir) of a prepared tfds dataset, without TF if possible."""
  tfds = _import_tfds()
  # tfds warns about a missing dataset_info.json before we can say it better.
  absl_log = logging.getLogger("absl")
  level = absl_log.level
  absl_log.setLevel(logging.ERROR)
  try:
    builder = tfds.builder(name, data_dir=None if data_dir is None else str(data_dir))
    prepared = builder.is_prepared()
  except Exception as e:  # tfds raises its own registry / version errors
    raise DataError(f"tfds dataset {name!r}: {type(e).__name__}: {e}") from None
  finally:
    absl_log.setLevel(level)
  where = getattr(builder, "data_dir", data_dir)
  if not prepared:
    raise DataError(
        f"tfds dataset {name} is not prepared in {where} (no network download is "
        f"attempted); prepare it where there is network with `tfds build {name} "
        f"--data_dir={data_dir or '~/tensorflow_datasets'} --file_format=array_record` "
        f"(~2 GB for eurosat/all), {_HOW_TO_GET}")
  names = tuple(builder.info.features["label"].names)
  try:
    n = builder.info.splits[split].num_examples
  except Exception as e:  # tfds raises several types for a bad split string
    raise DataError(f"tfds dataset {name} in {where}: bad split {split!r} "
                    f"({type(e).__name__}: {e})") from None
  try:
    # Random-access array_record files: no TensorFlow needed.
    return builder.as_data_source(split=split), n, names, where
  except (NotImplementedError, ValueError, ImportError) as e:
    log.info("tfds %s: no TF-free data source (%s); trying tfds.as_numpy", name, e)
  try:
    return tfds.as_numpy(builder.as_dataset(split=split)), n, names, where
  except ImportError as e:
    raise DataError(
        f"tfds dataset {name} in {where} is stored as tfrecord, which needs TensorFlow "
        f"to read ({e}): `pip install tensorflow`, or prepare it again with "
        f"`--file_format=array_record`, {_HOW_TO_GET}") from None
  except Exception as e:  # tfds split-name and file errors
    raise DataError(f"tfds dataset {name} split {split!r} in {where}: "
                    f"{type(e).__name__}: {e}") from None


def load_tfds(name: str = "eurosat/all", *, data_dir=None, split: str = "train",
              cache_dir=None, progress=None) -> Dataset:
  """Reads tfds `eurosat/all` (13 bands, float32 DN) or `eurosat/rgb` (8-bit RGB).

  `eurosat/all` keeps its digital numbers (`TFDS_EUROSAT_ALL_BANDS` order);
  `eurosat/rgb` is 8-bit and is spread over 0..4095 (`RGB8_TO_DN`), so it
  normalises like 8-bit images, not like the 12-bit multispectral data.
  """
  if name not in TFDS_NAMES:
    raise DataError(f"unknown tfds dataset {name!r}; known: {', '.join(TFDS_NAMES)}")
  key, band_names = TFDS_NAMES[name]
  source = f"tfds:{name}"
  records, n, class_names, where = _tfds_records(name, data_dir, split)
  cache = _cache_path(cache_dir, "tfds", [name, split, str(where), n])
  ds = _cache_read(cache)
  if ds is not None:
    return ds
  images = np.empty((n, SIZE, SIZE, len(band_names)), np.uint16)
  labels = np.empty((n,), np.int32)
  files = []
  it = iter(records)
  if _show_progress(progress, n):
    from tqdm import tqdm
    it = tqdm(it, total=n, desc=f"reading {source}", unit="image")
  i = -1
  for i, ex in enumerate(it):
    if i >= n:
      raise DataError(f"{source} split {split!r} in {where}: more than the {n} examples "
                      "its metadata lists; prepare it again")
    x = np.asarray(ex[key])
    what = f"{source} example {i} ({ex.get('filename', b'?')!r})"
    if x.shape != images.shape[1:]:
      raise DataError(f"{what}: {key} has shape {x.shape}, expected {images.shape[1:]}")
    if x.dtype == np.uint8:
      images[i] = np.rint(x * RGB8_TO_DN).astype(np.uint16)
    else:
      images[i] = _to_dn(x, what)
    labels[i] = ex["label"]
    f = ex.get("filename", "")
    files.append(f.decode() if isinstance(f, bytes) else str(f))
  if i + 1 != n:
    raise DataError(f"{source} split {split!r} in {where}: {i + 1} examples, but its "
                    f"metadata lists {n}; prepare it again")
  # tfds shuffles files when preparing: sort by class, then by name, like a folder.
  order = sorted(range(n), key=lambda i: (labels[i], _natural_key(files[i])))
  ds = Dataset(images[order], labels[order], class_names, band_names, source,
               tuple(files[i] for i in order))
  _cache_write(cache, ds)
  return ds
