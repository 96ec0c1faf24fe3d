"""Every rsh benchmark in one command: one table, one JSON line per benchmark.

    python benchmarks/run_all.py            # quick settings (a few minutes on 2 cores)
    python benchmarks/run_all.py --full     # the sizes of issue 21's table (~10 min)
    python benchmarks/run_all.py --only=hamming,metrics --no-torch

Each benchmark runs in its own process, one after another (a process-wide XLA
flag, thread pools and peak memory stay its own), and is given the same
`--threads`. Every reference (PyTorch, FAISS, the argsort metrics, dense numpy)
is measured in the same process as rsh, side by side; the ratios below are
theirs. Prints one markdown table of the headline numbers, then, per benchmark,
the JSON line it printed itself (`{"benchmark": ..., ...}`). Benchmarks whose
reference is not installed (torch, faiss) report rsh alone.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def _has(module: str) -> bool:
  import importlib.util
  return importlib.util.find_spec(module) is not None


def commands(full: bool, torch: bool) -> dict[str, list[str]]:
  """Benchmark name -> its command line (quick or `full` setting)."""
  train = ["train_step.py", "--steps=5" if full else "--steps=3", "--warmup=2" if full else "--warmup=1",
           "--cpu_conv=eigen,ynnpack"]
  if not torch:
    train.append("--no-torch")
  return {
      "train_step": train,
      "hamming": ["hamming.py", "--sizes=1e5,1e6", "--bits=64,128", "--numpy_max=0"]
                 + ([] if full else ["--repeats=2"]),
      "metrics": ["metrics.py"] + ([] if full else ["--repeats=3"]),
      "ssm": ["ssm.py", "--repeats=1"] + (["--large_dims=1280,7168"] if full
                                          else ["--n=2000", "--large_dims=1280"]),
      "features": ["features.py", "--n=256", "--batch_sizes=64", "--repeats=1"],
      "frozen_backbone": ["frozen_backbone.py", "--steps=5" if full else "--steps=2"],
      "storage": ["storage.py"] + ([] if full else ["--quick"]),
      "scaling": ["scaling.py"] + ([] if full else ["--quick"]),
      "faiss_ann": ["faiss_ann.py"] + (["--n=1e6"] if full else ["--quick"]),
      "protocol_streamed": ["protocol_streamed.py"] + ([] if full else ["--archive=1000000"]),
  }


def headline(name: str, r: dict) -> list[tuple[str, str, str]]:
  """(what, rsh, vs reference) rows of one benchmark's JSON."""
  rows = []
  if name == "train_step":
    for key, value in r.items():
      if key.startswith("rsh_") and key.endswith("_img_per_s"):
        form = key[4:-len("_img_per_s")]
        vs = r.get(f"rsh_{form}_vs_torch")
        rows.append((f"UAHM train step {form}, img/s (compile {r[f'rsh_{form}_compile_s']:.1f} s)",
                     f"{value:.1f}", f"{vs:.2f}x PyTorch" if vs else "-"))
    if "torch_b64_img_per_s" in r:
      rows.append(("PyTorch train step b64, img/s", f"{r['torch_b64_img_per_s']:.1f}", "1.00x"))
  elif name == "hamming":
    for row in r["results"]:
      vs = row.get("faiss_s")
      rows.append((f"Hamming top-{row['k']}, {row['queries']} q x {row['archive']:.0e} x "
                   f"{row['bits']} bits, s", f"{row['rsh_s']:.3f}",
                   f"{vs / row['rsh_s']:.2f}x FAISS" if vs else "-"))
  elif name == "metrics":
    for key, what in (("same", "MAP@k, P@n, PR, class-wise"), ("all", "every MAP convention")):
      if f"speedup_{key}_metrics" in r:
        rows.append((f"metrics {r['queries']} x {r['archive']} x {r['bits']} bits ({what}), s",
                     f"{r[f'rsh_{key}_metrics_s']:.3f}",
                     f"{r[f'speedup_{key}_metrics']:.1f}x argsort"))
  elif name == "ssm":
    s = r.get("thesis_size")
    if s:
      rows.append((f"SSM N={s['n']}, {s['dim']}-d, K1={s['k1']}, K2={s['k2']}, s",
                   f"{s['ours_s']:.2f}", f"{s['speedup']:.2f}x dense numpy"))
    for big in r.get("large", []):
      rows.append((f"SSM N={big['n']}, {big['dim']}-d, K1={big['k1']}, K2={big['k2']}, s "
                   f"(peak {big['peak_rss_mib'] / 1024:.2f} GiB)",
                   f"{big['seconds']:.1f}", "goal < 60 s, < 4 GiB"))
  elif name == "features":
    for key, value in r.items():
      if key.endswith("_img_per_s"):
        rows.append((f"features {r['backbone']} {key[:-10]}, img/s", f"{value:.1f}", "-"))
  elif name == "frozen_backbone":
    rows.append((f"feature-hash step, frozen backbone in the step (b{r['backbone_batch']}), "
                 "img/s", f"{r['backbone_img_per_s']:.1f}", "1.00x"))
    rows.append((f"feature-hash step, cached dihedral views (b{r['cached_batch']}), img/s",
                 f"{r['cached_img_per_s']:.1f}", f"{r['cached_vs_backbone']:.0f}x backbone"))
  elif name == "storage":
    for row in r["results"]:
      rows.append((f"one query (encode + top-{row['k']}) of {row['archive']:.0e} "
                   f"{row['bits']}-bit codes ({row['codes_bytes_per_image']} B/image), ms",
                   f"{row['codes_query_ms']:.3f}",
                   f"{row['features_query_ms'] / row['codes_query_ms']:.0f}x float features"))
  elif name == "scaling":
    for run in ("uahm", "crossmodal"):
      if run in r:
        m = r[run]
        rows.append((f"{run} step b{m['batch']} ({m['flop_per_image'] / 1e9:.2f} GFLOP/img), "
                     f"img/s; full run on 8 x H100, h", f"{m['img_per_s']:.1f}",
                     f"{m['h100x8_h'] + m['h100x8_host_h']:.3f} h (estimate)"))
  elif name == "faiss_ann":
    ivf = [x for x in r.get("ivf", []) if x["distance_recall"] >= 0.99]
    if ivf:
      x = ivf[0]
      rows.append((f"FAISS IVF nprobe={x['nprobe']}, {r['n']:.0e} x {r['bits']} bits, "
                   f"tie-aware recall@{r['k']} {x['distance_recall']:.3f}, queries/s",
                   f"{r['exact_qps']:.0f} (exact)", f"{x['qps'] / r['exact_qps']:.1f}x exact"))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--full", action="store_true", help="issue 21's sizes, not quick ones")
  parser.add_argument("--only", default="", help="comma list of benchmarks")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
  args = parser.parse_args()
  cmds = commands(args.full, torch=not args.no_torch and _has("torch"))
  only = [s for s in args.only.split(",") if s]
  unknown = sorted(set(only) - set(cmds))
  if unknown:
    parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(cmds)}")
  results, lines = {}, []
  for name, cmd in cmds.items():
    if only and name not in only:
      continue
    if name in ("hamming", "metrics"):
      cmd = cmd + [f"--threads={args.threads}"]
    if name == "train_step":
      cmd = cmd + [f"--threads={args.threads}"]
    argv = [sys.executable, str(HERE / cmd[0])] + cmd[1:]
    print(f"# {name}: {' '.join(['python', 'benchmarks/' + cmd[0]] + cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    took = time.perf_counter() - t0
    last = (done.stdout.strip().splitlines() or [""])[-1]
    try:
      result = json.loads(last)
    except json.JSONDecodeError:
      result = None
    if done.returncode or not isinstance(result, dict):
      print(f"  failed (exit {done.returncode}, {took:.0f} s):\n{done.stderr[-1500:]}", flush=True)
      result = {"failed": True, "exit": done.returncode}
    else:
      print(f"  done in {took:.0f} s", flush=True)
    result.setdefault("benchmark", name)
    result["wall_s"] = took
    results[name] = result
    lines.append(json.dumps(result))
  print(f"\n| work | rsh | vs reference (same run) |\n|---|---|---|")
  for name, r in results.items():
    if r.get("failed"):
      print(f"| {name} | failed | - |")
      continue
    for what, value, vs in headline(name, r):
      print(f"| {what} | {value} | {vs} |")
  load = os.getloadavg()[0]
  print(f"\nload average at the end: {load:.2f} (other work on the machine skews every ratio)\n")
  for line in lines:
    print(line)


if __name__ == "__main__":
  main()
