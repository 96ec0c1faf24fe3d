"""The command line: a real (smoke) run end to end, and every bad input.

In this process (`cli_main`, tests/conftest.py: the same flag parsing and
`main`), where UAHM's compiled ops are shared with the rest of the suite; the
command line in a process of its own is tests/test_core.py's toy run and
tests/test_bad_inputs.py's."""

import json
import pathlib

import pytest

from tests.conftest import cli_main

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("smoke")
  out = cli_main("--config=configs/uahm.py:smoke", f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


def test_smoke_run_writes_config_results_and_figures(smoke_run):
  workdir, out = smoke_run
  config = json.loads((workdir / "config.json").read_text())
  assert config["method"] == "uahm" and config["model"]["bits"] == 64
  results = json.loads((workdir / "results.json").read_text())
  for key in ("method", "data_source", "bands", "bits", "n_query", "n_archive", "n_train",
              "seed", "metrics"):
    assert key in results, key
  assert results["bands"] == ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                              "B11", "B12"]
  m = results["metrics"]
  for key in ("map@20", "precision@5", "binary/map@20", "nonbinary/map@20", "ssm/accuracy"):
    assert 0.0 <= m[key] <= 1.0, key
  assert "map@20" in results["baselines"]["random_projection"]
  for fig in ("pr_curve.png", "map_vs_steps.png", "generated.png", "retrievals.png"):
    assert (workdir / fig).stat().st_size > 1000, fig
  assert list((workdir / "tensorboard").iterdir())
  assert "map@20=" in out.stdout


def test_refuses_to_resume_into_a_workdir_of_another_config(smoke_run, run_cli):
  workdir, _ = smoke_run
  out = run_cli("--config=configs/uahm.py:smoke", f"--workdir={workdir}",
                "--config.model.bits=32")
  assert out.returncode == 2
  assert "different config" in out.stderr and "model.bits" in out.stderr


def test_rerun_of_a_finished_run_does_not_train_again(smoke_run, run_cli):
  # In the process the run was made in: XLA:CPU's kernels are a process's choice
  # (rsh.platform), and the same weights give the same numbers on the same kernels.
  workdir, _ = smoke_run
  before = json.loads((workdir / "results.json").read_text())
  out = run_cli("--config=configs/uahm.py:smoke", f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-2000:]
  after = json.loads((workdir / "results.json").read_text())
  timeless = lambda m: {k: v for k, v in m.items() if not k.endswith("seconds")}
  # Same weights restored from the final checkpoint: the same codes, the same numbers.
  assert timeless(after["metrics"]) == timeless(before["metrics"])
  assert after["history"] == before["history"]


@pytest.mark.parametrize("args, message", [
    (["--config=configs/uahm.py:smoke", "--config.no_such_key=1"], "no_such_key"),
    (["--config=configs/uahm.py:smoke", "--config.method=nope"], "unknown method 'nope'"),
    (["--config=configs/uahm.py:smoke", "--config.model.bits=12"], "multiple of 8"),
    (["--config=configs/uahm.py:smoke", "--config.data.bands=ms99"], "ms99"),
    (["--config=configs/uahm.py:smoke", "--config.train.batch_size=4096"], "batch_size"),
    (["--config=configs/uahm.py:smoke", "--config.losses.semantic.on=both"], "on must be"),
    (["--config=configs/uahm.py:nosuchvariant"], "nosuchvariant"),
    (["--config=configs/uahm.py:smoke,recipe=best"], "unknown config recipe 'best'"),
    (["--config=configs/uahm.py:smoke", "--config.train.checkpoint_every=-1"],
     "checkpoint_every must be an integer >= 0"),
    (["--config=configs/uahm.py:smoke", "--config.model.d_stats=both"], "d_stats"),
    (["--config=configs/uahm.py:smoke", "--config.losses.binary.codes=real_hsh"],
     "loss term 'binary' reads codes='real_hsh'"),
    (["--config=configs/uahm.py:smoke", "--config.evals.retrieval.codes=hsh"],
     "encoder has no output 'hsh'"),
])
def test_bad_input_is_one_clear_error(tmp_path, run_cli, args, message):
  out = run_cli(*args, f"--workdir={tmp_path / 'w'}")
  assert out.returncode != 0
  assert message in out.stderr, out.stderr[-2000:]


def test_diverged_run_is_one_clear_line_naming_step_and_term(tmp_path, run_cli):
  out = run_cli("--config=configs/uahm.py:smoke", f"--workdir={tmp_path / 'w'}",
                "--config.optim.lr=1e30")
  assert out.returncode == 2, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  line = next(l for l in out.stderr.splitlines() if l.startswith("error:"))
  assert "non-finite loss at step" in line and "adversarial_g" in line, line


def test_unknown_loss_term_is_named():
  from rsh import losses as rlosses
  from rsh.methods import uahm
  import importlib.util
  spec = importlib.util.spec_from_file_location("c", REPO / "configs/uahm.py")
  m = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(m)
  config = m.get_config("smoke")
  config.losses.semantik = dict(weight=0.1, on="discriminator")
  with pytest.raises(ValueError, match="semantik"):
    rlosses.bind(config.losses, nets=uahm.NETS)


def test_full_config_without_eurosat_says_how_to_get_it(tmp_path, run_cli):
  out = run_cli("--config=configs/uahm.py", f"--workdir={tmp_path / 'w'}",
                "--config.data.source=folder", f"--config.data.dir={tmp_path / 'missing'}")
  assert out.returncode == 2
  assert "missing" in out.stderr


def test_default_config_without_eurosat_fails_at_once_saying_how_to_get_it(tmp_path, run_cli):
  # The default source is tfds eurosat/all; an empty tfds data dir has none of it
  # (and without tensorflow-datasets installed the message is the same advice).
  out = run_cli("--config=configs/uahm.py", f"--workdir={tmp_path / 'w'}",
                f"--config.data.dir={tmp_path / 'tfds'}")
  assert out.returncode == 2
  assert "tfds" in out.stderr
  assert "--config.data.source=folder --config.data.dir=" in out.stderr, out.stderr[-2000:]
  assert not (tmp_path / "w" / "checkpoints").exists()
