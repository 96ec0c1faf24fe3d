"""A run that would fail at its end fails at its start; data changed under a
workdir is noticed (issue 30: pooling, code lengths, evaluator prechecks, the
data fingerprint, `rsh.restore.load_run`'s checkpoint fallback)."""

import json
import math
import pathlib
import re
import shutil

import numpy as np
import pytest
import tifffile

from rsh import data as rdata
from rsh import evaluators as revals
from rsh import restore
from rsh import runs
from rsh import shallow
from tests.conftest import one_error_line, with_overrides

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(spec: str, **overrides):
  return with_overrides(restore.config_from_file(spec), overrides)


# ----------------------------------------------------------------------------
# Pooling for any patch size (item 1).


def _pool_reference(x, size):
  """The loop: cell (i, j) averages rows floor(i h / size) .. ceil((i + 1) h / size) - 1."""
  n, h, w, c = x.shape
  out = np.zeros((n, size, size, c))
  for i in range(size):
    for j in range(size):
      r0, r1 = (i * h) // size, math.ceil((i + 1) * h / size)
      c0, c1 = (j * w) // size, math.ceil((j + 1) * w / size)
      out[:, i, j] = x[:, r0:r1, c0:c1].astype(np.float64).mean((1, 2))
  return out.reshape(n, -1)


@pytest.mark.parametrize("h,w,size", [(60, 60, 8), (12, 12, 8), (5, 7, 3), (4, 4, 8),
                                      (120, 120, 7), (16, 16, 8)])
def test_pool_rows_pools_any_patch_size_as_the_loop_does(h, w, size):
  x = np.random.default_rng(0).random((3, h, w, 2)).astype(np.float32)
  got = shallow.pool_rows(x, size)
  assert got.dtype == np.float32 and got.shape == (3, size * size * 2)
  np.testing.assert_allclose(got, _pool_reference(x, size), rtol=1e-5, atol=1e-6)


def test_pool_rows_keeps_the_block_mean_where_the_size_divides():
  x = np.random.default_rng(1).random((2, 64, 64, 3)).astype(np.float32)
  block = x.reshape(2, 8, 8, 8, 8, 3).mean((2, 4)).reshape(2, -1)
  np.testing.assert_array_equal(shallow.pool_rows(x, 8), block)  # bitwise: numbers unchanged


def test_cca_itq_runs_at_start_on_a_patch_size_the_pool_does_not_divide():
  config = _config("configs/crossmodal.py:smoke", **{"data.options.size": 12})
  assert config.evals.cca_itq_s1_to_s2.pool == 8  # a key the user can change
  data = rdata.prepare(config)
  ctx = revals.Context(config=config, data=data, encode=None, ssm=None)
  ev = revals.build({"cca": dict(config.evals.cca_itq_s1_to_s2)}, ctx)["cca"]
  ev.precheck(None)  # the whole computation, before any training
  assert ev.result is not None and 0 <= ev.result["map@20"] <= 1
  assert ev.run(None, True) is ev.result  # computed once


# ----------------------------------------------------------------------------
# Settings refused before step 1 (items 2, 9), each naming its key.


@pytest.mark.parametrize("bits", ["0", "-8", "12"])
@pytest.mark.parametrize("name", ["crossmodal", "duch"])
def test_bad_code_length_of_a_crossmodal_config_is_one_line(tmp_path, run_cli, name, bits):
  out = run_cli(f"--config=configs/{name}.py:smoke", f"--workdir={tmp_path / 'w'}",
                f"--config.model.bits={bits}")
  one_error_line(out, f"config.model.bits must be a positive multiple of 8; got {bits}")
  assert not (tmp_path / "w").exists()


def test_a_view_typo_under_evals_names_its_key(tmp_path, run_cli):
  out = run_cli("--config=configs/crossmodal.py:smoke", f"--workdir={tmp_path / 'w'}",
                "--config.evals.lsh_s1.input=s3")
  one_error_line(out, "config.evals.lsh_s1.input: unknown data view 's3'")


@pytest.mark.parametrize("key,value,message", [
    ("bits", 0, "config.evals.random_codes.bits must be a positive multiple of 8 .*got 0"),
    ("bits", 12, "config.evals.random_codes.bits must be a positive multiple of 8 .*got 12"),
    ("query", "tset", "config.evals.random_codes.query: unknown image set 'tset'"),
])
def test_baseline_settings_are_refused_at_start(key, value, message):
  config = _config("configs/crossmodal.py:smoke")
  config.evals.random_codes[key] = value
  data = rdata.prepare(config)
  ctx = revals.Context(config=config, data=data, encode=None, ssm=None)
  with pytest.raises(ValueError, match=message):
    revals.build({"random_codes": dict(config.evals.random_codes)}, ctx)


def test_a_baseline_that_cannot_be_fitted_is_refused_before_step_1(tmp_path):
  # 64-bit ITQ of 5x5x2 S1 patches (50 dimensions): once an error after training.
  config = _config("configs/crossmodal.py:smoke", **{"data.options.size": 5})
  with pytest.raises(ValueError, match=r"config.evals.itq_s1 \(Itq\): pca: 64 bits need"):
    runs.run(config, tmp_path / "w")
  assert not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------
# Data changed under a workdir (item 4).


def _folder(root: pathlib.Path, n: int = 6) -> None:
  rng = np.random.default_rng(0)
  for c in ("A", "B"):
    (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
      tifffile.imwrite(root / c / f"{c}_{i + 1}.tif",
                       rng.integers(0, 4000, (64, 64, 13)).astype(np.uint16))


def _lsh_on(folder: pathlib.Path):
  return _config("configs/lsh.py:smoke", **{"data.source": "folder", "data.dir": str(folder),
                                             "eval.k": 5, "eval.n": 3, "eval.pr_step": 2})


def test_data_changed_under_a_workdir_is_refused_naming_the_change(tmp_path, monkeypatch):
  from rsh.data import fingerprint  # here: the module is new in issue 30
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "cache"))
  folder, workdir = tmp_path / "eurosat", tmp_path / "w"
  _folder(folder)
  first = runs.run(_lsh_on(folder), workdir)
  recorded = fingerprint.read(workdir)
  assert recorded["rows"] == 12 and first["data_digest"] == recorded["digest"]
  listed = json.loads((workdir / "results.json").read_text())["figures"]  # once all are drawn
  assert "map_vs_steps.png" in listed and all((workdir / name).is_file() for name in listed)
  assert runs.run(_lsh_on(folder), workdir)["metrics"] == first["metrics"]  # same data: resumes

  shutil.copy(folder / "A" / "A_1.tif", folder / "A" / "A_7.tif")  # a file added
  with pytest.raises(fingerprint.DataChangedError,
                     match=r"rows 12 -> 13; files \+1: A/A_7.tif.*--allow_data_change"):
    runs.run(_lsh_on(folder), workdir)
  with pytest.raises(fingerprint.DataChangedError, match=r"files \+1: A/A_7.tif.*"
                     r"allow_data_change=True"):
    restore.load_run(workdir)
  assert len(restore.load_run(workdir, allow_data_change=True).data.labels) == 13
  assert fingerprint.read(workdir) == recorded  # nothing rewritten by a refusal

  (folder / "A" / "A_7.tif").unlink()  # an edit in place: same names, other pixels
  tifffile.imwrite(folder / "B" / "B_2.tif", np.zeros((64, 64, 13), np.uint16))
  with pytest.raises(fingerprint.DataChangedError, match="the pixels differ"):
    runs.run(_lsh_on(folder), workdir)
  changed = runs.run(_lsh_on(folder), workdir, allow_data_change=True)
  assert changed["data_digest"] == fingerprint.read(workdir)["digest"] != recorded["digest"]


def test_a_workdir_from_before_fingerprints_records_one_on_resume(tmp_path, monkeypatch):
  from rsh.data import fingerprint  # here: the module is new in issue 30
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "cache"))
  folder, workdir = tmp_path / "eurosat", tmp_path / "w"
  _folder(folder, n=5)
  runs.run(_lsh_on(folder), workdir)
  (workdir / fingerprint.FILE).unlink()
  runs.run(_lsh_on(folder), workdir)
  assert fingerprint.read(workdir)["rows"] == 10


def test_a_damaged_fingerprint_is_one_clear_error(tmp_path):
  from rsh.data import fingerprint  # here: the module is new in issue 30
  (tmp_path / fingerprint.FILE).write_text("{not json")
  with pytest.raises(rdata.DataError, match="data.json is not valid JSON"):
    fingerprint.check(tmp_path, {"digest": "x"})


# ----------------------------------------------------------------------------
# Awkward but valid settings: each config's smoke run either finishes or is
# refused before step 1 in one line naming a key; never fails after training.

ODD = {"eval.k": 7, "eval.n": 3, "eval.pr_step": 3}
EUROSAT = ("uahm", "gan_ms", "gan_rgb", "dhnn_ms", "lsh", "itq")
CROSSMODAL = ("crossmodal", "sscm", "duch")
AWKWARD = ([(c, {"model.bits": b}) for c in EUROSAT + CROSSMODAL for b in (8, 256)]
           + [(c, ODD) for c in EUROSAT + CROSSMODAL]
           + [(c, {"data.options.size": s}) for c in CROSSMODAL for s in (3, 4, 5, 12, 24, 40, 60)])
FAST = [("crossmodal", {"data.options.size": 12, "model.bits": 8, **ODD}),
        ("itq", {"model.bits": 256}), ("lsh", {"model.bits": 8, **ODD})]


def _has(config, key: str) -> bool:
  node = config
  for part in key.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return False
    node = node[part]
  return True


def _finishes_or_is_refused_at_start(name, overrides, tmp_path, monkeypatch):
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "cache"))
  workdir = tmp_path / "w"
  config = _config(f"configs/{name}.py:smoke", **overrides)
  try:
    results = runs.run(config, workdir)
  except ValueError as e:
    assert not workdir.exists(), f"refused after it started: {e}"
    # It names the setting to change: one overridden, or a config key the user can set.
    named = [k for k in re.findall(r"config\.([\w.]*\w)", str(e)) if _has(config, k)]
    assert named or any(key.rsplit(".", 1)[-1] in str(e) for key in overrides), e
    return
  assert (workdir / "results.json").exists() and results["bits"] == overrides.get(
      "model.bits", results["bits"])


@pytest.mark.parametrize("name,overrides", FAST, ids=[f"{c}-{i}" for i, (c, _) in
                                                      enumerate(FAST)])
def test_awkward_settings_finish_or_are_refused_at_start(name, overrides, tmp_path,
                                                         monkeypatch):
  _finishes_or_is_refused_at_start(name, overrides, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name,overrides", AWKWARD, ids=[
    f"{c}-{'-'.join(f'{k.rsplit(chr(46), 1)[-1]}{v}' for k, v in o.items())}"
    for c, o in AWKWARD])
def test_every_config_with_awkward_settings_finishes_or_is_refused_at_start(
    name, overrides, tmp_path, monkeypatch):
  _finishes_or_is_refused_at_start(name, overrides, tmp_path, monkeypatch)


# ----------------------------------------------------------------------------
# rsh.restore.load_run falls back as rsh.main does (item 8).


def _corrupt(step_dir: pathlib.Path):
  for p in step_dir.rglob("*"):
    if p.is_file() and "ocdbt" in str(p) and p.stat().st_size > 16:
      p.write_bytes(p.read_bytes()[:8])


def test_load_run_falls_back_from_a_damaged_latest_checkpoint(tmp_path, monkeypatch, caplog):
  import logging
  from rsh import checkpoints
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "cache"))
  config = _config("configs/itq.py:smoke", **{"train.num_steps": 4, "train.checkpoint_every": 2,
                                              "train.eval_every": 0})
  runs.run(config, tmp_path / "w")
  _corrupt(tmp_path / "w" / "checkpoints" / "4")
  with caplog.at_level(logging.WARNING, logger="rsh"):
    run = restore.load_run(tmp_path / "w")
  assert run.step == 2 and "checkpoint 4" in caplog.text and "loading step 2" in caplog.text
  assert sorted(p.name for p in (tmp_path / "w" / "checkpoints").iterdir()
                if p.name.isdigit()) == ["2", "4"]  # nothing moved by a reader
  _corrupt(tmp_path / "w" / "checkpoints" / "2")
  with pytest.raises(checkpoints.CheckpointError, match=r"steps 4, 2"):
    restore.load_run(tmp_path / "w")
