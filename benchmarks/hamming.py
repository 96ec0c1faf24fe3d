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

    python benchmarks/hamming.py --archive_memmap=/tmp/codes_1e8.rsh --sizes=1e8 --bits=64
                                 [--clustered=0.05] [--check_queries=10] [--chunk=N]

Streamed mode: the archive is a code file (`rsh.search.codefile`) on disk, made at
PATH first when absent (by a child process, in seeded chunks, never whole in RAM;
reused when it holds the same size, bits and seed) and searched by
`rsh.search.stream_search` (one timed run after a warm-up on the first and last
chunks, best of `--repeats`). Checked against a numpy brute force on
`--check_queries` queries (XOR-popcount over the memmap in chunks, ordered by
(distance, index): distances and indices), beside the in-memory `search` up to
`--inmemory_max` codes and FAISS `IndexBinaryFlat` (one run) where the codes fit
in RAM. Peak RSS (VmHWM, reset before each phase; and ru_maxrss) is reported for
the streamed phase alone, which runs first. Several sizes or bit widths get one
file each, PATH with `-<n>x<bits>` added.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
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
  parser.add_argument("--archive_memmap", default="",
                      help="streamed mode: the code file (a folder) to search, made if absent")
  parser.add_argument("--clustered", type=float, default=0.0,
                      help="streamed mode: codes = 10 random centres with this fraction of "
                           "bits flipped (0: uniform random bits)")
  parser.add_argument("--check_queries", type=int, default=10,
                      help="streamed mode: queries checked against a numpy brute force")
  parser.add_argument("--chunk", type=int, default=0,
                      help="streamed mode: codes per chunk (0: stream_search's default)")
  parser.add_argument("--inmemory_max", type=float, default=1e7,
                      help="streamed mode: also time the in-memory search up to this size")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--generate_only", action="store_true", help=argparse.SUPPRESS)
  return parser.parse_args()


ARGS = parse_args()
# Thread counts must be fixed before numpy, faiss and jax start their pools.
pinning.pin_threads(ARGS.threads)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rsh import hamming  # noqa: E402
from rsh import search  # noqa: E402
from rsh.search import codefile  # noqa: E402

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
  if ARGS.archive_memmap:
    return main_streamed()
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


# ----------------------------------------------------------------------------- streamed mode

GEN_CHUNK = 1 << 22  # codes generated (and flushed) at a time


def archive_path(n, l, combos):
  """PATH itself for one size x bits, else PATH-<n>x<l> (suffix kept last)."""
  path = pathlib.Path(ARGS.archive_memmap)
  if combos == 1:
    return path
  return path.with_name(f"{path.stem}-{n}x{l}{path.suffix}")


def draw_codes(rng, m, l, centres):
  """uint8[m, l // 8]: uniform random bits, or `centres` with ARGS.clustered of bits flipped."""
  if centres is None:
    return rng.integers(0, 256, (m, l // 8), dtype=np.uint8)
  out = centres[rng.integers(0, len(centres), m)]
  for s in range(0, m, 1 << 20):  # one byte a bit: bounded to 2^20 codes at a time
    e = min(m, s + (1 << 20))
    flips = rng.integers(0, 256, (e - s, l), dtype=np.uint8) < round(256 * ARGS.clustered)
    out[s:e] ^= np.packbits(flips, axis=1)
  return out


def centres_for(l):
  if not ARGS.clustered:
    return None
  return np.random.default_rng([ARGS.seed, l, 3]).integers(0, 256, (10, l // 8), dtype=np.uint8)


def generate(path, n, l):
  """Writes (or finishes, or reuses) the code file of n seeded codes at `path`."""
  meta = dict(benchmark="hamming", seed=ARGS.seed, clustered=ARGS.clustered)
  try:
    writer = codefile.create(path, n, l, meta=meta, resume=True, flush_every=GEN_CHUNK)
  except (ValueError, FileNotFoundError) as e:
    try:
      ours = json.loads((path / "header.json").read_text())["meta"].get("benchmark") == "hamming"
    except (OSError, ValueError, KeyError, AttributeError):
      ours = False
    if not ours:
      raise SystemExit(f"--archive_memmap: {path} is not this benchmark's code file ({e}); "
                       "give another path") from None
    print(f"# {path}: another size or seed; made again", flush=True)
    writer = codefile.create(path, n, l, meta=meta, overwrite=True, flush_every=GEN_CHUNK)
  centres = centres_for(l)
  start = time.perf_counter()
  with writer:
    # Chunk c is drawn from its own seed, so a resumed file is the same file.
    for c in range(writer.written // GEN_CHUNK, -(-n // GEN_CHUNK)):
      m = min(GEN_CHUNK, n - c * GEN_CHUNK)
      writer.append(draw_codes(np.random.default_rng([ARGS.seed, l, 1, c]), m, l, centres))
  print(f"# {path}: {n} codes of {l} bits ready ({time.perf_counter() - start:.1f} s)", flush=True)


def ensure_archive(path, n, l):
  """The code file, reused when whole and alike, else made: by a child process over
  64 MB (its written pages would count in this process's peak RSS), else here."""
  meta = dict(benchmark="hamming", seed=ARGS.seed, clustered=ARGS.clustered)
  try:
    cf = codefile.open_codes(path)
    if len(cf) == n and cf.bits == l and cf.meta == meta:
      print(f"# {path}: reused", flush=True)
      return cf
  except (OSError, ValueError):
    pass
  if n * l // 8 <= 1 << 26:
    generate(path, n, l)
    return codefile.open_codes(path)
  argv = [sys.executable, __file__, "--generate_only", f"--archive_memmap={path}",
          f"--sizes={n}", f"--bits={l}", f"--clustered={ARGS.clustered}", f"--seed={ARGS.seed}",
          f"--threads={ARGS.threads}"]
  subprocess.run(argv, check=True)
  return codefile.open_codes(path)


def brute_topk(q, codes, k, chunk=GEN_CHUNK):
  """The obvious exact top-k: every distance by numpy XOR-popcount over the memmap in
  chunks, each query's list kept ordered by (distance, index): candidates in index
  order (the kept list, then the chunk), a stable sort by distance. int64[nq, k] twice."""
  best_d = np.empty((len(q), 0), np.uint16)
  best_i = np.empty((len(q), 0), np.int64)
  for s in range(0, len(codes), chunk):
    block = np.asarray(codes[s:s + chunk])
    ids = np.arange(s, s + len(block))
    new_d, new_i = [], []
    for j in range(len(q)):
      d = np.bitwise_count(block ^ q[j]).sum(1, dtype=np.uint16)  # [c]
      d = np.concatenate([best_d[j], d])
      i = np.concatenate([best_i[j], ids])
      order = np.argsort(d, kind="stable")[:k]  # index order kept on equal distance
      new_d.append(d[order])
      new_i.append(i[order])
    best_d, best_i = np.stack(new_d), np.stack(new_i)
  return best_d.astype(np.int64), best_i


def reset_peak():
  """Resets VmHWM (Linux >= 4.0); returns whether it could."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def peak_mb():
  """(VmHWM, ru_maxrss) in MB: the peak since the last reset, and over the process."""
  with open("/proc/self/status") as f:
    hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
  return hwm / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_stream(q, cf, k, chunk):
  """Best-of-`--repeats` seconds of stream_search over the file, after a warm-up on its
  first and last chunks (the kernels' two shapes); the result; the peak RSS."""
  n = len(cf)
  # pylint: disable-next=protected-access
  step = chunk or search.stream._default_chunk(cf.codes.shape[1])
  for s in sorted({0, (n - 1) // step * step}):
    part = cf.codes[s:s + step]
    search.stream_search(q, part, min(k, len(part)), chunk=chunk or None, progress=False)
  time.sleep(0.5)
  reset = reset_peak()
  best, out = float("inf"), None
  for _ in range(ARGS.repeats):
    start = time.perf_counter()
    out = search.stream_search(q, cf, k, chunk=chunk or None)
    best = min(best, time.perf_counter() - start)
  hwm, maxrss = peak_mb()
  return best, out, dict(rsh_peak_rss_mb=hwm if reset else None, rsh_ru_maxrss_mb=maxrss)


def faiss_phase(q, cf, k, d, i):
  """FAISS IndexBinaryFlat over the file's codes (copied into RAM), one timed run."""
  index = faiss.IndexBinaryFlat(8 * cf.codes.shape[1])
  for s in range(0, len(cf), GEN_CHUNK):
    index.add(np.ascontiguousarray(cf.codes[s:s + GEN_CHUNK]))
  start = time.perf_counter()
  fd, fi = index.search(q, k)
  t = time.perf_counter() - start
  hwm, _ = peak_mb()
  return dict(faiss_s=t, faiss_peak_rss_mb=hwm, faiss_same_distances=bool((fd == d).all()),
              faiss_same_indices=bool((fi == i).all()))


def streamed_row(cf, n, l):
  """One archive: time the streamed search, check it, then the others."""
  rng = np.random.default_rng([ARGS.seed, l, 2])
  q = draw_codes(rng, ARGS.queries, l, centres_for(l))
  row = dict(archive=n, bits=l, queries=ARGS.queries, k=ARGS.k, threads=ARGS.threads,
             clustered=ARGS.clustered, path=str(cf.path), chunk=ARGS.chunk or None)
  t, (d, i), peaks = time_stream(q, cf, ARGS.k, ARGS.chunk)
  row.update(rsh_s=t, **peaks)
  sample = np.unique(np.linspace(0, len(q) - 1, min(ARGS.check_queries, len(q))).astype(int))
  bd, bi = brute_topk(q[sample], cf.codes, ARGS.k)
  row.update(checked_queries=len(sample),
             brute_equal=bool((bd == d[sample]).all() and (bi == i[sample]).all()))
  if n <= ARGS.inmemory_max:
    db = np.array(cf.codes)
    t_mem, (md, mi) = best_time(lambda: search.search(q, db, ARGS.k), ARGS.repeats)
    row.update(inmemory_s=t_mem, inmemory_equal=bool((md == d).all() and (mi == i).all()))
    del db
  if faiss is not None and 2 * n * l // 8 < 0.5 * available_bytes():
    time.sleep(0.5)
    reset_peak()
    row.update(faiss_phase(q, cf, ARGS.k, d, i))
  return row


def main_streamed():
  sizes = [int(float(s)) for s in ARGS.sizes.split(",")]
  bits = [int(b) for b in ARGS.bits.split(",")]
  combos = len(sizes) * len(bits)
  if ARGS.generate_only:
    for n in sizes:
      for l in bits:
        generate(archive_path(n, l, combos), n, l)
    return 0
  files = {(n, l): ensure_archive(archive_path(n, l, combos), n, l) for n in sizes for l in bits}
  load = os.getloadavg()[0]
  print(f"\n# rsh.search.stream_search over a code file vs in-memory search vs "
        f"faiss.IndexBinaryFlat: {ARGS.queries} queries, k={ARGS.k}, {ARGS.threads} threads, "
        f"jax {jax.__version__} ({jax.devices()[0].platform}), faiss "
        f"{faiss.__version__ if faiss else 'absent'}, clustered={ARGS.clustered}, "
        f"load average {load:.2f}\n")
  print("| archive | bits | stream s | stream codes/s | in-memory s | faiss s | faiss codes/s "
        "| stream / faiss | peak RSS MB (VmHWM / ru_maxrss) | = brute force | = in-memory "
        "| = faiss (d, i) |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  rows = []
  for n in sizes:
    for l in bits:
      row = streamed_row(files[n, l], n, l)
      rows.append(row)
      rate = {key: n * ARGS.queries / row[key] for key in ("rsh_s", "inmemory_s", "faiss_s")
              if key in row}
      row.update({key.replace("_s", "_codes_per_s"): v for key, v in rate.items()})

      def get(key, fmt="{:.3f}"):
        return fmt.format(row[key]) if row.get(key) is not None else "-"

      same_f = (f"{row['faiss_same_distances']}, {row['faiss_same_indices']}"
                if "faiss_s" in row else "-")
      print(f"| {n:.0e} | {l} | {get('rsh_s')} | {get('rsh_codes_per_s', '{:.2e}')} | "
            f"{get('inmemory_s')} | {get('faiss_s')} | {get('faiss_codes_per_s', '{:.2e}')} | "
            f"{(row['faiss_s'] / row['rsh_s']) if 'faiss_s' in row else 0:.2f}x | "
            f"{get('rsh_peak_rss_mb', '{:.0f}')} / {get('rsh_ru_maxrss_mb', '{:.0f}')} | "
            f"{row['brute_equal']} ({row['checked_queries']} queries) | "
            f"{get('inmemory_equal', '{}')} | {same_f} |", flush=True)
  print("\n'stream / faiss' is FAISS's time over the streamed search's (> 1: rsh faster). Peak "
        "RSS is the streamed phase's alone (VmHWM reset before it; ru_maxrss is the process's "
        "peak so far; files over 64 MB are made by a child process). '= brute force': "
        "distances and indices of the checked queries; '= faiss': FAISS may order ties "
        "otherwise.")
  print(json.dumps(dict(benchmark="hamming_stream", load_average=load, results=rows)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
