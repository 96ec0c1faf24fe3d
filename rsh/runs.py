"""Running one config in one workdir: config.json, the refusal to resume into
another config, then `rsh.experiment.train_and_evaluate` (which writes results.json).

Shared by `rsh.main` (one run) and `rsh.reproduce` (many runs); neither is
imported by anything else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import re
import shutil
from typing import Any

import ml_collections

from rsh import distributed
from rsh import experiment
from rsh import methods
from rsh.workdir import workdir_lock

log = logging.getLogger(__name__)

# Keys that may change between a run and its resumption (how long, how often,
# how it is evaluated, which CPU kernels run it), as opposed to keys that define
# what is trained. (A workdir from before train.cpu_conv existed resumes too.)
RESUMABLE_CHANGES = ("train.num_steps", "train.eval_every", "train.log_every",
                     "train.checkpoint_every", "train.progress", "train.cpu_conv")
RESUMABLE_PREFIXES = ("eval.", "evals.")
# Keys added to every config after runs were made: absent from an older config.json,
# they were this value (so an older workdir resumes unchanged).
ADDED_DEFAULTS = {"train.sampler": "uniform"}


class ConfigMismatchError(RuntimeError):
  """The workdir holds a run of a different config."""


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def config_to_dict(config) -> dict:
  return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else dict(config)


def check_workdir(config, workdir: pathlib.Path, allow_config_change: bool = False) -> None:
  """Refuses to resume into a workdir trained with a different config."""
  path = workdir / "config.json"
  if not path.exists():
    return
  try:
    old = {**ADDED_DEFAULTS, **_flatten(json.loads(path.read_text()))}
  except (ValueError, UnicodeDecodeError) as e:
    raise ConfigMismatchError(
        f"{path} is not valid JSON ({e}): the workdir's record of its config is damaged; "
        "restore it, or use another --workdir") from None
  new = _flatten(config_to_dict(config))
  diff = sorted(k for k in set(old) | set(new)
                if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES
                and not k.startswith(RESUMABLE_PREFIXES))
  if diff and not allow_config_change:
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
    raise ConfigMismatchError(
        f"{workdir} holds a run of a different config ({shown}); use another "
        "--workdir, or --allow_config_change to resume into it anyway")


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
        allow_config_change: bool = False, terms: dict | None = None,
        evaluators: dict | None = None, allow_data_change: bool = False) -> dict:
  """Trains and evaluates `config` in `workdir`; returns and writes results.json.

  `allow_config_change` / `allow_data_change`: resume into a workdir whose
  config.json / data.json (`rsh.data.fingerprint`) differ from this run's.

  `terms`: extra loss terms `{name: fn}` (e.g. from a notebook) that
  `config.losses` may name beside the built-in ones (`rsh.losses.bind`);
  `evaluators`: extra evaluator types `config.evals` may name.
  """
  workdir = pathlib.Path(workdir)
  methods.get(config.method)  # an unknown method fails before anything is written
  check_workdir(config, workdir, allow_config_change)
  created = _make_workdir(workdir)
  before = set(os.listdir(workdir))
  started = []

  def on_start(step):
    # Only now is the run known to start (restored, or a first finite step):
    # a run that fails at start-up leaves the workdir as it found it.
    experiment.write_json(workdir / "config.json", config_to_dict(config))
    started.append(step)

  # Of a multi-host run's processes, the writer alone holds the lock and tidies up.
  writer = distributed.is_writer()
  try:
    with workdir_lock(workdir) if writer else contextlib.nullcontext():
      try:
        return experiment.train_and_evaluate(config, workdir, terms=terms,
                                             evaluators=evaluators, on_start=on_start,
                                             allow_data_change=allow_data_change)
      except BaseException:
        if not started and writer:
          _undo(workdir, before)
        raise
  finally:
    if (writer and created and not started and workdir.is_dir()
        and not any(workdir.iterdir())):
      workdir.rmdir()


def _make_workdir(workdir: pathlib.Path) -> bool:
  """Creates the workdir (True if it did), or says in one line why it cannot."""
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f"--workdir {workdir} is a file, not a directory")
  created = not workdir.exists()
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ValueError(f"cannot create --workdir {workdir}: {e.strerror or e}") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise ValueError(f"--workdir {workdir} is not writable")
  return created


def _undo(workdir: pathlib.Path, before: set[str]) -> None:
  """Removes what a run that never started wrote (empty checkpoint folder, logs)."""
  for name in set(os.listdir(workdir)) - before:
    path = workdir / name
    ckpt = path.name == "checkpoints" and path.is_dir() and not any(
        p.name.isdigit() for p in path.iterdir())
    if ckpt or name in (".lock", "tensorboard", "eval_history.jsonl", "train_history.jsonl",
                        "pending_eval.json"):
      shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def load_results(workdir: str | os.PathLike) -> dict | None:
  path = pathlib.Path(workdir) / "results.json"
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON ({e}); delete it and the run is "
                     "evaluated again from its final checkpoint") from None


def summary_line(results: dict) -> str:
  """One line: the codes' main numbers, then each baseline's MAP@k."""
  metrics = results.get("metrics", {})
  k, n = results.get("k", 100), results.get("n", 20)
  # The primary entry's own k and n (e.g. MiLAN's leave-one-out mAP@20), else config.eval's.
  own = results.get("protocol", {}).get("retrieval", {})
  kr, nr = own.get("k") or k, own.get("n") or n
  keys = [key for key in (f"map@{kr}", f"precision@{nr}", f"nonbinary/map@{kr}")
          if key in metrics]
  # Several retrieval entries (e.g. the cross-modal directions s1_to_s2/...): each one's
  # MAP at its own k.
  keys += sorted(key for key in metrics if re.fullmatch(r"[^/]+/map@\d+", key)
                 and not key.startswith(("binary/", "nonbinary/", "ssm/")))
  # A generator's IS and FID (generated/<backbone>/is, .../fid).
  keys += sorted(key for key in metrics if re.fullmatch(r"generated/[^/]+/(is|fid|fid_real_halves)",
                                                        key))
  shown = " ".join(f"{k}={results['metrics'][k]:.4f}" for k in keys)
  names = {"random_projection": "random projection"}
  base = ", ".join(f"{names.get(b, b)} {m[f'map@{k}']:.4f}"
                   for b, m in results.get("baselines", {}).items() if f"map@{k}" in m)
  bits = f", {results['bits']} bits" if results.get("bits") else ""
  return (f"{results.get('name', results.get('method'))} ({results.get('variant')}{bits}): "
          f"{shown}" + (f"; baselines map@{k}: {base}" if base else ""))
