"""evaluate_streamed (archive read in chunks) beside rsh.protocol.evaluate (whole score rows).

    python benchmarks/protocol_streamed.py [--archive=10000000] [--queries=100] [--bits=64]
                                           [--classes=10] [--threads=2] [--impl=both]

Synthetic codes clustered like trained ones (a prototype per class, `--flip` of the bits
flipped), written once under `--dir` as a code file (`archive.rsh`) with int16 labels
(`labels.npy`). Each implementation runs in its own process, so its peak RSS is its own:
`evaluate_streamed` reads the code file and the labels as memmaps; `evaluate` gets them
in memory (np.load), with its defaults (every MAP mode, PR every 500 ranks). Prints a
markdown table (seconds, archive codes a second, peak RSS, the largest difference over
the keys both report), then one JSON line.
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
  parser.add_argument("--archive", type=int, default=10_000_000)
  parser.add_argument("--queries", type=int, default=100)
  parser.add_argument("--bits", type=int, default=64)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--flip", type=float, default=0.3, help="bits flipped off each prototype")
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--chunk", type=int, default=None, help="codes a chunk (streamed)")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--impl", choices=("both", "streamed", "evaluate"), default="both")
  parser.add_argument("--dir", default="/tmp/rsh_protocol_streamed")
  parser.add_argument("--run", choices=("streamed", "evaluate"), help=argparse.SUPPRESS)
  return parser.parse_args()


ARGS = parse_args()
# Thread counts must be fixed before numpy and jax start their pools.
pinning.pin_threads(ARGS.threads)

import numpy as np  # noqa: E402


def folder() -> pathlib.Path:
  return pathlib.Path(ARGS.dir) / f"{ARGS.archive}x{ARGS.bits}c{ARGS.classes}f{ARGS.flip}"


def make_data(path: pathlib.Path) -> None:
  """The code file, labels and queries, in blocks (a [10^7, 64] float mask would be 5 GB)."""
  from rsh.search import codefile  # pylint: disable=g-import-not-at-top
  if (path / "queries.npz").exists():
    return
  protos = np.random.default_rng(1234).integers(0, 2, (ARGS.classes, ARGS.bits)).astype(bool)
  rng = np.random.default_rng(0)

  def draw(m):
    labels = rng.integers(0, ARGS.classes, m)
    flips = rng.random((m, ARGS.bits), dtype=np.float32) < ARGS.flip
    return np.packbits(protos[labels] ^ flips, axis=1), labels.astype(np.int16)

  path.mkdir(parents=True, exist_ok=True)
  labels = np.lib.format.open_memmap(path / "labels.npy", "w+", np.int16, (ARGS.archive,))
  with codefile.create(path / "archive.rsh", ARGS.archive, ARGS.bits, overwrite=True) as w:
    for s in range(0, ARGS.archive, 1 << 18):
      codes, labels[s:s + (1 << 18)] = draw(min(1 << 18, ARGS.archive - s))
      w.append(codes)
  labels.flush()
  q, ql = draw(ARGS.queries)
  np.savez(path / "queries.npz", codes=q, labels=ql)


def run(impl: str, path: pathlib.Path) -> None:
  """One implementation, timed, in this process; writes {impl}.json."""
  from rsh import protocol  # pylint: disable=g-import-not-at-top
  from rsh.search import codefile  # pylint: disable=g-import-not-at-top
  from rsh.search import protocol_streamed  # pylint: disable=g-import-not-at-top
  qs = np.load(path / "queries.npz")
  q, ql = qs["codes"], qs["labels"]
  start = time.perf_counter()
  if impl == "streamed":
    out = protocol_streamed.evaluate_streamed(
        q, path / "archive.rsh", ql, np.load(path / "labels.npy", mmap_mode="r"), k=ARGS.k,
        chunk=ARGS.chunk, progress=False)
  else:
    a = np.array(codefile.open_codes(path / "archive.rsh").codes)
    out = protocol.evaluate(q, a, ql, np.load(path / "labels.npy"), k=ARGS.k,
                            threads=ARGS.threads)
  seconds = time.perf_counter() - start
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
  (path / f"{impl}.json").write_text(json.dumps(dict(seconds=seconds, peak_rss_gib=rss,
                                                     metrics=out)))


def main():
  path = folder()
  if ARGS.run:
    return run(ARGS.run, path)
  make_data(path)
  impls = ("streamed", "evaluate") if ARGS.impl == "both" else (ARGS.impl,)
  load, res = os.getloadavg()[0], {}
  for impl in impls:
    subprocess.run([sys.executable, __file__, *sys.argv[1:], f"--run={impl}"], check=True)
    res[impl] = json.loads((path / f"{impl}.json").read_text())
  diff = None
  if len(res) == 2:
    a, b = res["streamed"]["metrics"], res["evaluate"]["metrics"]
    diff = max(float(np.max(np.abs(np.subtract(a[key], b[key])))) for key in set(a) & set(b))
  print(f"# {ARGS.queries} queries x {ARGS.archive} archive codes, {ARGS.bits} bits, "
        f"{ARGS.classes} classes, k={ARGS.k}, {ARGS.threads} threads, numpy {np.__version__}, "
        f"{platform.machine()}, load average {load:.2f}\n")
  print("| implementation | seconds | archive codes / s | peak RSS (GiB) |")
  print("|---|---|---|---|")
  for impl, r in res.items():
    print(f"| {impl} | {r['seconds']:.2f} | {ARGS.archive / r['seconds']:.3g} | "
          f"{r['peak_rss_gib']:.2f} |")
  m = next(iter(res.values()))["metrics"]
  print(f"\nMAP@{ARGS.k} {m[f'map@{ARGS.k}']:.4f}, tie-aware {m[f'map@{ARGS.k}/tie_aware']:.4f}"
        + (f"; max abs difference over the shared keys {diff:.1e}" if diff is not None else ""))
  print(json.dumps(dict(
      benchmark="protocol_streamed", archive=ARGS.archive, queries=ARGS.queries, bits=ARGS.bits,
      classes=ARGS.classes, threads=ARGS.threads, load_average=load, max_abs_difference=diff,
      **{f"{impl}_{key}": r[key] for impl, r in res.items()
         for key in ("seconds", "peak_rss_gib")})))


if __name__ == "__main__":
  sys.exit(main())
