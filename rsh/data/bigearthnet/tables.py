"""The tables of the `bigearthnet-common` package: labels, exclusion and split lists, countries.

Only `bigearthnet_common.constants` is imported, never `.base` or `.sets`
(they need a `fastcore` that no longer exists); the bz2 CSVs it ships are read
as package resources, once per process (the country table takes a few seconds).
"""

from __future__ import annotations

import bz2
import csv
import functools
import importlib.metadata
import importlib.resources
import io

from rsh.data.bands import DataError

PACKAGE = "bigearthnet_common"
INSTALL = "pip install 'rsh[bigearthnet]'"
# The package's tables: bz2 CSVs of S2 patch names, one a line, no header.
EXCLUDE_LISTS = {"snow": "patches_with_seasonal_snow.csv.bz2",
                 "cloud": "patches_with_cloud_and_shadow.csv.bz2"}
EXCLUDE_WHAT = {"snow": "seasonal snow", "cloud": "cloud and shadow"}
DEFAULT_EXCLUDE = ("snow", "cloud")
SPLIT_LISTS = {"train": "train.csv.bz2", "val": "val.csv.bz2", "test": "test.csv.bz2"}
# Header s1_name,s2_name,country,season.
COUNTRY_TABLE = "s1_s2_name_country_season.csv.bz2"


def constants():
  """`bigearthnet_common.constants` (`NEW_LABELS`, the 43 -> 19 `OLD2NEW_LABELS_DICT`),
  or a DataError saying how to install it."""
  try:
    from bigearthnet_common import constants
  except ImportError as e:
    raise DataError(f"source=bigearthnet needs the bigearthnet-common package ({e}); "
                    f"install it with `{INSTALL}`") from None
  return constants


def version() -> str:
  """The installed bigearthnet-common version: its tables and mapping key the cache."""
  try:
    return importlib.metadata.version("bigearthnet-common")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def class_names() -> tuple[str, ...]:
  """The 19 BigEarthNet-MM class names, in label order (`NEW_LABELS`)."""
  return tuple(constants().NEW_LABELS)


def package_text(resource: str) -> str:
  """A bz2 table shipped inside `bigearthnet_common`, decompressed."""
  constants()
  try:
    data = importlib.resources.files(PACKAGE).joinpath(resource).read_bytes()
    return bz2.decompress(data).decode()
  except (OSError, ValueError) as e:
    raise DataError(f"{PACKAGE}/{resource}: cannot read ({type(e).__name__}: {e}); "
                    f"reinstall it with `{INSTALL}`") from None


@functools.lru_cache(maxsize=None)
def listed(resource: str) -> frozenset[str]:
  """The S2 patch names of one of the package's lists (`EXCLUDE_LISTS`, `SPLIT_LISTS`)."""
  return frozenset(row[0] for row in csv.reader(io.StringIO(package_text(resource))) if row)


@functools.lru_cache(maxsize=None)
def countries_of() -> dict[str, str]:
  """S2 patch name -> country, from the package's name / country / season table."""
  rows = csv.reader(io.StringIO(package_text(COUNTRY_TABLE)))
  header = next(rows, None)
  if header is None or header[:3] != ["s1_name", "s2_name", "country"]:
    raise DataError(f"{PACKAGE}/{COUNTRY_TABLE}: header {header} is not "
                    "s1_name,s2_name,country,season")
  names = {}  # one string per country, not one per row
  return {row[1]: names.setdefault(row[2], row[2]) for row in rows if len(row) >= 3}
