"""Every mistake a user can make, explained; nothing lost or left half-written.

At least one case per item of issue 20, across the command lines (`python -m
rsh.main`, `rsh.reproduce`, `rsh.data`: exit code 2, one `error:` line naming
the culprit, no traceback), configs, data readers, the dataset cache,
checkpoints and workdirs (interrupted and concurrent runs), and the retrieval
API (the exception type, and a message naming the argument and value).
"""

import errno
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tifffile

from rsh import checkpoints
from rsh import data as rdata
from rsh import experiment
from rsh import hamming
from rsh import histories
from rsh import metrics
from rsh import protocol
from rsh import ranking
from rsh import runs
from rsh import search
from rsh import shallow
from rsh import train
from rsh import workdir as rworkdir
from rsh.data import cache as rcache
from tests.conftest import one_error_line, with_overrides


# ============================================================================
# Runs, checkpoints, workdirs and the command lines.

REPO = pathlib.Path(__file__).resolve().parents[1]


def _cli(*args, module="rsh.main", timeout=600):
  """`python -m module args` in a subprocess: for what only a real process shows
  (`--help`, what the interpreter prints at exit); the rest runs in process
  (`run_cli`, tests/conftest.py), through the same flag parsing and `main`."""
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout)


_one_error_line = one_error_line


# ----------------------------------------------------------------------------
# The command line.

@pytest.mark.parametrize("args, names", [
    ([], ["--config is required"]),
    (["--config=configs/uahm.py:smoke"], ["--workdir is required"]),
    (["--config=configs/no_such_config.py", "--workdir=W"], ["no_such_config.py", "not found"]),
    (["--config=configs/uahm.py:smokey", "--workdir=W"], ["smokey", "smoke"]),
    (["--config=configs/uahm.py:smoke", "--workdir=W", "--config.no_such_key=1"],
     ["--config.no_such_key", "no key 'no_such_key'"]),
    (["--config=configs/uahm.py:smoke", "--workdir=W", "--config.train.nmu_steps=5"],
     ["config.train has no key 'nmu_steps'", "num_steps"]),
    (["--config=configs/uahm.py:smoke", "--workdir=W", "--config.train.num_steps=ten"],
     ["config.train.num_steps", "ten"]),
    (["--config=configs/uahm.py:smoke", "--workdir=W", "--bogus_flag=1"], ["bogus_flag"]),
    (["--config=configs/uahm.py:smoke", "--workdir=W", "stray"], ["unexpected arguments: stray"]),
])
def test_cli_flag_mistakes_are_one_line_before_anything_is_written(tmp_path, run_cli, args,
                                                                   names):
  args = [a.replace("=W", f"={tmp_path / 'w'}") for a in args]
  _one_error_line(run_cli(*args), *names)
  assert not (tmp_path / "w").exists()


def test_cli_flag_mistake_in_a_real_process(tmp_path):
  # End to end: `python -m rsh.main` itself, absl's app.run included.
  out = _cli("--config=configs/uahm.py:smoke", f"--workdir={tmp_path / 'w'}",
             "--config.train.nmu_steps=5")
  _one_error_line(out, "config.train has no key 'nmu_steps'", "num_steps")
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("override, names", [
    ("--config.train.batch_size=0", ["config.train.batch_size", "got 0"]),
    ("--config.train.num_steps=0", ["config.train.num_steps must be an integer >= 1"]),
    ("--config.eval.k=5000", ["config.eval.k=5000", "archive", "100 images"]),
    ("--config.eval.n=0", ["config.eval.n", ">= 1"]),
    ("--config.eval.pr_step=-5", ["config.eval.pr_step", "-5"]),
])
def test_cli_bad_values_are_refused_before_training_leaving_no_workdir(tmp_path, run_cli,
                                                                       override, names):
  out = run_cli("--config=configs/uahm.py:smoke", f"--workdir={tmp_path / 'w'}", override)
  _one_error_line(out, *names)
  assert "train:" not in out.stderr  # refused before the first step
  assert "eval at step" not in out.stderr  # (the log is on stderr, as in a process)
  assert not (tmp_path / "w").exists()


def test_cli_workdir_that_is_a_file_is_named(tmp_path, run_cli):
  (tmp_path / "f").write_text("x")
  _one_error_line(run_cli("--config=configs/uahm.py:smoke", f"--workdir={tmp_path / 'f'}"),
                  str(tmp_path / "f"), "is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_cli_unwritable_workdir_is_named(tmp_path, run_cli):
  locked = tmp_path / "ro"
  locked.mkdir()
  locked.chmod(0o500)
  try:
    _one_error_line(run_cli("--config=configs/uahm.py:smoke", f"--workdir={locked / 'w'}"),
                    str(locked / "w"))
  finally:
    locked.chmod(0o700)


def test_cli_help_lists_the_flags_with_an_example():
  out = _cli("--help")
  assert out.returncode == 0, out.stderr[-2000:]
  text = out.stdout + out.stderr
  for flag in ("--config", "--workdir", "allow_config_change", "configs/uahm.py:demo"):
    assert flag in text, flag


@pytest.mark.parametrize("args, names", [
    (["--set=train.nope=1"], ["--set 'train.nope=1'", "no key 'nope'"]),
    (["--set=trian.num_steps=1"], ["'trian'"]),
    (["--set=train.num_steps=ten"], ["--set 'train.num_steps=ten'"]),
    (["--set=train.num_steps"], ["expected key=value"]),
])
def test_reproduce_bad_set_overrides_are_named(tmp_path, run_cli, args, names):
  out = run_cli("--table=5.7", "--variant=demo", "--bits=32", f"--workdir={tmp_path / 'w'}",
                *args, module="rsh.reproduce")
  _one_error_line(out, *names)
  assert not (tmp_path / "w").exists()


def test_data_cli_missing_folder_is_named(tmp_path):
  out = _cli("--source=folder", f"--dir={tmp_path / 'nowhere'}", module="rsh.data")
  _one_error_line(out, "nowhere")


# ----------------------------------------------------------------------------
# Runs through the API, on the toy method of tests/test_core.py.

def _toy_config(**changes):
  from tests.test_core import CONFIG
  spec = {}
  exec(CONFIG, spec)
  return with_overrides(spec["get_config"](), changes)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  """One finished run of `_toy_config()`: (its workdir, its results); copy it
  with `_copy_of` to start where a test's own first run would have left off."""
  workdir = tmp_path_factory.mktemp("toy") / "w"
  return workdir, runs.run(_toy_config(), workdir)


def _copy_of(toy_run, dest: pathlib.Path) -> pathlib.Path:
  shutil.copytree(toy_run[0], dest, dirs_exist_ok=True)
  return dest


def test_item1_a_kill_between_checkpoint_and_evaluation_loses_no_evaluation(tmp_path, toy_run):
  # Reference: the uninterrupted run's curve.
  _, ref = toy_run
  # The same run "killed" in its first evaluation (step 3): checkpoint 3 is saved.
  config = _toy_config(**{"train.checkpoint_every": 3})

  class Killed(BaseException):
    pass

  real = experiment._history_row

  def kill(*a, **k):
    raise Killed

  experiment._history_row = kill
  try:
    with pytest.raises(Killed):
      runs.run(config, tmp_path / "w")
  finally:
    experiment._history_row = real
  assert (tmp_path / "w" / "checkpoints" / "3").is_dir()
  assert not (tmp_path / "w" / "eval_history.jsonl").exists()
  results = runs.run(config, tmp_path / "w")
  # The step saved but never evaluated is evaluated on resume, with its training metrics.
  assert [r["step"] for r in results["history"]] == [3, 6]
  assert results["history"] == ref["history"]


def test_item2_incompatible_config_change_keeps_config_json_and_says_why(tmp_path, toy_run):
  _copy_of(toy_run, tmp_path)
  before = (tmp_path / "config.json").read_text()
  with pytest.raises(checkpoints.CheckpointError, match=r"checkpoints.*can be restored"):
    runs.run(_toy_config(**{"model.bits": 32}), tmp_path, allow_config_change=True)
  assert (tmp_path / "config.json").read_text() == before
  # The workdir still resumes with its own config.
  assert runs.run(_toy_config(), tmp_path)["bits"] == 16


def test_item2_a_run_failing_at_start_up_leaves_no_config_json(tmp_path):
  with pytest.raises(ValueError, match="config.train.batch_size=4096 is larger"):
    runs.run(_toy_config(**{"train.batch_size": 4096}), tmp_path / "w")
  assert not (tmp_path / "w").exists()
  # In a workdir the user made: what the run made goes, the rest stays.
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "notes.txt").write_text("keep")
  with pytest.raises(ValueError, match="encoder has no output 'code'"):
    # Found before training (the evaluator's precheck on the initial state).
    runs.run(_toy_config(**{"evals.retrieval.codes": "code"}), tmp_path / "early")
  assert not (tmp_path / "early").exists()
  with pytest.raises(ValueError, match="config.train.batch_size=4096"):
    runs.run(_toy_config(**{"train.batch_size": 4096}), tmp_path / "mine")
  assert sorted(os.listdir(tmp_path / "mine")) == ["notes.txt"]


def test_item3_a_figure_failure_keeps_the_results(tmp_path, monkeypatch, caplog):
  from rsh import plots

  def disk_full(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(plots, "map_vs_steps", disk_full)
  with caplog.at_level(logging.WARNING, logger="rsh"):
    results = runs.run(_toy_config(), tmp_path)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["metrics"] == results["metrics"] and "map@20" in saved["metrics"]
  assert "No space left on device" in caplog.text


def _corrupt(step_dir: pathlib.Path):
  for p in step_dir.rglob("*"):
    if p.is_file() and "ocdbt" in str(p) and p.stat().st_size > 16:
      p.write_bytes(p.read_bytes()[:8])


def test_item4_a_corrupt_latest_checkpoint_falls_back_to_the_older_one(tmp_path, caplog):
  config = _toy_config(**{"train.checkpoint_every": 2, "train.eval_every": 0})
  ref = runs.run(config, tmp_path / "ref")
  work = tmp_path / "w"
  runs.run(_toy_config(**{"train.checkpoint_every": 2, "train.eval_every": 0,
                          "train.num_steps": 4}), work)
  _corrupt(work / "checkpoints" / "4")
  unraisable, hook = [], sys.unraisablehook
  sys.unraisablehook = unraisable.append
  try:
    with caplog.at_level(logging.WARNING, logger="rsh"):
      results = runs.run(config, work)
    import gc
    gc.collect()
  finally:
    sys.unraisablehook = hook
  assert "checkpoint 4" in caplog.text and "resuming from step 2" in caplog.text
  # Orbax's abandoned reads used to print "Event loop is closed" once each.
  assert not [u for u in unraisable if "Event loop" in str(u.exc_value)], unraisable
  assert list((work / "corrupt_checkpoints").iterdir())  # kept aside, not deleted
  assert results["metrics"] == ref["metrics"]


def test_item4_no_readable_checkpoint_is_one_error_moving_nothing(tmp_path):
  config = _toy_config(**{"train.checkpoint_every": 3})
  runs.run(config, tmp_path)
  for step in ("3", "6"):
    _corrupt(tmp_path / "checkpoints" / step)
  with pytest.raises(checkpoints.CheckpointError, match=r"steps 6, 3"):
    runs.run(config, tmp_path)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]


def test_item5_a_second_run_in_a_held_workdir_is_refused_naming_the_holder(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", textwrap.dedent(f"""
          import sys, time
          from rsh.workdir import workdir_lock
          with workdir_lock({str(tmp_path)!r}):
              print("held", flush=True)
              time.sleep(120)
      """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(rworkdir.WorkdirLockedError, match=rf"pid {holder.pid} on host"):
      runs.run(_toy_config(), tmp_path)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "config.json").exists()
  finally:
    holder.kill()
    holder.wait()
  # A killed holder leaves no stale lock.
  assert runs.run(_toy_config(), tmp_path)["bits"] == 16


def test_item9_eval_keys_may_change_on_resume(tmp_path, toy_run):
  _copy_of(toy_run, tmp_path)
  results = runs.run(_toy_config(**{"eval.k": 10, "evals.retrieval.in_loop": False}), tmp_path)
  assert "map@10" in results["metrics"]
  with pytest.raises(runs.ConfigMismatchError, match=r"optim.lr"):
    runs.run(_toy_config(**{"optim.lr": 0.5}), tmp_path)


def test_item9_fewer_steps_than_the_checkpoint_says_what_it_reports(tmp_path, caplog, toy_run):
  _copy_of(toy_run, tmp_path)
  with caplog.at_level(logging.WARNING, logger="rsh"):
    results = runs.run(_toy_config(**{"train.num_steps": 3}), tmp_path)
  assert "past train.num_steps=3" in caplog.text and "step 6" in caplog.text
  assert results["history"][-1]["step"] == 6


@pytest.mark.parametrize("name, reader", [
    ("config.json", lambda w: runs.run(_toy_config(), w)),
    ("eval_history.jsonl", lambda w: runs.run(_toy_config(**{"train.num_steps": 9}), w)),
    ("results.json", runs.load_results),
])
def test_item9_a_truncated_json_file_is_named(tmp_path, toy_run, name, reader):
  _copy_of(toy_run, tmp_path)
  path = tmp_path / name
  path.write_text(path.read_text()[:25])
  with pytest.raises((ValueError, runs.ConfigMismatchError), match=name):
    reader(tmp_path)


def test_item10_two_identical_runs_have_identical_metrics(tmp_path, toy_run):
  _, a = toy_run  # run earlier in this process, in another workdir
  b = runs.run(_toy_config(), tmp_path / "b")
  assert a["metrics"] == b["metrics"] and a["history"] == b["history"]
  assert not [k for k in a["metrics"] if "second" in k or "time" in k]


@flax.struct.dataclass
class _Toy:
  step: jax.Array
  w: jax.Array


def _nan_at_3(state, batch, rng):
  del rng
  loss = jnp.log(2.5 - state.w) + 0 * jnp.mean(batch["x"])
  return _Toy(step=state.step + 1, w=state.w + 1.0), {"loss": loss}


def test_item11_the_summary_writer_is_closed_when_the_loop_raises(tmp_path, monkeypatch):
  import tensorboardX
  closed = []

  class Writer(tensorboardX.SummaryWriter):
    def close(self):
      closed.append(True)
      super().close()

  monkeypatch.setattr(tensorboardX, "SummaryWriter", Writer)
  with pytest.raises(train.NonFiniteLossError, match="step 4"):
    train.run(workdir=tmp_path, state=_Toy(step=jnp.zeros((), jnp.int32), w=jnp.zeros(())),
              step_fn=_nan_at_3, batch_fn=lambda s: {"x": np.ones((2, 3), np.float32)},
              rng=jax.random.PRNGKey(0),
              loop=train.LoopConfig(num_steps=5, log_every=1, progress=False))
  assert closed == [True]


def test_a_diverged_first_step_leaves_no_workdir_and_says_so(tmp_path):
  with pytest.raises(train.NonFiniteLossError, match="no checkpoint had been saved yet"):
    train.run(workdir=tmp_path / "w", state=_Toy(step=jnp.zeros((), jnp.int32),
                                                 w=jnp.full((), 5.0)),
              step_fn=_nan_at_3, batch_fn=lambda s: {"x": np.ones((2, 3), np.float32)},
              rng=jax.random.PRNGKey(0), loop=train.LoopConfig(num_steps=5, progress=False))


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_steps=0), "num_steps must be an integer >= 1.*got 0"),
    (dict(num_steps=-3), "num_steps must be an integer >= 1.*got -3"),
    (dict(num_steps=5, eval_every=-1), "eval_every must be an integer >= 0"),
    (dict(num_steps=5, log_every=1.5), "log_every must be an integer"),
])
def test_loop_settings_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    train.LoopConfig(**kwargs)


def test_cli_resume_into_an_incompatible_checkpoint_is_one_line_and_keeps_config_json(
    tmp_path, toy_run):
  # In a real process: what the interpreter prints at exit is part of the check.
  from tests.test_core import CONFIG
  (tmp_path / "toy.py").write_text(CONFIG)
  args = (f"--config={tmp_path / 'toy.py'}", f"--workdir={tmp_path / 'w'}")
  _copy_of(toy_run, tmp_path / "w")  # a finished run of toy.py
  before = (tmp_path / "w" / "config.json").read_text()
  out = _cli(*args, "--config.model.bits=32", "--allow_config_change")
  _one_error_line(out, str(tmp_path / "w" / "checkpoints"), "stored shape")
  # Orbax's abandoned reads used to add "Event loop is closed" tracebacks.
  for noise in ("Event loop", "Exception ignored", "Task exception", "Traceback"):
    assert noise not in out.stderr, out.stderr[-3000:]
  assert (tmp_path / "w" / "config.json").read_text() == before


def test_every_command_line_in_the_readme_answers_help():
  import re
  table = (REPO / "README.md").read_text().split("## Command lines", 1)[1].split("\n## ", 1)[0]
  commands = re.findall(r"^\| `python ((?:-m \S+)|(?:\S+\.py))` \|.*\| `python \1 [^`]+` \|$",
                        table, re.M)
  assert len(commands) >= 9, commands  # each row has a command and an example of it
  procs = {c: subprocess.Popen([sys.executable, *c.split(), "--help"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for c in commands}
  for c, p in procs.items():
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, (c, out[-2000:])
    assert "usage" in out.lower() or "flags:" in out or c in out, (c, out[-500:])


# ============================================================================
# Data readers and the dataset cache.

_REPO = pathlib.Path(__file__).resolve().parents[1]


def _tiny_folder(root, classes=("A", "B"), n=2, seed=0):
  """`root/<Class>/<Class>_<i>.tif`, 13-band 64x64 uint16; returns {relative path: array}."""
  rng = np.random.default_rng(seed)
  out = {}
  for c in classes:
    (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
      x = rng.integers(0, 5000, (64, 64, 13)).astype(np.uint16)
      tifffile.imwrite(root / c / f"{c}_{i + 1}.tif", x)
      out[f"{c}/{c}_{i + 1}.tif"] = x
  return out


def _entries(cache):
  d = pathlib.Path(cache) / "data"
  return sorted(p.name for p in d.iterdir()) if d.exists() else []


def _host():
  """This host's name as the cache's temporary folders spell it."""
  return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def _flip_last_byte(path):
  data = bytearray(path.read_bytes())
  data[-1] ^= 0xFF
  path.write_bytes(bytes(data))


# -- the cache ----------------------------------------------------------------------


def test_cache_sees_new_content_behind_a_kept_mtime(tmp_path):
  """`cp -p` / `rsync -a` / utime keep size and mtime; the ctime still moves."""
  root, cache = tmp_path / "ms", tmp_path / "cache"
  _tiny_folder(root)
  first = rdata.load("folder", dir=root, cache_dir=cache)
  path = root / "A" / "A_2.tif"
  st = path.stat()
  x = np.full((64, 64, 13), 1234, np.uint16)
  tifffile.imwrite(path, x)
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime back
  assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
  again = rdata.load("folder", dir=root, cache_dir=cache)
  np.testing.assert_array_equal(again.images[1], x)
  np.testing.assert_array_equal(again.images[0], first.images[0])
  assert len(_entries(cache)) == 1  # the stale entry is superseded, not kept


def test_cache_same_size_damage_is_detected_and_repaired(tmp_path, caplog):
  root, cache = tmp_path / "ms", tmp_path / "cache"
  arrays = _tiny_folder(root)
  rdata.load("folder", dir=root, cache_dir=cache)
  (entry,) = _entries(cache)
  images = cache / "data" / entry / "images.npy"
  size = images.stat().st_size
  _flip_last_byte(images)
  assert images.stat().st_size == size
  with caplog.at_level(logging.WARNING, logger="rsh.data.cache"):
    again = rdata.load("folder", dir=root, cache_dir=cache)
  np.testing.assert_array_equal(again.images, np.stack(list(arrays.values())))
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and entry in warnings[0] and "images.npy" in warnings[0]
  # Rewritten from the source, in the same place; and it reads back cleanly.
  assert _entries(cache) == [entry]
  np.testing.assert_array_equal(np.load(images), again.images)
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="rsh.data.cache"):
    rdata.load("folder", dir=root, cache_dir=cache)
  assert not caplog.records


def test_cache_checks_labels_views_and_splits(tmp_path, caplog):
  ds = rdata.load("demo_crossmodal", limit=12, size=8, seed=1)
  entry = rcache.entry_path(tmp_path, "demo_crossmodal", ["bad inputs"])
  for file in ("labels.npy", "view_s1.npy", "splits.npz"):
    rcache.write(entry, ds)
    assert rcache.read(entry) is not None
    _flip_last_byte(entry / file)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rsh.data.cache"):
      assert rcache.read(entry) is None, file
    (message,) = [r.getMessage() for r in caplog.records]
    assert str(entry) in message and file in message


def test_cache_entry_without_checksums_is_not_trusted(tmp_path):
  ds = rdata.load("demo_crossmodal", limit=6, size=8)
  entry = rcache.entry_path(tmp_path, "demo_crossmodal", ["no crc"])
  rcache.write(entry, ds)
  meta = json.loads((entry / "meta.json").read_text())
  assert meta["version"] >= 2 and set(meta["crc32"]) == {
      "images.npy", "labels.npy", "view_s1.npy", "splits.npz"}
  del meta["crc32"]  # as an entry of version 1 was written
  (entry / "meta.json").write_text(json.dumps(meta))
  assert rcache.read(entry) is None


def test_cache_superseded_entries_are_removed(tmp_path):
  a, b, cache = tmp_path / "a", tmp_path / "b", tmp_path / "cache"
  _tiny_folder(a)
  _tiny_folder(b, seed=1)
  rdata.load("folder", dir=a, cache_dir=cache)
  rdata.load("folder", dir=b, cache_dir=cache)
  rgb_like = rdata.load("folder", dir=a, cache_dir=cache, band_names=rdata.EUROSAT_BANDS)
  assert len(_entries(cache)) == 3 and len(rgb_like) == 4
  before = _entries(cache)
  for touch in range(3):  # each touched mtime: one entry replaces another
    os.utime(a / "B" / "B_1.tif", ns=(10**18 + touch, 10**18 + touch))
    rdata.load("folder", dir=a, cache_dir=cache)
    assert len(_entries(cache)) == 3, _entries(cache)
  after = _entries(cache)
  # b's entry and a's entry of other options stay; a's old one is gone.
  assert len(set(before) & set(after)) == 2
  assert not [n for n in after if n.startswith(".")]  # nothing half-removed


def test_cache_temp_folder_names_the_writer(tmp_path, monkeypatch):
  root, cache = tmp_path / "ms", tmp_path / "cache"
  _tiny_folder(root)
  seen = []
  real_save = np.save

  def save(path, *args, **kwargs):
    seen.append(pathlib.Path(path).parent.name)
    return real_save(path, *args, **kwargs)
  monkeypatch.setattr(rcache.np, "save", save)
  rdata.load("folder", dir=root, cache_dir=cache)
  assert seen and seen[0].startswith(".folder-")
  assert f"~{_host()}~{os.getpid()}~" in seen[0]
  assert not [n for n in _entries(cache) if n.startswith(".")]


def test_cache_sweeps_abandoned_temp_folders_only(tmp_path):
  root, cache = tmp_path / "ms", tmp_path / "cache"
  _tiny_folder(root)
  data = cache / "data"
  data.mkdir(parents=True)
  host = _host()
  done = subprocess.Popen([sys.executable, "-c", "pass"])
  done.wait()
  live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  day = 25 * 3600
  try:
    folders = {  # name: (age in seconds, kept?)
        f".folder-{'0' * 24}~{host}~{done.pid}~dead1234": (0, False),
        f".folder-{'1' * 24}~{host}~{live.pid}~live1234": (0, True),
        f".folder-{'2' * 24}~{host}~{os.getpid()}~mine1234": (day, True),
        f".folder-{'3' * 24}~other-host~{done.pid}~away1234": (0, True),
        f".folder-{'4' * 24}~other-host~{done.pid}~gone1234": (day, False),
        f".folder-{'5' * 24}.oldstyle": (0, True),
        f".folder-{'6' * 24}.oldstyle": (day, False),
        ".not-a-temp-folder": (day, True),
    }
    for name, (age, _) in folders.items():
      (data / name).mkdir()
      (data / name / "images.npy").write_bytes(b"partial")
      t = time.time() - age
      os.utime(data / name, (t, t))
    rdata.load("folder", dir=root, cache_dir=cache)
    left = set(_entries(cache))
    for name, (_, kept) in folders.items():
      assert (name in left) == kept, name
  finally:
    live.kill()
    live.wait()


def test_cache_killed_writer_leaves_nothing_after_the_next_load(tmp_path):
  root, cache = tmp_path / "ms", tmp_path / "cache"
  _tiny_folder(root)
  die = ("import os, signal, sys\n"
         "import numpy as np\n"
         "from rsh import data\n"
         "real = np.save\n"
         "def save(*a, **k):\n"
         "  real(*a, **k)\n"
         "  os.kill(os.getpid(), signal.SIGKILL)\n"
         "np.save = save\n"
         "data.load('folder', dir=sys.argv[1], cache_dir=sys.argv[2])\n")
  out = subprocess.run([sys.executable, "-c", die, str(root), str(cache)], cwd=_REPO,
                       capture_output=True, timeout=120)
  assert out.returncode == -signal.SIGKILL, out.stderr
  (temp,) = _entries(cache)
  assert temp.startswith(".folder-")  # what the killed writer left
  ds = rdata.load("folder", dir=root, cache_dir=cache)
  assert len(ds) == 4
  (entry,) = _entries(cache)
  assert not entry.startswith(".")


# -- the folder reader ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["top", "class", "tif", "class_to_parent"])
def test_folder_symlink_loops_are_named(tmp_path, where):
  root, cache = tmp_path / "ms", tmp_path / "cache"
  _tiny_folder(root)
  culprit = {"top": root / "loop", "class": root / "A" / "loop",
             "tif": root / "A" / "A_9.tif", "class_to_parent": root / "C"}[where]
  os.symlink(root if where == "class_to_parent" else culprit, culprit)
  with pytest.raises(rdata.DataError, match="symlink loop") as e:
    rdata.load("folder", dir=root, cache_dir=cache)
  assert f"{culprit} " in str(e.value)
  assert _entries(cache) == []


def test_folder_broken_symlink_is_named(tmp_path):
  root = tmp_path / "ms"
  _tiny_folder(root)
  os.symlink(tmp_path / "moved" / "A_3.tif", root / "A" / "A_3.tif")
  with pytest.raises(rdata.DataError, match="broken symlink") as e:
    rdata.load("folder", dir=root, cache_dir=False)
  assert str(root / "A" / "A_3.tif") in str(e.value)
  assert str(tmp_path / "moved" / "A_3.tif") in str(e.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads a chmod 000 folder anyway")
def test_folder_unreadable_class_folder_is_named(tmp_path):
  root = tmp_path / "ms"
  _tiny_folder(root)
  os.chmod(root / "B", 0)
  try:
    with pytest.raises(rdata.DataError, match="permission denied") as e:
      rdata.load("folder", dir=root, cache_dir=False)
  finally:
    os.chmod(root / "B", 0o755)
  assert f"class folder {root / 'B'} " in str(e.value)


@pytest.mark.parametrize("which", ["ms", "B"])
def test_folder_unlistable_folder_is_named(tmp_path, monkeypatch, which):
  """As a chmod 000 folder reads to a user other than root (simulated: tests may run as root)."""
  root = tmp_path / "ms"
  _tiny_folder(root)
  real_iterdir = pathlib.Path.iterdir

  def iterdir(self):
    if self.name == which:
      raise PermissionError(13, "Permission denied", str(self))
    return real_iterdir(self)
  monkeypatch.setattr(pathlib.Path, "iterdir", iterdir)
  with pytest.raises(rdata.DataError, match="permission denied") as e:
    rdata.load("folder", dir=root, cache_dir=False)
  assert str(root if which == "ms" else root / "B") + " " in str(e.value)


@pytest.mark.parametrize("kind, message", [
    ("missing", "does not exist"), ("file", "is not a directory"),
    ("loop", "is a symlink loop"), ("dangling", "is a broken symlink")])
def test_folder_bad_dir_is_named(tmp_path, kind, message):
  target = tmp_path / "ms"
  if kind == "file":
    target.write_bytes(b"")
  elif kind == "loop":
    os.symlink(target, target)
  elif kind == "dangling":
    os.symlink(tmp_path / "elsewhere", target)
  with pytest.raises(rdata.DataError, match=message) as e:
    rdata.load("folder", dir=target, cache_dir=tmp_path / "cache")
  assert f"data folder {target} " in str(e.value)
  assert _entries(tmp_path / "cache") == []


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_folder_corrupt_geotiff_is_named(tmp_path, damage):
  root, cache = tmp_path / "ms", tmp_path / "cache"
  _tiny_folder(root)
  bad = root / "B" / "B_2.tif"
  data = bad.read_bytes()
  bad.write_bytes({"truncated": data[:len(data) // 2], "empty": b"",
                   "garbage": b"II*\x00" + b"\xff" * 400}[damage])
  with pytest.raises(rdata.DataError, match="cannot read as TIFF") as e:
    rdata.load("folder", dir=root, cache_dir=cache)
  assert str(e.value).startswith(f"{bad}: ")
  assert _entries(cache) == []


# -- bigearthnet ------------------------------------------------------------------------


def _bigearthnet_copy(tmp_path):
  pytest.importorskip("bigearthnet_common.constants", reason="bigearthnet-common not installed")
  from rsh.data import bigearthnet
  return bigearthnet.example_dir(tmp_path / "ben")


def test_bigearthnet_bad_metadata_json_is_named(tmp_path):
  root = _bigearthnet_copy(tmp_path)
  meta = sorted((root / "BigEarthNet-S2-Example").glob("*/*_labels_metadata.json"))[0]
  meta.write_bytes(meta.read_bytes()[:20])  # truncated mid-way
  with pytest.raises(rdata.DataError, match="cannot read") as e:
    rdata.load("bigearthnet", dir=root, cache_dir=False, exclude=())
  assert str(meta) in str(e.value) and "JSONDecodeError" in str(e.value)


def test_bigearthnet_band_symlink_loop_is_named(tmp_path):
  root = _bigearthnet_copy(tmp_path)
  band = sorted((root / "BigEarthNet-S2-Example").glob("*/*_B03.tif"))[0]
  band.unlink()
  os.symlink(band, band)
  with pytest.raises(rdata.DataError, match="symlink loop") as e:
    rdata.load("bigearthnet", dir=root, cache_dir=False, exclude=(), bands="rgb")
  assert str(band) in str(e.value) and band.parent.name in str(e.value)


def test_bigearthnet_cache_sees_new_content_behind_a_kept_mtime(tmp_path):
  root, cache = _bigearthnet_copy(tmp_path), tmp_path / "cache"
  first = rdata.load("bigearthnet", dir=root, cache_dir=cache, exclude=(), bands="rgb")
  name = first.files[0]
  band = root / "BigEarthNet-S2-Example" / name / f"{name}_B04.tif"  # rgb's band 0
  st = band.stat()
  with tifffile.TiffFile(band) as tif:  # uncompressed: bump the first pixel in place
    offset = tif.pages[0].dataoffsets[0]
  data = bytearray(band.read_bytes())
  data[offset:offset + 2] = (int.from_bytes(data[offset:offset + 2], "little") + 1).to_bytes(
      2, "little")
  band.write_bytes(bytes(data))
  os.utime(band, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime back
  assert (band.stat().st_size, band.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
  again = rdata.load("bigearthnet", dir=root, cache_dir=cache, exclude=(), bands="rgb")
  assert again.images[0, 0, 0, 0] == first.images[0, 0, 0, 0] + 1


# ============================================================================
# The retrieval API: metrics, search, ranking, shallow hashes.


def _codes(n=12, nbytes=2, seed=0):
  """Packed codes with many repeats (exact matches) and their integer labels."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (4, nbytes), dtype=np.uint8)
  return base[rng.integers(0, 4, n)], rng.integers(0, 3, n)


def _exact_match_precision(q, a, ql, al):
  """Mean over queries of relevant / retrieved among archive codes equal to the query."""
  out = []
  for i in range(len(q)):
    hits = [j for j in range(len(a)) if (q[i] == a[j]).all()]
    out.append(np.mean([ql[i] == al[j] for j in hits]) if hits else 0.0)
  return float(np.mean(out))


# ----------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(k=0), ValueError, r"evaluate: `k` must be an int in 1\.\.12; got 0"),
    (dict(k=-3), ValueError, r"`k` must be an int in 1\.\.12; got -3"),
    (dict(n=0), ValueError, r"evaluate: `n` must be an int in 1\.\.12; got 0"),
    (dict(k=13), ValueError, r"`k`=13 is larger than the archive \(12 items\)"),
    (dict(n=50), ValueError, r"`n`=50 is larger than the archive \(12 items\)"),
    (dict(k=2.5), TypeError, r"`k` must be an int; got float 2\.5"),
    (dict(n=True), TypeError, r"`n` must be an int; got bool"),
    (dict(radius=-1), ValueError, r"`radius` must be an int in 0\.\.16; got -1"),
    (dict(radius=17), ValueError, r"`radius`=17 is larger than the code length \(16 bits\)"),
    (dict(pr_step=-5), ValueError, r"`pr_step` must be an int >= 0; got -5"),
    (dict(pr_step=2.5), TypeError, r"`pr_step` must be an int"),
], ids=["k0", "k_negative", "n0", "k_above_archive", "n_above_archive", "k_float", "n_bool",
        "radius_negative", "radius_above_bits", "pr_step_negative", "pr_step_float"])
def test_evaluate_rejects_bad_cutoffs(kwargs, error, match):
  a, al = _codes()
  args = dict(k=3, n=2) | kwargs
  with pytest.raises(error, match=match):
    protocol.evaluate(a[:4], a, al[:4], al, **args)


@pytest.mark.parametrize("case, error, match", [
    ("labels_length", ValueError, r"`archive_labels` has 11 rows but there are 12 codes"),
    ("code_length", ValueError, r"`query_codes` have 8 bits but `archive_codes` have 16"),
    ("not_bits", ValueError, r"`query_codes` is neither packed uint8 codes nor bits"),
    ("empty_queries", ValueError, r"`query_codes` is empty"),
    ("one_d_codes", ValueError, r"`query_codes`.*2-D"),
], ids=lambda v: v if isinstance(v, str) and v.isidentifier() else "")
def test_evaluate_rejects_bad_codes_and_labels(case, error, match):
  a, al = _codes()
  q, ql = a[:4], al[:4]
  if case == "labels_length":
    al = al[:-1]
  elif case == "code_length":
    q = q[:, :1]
  elif case == "not_bits":
    q = np.full((4, 16), 0.3)
  elif case == "empty_queries":
    q, ql = q[:0], ql[:0]
  elif case == "one_d_codes":
    q = q[0]
  with pytest.raises(error, match=match):
    protocol.evaluate(q, a, ql, al, k=3, n=2)


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_radius_zero_is_the_exact_matches(seed):
  a, al = _codes(30, 2, seed)
  q, ql = a[:7], al[:7]
  r = protocol.evaluate(q, a, ql, al, k=5, n=3, radius=0, pr_step=None)
  assert r["precision@r0"] == pytest.approx(_exact_match_precision(q, a, ql, al), abs=1e-12)
  # The whole code length is allowed too: every archive item is within it.
  full = protocol.evaluate(q, a, ql, al, k=5, n=3, radius=16, pr_step=None)
  want = np.mean([(al == ql[i]).mean() for i in range(len(q))])
  assert full["precision@r16"] == pytest.approx(want, abs=1e-12)


# ----------------------------------------------------------------------------- metrics


_REL = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], bool)


@pytest.mark.parametrize("call, error, match", [
    pytest.param(lambda: metrics.precision_at(_REL, 0),
                 ValueError, r"precision_at: `n` must be an int in 1\.\.4; got 0",
                 id="precision_at_n0"),
    pytest.param(lambda: metrics.precision_at(_REL, 5),
                 ValueError, r"`n`=5 is larger than the ranks per query \(4\)",
                 id="precision_at_n_above_ranks"),
    pytest.param(lambda: metrics.recall_at(_REL, -1),
                 ValueError, r"recall_at: `n` must be an int in 1\.\.4; got -1",
                 id="recall_at_negative_n"),
    pytest.param(lambda: metrics.average_precision(_REL, 0),
                 ValueError, r"average_precision: `k` must be an int in 1\.\.4; got 0",
                 id="average_precision_k0"),
    pytest.param(lambda: metrics.average_precision(_REL[0], 2),
                 ValueError, r"`ranked_relevance` must be 2-D.*got shape \(4,\)",
                 id="average_precision_1d"),
    pytest.param(lambda: metrics.average_precision(_REL, 2, n_relevant=[1, 2, 3]),
                 ValueError, r"`n_relevant` must have one entry per query.*got shape \(3,\)",
                 id="average_precision_n_relevant_length"),
    pytest.param(lambda: metrics.acg_at(_REL, 0),
                 ValueError, r"acg_at: `k` must be an int in 1\.\.4; got 0", id="acg_at_k0"),
    pytest.param(lambda: metrics.ndcg_at(_REL, 3, _REL[:1]),
                 ValueError, r"ndcg_at: `ideal_gain` must be \[2, >= 3\]", id="ndcg_at_ideal_rows"),
    pytest.param(lambda: metrics.pr_curve(_REL, []),
                 ValueError, r"pr_curve: `cutoffs` must be a non-empty", id="pr_curve_no_cutoffs"),
    pytest.param(lambda: metrics.pr_curve(_REL, [2, 9]),
                 ValueError, r"pr_curve: `cutoffs` must increase strictly within 1\.\.4",
                 id="pr_curve_cutoff_above_ranks"),
    pytest.param(lambda: metrics.precision_within_radius(np.zeros((2, 4), int), _REL, -1),
                 ValueError, r"`radius` must be an int >= 0; got -1", id="radius_negative"),
    pytest.param(lambda: metrics.precision_within_radius(np.zeros((2, 3), int), _REL, 1),
                 ValueError, r"`relevant` \(2, 4\) and `distances` \(2, 3\)", id="radius_shapes"),
    pytest.param(lambda: metrics.tie_aware_average_precision([[2, 2]], [[1]], 2),
                 ValueError, r"`group_relevant` \(1, 1\) and `group_sizes` \(1, 2\)",
                 id="tie_aware_shapes"),
    pytest.param(lambda: metrics.relevance(np.zeros((2, 2, 2)), np.zeros((3, 2, 2))),
                 ValueError, r"relevance: `query_labels` must be int\[n\] labels",
                 id="relevance_3d"),
    pytest.param(lambda: metrics.sum_precision_top(_REL, 0),
                 ValueError, r"sum_precision_top: `k` must be an int in 1\.\.4; got 0",
                 id="sum_precision_top_k0"),
])
def test_metrics_reject_bad_arguments(call, error, match):
  with pytest.raises(error, match=match):
    call()


def test_precision_within_radius_zero_counts_equal_codes():
  a, al = _codes(20, 1, 3)
  q, ql = a[:5], al[:5]
  d = hamming.hamming_distances(q, a)
  got = metrics.precision_within_radius(d, ql[:, None] == al[None, :], 0).mean()
  assert got == pytest.approx(_exact_match_precision(q, a, ql, al), abs=1e-12)


# ----------------------------------------------------------------------------- search, hamming


@pytest.mark.parametrize("call, error, match", [
    pytest.param(lambda db: search.radius_search(db[:2], db, 17),
                 ValueError, r"radius_search: `radius`=17 is larger than the code length \(16 bits",
                 id="radius_above_bits"),
    pytest.param(lambda db: search.radius_search(db[:2], db, 1.5),
                 TypeError, r"radius_search: `radius` must be an int", id="radius_float"),
    pytest.param(lambda db: search.search(db[:2].astype(np.float32), db, 1),
                 TypeError, r"search: `q` must be packed codes uint8", id="float_queries"),
    pytest.param(lambda db: search.search(db[:2, :1], db, 1),
                 ValueError, r"`q` has 8-bit codes but `db` has 16-bit", id="code_length"),
    pytest.param(lambda db: search.search(db[0], db, 1),
                 ValueError, r"search: `q` must be 2-D packed codes", id="one_d_queries"),
    pytest.param(lambda db: search.search(db[:2], db, -2),
                 ValueError, r"search: `k` must be >= 1; got -2", id="k_negative"),
    pytest.param(lambda db: search.cosine_search(np.ones((2, 3)), np.ones((0, 3)), 1),
                 ValueError, r"cosine_search: `db` is empty", id="cosine_empty_archive"),
    pytest.param(lambda db: hamming.num_bits(db[0]),
                 ValueError, r"num_bits: `codes` must be 2-D", id="num_bits_1d"),
    pytest.param(lambda db: hamming.num_bits(np.ones((2, 16))),
                 TypeError, r"num_bits: `codes` must be packed codes uint8", id="num_bits_float"),
    pytest.param(lambda db: hamming.pack_codes(np.ones((2, 12))),
                 ValueError, r"code length l=12 of `x` is not a positive multiple of 8",
                 id="pack_12_bits"),
    pytest.param(lambda db: hamming.pack_codes(np.full((2, 8), 2)),
                 ValueError, r"pack_codes: `x` must hold bits", id="pack_not_bits"),
])
def test_search_and_hamming_reject_bad_arguments(call, error, match):
  db, _ = _codes()
  with pytest.raises(error, match=match):
    call(db)


def test_radius_search_zero_returns_exactly_the_equal_codes():
  db, _ = _codes(25, 2, 4)
  q = db[:6]
  dists, idxs = search.radius_search(q, db, 0)
  for i in range(len(q)):
    want = [j for j in range(len(db)) if (db[j] == q[i]).all()]
    np.testing.assert_array_equal(idxs[i], want)
    np.testing.assert_array_equal(dists[i], np.zeros(len(want)))


# ----------------------------------------------------------------------------- ranking


@pytest.mark.parametrize("call, error, match", [
    pytest.param(lambda: ranking.top_k_ascending(np.zeros((2, 5)), -1),
                 ValueError, r"top_k_ascending: `k` must be an int >= 1; got -1",
                 id="ascending_k_negative"),
    pytest.param(lambda: ranking.top_k_descending(np.zeros((2, 5)), 0),
                 ValueError, r"top_k_descending: `k` must be an int >= 1; got 0",
                 id="descending_k0"),
    pytest.param(lambda: ranking.top_k_descending(np.zeros(5), 2),
                 ValueError, r"top_k_descending: `scores` must be 2-D", id="descending_1d"),
    pytest.param(lambda: ranking.top_k_mask(np.zeros((2, 5)), 6),
                 ValueError, r"top_k_mask: `k`=6 is larger than the columns of `scores` \(5\)",
                 id="mask_k_above_columns"),
    pytest.param(lambda: ranking.order(np.zeros((2, 5)), "l2"),
                 ValueError, r"order: `distance` must be 'hamming' or 'cosine'; got 'l2'",
                 id="order_distance"),
    pytest.param(lambda: ranking.check_features(np.ones(3), "q", "f"),
                 ValueError, r"f: `q` must be 2-D", id="features_1d"),
])
def test_ranking_rejects_bad_arguments(call, error, match):
  with pytest.raises(error, match=match):
    call()


# ----------------------------------------------------------------------------- shallow


def _features(n=40, d=12, seed=0):
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _with_nan():
  x = _features()
  x[3, 5] = np.nan
  return x


@pytest.mark.parametrize("call, error, match", [
    pytest.param(lambda x: shallow.fit_itq(_with_nan(), 8, 0, 2),
                 ValueError, r"pca: `x` contains NaN or infinite values", id="itq_nan"),
    pytest.param(lambda x: shallow.fit_lsh(_with_nan(), 8, 0),
                 ValueError, r"fit_lsh: `x` contains NaN", id="lsh_nan"),
    pytest.param(lambda x: shallow.fit_cca_itq(x, _with_nan(), 4, 0, 2),
                 ValueError, r"cca: `y` contains NaN", id="cca_itq_nan"),
    pytest.param(lambda x: shallow.fit_lsh(x[0], 8, 0),
                 ValueError, r"fit_lsh: `x` must be rows \[n, \.\.\.\].*got shape \(12,\)",
                 id="lsh_1d"),
    pytest.param(lambda x: shallow.fit_itq(x[:0], 8, 0, 2),
                 ValueError, r"pca: `x` is empty", id="itq_empty"),
    pytest.param(lambda x: shallow.fit_itq(x, 8.5, 0, 2),
                 TypeError, r"pca: `bits` must be an int; got float", id="itq_float_bits"),
    pytest.param(lambda x: shallow.fit_itq(x, 0, 0, 2),
                 ValueError, r"pca: bits must be >= 1; got `bits`=0", id="itq_zero_bits"),
    pytest.param(lambda x: shallow.fit_itq(x, 8, 0, -1),
                 ValueError, r"fit_itq: `iterations` must be an int >= 0; got -1",
                 id="itq_negative_iterations"),
    pytest.param(lambda x: shallow.cca(x, x[:-1], 4),
                 ValueError, r"cca: `x` has 40 rows and `y` 39", id="cca_unpaired"),
    pytest.param(lambda x: shallow.cca(x, x, 4, reg=-1.0),
                 ValueError, r"cca: `reg` must be a finite number >= 0", id="cca_negative_reg"),
    pytest.param(lambda x: shallow.project(shallow.fit_lsh(x, 8, 0), x[:, :10]),
                 ValueError, r"project: rows of `x` have 10 values .* fitted on 12",
                 id="project_feature_size"),
    pytest.param(lambda x: shallow.project(shallow.fit_lsh(x, 8, 0), x[0]),
                 ValueError, r"project: `x` must be rows \[n, \.\.\.\]", id="project_1d"),
    pytest.param(lambda x: shallow.project(shallow.fit_lsh(x, 8, 0), _with_nan()),
                 ValueError, r"project: `x` contains NaN", id="project_nan"),
    pytest.param(lambda x: shallow.pool_rows(np.zeros((2, 4, 4, 1)), 0),
                 ValueError, r"pool_rows: `size` must be an int >= 1; got 0", id="pool_size0"),
])
def test_shallow_rejects_bad_arguments(call, error, match):
  with pytest.raises(error, match=match):
    call(_features())


def test_item9_a_class_too_small_for_the_split_is_named_by_its_folder_name(tmp_path):
  from rsh import data as rdata
  with pytest.raises(rdata.DataError, match=r"class 'AnnualCrop' has \d+ images, too few for "
                                            r"config\.data\.n_query=50"):
    runs.run(_toy_config(**{"data.n_query": 50}), tmp_path / "w")
  assert not (tmp_path / "w").exists()


def test_the_training_curve_survives_a_kill_and_matches_an_uninterrupted_run(tmp_path):
  def step(state, batch, rng):
    del rng
    return _Toy(step=state.step + 1, w=state.w + 1.0), {"loss": state.w + jnp.mean(batch["x"])}

  class Killed(BaseException):
    pass

  def batches(kill_at=None):
    def fn(s):
      if s == kill_at:
        raise Killed
      return {"x": np.full((2, 3), s, np.float32)}
    return fn

  kw = dict(state=_Toy(step=jnp.zeros((), jnp.int32), w=jnp.zeros(())), step_fn=step,
            rng=jax.random.PRNGKey(0),
            loop=train.LoopConfig(num_steps=6, checkpoint_every=2, log_every=1, progress=False))
  train.run(workdir=tmp_path / "ref", batch_fn=batches(), **kw)
  with pytest.raises(Killed):  # killed in step 6, after checkpoint 4 and rows 1..5
    train.run(workdir=tmp_path / "w", batch_fn=batches(kill_at=5), **kw)
  with open(tmp_path / "w" / "train_history.jsonl", "a") as f:
    f.write('{"step": 6, "lo')  # and a line cut by the kill
  assert [r["step"] for r in histories.read_train_history(tmp_path / "w")] == [1, 2, 3, 4, 5]
  train.run(workdir=tmp_path / "w", batch_fn=batches(), **kw)
  ref = histories.read_train_history(tmp_path / "ref")
  assert [r["step"] for r in ref] == [1, 2, 3, 4, 5, 6]
  assert histories.read_train_history(tmp_path / "w") == ref
  assert checkpoints.latest_step(tmp_path / "w") == 6
  assert checkpoints.latest_step(tmp_path / "none") is None


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(k=0), ValueError, r"`k` must be an int in 1\.\.12; got 0"),
    (dict(n=0), ValueError, r"`n` must be an int in 1\.\.12; got 0"),
    (dict(pr_step=-1), ValueError, r"`pr_step` must be an int >= 0; got -1"),
])
def test_protocol_evaluate_checks_and_metrics_holds_formulas_only(kwargs, error, match):
  q, ql = _codes(6, seed=1)
  a, al = _codes(12, seed=2)
  with pytest.raises(error, match=match):
    protocol.evaluate(q, a, ql, al, **{"k": 4, "n": 2, **kwargs})
  assert not hasattr(metrics, "evaluate")  # formulas only: the protocol is rsh.protocol's
