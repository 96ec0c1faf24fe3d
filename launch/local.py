#!/usr/bin/env python3
"""Starts a multi-host rsh run as N CPU processes on this machine.

    python launch/local.py --num_processes=2 -- \\
        --config=configs/uahm.py:smoke --workdir=runs/smoke2

Each process is `python -m rsh.main <the flags after -->` joined to the others by
`jax.distributed` through a coordinator on 127.0.0.1 (a free port unless
--port), with one CPU device each and gloo CPU collectives. It is how the tests
check multi-host training, and a way to try it on a laptop: the numbers are
those of a real multi-host run, the speed is not (the processes share the cores).

Process 0 writes the run's files and its output is shown as it is (its progress
bar included); every other process's lines are shown after `[process i]`.
When one process fails or is killed, the others are stopped too (a process
left alone would wait for its peers forever) and the launcher exits with the
failed one's code; the same command then resumes the run from its last
checkpoint. Ctrl-C stops them all, keeping what they saved.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

# SIGTERM, then SIGKILL after this long: after Ctrl-C / SIGTERM (a checkpoint being
# written is finished first), after a process died (the others wait in a collective
# for a peer that is gone: nothing left to save).
STOP_GRACE_S = 30.0
PEER_LOST_GRACE_S = 2.0


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def commands(num_processes: int, port: int, flags: list[str], python: str) -> list[list[str]]:
  """The command line of each process."""
  return [[python, "-m", "rsh.main", *flags, f"--coordinator_address=127.0.0.1:{port}",
           f"--num_processes={num_processes}", f"--process_id={i}"]
          for i in range(num_processes)]


def environment(base: dict[str, str]) -> dict[str, str]:
  """A process's environment: JAX on the CPU, one device a process, gloo collectives.

  `--xla_force_host_platform_device_count` is dropped from XLA_FLAGS: with CPU
  collectives it can crash (openxla/xla#16430); JAX_NUM_CPU_DEVICES is the way.
  """
  env = dict(base)
  env["JAX_PLATFORMS"] = "cpu"
  env.setdefault("JAX_NUM_CPU_DEVICES", "1")
  env.setdefault("JAX_CPU_COLLECTIVES_IMPLEMENTATION", "gloo")
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags)
  return env


def _die_with_parent() -> None:
  """Linux: the child is killed if the launcher dies (even by SIGKILL)."""
  try:
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def _relay(i: int, stream) -> None:
  """Process i's output, each line after `[process i]`, to the launcher's stderr."""
  for line in iter(stream.readline, b""):
    text = line.decode(errors="replace").rstrip("\r\n").split("\r")[-1]
    sys.stderr.write(f"[process {i}] {text}\n")
    sys.stderr.flush()


def _stop(procs: list[subprocess.Popen], grace: float) -> None:
  for p in procs:
    if p.poll() is None:
      p.send_signal(signal.SIGTERM)
  deadline = time.time() + grace
  for p in procs:
    try:
      p.wait(max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      p.kill()  # blocked in a collective whose peer is gone: SIGTERM cannot reach Python
      p.wait()


def _code(rc: int) -> int:
  return 128 - rc if rc < 0 else rc  # killed by signal s: 128 + s, as a shell says


def launch(num_processes: int, flags: list[str], port: int | None = None,
           python: str = sys.executable) -> int:
  """Runs the N processes to the end; returns the exit code (the first failure's)."""
  port = port or free_port()
  env = environment(os.environ)
  procs, relays = [], []
  for i, cmd in enumerate(commands(num_processes, port, flags, python)):
    out = None if i == 0 else subprocess.PIPE
    p = subprocess.Popen(cmd, env=env, stdout=out, stderr=None if i == 0 else subprocess.STDOUT,
                         preexec_fn=_die_with_parent)
    procs.append(p)
    print(f"launch/local.py: process {i} of {num_processes} is pid {p.pid} "
          f"(coordinator 127.0.0.1:{port})", file=sys.stderr, flush=True)
    if out is not None:
      t = threading.Thread(target=_relay, args=(i, p.stdout), daemon=True)
      t.start()
      relays.append(t)
  stopping = []

  def on_signal(signum, frame):
    stopping.append(signum)
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
  signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)
  code = 0
  try:
    while [p.poll() for p in procs].count(None):  # every one polled, each time
      failed = [(i, p.returncode) for i, p in enumerate(procs)
                if p.returncode not in (None, 0)]
      if failed:
        i, rc = failed[0]
        code = _code(rc)
        print(f"launch/local.py: process {i} exited with code {code}: stopping the others",
              file=sys.stderr, flush=True)
        break
      time.sleep(0.2)
  finally:
    _stop(procs, STOP_GRACE_S if stopping else PEER_LOST_GRACE_S)
    for t in relays:
      t.join(timeout=5)
  if not code:  # all ended by themselves: the first failure's code, if any
    failed = [(i, _code(p.returncode)) for i, p in enumerate(procs) if p.returncode]
    if failed:
      code = failed[0][1]
      print(f"launch/local.py: process {failed[0][0]} exited with code {code}",
            file=sys.stderr, flush=True)
  return code


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  ours, flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (
      argv, [])
  parser = argparse.ArgumentParser(
      prog="launch/local.py", description=__doc__.split("\n\n")[0],
      usage="python launch/local.py --num_processes=N [--port=P] -- <rsh.main flags>")
  parser.add_argument("--num_processes", type=int, required=True,
                      help="how many processes (each with one CPU device)")
  parser.add_argument("--port", type=int, default=None,
                      help="the coordinator's port on 127.0.0.1 (default: a free one)")
  args = parser.parse_args(ours)
  if args.num_processes < 1:
    parser.error(f"--num_processes must be >= 1, got {args.num_processes}")
  if not flags:
    parser.error("give rsh.main's flags after --, e.g. -- --config=configs/uahm.py:smoke "
                 "--workdir=runs/smoke2")
  return launch(args.num_processes, flags, port=args.port)


if __name__ == "__main__":
  sys.exit(main())
