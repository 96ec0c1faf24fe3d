"""`python -m rsh.reproduce`: every table runs its cells, reuses them, and prints
ours beside the thesis's numbers (tiny demo protocol, a few steps per run)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

TINY = ["--variant=demo", "--bits=32", "--steps=2", "--set=data.n_per_class=12",
        "--set=data.n_query=2", "--set=train.batch_size=8", "--set=ssm.n_bins=8",
        "--set=ssm.spatial=none"]


def _reproduce(*args, cache, timeout=900):
  env = {**os.environ, "RSH_CACHE_DIR": str(cache)}
  return subprocess.run([sys.executable, "-m", "rsh.reproduce", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def table_57(tmp_path_factory):
  root = tmp_path_factory.mktemp("t57")
  out = _reproduce("--table=5.7", "--seeds=2", f"--workdir={root}", *TINY, cache=root / "cache")
  assert out.returncode == 0, out.stderr[-3000:]
  return root, out


def test_table_57_runs_every_cell_with_mean_and_std(table_57):
  root, out = table_57
  text = (root / "table_5_7.md").read_text()
  assert text.strip() == out.stdout.strip()
  for row in ("DHNN-MS (bin)", "GAN-RGB (non-bin)", "GAN-MS (non-bin)", "UAHM (non-bin)",
              "UAHM (bin)"):
    line = next(l for l in text.splitlines() if l.startswith(f"| {row} |"))
    # mean ± std over 2 seeds, then the thesis's 32-bit number in brackets
    assert re.search(r"\d\.\d{4} ± \d\.\d{4} \(0\.\d{4}\)", line), line
  # The shallow baselines of the UAHM runs, marked as not in the thesis.
  for row in ("LSH, pixels", "ITQ, pixels", "ITQ, EfficientNet-Lite0 features"):
    line = next(l for l in text.splitlines() if l.startswith(f"| {row} (not in thesis) |"))
    assert re.search(r"\| \d\.\d{4} ± \d\.\d{4} \|$", line), line
  runs = sorted(p.name for p in root.iterdir() if (p / "results.json").exists())
  assert runs == sorted(f"{m}_32b_seed{s}" for m in ("dhnn_ms", "gan_ms", "gan_rgb", "uahm")
                        for s in (0, 1))


def test_other_tables_reuse_finished_runs(table_57):
  root, _ = table_57
  out = _reproduce("--table=5.8", "--seeds=2", f"--workdir={root}", *TINY, cache=root / "cache")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stderr.count("reusing") == 8 and "map@100=" not in out.stderr
  assert "precision@20" in out.stdout
  out = _reproduce("--table=fig5.14", f"--workdir={root}", *TINY, cache=root / "cache")
  assert out.returncode == 0, out.stderr[-3000:]
  assert (root / "fig5_14.png").stat().st_size > 1000
  assert "| UAHM | 2 |" in out.stdout
  # The thesis figure is MAP@all; random projection is its reference level.
  assert "MAP@all (codes)" in out.stdout and "| random projection (32 bits, pixels) |" in out.stdout


def test_a_finished_run_longer_than_asked_is_not_reused(table_57):
  root, _ = table_57
  tiny = [a for a in TINY if not a.startswith("--steps")]
  out = _reproduce("--table=5.8", "--seeds=2", f"--workdir={root}", *tiny, "--steps=1",
                   cache=root / "cache")
  assert out.returncode == 2
  assert "finished run of 2 steps, more than the 1 asked for" in out.stderr, out.stderr[-2000:]


def test_table_56_reports_accuracy_and_iou(tmp_path):
  out = _reproduce("--table=5.6", f"--workdir={tmp_path}", *TINY, cache=tmp_path / "cache")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [l for l in out.stdout.splitlines() if l.startswith("| ") and "features" not in l]
  assert len(rows) == 4
  for row in rows:
    acc, iou = re.findall(r"(\d\.\d{4}) \(", row)
    assert 0.0 < float(acc) <= 1.0 and 0.0 < float(iou) <= 1.0, row


def test_bad_arguments(tmp_path):
  out = _reproduce("--table=5.7", cache=tmp_path)
  assert out.returncode != 0 and "--workdir" in out.stderr
  out = _reproduce("--table=9.9", f"--workdir={tmp_path}", cache=tmp_path)
  assert out.returncode != 0 and "9.9" in out.stderr
