"""rsh.protocol.evaluate vs a straightforward argsort-based numpy evaluation, same run.

    python benchmarks/metrics.py [--queries=1000] [--archive=26000] [--bits=128]
                                 [--classes=10] [--threads=2] [--quick]

The EuroSAT protocol size: 1,000 queries against 26,000 archive codes of 128
bits; MAP@100 (thesis definition), P@20, the PR curve every 500 retrieved and
class-wise MAP@100. Codes are synthetic but clustered like trained ones (a
prototype per class, `--flip` of the bits flipped), so distances tie a lot.

The baseline is what peers write: Hamming distances as 0.5 (l - B_q B_a^T) on ±1
codes, one stable argsort of every row (ties by archive index, as defined), the
relevance gathered in rank order and cumulated. rsh is timed twice: with the
same metrics (`map_modes=("thesis",)`; it still adds NDCG, ACG, P@r2 and the
tie-aware MAP) and with every MAP convention (adds MAP@all, which reads the
whole ranking). Prints a markdown table, then one JSON line.
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
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--archive", type=int, default=26000)
  parser.add_argument("--bits", type=int, default=128)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--flip", type=float, default=0.3, help="bits flipped off each prototype")
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--n", type=int, default=20)
  parser.add_argument("--pr_step", type=int, default=500)
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--quick", action="store_true", help="200 queries x 5,000 codes")
  return parser.parse_args()


ARGS = parse_args()
# Thread counts must be fixed before numpy, faiss and jax start their pools.
pinning.pin_threads(ARGS.threads)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rsh import protocol  # noqa: E402


def codes(rng, n, bits, classes, flip):
  protos = np.random.default_rng(1234).integers(0, 2, (classes, bits)).astype(bool)
  labels = rng.integers(0, classes, n)
  return np.packbits(protos[labels] ^ (rng.random((n, bits)) < flip), axis=1), labels


def baseline(qc, ac, ql, al, k, n, cutoffs):
  """The straightforward evaluation: full distance matrix, one stable argsort."""
  qb = np.unpackbits(qc, axis=1).astype(np.float32) * 2 - 1
  ab = np.unpackbits(ac, axis=1).astype(np.float32) * 2 - 1
  hamm = 0.5 * (qb.shape[1] - qb @ ab.T)
  order = np.argsort(hamm, axis=1, kind="stable")
  rel = np.take_along_axis(ql[:, None] == al[None, :], order, 1)
  cum = np.cumsum(rel, axis=1)
  ranks = np.arange(1, rel.shape[1] + 1)
  found = cum[:, k - 1]
  ap = np.where(found > 0, (rel[:, :k] * cum[:, :k] / ranks[:k]).sum(1) / np.maximum(found, 1), 0)
  out = {f"map@{k}": ap.mean(), f"precision@{n}": (cum[:, n - 1] / n).mean(),
         "pr_curve/precision": (cum[:, cutoffs - 1] / cutoffs).mean(0),
         "pr_curve/recall": (cum[:, cutoffs - 1] / cum[:, -1:]).mean(0)}
  for c in np.unique(ql):
    out[f"classwise_map@{k}/{c}"] = ap[ql == c].mean()
  return out


def best_time(fn, repeats):
  fn()
  best, out = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - start)
  return best, out


def main():
  if ARGS.quick:
    ARGS.queries, ARGS.archive = 200, 5000
  rng = np.random.default_rng(0)
  qc, ql = codes(rng, ARGS.queries, ARGS.bits, ARGS.classes, ARGS.flip)
  ac, al = codes(rng, ARGS.archive, ARGS.bits, ARGS.classes, ARGS.flip)
  k, n = ARGS.k, ARGS.n
  cutoffs = np.arange(ARGS.pr_step, ARGS.archive + 1, ARGS.pr_step)
  if cutoffs[-1] != ARGS.archive:
    cutoffs = np.append(cutoffs, ARGS.archive)
  common = dict(k=k, n=n, pr_step=ARGS.pr_step, threads=ARGS.threads)
  load = os.getloadavg()[0]

  t_base, want = best_time(lambda: baseline(qc, ac, ql, al, k, n, cutoffs), ARGS.repeats)
  t_same, got = best_time(lambda: protocol.evaluate(qc, ac, ql, al, map_modes=("thesis",),
                                                    **common), ARGS.repeats)
  t_all, got_all = best_time(lambda: protocol.evaluate(qc, ac, ql, al, **common), ARGS.repeats)
  diff = max(float(np.max(np.abs(np.asarray(got[key]) - np.asarray(v)))) for key, v in want.items())
  diff_all = max(float(np.max(np.abs(np.asarray(got_all[key]) - np.asarray(v))))
                 for key, v in want.items())

  print(f"# retrieval metrics: {ARGS.queries} queries x {ARGS.archive} archive, {ARGS.bits} bits, "
        f"{ARGS.classes} classes, {ARGS.threads} threads, jax {jax.__version__}, numpy "
        f"{np.__version__}, {platform.machine()}, load average {load:.2f}\n")
  print("| implementation | metrics | seconds | speed-up | max abs difference |")
  print("|---|---|---|---|---|")
  print(f"| numpy argsort (baseline) | MAP@{k}, P@{n}, PR, class-wise | {t_base:.3f} | 1.0x | - |")
  print(f"| rsh.protocol.evaluate | same (+ tie-aware MAP, NDCG, ACG, P@r2) | {t_same:.3f} | "
        f"{t_base / t_same:.1f}x | {diff:.1e} |")
  print(f"| rsh.protocol.evaluate | every MAP convention (+ MAP@all) | {t_all:.3f} | "
        f"{t_base / t_all:.1f}x | {diff_all:.1e} |")
  print(f"\nMAP@{k} {got[f'map@{k}']:.4f}, P@{n} {got[f'precision@{n}']:.4f}, "
        f"tie-aware MAP@{k} {got[f'map@{k}/tie_aware']:.4f}, MAP@all {got_all['map@all']:.4f}")
  print(json.dumps(dict(
      benchmark="retrieval_metrics", queries=ARGS.queries, archive=ARGS.archive, bits=ARGS.bits,
      threads=ARGS.threads, load_average=load, baseline_s=t_base, rsh_same_metrics_s=t_same,
      rsh_all_metrics_s=t_all, speedup_same_metrics=t_base / t_same,
      speedup_all_metrics=t_base / t_all, max_abs_difference=max(diff, diff_all),
      map=got[f"map@{k}"], precision=got[f"precision@{n}"])))


if __name__ == "__main__":
  sys.exit(main())
