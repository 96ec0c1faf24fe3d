"""The registered "bigearthnet" source: a `Scan`'s pairs read (or taken from the cache)
into a `Dataset` with the S1 view."""

from __future__ import annotations

import hashlib
import json
import logging

from rsh.data import cache
from rsh.data import dataset
from rsh.data import files as rfiles
from rsh.data.bands import DataError
from rsh.data.bigearthnet import pairs as rpairs
from rsh.data.bigearthnet import pixels
from rsh.data.bigearthnet import tables
from rsh.data.dataset import Dataset

log = logging.getLogger(__name__)


@dataset.register("bigearthnet", options=("bands", "size", "exclude", "countries", "limit"))
def _load(*, source, sub, dir, cache_dir, seed, n_per_class, progress, bands=None,
          size=None, exclude=None, countries=None, limit=None):
  """The "bigearthnet" source of `rsh.data.load`."""
  if sub:
    raise DataError(f"unknown data source {source!r}; did you mean 'bigearthnet'?")
  ds, _ = load_with_scan(dir, bands=bands, size=size, exclude=exclude, countries=countries,
                         limit=limit, seed=seed, n_per_class=n_per_class,
                         cache_dir=cache_dir, progress=progress)
  return ds


def load_with_scan(dir, *, bands=None, size=None, exclude=None, countries=None, limit=None,
                   seed: int = 0, n_per_class=None, cache_dir=None,
                   progress: bool | None = None) -> tuple[Dataset, rpairs.Scan]:
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

  Returns:
    (Dataset, Scan): the Dataset's rows are the Scan's pairs, row by row.
  """
  if n_per_class is not None:
    raise DataError(f"n_per_class={n_per_class!r} does not apply to source=bigearthnet: its "
                    "labels are multi-hot (several classes per patch); use limit=<pairs> "
                    "for a seeded random subset")
  band_names, size = pixels.resolve_bands(bands), pixels.check_size(size)
  found = rpairs.scan(dir, exclude=exclude, countries=countries, limit=limit, seed=seed,
                      progress=progress, cache_dir=cache_dir)
  n = len(found)
  if n == 0:
    why = rpairs.describe_dropped(found.dropped, found.exclude, found.countries, found.limit)
    raise DataError(f"{found.s2_root.parent}: no BigEarthNet pairs left after the filters "
                    f"(found {found.found}; dropped: {why})")

  # Names, sizes, mtimes and ctimes identify the content, without reading it (a
  # content write always moves the ctime, even when the mtime is set back).
  digest = hashlib.sha256()
  for stats in rfiles.parallel_map(lambda i: pixels.file_stats(found, band_names, i), n,
                                   progress, "checking files", unit="patch"):
    digest.update(json.dumps(stats).encode())
  entry = cache.entry_path(cache_dir, "bigearthnet", dict(
      bands=band_names, size=size, package=tables.version(), n=n, files=digest.hexdigest()))
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
