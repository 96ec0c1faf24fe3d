"""Orbax checkpoints of a workdir: save, restore (skipping corrupt ones), read back.

A run's checkpoints live in `workdir/checkpoints/<step>`, written synchronously
(a kill never leaves a half-written step in place: orbax renames it in when
complete; the next run removes what a kill left). A checkpoint that cannot be
read while an older one can is moved to `workdir/corrupt_checkpoints/` and the
run resumes from the older one. A save that finds the disk full removes the
files of its partial step and says so in one `OSError(ENOSPC)`.
"""

from __future__ import annotations

import contextlib
import errno
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

from rsh import distributed
from rsh import platform
from rsh import workdir as rworkdir

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
  """No checkpoint of the workdir can be restored into this state."""


def open_manager(path: pathlib.Path, max_to_keep: int, read_only: bool = False):
  """An orbax `CheckpointManager` of `path` that saves synchronously."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=False, cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(path.absolute(), options=options)


def save(manager, step: int, state: Any) -> None:
  """Saves `state` as checkpoint `step` and waits until it is on disk.

  SIGINT/SIGTERM under `platform.stop_on_signals` wait for the save to end. A
  full disk raises OSError(ENOSPC) naming the step, the folder and the space
  left, once (orbax's threads would each log it with a traceback).
  """
  with platform.signals_held():
    try:
      with _quiet_save():
        manager.save(step, args=ocp.args.StandardSave(state), force=True)
        manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 -- orbax/tensorstore wrap OS errors as they like
      if not _no_space(e):
        raise
      directory = pathlib.Path(str(manager.directory))
      # Frees what the partial step took (the next run's manager tidies the rest).
      for partial in directory.glob(f"{step}.orbax-checkpoint-tmp*"):
        shutil.rmtree(partial, ignore_errors=True)
      raise OSError(errno.ENOSPC, f"no space left on device while saving the checkpoint of "
                    f"step {step} to {directory} ({rworkdir.free_space(directory)} free)") from e


def _no_space(e: BaseException | None) -> bool:
  """Whether `e` (or what it wraps) is a full disk: an OSError, or tensorstore's text of one."""
  for _ in range(8):  # a chain of causes, not followed forever
    if e is None:
      return False
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return True
    text = str(e)
    if "No space left on device" in text or f"os_error_code='{errno.ENOSPC}'" in text:
      return True
    e = e.__cause__ or e.__context__
  return False


class _OrbaxThreadErrors(logging.Filter):
  """Drops the error logs of orbax's save threads: the save raises it once."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR or "/orbax/" not in record.pathname


@contextlib.contextmanager
def _quiet_save():
  loggers = [logging.getLogger(n) for n in ("absl", "orbax")]
  quiet = _OrbaxThreadErrors()
  for l in loggers:
    l.addFilter(quiet)
  try:
    yield
  finally:
    for l in loggers:
      l.removeFilter(quiet)


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
  restored, step, errors = _newest_readable(manager, _abstract(state), workdir)
  for bad, e in errors:
    dest = workdir / "corrupt_checkpoints" / f"{bad}-{int(time.time())}"
    if distributed.is_writer():  # every process found it unreadable; one moves it
      dest.parent.mkdir(exist_ok=True)
      shutil.move(str(workdir / "checkpoints" / str(bad)), dest)
    log.warning("checkpoint %d in %s cannot be read (%s): moved to %s; resuming from "
                "step %d", bad, workdir / "checkpoints", _one_line(e), dest, step)
  if errors:
    distributed.barrier("rsh-corrupt-checkpoints-moved")
    manager.reload()
  return restored, step


def _abstract(state):
  """`state`'s shapes and dtypes, each with where it is to be restored: its own
  sharding, else this process's first device. Never the checkpoint's own: a
  checkpoint saved by N processes reads into any other number (a notebook's one)."""
  here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def leaf(x):
    x = ocp.utils.to_shape_dtype_struct(x)
    if getattr(x, "sharding", None) is None:
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here)
    return x
  return jax.tree.map(leaf, state)


def _newest_readable(manager, abstract, workdir: pathlib.Path):
  """(state, step, [(newer unreadable step, its error)]) of the newest checkpoint
  that reads into `abstract`; CheckpointError when none does."""
  steps = sorted(manager.all_steps(), reverse=True)
  errors = []
  for step in steps:
    try:
      with _quiet_orbax():
        return manager.restore(step, args=ocp.args.StandardRestore(abstract)), step, errors
    except Exception as e:  # orbax/tensorstore raise many kinds: each is "unreadable"
      errors.append((step, e))
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
  """Restores the newest readable checkpoint of a workdir into `abstract_state`'s
  structure (None when it has none), moving nothing: an unreadable newer one
  is skipped with a warning, as a run in the workdir would (`restore`), and
  CheckpointError says why when none can be read."""
  path = (pathlib.Path(workdir) / "checkpoints").absolute()
  if not path.exists():
    return None
  manager = open_manager(path, 1, read_only=True)
  try:
    if manager.latest_step() is None:
      return None
    restored, step, errors = _newest_readable(manager, _abstract(abstract_state),
                                              pathlib.Path(workdir))
    for bad, e in errors:
      log.warning("checkpoint %d in %s cannot be read (%s): loading step %d instead (a run "
                  "in the workdir would move it to corrupt_checkpoints/)", bad, path,
                  _one_line(e), step)
    return restored
  finally:
    manager.close()
