"""Entry point: `python -m rsh.main --config=configs/uahm.py[:arg] --workdir=DIR`.

Any config key can be overridden on the command line, e.g.
`--config.data.source=folder --config.data.dir=/data/EuroSAT_MS`.

    python -m rsh.main --config=configs/uahm.py:demo --workdir=runs/demo
    python -m rsh.main --config=configs/crossmodal.py:example --workdir=runs/cm \\
        --config.train.num_steps=50

A run writes `DIR/config.json` once it has started (a checkpoint restored or a
first step taken), checkpoints while it trains, and `DIR/results.json` (then
the figures) after evaluation. Rerunning the same command resumes it. A
mistake that is the user's to fix (a bad key or value, a missing file, a
workdir in use, a diverged run, a full disk) is one line `error: ...` and exit
code 2; Ctrl-C (SIGINT) or SIGTERM is one line `interrupted ...` saying what
is kept, and exit code 130 or 143. Set RSH_TRACEBACK=1 to see the traceback as
well.
"""

from __future__ import annotations

import logging
import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from rsh import cli
from rsh import platform
from rsh.cli import fail

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Method config file and its argument, e.g. configs/uahm.py:demo "
    "(variants: full, demo, smoke, ...; see the config file's docstring).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs, results and figures; rerun "
    "with the same workdir to resume.")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume into a workdir whose config.json differs from this config (eval.* and "
    "evals.* keys and train.num_steps / *_every may always change).")

# A multi-host run (rsh.distributed): one process per host or accelerator, joined
# by jax.distributed; `launch/` starts them. Without these (or JAX_COORDINATOR_ADDRESS,
# JAX_NUM_PROCESSES, JAX_PROCESS_ID, or a SLURM step / Cloud TPU slice JAX detects),
# one process.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0's coordinator (a multi-host run).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Processes of a multi-host run (all hosts together).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index in [0, --num_processes).")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Join a multi-host run whose coordinator, process count and id JAX "
    "finds itself (a Cloud TPU slice, SLURM, Open MPI); launch/tpu_vm.sh sets it.")

_ALLOW_DATA = flags.DEFINE_bool(
    "allow_data_change", False,
    "Resume into a workdir whose data.json (what its run was trained on: files, labels, "
    "pixels) differs from the data loaded now.")


def _config_arg(argv) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _load_plain(arg: str | None):
  """The config of `path[:arg]`, loaded without overrides (None if it fails)."""
  if not arg:
    return None
  import importlib.util
  path, _, rest = arg.partition(":")
  try:
    spec = importlib.util.spec_from_file_location("rsh_config_for_message", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(rest) if rest else module.get_config()
  except Exception:  # noqa: BLE001 -- only for a better message
    return None


def _unknown_override(argv) -> str | None:
  """The first `--config.a.b=...` whose key the loaded config does not have."""
  config = _load_plain(_config_arg(argv))
  if config is None:
    return None
  for a in argv:
    m = re.match(r"--config\.([^=]+)", a)
    if not m:
      continue
    node, parts = config, m.group(1).split(".")
    for i, part in enumerate(parts):
      keys = list(node.keys()) if hasattr(node, "keys") else None
      if keys is None or part not in keys:
        where = "config" + "".join(f".{p}" for p in parts[:i])
        shown = f"; it has {', '.join(sorted(map(str, keys)))}" if keys else ""
        return f"--config.{m.group(1)}: {where} has no key {part!r}{shown}"
      node = node[part]
  return None


def main(argv):
  # From here to the summary line, SIGINT and SIGTERM unwind the run (its files
  # closed, what it saved kept) and end in one line.
  with platform.stop_on_signals():
    try:
      _main(argv)
    except platform.Interrupted as e:
      cli.exit_now(cli.interrupted_line(e, _WORKDIR.value), e.code)


def _main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
  if _config_arg(sys.argv) is None:
    fail("--config is required, e.g. --config=configs/uahm.py:demo")
  if not _WORKDIR.value:
    fail("--workdir is required, e.g. --workdir=runs/demo")
  try:
    config = _CONFIG.value
    config.get("method")  # a config file that failed to load raises here
  except OSError as e:
    path = _config_arg(sys.argv).split(":")[0]
    reason = "not found" if not os.path.exists(path) else re.sub(r"\s+", " ", str(e))[-300:]
    fail(f"cannot load --config file {path!r}: {reason}")
  # rsh's own progress at INFO; libraries (orbax, absl) only when they warn.
  logging.getLogger().setLevel(logging.WARNING)
  logging.getLogger("rsh").setLevel(logging.INFO)
  try:  # XLA reads its flags when jax's backend starts: before anything runs
    platform.set_cpu_conv(config.train.get("cpu_conv", "eigen"))
    _join()  # before tqdm is imported: it reads TQDM_DISABLE once
  except ValueError as e:
    fail(str(e))
  # Imported here: a bad flag is answered before jax is loaded.
  from rsh import checkpoints
  from rsh import runs
  from rsh import train
  from rsh.workdir import WorkdirLockedError
  platform.quiet_closed_event_loops()
  try:
    results = runs.run(config, _WORKDIR.value, allow_config_change=_ALLOW_CHANGE.value,
                       allow_data_change=_ALLOW_DATA.value)
  except (ValueError, OSError, runs.ConfigMismatchError, train.NonFiniteLossError,
          checkpoints.CheckpointError, WorkdirLockedError) as e:
    # Bad input (or a diverged run, a full disk) is the user's to fix: one
    # clear line, no traceback; a diverged run keeps its last good checkpoint.
    fail(cli.error_line(e, _WORKDIR.value))
  print(runs.summary_line(results))


def _join() -> None:
  """Joins a multi-host run if this is one; a process other than the writer
  then logs only warnings and shows no progress bars (process 0 speaks for all)."""
  from rsh import distributed
  if distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                            detect=_MULTIHOST.value):
    if not distributed.is_writer():
      logging.getLogger("rsh").setLevel(logging.WARNING)
      os.environ["TQDM_DISABLE"] = "1"  # every tqdm bar, the libraries' too


if __name__ == "__main__":
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, _unknown_override))
