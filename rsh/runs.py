"""Running one config in one workdir: config.json, the refusal to resume into
another config, then `rsh.experiment.train_and_evaluate` (which writes results.json).

Shared by `rsh.main` (one run) and `rsh.reproduce` (many runs); neither is
imported by anything else.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import ml_collections

from rsh import experiment
from rsh import methods

# Keys that may change between a run and its resumption (how long, how often),
# as opposed to keys that define what is trained.
RESUMABLE_CHANGES = ("train.num_steps", "train.eval_every", "train.log_every",
                     "train.checkpoint_every", "train.progress")


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
  old = _flatten(json.loads(path.read_text()))
  new = _flatten(config_to_dict(config))
  diff = sorted(k for k in set(old) | set(new)
                if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
  if diff and not allow_config_change:
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
    raise ConfigMismatchError(
        f"{workdir} holds a run of a different config ({shown}); use another "
        "--workdir, or --allow_config_change to resume into it anyway")


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
        allow_config_change: bool = False, terms: dict | None = None,
        evaluators: dict | None = None) -> dict:
  """Trains and evaluates `config` in `workdir`; returns and writes results.json.

  `terms`: extra loss terms `{name: fn}` (e.g. from a notebook) that
  `config.losses` may name beside the built-in ones (`rsh.losses.bind`);
  `evaluators`: extra evaluator types `config.evals` may name.
  """
  workdir = pathlib.Path(workdir)
  methods.get(config.method)  # an unknown method fails before anything is written
  check_workdir(config, workdir, allow_config_change)
  workdir.mkdir(parents=True, exist_ok=True)
  experiment.write_json(workdir / "config.json", config_to_dict(config))
  return experiment.train_and_evaluate(config, workdir, terms=terms, evaluators=evaluators)


def load_results(workdir: str | os.PathLike) -> dict | None:
  path = pathlib.Path(workdir) / "results.json"
  return json.loads(path.read_text()) if path.exists() else None


def summary_line(results: dict) -> str:
  """One line: the codes' main numbers, then each baseline's MAP@k."""
  metrics = results.get("metrics", {})
  k, n = results.get("k", 100), results.get("n", 20)
  keys = [key for key in (f"map@{k}", f"precision@{n}", f"nonbinary/map@{k}") if key in metrics]
  # Several retrieval entries (e.g. the cross-modal directions s1_to_s2/...): each one's MAP@k.
  keys += sorted(key for key in metrics if key.endswith(f"/map@{k}") and key.count("/") == 1
                 and not key.startswith(("binary/", "nonbinary/", "ssm/")))
  shown = " ".join(f"{k}={results['metrics'][k]:.4f}" for k in keys)
  names = {"random_projection": "random projection"}
  base = ", ".join(f"{names.get(b, b)} {m[f'map@{k}']:.4f}"
                   for b, m in results.get("baselines", {}).items() if f"map@{k}" in m)
  return (f"{results.get('name', results.get('method'))} ({results.get('variant')}, "
          f"{results.get('bits')} bits): {shown}" + (f"; baselines map@{k}: {base}" if base else ""))
