"""What every rsh command line shares: one `error:` line and exit code 2 for
the user's mistakes (RSH_TRACEBACK=1 adds the traceback), absl flag parsing
whose failures say the same in one line (`--help` exits 0), and `exit_now`
for a run stopped by a signal."""

from __future__ import annotations

import errno
import os
import pathlib
import sys
from typing import Callable

from absl import flags

from rsh import platform
from rsh.workdir import free_space

HELP = ("--help", "-h", "--helpshort", "--helpfull", "-?")


def fail(message: str) -> None:
  """One line on stderr and exit code 2: the user's mistake, no traceback."""
  if os.environ.get("RSH_TRACEBACK") and sys.exc_info()[0] is not None:
    import traceback
    traceback.print_exc()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def exit_now(message: str, code: int) -> None:
  """One line on stderr, then exit with `code` at once, skipping the interpreter's
  teardown: after a Ctrl-C mid-compilation XLA's compile threads may still run,
  and tearing the interpreter down under them can crash it (a segfault)."""
  if os.environ.get("RSH_TRACEBACK") and sys.exc_info()[0] is not None:
    import traceback
    traceback.print_exc()
  print(message, file=sys.stderr)
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  os._exit(code)


def _last_line(text: str) -> str:
  """A flag error that embeds a traceback: its own first line and the exception's."""
  lines = [l for l in text.strip().splitlines() if l.strip()]
  if any(l.startswith("Traceback") for l in lines):
    head = lines[0].rstrip(": ")
    return f"{head}: {lines[-1].strip()}"
  return " ".join(l.strip() for l in lines)


def parse_flags(argv, unknown_key: Callable[[list], str | None] = lambda argv: None):
  """absl's flag parsing, with every failure as one `error:` line, exit 2.

  `unknown_key(argv)`: names the override a KeyError/AttributeError came from.
  """
  try:
    return flags.FLAGS(argv)
  except SystemExit:  # absl's --help prints the help, then exits 1: asked for, so 0
    if any(a.split("=")[0] in HELP for a in argv[1:]):
      sys.exit(0)
    raise
  except flags.UnrecognizedFlagError as e:
    fail(f"{e}; see --help")
  except flags.Error as e:
    fail(_last_line(str(e)))
  except (AttributeError, KeyError) as e:  # an override of a key the config lacks
    fail(unknown_key(argv) or f"unknown config key {e}")
  except (TypeError, ValueError) as e:     # an override of the wrong type
    fail(f"bad config override: {e}")


def error_line(e: Exception, workdir: str | None) -> str:
  """The `error:` line of a user's mistake: its message; an OSError names its file,
  a full disk also the free space."""
  if not isinstance(e, OSError):
    return str(e)
  if e.errno == errno.ENOSPC:
    # rsh's own message (a checkpoint's save) says what was being written, else the file.
    what = e.strerror if (e.strerror or "").startswith("no space") else (
        f"no space left on device while writing {e.filename or workdir} "
        f"({free_space(e.filename or workdir)} free)")
    return f"{what}; free space and rerun the same command to resume"
  return f"{e.strerror or e}: {e.filename}" if e.filename else str(e)


def interrupted_line(e: platform.Interrupted, workdir: str | None) -> str:
  """The line of a run stopped by a signal: where, and what a rerun starts from."""
  where = "interrupted" if e.step is None else f"interrupted at step {e.step}"
  saved = saved_step(workdir)
  if saved is None:
    where = "interrupted before training started" if e.step is None else where
    return f"{where}: no checkpoint yet; rerun the same command to start again"
  return (f"{where}: the checkpoint of step {saved} in {pathlib.Path(workdir) / 'checkpoints'} "
          "is kept; rerun the same command to resume")


def saved_step(workdir: str | None) -> int | None:
  """The newest checkpoint in `workdir` (orbax renames a step's folder in once it
  is whole), read without starting orbax."""
  try:
    steps = [int(p.name) for p in (pathlib.Path(workdir) / "checkpoints").iterdir()
             if p.name.isdigit()]
  except (OSError, TypeError):
    return None
  return max(steps, default=None)
