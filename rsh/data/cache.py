"""The on-disk cache of loaded datasets: `<root>/data/<kind>-<key digest>/`.

An entry holds `images.npy`, `labels.npy` and `meta.json` (class and band
names, source, files), plus one `view_<name>.npy` per `Dataset.views` entry and
`splits.npz` when the dataset has them (`meta.json` lists both; an entry
written before they existed reads as views=None, splits=None). It is written
atomically, so a reader sees a complete entry or none; a damaged or outdated
one is ignored (and rewritten by the loader), never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import tempfile

import numpy as np

from rsh.data.dataset import Dataset

log = logging.getLogger(__name__)

_CACHE_VERSION = 1


def cache_root(cache_dir: str | os.PathLike | bool | None) -> pathlib.Path | None:
  """The cache root directory, or None when caching is off (False or "none")."""
  if cache_dir is None or cache_dir is True:
    cache_dir = os.environ.get("RSH_CACHE_DIR") or pathlib.Path.home() / ".cache" / "rsh"
  if cache_dir is False or (isinstance(cache_dir, str) and cache_dir.lower() in ("none", "")):
    return None
  return pathlib.Path(cache_dir).expanduser()


def entry_path(cache_dir, kind: str, key: object) -> pathlib.Path | None:
  """The entry of source `kind` for `key` (any JSON value), or None when caching is off."""
  root = cache_root(cache_dir)
  if root is None:
    return None
  digest = hashlib.sha256(json.dumps([_CACHE_VERSION, key]).encode()).hexdigest()[:24]
  return root / "data" / f"{kind}-{digest}"


def read(path: pathlib.Path | None) -> Dataset | None:
  """The `Dataset` cached at `path`, or None (no path, no entry, or an unreadable one)."""
  if path is None or not path.is_dir():
    return None
  try:
    meta = json.loads((path / "meta.json").read_text())
    images = np.load(path / "images.npy", allow_pickle=False)
    labels = np.load(path / "labels.npy", allow_pickle=False)
    if meta.get("version") != _CACHE_VERSION:
      return None
    views = None
    if meta.get("views") is not None:
      views = {name: np.load(path / file, allow_pickle=False)
               for name, file in meta["views"].items()}
    splits = None
    if meta.get("splits") is not None:
      with np.load(path / "splits.npz", allow_pickle=False) as z:
        splits = {name: z[f"arr_{i}"] for i, name in enumerate(meta["splits"])}
    ds = Dataset(images, labels, tuple(meta["class_names"]), tuple(meta["band_names"]),
                 meta["source"], None if meta["files"] is None else tuple(meta["files"]),
                 views=views, splits=splits)
  except (OSError, ValueError, KeyError, TypeError) as e:
    # A damaged cache is only a lost shortcut: read the source again.
    log.warning("ignoring unreadable cache %s (%s)", path, e)
    return None
  log.info("loaded %d images from cache %s", len(ds), path)
  return ds


def write(path: pathlib.Path | None, ds: Dataset) -> None:
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
    views = None
    if ds.views is not None:
      views = {name: _view_file(i, name) for i, name in enumerate(ds.views)}
      for name, file in views.items():
        np.save(tmp / file, np.asarray(ds.views[name]), allow_pickle=False)
    if ds.splits is not None:
      # Positional (arr_0, arr_1, ...) in meta's order: any split name round-trips.
      np.savez(tmp / "splits.npz", *(np.asarray(idx) for idx in ds.splits.values()))
    (tmp / "meta.json").write_text(json.dumps(dict(
        version=_CACHE_VERSION, class_names=ds.class_names, band_names=ds.band_names,
        source=ds.source, files=ds.files, shape=list(ds.images.shape), views=views,
        splits=None if ds.splits is None else list(ds.splits))))
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


def _view_file(i: int, name: str) -> str:
  """`view_<name>.npy`, or `view.<i>.npy` for a name that is no plain file name."""
  if re.fullmatch(r"[A-Za-z0-9_.-]+", name):
    return f"view_{name}.npy"
  return f"view.{i}.npy"
