"""The registered "bigearthnet" source: a `Scan`'s pairs read (or taken from the cache,
or from an on-disk store, `store`) into a `Dataset` with the S1 view."""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib

from rsh.data import cache
from rsh.data import dataset
from rsh.data.bands import DataError
from rsh.data.bigearthnet import pairs as rpairs
from rsh.data.bigearthnet import pixels
from rsh.data.bigearthnet import tables
from rsh.data.dataset import Dataset

log = logging.getLogger(__name__)


@dataset.register("bigearthnet",
                  options=("bands", "size", "exclude", "countries", "limit", "store"))
def _load(*, source, sub, dir, cache_dir, seed, n_per_class, progress, bands=None,
          size=None, exclude=None, countries=None, limit=None, store=None):
  """The "bigearthnet" source of `rsh.data.load`."""
  if sub:
    raise DataError(f"unknown data source {source!r}; did you mean 'bigearthnet'?")
  ds, _ = load_with_scan(dir, bands=bands, size=size, exclude=exclude, countries=countries,
                         limit=limit, seed=seed, n_per_class=n_per_class,
                         cache_dir=cache_dir, progress=progress, store=store)
  return ds


def load_with_scan(dir, *, bands=None, size=None, exclude=None, countries=None, limit=None,
                   seed: int = 0, n_per_class=None, cache_dir=None,
                   progress: bool | None = None, store=None
                   ) -> tuple[Dataset, rpairs.Scan | None]:
  """Reads the pairs of `dir` (see `rsh.data.bigearthnet`): the `Dataset` and its `Scan`.

  Args:
    dir: the folder holding the S2 and S1 roots; "example": the package's 6
      real pairs (`example_root`).
    bands: S2 bands to load, a preset or names (`resolve_bands`); default `ms10`.
    size: patch side after area-averaging (default 120; must divide 120).
    exclude, countries, limit, seed: the filters (`scan`).
    n_per_class: refused (the labels are multi-hot); use `limit`.
    cache_dir: cache root (`rsh.data.cache.cache_root`); False = no cache.
    progress: show progress bars (default: when many files, on a tty).
    store: a folder for the on-disk store of these pairs (`rsh.data.bigearthnet.store`):
      written when absent, finished when partial, refused when it holds other
      pairs or options; the Dataset's images and S1 view are then read-only
      memory maps, and nothing is cached. With `dir` None the store is read
      alone (its pairs are not checked against files; the options must still
      be the ones it was written with).

  Returns:
    (Dataset, Scan): the Dataset's rows are the Scan's pairs, row by row (Scan
    None for a store read alone).
  """
  if n_per_class is not None:
    raise DataError(f"n_per_class={n_per_class!r} does not apply to source=bigearthnet: its "
                    "labels are multi-hot (several classes per patch); use limit=<pairs> "
                    "for a seeded random subset")
  band_names, size = pixels.resolve_bands(bands), pixels.check_size(size)
  if store is not None:
    # Imported here: `python -m rsh.data.bigearthnet.store` runs it as __main__.
    from rsh.data.bigearthnet import store as rstore
  if store is not None and dir is None:
    return _store_alone(store, band_names, size, exclude, countries, limit, seed), None
  found = rpairs.scan(dir, exclude=exclude, countries=countries, limit=limit, seed=seed,
                      progress=progress, cache_dir=cache_dir)
  n = len(found)
  if n == 0:
    why = rpairs.describe_dropped(found.dropped, found.exclude, found.countries, found.limit)
    raise DataError(f"{found.s2_root.parent}: no BigEarthNet pairs left after the filters "
                    f"(found {found.found}; dropped: {why})")

  files = pixels.files_digest(found, band_names, progress)
  if store is not None:
    rstore.convert(found, band_names, size, files, store, progress=progress,
                   options=rstore.options_of(found, seed))
    return rstore.open_store(store, rstore.identity(found, band_names, size, files)), found
  # S1 averaged as power since a 120 px pair is averaged down (older entries: in dB).
  entry = cache.entry_path(cache_dir, "bigearthnet", dict(
      bands=band_names, size=size, package=tables.version(), n=n, files=files,
      **({"s1_mean": "power"} if size < pixels.GRID else {})))
  ds = cache.read(entry)
  if ds is not None and ds.files == found.s2_files and ds.band_names == band_names:
    return ds, found

  images, s1 = pixels.read_pairs(found, band_names, size, progress)
  ds = Dataset(images, found.labels, found.class_names, band_names, "bigearthnet",
               found.s2_files, views={"s1": s1}, splits=found.splits)
  log.info("read %d BigEarthNet S2 / S1 pairs from %s", n, found.s2_root.parent)
  # The same pairs, bands and size read again after a file changed supersede
  # the old entry (pruned); another selection (countries, limit) is kept beside it.
  names = hashlib.sha256(json.dumps([found.s2_files, found.s1_files]).encode()).hexdigest()
  cache.write(entry, ds, origin=dict(source="bigearthnet", dir=str(found.s2_root.parent.resolve()),
                                     bands=band_names, size=size, package=tables.version(),
                                     pairs=names))
  return ds, found


def _store_alone(store, band_names, size, exclude, countries, limit, seed) -> Dataset:
  """The store at `store`, read without its source folder: it must have been
  written with these bands, size and filters (so that a config names the same
  pairs with or without the folder)."""
  from rsh.data.bigearthnet import store as rstore
  manifest = rstore.read_manifest(pathlib.Path(store).expanduser()) or {}
  limit, countries = rpairs._limit(limit), rpairs._countries(countries)
  want = dict(bands=list(band_names), size=size, options=dict(
      exclude=list(rpairs._exclude(exclude)),
      countries=None if countries is None else list(countries),
      limit=limit, seed=None if limit is None else int(seed)))
  diff = [f"{k} {manifest.get(k)!r} (wanted {v!r})" for k, v in want.items()
          if manifest and manifest.get(k) != v]
  if diff:
    raise DataError(f"BigEarthNet store {store} was written with other options: "
                    f"{'; '.join(diff)}")
  ds = rstore.open_store(store)
  log.info("read %d BigEarthNet pairs from store %s alone (not checked against their files)",
           len(ds), store)
  return ds
