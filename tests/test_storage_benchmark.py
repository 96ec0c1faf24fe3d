"""benchmarks/storage.py end to end: `--quick` in a subprocess, its table and JSON line."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "storage.py"
NAMED = ("archive", "codes_query_ms", "features_query_ms", "codes_bytes", "features_bytes",
         "faiss_flat_ip_ms", "faiss_binary_flat_ms", "encode_ms", "codes_bytes_per_image",
         "features_bytes_per_image", "checks")
FAISS_KEYS = ("faiss_flat_ip_ms", "faiss_binary_flat_ms")


def run(*args, env=None):
  done = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = done.stdout.strip().splitlines()
  return lines, json.loads(lines[-1])


@pytest.fixture(scope="module")
def quick():
  return run("--quick")


def test_quick_prints_a_table_then_one_json_line(quick):
  lines, out = quick
  assert out["benchmark"] == "storage"
  assert any(line.startswith("| archive |") for line in lines)
  assert sum(line.startswith("{") for line in lines) == 1
  assert {"cpu", "threads", "jax", "numpy"} <= set(out["machine"])
  assert out["acceptance"] is None  # no 10^6 archive in --quick


def test_quick_rows_schema_and_bytes(quick):
  _, out = quick
  dim, bits = out["dim"], out["bits"]
  assert (dim, bits) == (256, 64)
  assert [r["archive"] for r in out["results"]] == [2000, 20000]
  has_faiss = importlib.util.find_spec("faiss") is not None
  for r in out["results"]:
    assert set(NAMED) <= set(r)
    assert r["codes_bytes"] * 8 * dim * 4 == r["features_bytes"] * bits
    assert r["codes_bytes"] == r["archive"] * r["codes_bytes_per_image"] == r["archive"] * 8
    assert r["features_bytes"] == r["archive"] * r["features_bytes_per_image"]
    assert r["compression"] == r["features_bytes"] / r["codes_bytes"]
    assert r["features_searched"] == r["archive"]
    for key in ("codes_query_ms", "features_query_ms", "encode_ms", "rsh_search_api_ms"):
      assert r[key] > 0
    for key in FAISS_KEYS:
      assert (r[key] is not None and r[key] > 0) == has_faiss


def test_quick_every_fast_path_equals_brute_force(quick):
  _, out = quick
  for r in out["results"]:
    assert all(v for v in r["checks"].values() if isinstance(v, bool)), r["checks"]
    assert {"encoder", "rsh_distances", "rsh_indices", "search_api", "numpy_scores"} <= set(
        r["checks"])
  assert [r["pruning_levels"] for r in out["results"]] == [0, 1]  # both kernels' paths


@pytest.mark.slow   # a second --quick run (11 s)
def test_without_faiss_the_faiss_columns_are_skipped(tmp_path):
  (tmp_path / "faiss.py").write_text("raise ImportError('hidden by the test')\n")
  env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"}
  lines, out = run("--sizes=500,3000", "--dim=64", "--queries=12", "--check=2", env=env)
  assert "faiss absent" in lines[0]
  for r in out["results"]:
    assert set(NAMED) <= set(r)
    assert all(r[key] is None for key in FAISS_KEYS)
    assert "faiss_distances" not in r["checks"]
    assert all(v for v in r["checks"].values() if isinstance(v, bool)), r["checks"]
