"""`python -m rsh.reproduce`: every table runs its cells, reuses them, and prints
ours beside the thesis's numbers (tiny demo protocol, a few steps per run).

The table and reuse tests run the command line in this process over finished
runs written here (config.json and results.json, what `run_cell` reads to
reuse a run), with known numbers, so each cell's mean ± std is checked to the
digit; the slow test trains every cell for real, end to end.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import import_cli

REPO = pathlib.Path(__file__).resolve().parents[1]

SETS = ["data.n_per_class=12", "data.n_query=2", "train.batch_size=8", "ssm.n_bins=8",
        "ssm.spatial=none"]
TINY = ["--variant=demo", "--bits=32", "--steps=2", *(f"--set={s}" for s in SETS)]
MODELS = ("dhnn_ms", "gan_ms", "gan_rgb", "uahm")
BASELINES = ("random_projection", "itq", "lsh_efficientnet_lite0", "itq_efficientnet_lite0")


def _value(name: str, seed: int, key: str) -> float:
  """The fabricated number of one cell: distinct per model, metric and seed."""
  return round(0.1 + 0.1 * MODELS.index(name) + 0.003 * (sum(map(ord, key)) % 7) + 0.02 * seed, 6)


def _finished_run(root: pathlib.Path, name: str, seed: int, steps: int = 2) -> None:
  """`root/<name>_32b_seed<seed>` as a finished run of `steps` steps leaves it:
  config.json (the config `--variant=demo --bits=32` and the `--set`s make)
  and results.json (metrics, shallow baselines, an evaluation per step)."""
  reproduce = import_cli("rsh.reproduce")
  from rsh import runs
  config = reproduce._apply(reproduce.load_config(name, f"demo,bits=32,seed={seed}"), SETS)
  config.train.num_steps = steps
  workdir = root / f"{name}_32b_seed{seed}"
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps(runs.config_to_dict(config)))
  kinds = ("nonbinary",) if name.startswith("gan") else ("binary", "nonbinary")  # no codes
  metric = lambda key: _value(name, seed, key)
  keys = [f"{kind}/{m}" for kind in kinds for m in ("map@100", "precision@20", "map@all")]
  results = {
      "method": name, "bits": 32, "seed": seed, "k": 100, "n": 20,
      "metrics": {key: metric(key) for key in keys},
      "history": [{"step": s, **{key: metric(key) - 0.01 * (steps - s) for key in keys}}
                  for s in range(1, steps + 1)],
      "baselines": {} if name != "uahm" else {
          b: {m: metric(f"{b}/{m}") for m in ("map@100", "precision@20", "map@all")}
          for b in BASELINES},
  }
  (workdir / "results.json").write_text(json.dumps(results))


@pytest.fixture
def finished_runs(tmp_path, monkeypatch):
  """A workdir holding the 8 finished runs of Table 5.7 (4 models x 2 seeds)."""
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "cache"))
  root = tmp_path / "t57"
  for name in MODELS:
    for seed in (0, 1):
      _finished_run(root, name, seed)
  return root


def _cell(name: str, key: str, paper: float | None = None) -> str:
  values = [_value(name, s, key) for s in (0, 1)]
  text = f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"
  return f"{text} ({paper:.4f})" if paper else text


def test_table_57_reuses_every_cell_with_mean_and_std(finished_runs, run_cli):
  root = finished_runs
  out = run_cli("--table=5.7", "--seeds=2", f"--workdir={root}", *TINY, module="rsh.reproduce")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stderr.count("reusing") == 8 and "map@100=" not in out.stderr  # nothing trained
  text = (root / "table_5_7.md").read_text()
  assert text.strip() == out.stdout.strip()
  for (name, kind), row in (
      (("dhnn_ms", "binary"), "DHNN-MS (bin)"), (("gan_rgb", "nonbinary"), "GAN-RGB (non-bin)"),
      (("gan_ms", "nonbinary"), "GAN-MS (non-bin)"), (("uahm", "nonbinary"), "UAHM (non-bin)"),
      (("uahm", "binary"), "UAHM (bin)")):
    line = next(l for l in text.splitlines() if l.startswith(f"| {row} |"))
    # mean ± std over 2 seeds, then the thesis's 32-bit number in brackets
    assert re.search(r"\d\.\d{4} ± \d\.\d{4} \(0\.\d{4}\)", line), line
    paper = {"dhnn_ms": 0.2752, "gan_rgb": 0.5184, "gan_ms": 0.5655}.get(
        name, {"nonbinary": 0.6510, "binary": 0.6470}[kind])
    assert line == f"| {row} | {_cell(name, f'{kind}/map@100', paper)} |", line
  # The shallow baselines of the UAHM runs, marked as not in the thesis.
  for base, row in (("random_projection", "LSH, pixels"), ("itq", "ITQ, pixels"),
                    ("itq_efficientnet_lite0", "ITQ, EfficientNet-Lite0 features")):
    line = next(l for l in text.splitlines() if l.startswith(f"| {row} (not in thesis) |"))
    assert re.search(r"\| \d\.\d{4} ± \d\.\d{4} \|$", line), line
    assert line == f"| {row} (not in thesis) | {_cell('uahm', f'{base}/map@100')} |", line


def test_other_tables_reuse_finished_runs(finished_runs, run_cli):
  root = finished_runs
  out = run_cli("--table=5.8", "--seeds=2", f"--workdir={root}", *TINY, module="rsh.reproduce")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stderr.count("reusing") == 8 and "map@100=" not in out.stderr
  assert "precision@20" in out.stdout
  assert f"| UAHM (bin) | {_cell('uahm', 'binary/precision@20', 0.6367)} |" in out.stdout
  out = run_cli("--table=fig5.14", f"--workdir={root}", *TINY, module="rsh.reproduce")
  assert out.returncode == 0, out.stderr[-3000:]
  assert (root / "fig5_14.png").stat().st_size > 1000
  assert "| UAHM | 2 |" in out.stdout
  assert "| GAN-MS | 1 | — |" in out.stdout  # a GAN baseline has no codes
  # The thesis figure is MAP@all; random projection is its reference level.
  assert "MAP@all (codes)" in out.stdout and "| random projection (32 bits, pixels) |" in out.stdout


def test_a_finished_run_longer_than_asked_is_not_reused(finished_runs, run_cli):
  root = finished_runs
  tiny = [a for a in TINY if not a.startswith("--steps")]
  out = run_cli("--table=5.8", "--seeds=2", f"--workdir={root}", *tiny, "--steps=1",
                module="rsh.reproduce")
  assert out.returncode == 2
  assert "finished run of 2 steps, more than the 1 asked for" in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr


def test_a_finished_run_of_another_config_is_not_reused(finished_runs, run_cli):
  root = finished_runs
  out = run_cli("--table=5.7", "--seeds=2", f"--workdir={root}", *TINY, "--set=optim.lr=0.5",
                module="rsh.reproduce")
  assert out.returncode == 2 and "optim.lr" in out.stderr, out.stderr[-2000:]
  assert "reusing" not in out.stderr


def _table_56(tmp_path, monkeypatch, run_cli):
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "cache"))
  out = run_cli("--table=5.6", f"--workdir={tmp_path}", *TINY, module="rsh.reproduce")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [l for l in out.stdout.splitlines() if l.startswith("| ") and "features" not in l]
  assert len(rows) == 4
  for row in rows:
    acc, iou = re.findall(r"(\d\.\d{4}) \(", row)
    assert 0.0 < float(acc) <= 1.0 and 0.0 < float(iou) <= 1.0, row
  return rows


def test_table_56_reports_accuracy_and_iou(tmp_path, monkeypatch, run_cli):
  # The CNN's features stand in as 4x4-pooled RGB (the real backbone is the slow
  # test's): the table's SSMs, rows and numbers are built as in a real run.
  from rsh import features
  calls = []

  def pooled_rgb(backbone, rgb, **kw):
    calls.append((backbone, rgb.shape))
    n, h, w, _ = rgb.shape
    return rgb.reshape(n, 4, h // 4, 4, w // 4, 3).mean((2, 4)).reshape(n, -1)

  monkeypatch.setattr(features, "extract", pooled_rgb)
  rows = _table_56(tmp_path, monkeypatch, run_cli)
  assert rows[0].startswith("| EfficientNet-Lite0 (stands in for Inception-v3) | ")
  # The CNN rows (alone, and fused with histograms) read the training images' RGB.
  assert calls == [("efficientnet_lite0", (100, 64, 64, 3))] * 2


@pytest.mark.slow
def test_table_56_with_the_real_backbone(tmp_path, monkeypatch, run_cli):
  _table_56(tmp_path, monkeypatch, run_cli)


def test_bad_arguments(tmp_path, run_cli):
  out = run_cli("--table=5.7", module="rsh.reproduce")
  assert out.returncode != 0 and "--workdir" in out.stderr
  out = run_cli("--table=9.9", f"--workdir={tmp_path}", module="rsh.reproduce")
  assert out.returncode != 0 and "9.9" in out.stderr


def _reproduce(*args, cache, timeout=900):
  env = {**os.environ, "RSH_CACHE_DIR": str(cache)}
  return subprocess.run([sys.executable, "-m", "rsh.reproduce", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_table_57_trains_every_cell_then_table_58_reuses_them(tmp_path):
  # End to end, in a real process: 8 tiny runs trained, then reused.
  root = tmp_path
  out = _reproduce("--table=5.7", "--seeds=2", f"--workdir={root}", *TINY, cache=root / "cache")
  assert out.returncode == 0, out.stderr[-3000:]
  text = (root / "table_5_7.md").read_text()
  assert text.strip() == out.stdout.strip()
  for row in ("DHNN-MS (bin)", "GAN-RGB (non-bin)", "GAN-MS (non-bin)", "UAHM (non-bin)",
              "UAHM (bin)"):
    line = next(l for l in text.splitlines() if l.startswith(f"| {row} |"))
    assert re.search(r"\d\.\d{4} ± \d\.\d{4} \(0\.\d{4}\)", line), line
  for row in ("LSH, pixels", "ITQ, pixels", "ITQ, EfficientNet-Lite0 features"):
    line = next(l for l in text.splitlines() if l.startswith(f"| {row} (not in thesis) |"))
    assert re.search(r"\| \d\.\d{4} ± \d\.\d{4} \|$", line), line
  runs = sorted(p.name for p in root.iterdir() if (p / "results.json").exists())
  assert runs == sorted(f"{m}_{32}b_seed{s}" for m in MODELS for s in (0, 1))
  out = _reproduce("--table=5.8", "--seeds=2", f"--workdir={root}", *TINY, cache=root / "cache")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stderr.count("reusing") == 8 and "map@100=" not in out.stderr
  assert "precision@20" in out.stdout
  out = _reproduce("--table=fig5.14", f"--workdir={root}", *TINY, cache=root / "cache")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "| UAHM | 2 |" in out.stdout and "| random projection (32 bits, pixels) |" in out.stdout
