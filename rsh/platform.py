"""Process-wide settings, for entry points to apply before any work starts.

`set_cpu_conv` picks XLA:CPU's convolution kernels (an XLA flag read once, when
jax's backend starts); `quiet_closed_event_loops` silences orbax's abandoned
reads for a command-line process; `stop_on_signals` turns SIGINT and SIGTERM
into `Interrupted`. The library itself never calls them: a process-wide
setting is its caller's choice (it only marks, with `signals_held`, what a
signal must not cut in two). This module imports nothing of rsh or jax, so an
entry point can apply it first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading

# XLA:CPU hands convolutions, dots and reductions to YNNPACK by default (jaxlib
# 0.10 on). Its convolution gradients run about 2x slower than XLA's own (Eigen)
# ones on 2 cores, and UAHM's step 1.2x slower (benchmarks/train_step.py
# --cpu_conv=eigen,ynnpack), so "eigen" keeps YNNPACK for dots and reductions
# and gives convolutions back. It is a process-wide XLA flag, read once when jax
# starts its backend: the flag edits XLA's default set (`-individual_convolution`),
# where a per-jit `compiler_options` entry would have to restate the whole set.
CPU_CONV = ("eigen", "ynnpack")
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_EIGEN_CONV_FLAG = f"{_YNN_FLAG}=-individual_convolution"


def _has_ynnpack() -> bool:
  # The flag aborts a jaxlib that does not know it; YNNPACK came with 0.10.
  import jaxlib
  version = tuple(int(p) for p in re.findall(r"\d+", jaxlib.__version__)[:2])
  return version >= (0, 10)


def _backend_started() -> bool:
  from jax._src import xla_bridge  # private, but the only way to ask
  return bool(getattr(xla_bridge, "backends_are_initialized", lambda: True)())


def set_cpu_conv(cpu_conv: str = "eigen") -> bool:
  """Chooses the XLA:CPU convolution kernels of this process (`config.train.cpu_conv`).

  Call it before the first jax computation: `rsh.main`, `rsh.reproduce` and
  the benchmarks do; a notebook or script calls it first itself (the library
  never sets a process-wide flag behind its caller's back). "eigen" (faster on
  CPU) or "ynnpack" (XLA's default). A `--xla_cpu_experimental_ynn_fusion_type` already in
  `XLA_FLAGS` is the user's own choice and is kept. Other backends ignore it.

  Returns:
    Whether convolutions run as asked: False when jax's backend had already
    started with other settings (the choice then applies to a new process).
  """
  if cpu_conv not in CPU_CONV:
    raise ValueError(f"config.train.cpu_conv must be one of {', '.join(CPU_CONV)}; "
                     f"got {cpu_conv!r}")
  flags = os.environ.get("XLA_FLAGS", "")
  if _YNN_FLAG in flags:
    return (_EIGEN_CONV_FLAG in flags) == (cpu_conv == "eigen")
  if cpu_conv == "ynnpack" or not _has_ynnpack():
    return True  # a jaxlib before YNNPACK: its convolutions are XLA's own anyway
  if _backend_started():
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {_EIGEN_CONV_FLAG}".strip()
  return True


def closed_loop_filter(hook):
  """`sys.unraisablehook` without the noise of orbax's abandoned reads ("Event
  loop is closed", or a read error raised again in a collected coroutine)."""
  import traceback

  def unraisable(u):
    if "Event loop is closed" in str(u.exc_value):
      return
    if u.exc_traceback is not None and any(
        "/orbax/" in f.filename for f in traceback.extract_tb(u.exc_traceback)):
      return
    hook(u)
  return unraisable


def quiet_closed_event_loops() -> None:
  """For a command-line process: orbax's reads abandoned by a failed restore may
  be collected as late as interpreter exit, each printing an "Event loop is
  closed" traceback or asyncio's "Task exception was never retrieved"; the
  failure itself is reported in one line. (rsh itself runs no event loop.)"""
  sys.unraisablehook = closed_loop_filter(sys.unraisablehook)
  logging.getLogger("asyncio").setLevel(logging.CRITICAL)


class Interrupted(KeyboardInterrupt):
  """SIGINT (Ctrl-C) or SIGTERM, raised in the main thread under `stop_on_signals`.

  `code`: the exit status shells use for it (128 + the signal's number: 130,
  143); `step`: the training step it stopped at (`rsh.train.run` sets it), None
  outside the training loop.
  """

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum, self.code, self.step = signum, 128 + signum, None


class _Signals:
  """`stop_on_signals`'s state: blocks holding signals off, a signal held, one raised."""
  depth = 0
  held: int | None = None
  raised = False


_SIGNALS = _Signals()


@contextlib.contextmanager
def stop_on_signals():
  """For a command-line process: SIGINT and SIGTERM raise `Interrupted`.

  So a stopped run unwinds (its files closed, its lock released) where SIGTERM
  would kill it outright; inside `signals_held` the signal waits for the block's
  end. A second signal while the first unwinds exits at once, as kill -9 would
  (a workdir survives that too). The previous handlers come back at the end.
  """
  s = _SIGNALS

  def handler(signum, frame):
    del frame
    if s.raised:
      os.write(2, b"interrupted again: exiting at once\n")
      os._exit(128 + signum)
    if s.depth:
      s.held = signum
      return
    s.raised = True
    raise Interrupted(signum)

  if threading.current_thread() is not threading.main_thread():
    yield  # only the main thread may handle signals
    return
  s.held, s.raised = None, False
  old = {n: signal.signal(n, handler) for n in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for n, h in old.items():
      signal.signal(n, h)


@contextlib.contextmanager
def signals_held():
  """Holds `stop_on_signals`'s `Interrupted` off until the block ends (e.g. a
  checkpoint is saved whole first); without `stop_on_signals`, nothing changes."""
  s = _SIGNALS
  s.depth += 1
  try:
    yield
  finally:
    s.depth -= 1
  if not s.depth and s.held is not None:
    signum, s.held = s.held, None
    s.raised = True
    raise Interrupted(signum)
