"""Approximate Hamming top-k on FAISS: IVF (nprobe sweep), HNSW (efSearch sweep) vs exact.

    python benchmarks/faiss_ann.py [--n=1e7] [--bits=64] [--queries=1000] [--k=100]
        [--centres=1000] [--flip=0.15] [--nlist=] [--nprobe=1,2,4,8,16,32,64,128]
        [--ef_search=16,32,64,128,256,512] [--hnsw_max=1e6] [--threads=2] [--quick]

Data are clustered, as learned hash codes are (uniform random codes have no
neighbours worth the name, and no index structure to find): `--centres` centre
codes of uniform random bits; each archive code is a centre picked uniformly with
each bit flipped independently with probability `--flip`. The queries are drawn
the same way from the same centres on a separate random stream, so they are not
archive codes. Seeded by `--seed`. Flip 0.15 rather than 0.1: at 0.1 the clusters
are so tight that one IVF probe already finds 97% (2e5 codes), a flat sweep.

The reference is `rsh.search.search` (exact, ties by archive index); FAISS's
`IndexBinaryFlat` is timed beside it. IVF (`rsh.search.approx.to_faiss_ivf`,
default ~4 sqrt(n) lists) is built on all n codes; HNSW (`to_faiss_hnsw`, m=32)
only on the first `--hnsw_max` codes, with its own exact reference on those: its
build inserts one code at a time and grows faster than n (on 2 shared cores ~23 s
for 1e6 codes, ~3 min for 3e6, so well past 10 min for 1e7). Two recalls per row:
`recall@k` (the exact ids found) and `dist recall@k` (results as near as the exact
k-th neighbour), the headline, because ties at the k-th distance are many at 64
bits and any of the tied codes is a right answer (see `rsh.search.approx`).
Searches are the best of `--repeats`; exact (after a warm-up run) runs once, and
so does flat on large archives. All FAISS work runs before any JAX work (XLA's
pool slows OpenMP's threads beside it) and is scored afterwards. Prints a
markdown table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import pinning  # benchmarks/pinning.py: imports only os


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=float, default=1e7, help="archive codes")
  parser.add_argument("--bits", type=int, default=64)
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--centres", type=int, default=1000, help="cluster centre codes")
  parser.add_argument("--flip", type=float, default=0.15, help="per-bit flip probability")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~4 sqrt(n))")
  parser.add_argument("--nprobe", default="1,2,4,8,16,32,64,128", help="IVF sweep, comma separated")
  parser.add_argument("--ef_search", default="16,32,64,128,256,512", help="HNSW sweep")
  parser.add_argument("--ef_construction", type=int, default=40)
  parser.add_argument("--hnsw_max", type=float, default=1e6,
                      help="HNSW is built on the first this many codes (0: no HNSW)")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--quick", action="store_true", help="1e5 codes")
  args = parser.parse_args(argv)
  if args.quick:
    args.n = 1e5
  args.n, args.hnsw_max = int(args.n), int(args.hnsw_max)
  args.nprobe = [int(v) for v in args.nprobe.split(",") if v]
  args.ef_search = [int(v) for v in args.ef_search.split(",") if v]
  if args.bits % 8 or args.bits < 8:
    parser.error(f"--bits must be a positive multiple of 8; got {args.bits}")
  if not 0 <= args.flip <= 1:
    parser.error(f"--flip must be a probability in [0, 1]; got {args.flip}")
  if min(args.n, args.queries, args.k, args.centres) < 1 or args.k > args.n:
    parser.error("--n, --queries, --k, --centres must be >= 1 and --k <= --n")
  return args


ARGS = parse_args()
# Thread counts must be fixed before numpy, faiss and jax start their pools.
pinning.pin_threads(ARGS.threads)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rsh import search  # noqa: E402
from rsh.search import approx  # noqa: E402

faiss = pinning.faiss_or_none(ARGS.threads)


def clustered_codes(rng, centres, n, flip, chunk=1 << 20):
  """uint8[n, l // 8]: random rows of `centres` XOR packed Bernoulli(`flip`) bits."""
  nbytes = centres.shape[1]
  out = np.empty((n, nbytes), np.uint8)
  for s in range(0, n, chunk):
    m = min(chunk, n - s)
    noise = np.packbits(rng.random((m, 8 * nbytes), dtype=np.float32) < flip, axis=1)
    np.bitwise_xor(centres[rng.integers(0, len(centres), m)], noise, out=out[s:s + m])
  return out


def timed(fn, repeats=1):
  """(best seconds over `repeats`, last result)."""
  best, out = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - start)
  return best, out


def exact(q, db):
  """rsh's exact top-k, timed once after a warm-up run (XLA compiles per shape)."""
  search.search(q, db, ARGS.k)
  t, (d, i) = timed(lambda: search.search(q, db, ARGS.k))
  return t, d, i


def sweep(index, q, knob, values):
  """Per knob value, a row (time, queries/s, missing) and its (dist, idx) to score later."""
  rows, results = [], []
  for v in values:
    t, (d, i) = timed(lambda v=v: approx.approx_search(index, q, ARGS.k, **{knob: v}),
                      ARGS.repeats)
    rows.append({knob: v, "search_s": t, "qps": len(q) / t, "missing": float((i < 0).mean())})
    results.append((d, i))
  return rows, results


def score(rows, results, ref_d, ref_i):
  for row, (d, i) in zip(rows, results):
    row["recall"] = approx.recall_at_k(i, ref_i)
    row["distance_recall"] = approx.distance_recall_at_k(d, ref_d)


def run_faiss(db, q, out):
  """Flat, IVF and HNSW builds and searches; returns the results to score.

  Runs before any JAX work: once XLA's thread pool has run, FAISS's OpenMP
  threads beside it slow down (see benchmarks/hamming.py).
  """
  out["flat_build_s"], flat = timed(lambda: search.to_faiss(db))
  # Best of --repeats where a scan is cheap; once where it is not (1e7 x 1000 queries).
  repeats = ARGS.repeats if len(db) * len(q) <= 1e9 else 1
  out["flat_s"], (flat_d, _) = timed(lambda: flat.search(q, ARGS.k), repeats)
  del flat
  start = time.perf_counter()
  index = approx.to_faiss_ivf(db, nlist=ARGS.nlist, seed=ARGS.seed)
  out["ivf_build_s"] = time.perf_counter() - start
  note(f"IVF nlist={index.nlist} built", start)
  out["nlist"] = index.nlist
  out["ivf"], ivf = sweep(index, q, "nprobe", [p for p in ARGS.nprobe if p <= index.nlist])
  del index
  n = out["hnsw_n"] = min(len(db), ARGS.hnsw_max)
  out["hnsw"], hnsw = [], []
  if n >= ARGS.k and ARGS.ef_search:
    start = time.perf_counter()
    index = approx.to_faiss_hnsw(db[:n], ef_construction=ARGS.ef_construction)
    out["hnsw_build_s"] = time.perf_counter() - start
    note(f"HNSW on {n} codes built", start)
    out["hnsw"], hnsw = sweep(index, q, "ef_search", ARGS.ef_search)
  return flat_d, ivf, hnsw


def print_table(out):
  n, hn = out["n"], out.get("hnsw_n", 0)
  print("| index | knob | codes | build s | search s | queries/s | recall@k | dist recall@k "
        "| missing |")
  print("|---|---|---|---|---|---|---|---|---|")
  print(f"| rsh.search (exact) | - | {n:.0e} | - | {out['exact_s']:.3f} | "
        f"{out['queries'] / out['exact_s']:.0f} | 1 | 1 | 0 |")
  if "flat_s" in out:
    print(f"| faiss IndexBinaryFlat | - | {n:.0e} | {out['flat_build_s']:.2f} | "
          f"{out['flat_s']:.3f} | {out['queries'] / out['flat_s']:.0f} | - | "
          f"{'1' if out['flat_same_distances'] else 'DIFFERS'} | 0 |")
  for name, knob, rows, codes, build in (
      ("IVF", "nprobe", out.get("ivf", []), n, out.get("ivf_build_s")),
      ("HNSW", "ef_search", out.get("hnsw", []), hn, out.get("hnsw_build_s"))):
    for r in rows:
      print(f"| {name} nlist={out['nlist']} | nprobe={r[knob]} |" if name == "IVF" else
            f"| {name} m=32 | efSearch={r[knob]} |", end="")
      print(f" {codes:.0e} | {build:.1f} | {r['search_s']:.4f} | {r['qps']:.0f} | "
            f"{r['recall']:.4f} | {r['distance_recall']:.4f} | {r['missing']:.4f} |")


def print_summary(out):
  hn = out.get("hnsw_n", 0)
  print(f"\nExact: {out['exact_qps']:.0f} queries/s; on average {out['mean_tied_at_kth']:.1f} "
        f"of the exact top-{ARGS.k} sit at the k-th distance (ties).")
  if "hnsw_exact_s" in out:
    print(f"HNSW ran on the first {hn:.0e} codes only (--hnsw_max), against its own exact "
          f"top-k on them ({out['hnsw_exact_s']:.2f} s).")
  print(f"Data generated in {out['generate_s']:.1f} s; total {out['total_s']:.0f} s; load "
        f"average {out['load_average']:.2f} at the start, {out['load_average_end']:.2f} at "
        "the end.")


def note(what, start):
  """Progress on stderr (stdout is the table and the JSON line)."""
  print(f"[faiss_ann] {what}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def main():
  load = os.getloadavg()[0]
  print(f"# FAISS binary ANN vs exact: {ARGS.n:.0e} clustered {ARGS.bits}-bit codes "
        f"({ARGS.centres} centres, flip {ARGS.flip}), {ARGS.queries} queries, k={ARGS.k}, "
        f"{ARGS.threads} threads, jax {jax.__version__}, numpy {np.__version__}, faiss "
        f"{faiss.__version__ if faiss else 'absent'}, {platform.machine()}, load {load:.2f}\n")
  out = dict(benchmark="faiss_ann", n=ARGS.n, bits=ARGS.bits, queries=ARGS.queries, k=ARGS.k,
             centres=ARGS.centres, flip=ARGS.flip, seed=ARGS.seed, threads=ARGS.threads,
             load_average=load)
  total = time.perf_counter()
  rng = np.random.default_rng(ARGS.seed)
  start = time.perf_counter()
  centres = rng.integers(0, 256, (ARGS.centres, ARGS.bits // 8), dtype=np.uint8)
  db = clustered_codes(rng, centres, ARGS.n, ARGS.flip)
  q = clustered_codes(np.random.default_rng([ARGS.seed, 1]), centres, ARGS.queries, ARGS.flip)
  out["generate_s"] = time.perf_counter() - start
  if faiss is None:
    print("faiss is not installed (pip install faiss-cpu): exact search only.")
  else:
    flat_d, ivf, hnsw = run_faiss(db, q, out)
  out["exact_s"], ref_d, ref_i = exact(q, db)
  out["exact_qps"] = ARGS.queries / out["exact_s"]
  # Ties at the k-th distance: why the id recall understates (see the docstring).
  out["mean_tied_at_kth"] = float((ref_d == ref_d[:, -1:]).sum(1).mean())
  if faiss is not None:
    out["flat_same_distances"] = bool((flat_d == ref_d).all())
    score(out["ivf"], ivf, ref_d, ref_i)
    if hnsw and out["hnsw_n"] < ARGS.n:
      out["hnsw_exact_s"], ref_d, ref_i = exact(q, db[:out["hnsw_n"]])
    score(out["hnsw"], hnsw, ref_d, ref_i)
  out["total_s"] = time.perf_counter() - total
  out["load_average_end"] = os.getloadavg()[0]
  print_table(out)
  print_summary(out)
  print(json.dumps(out))


if __name__ == "__main__":
  sys.exit(main())
