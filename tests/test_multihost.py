"""Multi-host training on jax.distributed: 2 CPU processes started by `launch/local.py`.

Each config's smoke run is made four ways, with the same global batch:

- `one_device`:    1 process, 1 CPU device (only in the slow test);
- `two_devices`:   1 process, 2 CPU devices (`--xla_force_host_platform_device_count`);
- `two_processes`: 2 processes of 1 device each, joined by jax.distributed (gloo);
- `resumed`:       the same 2 processes, one of them killed with SIGKILL once the
                   first checkpoint is on disk, then the same command again
                   (process 1 of the UAHM run; process 0, the writer and the
                   coordinator, of the cross-modal one).

Tolerances. `two_processes` computes what `two_devices` does, device by device:
the same XLA program on each device's half of the batch, then an all-reduce of
two partial sums (a + b = b + a exactly), so its parameters are required to be
bitwise equal to `two_devices`' and its results.json numbers identical; the
same for `resumed` against `two_processes` (the batch of a step and its key are
pure functions of the step, the state is restored bit for bit). Against
`one_device` the gradient is one sum over 8 rows instead of two sums of 4 then
added: a different rounding. Adam divides each coordinate by its own RMS, so a
parameter whose true gradient is 0 (a convolution's bias before a batch norm)
moves by a full +-lr on round-off alone; each Adam step moves a coordinate by
at most lr * max(1, (1 - b1) / sqrt(1 - b2)) (Kingma & Ba, sec. 2.1), so two such
runs differ by at most twice the sum of those bounds, which is what is asserted.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "local.py"

# The smoke loop: 4 steps, a checkpoint and an evaluation every 2, so a kill once
# checkpoint 2 is on disk lands mid-run (its evaluation, 2 more steps, the figures).
STEPS = 4
LOOP = ["--config.train.log_every=1"]
CONFIGS = {"uahm": "configs/uahm.py:smoke", "crossmodal": "configs/crossmodal.py:smoke"}

# Records, in every process of a run, each file opened for writing or renamed
# into place (the one-writer check); put on PYTHONPATH as `sitecustomize`.
_RECORDER = '''
import builtins, io, os
_log = os.environ.get("RSH_TEST_WRITES")
if _log:
  _open, _replace = builtins.open, os.replace
  def _note(path):
    with _open(_log, "a") as f:
      f.write(f"{os.getpid()} {os.path.abspath(os.fspath(path))}\\n")
  def open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
      _note(file)
    return _open(file, mode, *args, **kwargs)
  def replace(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    _note(dst)
  builtins.open = io.open = open
  os.replace = replace
'''


def _env(devices: int = 1, record: pathlib.Path | None = None) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", RSH_TRACEBACK="1")
  env.pop("JAX_NUM_CPU_DEVICES", None)
  env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices}" if devices > 1
                      else "")
  if record is not None:
    site = record.parent / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_RECORDER)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["RSH_TEST_WRITES"] = str(record)
  return env


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
  """The 2-process runs (whole, killed, resumed) compile the same programs once."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("jax-cache")))
    mp.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    yield


def _flags(name: str, workdir: pathlib.Path) -> list[str]:
  return [f"--config={CONFIGS[name]}", f"--workdir={workdir}", *LOOP,
          "--config.train.progress=True"]


def _check(proc, what: str) -> None:
  assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stdout[-4000:]}"


def _one_process(name: str, workdir: pathlib.Path, devices: int) -> None:
  proc = subprocess.run([sys.executable, "-m", "rsh.main", *_flags(name, workdir)],
                        cwd=REPO, env=_env(devices), capture_output=True, text=True,
                        timeout=600)
  _check(proc, f"the 1-process, {devices}-device run")


def _launch_command(name: str, workdir: pathlib.Path) -> list[str]:
  return [sys.executable, str(LAUNCH), "--num_processes=2", "--", *_flags(name, workdir)]


def _pids(output: str) -> dict[int, int]:
  return {int(i): int(pid) for i, pid in re.findall(r"process (\d+) of 2 is pid (\d+)", output)}


def _two_processes(name: str, workdir: pathlib.Path, record: pathlib.Path) -> str:
  proc = subprocess.run(_launch_command(name, workdir), cwd=REPO, env=_env(record=record),
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        timeout=600)
  _check(proc, "the 2-process run")
  return proc.stdout


def _killed_then_resumed(name: str, workdir: pathlib.Path, victim: int) -> tuple[str, str]:
  """Kills process `victim` (SIGKILL) once checkpoint 2 is on disk, then launches
  the same command again; returns both outputs."""
  log = workdir.parent / f"{workdir.name}-killed.log"
  with open(log, "w") as out:
    proc = subprocess.Popen(_launch_command(name, workdir), cwd=REPO, env=_env(),
                            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not (workdir / "checkpoints" / "2").is_dir() and proc.poll() is None:
      assert time.time() < deadline, "no checkpoint after 300 s"
      time.sleep(0.02)
    pid = _pids(log.read_text())[victim]
    os.kill(pid, signal.SIGKILL)
    rc = proc.wait(timeout=120)
  first = log.read_text()
  assert rc != 0, f"the launcher did not report the killed process:\n{first[-3000:]}"
  assert not (workdir / "results.json").exists(), "the run ended before the kill"
  proc = subprocess.run(_launch_command(name, workdir), cwd=REPO, env=_env(),
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        timeout=600)
  _check(proc, "the resumed 2-process run")
  return first, proc.stdout


# The cross-modal runs are the slow suite's (`pytest -m slow`): the UAHM ones, a GAN
# of two networks, cover the same paths in the default one.
@pytest.fixture(scope="module", params=[
    pytest.param("crossmodal", marks=pytest.mark.slow), "uahm"])
def runs(request, tmp_path_factory):
  """The smoke run of a config, made 1 process x 2 devices and 2 processes."""
  name = request.param
  root = tmp_path_factory.mktemp(f"multihost-{name}")
  out = {"name": name, "root": root}
  out[2] = root / "one-process-2-devices"
  _one_process(name, out[2], 2)
  out["two"] = root / "two-processes"
  out["writes"] = root / "writes.txt"
  out["output"] = _two_processes(name, out["two"], out["writes"])
  return out


def _state(workdir: pathlib.Path):
  from rsh import restore
  run = restore.load_run(workdir)
  return run.step, run.config, jax.device_get(run.state)


def _results(workdir: pathlib.Path) -> dict:
  return json.loads((workdir / "results.json").read_text())


def _numbers(results: dict) -> dict:
  return {k: results[k] for k in ("metrics", "curves", "baselines", "history", "evals")}


def _leaves(tree) -> list[tuple[str, np.ndarray]]:
  return [(jax.tree_util.keystr(p), np.asarray(x))
          for p, x in jax.tree_util.tree_leaves_with_path(tree)]


def _max_differences(a, b) -> dict[str, float]:
  la, lb = _leaves(a), _leaves(b)
  assert [p for p, _ in la] == [p for p, _ in lb]
  return {p: float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
          for (p, x), (_, y) in zip(la, lb) if x.size}


def test_two_processes_equal_one_process_with_the_same_devices(runs):
  step2, _, two = _state(runs["two"])
  step1, _, one = _state(runs[2])
  assert step1 == step2 == STEPS
  differ = {p: d for p, d in _max_differences(one, two).items() if d}
  assert not differ, f"2 processes differ from 1 process x 2 devices: {differ}"
  assert _numbers(_results(runs["two"])) == _numbers(_results(runs[2]))


@pytest.mark.slow
def test_two_processes_within_adams_bound_of_one_device(runs):
  one_device = runs["root"] / "one-process-1-device"
  _one_process(runs["name"], one_device, 1)
  _, config, two = _state(runs["two"])
  _, _, one = _state(one_device)
  o = config.optim
  per_step = float(o.lr) * max(1.0, (1 - float(o.b1)) / math.sqrt(1 - float(o.b2)))
  bound = 2 * STEPS * per_step
  params = {p: d for p, d in _max_differences(one, two).items() if ".params[" in p}
  assert params and max(params.values()) <= bound, (
      f"parameters differ by more than Adam's bound {bound:.3g}: "
      f"{sorted(params.items(), key=lambda kv: -kv[1])[:3]}")


def test_one_writer_and_one_progress_bar(runs):
  out, workdir = runs["output"], runs["two"].resolve()
  pids = _pids(out)
  assert sorted(pids) == [0, 1]
  writes = [line.split(" ", 1) for line in runs["writes"].read_text().splitlines()]
  in_workdir = [(int(pid), pathlib.Path(path)) for pid, path in writes
                if pathlib.Path(path).is_relative_to(workdir)
                and not pathlib.Path(path).is_relative_to(workdir / "checkpoints")]
  by = {pid for pid, _ in in_workdir}
  assert by == {pids[0]}, f"files of the workdir written by pids {by}; process 0 is {pids[0]}"
  results = _results(runs["two"])
  figures = sorted(p.name for p in workdir.glob("*.png"))
  assert figures and results["figures"] == figures
  for name in figures:  # each figure saved once (renamed into place once)
    assert sum(path == workdir / name for _, path in in_workdir) == 1, name
  written = {path.name for _, path in in_workdir}
  assert {"results.json", "config.json", "data.json", "eval_history.jsonl"} <= written
  # The progress bar is process 0's alone; process 1 says nothing but its warnings.
  others = [line for line in out.splitlines() if line.startswith("[process 1]")]
  assert "train:" in out.replace("[process 1]", "")
  assert not [line for line in others if "train:" in line or "step/s" in line]
  assert not [line for line in others if " eval at step " in line]


def test_killed_process_resumes_to_the_same_numbers(runs):
  # The cross-modal run loses process 0: the writer and the coordinator too.
  victim = {"uahm": 1, "crossmodal": 0}[runs["name"]]
  workdir = runs["root"] / "resumed"
  first, again = _killed_then_resumed(runs["name"], workdir, victim)
  assert re.search(r"process \d exited with code \d+: stopping the others", first), first[-2000:]
  assert "resumed from" in again
  _, _, resumed = _state(workdir)
  _, _, two = _state(runs["two"])
  differ = {p: d for p, d in _max_differences(two, resumed).items() if d}
  assert not differ, f"the resumed run differs from the uninterrupted one: {differ}"
  assert _numbers(_results(workdir)) == _numbers(_results(runs["two"]))
