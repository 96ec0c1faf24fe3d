"""`python -m rsh.reproduce`: every table runs its cells, reuses them, and prints
ours beside the thesis's numbers (tiny demo protocol, a few steps per run).

The table and reuse tests run the command line in this process over finished
runs written here (config.json, results.json and map_vs_steps.png, what
`run_cell` reads to reuse a run), with known numbers, so each cell's mean ± std
is checked to the digit; the slow test trains every cell for real, end to end.
Every flag mistake is refused before any run (`rsh.runs.run` made to fail the
test), in one `error:` line naming the flag.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import import_cli, one_error_line

REPO = pathlib.Path(__file__).resolve().parents[1]

SETS = ["data.n_per_class=12", "data.n_query=2", "train.batch_size=8", "ssm.n_bins=8",
        "ssm.spatial=none"]
TINY = ["--variant=demo", "--bits=32", "--steps=2", *(f"--set={s}" for s in SETS)]
MODELS = ("dhnn_ms", "gan_ms", "gan_rgb", "uahm")
BASELINES = ("random_projection", "itq", "lsh_efficientnet_lite0", "itq_efficientnet_lite0")


def _value(name: str, seed: int, key: str) -> float:
  """The fabricated number of one cell: distinct per model, metric and seed."""
  return round(0.1 + 0.1 * MODELS.index(name) + 0.003 * (sum(map(ord, key)) % 7) + 0.02 * seed, 6)


def _finished_run(root: pathlib.Path, name: str, seed: int, steps: int = 2, bits: int = 32,
                  extra: dict | None = None) -> None:
  """`root/<name>_<bits>b_seed<seed>` as a finished run of `steps` steps leaves it:
  config.json (the config `--variant=demo --bits=<bits>` and the `--set`s make),
  results.json (metrics and `extra` ones, shallow baselines, an evaluation per
  step), then its figures."""
  reproduce = import_cli("rsh.reproduce")
  from rsh import runs
  config = reproduce._apply(reproduce.load_config(name, f"demo,bits={bits},seed={seed}"), SETS)
  config.train.num_steps = steps
  workdir = root / f"{name}_{bits}b_seed{seed}"
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps(runs.config_to_dict(config)))
  kinds = ("nonbinary",) if name.startswith("gan") else ("binary", "nonbinary")  # no codes
  metric = lambda key: _value(name, seed, key)
  keys = [f"{kind}/{m}" for kind in kinds for m in ("map@100", "precision@20", "map@all")]
  results = {
      "method": name, "bits": bits, "seed": seed, "k": 100, "n": 20,
      "metrics": {**{key: metric(key) for key in keys}, **(extra or {})},
      "history": [{"step": s, **{key: metric(key) - 0.01 * (steps - s) for key in keys}}
                  for s in range(1, steps + 1)],
      "baselines": {} if name != "uahm" else {
          b: {m: metric(f"{b}/{m}") for m in ("map@100", "precision@20", "map@all")}
          for b in BASELINES},
  }
  (workdir / "results.json").write_text(json.dumps(results))
  (workdir / "map_vs_steps.png").write_bytes(b"\x89PNG drawn after results.json")


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


# ----------------------------------------------------------------------------
# Every flag checked before any work: one `error:` line naming it, exit code 2.


@pytest.fixture
def no_training(monkeypatch):
  """`rsh.runs.run` made to fail the test: a mistake is refused before any run."""
  from rsh import runs

  def trained(config, workdir, **kw):
    raise AssertionError(f"a run was started in {workdir}")
  monkeypatch.setattr(runs, "run", trained)


_refused = one_error_line  # exit 2, no traceback, one `error:` line naming each


def _table_57_refused(tmp_path, run_cli, args, *names) -> str:
  """`--table=5.7` into tmp_path/w with `args`: refused, naming `names`, and
  nothing written (tmp_path/w not made)."""
  out = run_cli("--table=5.7", f"--workdir={tmp_path / 'w'}", *args, module="rsh.reproduce")
  line = _refused(out, *names)
  assert not (tmp_path / "w").exists()
  return line


@pytest.mark.parametrize("flag", ["--seeds=0", "--seeds=-1", "--steps=0", "--steps=-5"])
def test_seeds_and_steps_below_one_are_refused(tmp_path, run_cli, no_training, flag):
  # --seeds=0 was a table of "—" cells (exit 0); --steps=0 the variant's own steps.
  _table_57_refused(tmp_path, run_cli, ["--variant=demo", "--bits=32", flag], flag, "not a positive integer")


@pytest.mark.parametrize("bits, why", [
    ("abc", "positive integers"), ("0", "positive integers"), ("-32", "positive integers"),
    ("32,,64", "positive integers"), ("", "positive integers"), ("32,64,32", "twice")])
def test_bits_are_positive_code_lengths_given_once(tmp_path, run_cli, no_training, bits, why):
  # --bits=abc said `invalid literal for int()`; --bits=0 trained 0-bit models.
  line = _table_57_refused(tmp_path, run_cli, ["--variant=demo", f"--bits={bits}"], f"--bits={bits}", why)
  assert "e.g. --bits=32,64,128" in line or why == "twice", line


def _classwise(value: float) -> dict:
  """Table 5.9's metrics of a finished run: each class's MAP@100, and tie-aware."""
  out = {}
  for i, c in enumerate(("AnnualCrop", "Forest")):
    out[f"binary/classwise_map@100/{c}"] = value + 0.01 * i
    out[f"binary/classwise_map@100/tie_aware/{c}"] = value - 0.1 + 0.01 * i
  return out


def test_table_59_is_of_the_code_length_asked_for(tmp_path, monkeypatch, run_cli, no_training):
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "cache"))
  root = tmp_path / "t59"
  _finished_run(root, "uahm", 0, bits=32, extra=_classwise(0.5))
  _finished_run(root, "uahm", 0, bits=128, extra=_classwise(0.25))
  tiny = [a for a in TINY if not a.startswith("--bits")]
  # One --bits: that code length (it was 128 whatever --bits said).
  out = run_cli("--table=5.9", f"--workdir={root}", *tiny, "--bits=32", module="rsh.reproduce")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "reusing" in out.stderr and "uahm_32b_seed0" in out.stderr
  assert "UAHM binary 32 bits (the thesis: 128 bits);" in out.stdout, out.stdout
  assert "| AnnualCrop | 0.5000 | 0.4000 | 0.6377 |" in out.stdout, out.stdout
  assert "| Forest | 0.5100 | 0.4100 | 0.9245 |" in out.stdout, out.stdout
  # No --bits: the thesis's 128.
  out = run_cli("--table=5.9", f"--workdir={root}", *tiny, module="rsh.reproduce")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "UAHM binary 128 bits;" in out.stdout and "| AnnualCrop | 0.2500 | 0.1500 |" in out.stdout


@pytest.mark.parametrize("table, default", [("5.9", "128"), ("fig5.14", "64"), ("4.4", "32")])
def test_a_table_of_one_code_length_refuses_several(tmp_path, run_cli, no_training, table,
                                                    default):
  # Several --bits were ignored: Table 5.9 ran 128 bits, Fig. 5.14 64.
  out = run_cli(f"--table={table}", f"--workdir={tmp_path / 'w'}", "--variant=demo",
                "--bits=32,128", module="rsh.reproduce")
  _refused(out, "--bits=32,128", f"--table={table}", f"--bits={default}")
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("args, names", [
    (["--variant=small", "--data_dir={tmp}/nowhere"], ["--data_dir=", "nowhere",
                                                       "no such directory"]),
    (["--variant=small", "--data_dir={tmp}/a_file"], ["--data_dir=", "a_file",
                                                      "not a directory"]),
    (["--variant=small"], ["--variant=small", "--data_dir"]),
    (["--variant=demo", "--data_dir={tmp}"], ["--data_dir=", "--variant=demo"]),
])
def test_the_data_folder_is_checked_before_any_run(tmp_path, run_cli, no_training, args, names):
  (tmp_path / "a_file").write_text("not a folder")
  args = [a.replace("{tmp}", str(tmp_path)) for a in args]
  _table_57_refused(tmp_path, run_cli, ["--bits=32", *args], *names)


@pytest.mark.parametrize("table, override, names", [
    # GAN-RGB's config has no losses.binary: it was refused after DHNN-MS trained.
    ("5.7", "losses.binary.weight=0.5", ["--set 'losses.binary.weight=0.5'", "no key 'binary'"]),
    # A boolean key took any word but 1 / true as false.
    ("5.9", "model.adversarial=yes", ["--set 'model.adversarial=yes'", "true or false"]),
])
def test_every_set_is_checked_before_any_run(tmp_path, run_cli, no_training, table, override,
                                             names):
  out = run_cli(f"--table={table}", f"--workdir={tmp_path / 'w'}", "--variant=demo",
                "--bits=32", f"--set={override}", module="rsh.reproduce")
  _refused(out, *names)
  assert not (tmp_path / "w").exists()


def test_allow_config_change_reuses_a_run_of_another_config(finished_runs, run_cli, no_training):
  root = finished_runs
  args = ("--table=5.7", "--seeds=2", f"--workdir={root}", *TINY, "--set=optim.lr=0.5")
  # The refusal's advice is a flag of this command.
  _refused(run_cli(*args, module="rsh.reproduce"), "optim.lr", "--allow_config_change")
  out = run_cli(*args, "--allow_config_change", module="rsh.reproduce")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stderr.count("reusing") == 8
  assert f"| UAHM (bin) | {_cell('uahm', 'binary/map@100', 0.6470)} |" in out.stdout


def _pooled_rgb(backbone, rgb, **kw):
  """The CNN's features as 4x4-pooled RGB: the feature baselines without a backbone."""
  n, h, w, _ = rgb.shape
  return rgb.reshape(n, 4, h // 4, 4, w // 4, 3).mean((2, 4)).reshape(n, -1)


@pytest.mark.parametrize("figure", ["missing", "empty", "older than results.json",
                                    "listed, one missing"])
def test_a_finished_run_without_its_figures_is_run_again(finished_runs, run_cli, monkeypatch,
                                                         figure):
  # results.json is written before the figures (map_vs_steps.png first): a run
  # stopped between the two was reused as it was, its figures never drawn.
  from rsh import runs
  run = finished_runs / "uahm_32b_seed1"
  fig = run / "map_vs_steps.png"
  for other in finished_runs.iterdir():  # today's runs list their figures once drawn
    results = json.loads((other / "results.json").read_text())
    if other != run or figure == "listed, one missing":
      names = ["map_vs_steps.png"] + (["retrievals.png"] if other == run else [])
      (other / "results.json").write_text(json.dumps({**results, "figures": names}))
  if figure == "listed, one missing":
    pass  # retrievals.png listed but gone since: drawn again
  elif figure == "missing":
    fig.unlink()
  elif figure == "empty":
    fig.write_bytes(b"")
  else:  # a run resumed for more steps, stopped after its new results.json
    old = (run / "results.json").stat().st_mtime_ns - 10**9
    os.utime(fig, ns=(old, old))
  again = []

  def evaluated(config, workdir, allow_config_change=False, **kw):
    # What runs.run does with a finished run: its final checkpoint evaluated
    # again (the same numbers), results.json and the figures written.
    again.append(pathlib.Path(workdir).name)
    results = runs.load_results(workdir)
    return {**results, "metrics": {**results["metrics"], "map@100": 0.0}}
  monkeypatch.setattr(runs, "run", evaluated)
  out = run_cli("--table=5.7", "--seeds=2", f"--workdir={finished_runs}", *TINY,
                module="rsh.reproduce")
  assert out.returncode == 0, out.stderr[-3000:]
  assert again == ["uahm_32b_seed1"], again
  assert out.stderr.count("reusing") == 7 and "figures not drawn" in out.stderr
  assert f"| UAHM (bin) | {_cell('uahm', 'binary/map@100', 0.6470)} |" in out.stdout


@pytest.mark.slow
def test_a_run_stopped_while_drawing_its_figures_draws_them_when_rerun(tmp_path, monkeypatch,
                                                                       run_cli):
  # The test above, end to end: one real run (about a minute on 2 CPU cores),
  # stopped as it starts drawing its figures.
  from rsh import features, plots
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setattr(features, "extract", _pooled_rgb)
  root = tmp_path / "t59"
  args = ("--table=5.9", f"--workdir={root}", *[a for a in TINY if not a.startswith("--steps")],
          "--steps=1")

  def stopped(*args, **kwargs):
    raise KeyboardInterrupt
  with monkeypatch.context() as m:
    m.setattr(plots, "map_vs_steps", stopped)
    with pytest.raises(KeyboardInterrupt):
      run_cli(*args, module="rsh.reproduce")
  (run,) = root.glob("uahm_*b_seed0")
  assert (run / "results.json").exists() and not (run / "map_vs_steps.png").exists()
  out = run_cli(*args, module="rsh.reproduce")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "reusing" not in out.stderr and "figures not drawn" in out.stderr, out.stderr[-3000:]
  assert (run / "map_vs_steps.png").stat().st_size > 1000
  assert "| AnnualCrop |" in out.stdout
  # Drawn: reused from now on.
  out = run_cli(*args, module="rsh.reproduce")
  assert out.returncode == 0 and "reusing" in out.stderr, out.stderr[-3000:]


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


def test_table_41_prints_is_and_fid_beside_the_thesis(tmp_path, monkeypatch, run_cli,
                                                      no_training):
  """Table 4.1 over two finished generator runs: each model's IS and FID with the
  thesis's in brackets, the backbone named, and the real images' floor row."""
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "cache"))
  reproduce = import_cli("rsh.reproduce")
  from rsh import runs
  root = tmp_path / "t41"
  sets = ["data.n_per_class=12", "data.n_query=2", "train.batch_size=8"]
  for i, name in enumerate(("cdcgan", "acgan")):
    config = reproduce._apply(reproduce.load_config(name, "demo,seed=0"), sets)
    config.train.num_steps = 2
    workdir = root / f"{name}_seed0"
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps(runs.config_to_dict(config)))
    metrics = {f"generated/efficientnet_lite0/{k}": v for k, v in {
        "is": 1.5 + i, "fid": 200.0 - 10 * i, "fid_real_halves": 40.0 + i,
        "is_real": 3.0 + i}.items()}
    results = {"method": "cgan", "name": name, "bits": None, "seed": 0, "metrics": metrics,
               "history": [{"step": 2}], "baselines": {}, "figures": []}
    (workdir / "results.json").write_text(json.dumps(results))
  out = run_cli("--table=4.1", f"--workdir={root}", "--variant=demo", "--steps=2",
                *(f"--set={s}" for s in sets), module="rsh.reproduce")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stderr.count("reusing") == 2
  assert "ours on efficientnet_lite0" in out.stdout and "not the paper's metric" in out.stdout
  assert "| C-DCGAN | 1.5000 (2.3521) | 200.0000 (188.96) |" in out.stdout, out.stdout
  assert "| ACGAN | 2.5000 (2.6371) | 190.0000 (170.85) |" in out.stdout, out.stdout
  assert "| 4.0000 | 41.0000 |" in out.stdout   # the floor row (from the ACGAN run)
  assert (root / "table_4_1.md").read_text().strip() == out.stdout.strip()
  # A table of generators takes no code length.
  out = run_cli("--table=4.1", f"--workdir={root}", "--variant=demo", "--bits=32",
                module="rsh.reproduce")
  assert out.returncode == 2 and "no codes" in out.stderr
