"""Training images/s of the feature-hashing step: cached feature views vs the frozen
backbone inside the jitted step (`rsh.frozen`), measured side by side.

    python benchmarks/frozen_backbone.py [--cached_batch=128] [--backbone_batch=32]
                                         [--steps=5] [--mode=unsupervised]

Both are `configs/milan.py`'s unsupervised step (NT-Xent between two augmented
views of each image, + push + balance; two hasher passes a step):
  cached    the batch is rows of `efficientnet_lite0/dihedral` (f32[b, 8, 1280]);
            each view is one of the 8 cached transforms plus noise: no backbone;
  backbone  the batch is 64 x 64 images; each view is a random dihedral
            transform, crop and per-band gain, through EfficientNet-Lite0 (224 px).
Data: random inputs of the right shapes (the step's cost does not depend on the
values); compilation is timed apart (first call). Prints a table and a JSON
line; the ratio cached / backbone says how many times more images per second
the cached views train on this machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import time

import jax
import numpy as np

from rsh import data as rdata
from rsh import features
from rsh.methods import feature_hash

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(views: str, mode: str, batch: int):
  spec = importlib.util.spec_from_file_location("milan", ROOT / "configs" / "milan.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(f"demo,mode={mode},views={views},bits=64")
  c.data.n_per_class, c.data.n_query = 3, 1   # the data only sizes the method; batches are random
  c.train.batch_size = batch
  return c


def _fake_extract(backbone, rgb, **options):
  """The cached views' values do not matter here: zeros of the right shape."""
  del options
  return np.zeros((len(rgb), features.get_backbone(backbone).feature_dim), np.float32)


def _time_steps(method, batch: dict, steps: int) -> tuple[float, float]:
  """(first call incl. compile, best step) in seconds."""
  step = jax.jit(method.step)
  state = method.init(jax.random.key(0))
  t0 = time.perf_counter()
  state, _ = jax.block_until_ready(step(state, batch, jax.random.key(1)))
  first = time.perf_counter() - t0
  best = float("inf")
  for i in range(steps):
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(step(state, batch, jax.random.key(2 + i)))
    best = min(best, time.perf_counter() - t0)
  return first, best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cached_batch", type=int, default=128)
  parser.add_argument("--backbone_batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=5, help="timed steps (best of)")
  parser.add_argument("--mode", default="unsupervised", choices=("public", "mined",
                                                                  "unsupervised"))
  args = parser.parse_args()
  features.extract = _fake_extract   # this process only: no real feature extraction
  rng = np.random.default_rng(0)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cores), "
        f"configs/milan.py mode={args.mode}, 64 bits")
  result = dict(benchmark="frozen_backbone", mode=args.mode)
  for views, b in (("dihedral", args.cached_batch), ("backbone", args.backbone_batch)):
    c = _config(views, args.mode, b)
    prepared = rdata.prepare(c)
    method = feature_hash.build(c, prepared)
    if views == "backbone":
      x = rng.uniform(-1, 1, (b,) + prepared.images.shape[1:]).astype(np.float32)
    else:
      x = rng.normal(size=(b, 8, 1280)).astype(np.float32)
    batch = {"x": x, "labels": np.arange(b) % 10}
    first, best = _time_steps(method, batch, args.steps)
    name = "cached" if views == "dihedral" else "backbone"
    result[f"{name}_batch"] = b
    result[f"{name}_img_per_s"] = b / best
    result[f"{name}_compile_s"] = first
    print(f"  {name:8s} batch {b:4d}: {b / best:10.1f} images/s  (step {best * 1e3:.1f} ms; "
          f"first call {first:.1f} s)")
  result["cached_vs_backbone"] = result["cached_img_per_s"] / result["backbone_img_per_s"]
  print(f"  cached views train {result['cached_vs_backbone']:.0f}x more images per second")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
