"""A workdir's run as the runner had it: its config, data, built method and latest
state (`restore(workdir)`), below the runner so that a run can read another's
(a hashing run reads a finished generator's, `rsh.generated`). Notebooks use
`rsh.restore.load_run`, which wraps it."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Callable, Mapping, NamedTuple

import jax
import ml_collections

from rsh import checkpoints
from rsh import data as rdata
from rsh import features  # noqa: F401  registers the features/<backbone> view
from rsh import method as rmethod
from rsh import methods
from rsh.data import fingerprint


class RunState(NamedTuple):
  config: ml_collections.ConfigDict
  data: rdata.Prepared
  method: rmethod.Method
  state: Any            # the method's state pytree (e.g. rsh.update.TrainState)
  step: int             # the step of the restored checkpoint


def read_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its config.json) as a ConfigDict."""
  workdir = pathlib.Path(workdir)
  if not workdir.is_dir():
    raise FileNotFoundError(f"{workdir} is not a directory: no run to load there")
  path = workdir / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{workdir} holds no config.json: not the workdir of an rsh run "
                            "(rsh.runs.run / python -m rsh.main write one)")
  try:
    raw = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from None
  if not isinstance(raw, dict) or "method" not in raw:
    raise ValueError(f"{path} is not an rsh config (no 'method' key)")
  return ml_collections.ConfigDict(raw)


def restore(workdir: str | os.PathLike, terms: Mapping[str, Any] | None = None,
            allow_data_change: bool = False,
            prepare: Callable[[Any], rdata.Prepared] = rdata.prepare) -> RunState:
  """Restores the latest checkpoint of `workdir` (`rsh.restore.load_run` documents
  the errors); `prepare(config)` loads the data (default `rsh.data.prepare`)."""
  workdir = pathlib.Path(workdir)
  config = read_config(workdir)
  if checkpoints.latest_step(workdir) is None:
    raise FileNotFoundError(f"{workdir} holds no checkpoint ({workdir / 'checkpoints'} is "
                            "missing or empty): train the run first")
  data = prepare(config)
  fingerprint.check(workdir, fingerprint.fingerprint(data), allow_data_change,
                    override="restore.load_run(..., allow_data_change=True)")
  module = methods.get(config.method)
  try:
    method = module.build(config, data, terms=terms)
  except ValueError as e:
    if "unknown loss term" in str(e):
      raise ValueError(f"{e}; if the run in {workdir} was trained with terms of its own, pass "
                       "them again: restore.load_run(workdir, terms={...})") from None
    raise
  # Only the structure is needed to restore into: no parameters are computed.
  abstract = jax.eval_shape(method.init, jax.random.PRNGKey(int(config.seed)))
  state = checkpoints.latest_state(workdir, abstract)
  if state is None:
    raise FileNotFoundError(f"{workdir}: orbax found no finished checkpoint in "
                            f"{workdir / 'checkpoints'}")
  return RunState(config, data, method, state, int(jax.device_get(state.step)))
