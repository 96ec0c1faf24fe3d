"""Source "bigearthnet": BigEarthNet-S2 / BigEarthNet-S1 patch pairs (BigEarthNet-MM).

`dir` holds the S2 root and the S1 root side by side, either as the examples of
the `bigearthnet-common` package unpack (`BigEarthNet-S2-Example/` +
`BigEarthNet-S1-Example/`, see `example_dir`) or as the full download
(`BigEarthNet-v1.0/` + `BigEarthNet-S1-v1.0/`):

  <S2 root>/<s2>/<s2>_B01.tif ... <s2>_B12.tif, <s2>_B8A.tif  uint16, no B10:
      120 x 120 px at 10 m (B02 B03 B04 B08), 60 x 60 at 20 m (B05 B06 B07
      B8A B11 B12), 20 x 20 at 60 m (B01 B09);
  <S2 root>/<s2>/<s2>_labels_metadata.json   "labels": the original 43-class names;
  <S1 root>/<s1>/<s1>_VV.tif, <s1>_VH.tif    float32 backscatter, already in dB;
  <S1 root>/<s1>/<s1>_labels_metadata.json   "corresponding_s2_patch": its S2 pair.

One row per S1 / S2 pair:

- `images`: the S2 bands on one 120 x 120 grid. The 20 m and 60 m bands are
  upsampled by nearest neighbour (`np.repeat` x 2 and x 6 along both axes), which
  is exact: each 10 m pixel takes the value of the coarse pixel it lies in.
  Option `bands` (default `ms10`, the 10 bands at 10 m and 20 m, in MS10 order;
  `all` = the 12 bands BigEarthNet has) sets `band_names` and their order.
- `views["s1"]`: f32[n, 120, 120, 2], (VV, VH) in dB, values as in the files.
- option `size` (default 120, must divide 120): both modalities area-averaged
  down to size x size: S2 as the mean digital number rounded to uint16, S1 as
  the mean of the dB values (not of linear power).
- `labels`: multi-hot uint8[n, 19] over `class_names` = `NEW_LABELS` of
  `bigearthnet_common.constants` (the 19 BigEarthNet-MM classes, in that order),
  each S2 patch's labels mapped with its `OLD2NEW_LABELS_DICT` (names that map to
  None are dropped; a patch left with none is skipped and counted).
- `files`: the S2 patch names, in natural name order. The S1 partner of row i is
  `Scan.s1_files[i]`: `load_with_scan` returns the `Scan` beside the `Dataset`
  (no global state is kept), as does `scan` alone, without reading pixels.
- `splits`: {"train", "val", "test"}: rows of the official lists (a pair in
  none of them is in no split).

Options `exclude` (default ("snow", "cloud"): drop the patches the package lists
as having seasonal snow / cloud and shadow; () keeps them) and `countries`
(default all; e.g. ("Serbia",), from the package's S1 / S2 name, country and
season table) filter the pairs by S2 name; `limit` then keeps a seeded random
`limit` of them (seed = `load`'s seed), still in name order. `n_per_class`
does not apply to multi-hot labels and is refused.

Pairs are read in parallel and cached (`rsh.data.cache`), keyed by the bands,
the size, the package version, and the names, sizes, mtimes and ctimes of
every file read. The package's tables are read once per process (the country
table takes a few seconds). Only `bigearthnet_common.constants` is imported, never `.base`
or `.sets` (they need a `fastcore` that no longer exists).
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.resources
import io
import json
import logging
import os
import pathlib
import stat as stat_
import tarfile

import numpy as np

from rsh.data import bands as rbands
from rsh.data import cache
from rsh.data import dataset
from rsh.data import eurosat_folder
from rsh.data.bands import DataError
from rsh.data.dataset import Dataset

log = logging.getLogger(__name__)

PACKAGE = "bigearthnet_common"
GRID = 120
# Every band of a BigEarthNet-S2 patch (Sentinel-2 L2A has no B10), and how many
# 10 m pixels one of its pixels spans along each axis.
S2_BANDS = tuple(b for b in rbands.BANDS if b != "B10")
UPSAMPLE = {"B02": 1, "B03": 1, "B04": 1, "B08": 1,
            "B05": 2, "B06": 2, "B07": 2, "B8A": 2, "B11": 2, "B12": 2,
            "B01": 6, "B09": 6}
DEFAULT_BANDS = rbands.MS10
S1_CHANNELS = ("VV", "VH")
# (S2 root, S1 root) as the package's examples unpack, and as the full download.
ROOTS = (("BigEarthNet-S2-Example", "BigEarthNet-S1-Example"),
         ("BigEarthNet-v1.0", "BigEarthNet-S1-v1.0"))
EXAMPLES = ("BigEarthNet-S2-Example.tar.bz2", "BigEarthNet-S1-Example.tar.bz2")
# The package's tables: bz2 CSVs of S2 patch names, one a line, no header.
EXCLUDE_LISTS = {"snow": "patches_with_seasonal_snow.csv.bz2",
                 "cloud": "patches_with_cloud_and_shadow.csv.bz2"}
EXCLUDE_WHAT = {"snow": "seasonal snow", "cloud": "cloud and shadow"}
DEFAULT_EXCLUDE = ("snow", "cloud")
SPLIT_LISTS = {"train": "train.csv.bz2", "val": "val.csv.bz2", "test": "test.csv.bz2"}
# Header s1_name,s2_name,country,season.
COUNTRY_TABLE = "s1_s2_name_country_season.csv.bz2"
# Why a pair was dropped, in the order the filters apply.
DROP_REASONS = ("snow", "cloud", "country", "no_label", "limit")

_INSTALL = "pip install 'rsh[bigearthnet]'"
_LAYOUT = ("dir=<folder holding the S2 and the S1 root side by side: BigEarthNet-v1.0/ + "
           "BigEarthNet-S1-v1.0/ (the full download) or BigEarthNet-S2-Example/ + "
           "BigEarthNet-S1-Example/ (rsh.data.bigearthnet.example_dir(dest) unpacks the 6 "
           "example pairs of bigearthnet-common there)>")


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


# -- the package and its tables -----------------------------------------------


def _constants():
  """`bigearthnet_common.constants`, or a DataError saying how to install it."""
  try:
    from bigearthnet_common import constants
  except ImportError as e:
    raise DataError(f"source=bigearthnet needs the bigearthnet-common package ({e}); "
                    f"install it with `{_INSTALL}`") from None
  return constants


def _version() -> str:
  """The installed bigearthnet-common version: its tables and mapping key the cache."""
  try:
    return importlib.metadata.version("bigearthnet-common")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def class_names() -> tuple[str, ...]:
  """The 19 BigEarthNet-MM class names, in label order (`NEW_LABELS`)."""
  return tuple(_constants().NEW_LABELS)


def _package_text(resource: str) -> str:
  """A bz2 table shipped inside `bigearthnet_common`, decompressed."""
  _constants()
  try:
    data = importlib.resources.files(PACKAGE).joinpath(resource).read_bytes()
    return bz2.decompress(data).decode()
  except (OSError, ValueError) as e:
    raise DataError(f"{PACKAGE}/{resource}: cannot read ({type(e).__name__}: {e}); "
                    f"reinstall it with `{_INSTALL}`") from None


@functools.lru_cache(maxsize=None)
def listed(resource: str) -> frozenset[str]:
  """The S2 patch names of one of the package's lists (`EXCLUDE_LISTS`, `SPLIT_LISTS`)."""
  return frozenset(row[0] for row in csv.reader(io.StringIO(_package_text(resource))) if row)


@functools.lru_cache(maxsize=None)
def countries_of() -> dict[str, str]:
  """S2 patch name -> country, from the package's name / country / season table."""
  rows = csv.reader(io.StringIO(_package_text(COUNTRY_TABLE)))
  header = next(rows, None)
  if header is None or header[:3] != ["s1_name", "s2_name", "country"]:
    raise DataError(f"{PACKAGE}/{COUNTRY_TABLE}: header {header} is not "
                    "s1_name,s2_name,country,season")
  names = {}  # one string per country, not one per row
  return {row[1]: names.setdefault(row[2], row[2]) for row in rows if len(row) >= 3}


# -- options -------------------------------------------------------------------


def resolve_bands(spec=None) -> tuple[str, ...]:
  """The bands to load: None = `ms10`; `all` = the 12 BigEarthNet bands; no B10."""
  if spec is None:
    return DEFAULT_BANDS
  if isinstance(spec, str) and spec.strip().lower() == "all":
    return S2_BANDS
  names = rbands.resolve_bands(spec)
  if "B10" in names:
    raise DataError(f"band B10 (cirrus) is not in BigEarthNet (bands={spec!r}): its S2 "
                    f"patches have the 12 bands {' '.join(S2_BANDS)}")
  return names


def _size(size) -> int:
  if size is None:
    return GRID
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not (
      1 <= size <= GRID) or GRID % size:
    raise DataError(f"size={size!r}: BigEarthNet patches are {GRID}x{GRID} px; size must "
                    "be a whole divisor of 120 (120, 60, 40, 30, 24, 20, ...)")
  return int(size)


def _names_option(value, what: str) -> list[str] | None:
  """A comma-separated string or a sequence of names, as a list (None stays None)."""
  if value is None:
    return None
  if isinstance(value, str):
    return [s.strip() for s in value.split(",") if s.strip()]
  try:
    return [str(s).strip() for s in value]
  except TypeError:
    raise DataError(f"{what} must be a list of names or a comma-separated string, "
                    f"not {value!r}") from None


def _exclude(value) -> tuple[str, ...]:
  if value is None:
    return DEFAULT_EXCLUDE
  if isinstance(value, str) and value.strip().lower() in ("none", ""):
    return ()
  names = [s.lower() for s in _names_option(value, "exclude")]
  unknown = [s for s in names if s not in EXCLUDE_LISTS]
  if unknown:
    raise DataError(f"unknown exclude list {', '.join(map(repr, unknown))}; known: "
                    f"{', '.join(EXCLUDE_LISTS)} (or none / () to keep every patch)")
  return tuple(s for s in EXCLUDE_LISTS if s in names)


def _countries(value) -> tuple[str, ...] | None:
  names = _names_option(value, "countries")
  if names is None:
    return None
  known = sorted(set(countries_of().values()))
  if not names:
    raise DataError(f"countries={value!r} keeps no country; leave it unset for all of "
                    f"them ({', '.join(known)})")
  by_lower = {c.lower(): c for c in known}
  unknown = [c for c in names if c.lower() not in by_lower]
  if unknown:
    raise DataError(f"unknown countr{'ies' if len(unknown) > 1 else 'y'} "
                    f"{', '.join(map(repr, unknown))}; known: {', '.join(known)}")
  return tuple(sorted({by_lower[c.lower()] for c in names}))


def _limit(limit) -> int | None:
  if limit is None:
    return None
  if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
    raise DataError(f"limit={limit!r}: must be a number of pairs >= 1 (or unset for all)")
  return int(limit)


# -- the folder layout -----------------------------------------------------------


EXAMPLE = "example"  # dir="example": the package's 6 real pairs, unpacked on first use


def example_root(cache_dir=None) -> pathlib.Path:
  """Where `dir="example"` reads: the package's examples unpacked once under the
  cache root (a fresh temporary folder when caching is off)."""
  root = cache.cache_root(cache_dir)
  if root is None:
    import tempfile
    return example_dir(tempfile.mkdtemp(prefix="rsh-bigearthnet-example-"))
  dest = root / "bigearthnet-example" / _version()
  if not all((dest / name).is_dir() for name in ROOTS[0]):
    example_dir(dest)
  return dest


def roots(dir, cache_dir=None) -> tuple[pathlib.Path, pathlib.Path]:
  """(S2 root, S1 root) inside `dir`, or a DataError explaining the layout."""
  if dir is None:
    raise DataError(f"source=bigearthnet needs {_LAYOUT}")
  if str(dir) == EXAMPLE:
    dir = example_root(cache_dir)
  root = pathlib.Path(dir).expanduser()
  try:
    is_dir = stat_.S_ISDIR(root.stat().st_mode)
  except OSError as e:
    if isinstance(e, FileNotFoundError) and not eurosat_folder._is_symlink(root):
      raise DataError(f"BigEarthNet folder {root} does not exist") from None
    raise DataError(f"BigEarthNet folder {root} {eurosat_folder._why(root, e)}") from None
  if not is_dir:
    raise DataError(f"BigEarthNet folder {root} is not a directory")
  for s2, s1 in ROOTS:
    if (root / s2).is_dir() and (root / s1).is_dir():
      return root / s2, root / s1
  found = sorted(p.name for p in eurosat_folder._listdir(root, "BigEarthNet folder")
                 if p.is_dir() and not p.name.startswith("."))
  raise DataError(f"{root} holds no BigEarthNet S2 and S1 roots side by side (found "
                  f"{', '.join(found) or 'no folders'}); source=bigearthnet needs {_LAYOUT}")


def _patches(root: pathlib.Path) -> list[str]:
  """The patch folder names of a root, in natural name order."""
  return sorted((p.name for p in eurosat_folder._listdir(root, "BigEarthNet root")
                 if p.is_dir() and not p.name.startswith(".")), key=eurosat_folder.natural_key)


def _metadata(folder: pathlib.Path, what: str) -> dict:
  """A patch's `<name>_labels_metadata.json`, checked to have a "labels" list."""
  path = folder / f"{folder.name}_labels_metadata.json"
  try:
    meta = json.loads(path.read_text())
  except FileNotFoundError:
    raise DataError(f"{what}: missing {path.name} in {folder}") from None
  except (OSError, ValueError) as e:
    raise DataError(f"{what}: cannot read {path} ({type(e).__name__}: {e})") from None
  if not isinstance(meta, dict) or not isinstance(meta.get("labels"), list):
    raise DataError(f"{what}: {path} has no \"labels\" list")
  return meta


def example_dir(dest: str | os.PathLike) -> pathlib.Path:
  """Unpacks the 6 real example pairs of `bigearthnet-common` into `dest`.

  Args:
    dest: a folder (made if missing); `BigEarthNet-S2-Example/` and
      `BigEarthNet-S1-Example/` are written inside it.

  Returns:
    `dest`, for `load("bigearthnet", dir=example_dir(dest))`.
  """
  _constants()
  dest = pathlib.Path(dest).expanduser()
  dest.mkdir(parents=True, exist_ok=True)
  for name in EXAMPLES:
    resource = importlib.resources.files(PACKAGE).joinpath(name)
    try:
      with resource.open("rb") as f, tarfile.open(fileobj=f, mode="r:bz2") as tar:
        if hasattr(tarfile, "data_filter"):
          tar.extractall(dest, filter="data")
        else:  # an older Python without extraction filters: check by hand
          for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(
                dest.resolve()):
              raise DataError(f"{PACKAGE}/{name}: refusing to extract {member.name!r}")
          tar.extractall(dest)
    except (OSError, tarfile.TarError) as e:
      raise DataError(f"{PACKAGE}/{name}: cannot unpack into {dest} "
                      f"({type(e).__name__}: {e})") from None
  return dest


# -- scan: pairs, labels, filters and splits, without pixels ----------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Scan:
  """The pairs of a BigEarthNet folder after the filters, without their pixels.

  Attributes:
    s2_root: the S2 root read.
    s1_root: the S1 root read.
    s2_files: the S2 patch names kept, in natural name order (`Dataset.files`).
    s1_files: the S1 partner of each, row by row.
    labels: uint8[n, 19] multi-hot over `class_names`.
    class_names: the 19 BigEarthNet-MM classes (`NEW_LABELS`).
    splits: {"train", "val", "test": int64 row indices}, the official lists.
    found: the pairs found (S1 patch folders).
    dropped: {reason: pairs dropped} for each of `DROP_REASONS` (seasonal snow,
      cloud and shadow, not of `countries`, no 19-class label, over `limit`), in
      the order the filters apply: a pair counts for the first reason only.
    unpaired: S2 patch folders that no S1 patch names as its pair.
    exclude: the exclusion lists applied; countries: the countries kept (None:
      all); limit: as given.
  """
  s2_root: pathlib.Path
  s1_root: pathlib.Path
  s2_files: tuple[str, ...]
  s1_files: tuple[str, ...]
  labels: np.ndarray
  class_names: tuple[str, ...]
  splits: dict[str, np.ndarray]
  found: int
  dropped: dict[str, int]
  unpaired: int
  exclude: tuple[str, ...] = ()
  countries: tuple[str, ...] | None = None
  limit: int | None = None

  def __len__(self):
    return len(self.s2_files)


def scan(dir, *, exclude=None, countries=None, limit=None, seed: int = 0,
         progress: bool | None = None, cache_dir=None) -> Scan:
  """Pairs the S1 and S2 patches of `dir` through their metadata and filters them.

  Args:
    dir: the folder holding the S2 and S1 roots (see the module docstring).
    exclude: exclusion lists to apply ("snow", "cloud"), a comma-separated
      string, "none" or (); None = both.
    countries: country names (or "Serbia,Austria") whose pairs to keep; None = all.
    limit: keep this many seeded random pairs after the other filters; None = all.
    seed: the seed of `limit`.
    progress: show a progress bar while reading metadata (default: when many, on a tty).

  Returns:
    The `Scan`.

  Raises:
    DataError: bad options, a bad layout, unreadable metadata, an S1 patch
      naming a missing S2 patch or an S2 patch that another S1 patch names, S1
      and S2 labels that differ, or a label that is not one of the 43 BigEarthNet
      names; each names the patch(es) and the file.
  """
  constants = _constants()
  exclude, countries, limit = _exclude(exclude), _countries(countries), _limit(limit)
  s2_root, s1_root = roots(dir, cache_dir)
  s1_names = _patches(s1_root)
  if not s1_names:
    raise DataError(f"{s1_root} has no S1 patch folders (<s1 name>/<s1 name>_VV.tif, ...)")
  s2_names = set(_patches(s2_root))
  s1_meta = _parallel(lambda i: _metadata(s1_root / s1_names[i], f"S1 patch {s1_names[i]}"),
                      len(s1_names), progress, f"reading {s1_root}")
  partner = {}  # S2 name -> (S1 name, S1 labels)
  for s1, meta in zip(s1_names, s1_meta):
    s2 = meta.get("corresponding_s2_patch")
    if not isinstance(s2, str) or not s2:
      raise DataError(f"S1 patch {s1}: {s1}_labels_metadata.json has no "
                      "\"corresponding_s2_patch\" naming its S2 pair")
    if s2 not in s2_names:
      raise DataError(f"S1 patch {s1} names S2 patch {s2} as its pair "
                      f"(corresponding_s2_patch), but {s2_root} has no folder {s2}")
    if s2 in partner:
      raise DataError(f"S1 patches {partner[s2][0]} and {s1} both name S2 patch {s2} "
                      "as their pair")
    partner[s2] = (s1, meta["labels"])
  pairs = sorted(partner, key=eurosat_folder.natural_key)
  found = len(pairs)
  dropped = dict.fromkeys(DROP_REASONS, 0)

  def keep(reason, kept):
    dropped[reason] = len(pairs) - len(kept)
    return kept

  for reason in exclude:
    names = listed(EXCLUDE_LISTS[reason])
    pairs = keep(reason, [s2 for s2 in pairs if s2 not in names])
  if countries is not None:
    country = countries_of()
    pairs = keep("country", [s2 for s2 in pairs if country.get(s2) in countries])

  # The 43 -> 19 mapping, checked against each S2 patch's own labels.
  s2_meta = _parallel(lambda i: _metadata(s2_root / pairs[i], f"S2 patch {pairs[i]}"),
                      len(pairs), progress, f"reading {s2_root}")
  names = class_names()
  column = {c: j for j, c in enumerate(names)}
  rows = []
  for s2, meta in zip(pairs, s2_meta):
    s1, s1_labels = partner[s2]
    if set(map(str, meta["labels"])) != set(map(str, s1_labels)):
      only2 = sorted(set(map(str, meta["labels"])) - set(map(str, s1_labels)))
      only1 = sorted(set(map(str, s1_labels)) - set(map(str, meta["labels"])))
      raise DataError(f"S1 patch {s1} and its S2 pair {s2} have different labels "
                      f"(only S2: {only2}; only S1: {only1}): not the same place")
    row = np.zeros(len(names), np.uint8)
    for label in meta["labels"]:
      if label not in constants.OLD2NEW_LABELS_DICT:
        raise DataError(f"S2 patch {s2}: unknown label {label!r} in "
                        f"{s2}_labels_metadata.json; known: the 43 BigEarthNet labels of "
                        "bigearthnet_common.constants.OLD2NEW_LABELS_DICT")
      new = constants.OLD2NEW_LABELS_DICT[label]
      if new is not None:
        row[column[new]] = 1
    rows.append(row)
  has_label = [bool(r.any()) for r in rows]
  pairs = keep("no_label", [s2 for s2, ok in zip(pairs, has_label) if ok])
  rows = [r for r, ok in zip(rows, has_label) if ok]
  if limit is not None and len(pairs) > limit:
    rng = np.random.default_rng(int(seed))
    chosen = np.sort(rng.choice(len(pairs), limit, replace=False))
    pairs = keep("limit", [pairs[i] for i in chosen])
    rows = [rows[i] for i in chosen]

  splits = {}
  for split, resource in SPLIT_LISTS.items():
    members = listed(resource)
    splits[split] = np.asarray([i for i, s2 in enumerate(pairs) if s2 in members], np.int64)
  log.info("%s: %d pairs found, %d kept; dropped: %s", s2_root.parent, found, len(pairs),
           describe_dropped(dropped, exclude, countries, limit))
  labels = (np.stack(rows) if rows else np.zeros((0, len(names)), np.uint8))
  return Scan(s2_root, s1_root, tuple(pairs), tuple(partner[s2][0] for s2 in pairs),
              labels, names, splits, found, dropped, len(s2_names) - found,
              exclude, countries, limit)


def describe_dropped(dropped: dict[str, int], exclude=DEFAULT_EXCLUDE, countries=None,
                     limit=None) -> str:
  """`Scan.dropped` in words, e.g. "1 seasonal snow, 0 cloud and shadow, ..."."""
  parts = [f"{dropped[r]} {EXCLUDE_WHAT[r]}" for r in EXCLUDE_LISTS if r in exclude]
  if countries is not None:
    parts.append(f"{dropped['country']} not in {'/'.join(countries)}")
  parts.append(f"{dropped['no_label']} without a 19-class label")
  if limit is not None:
    parts.append(f"{dropped['limit']} over limit={limit}")
  return ", ".join(parts)


# -- pixels ------------------------------------------------------------------------


def load_bigearthnet(dir, **kwargs) -> Dataset:
  """The `Dataset` of `load_with_scan` (same arguments)."""
  return load_with_scan(dir, **kwargs)[0]


def load_with_scan(dir, *, bands=None, size=None, exclude=None, countries=None, limit=None,
                   seed: int = 0, n_per_class=None, cache_dir=None,
                   progress: bool | None = None) -> tuple[Dataset, Scan]:
  """Reads the pairs of `dir` (see the module docstring): the `Dataset` and its `Scan`.

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
  band_names, size = resolve_bands(bands), _size(size)
  found = scan(dir, exclude=exclude, countries=countries, limit=limit, seed=seed,
               progress=progress, cache_dir=cache_dir)
  n = len(found)
  if n == 0:
    why = describe_dropped(found.dropped, found.exclude, found.countries, found.limit)
    raise DataError(f"{found.s2_root.parent}: no BigEarthNet pairs left after the filters "
                    f"(found {found.found}; dropped: {why})")

  def files(i):
    s2, s1 = found.s2_files[i], found.s1_files[i]
    return [(f"S2 patch {s2}", found.s2_root / s2,
             [f"{s2}_{b}.tif" for b in band_names] + [f"{s2}_labels_metadata.json"]),
            (f"S1 patch {s1} (pair of S2 patch {s2})", found.s1_root / s1,
             [f"{s1}_{c}.tif" for c in S1_CHANNELS] + [f"{s1}_labels_metadata.json"])]

  def stat(i):
    out = []
    for what, folder, names in files(i):
      for name in names:
        try:
          st = (folder / name).stat()
        except FileNotFoundError:
          if not eurosat_folder._is_symlink(folder / name):
            raise DataError(f"{what}: missing file {name} in {folder}") from None
          raise DataError(f"{what}: {folder / name} "
                          f"{eurosat_folder._why(folder / name, None)}") from None
        except OSError as e:
          raise DataError(f"{what}: {folder / name} "
                          f"{eurosat_folder._why(folder / name, e)}") from None
        out.append((folder.name, name, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return out

  # Names, sizes, mtimes and ctimes identify the content, without reading it (a
  # content write always moves the ctime, even when the mtime is set back).
  digest = hashlib.sha256()
  for stats in _parallel(stat, n, progress, "checking files"):
    digest.update(json.dumps(stats).encode())
  entry = cache.entry_path(cache_dir, "bigearthnet", dict(
      bands=band_names, size=size, package=_version(), n=n, files=digest.hexdigest()))
  ds = cache.read(entry)
  if ds is not None and ds.files == found.s2_files and ds.band_names == band_names:
    return ds, found

  images = np.empty((n, size, size, len(band_names)), np.uint16)
  s1 = np.empty((n, size, size, len(S1_CHANNELS)), np.float32)

  def read(i):
    (what2, folder2, names2), (what1, folder1, names1) = files(i)
    for j, band in enumerate(band_names):
      x = _read_band(folder2 / names2[j], what2, GRID // UPSAMPLE[band])
      x = np.repeat(np.repeat(x, UPSAMPLE[band], axis=0), UPSAMPLE[band], axis=1)
      images[i, :, :, j] = x if size == GRID else np.rint(_area_mean(x, size))
    for j in range(len(S1_CHANNELS)):
      x = _read_band(folder1 / names1[j], what1, GRID, db=True)
      s1[i, :, :, j] = x if size == GRID else _area_mean(x, size)

  # tifffile logs what it dislikes before raising; our error names the file instead.
  tiff_log = logging.getLogger("tifffile")
  level = tiff_log.level
  tiff_log.setLevel(logging.CRITICAL)
  try:
    _parallel(read, n, progress, f"reading {found.s2_root.parent}")
  finally:
    tiff_log.setLevel(level)
  ds = Dataset(images, found.labels, found.class_names, band_names, "bigearthnet",
               found.s2_files, views={"s1": s1}, splits=found.splits)
  log.info("read %d BigEarthNet S2 / S1 pairs from %s", n, found.s2_root.parent)
  # The same pairs, bands and size read again after a file changed supersede
  # the old entry (pruned); another selection (countries, limit) is kept beside it.
  names = hashlib.sha256(json.dumps([found.s2_files, found.s1_files]).encode()).hexdigest()
  cache.write(entry, ds, origin=dict(source="bigearthnet", dir=str(found.s2_root.parent.resolve()),
                                     bands=band_names, size=size, package=_version(),
                                     pairs=names))
  return ds, found


def _read_band(path: pathlib.Path, what: str, side: int, db: bool = False) -> np.ndarray:
  """One single-band GeoTIFF: uint16[side, side] (S2) or f32[side, side] dB (S1)."""
  import tifffile
  try:
    x = np.asarray(tifffile.imread(path))
  except FileNotFoundError:
    raise DataError(f"{what}: missing file {path.name} in {path.parent}") from None
  except Exception as e:  # tifffile raises many types on a broken file
    raise DataError(f"{what}: cannot read {path.name} as TIFF ({type(e).__name__}: {e})"
                    ) from None
  if x.ndim == 3 and 1 in (x.shape[0], x.shape[-1]):
    x = x.reshape(x.shape[:2] if x.shape[-1] == 1 else x.shape[1:])
  if x.shape != (side, side):
    raise DataError(f"{what}: {path.name} is {'x'.join(map(str, x.shape))} px, expected "
                    f"{side}x{side}")
  if not db:
    return eurosat_folder.to_dn(x, f"{what}: {path.name}")
  if x.dtype.kind not in "uif":
    raise DataError(f"{what}: {path.name}: pixel type {x.dtype} is not a number")
  x = x.astype(np.float32, copy=False)
  if not np.isfinite(x).all():
    raise DataError(f"{what}: {path.name} has non-finite values (NaN or inf)")
  return x


def _area_mean(x: np.ndarray, size: int) -> np.ndarray:
  """f64[size, size]: the means of the (GRID / size)^2 blocks of x[GRID, GRID]."""
  f = GRID // size
  return x.reshape(size, f, size, f).mean(axis=(1, 3), dtype=np.float64)


def _parallel(fn, n: int, progress: bool | None, desc: str) -> list:
  """[fn(i) for i in range(n)] in a thread pool (`eurosat_folder.parallel_map`)."""
  return eurosat_folder.parallel_map(fn, n, progress, desc, unit="patch")
