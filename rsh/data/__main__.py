"""Summarise a dataset: `python -m rsh.data --source=folder --dir=PATH`.

Prints the source, band order, images per class and, per band, the raw
min / mean / max and the share of values clipped by `normalise` (> 4095).
For an S2 / S1 pair set (multi-hot labels and an `s1` view, e.g.
`--source=bigearthnet --dir=PATH` or `--source=demo_crossmodal`): the pairs,
label frequencies, what the filters dropped (bigearthnet), the split sizes
and per-band statistics of each modality (S2 raw DN, S1 dB). `--store=PATH`
(bigearthnet): the pairs' on-disk store, written there first if absent
(`rsh.data.bigearthnet.store`); without `--dir`, the store alone.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from rsh import data as rdata


def band_stats(images: np.ndarray, chunk: int = 1024) -> dict[str, np.ndarray]:
  """Per band min, mean, max and fraction > MAX_DN of uint16[n, h, w, b], in chunks.

  Chunked so a 27,000-image archive never needs a float copy of itself.
  """
  b = images.shape[-1]
  lo = np.full(b, np.iinfo(np.uint16).max, np.int64)
  hi = np.zeros(b, np.int64)
  total = np.zeros(b, np.float64)
  clipped = np.zeros(b, np.int64)
  for i in range(0, len(images), chunk):
    x = images[i:i + chunk].reshape(-1, b)
    lo = np.minimum(lo, x.min(0))
    hi = np.maximum(hi, x.max(0))
    total += x.sum(0, dtype=np.float64)
    clipped += (x > rdata.MAX_DN).sum(0)
  count = max(1, images.size // b)
  return {"min": lo, "mean": total / count, "max": hi, "clipped": clipped / count}


def summary(ds: rdata.Dataset) -> str:
  n, h, w, b = ds.images.shape
  lines = [f"source: {ds.source}",
           f"bands ({b}): {' '.join(ds.band_names)}",
           f"classes ({len(ds.class_names)}):"]
  width = max(len(c) for c in ds.class_names)
  for name, count in ds.counts().items():
    lines.append(f"  {name:<{width}}  {count:6d}")
  lines.append(f"total: {n} images, {h}x{w} px, {ds.images.dtype}")
  s = band_stats(ds.images)
  lines.append(f"{'band':<5} {'min':>7} {'mean':>9} {'max':>7}  >{rdata.MAX_DN}")
  for j, name in enumerate(ds.band_names):
    lines.append(f"{name:<5} {s['min'][j]:7d} {s['mean'][j]:9.1f} {s['max'][j]:7d}  "
                 f"{100 * s['clipped'][j]:6.2f}%")
  return "\n".join(lines)


def crossmodal_summary(ds: rdata.Dataset, scan=None) -> str:
  """The summary of S2 / S1 pairs (multi-hot labels, `views["s1"]`).

  Args:
    ds: the dataset.
    scan: bigearthnet's `Scan` of it (what was found and dropped), or None.
  """
  n, h, w, b = ds.images.shape
  s1 = ds.views["s1"]
  lines = [f"source: {ds.source}",
           f"pairs: {n} (S2 {h}x{w} px, {b} bands {ds.images.dtype}; "
           f"S1 {s1.shape[1]}x{s1.shape[2]} px, {s1.shape[-1]} channels {s1.dtype} dB)",
           f"bands ({b}): {' '.join(ds.band_names)}"]
  if scan is not None:
    from rsh.data import bigearthnet
    lines.append(f"found: {scan.found} pairs in {scan.s2_root.parent} "
                 f"({scan.unpaired} S2 patches without an S1 pair)")
    lines.append("dropped: " + bigearthnet.describe_dropped(
        scan.dropped, scan.exclude, scan.countries, scan.limit))
  lines.append(f"labels ({len(ds.class_names)}): pairs with each")
  for name, count in ds.counts().items():
    lines.append(f"  {count:6d} {100 * count / max(n, 1):5.1f}%  {name}")
  per = np.bincount(ds.labels.sum(1), minlength=1)
  lines.append("labels per pair: " + ", ".join(f"{k}: {c}" for k, c in enumerate(per) if c))
  if ds.splits:
    rows = np.concatenate([np.asarray(v) for v in ds.splits.values()])
    lines.append("splits: " + ", ".join(f"{k} {len(v)}" for k, v in ds.splits.items())
                 + f", in none {n - len(np.unique(rows))}")
  s = band_stats(ds.images)
  lines.append(f"S2 (raw DN) {'min':>7} {'mean':>9} {'max':>7}  >{rdata.MAX_DN}")
  for j, name in enumerate(ds.band_names):
    lines.append(f"  {name:<9} {s['min'][j]:7d} {s['mean'][j]:9.1f} {s['max'][j]:7d}  "
                 f"{100 * s['clipped'][j]:6.2f}%")
  lines.append(f"S1 (dB)     {'min':>7} {'mean':>9} {'max':>7}")
  channels = ("VV", "VH") if s1.shape[-1] == 2 else tuple(map(str, range(s1.shape[-1])))
  flat = s1.reshape(-1, s1.shape[-1])
  for j, name in enumerate(channels):
    x = flat[:, j]
    lines.append(f"  {name:<9} {x.min():7.2f} {x.mean(dtype=np.float64):9.2f} {x.max():7.2f}")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m rsh.data", description=__doc__.split("\n")[0])
  parser.add_argument("--source", default="folder",
                      help="folder, demo, tfds (= tfds:eurosat/all), tfds:eurosat/rgb, "
                           "bigearthnet or demo_crossmodal")
  parser.add_argument("--dir", default=None,
                      help="folder of <Class>/*.tif (folder), the tfds data_dir (tfds), or "
                           "the folder holding the BigEarthNet S2 and S1 roots (bigearthnet)")
  parser.add_argument("--cache_dir", default=None,
                      help="cache root (default $RSH_CACHE_DIR or ~/.cache/rsh; 'none' = off)")
  parser.add_argument("--bands", default="all", help="ms10, rgb, all or e.g. B04,B03,B02")
  parser.add_argument("--band_names", default=None,
                      help="folder only: band order of files that are not 13-band EuroSAT-MS")
  parser.add_argument("--n_per_class", type=int, default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--split", default=None, help="tfds split (default train)")
  parser.add_argument("--countries", default=None,
                      help="bigearthnet: keep the pairs of these countries, e.g. Serbia,Austria")
  parser.add_argument("--exclude", default=None,
                      help="bigearthnet: exclusion lists, snow,cloud (default) or none")
  parser.add_argument("--size", type=int, default=None,
                      help="bigearthnet (divides 120, default 120), demo_crossmodal (default "
                           "32): patch side in px")
  parser.add_argument("--limit", type=int, default=None,
                      help="bigearthnet: keep this many seeded random pairs; demo_crossmodal: "
                           "the number of pairs (default 600)")
  parser.add_argument("--store", default=None,
                      help="bigearthnet: the on-disk store of the pairs (written if absent)")
  args = parser.parse_args(argv)
  # Our own progress notes (cache hit or read) only; other libraries stay quiet.
  # Removed on return: a second call (a notebook, a test) must not write to a
  # stream that has gone.
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(message)s"))
  log = logging.getLogger("rsh.data")
  level = log.level
  log.addHandler(handler)
  log.setLevel(logging.INFO)
  try:
    return _summarise(args)
  finally:
    log.removeHandler(handler)
    log.setLevel(level)


def _summarise(args) -> int:
  scan = None
  try:
    kind = args.source.partition(":")[0]
    options = dict(split=args.split, band_names=args.band_names, countries=args.countries,
                   exclude=args.exclude, size=args.size, limit=args.limit, store=args.store)
    if kind in rdata.SOURCES and "bands" in rdata.SOURCES[kind].options:
      options["bands"] = args.bands  # read only these (bigearthnet: "all" = its 12 bands)
    options = rdata.dataset.check_options(args.source, n_per_class=args.n_per_class,
                                          **options)
    if args.source == "bigearthnet":
      from rsh.data import bigearthnet
      # Its scan says what the filters dropped, which a Dataset has no field for.
      ds, scan = bigearthnet.load_with_scan(args.dir, cache_dir=args.cache_dir,
                                            seed=args.seed, n_per_class=args.n_per_class,
                                            **options)
    else:
      ds = rdata.load(args.source, dir=args.dir, cache_dir=args.cache_dir, seed=args.seed,
                      n_per_class=args.n_per_class, **options)
    if rdata.band_indices(ds.band_names, args.bands) != list(range(len(ds.band_names))):
      ds = rdata.select_bands(ds, args.bands)  # a copy: only when it selects something
  except (rdata.DataError, ValueError) as e:
    # Bad input is the user's to fix: one clear line, no traceback.
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    print(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}",
          file=sys.stderr)
    return 2
  if ds.multi_label and "s1" in (ds.views or {}):
    print(crossmodal_summary(ds, scan))
  else:
    print(summary(ds))
  return 0


if __name__ == "__main__":
  sys.exit(main())
