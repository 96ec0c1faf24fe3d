"""UAHM train step: rsh (JAX/Flax) vs the same networks and step in PyTorch.

    python benchmarks/train_step.py                      # batch 64, CPU, both frameworks
    python benchmarks/train_step.py --batch=64,256       # several batch sizes (GPU)
    python benchmarks/train_step.py --no-torch           # rsh only
    python benchmarks/train_step.py --impl=phase,xla --cpu_conv=eigen,ynnpack \\
        --g_pass=shared,separate                         # every form (xla G: slow on CPU)

One step = one Adam update of D (adversarial + 0.1 binary + 0.1 semantic, real
and generated images as separate BatchNorm batches) then one of G through the
updated D: exactly `rsh.methods.uahm.make_train_step`. The PyTorch reference is
written here with the networks of Tables 5.4/5.5 (same layer sizes, same
parameter count, checked below), the same losses and the same optimiser, run
in the same process with the same thread count. Prints a table and a final
JSON line. Where the accelerator is a GPU it also reports the time of the full
30,000-step run at batch 64.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np


def parse():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch", default="64", help="comma-separated batch sizes")
  p.add_argument("--bits", type=int, default=64)
  p.add_argument("--channels", type=int, default=10)
  p.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--impl", default="phase",
                 help="rsh conv impl(s), config.model.conv_impl: phase,xla")
  p.add_argument("--cpu_conv", default="eigen",
                 help="XLA:CPU convolution kernels, config.train.cpu_conv: eigen,ynnpack "
                      "(a process-wide XLA flag: each after the first runs in a child process)")
  p.add_argument("--json_only", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--g_pass", default="shared",
                 help="G's forward pass once or twice, config.model.g_pass: shared,separate")
  p.add_argument("--no-torch", action="store_true")
  return p.parse_args()


def rsh_step(batch: int, bits: int, channels: int, impl: str, g_pass: str = "shared"):
  """Builds the real rsh UAHM step; returns (run_one_step, n_params)."""
  import jax
  import jax.numpy as jnp
  import importlib.util
  from rsh import losses as rlosses
  from rsh import sharding
  from rsh import train as rtrain
  from rsh.methods import uahm

  spec = importlib.util.spec_from_file_location(
      "uahm_config", pathlib.Path(__file__).resolve().parents[1] / "configs/uahm.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(f"full,bits={bits}")
  config.model.conv_impl = impl
  config.model.g_pass = g_pass
  gen, disc = uahm.build_models(config)
  if disc.channels != channels:
    raise SystemExit(f"--channels={channels}: the ms10 config has {disc.channels}")
  mesh = sharding.data_mesh()
  state = sharding.replicate(uahm.init_state(config, gen, disc, jax.random.PRNGKey(0)), mesh)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      [net.params for net in state.nets.values()]))
  step = rtrain.jit_step(
      uahm.make_train_step(config, gen, disc, rlosses.bind(config.losses, nets=uahm.NETS)), mesh)
  rng = np.random.default_rng(0)
  host = {"x": rng.uniform(-1, 1, (batch, 64, 64, channels)).astype(np.float32),
          "similarity": rng.choice(np.array([-1, 1], np.int8), (batch, batch))}
  data = sharding.shard_batch(host, mesh)
  key = jax.random.PRNGKey(1)
  box = {"state": state}

  def run():
    box["state"], metrics = step(box["state"], data, key)
    jax.block_until_ready(metrics)

  return run, n_params


def torch_step(batch: int, bits: int, channels: int, threads: int):
  """The same G, D, losses and step in PyTorch; returns (run_one_step, n_params)."""
  import torch
  from torch import nn
  torch.set_num_threads(threads)
  torch.manual_seed(0)

  def bn2(c):
    return nn.BatchNorm2d(c, momentum=0.1, eps=1e-5)

  class G(nn.Module):
    def __init__(self):
      super().__init__()
      self.project = nn.Linear(bits, 4 * 4 * 512)
      self.bn0 = bn2(512)
      ups, c_in = [], 512
      for c_out in (256, 128, 64):
        ups += [nn.ConvTranspose2d(c_in, c_out, 5, 2, padding=2, output_padding=1),
                bn2(c_out), nn.ReLU()]
        c_in = c_out
      ups += [nn.ConvTranspose2d(64, channels, 5, 2, padding=2, output_padding=1), nn.Tanh()]
      self.ups = nn.Sequential(*ups)

    def forward(self, z):
      x = self.project(z).view(-1, 512, 4, 4)
      return self.ups(torch.relu(self.bn0(x)))

  class D(nn.Module):
    def __init__(self):
      super().__init__()
      body, c_in = [], channels
      for c_out, s in ((32, 2), (64, 1), (128, 2), (256, 1), (256, 2)):
        body += [nn.Conv2d(c_in, c_out, 3, s, padding=1), bn2(c_out), nn.LeakyReLU(0.2)]
        c_in = c_out
      self.body = nn.Sequential(*body)
      self.fc = nn.Sequential(nn.Linear(8 * 8 * 256, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2))
      self.hash = nn.Sequential(nn.Linear(1024, bits), nn.BatchNorm1d(bits), nn.Tanh())
      self.source = nn.Linear(1024, 1)

    def forward(self, x):
      f = self.fc(self.body(x).flatten(1))
      return self.hash(f), self.source(f)[:, 0]

  g, d = G(), D()
  n_params = sum(p.numel() for p in g.parameters()) + sum(p.numel() for p in d.parameters())
  opt_g = torch.optim.Adam(g.parameters(), 1e-4, betas=(0.5, 0.999))
  opt_d = torch.optim.Adam(d.parameters(), 1e-4, betas=(0.5, 0.999))
  logsig = nn.functional.logsigmoid
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.uniform(-1, 1, (batch, channels, 64, 64)).astype(np.float32))
  s = torch.from_numpy(rng.choice([-1.0, 1.0], (batch, batch)).astype(np.float32))

  def run():
    z = torch.rand(batch, bits) * 2 - 1
    with torch.no_grad():
      fake = g(z)
    opt_d.zero_grad(set_to_none=True)
    h, real_logit = d(x)
    _, fake_logit = d(fake)
    loss_d = (-logsig(real_logit).mean() - logsig(-fake_logit).mean()
              - 0.1 * h.pow(2).sum(1).mean()
              + 0.1 * ((h @ h.T) / bits - s).pow(2).mean())
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    _, fake_logit = d(g(z))
    loss_g = -logsig(fake_logit).mean()
    loss_g.backward()
    opt_g.step()  # D's gradients from this pass are discarded at its next zero_grad.

  return run, n_params


def measure(run, steps: int, warmup: int) -> float:
  for _ in range(warmup):
    run()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main():
  args = parse()
  convs = args.cpu_conv.split(",")
  child_env = dict(os.environ)  # before this process sets its own XLA flag
  from rsh import platform
  if not platform.set_cpu_conv(convs[0]):
    raise SystemExit(f"--cpu_conv={convs[0]}: XLA_FLAGS already sets "
                     "--xla_cpu_experimental_ynn_fusion_type otherwise")
  import jax
  backend = jax.default_backend()
  device = jax.devices()[0].device_kind
  batches = [int(b) for b in args.batch.split(",")]
  forms = [(impl, g_pass) for impl in args.impl.split(",") for g_pass in args.g_pass.split(",")]
  conv = convs[0] if backend == "cpu" else None
  rows, result = [], {"benchmark": "train_step", "backend": backend, "device": device,
                      "threads": args.threads, "bits": args.bits, "channels": args.channels}
  for b in batches:
    ref = None
    torch_run = None
    if not args.no_torch and backend == "cpu":
      torch_run, n_torch = torch_step(b, args.bits, args.channels, args.threads)
      ref = measure(torch_run, args.steps, args.warmup)
    for impl, g_pass in forms:
      run, n_rsh = rsh_step(b, args.bits, args.channels, impl, g_pass)
      t0 = time.perf_counter()
      run()  # compile
      compile_s = time.perf_counter() - t0
      t = measure(run, args.steps, max(args.warmup - 1, 0))
      name = "/".join(x for x in (impl, conv, g_pass) if x)
      rows.append((f"rsh ({name})", b, t, b / t, compile_s))
      result[f"rsh_{name}_b{b}_img_per_s"] = b / t
      result[f"rsh_{name}_b{b}_compile_s"] = compile_s
      if torch_run is not None and n_rsh != n_torch:
        print(f"warning: parameter counts differ: rsh {n_rsh:,} vs torch {n_torch:,}",
              file=sys.stderr)
      result["params"] = n_rsh
      if backend != "cpu" and b == 64:
        result[f"rsh_{name}_30k_steps_s"] = 30_000 * t
    if backend == "cpu":
      for other in convs[1:]:  # a flag XLA reads once per process: a child each
        cmd = [sys.executable, __file__, f"--batch={b}", f"--bits={args.bits}",
               f"--channels={args.channels}", f"--steps={args.steps}",
               f"--warmup={args.warmup}", f"--threads={args.threads}", f"--impl={args.impl}",
               f"--g_pass={args.g_pass}", f"--cpu_conv={other}", "--no-torch", "--json_only"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=child_env)
        if done.returncode:
          raise SystemExit(f"--cpu_conv={other} (child process) failed:\n{done.stderr[-2000:]}")
        child = json.loads(done.stdout.strip().splitlines()[-1])
        for impl, g_pass in forms:
          name = f"{impl}/{other}/{g_pass}"
          ips = child[f"rsh_{name}_b{b}_img_per_s"]
          result[f"rsh_{name}_b{b}_img_per_s"] = ips
          result[f"rsh_{name}_b{b}_compile_s"] = child[f"rsh_{name}_b{b}_compile_s"]
          rows.append((f"rsh ({name})", b, b / ips, ips, child[f"rsh_{name}_b{b}_compile_s"]))
    if torch_run is not None:
      # PyTorch again after rsh: the reference is the faster of its two
      # measurements, so a machine that got busier only flatters PyTorch.
      ref = min(ref, measure(torch_run, args.steps, 1))
      rows.insert(len(rows) - len(forms) * len(convs), ("pytorch", b, ref, b / ref, float("nan")))
      result[f"torch_b{b}_img_per_s"] = b / ref
      for key in [k for k in result if k.endswith(f"_b{b}_img_per_s") and k.startswith("rsh_")]:
        result[key.replace("_img_per_s", "_vs_torch")] = result[key] * ref / b
  if not args.json_only:
    print(f"UAHM train step (D then G), {backend} ({device}), {args.threads} threads, "
          f"{args.bits} bits, {args.channels} bands")
    print(f"{'form (impl/cpu_conv/g_pass)':<30}{'batch':>6}{'s/step':>10}{'img/s':>10}"
          f"{'vs torch':>10}{'compile s':>11}")
    for name, b, t, ips, compile_s in rows:
      vs = result.get(f"rsh_{name[5:-1]}_b{b}_vs_torch", float("nan")) if name != "pytorch" else 1.0
      print(f"{name:<30}{b:>6}{t:>10.3f}{ips:>10.1f}{vs:>10.2f}{compile_s:>11.1f}")
    for key, value in result.items():
      if key.endswith("30k_steps_s"):
        print(f"full 30,000-step run at batch 64 ({key}): {value / 60:.1f} min")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
