"""Orbax checkpoints of a workdir: save, restore (skipping corrupt ones), read back.

A run's checkpoints live in `workdir/checkpoints/<step>`, written synchronously
(a kill never leaves a half-written step in place: orbax renames it in when
complete). A checkpoint that cannot be read while an older one can is moved to
`workdir/corrupt_checkpoints/` and the run resumes from the older one.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pathlib
import shutil
import sys
import time
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp

from rsh import platform

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """No checkpoint of the workdir can be restored into this state."""


def open_manager(path: pathlib.Path, max_to_keep: int, read_only: bool = False):
  """An orbax `CheckpointManager` of `path` that saves synchronously."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(path.absolute(), options=options)


def save(manager, step: int, state: Any) -> None:
  """Saves `state` as checkpoint `step` and waits until it is on disk."""
  manager.save(step, args=ocp.args.StandardSave(state), force=True)
  manager.wait_until_finished()


def close(manager) -> None:
  """Waits for any save in flight, then closes `manager`."""
  manager.wait_until_finished()
  manager.close()


def _one_line(e: BaseException) -> str:
  """The gist of an orbax/tensorstore error: its first line, trimmed."""
  text = str(e).strip().splitlines()
  first = text[0] if text else type(e).__name__
  return f"{type(e).__name__}: {first[:300]}"


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax logs a line per failed read when a restore fails, and its abandoned
  coroutines print "Event loop is closed" once each when collected; the
  caller says what failed in one line instead."""
  names = ("absl", "orbax", "asyncio", "jax._src.distributed")
  loggers = [logging.getLogger(n) for n in names]
  levels = [l.level for l in loggers]
  hook = sys.unraisablehook
  for l in loggers:
    l.setLevel(logging.CRITICAL)
  sys.unraisablehook = platform.closed_loop_filter(hook)
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="coroutine .* was never awaited")
      try:
        yield
      finally:
        gc.collect()  # the abandoned coroutines go now, while the filter is on
  finally:
    sys.unraisablehook = hook
    for l, level in zip(loggers, levels):
      l.setLevel(level)


def restore(manager, state, workdir: pathlib.Path):
  """Restores the newest checkpoint that can be read into `state`'s structure.

  A checkpoint that cannot be read while an older one can is corrupt (a
  config change would break both alike): it is moved to
  `workdir/corrupt_checkpoints/` and the run resumes from the older one,
  saying so. If none can be read, CheckpointError says why, moving nothing.

  Returns:
    (the restored state, its step).
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  steps = sorted(manager.all_steps(), reverse=True)
  errors = []
  for step in steps:
    try:
      with _quiet_orbax():
        restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax/tensorstore raise many kinds: each is "unreadable"
      errors.append((step, e))
      continue
    for bad, e in errors:
      dest = workdir / "corrupt_checkpoints" / f"{bad}-{int(time.time())}"
      dest.parent.mkdir(exist_ok=True)
      shutil.move(str(workdir / "checkpoints" / str(bad)), dest)
      log.warning("checkpoint %d in %s cannot be read (%s): moved to %s; resuming from "
                  "step %d", bad, workdir / "checkpoints", _one_line(e), dest, step)
    if errors:
      manager.reload()
    return restored, step
  shown = ", ".join(str(s) for s in steps)
  raise CheckpointError(
      f"no checkpoint in {workdir / 'checkpoints'} (steps {shown}) can be restored into "
      f"this run's model: {_one_line(errors[0][1])}. If the config changed (a different "
      "model or code length), use another --workdir")


def latest_step(workdir: str | os.PathLike) -> int | None:
  """The step of the workdir's latest checkpoint, or None when it has none."""
  path = (pathlib.Path(workdir) / "checkpoints").absolute()
  if not path.is_dir():
    return None
  manager = open_manager(path, 1, read_only=True)
  try:
    return manager.latest_step()
  finally:
    manager.close()


def latest_state(workdir: str | os.PathLike, abstract_state):
  """Restores the latest checkpoint of a workdir into `abstract_state`'s structure."""
  path = (pathlib.Path(workdir) / "checkpoints").absolute()
  if not path.exists():
    return None
  manager = open_manager(path, 1, read_only=True)
  try:
    if manager.latest_step() is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    with _quiet_orbax():
      return manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
  finally:
    manager.close()
