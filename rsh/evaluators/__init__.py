"""Evaluators, registered by name and configured in `config.evals` (big_vision style).

    config.evals.retrieval = dict(type="retrieval", query="query", archive="archive",
                                  codes="hash", vectors="hash")

builds `EVALUATORS["retrieval"](name, cfg, ctx)`; its `run(state, final)` returns
`{metric: value}`. `type` is a name below or `"package.module:Class"` (any
importable class with the same constructor and methods). What an evaluator
sees is a `Context`: the config, the prepared data, the method's encoder and
what the run built for its loss terms (e.g. the SSM).

Each evaluator says where its numbers go in results.json (`section`:
"metrics", under `prefix`, or "baselines", under its name) and whether it runs
inside the loop every `train.eval_every` (`in_loop`) or only at the end.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Mapping

from rsh.evaluators.base import Baseline, Context, Evaluator, protocol
from rsh.evaluators.baselines import CcaItq, Itq, RandomCodes, Shallow, SsmQuality
from rsh.evaluators.generated import GeneratedQuality
from rsh.evaluators.retrieval import Retrieval

__all__ = ["Baseline", "Context", "Evaluator", "protocol", "Retrieval", "Shallow", "Itq",
           "CcaItq", "RandomCodes", "SsmQuality", "GeneratedQuality", "EVALUATORS", "build"]


EVALUATORS: Mapping[str, type] = {
    "retrieval": Retrieval,
    "lsh": Shallow,
    "itq": Itq,
    "random_codes": RandomCodes,
    "cca_itq": CcaItq,
    "ssm_quality": SsmQuality,
    "generated_quality": GeneratedQuality,
}


# Old type names, for one release.
_RENAMED = {"random_projection": "lsh"}


def build(evals_config: Mapping[str, Any], ctx: Context,
          extra: Mapping[str, type] | None = None) -> dict[str, Evaluator]:
  """`config.evals` -> {name: evaluator}; `extra` adds types (e.g. a notebook's)."""
  known = {**EVALUATORS, **(extra or {})}
  out = {}
  for name, cfg in evals_config.items():
    cfg = dict(cfg)
    kind = str(cfg.pop("type", name))
    if kind in _RENAMED and kind not in known:
      warnings.warn(f"config.evals.{name}.type={kind!r} is now {_RENAMED[kind]!r}",
                    DeprecationWarning, stacklevel=2)
      kind = _RENAMED[kind]
    if kind in known:
      cls = known[kind]
    elif ":" in kind:
      module, _, attr = kind.partition(":")
      try:
        cls = getattr(importlib.import_module(module), attr)
      except (ImportError, AttributeError) as e:
        raise ValueError(f"config.evals.{name}.type: cannot import {kind!r}: {e}") from None
    else:
      raise ValueError(f"config.evals.{name}.type={kind!r} is unknown; known: "
                       f"{', '.join(sorted(known))} (or 'package.module:Class')")
    out[name] = cls(name, cfg, ctx)
    if isinstance(getattr(out[name], "archive", None), str):
      out[name].check_protocol(out[name].archive)
  return out
