"""benchmarks/scaling.py: the estimate's arithmetic, and the benchmark end to end (slow)."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "scaling.py"


def _module():
  spec = importlib.util.spec_from_file_location("bench_scaling", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_estimates_follow_the_references():
  s = _module()
  r = s.REFERENCES
  m = {"flop_per_image": 2e9, "batch": 64, "steps": 1000, "step_s": 0.5, "host_batch_s": 0.08,
       "params": 1_000_000}
  e = s.estimates(m)
  util = r["resnet50_a100_amp_img_per_s"] * r["resnet50_train_flop_per_image"] / (
      r["a100_bf16_dense_flop_per_s"])
  assert 0.05 < util < 0.5 and math.isclose(e["utilisation"], util)
  assert math.isclose(e["total_flop"], 2e9 * 64 * 1000)
  assert math.isclose(e["here_h"], 500 / 3600)
  assert math.isclose(e["h100x8_h"] * 3600 * 8 * r["h100_sxm_bf16_dense_flop_per_s"] * util,
                      e["total_flop"])
  assert math.isclose(e["v4_32_h"] * 3600 * 16 * r["tpu_v4_bf16_flop_per_s"] * util,
                      e["total_flop"])
  assert math.isclose(e["h100x8_host_h"], 1000 * 0.08 / 8 / 3600)
  assert math.isclose(e["v4_32_host_h"], 1000 * 0.08 / 4 / 3600)
  assert e["per_device_batch_h100x8"] == 8 and e["per_chip_batch_v4_32"] == 4
  assert math.isclose(e["allreduce_mb_per_step"], 4.0)


@pytest.mark.slow
def test_benchmark_runs_and_reports_its_measurements():
  out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--only=crossmodal"],
                       capture_output=True, text=True, timeout=900, cwd=REPO)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  m = result["crossmodal"]
  assert m["batch"] == 128 and m["steps"] == 50_000
  # XLA counts the step's work: two CNNs on 120 x 120 pairs, forward and backward.
  assert 1e8 < m["flop_per_image"] < 1e11
  assert m["step_s"] > 0 and m["host_batch_s"] > 0 and m["params"] > 1e5
  assert "crossmodal" in out.stdout.splitlines()[1]
