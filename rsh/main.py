"""Entry point: `python -m rsh.main --config=configs/uahm.py[:arg] --workdir=DIR`.

Any config key can be overridden on the command line, e.g.
`--config.data.source=folder --config.data.dir=/data/EuroSAT_MS`.
Writes `DIR/config.json` before training and `DIR/results.json` after evaluation.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

from rsh import methods
from rsh import runs
from rsh import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Method config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume into a workdir whose config.json differs from this config.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=configs/uahm.py:demo")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  # rsh's own progress at INFO; libraries (orbax, absl) only when they warn.
  logging.getLogger().setLevel(logging.WARNING)
  logging.getLogger("rsh").setLevel(logging.INFO)
  config = _CONFIG.value
  try:
    results = runs.run(config, _WORKDIR.value, allow_config_change=_ALLOW_CHANGE.value)
  except (ValueError, FileNotFoundError, runs.ConfigMismatchError,
          train.NonFiniteLossError) as e:
    # Bad input (or a diverged run) is the user's to fix: one clear line, no
    # traceback; a diverged run keeps its last good checkpoint.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(runs.summary_line(results))


if __name__ == "__main__":
  app.run(main)
