"""rsh.restore (loading a run back from its workdir) and the notebooks in notebooks/.

The notebooks are executed top to bottom with nbclient on the `smoke` config
(parameters come from the RSH_NB_* environment variables their first cell reads);
each takes over a minute on 2 CPU cores, so they are marked slow. Each notebook's
source of truth is the jupytext percent script notebooks/<name>.py, paired with the
.ipynb (`jupytext --sync notebooks/*.py`); a fast test checks the pair agrees.
"""

import json
import os
import pathlib
import sys

import jax
import numpy as np
import pytest

from rsh import checkpoints, experiment, restore, runs
from rsh import data as rdata
from rsh import methods

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SMOKE = "configs/uahm.py:smoke"


# ----------------------------------------------------------------- rsh.restore


def _save_checkpoint(workdir: pathlib.Path, state, step: int) -> None:
  """A checkpoint laid out as rsh.train.run writes it (workdir/checkpoints/<step>)."""
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(
      (workdir / "checkpoints").absolute(),
      options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False))
  manager.save(step, args=ocp.args.StandardSave(state), force=True)
  manager.wait_until_finished()
  manager.close()


def test_load_run_restores_the_checkpoint_and_encodes_named_sets(tmp_path):
  config = restore.config_from_file(SMOKE)
  data = rdata.prepare(config)
  method = methods.get(config.method).build(config, data)
  state = method.init(jax.random.PRNGKey(7))  # not the seed load_run builds with
  # A state no fresh init gives: restoring must read the checkpoint's numbers.
  d = state.nets["discriminator"]
  d = d.replace(params=jax.tree.map(lambda x: 1.5 * x + 0.01, d.params))
  state = state.replace(step=state.step + 3, nets={**state.nets, "discriminator": d})
  experiment.write_json(tmp_path / "config.json", runs.config_to_dict(config))
  _save_checkpoint(tmp_path, state, 3)

  run = restore.load_run(tmp_path)
  assert run.step == 3 and not run.finished and run.results is None
  assert run.config.method == "uahm" and run.config.model.bits == config.model.bits
  np.testing.assert_array_equal(run.data.split.query, data.split.query)
  for a, b in zip(jax.tree.leaves(run.state), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  out = restore.encode(run, "query")
  assert set(out) >= {"hash"}
  assert out["hash"].shape == (len(data.split.query), config.model.bits)
  # The restored run's own encoder (compiled once) on the saved state.
  want = run.method.encode(state, data.x("query"))["hash"]
  np.testing.assert_allclose(out["hash"], want, atol=1e-5)
  assert run.labels("archive").shape == (len(data.split.archive),)
  with pytest.raises(ValueError, match="unknown image set"):
    restore.encode(run, "nope")


def test_load_run_names_the_workdir_when_there_is_nothing_to_load(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent")):
    restore.load_run(tmp_path / "absent")
  with pytest.raises(FileNotFoundError, match=f"{tmp_path} holds no config.json"):
    restore.load_run(tmp_path)
  config = restore.config_from_file(SMOKE)
  experiment.write_json(tmp_path / "config.json", runs.config_to_dict(config))
  with pytest.raises(FileNotFoundError, match=f"{tmp_path} holds no checkpoint"):
    restore.load_run(tmp_path)
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    restore.load_run(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"seed": 0}))
  with pytest.raises(ValueError, match="not an rsh config"):
    restore.load_run(tmp_path)


def test_load_run_asks_for_the_terms_a_run_was_trained_with(tmp_path):
  config = restore.config_from_file(SMOKE)
  config.losses.my_term = dict(  # a term no registry knows
      weight=0.5, on="discriminator", codes="real_hash")
  experiment.write_json(tmp_path / "config.json", runs.config_to_dict(config))
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  with pytest.raises(ValueError, match=r"pass them again: restore.load_run\(workdir, terms="):
    restore.load_run(tmp_path)


def test_config_from_file_reads_a_repository_config_from_anywhere(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = restore.config_from_file("configs/uahm.py:smoke,bits=32")
  assert config.variant == "smoke" and config.model.bits == 32
  with pytest.raises(FileNotFoundError, match="no config file"):
    restore.config_from_file("configs/none.py:smoke")


# ----------------------------------------------------------------- notebooks


def _execute(name: str, tmp_path: pathlib.Path, monkeypatch, timeout: int = 900, **params):
  """Runs notebooks/<name> in `tmp_path` with RSH_NB_* parameters; returns the notebook."""
  import nbclient
  import nbformat
  monkeypatch.setenv("RSH_NB_WORKDIR", str(tmp_path / "work"))
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "cache"))  # the kernel inherits both
  for key, value in params.items():
    monkeypatch.setenv(f"RSH_NB_{key.upper()}", str(value))
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.get("outputs", ()))
  # The kernel is this interpreter (the venv's), not some other python on PATH.
  assert f"python: {sys.executable}" in text, text[:2000]
  return nb, text


def _figures(tmp_path, *names):
  for name in names:
    path = tmp_path / "work" / name
    assert path.exists(), sorted(p.name for p in (tmp_path / "work").iterdir())
    assert path.stat().st_size > 1024, (path, path.stat().st_size)


def test_committed_notebooks_have_no_outputs():
  import nbformat
  names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
  assert names == ["compose_losses.ipynb", "reproduce_tables.ipynb", "retrieval_explorer.ipynb"]
  for name in names:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells[:3]), name
    for cell in nb.cells:
      if cell.cell_type == "code":
        assert not cell.outputs and cell.execution_count is None, name


def _cells(nb):
  """(cell type, source, tags) of each cell; tags too, so `parameters` stays on both sides."""
  return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


def test_each_notebook_matches_its_percent_script():
  """notebooks/<name>.py and <name>.ipynb hold the same cells: edit one, sync the other."""
  import jupytext
  scripts = sorted(p.stem for p in NOTEBOOKS.glob("*.py"))
  assert scripts == sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")), scripts
  for name in scripts:
    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    nb = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    for side in (py, nb):  # both say they are a pair, so `jupytext --sync` keeps them one
      assert side.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", name
    py_cells, nb_cells = _cells(py), _cells(nb)
    assert len(py_cells) == len(nb_cells), (
        f"{name}: {len(py_cells)} cells in the .py, {len(nb_cells)} in the .ipynb; "
        "run `jupytext --sync notebooks/*.py`")
    for i, (a, b) in enumerate(zip(py_cells, nb_cells)):
      assert a == b, (f"{name} cell {i} differs between .py and .ipynb; "
                      f"run `jupytext --sync notebooks/*.py`\n.py:   {a!r}\n.ipynb: {b!r}")


@pytest.mark.slow
def test_compose_losses_notebook(tmp_path, monkeypatch):
  _, text = _execute("compose_losses.ipynb", tmp_path, monkeypatch, config=SMOKE, steps=4)
  _figures(tmp_path, "loss_terms.png", "map_curve.png")
  assert "'d/my_balance'" in text
  history = json.loads((tmp_path / "work" / "results.json").read_text())["history"]
  assert all("train/d/my_balance" in row for row in history)
  # The loss curve of every term, every log_every steps (train_history.jsonl).
  from rsh import histories
  curve = histories.read_train_history(tmp_path / "work")
  assert curve and all("d/my_balance" in row for row in curve)


@pytest.mark.slow
def test_retrieval_explorer_notebook(tmp_path, monkeypatch):
  _execute("retrieval_explorer.ipynb", tmp_path, monkeypatch, config=SMOKE, steps=4,
           queries=3, top_k=5)
  _figures(tmp_path, "retrievals_true_colour.png", "retrievals_false_colour.png",
           "pr_curves.png")
  assert checkpoints.latest_step(tmp_path / "work") == 4


@pytest.mark.slow
def test_reproduce_tables_notebook(tmp_path, monkeypatch):
  tiny = ["data.n_per_class=12", "data.n_query=2", "train.batch_size=8", "ssm.n_bins=8",
          "ssm.spatial=none"]
  _, text = _execute("reproduce_tables.ipynb", tmp_path, monkeypatch, table="5.7",
                     variant="demo", bits=32, steps=2, set=";".join(tiny))
  _figures(tmp_path, "table_5_7_bars.png")
  assert (tmp_path / "work" / "table_5_7.md").exists()
