"""What a full run costs, measured here and carried to 8 x H100 and a TPU v4-32 slice.

    python benchmarks/scaling.py              # UAHM (batch 64) and cross-modal (batch 128)
    python benchmarks/scaling.py --quick      # fewer timed steps

For each method's real training step (built by rsh exactly as a run builds it,
on procedural data of the full configs' shapes: UAHM 64 x 64 x 10 bands;
cross-modal S2 120 x 120 x 10 and S1 120 x 120 x 2, BigEarthNet-MM's 10 m grid)
it measures on this CPU:

- the step time and images per second;
- XLA's own count of the step's floating-point operations (`cost_analysis`):
  forward, backward and update, per image;
- the parameters, hence the bytes each step's gradient all-reduce moves.

It then estimates a full run's time on accelerators as FLOPs / (devices x dense
peak x utilisation). The utilisation is not guessed: it is the one a published
convolutional-network training throughput implies on the same chip (ResNet-50,
NVIDIA's DeepLearningExamples tables; see `REFERENCES`), an upper bound for these
smaller convolutions. The estimate assumes linear scaling; the printout says
what stands in its way. Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import pathlib
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]

# Published figures the estimate stands on (dense peaks; training throughputs).
REFERENCES = {
    # ResNet-50 v1.5 forward pass at 224 x 224: 4.1 GFLOPs of multiply-adds = 8.2 GFLOP;
    # a training step is about 3 x the forward pass.
    "resnet50_train_flop_per_image": 3 * 8.2e9,
    # NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md,
    # "Training performance: NVIDIA DGX A100 (8x A100 80GB)", 1 GPU, mixed precision,
    # batch 256 a GPU (8 GPUs: 16,621 img/s, 6.72x).
    "resnet50_a100_amp_img_per_s": 2_470.0,
    "a100_bf16_dense_flop_per_s": 312e12,
    "h100_sxm_bf16_dense_flop_per_s": 989e12,
    # Cloud TPU v4 (cloud.google.com/tpu/docs/v4): 275 TFLOP/s bf16 a chip; a v4-32
    # slice is 32 TensorCores = 16 chips on 4 hosts.
    "tpu_v4_bf16_flop_per_s": 275e12,
    "tpu_v4_32_chips": 16,
}

# The full runs (configs' own loop settings).
RUNS = {
    "uahm": dict(config="configs/uahm.py:demo", steps=30_000, batch=64,
                 overrides={}, what="UAHM, EuroSAT (30,000 steps at batch 64)"),
    "crossmodal": dict(config="configs/crossmodal.py:demo", steps=50_000, batch=128,
                       overrides={"data.options": {"size": 120}},
                       what="cross-modal, BigEarthNet-MM (50,000 steps at batch 128)"),
}


def _config(spec: dict):
  path, _, arg = spec["config"].partition(":")
  module_spec = importlib.util.spec_from_file_location("bench_config", REPO / path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg)
  with config.unlocked():
    config.train.batch_size = spec["batch"]
    for key, value in spec["overrides"].items():
      node, *rest = key.split(".")
      target = config[node]
      for part in rest[:-1]:
        target = target[part]
      target[rest[-1]] = value
  return config


def measure(name: str, timed: int) -> dict:
  """The real step of `name`'s method: seconds per step, XLA's FLOPs, parameters."""
  import jax
  from rsh import experiment
  from rsh import generated
  from rsh import methods
  from rsh import sharding
  from rsh import train as rtrain

  spec = RUNS[name]
  config = _config(spec)
  data = generated.prepare(config)
  method = methods.get(config.method).build(config, data, terms=None)
  ssm = functools.cache(lambda: experiment.training_ssm(config, data))
  batch_fn, _ = experiment.make_batch_fn(config, data, method, ssm, spec["batch"])
  mesh = sharding.data_mesh()
  state = sharding.replicate(method.init(jax.random.PRNGKey(0)), mesh)
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state)
               if hasattr(x, "shape") and np.issubdtype(x.dtype, np.floating)) // 3
  step = rtrain.jit_step(method.step, mesh)
  batch = sharding.shard_batch(batch_fn(0), mesh)
  key = jax.random.PRNGKey(1)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, key).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan")))
  times, host = [], []
  for i in range(timed + 1):  # the first call is a warm-up
    t = time.perf_counter()
    batch = sharding.shard_batch(batch_fn(i), mesh)
    host.append(time.perf_counter() - t)
    t = time.perf_counter()
    state, metrics = compiled(state, batch, jax.random.fold_in(key, i))
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  t_step = float(np.median(times[1:]))
  b = spec["batch"]
  return {"step_s": t_step, "img_per_s": b / t_step, "host_batch_s": float(np.median(host[1:])), "flop_per_image": flops / b,
          "cpu_flop_per_s": flops / t_step, "params": params, "compile_s": compile_s,
          "batch": b, "steps": spec["steps"], "backend": jax.default_backend(),
          "devices": jax.device_count()}


def estimates(m: dict) -> dict:
  """Hours of the full run: here, on 8 x H100 and on a v4-32, at the utilisation
  ResNet-50's published A100 throughput implies (the same fraction of peak)."""
  r = REFERENCES
  util = (r["resnet50_a100_amp_img_per_s"] * r["resnet50_train_flop_per_image"]
          / r["a100_bf16_dense_flop_per_s"])
  total = m["flop_per_image"] * m["batch"] * m["steps"]
  h100 = 8 * r["h100_sxm_bf16_dense_flop_per_s"] * util
  v4 = r["tpu_v4_32_chips"] * r["tpu_v4_bf16_flop_per_s"] * util
  steps = m["steps"]
  return {"utilisation": util, "total_flop": total,
          "here_h": steps * m["step_s"] / 3600,
          "h100x8_h": total / h100 / 3600, "v4_32_h": total / v4 / 3600,
          # The loop builds a step's batch on the host, then waits for the step (it reads
          # the metrics back): the host's part adds to every step. 8 processes on one
          # node build 1/8 each; a v4-32's 4 hosts 1/4 each.
          "h100x8_host_h": steps * m["host_batch_s"] / 8 / 3600,
          "v4_32_host_h": steps * m["host_batch_s"] / 4 / 3600,
          "per_device_batch_h100x8": m["batch"] / 8,
          "per_chip_batch_v4_32": m["batch"] / r["tpu_v4_32_chips"],
          # Each step all-reduces every gradient (UAHM: D's and G's, one update each).
          "allreduce_mb_per_step": 4 * m["params"] / 1e6}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--quick", action="store_true", help="3 timed steps instead of 10")
  p.add_argument("--only", choices=sorted(RUNS), default=None)
  args = p.parse_args()
  result = {"benchmark": "scaling", "references": REFERENCES}
  print(f"{'run':<12} {'ms/step':>9} {'host ms':>8} {'img/s':>7} {'GFLOP/img':>10} "
        f"{'CPU GFLOP/s':>12} {'params':>8} {'here (h)':>9} {'8xH100 (h)':>11} "
        f"{'+host (h)':>10} {'v4-32 (h)':>10} {'+host (h)':>10}")
  for name in [args.only] if args.only else list(RUNS):
    m = measure(name, 3 if args.quick else 10)
    e = estimates(m)
    result[name] = {**m, **e}
    print(f"{name:<12} {1e3 * m['step_s']:9.0f} {1e3 * m['host_batch_s']:8.1f} "
          f"{m['img_per_s']:7.1f} {m['flop_per_image'] / 1e9:10.2f} "
          f"{m['cpu_flop_per_s'] / 1e9:12.1f} {m['params'] / 1e6:7.2f}M {e['here_h']:9.1f} "
          f"{e['h100x8_h']:11.4f} {e['h100x8_host_h']:10.4f} {e['v4_32_h']:10.4f} "
          f"{e['v4_32_host_h']:10.4f}")
  util = estimates(result[next(k for k in RUNS if k in result)])["utilisation"]
  print(f"\naccelerator estimates at {100 * util:.0f}% of the bf16 dense peak (ResNet-50's "
        "published A100 training throughput), linear scaling assumed. In the way of it: "
        "per-device batches of 8 (UAHM) and 16 (cross-modal) on 8 GPUs, 4 and 8 on a "
        "v4-32's 16 chips; one gradient all-reduce per update; the host's batch assembly "
        "in the Python loop; evaluation ranked on every process; synchronous checkpoints.")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
