"""Summarise a dataset: `python -m rsh.data --source=folder --dir=PATH`.

Prints the source, band order, images per class and, per band, the raw
min / mean / max and the share of values clipped by `normalise` (> 4095).
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


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m rsh.data", description=__doc__.split("\n")[0])
  parser.add_argument("--source", default="folder",
                      help="folder, demo, tfds (= tfds:eurosat/all) or tfds:eurosat/rgb")
  parser.add_argument("--dir", default=None,
                      help="folder of <Class>/*.tif (folder), or the tfds data_dir (tfds)")
  parser.add_argument("--cache_dir", default=None,
                      help="cache root (default $RSH_CACHE_DIR or ~/.cache/rsh; 'none' = off)")
  parser.add_argument("--bands", default="all", help="ms10, rgb, all or e.g. B04,B03,B02")
  parser.add_argument("--band_names", default=None,
                      help="folder only: band order of files that are not 13-band EuroSAT-MS")
  parser.add_argument("--n_per_class", type=int, default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--split", default=None, help="tfds split (default train)")
  args = parser.parse_args(argv)
  # Our own progress notes (cache hit or read) only; other libraries stay quiet.
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(message)s"))
  log = logging.getLogger("rsh.data")
  log.addHandler(handler)
  log.setLevel(logging.INFO)
  try:
    ds = rdata.load(args.source, dir=args.dir, cache_dir=args.cache_dir, seed=args.seed,
                    n_per_class=args.n_per_class, split=args.split,
                    band_names=args.band_names)
    ds = rdata.select_bands(ds, args.bands)
  except rdata.DataError as e:
    # Bad input is the user's to fix: one clear line, no traceback.
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(summary(ds))
  return 0


if __name__ == "__main__":
  sys.exit(main())
