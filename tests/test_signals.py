"""A command-line run stopped from outside: Ctrl-C and SIGTERM (mid-run and
mid-compilation) and a full disk end in one line and a conventional exit code,
and the workdir resumes; a finished workdir keeps no pending_eval.json.

Signals and exit hooks need a process of their own: `python -m rsh.main` runs
in a subprocess here, its output in a file (a full pipe could block it), mostly
on the shallow ITQ, which trains within seconds of its start.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh import train

REPO = pathlib.Path(__file__).resolve().parents[1]
ITQ = ("--config=configs/itq.py:smoke", "--config.train.checkpoint_every=5",
       "--config.train.eval_every=10")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """One data cache and one compilation cache for the module's runs."""
  cache = tmp_path_factory.mktemp("cache")
  return dict(os.environ, RSH_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu",
              JAX_COMPILATION_CACHE_DIR=str(cache / "jax"),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def _start(env, log: pathlib.Path, workdir, *flags, prelude: str = ""):
  """`python -m rsh.main --workdir=... flags`, after `prelude` (Python) if given."""
  args = [f"--workdir={workdir}", *flags]
  # With a prelude, `-c` runs what `python -m rsh.main` does after it.
  command = ["-m", "rsh.main", *args] if not prelude else ["-c", "\n".join((
      "import sys", prelude, f"sys.argv = ['rsh.main', *{args!r}]", "from absl import app",
      "from rsh import cli, main",
      "app.run(main.main, flags_parser=lambda a: cli.parse_flags(a, main._unknown_override))"))]
  with open(log, "w") as f:
    return subprocess.Popen([sys.executable, *command], cwd=REPO, env=env, stdout=f,
                            stderr=subprocess.STDOUT)


def _run(env, log, workdir, *flags, prelude: str = "") -> int:
  proc = _start(env, log, workdir, *flags, prelude=prelude)
  try:
    return proc.wait(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def _signal_when(proc, log: pathlib.Path, ready, signum: int, delay: float = 0.0) -> int:
  """Sends `signum` `delay` s after `ready()`; the exit code."""
  try:
    deadline = time.monotonic() + 300
    while not ready():
      assert proc.poll() is None, f"the run ended (exit {proc.returncode}) too soon:\n{_tail(log)}"
      assert time.monotonic() < deadline, f"not ready after 300 s:\n{_tail(log)}"
      time.sleep(0.05)
    time.sleep(delay)
    assert proc.poll() is None, f"the run ended (exit {proc.returncode}) too soon:\n{_tail(log)}"
    proc.send_signal(signum)
    return proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def _tail(log: pathlib.Path, n: int = 3000) -> str:
  return log.read_text(errors="replace")[-n:] if log.exists() else ""


def _last_line(log: pathlib.Path, pattern: str) -> re.Match:
  """The output's last line, matched against `pattern`; nothing looks like a crash."""
  text = log.read_text(errors="replace")
  for bad in ("Traceback", "Fatal Python error", "Exception in thread", "Exception ignored"):
    assert bad not in text, f"{bad!r} in the output:\n{text[-4000:]}"
  # absl's error records (E1206 12:00:00 ...): orbax's threads logging what failed.
  assert not re.search(r"^E\d{4} ", text, re.M), text[-4000:]
  lines = [l for l in text.splitlines() if l.strip()]
  m = re.fullmatch(pattern, lines[-1])
  assert m, f"last line {lines[-1]!r} does not match {pattern!r}:\n{text[-3000:]}"
  return m


def _steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_is_one_line_and_exit_code_and_the_rerun_resumes(env, tmp_path, signum):
  workdir, log = tmp_path / "w", tmp_path / "run.log"
  flags = (*ITQ, "--config.train.num_steps=100000")  # still running when the signal comes
  proc = _start(env, log, workdir, *flags)
  code = _signal_when(proc, log, lambda: (workdir / "checkpoints" / "5").exists(), signum)
  assert code == 128 + signum, f"exit {code}:\n{_tail(log)}"
  m = _last_line(log, rf"interrupted at step (\d+): the checkpoint of step (\d+) in "
                      rf"{re.escape(str(workdir / 'checkpoints'))} is kept; rerun the same "
                      r"command to resume")
  stopped, kept = int(m.group(1)), int(m.group(2))
  assert kept == _steps(workdir)[-1] and 5 <= kept <= stopped, (m.group(0), _steps(workdir))
  assert not list(workdir.glob("checkpoints/*tmp*")), "a half-written checkpoint is left"
  # The same command resumes (run to just past the kept step: it finishes).
  rerun = tmp_path / "rerun.log"
  assert _run(env, rerun, workdir, *ITQ, f"--config.train.num_steps={kept + 2}") == 0, _tail(rerun)
  assert re.search(rf"resumed from .* at step {kept}\b", rerun.read_text()), _tail(rerun)
  assert (workdir / "results.json").exists() and not (workdir / "pending_eval.json").exists()


def test_ctrl_c_while_compiling_is_one_line_and_leaves_the_workdir_as_it_was(env, tmp_path):
  # UAHM compiles for tens of seconds after its SSM is built (the model's
  # initialisation, then its step): the signal comes in the middle of that.
  workdir, log = tmp_path / "w", tmp_path / "run.log"
  proc = _start(env, log, workdir, "--config=configs/uahm.py:smoke")
  code = _signal_when(proc, log, lambda: "SSM built" in log.read_text(), signal.SIGINT, delay=2)
  assert code == 130, f"exit {code}:\n{_tail(log)}"
  _last_line(log, "interrupted before training started: no checkpoint yet; rerun the same "
                  "command to start again")
  assert not workdir.exists(), sorted(p.name for p in workdir.iterdir())  # never started


# Run in the child before rsh.main: the training step carries a long chain of
# operations that XLA takes seconds to compile (its numbers unchanged).
_SLOW_COMPILE = textwrap.dedent("""
    import jax
    import jax.numpy as jnp
    from rsh import train
    jit_step = train.jit_step
    def slow_jit_step(step_fn, mesh):
      def step(state, batch, rng):
        state, metrics = step_fn(state, batch, rng)
        x = jax.random.uniform(rng, (8,))
        for _ in range(3000):
          x = jnp.sin(x) * 1.001 + x[::-1]
        return state, {**metrics, "chain": 0 * jnp.sum(x)}
      return jit_step(step, mesh)
    train.jit_step = slow_jit_step
""")


def test_ctrl_c_while_compiling_the_step_is_one_line_and_no_crash(env, tmp_path):
  # The case that crashed (a segfault as the interpreter tore down under XLA's
  # compile threads, still running): the signal comes 1 s into a compilation
  # of 5 s or more (JAX_LOG_COMPILES says when it starts).
  workdir, log = tmp_path / "w", tmp_path / "run.log"
  proc = _start(dict(env, JAX_LOG_COMPILES="1"), log, workdir, *ITQ, prelude=_SLOW_COMPILE)
  code = _signal_when(proc, log, lambda: "Compiling jit(step)" in log.read_text(), signal.SIGINT,
                      delay=1)
  assert code == 130, f"exit {code}:\n{_tail(log)}"
  _last_line(log, "interrupted at step 0: no checkpoint yet; rerun the same command to start "
                  "again")
  assert not workdir.exists()


# Run in the child before rsh.main: the disk "fills up" at the save of step 10.
# The arrays' writes in orbax's threads fail as tensorstore's do on a full disk,
# and so do tensorboardX's file writes (its thread, its exit hook).
_FULL_DISK = textwrap.dedent("""
    import errno
    import orbax.checkpoint as ocp
    import tensorboardX.record_writer as rw
    from orbax.checkpoint._src.serialization import serialization as ser
    FULL = []
    save, serialize = ocp.CheckpointManager.save, ser.async_serialize_from_host
    def full_save(self, step, *args, **kwargs):
      if step >= 10:
        FULL.append(step)
      return save(self, step, *args, **kwargs)
    async def full_serialize(*args, **kwargs):
      if FULL:
        raise ValueError("RESOURCE_EXHAUSTED: Error writing in OCDBT database: Failed to "
                         "write 58888 bytes to file 22: No space left on device "
                         "[os_error_code='28']")
      return await serialize(*args, **kwargs)
    def full_file(real):
      def write(self, *args):
        if FULL:
          raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args)
      return write
    ocp.CheckpointManager.save = full_save
    ser.async_serialize_from_host = full_serialize
    rw.RecordWriter.write = full_file(rw.RecordWriter.write)
    rw.RecordWriter.flush = full_file(rw.RecordWriter.flush)
""")


def _results(workdir: pathlib.Path) -> str:
  r = json.loads((workdir / "results.json").read_text())
  return json.dumps({k: r[k] for k in ("metrics", "curves", "history", "baselines")},
                    sort_keys=True)


def test_a_full_disk_while_checkpointing_is_one_error_line_and_the_rerun_resumes(env, tmp_path):
  workdir, ref = tmp_path / "w", tmp_path / "ref"
  logs = {n: tmp_path / f"{n}.log" for n in ("full", "rerun", "ref")}
  flags = (*ITQ, "--config.train.num_steps=12")
  assert _run(env, logs["full"], workdir, *flags, prelude=_FULL_DISK) == 2, _tail(logs["full"])
  _last_line(logs["full"], rf"error: no space left on device while saving the checkpoint of "
                           rf"step 10 to {re.escape(str(workdir / 'checkpoints'))} \(\S+ \w+ "
                           r"free\); free space and rerun the same command to resume")
  assert logs["full"].read_text().count("error:") == 1, _tail(logs["full"])
  assert _steps(workdir) == [5] and not list(workdir.glob("checkpoints/*tmp*"))
  # Space freed: the same command resumes from step 5 and ends as a run never stopped.
  assert _run(env, logs["rerun"], workdir, *flags) == 0, _tail(logs["rerun"])
  assert re.search(r"resumed from .* at step 5\b", logs["rerun"].read_text()), _tail(logs["rerun"])
  assert not (workdir / "pending_eval.json").exists()
  assert _run(env, logs["ref"], ref, *flags) == 0, _tail(logs["ref"])
  assert _results(workdir) == _results(ref)


@flax.struct.dataclass
class _Toy:
  step: jax.Array
  w: jax.Array


def _toy_step(state, batch, rng):
  del rng
  return _Toy(step=state.step + 1, w=state.w + jnp.mean(batch["x"])), {"loss": state.w}


def test_a_finished_workdir_keeps_no_pending_eval(tmp_path):
  def run():
    return train.run(workdir=tmp_path, state=_Toy(step=jnp.zeros((), jnp.int32), w=jnp.zeros(())),
                     step_fn=_toy_step, batch_fn=lambda s: {"x": np.ones((2, 3), np.float32)},
                     rng=jax.random.PRNGKey(0), eval_fn=lambda state, step: {"w": float(state.w)},
                     loop=train.LoopConfig(num_steps=4, checkpoint_every=2, eval_every=2,
                                           progress=False))
  run()
  pending = tmp_path / "pending_eval.json"
  assert not pending.exists()
  # A kill between the final evaluation and the removal of its record: the
  # rerun (nothing left to train or evaluate) must not keep it either.
  pending.write_text(json.dumps({"step": 4, "train": {"loss": 3.0}}))
  _, history = run()
  assert [r["step"] for r in history] == [2, 4]
  assert not pending.exists()


def test_a_signal_during_a_checkpoint_save_stops_the_run_once_the_save_is_whole(
    tmp_path, monkeypatch):
  import orbax.checkpoint as ocp
  from rsh import checkpoints, platform
  save = ocp.CheckpointManager.save

  def save_and_signal(self, step, *args, **kwargs):
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode: mid-save
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", save_and_signal)
  state = _Toy(step=jnp.zeros((), jnp.int32), w=jnp.zeros(()))
  with platform.stop_on_signals(), pytest.raises(platform.Interrupted) as stopped:
    train.run(workdir=tmp_path, state=state, step_fn=_toy_step,
              batch_fn=lambda s: {"x": np.ones((2, 3), np.float32)}, rng=jax.random.PRNGKey(0),
              loop=train.LoopConfig(num_steps=4, checkpoint_every=2, progress=False))
  assert (stopped.value.code, stopped.value.step) == (143, 2)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
  assert int(checkpoints.latest_state(tmp_path, state).step) == 2
