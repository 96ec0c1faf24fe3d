"""Pairing and filtering: S1 / S2 patches paired through their metadata, the
snow / cloud / country / label / limit filters and the official splits (`scan`)."""

from __future__ import annotations

import dataclasses
import logging
import pathlib

import numpy as np

from rsh.data import files as rfiles
from rsh.data.bands import DataError
from rsh.data.bigearthnet import layout
from rsh.data.bigearthnet import tables

log = logging.getLogger(__name__)

# Why a pair was dropped, in the order the filters apply.
DROP_REASONS = ("snow", "cloud", "country", "no_label", "limit")


# -- options -------------------------------------------------------------------


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
    return tables.DEFAULT_EXCLUDE
  if isinstance(value, str) and value.strip().lower() in ("none", ""):
    return ()
  names = [s.lower() for s in _names_option(value, "exclude")]
  unknown = [s for s in names if s not in tables.EXCLUDE_LISTS]
  if unknown:
    raise DataError(f"unknown exclude list {', '.join(map(repr, unknown))}; known: "
                    f"{', '.join(tables.EXCLUDE_LISTS)} (or none / () to keep every patch)")
  return tuple(s for s in tables.EXCLUDE_LISTS if s in names)


def _countries(value) -> tuple[str, ...] | None:
  names = _names_option(value, "countries")
  if names is None:
    return None
  known = sorted(set(tables.countries_of().values()))
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


def _read_metadata(root: pathlib.Path, names: list[str], kind: str, progress) -> list[dict]:
  """Every `<name>_labels_metadata.json` of `root/<names>`, read in parallel."""
  return rfiles.parallel_map(
      lambda i: layout.metadata(root / names[i], f"{kind} patch {names[i]}"),
      len(names), progress, f"reading {root}", unit="patch")


def _partners(s2_root: pathlib.Path, s1_root: pathlib.Path, progress
              ) -> tuple[dict[str, tuple[str, list]], list[str]]:
  """({S2 name: (S1 name, S1 labels)} of every pair, the S2 patch folders that no
  S1 patch names, in natural name order)."""
  s1_names = layout.patches(s1_root, links="raise")
  if not s1_names:
    raise DataError(f"{s1_root} has no S1 patch folders (<s1 name>/<s1 name>_VV.tif, ...)")
  s2_names = set(layout.patches(s2_root))
  s1_meta = _read_metadata(s1_root, s1_names, "S1", progress)
  partner = {}  # S2 name -> (S1 name, S1 labels)
  for s1, meta in zip(s1_names, s1_meta):
    s2 = meta.get("corresponding_s2_patch")
    if not isinstance(s2, str) or not s2:
      raise DataError(f"S1 patch {s1}: {s1}_labels_metadata.json has no "
                      "\"corresponding_s2_patch\" naming its S2 pair")
    if s2 not in s2_names:
      raise DataError(f"S1 patch {s1} names S2 patch {s2} as its pair "
                      f"(corresponding_s2_patch), but {layout.no_folder(s2_root / s2)}")
    if s2 in partner:
      raise DataError(f"S1 patches {partner[s2][0]} and {s1} both name S2 patch {s2} "
                      "as their pair")
    partner[s2] = (s1, meta["labels"])
  unpaired = sorted(s2_names - set(partner), key=rfiles.natural_key)
  if unpaired:
    more = f", ... ({len(unpaired) - 3} more)" if len(unpaired) > 3 else ""
    log.warning("%s: left out %d S2 patch folder%s that no S1 patch pairs with "
                "(corresponding_s2_patch): %s%s", s2_root, len(unpaired),
                "s" if len(unpaired) > 1 else "", ", ".join(unpaired[:3]), more)
  return partner, unpaired


def _label_rows(s2_root: pathlib.Path, pairs: list[str], partner: dict, progress
                ) -> tuple[tuple[str, ...], list[np.ndarray]]:
  """(the 19 class names, uint8[19] multi-hot of each pair): the 43 -> 19
  mapping of each S2 patch's own labels, checked against its S1 pair's."""
  old2new = tables.constants().OLD2NEW_LABELS_DICT
  s2_meta = _read_metadata(s2_root, pairs, "S2", progress)
  names = tables.class_names()
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
      if label not in old2new:
        raise DataError(f"S2 patch {s2}: unknown label {label!r} in "
                        f"{s2}_labels_metadata.json; known: the 43 BigEarthNet labels of "
                        "bigearthnet_common.constants.OLD2NEW_LABELS_DICT")
      new = old2new[label]
      if new is not None:
        row[column[new]] = 1
    rows.append(row)
  return names, rows


def scan(dir, *, exclude=None, countries=None, limit=None, seed: int = 0,
         progress: bool | None = None, cache_dir=None) -> Scan:
  """Pairs the S1 and S2 patches of `dir` through their metadata and filters them.

  Args:
    dir: the folder holding the S2 and S1 roots (see `rsh.data.bigearthnet`).
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
  tables.constants()
  exclude, countries, limit = _exclude(exclude), _countries(countries), _limit(limit)
  s2_root, s1_root = layout.roots(dir, cache_dir)
  partner, unpaired = _partners(s2_root, s1_root, progress)
  pairs = sorted(partner, key=rfiles.natural_key)
  found = len(pairs)
  dropped = dict.fromkeys(DROP_REASONS, 0)

  def keep(reason, kept):
    dropped[reason] = len(pairs) - len(kept)
    return kept

  for reason in exclude:
    names = tables.listed(tables.EXCLUDE_LISTS[reason])
    pairs = keep(reason, [s2 for s2 in pairs if s2 not in names])
  if countries is not None:
    country = tables.countries_of()
    pairs = keep("country", [s2 for s2 in pairs if country.get(s2) in countries])
  names, rows = _label_rows(s2_root, pairs, partner, progress)
  has_label = [bool(r.any()) for r in rows]
  pairs = keep("no_label", [s2 for s2, ok in zip(pairs, has_label) if ok])
  rows = [r for r, ok in zip(rows, has_label) if ok]
  if limit is not None and len(pairs) > limit:
    rng = np.random.default_rng(int(seed))
    chosen = np.sort(rng.choice(len(pairs), limit, replace=False))
    pairs = keep("limit", [pairs[i] for i in chosen])
    rows = [rows[i] for i in chosen]

  splits = {}
  for split, resource in tables.SPLIT_LISTS.items():
    members = tables.listed(resource)
    splits[split] = np.asarray([i for i, s2 in enumerate(pairs) if s2 in members], np.int64)
  log.info("%s: %d pairs found, %d kept; dropped: %s", s2_root.parent, found, len(pairs),
           describe_dropped(dropped, exclude, countries, limit))
  labels = (np.stack(rows) if rows else np.zeros((0, len(names)), np.uint8))
  return Scan(s2_root, s1_root, tuple(pairs), tuple(partner[s2][0] for s2 in pairs),
              labels, names, splits, found, dropped, len(unpaired),
              exclude, countries, limit)


def describe_dropped(dropped: dict[str, int], exclude=tables.DEFAULT_EXCLUDE, countries=None,
                     limit=None) -> str:
  """`Scan.dropped` in words, e.g. "1 seasonal snow, 0 cloud and shadow, ..."."""
  parts = [f"{dropped[r]} {tables.EXCLUDE_WHAT[r]}" for r in tables.EXCLUDE_LISTS
           if r in exclude]
  if countries is not None:
    parts.append(f"{dropped['country']} not in {'/'.join(countries)}")
  parts.append(f"{dropped['no_label']} without a 19-class label")
  if limit is not None:
    parts.append(f"{dropped['limit']} over limit={limit}")
  return ", ".join(parts)
