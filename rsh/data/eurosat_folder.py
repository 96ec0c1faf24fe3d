"""Source "folder": a folder of GeoTIFFs, `<dir>/<Class>/*.tif` (the EuroSAT-MS layout).

Classes are the sub-folders sorted by name; files are read in parallel and
cached (`rsh.data.cache`), keyed by their paths, sizes, mtimes and ctimes (a
copy that keeps the mtime, `cp -p` or `rsync -a`, cannot keep the ctime). An
edited folder's older entries are removed once the new one is written.
"""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import os
import pathlib
import re
import stat as stat_
import sys

import numpy as np

from rsh.data import bands
from rsh.data import cache
from rsh.data import dataset
from rsh.data.bands import DataError
from rsh.data.dataset import Dataset

log = logging.getLogger(__name__)

SIZE = 64
TIFF_SUFFIXES = (".tif", ".tiff")
_PROGRESS_MIN_FILES = 500


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
    if not _is_symlink(root):
      raise DataError(f"data folder {root} does not exist") from None
    raise DataError(f"data folder {root} {_why(root, None)}") from None
  except OSError as e:
    raise DataError(f"data folder {root} {_why(root, e)}") from None
  if not stat_.S_ISDIR(st.st_mode):
    raise DataError(f"data folder {root} is not a directory")
  real_root = root.resolve()
  classes = []
  for p in _listdir(root, "data folder"):
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
    for p in _listdir(root / name, "class folder"):
      if p.name.startswith("."):
        continue  # .DS_Store, editor swap files
      st = _stat(p)
      if stat_.S_ISDIR(st.st_mode) or p.suffix.lower() not in TIFF_SUFFIXES:
        raise DataError(f"{p}: not a .tif image; a class folder may only hold GeoTIFFs")
      found.append((f"{name}/{p.name}", label, st))
    if not found:
      raise DataError(f"class folder {root / name} has no .tif images")
    files.extend(sorted(found, key=lambda f: natural_key(f[0])))
  return tuple(classes), files


def _is_symlink(p: pathlib.Path) -> bool:
  try:
    return p.is_symlink()
  except OSError:
    return False


def _why(p: pathlib.Path, e: OSError | None) -> str:
  """Why `p` cannot be read, in words (after `p`'s stat failed with `e`)."""
  if e is not None and e.errno == errno.ELOOP:
    return "is a symlink loop (it links, maybe through other links, back to itself)"
  if (e is None or e.errno == errno.ENOENT) and _is_symlink(p):
    try:
      target = os.readlink(p)
    except OSError:
      target = "?"
    return f"is a broken symlink (to {target}, which does not exist)"
  if e is not None and e.errno in (errno.EACCES, errno.EPERM):
    return "cannot be read: permission denied"
  return f"cannot be read ({e.strerror if e is not None and e.strerror else e})"


def _stat(p: pathlib.Path) -> os.stat_result:
  """`p.stat()` (following symlinks), or a DataError naming `p`."""
  try:
    return p.stat()
  except OSError as e:
    raise DataError(f"{p} {_why(p, e)}") from None


def _listdir(folder: pathlib.Path, what: str) -> list[pathlib.Path]:
  """The entries of `folder`, sorted, or a DataError naming it."""
  try:
    return sorted(folder.iterdir())
  except OSError as e:
    raise DataError(f"{what} {folder} {_why(folder, e)}") from None


def natural_key(name: str):
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
  return to_dn(x, str(path))


def to_dn(x: np.ndarray, what: str) -> np.ndarray:
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


def show_progress(progress: bool | None, n: int) -> bool:
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


def parallel_map(fn, n: int, progress: bool | None, desc: str, *, unit: str = "file",
                 start: int = 0) -> list:
  """[fn(i) for i in range(start, n)] in a thread pool (None below `start`); the
  first failure in index order is raised.

  tifffile and file reads release the GIL while reading and decoding, so
  threads scale; one bad file among 27,000 stops the rest early rather than
  after a full pass.
  """
  out = [None] * n
  if n <= start:
    return out

  def run(i):
    out[i] = fn(i)

  bar = None
  if show_progress(progress, n):
    from tqdm import tqdm
    bar = tqdm(total=n, initial=start, desc=desc, unit=unit)
  workers = min(32, 4 * (os.cpu_count() or 1), n - start)
  pool = concurrent.futures.ThreadPoolExecutor(workers)
  try:
    futures = {pool.submit(run, i): i for i in range(start, n)}
    for f in concurrent.futures.as_completed(futures):
      if f.exception() is not None:
        break
      if bar is not None:
        bar.update()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    if bar is not None:
      bar.close()
  errors = {i: f.exception() for f, i in futures.items()
            if f.done() and not f.cancelled() and f.exception() is not None}
  if errors:
    raise errors[min(errors)]  # of the files read, the first bad one in index order
  return out


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

  parallel_map(read, len(paths), progress, f"reading {root}", start=1)
  return images, band_names
