"""Loading a finished (or interrupted) run back from its workdir, e.g. in a notebook.

    run = restore.load_run("runs/demo")           # config.json + latest checkpoint
    codes = restore.encode(run, "query")["hash"]  # f32[n_query, bits], tanh codes
    images = restore.generate(run, ["River"] * 8)  # a GAN run: images of those classes

A workdir written by `rsh.runs.run` (or `python -m rsh.main`) holds the run's
`config.json` and orbax checkpoints under `checkpoints/`; `load_run` rebuilds
what the runner had: the config, the prepared data (`rsh.data.prepare`, the
same seeded split), the built method (`rsh.methods.get(config.method).build`)
and the latest state (`rsh.checkpoints.latest_state`). Nothing is trained or written.

`config_from_file("configs/uahm.py:demo,bits=32")` reads a config file of the
repository the way `--config=` does, for notebooks that start a run themselves.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
from typing import Any, Mapping

import ml_collections
import numpy as np

from rsh import data as rdata
from rsh import deprecation
from rsh import generated  # a run's added training rows, loaded again
from rsh import method as rmethod
from rsh import runstate

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Run:
  """A run as the runner had it: config, prepared data, built method, state."""
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  data: rdata.Prepared
  method: rmethod.Method
  state: Any            # the method's state pytree (e.g. rsh.update.TrainState)
  step: int             # the step of the restored checkpoint

  @property
  def finished(self) -> bool:
    """Whether the checkpoint is the run's last step (`config.train.num_steps`)."""
    return self.step >= int(self.config.train.num_steps)

  @property
  def results(self) -> dict | None:
    """The workdir's results.json, or None before the run finished."""
    from rsh import runs  # its reader names a damaged file
    return runs.load_results(self.workdir)

  def labels(self, set_name: str) -> np.ndarray:
    """The labels of a named set (`query`, `archive`, `train`, ...), in its row order."""
    return np.asarray(self.data.labels[self.data.indices(set_name)])


def config_from_file(spec: str | os.PathLike) -> ml_collections.ConfigDict:
  """`"configs/uahm.py:demo,bits=32"` -> that file's `get_config("demo,bits=32")`.

  A relative path is looked up from the current directory, then from the
  repository root (so a notebook in `notebooks/` can say `configs/uahm.py`).
  """
  path, _, arg = str(spec).partition(":")
  file = pathlib.Path(path)
  if not file.is_absolute() and not file.exists():
    file = REPO / path
  if not file.exists():
    raise FileNotFoundError(f"no config file {path!r} (looked in {os.getcwd()} and {REPO})")
  module_spec = importlib.util.spec_from_file_location(f"rsh_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


read_config = runstate.read_config


# One reader of checkpoint steps: rsh.checkpoints's.
__getattr__ = deprecation.moved(__name__, {"latest_step": "rsh.checkpoints"})


def load_run(workdir: str | os.PathLike, terms: Mapping[str, Any] | None = None,
             allow_data_change: bool = False) -> Run:
  """Restores the latest checkpoint of `workdir` (see the module docstring).

  `terms`: the extra loss terms the run was trained with (`rsh.runs.run(...,
  terms=)`), needed to build the method again when `config.losses` names one
  that is not registered in `rsh.losses.LOSSES`. The data loaded again must be
  what the run recorded in its `data.json` (`rsh.data.fingerprint`), unless
  `allow_data_change` (then a warning says what differs).

  Raises:
    FileNotFoundError: no such workdir, no config.json, or no checkpoint in it.
    ValueError: config.json is not an rsh config, names an unknown loss term,
      the data changed since the run (`rsh.data.fingerprint.DataChangedError`),
      or no checkpoint can be read (`rsh.checkpoints.CheckpointError`).
  """
  run = runstate.restore(workdir, terms, allow_data_change, prepare=generated.prepare)
  return Run(workdir=pathlib.Path(workdir), config=run.config, data=run.data,
             method=run.method, state=run.state, step=run.step)


def encode(run: Run, set_name: str, view: str | None = None) -> dict[str, np.ndarray]:
  """The method's encoder outputs for a named set, e.g. `{"hash": f32[n, l], "feature": ...}`.

  `view` is the data view encoded (default: the one the run trained on,
  `config.data.input`); a method with one encoder per view (cross-modal) uses
  that view's encoder.
  """
  data = run.data
  data.indices(set_name)  # a clear error for an unknown set
  view = data.view_name(view if view is not None else run.config.data.get("input"))
  enc = run.method.encoder(view)
  return {k: np.asarray(v) for k, v in enc(run.state, data.x(set_name, view)).items()}


def generate(run: Run, labels, seed: int = 0) -> np.ndarray:
  """Images of the classes asked from the run's generator: f32[n, 64, 64, c] in [-1, 1]
  (`Method.generate`; class ids or class names, e.g. `["Highway", "River"]`)."""
  if run.method.generate is None:
    raise ValueError(f"the run in {run.workdir} ({run.config.get('name')}) has no generator")
  names = list(run.data.class_names)
  items = labels.tolist() if isinstance(labels, np.ndarray) else list(labels)
  labels = np.asarray([names.index(l) if isinstance(l, str) and l in names else l
                       for l in items])
  if labels.dtype.kind not in "iu" or labels.ndim != 1 or (
      labels.size and (labels.min() < 0 or labels.max() >= len(names))):
    raise ValueError(f"labels must be class ids in [0, {len(names)}) or class names "
                     f"({', '.join(names)}); got {labels.tolist()!r}")
  return run.method.generate(run.state, labels, seed)
