"""One run per workdir: an exclusive lock that names its holder; the free
space of its disk, for the message of a full one."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pathlib
import shutil
import socket


class WorkdirLockedError(RuntimeError):
  """Another run holds the workdir."""


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike):
  """Holds `workdir/.lock` (an exclusive `flock`) for the duration of a run.

  The lock file names the holder (pid and host), so a second run in the same
  workdir is refused with a message saying who has it. The kernel drops the
  lock when its holder dies, so a killed run never leaves a stale lock.
  """
  path = pathlib.Path(workdir) / ".lock"
  f = open(path, "a+")
  try:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      f.seek(0)
      holder = f.read().strip() or "another process"
      raise WorkdirLockedError(
          f"{workdir} is in use by {holder} (lock {path}); wait for it to finish, "
          "or use another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
    f.flush()
    yield path
  finally:
    f.close()  # releases the flock


def free_space(path: str | os.PathLike) -> str:
  """The free space of the filesystem holding `path` (or its nearest existing
  parent), in words: "12 KB", "3.4 GB"; "unknown" if it cannot be read."""
  path = pathlib.Path(path).absolute()
  while not path.exists() and path != path.parent:
    path = path.parent
  try:
    free = shutil.disk_usage(path).free
  except OSError:
    return "unknown"
  for unit in ("bytes", "KB", "MB"):
    if free < 1024:
      break
    free /= 1024
  else:
    unit = "GB"
  return f"{free:.0f} {unit}" if free >= 100 else f"{free:.3g} {unit}"
