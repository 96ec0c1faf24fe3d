"""Exact Hamming top-k: rsh `search` vs FAISS `IndexBinaryFlat` vs numpy, same run.

    python benchmarks/hamming.py [--sizes=1e5,1e6,1e7] [--bits=32,64,128]
                                 [--queries=1000] [--k=100] [--threads=2] [--quick]

The process is pinned to `--threads` cores and FAISS (OpenMP), XLA and BLAS get
that many threads. Each method runs in its own phase (a warm-up, then the best of
`--repeats`), with a pause between phases: FAISS's OpenMP threads slow down a lot
when XLA's pool is still spinning beside them. numpy is `bitwise_count` +
`argpartition` per block of queries (tie order not fixed), run up to
`--numpy_max` codes. Codes are uniform random bits. Prints a markdown table,
then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import pinning  # benchmarks/pinning.py: imports only os


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="1e5,1e6,1e7", help="archive sizes, comma separated")
  parser.add_argument("--bits", default="32,64,128")
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--numpy_max", type=float, default=1e6,
                      help="largest archive for the (slow) numpy baseline")
  parser.add_argument("--quick", action="store_true", help="1e5 and 1e6 codes, 64 bits")
  return parser.parse_args()


ARGS = parse_args()
# Thread counts must be fixed before numpy, faiss and jax start their pools.
pinning.pin_threads(ARGS.threads)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rsh import hamming  # noqa: E402
from rsh import search  # noqa: E402

faiss = pinning.faiss_or_none(ARGS.threads)


def best_time(fn, repeats):
  fn()  # warm-up: compilation, page faults
  best, out = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - start)
  time.sleep(0.5)  # let this method's thread pool go idle before the next phase
  return best, out


def numpy_search(q, db, k, block=64):
  """bitwise_count on uint64 words + argpartition, then a sort of the k."""
  qw, dw = hamming.code_words(q, np.uint64), hamming.code_words(db, np.uint64)
  out_d, out_i = [], []
  for s in range(0, len(q), block):
    d = np.zeros((len(qw[s:s + block]), len(dw)), np.uint16)
    for w in range(qw.shape[1]):
      d += np.bitwise_count(qw[s:s + block, w, None] ^ dw[None, :, w])
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    pd = np.take_along_axis(d, part, 1)
    order = np.argsort(pd, axis=1, kind="stable")
    out_d.append(np.take_along_axis(pd, order, 1))
    out_i.append(np.take_along_axis(part, order, 1))
  return np.concatenate(out_d), np.concatenate(out_i)


def available_bytes():
  with open("/proc/meminfo") as f:
    info = dict(line.split(":", 1) for line in f)
  return int(info["MemAvailable"].split()[0]) * 1024


def main():
  sizes = [int(float(s)) for s in ARGS.sizes.split(",")]
  bits = [int(b) for b in ARGS.bits.split(",")]
  if ARGS.quick:
    sizes, bits = [100_000, 1_000_000], [64]
  load = os.getloadavg()[0]
  print(f"# rsh.search vs faiss.IndexBinaryFlat vs numpy: {ARGS.queries} queries, k={ARGS.k}, "
        f"{ARGS.threads} threads, jax {jax.__version__} ({jax.devices()[0].platform}), numpy "
        f"{np.__version__}, faiss {faiss.__version__ if faiss else 'absent'}, "
        f"{platform.machine()}, load average {load:.2f}\n")
  print("| archive | bits | rsh s | faiss s | numpy s | rsh codes/s | faiss codes/s "
        "| numpy codes/s | rsh / faiss | rsh / numpy | same top-k |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  rows = []
  rng = np.random.default_rng(0)
  for n in sizes:
    for l in bits:
      # Codes, FAISS's copy and our word layouts: about 4 copies of the archive.
      if 5 * n * l // 8 > 0.5 * available_bytes():
        print(f"| {n:.0e} | {l} | skipped: not enough memory | | | | | | | | |")
        continue
      db = rng.integers(0, 256, (n, l // 8), dtype=np.uint8)
      q = rng.integers(0, 256, (ARGS.queries, l // 8), dtype=np.uint8)
      row = dict(archive=n, bits=l, queries=ARGS.queries, k=ARGS.k, threads=ARGS.threads)
      t_rsh, (d, i) = best_time(lambda: search.search(q, db, ARGS.k), ARGS.repeats)
      row["rsh_s"] = t_rsh
      same = []
      if faiss is not None:
        index = search.to_faiss(db)
        t_faiss, (fd, fi) = best_time(lambda: index.search(q, ARGS.k), ARGS.repeats)
        row["faiss_s"] = t_faiss
        same.append(bool((fd == d).all() and (fi == i).all()))
        del index
      if n <= ARGS.numpy_max:
        t_np, (nd, _) = best_time(lambda: numpy_search(q, db, ARGS.k), 1)
        row["numpy_s"] = t_np
        same.append(bool((nd == d).all()))  # distances only: argpartition breaks ties freely
      row["same_topk"] = all(same)
      rows.append(row)

      def rate(key):
        return f"{n * ARGS.queries / row[key]:.2e}" if key in row else "-"

      def secs(key):
        return f"{row[key]:.3f}" if key in row else "-"

      def ratio(key):
        return f"{row[key] / t_rsh:.2f}x" if key in row else "-"

      print(f"| {n:.0e} | {l} | {secs('rsh_s')} | {secs('faiss_s')} | {secs('numpy_s')} | "
            f"{rate('rsh_s')} | {rate('faiss_s')} | {rate('numpy_s')} | {ratio('faiss_s')} | "
            f"{ratio('numpy_s')} | {row['same_topk']} |", flush=True)
  print("\n'rsh / faiss' is FAISS's time over rsh's (> 1: rsh faster). 'same top-k': rsh equals "
        "FAISS in distances and indices, and numpy in distances.")
  print(json.dumps(dict(benchmark="hamming_search", load_average=load, results=rows)))


if __name__ == "__main__":
  sys.exit(main())
