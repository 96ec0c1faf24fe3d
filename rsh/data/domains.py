"""A second domain's labelled rows in the training set (MIRS's Domain Whitening
Transform: train with labels on one domain, retrieve in another).

    config.data.domain = dict(source="demo", dir=None, n_per_class=100, seed=None,
                              options=None)

loads that source like `config.data` (`rsh.data.load`), keeps the bands of
`config.data.bands` and the classes the main data has (by name), and adds its
images to the training set only (`with_training_rows`). The main data, whose
query and archive sets are the retrieval's, is the *target* domain (id 0); the
added rows are the *source* domain (id 1): `Prepared.domain_ids`. A method
decides what each domain's rows are used for (e.g. labels of the source only,
`config.train.sampler="domains"` to draw half of each batch from each).
"""

from __future__ import annotations

import logging

import numpy as np

from rsh.data import bands as rbands
from rsh.data import dataset as rdataset
from rsh.data import prepared as rprepared

log = logging.getLogger(__name__)

KEYS = ("source", "dir", "n_per_class", "seed", "options")
_WHERE = "config.data.domain"


def spec(config) -> dict | None:
  """`config.data.domain` checked, or None (one domain)."""
  raw = config.data.get("domain")
  if raw is None or raw.get("source") in (None, ""):
    return None
  unknown = sorted(set(raw.keys()) - set(KEYS))
  if unknown:
    raise rbands.DataError(f"{_WHERE}.{unknown[0]} is not an option (options: "
                           f"{', '.join(KEYS)})")
  out = {k: raw.get(k) for k in KEYS}
  out["source"] = str(out["source"])
  if out["source"] not in rdataset.SOURCES:
    raise rbands.DataError(f"{_WHERE}.source={out['source']!r} is not a source; known: "
                           f"{', '.join(rdataset.SOURCES)}")
  seed = config.seed if out["seed"] is None else out["seed"]
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise rbands.DataError(f"{_WHERE}.seed must be an integer >= 0; got {seed!r}")
  out["seed"] = int(seed)
  return out


def _classes(ds, prepared) -> tuple[np.ndarray, np.ndarray]:
  """(rows of `ds` whose class the main data has, their class ids in the main data)."""
  if np.ndim(ds.labels) != 1:
    raise rbands.DataError(f"{_WHERE}: source={ds.source!r} has multi-hot labels; a second "
                           "domain needs class ids")
  ids = {name: i for i, name in enumerate(prepared.class_names)}
  shared = [c for c in ds.class_names if c in ids]
  if not shared:
    raise rbands.DataError(f"{_WHERE}: source={ds.source!r} shares no class with the main "
                           f"data (its classes: {', '.join(ds.class_names)})")
  mapping = np.array([ids.get(c, -1) for c in ds.class_names])
  mapped = mapping[np.asarray(ds.labels)]
  keep = np.flatnonzero(mapped >= 0)
  return keep, mapped[keep].astype(np.int32)


def with_domain(prepared: rprepared.Prepared, config) -> rprepared.Prepared:
  """`prepared` plus the rows of `config.data.domain` in its training set (or as is)."""
  s = spec(config)
  if s is None:
    return prepared
  options = {k: (tuple(v) if isinstance(v, list) else v)
             for k, v in dict(s["options"] or {}).items() if v is not None}
  try:
    ds = rdataset.load(s["source"], dir=s["dir"], cache_dir=config.data.get("cache_dir"),
                       seed=s["seed"], n_per_class=s["n_per_class"], **options)
  except rbands.DataError as e:   # named as the user sets it: config.data.domain.<key>
    raise rbands.DataError(f"{_WHERE}: {e}".replace(" dir=", f" {_WHERE}.dir=")) from None
  missing = [b for b in prepared.band_names if b not in ds.band_names]
  if missing:
    raise rbands.DataError(f"{_WHERE}: source={s['source']!r} lacks the bands "
                           f"{' '.join(missing)} of config.data.bands")
  if ds.images.shape[1:3] != prepared.images.shape[1:3]:
    raise rbands.DataError(f"{_WHERE}: source={s['source']!r} has images of "
                           f"{list(ds.images.shape[1:3])} pixels, the main data "
                           f"{list(prepared.images.shape[1:3])}")
  keep, labels = _classes(ds, prepared)
  sel = rbands.band_indices(ds.band_names, prepared.band_names)
  images = np.ascontiguousarray(ds.images[keep][..., sel])
  counts = np.bincount(labels, minlength=len(prepared.class_names))
  origin = {"kind": "domain", "source": s["source"], "dir": s["dir"], "seed": s["seed"],
            "n": int(len(labels)),
            "per_class": {c: int(n) for c, n in zip(prepared.class_names, counts)}}
  log.info("data: + %d training images of the source domain %s (the main data is the "
           "target)", len(labels), s["source"])
  return rprepared.with_training_rows(prepared, images, labels, origin)
