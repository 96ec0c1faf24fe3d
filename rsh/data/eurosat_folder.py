"""Source "folder": a folder of GeoTIFFs, `<dir>/<Class>/*.tif` (the EuroSAT-MS layout).

Classes are the sub-folders sorted by name; files are read in parallel and
cached (`rsh.data.cache`), keyed by their paths, sizes, mtimes and ctimes (a
copy that keeps the mtime, `cp -p` or `rsync -a`, cannot keep the ctime). An
edited folder's older entries are removed once the new one is written.
"""

from __future__ import annotations

import importlib
import logging
import os
import pathlib
import stat as stat_
import warnings

import numpy as np

from rsh.data import bands
from rsh.data import cache
from rsh.data import dataset
from rsh.data import files as rfiles
from rsh.data.bands import DataError
from rsh.data.dataset import Dataset

log = logging.getLogger(__name__)

SIZE = 64
TIFF_SUFFIXES = (".tif", ".tiff")
# Public names that moved to `rsh.data.files` (shared with the other sources);
# the old names work for one more release, with a DeprecationWarning.
_MOVED = {"natural_key": "rsh.data.files", "to_dn": "rsh.data.files",
          "show_progress": "rsh.data.files", "parallel_map": "rsh.data.files"}


def __getattr__(name):
  if name in _MOVED:
    warnings.warn(f"rsh.data.eurosat_folder.{name} moved to {_MOVED[name]}.{name}",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(_MOVED[name]), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataset.register("folder", options=("band_names",))
def _load(*, source, sub, dir, cache_dir, seed, n_per_class, progress, band_names=None):
  """The "folder" source of `rsh.data.load`."""
  if sub:
    raise DataError(f"unknown data source {source!r}; did you mean 'folder'?")
  ds = load_folder(dir, cache_dir=cache_dir, band_names=band_names, progress=progress)
  return dataset.subsample(ds, n_per_class, seed) if n_per_class is not None else ds


def _list_folder(root: pathlib.Path):
  """(class_names, [(relative path, label, os.stat_result)]) of `root/<Class>/*.tif`.

  Every problem with the layout is a DataError naming the file or folder: one
  that does not exist, is no folder, cannot be listed or read (permissions),
  a broken symlink or a symlink loop, a class folder linking back to a folder
  above it, anything in a class folder that is not a GeoTIFF.
  """
  if root is None:
    raise DataError("source=folder needs dir=<folder of <Class>/*.tif> (e.g. the "
                    "unzipped EuroSAT-MS download)")
  try:
    st = root.stat()
  except FileNotFoundError:
    if not rfiles.is_symlink(root):
      raise DataError(f"data folder {root} does not exist") from None
    raise DataError(f"data folder {root} {rfiles.why(root, None)}") from None
  except OSError as e:
    raise DataError(f"data folder {root} {rfiles.why(root, e)}") from None
  if not stat_.S_ISDIR(st.st_mode):
    raise DataError(f"data folder {root} is not a directory")
  real_root = root.resolve()
  classes = []
  for p in rfiles.listdir(root, "data folder"):
    if p.name.startswith("."):
      continue
    kind = _stat(p)
    if not stat_.S_ISDIR(kind.st_mode):
      continue  # a README or checksum list beside the class folders
    real = p.resolve()
    if real == real_root or real_root.is_relative_to(real):
      raise DataError(f"class folder {p} is a symlink to {real}, a folder holding it: a "
                      "symlink loop")
    classes.append(p.name)
  classes.sort()
  if not classes:
    raise DataError(f"data folder {root} has no class folders (expected <Class>/*.tif)")
  files = []
  for label, name in enumerate(classes):
    found = []
    for p in rfiles.listdir(root / name, "class folder"):
      if p.name.startswith("."):
        continue  # .DS_Store, editor swap files
      st = _stat(p)
      if stat_.S_ISDIR(st.st_mode) or p.suffix.lower() not in TIFF_SUFFIXES:
        raise DataError(f"{p}: not a .tif image; a class folder may only hold GeoTIFFs")
      found.append((f"{name}/{p.name}", label, st))
    if not found:
      raise DataError(f"class folder {root / name} has no .tif images")
    files.extend(sorted(found, key=lambda f: rfiles.natural_key(f[0])))
  return tuple(classes), files


def _stat(p: pathlib.Path) -> os.stat_result:
  """`p.stat()` (following symlinks), or a DataError naming `p`."""
  try:
    return p.stat()
  except OSError as e:
    raise DataError(f"{p} {rfiles.why(p, e)}") from None


def _read_tiff(path: pathlib.Path, n_bands: int | None) -> np.ndarray:
  """One GeoTIFF as uint16[64, 64, b], or a DataError naming it."""
  import tifffile
  try:
    x = tifffile.imread(path)
  except Exception as e:  # tifffile raises many types on a broken file
    raise DataError(f"{path}: cannot read as TIFF ({type(e).__name__}: {e})") from None
  x = np.asarray(x)
  if x.size == 0:
    raise DataError(f"{path}: cannot read as TIFF (no pixels: a broken or empty file)")
  if x.ndim == 2:
    x = x[..., None]
  elif x.ndim == 3 and x.shape[1:] == (SIZE, SIZE) and x.shape[0] != SIZE:
    x = np.moveaxis(x, 0, -1)  # planar (band-first) layout
  if x.ndim != 3 or x.shape[:2] != (SIZE, SIZE):
    raise DataError(f"{path}: image is {'x'.join(map(str, x.shape))}, expected "
                    f"{SIZE}x{SIZE}[x bands]")
  if n_bands is not None and x.shape[-1] != n_bands:
    raise DataError(f"{path}: has {x.shape[-1]} bands, expected {n_bands} like the others")
  return rfiles.to_dn(x, str(path))


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

  # Paths, sizes, mtimes and ctimes identify the content, without reading it: a
  # content write always moves the ctime, even when the mtime is set back.
  stats = [(rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for rel, _, st in files]
  entry = cache.entry_path(cache_dir, "folder", [stats, band_names])
  # One entry per folder and options: a new one supersedes those of older contents.
  origin = dict(source="folder", dir=str(root.resolve()), band_names=band_names)
  ds = cache.read(entry)
  if ds is not None:
    return ds

  paths = [root / rel for rel, _, _ in files]
  # tifffile logs what it dislikes before raising; our error names the file instead.
  tiff_log = logging.getLogger("tifffile")
  level = tiff_log.level
  tiff_log.setLevel(logging.CRITICAL)
  try:
    images, band_names = _read_all(root, paths, band_names, progress)
  finally:
    tiff_log.setLevel(level)

  ds = Dataset(images, np.asarray([label for _, label, _ in files], np.int32), classes,
               band_names, "folder", tuple(rel for rel, _, _ in files))
  log.info("read %d GeoTIFFs from %s", len(ds), root)
  cache.write(entry, ds, origin=origin)
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

  rfiles.parallel_map(read, len(paths), progress, f"reading {root}", start=1)
  return images, band_names
