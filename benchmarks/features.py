"""Feature-extraction throughput of `rsh.features.extract` (images/s).

    python benchmarks/features.py [--backbone=efficientnet_lite0] [--n=512]
                                  [--batch_sizes=32,64] [--size=64]

Inputs are random 64 x 64 RGB patches (EuroSAT's size), resized to the
backbone's input inside the jitted forward. Each batch size is warmed up once
(compilation excluded), then timed over `n` images with the cache off.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from rsh import features


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--backbone", default="efficientnet_lite0", choices=list(features.BACKBONES))
  parser.add_argument("--weights", default=None)
  parser.add_argument("--n", type=int, default=512, help="images per timed run")
  parser.add_argument("--batch_sizes", default="32,64")
  parser.add_argument("--size", type=int, default=64, help="input patch size (pixels)")
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()

  rgb = np.random.default_rng(0).uniform(0, 0.5, (args.n, args.size, args.size, 3))
  rgb = rgb.astype(np.float32)
  spec = features.get_backbone(args.backbone)
  print(f"{args.backbone}: {args.size}x{args.size} -> {spec.input_size}x{spec.input_size}, "
        f"n={args.n}, jax {jax.__version__} on {jax.devices()[0].platform} "
        f"({os.cpu_count()} cores, {platform.processor() or platform.machine()})")
  result = dict(benchmark="features", backbone=args.backbone, n=args.n)
  for batch_size in (int(b) for b in args.batch_sizes.split(",")):
    common = dict(batch_size=batch_size, weights=args.weights, cache=False, progress=False)
    start = time.perf_counter()
    features.extract(args.backbone, rgb[:batch_size], **common)  # load weights + compile
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(args.repeats):
      start = time.perf_counter()
      features.extract(args.backbone, rgb, **common)
      best = min(best, time.perf_counter() - start)
    print(f"  batch {batch_size:4d}: {args.n / best:7.1f} images/s "
          f"(best of {args.repeats}; first call incl. load + compile {first:.1f} s)")
    result[f"b{batch_size}_img_per_s"] = args.n / best
    result[f"b{batch_size}_first_call_s"] = first
  print(json.dumps(result))


if __name__ == "__main__":
  main()
