"""`launch/` (local, SLURM, Cloud TPU) and `rsh.distributed`'s single-process behaviour;
the multi-process runs themselves are tests/test_multihost.py."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from rsh import distributed

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"


def _local():
  spec = importlib.util.spec_from_file_location("launch_local", LAUNCH / "local.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_local_commands_and_environment():
  local = _local()
  cmds = local.commands(3, 1234, ["--config=c.py", "--workdir=w"], "py")
  assert [c[-1] for c in cmds] == [f"--process_id={i}" for i in range(3)]
  assert all(c[:5] == ["py", "-m", "rsh.main", "--config=c.py", "--workdir=w"] for c in cmds)
  assert all("--coordinator_address=127.0.0.1:1234" in c and "--num_processes=3" in c
             for c in cmds)
  env = local.environment({"XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_x=1",
                           "JAX_PLATFORMS": "cuda"})
  # The device-count flag crashes CPU collectives (openxla/xla#16430): dropped.
  assert env["XLA_FLAGS"] == "--xla_x=1" and env["JAX_PLATFORMS"] == "cpu"
  assert env["JAX_NUM_CPU_DEVICES"] == "1"
  assert env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] == "gloo"
  assert 0 < local.free_port() < 65536


@pytest.mark.parametrize("argv, message", [
    ([], "--num_processes"),
    (["--num_processes=2"], "give rsh.main's flags after --"),
    (["--num_processes=0", "--", "--config=x"], "--num_processes must be >= 1"),
])
def test_local_refuses_bad_arguments(argv, message):
  proc = subprocess.run([sys.executable, str(LAUNCH / "local.py"), *argv],
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_local_reports_a_failed_process():
  """A process that fails at once (a bad config) stops the launch with its code."""
  proc = subprocess.run([sys.executable, str(LAUNCH / "local.py"), "--num_processes=2", "--",
                         "--config=configs/nonexistent.py", "--workdir=/tmp/never"],
                        capture_output=True, text=True, timeout=120, cwd=REPO)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "cannot load --config file 'configs/nonexistent.py'" in proc.stderr
  assert "exited with code 2" in proc.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_slurm_script_dry_run():
  script = LAUNCH / "slurm.sbatch"
  assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
  env = dict(os.environ, RSH_DRY_RUN="1")
  out = subprocess.run(["bash", str(script), "--config=configs/uahm.py", "--workdir=/s/r u"],
                       capture_output=True, text=True, env=env, timeout=30)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == ("srun --kill-on-bad-exit=1 --cpu-bind=none python -m rsh.main "
                                r"--multihost --config=configs/uahm.py --workdir=/s/r\ u")
  node = subprocess.run(["bash", str(script), "--config=c"], capture_output=True, text=True,
                        env=dict(env, RSH_PER="node", SLURM_GPUS_ON_NODE="4"), timeout=30)
  assert node.stdout.splitlines()[0] == "export JAX_LOCAL_DEVICE_IDS=0,1,2,3"
  bad = subprocess.run(["bash", str(script), "--config=c"], capture_output=True, text=True,
                       env=dict(env, RSH_PER="socket"), timeout=30)
  assert bad.returncode == 2 and "RSH_PER must be gpu or node" in bad.stderr
  assert subprocess.run(["bash", str(script)], capture_output=True, env=env).returncode == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_tpu_vm_script_dry_run():
  script = LAUNCH / "tpu_vm.sh"
  assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
  env = dict(os.environ, RSH_DRY_RUN="1")
  out = subprocess.run(["bash", str(script), "my-tpu", "us-central2-b", "--",
                        "--config=configs/uahm.py", "--workdir=/mnt/runs/u"],
                       capture_output=True, text=True, env=env, timeout=30)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert lines[0].startswith(f"git -C {REPO} archive")
  assert all("--worker=all --zone=us-central2-b" in line for line in lines[1:])
  assert "jax\\[tpu\\]" in lines[2]
  assert lines[3].endswith(r"--multihost\ --config=configs/uahm.py\ --workdir=/mnt/runs/u\ ")
  skip = subprocess.run(["bash", str(script), "t", "z", "--", "--config=c"], text=True,
                        capture_output=True, env=dict(env, RSH_SKIP_INSTALL="1"), timeout=30)
  assert len(skip.stdout.splitlines()) == 1
  for argv in ([], ["t", "z"], ["t", "z", "--config=c"]):
    bad = subprocess.run(["bash", str(script), *argv], capture_output=True, text=True,
                         env=env, timeout=30)
    assert bad.returncode == 2 and "usage:" in bad.stderr


@pytest.mark.parametrize("kwargs, message", [
    ({"num_processes": 2}, "missing: --coordinator_address, --process_id"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2},
     "--process_id must be in [0, --num_processes)"),
    ({"env": {"JAX_NUM_PROCESSES": "two"}}, "JAX_NUM_PROCESSES='two' is not an integer"),
])
def test_initialize_refuses_incomplete_settings(kwargs, message):
  kwargs.setdefault("env", {})
  with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")
                     .replace(")", r"\)")):
    distributed.initialize(**kwargs)


def test_one_process_is_left_alone():
  assert distributed.initialize(env={}) is False
  assert distributed.initialize("h:1", 1, 0, env={}) is False
  assert distributed.initialize(env={"SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"}) is False
  assert distributed.is_writer() and distributed.process_count() == 1
  tree = {"a": np.ones(3)}
  assert distributed.host_local(tree) is tree
  encode = lambda state, rows: {"h": rows}  # noqa: E731
  assert distributed.sharded_encoder(encode) is encode


def test_row_shares_cover_the_rows_in_order():
  for n in (0, 1, 5, 8, 9):
    for count in (1, 2, 3, 4):
      shares = [distributed.row_share(n, i, count) for i in range(count)]
      rows = [r for lo, hi in shares for r in range(lo, hi)]
      assert rows == list(range(n)), (n, count, shares)
      assert max(hi - lo for lo, hi in shares) == -(-n // count)


def test_main_refuses_half_a_multihost_setting(run_cli, tmp_path):
  r = run_cli("--config=configs/uahm.py:smoke", f"--workdir={tmp_path / 'w'}",
              "--num_processes=2")
  assert r.returncode == 2
  assert "missing: --coordinator_address, --process_id" in r.stderr
  assert not (tmp_path / "w").exists()
