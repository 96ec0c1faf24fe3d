"""Two-stage kNN SSM (`rsh.similarity`): time, memory, and agreement with a dense reference.

    python benchmarks/ssm.py [--n=5000] [--dim=7168] [--large_n=27000]
                             [--large_dims=1280,7168] [--skip_large]

1. N = 5,000 points of `dim`-d features, K1 = 500, K2 = 300 (the thesis'
   setting): `two_stage_knn` against the obvious dense numpy form (full N x N
   cosine, argsort, S1 as a +-1 float matrix, Hamming = (N - S1 S1^T) / 2,
   argsort), in the same process; prints whether the two S agree.
2. N = 27,000 (all of EuroSAT) with K1, K2 scaled by `scale_k` (2,700 and
   1,620), once per `large_dims`, each in a fresh process so that its peak
   RSS (VmHWM, else getrusage ru_maxrss) is its own; the budget is 4 GiB and
   60 s. Prints the seconds of each stage (stage 1: cosine scores + top-K1;
   stage 2: AND-popcount overlaps + top-K2, and of it the time spent waiting
   for the overlap kernel), from `two_stage_knn`'s log record.
3. `local_histogram` throughput on 64 x 64 x 10 images (32 bins, 2 x 2 patches).

Features are synthetic: 10 classes, non-negative (like pooled ReLU features),
class centre + noise. The last line of output is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

from rsh import similarity
from rsh import spectral


def clustered_features(n: int, dim: int, seed: int = 0, n_classes: int = 10):
  """float32[n, dim] non-negative features of n_classes balanced classes, and int32[n] labels."""
  rng = np.random.default_rng(seed)
  labels = (np.arange(n) % n_classes).astype(np.int32)
  centres = np.abs(rng.standard_normal((n_classes, dim), dtype=np.float32))
  x = np.empty((n, dim), np.float32)
  for start in range(0, n, 1024):  # chunks keep the generator's temporaries small
    stop = min(n, start + 1024)
    noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
    x[start:stop] = np.maximum(centres[labels[start:stop]] + 1.5 * noise, 0)
  return x, labels


def dense_reference(x: np.ndarray, k1: int, k2: int) -> np.ndarray:
  """Eq. 5.10 - 5.12 the obvious way, with dense N x N float32 matrices; packed S."""
  n = len(x)
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  cos = xn @ xn.T
  np.fill_diagonal(cos, np.inf)                 # self first, ties by index (stable)
  rows = np.arange(n)[:, None]
  s1 = -np.ones((n, n), np.float32)
  s1[rows, np.argsort(-cos, axis=1, kind="stable")[:, :k1]] = 1
  del cos
  hamming = (n - s1 @ s1.T) / 2
  np.fill_diagonal(hamming, -1)
  s2 = np.zeros((n, n), bool)
  s2[rows, np.argsort(hamming, axis=1, kind="stable")[:, :k2]] = True
  return np.packbits((s1 > 0) & s2, axis=1)


def peak_rss_mib() -> float:
  """This process's peak resident memory in MiB.

  Linux's getrusage ru_maxrss survives fork + exec (a child starts at its
  parent's peak), so /proc's VmHWM, which exec resets, is read when present.
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class StageTimes(logging.Handler):
  """Keeps the per-stage seconds that `two_stage_knn` logs (record.timings)."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.timings = {}

  def emit(self, record):
    self.timings.update(getattr(record, "timings", {}))


def run_large(n: int, dim: int) -> dict:
  """Times `two_stage_knn` on n points in this process; returns the numbers."""
  k1, k2 = similarity.scale_k(500, n), similarity.scale_k(300, n)
  x, labels = clustered_features(n, dim, seed=1)
  rss_before = peak_rss_mib()
  stages = StageTimes()
  logging.getLogger(similarity.__name__).addHandler(stages)
  logging.getLogger(similarity.__name__).setLevel(logging.INFO)
  load = os.getloadavg()[0]
  start, cpu = time.perf_counter(), time.process_time()
  packed = similarity.two_stage_knn(x, k1, k2, progress=False)
  seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
  quality = similarity.ssm_quality(packed, labels)
  # cpu_s (all threads) / cores is about what `seconds` would be on an idle
  # machine; load_before shows how busy it was.
  return {"n": n, "dim": dim, "k1": k1, "k2": k2, "seconds": round(seconds, 2),
          "cpu_s": round(cpu, 2), "load_before": round(load, 2),
          **{k: round(v, 2) for k, v in stages.timings.items()},
          "peak_rss_mib": round(peak_rss_mib(), 1), "rss_before_mib": round(rss_before, 1),
          "features_mib": round(x.nbytes / 2**20, 1), "accuracy": round(quality["accuracy"], 4),
          "iou": round(quality["iou"], 4)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=5000)
  parser.add_argument("--dim", type=int, default=7168)
  parser.add_argument("--k1", type=int, default=500)
  parser.add_argument("--k2", type=int, default=300)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--large_n", type=int, default=27000)
  parser.add_argument("--large_dims", default="1280,7168", help="comma list of feature sizes")
  parser.add_argument("--skip_large", action="store_true")
  parser.add_argument("--_child", nargs=2, type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args._child:  # one large run in a fresh process, for its own peak RSS
    print(json.dumps(run_large(*args._child)))
    return

  import jax
  print(f"numpy {np.__version__}, jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"load average {os.getloadavg()[0]:.2f}")
  results = {}

  # 1. Thesis size against the dense reference.
  x, labels = clustered_features(args.n, args.dim)
  similarity.two_stage_knn(x[:256], 20, 10, progress=False)   # import-time work, not timed
  ours, ref = [], []
  for _ in range(args.repeats):  # interleaved, so both see the same machine load
    start = time.perf_counter()
    packed = similarity.two_stage_knn(x, args.k1, args.k2, progress=False)
    ours.append(time.perf_counter() - start)
    start = time.perf_counter()
    packed_ref = dense_reference(x, args.k1, args.k2)
    ref.append(time.perf_counter() - start)
  differ = int(np.bitwise_count(packed ^ packed_ref).sum())
  quality = similarity.ssm_quality(packed, labels)
  results["thesis_size"] = {
      "n": args.n, "dim": args.dim, "k1": args.k1, "k2": args.k2,
      "ours_s": round(min(ours), 2), "dense_s": round(min(ref), 2),
      "speedup": round(min(ref) / min(ours), 2), "differing_entries": differ,
      "accuracy": round(quality["accuracy"], 4), "iou": round(quality["iou"], 4)}

  # 2. All of EuroSAT, each size in its own process.
  results["large"] = []
  if not args.skip_large:
    for dim in (int(d) for d in args.large_dims.split(",")):
      out = subprocess.run([sys.executable, __file__, "--_child", str(args.large_n), str(dim)],
                           check=True, capture_output=True, text=True).stdout
      results["large"].append(json.loads(out.strip().splitlines()[-1]))
      r = results["large"][-1]
      print(f"N={r['n']} dim={r['dim']}: {r['seconds']} s = stage 1 {r.get('stage1_s')} s + "
            f"stage 2 {r.get('stage2_s')} s (waiting for overlaps "
            f"{r.get('stage2_overlap_wait_s')} s), CPU {r['cpu_s']} s, load before "
            f"{r['load_before']}, peak RSS {r['peak_rss_mib']:.0f} MiB",
            flush=True)

  # 3. Local-histogram throughput.
  images = np.random.default_rng(2).random((2000, 64, 64, 10), dtype=np.float32)
  spectral.local_histogram(images[:64], 32, 4)
  start = time.perf_counter()
  spectral.local_histogram(images, 32, 4)
  hist_s = time.perf_counter() - start
  results["local_histogram"] = {"images": len(images), "seconds": round(hist_s, 2),
                                "images_per_s": round(len(images) / hist_s),
                                "est_27000_s": round(27000 / len(images) * hist_s, 1)}

  r = results["thesis_size"]
  print(f"\n| N | dim | K1 | K2 | ours (s) | dense numpy (s) | speedup | S equal |")
  print("|---|---|---|---|---|---|---|---|")
  print(f"| {r['n']} | {r['dim']} | {r['k1']} | {r['k2']} | {r['ours_s']} | {r['dense_s']} | "
        f"{r['speedup']}x | {'yes' if differ == 0 else f'no ({differ} entries)'} |")
  if results["large"]:
    print(f"\n| N | dim | K1 | K2 | total (s) | stage 1 (s) | stage 2 (s) | of it overlap wait (s) "
          f"| peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
  for r in results["large"]:
    print(f"| {r['n']} | {r['dim']} | {r['k1']} | {r['k2']} | {r['seconds']} | "
          f"{r.get('stage1_s')} | {r.get('stage2_s')} | {r.get('stage2_overlap_wait_s')} | "
          f"{r['peak_rss_mib']:.0f} (features {r['features_mib']:.0f}) |")
  r = results["local_histogram"]
  print(f"\nlocal_histogram 64x64x10, 32 bins, 2x2 patches: {r['images_per_s']} images/s "
        f"(27,000 images ~{r['est_27000_s']} s)")
  print(json.dumps(results))


if __name__ == "__main__":
  main()
