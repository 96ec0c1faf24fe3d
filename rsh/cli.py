"""What every rsh command line shares: one `error:` line and exit code 2 for
the user's mistakes (RSH_TRACEBACK=1 adds the traceback), and absl flag parsing
whose failures say the same in one line (`--help` exits 0)."""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import flags

HELP = ("--help", "-h", "--helpshort", "--helpfull", "-?")


def fail(message: str) -> None:
  """One line on stderr and exit code 2: the user's mistake, no traceback."""
  if os.environ.get("RSH_TRACEBACK") and sys.exc_info()[0] is not None:
    import traceback
    traceback.print_exc()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


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
