"""The on-disk cache of loaded datasets: `<root>/data/<kind>-<key digest>/`.

An entry holds `images.npy`, `labels.npy` and `meta.json` (class and band
names, source, files). It is written atomically, so a reader sees a complete
entry or none; a damaged or outdated one is ignored (and rewritten by the
loader), never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
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
    ds = Dataset(images, labels, tuple(meta["class_names"]), tuple(meta["band_names"]),
                 meta["source"], None if meta["files"] is None else tuple(meta["files"]))
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
