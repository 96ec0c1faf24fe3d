"""The generic loop: sharded step equivalence, exact resume after kill -9, NaN stop."""

import importlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import flax.struct
import pytest

from rsh import checkpoints
from rsh import train

REPO = pathlib.Path(__file__).resolve().parents[1]


@flax.struct.dataclass
class _ToyState:
  step: jax.Array
  w: jax.Array


def _toy_step(state, batch, rng):
  del rng
  # The loss becomes NaN once w passes 2.5 (log of a negative number).
  loss = jnp.log(3.0 - state.w) + jnp.mean(batch["x"]) * 0
  return _ToyState(step=state.step + 1, w=state.w + 1.0), {"loss": loss}


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
  state = _ToyState(step=jnp.zeros((), jnp.int32), w=jnp.zeros(()))
  loop = train.LoopConfig(num_steps=10, checkpoint_every=2, progress=False)
  with pytest.raises(train.NonFiniteLossError, match="step 4"):
    train.run(workdir=tmp_path, state=state, step_fn=_toy_step,
              batch_fn=lambda s: {"x": np.ones((2, 3), np.float32)},
              rng=jax.random.PRNGKey(0), loop=loop)
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == 2
  restored = checkpoints.latest_state(tmp_path, state)
  assert int(restored.step) == 2 and float(restored.w) == 2.0


def test_loop_resumes_and_evaluates(tmp_path):
  state = _ToyState(step=jnp.zeros((), jnp.int32), w=jnp.full((), -100.0))
  calls = []

  def eval_fn(state, step):
    calls.append(step)
    return {"w": float(state.w)}

  kw = dict(workdir=tmp_path, step_fn=_toy_step, rng=jax.random.PRNGKey(0),
            batch_fn=lambda s: {"x": np.ones((2, 3), np.float32)}, eval_fn=eval_fn)
  train.run(state=state, loop=train.LoopConfig(num_steps=4, checkpoint_every=2, eval_every=2,
                                               progress=False), **kw)
  assert calls == [2, 4]
  # Extending the run resumes at step 4, it does not start over.
  final, history = train.run(state=state, loop=train.LoopConfig(
      num_steps=6, checkpoint_every=2, eval_every=2, progress=False), **kw)
  assert int(final.step) == 6 and float(final.w) == -94.0
  assert [r["step"] for r in history] == [2, 4, 6]


_SHARDED = textwrap.dedent("""
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, numpy as np
    from rsh import losses as rlosses
    from rsh import sharding, train
    from rsh.methods import uahm
    import importlib.util
    spec = importlib.util.spec_from_file_location("c", "configs/uahm.py")
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    config = m.get_config("smoke")  # its real optimiser: Adam, eps=1e-8
    assert len(jax.devices()) == 2
    gen, disc = uahm.build_models(config)
    # Jitted: an eager init compiles each op on its own, about twice as slow.
    state0 = jax.device_get(jax.jit(lambda k: uahm.init_state(config, gen, disc, k))(
        jax.random.PRNGKey(0)))  # on the host: the step donates its input
    step = uahm.make_train_step(config, gen, disc, rlosses.bind(config.losses, nets=uahm.NETS))

    def with_wrong_g(state, batch, rng):
      # The real step and, from the same call (no second compile), a wrong one
      # whose G update has the opposite sign: the check must reject it.
      new, metrics = step(state, batch, rng)
      old_g, new_g = state.nets["generator"], new.nets["generator"]
      g = jax.tree.map(lambda o, n: o - (n - o), old_g.params, new_g.params)
      return (new, new.replace(nets={**new.nets, "generator": new_g.replace(params=g)})), metrics

    rng = np.random.default_rng(0)
    batch = {"x": rng.uniform(-1, 1, (8, 64, 64, 10)).astype(np.float32),
             "similarity": np.where(rng.random((8, 8)) < 0.3, 1, -1).astype(np.int8)}

    def run(fn, devices):
      mesh = sharding.data_mesh(devices)
      return jax.device_get(train.jit_step(fn, mesh)(
          sharding.replicate(state0, mesh), sharding.shard_batch(batch, mesh),
          jax.random.PRNGKey(1)))

    (two, wrong), m2 = run(with_wrong_g, jax.devices())
    one, m1 = run(step, jax.devices()[:1])

    NETS = {"d": "discriminator", "g": "generator"}

    def update(s, net, part):  # float leaves only: Adam's step count is the same 1
      return [np.asarray(n, np.float64) - np.asarray(o, np.float64) for n, o in
              zip(jax.tree.leaves(getattr(s.nets[NETS[net]], part)),
                  jax.tree.leaves(getattr(state0.nets[NETS[net]], part)))
              if np.issubdtype(np.asarray(o).dtype, np.floating)]

    def rel(s, net, part):  # ||update(s) - update(one)|| / ||update(one)||
      x, y = update(s, net, part), update(one, net, part)
      return (sum(float(np.sum((u - v) ** 2)) for u, v in zip(x, y))
              / sum(float(np.sum(v ** 2)) for v in y)) ** 0.5

    parts = [f"{net}/{part}" for net in "dg" for part in ("params", "opt_state", "batch_stats")]
    print("RESULT", json.dumps({
        "metrics": max(abs(float(m2[k]) - float(m1[k])) / (1 + abs(float(m1[k]))) for k in m1),
        "right": {p: rel(two, *p.split("/")) for p in parts},
        "wrong": {p: rel(wrong, *p.split("/")) for p in parts}}))
""")

# Bounds on ||2-device update - 1-device update|| / ||1-device update||, per
# network and part, from 7 inits x 2 step keys (measured range in brackets).
# Adam's first update is lr * sign(g) per element, so a near-zero gradient whose
# all-reduce rounds the other way moves by 2 * lr: ~2,000 of D's 17.8M params.
# G's gradient flows through the D just updated, and those few flipped elements
# of D move it by up to 0.5% (its Adam moments), enough to flip up to ~0.1% of
# G's 4.9M params, varying with the init. A wrong step is far outside: a G
# update of the wrong sign gives 2, a missing all-reduce (one device's half
# batch only) 1.4 for both networks' params and 1.6-2.3 for their moments.
_BOUNDS = {
    "d/params": 3e-2,         # [3.0e-3, 3.5e-3]
    "d/opt_state": 1e-4,      # [3.8e-6, 5.5e-6]
    "d/batch_stats": 1e-4,    # 8.7e-7
    "g/params": 0.25,         # [3.5e-3, 6.2e-2]
    "g/opt_state": 5e-2,      # [1.7e-5, 4.7e-3]
    "g/batch_stats": 1e-4,    # 0 (bit-equal)
}


def test_sharded_step_on_two_devices_equals_one_device():
  out = subprocess.run([sys.executable, "-c", _SHARDED], cwd=REPO, env=dict(os.environ),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.loads(out.stdout.split("RESULT", 1)[1].splitlines()[0])
  # Same maths; only the order of the cross-device sums differs.
  assert res["metrics"] < 1e-5, res
  for part, bound in _BOUNDS.items():
    assert res["right"][part] < bound, (part, bound, res)
  # The check can fail: the same step with G's update reversed (2 up to
  # rounding) is far outside G's bound.
  assert res["wrong"]["g/params"] > 4 * _BOUNDS["g/params"], res


def _main(workdir, *extra):
  return [sys.executable, "-m", "rsh.main", "--config=configs/uahm.py:smoke",
          f"--workdir={workdir}", "--config.train.num_steps=10",
          "--config.train.checkpoint_every=2", "--config.train.eval_every=0", *extra]


def _tail(path, n=3000):
  path = pathlib.Path(path)
  return path.read_text(errors="replace")[-n:] if path.exists() else ""


def _final_state(workdir):
  """(last checkpoint step, {path: array}) of a workdir, as saved."""
  ckpt = pathlib.Path(workdir) / "checkpoints"
  last = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  with ocp.StandardCheckpointer() as checkpointer:
    tree = checkpointer.restore((ckpt / str(last) / "default").absolute())
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return last, {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


@pytest.mark.slow  # 80 s on 2 cores; in-process resume: test_loop_resumes_and_evaluates
def test_kill_minus_nine_then_rerun_gives_bitwise_same_parameters(tmp_path):
  ref, killed = tmp_path / "ref", tmp_path / "killed"
  # One compilation cache for the three runs (the same programs, so the same
  # bits): only the first compiles, which halves the cost of the others.
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  logs = {name: tmp_path / f"{name}.log" for name in ("ref", "killed", "rerun")}

  def run(workdir, name):
    # Output to a file, not a pipe: a full pipe could block the child.
    with open(logs[name], "w") as f:
      try:
        rc = subprocess.run(_main(workdir), cwd=REPO, env=env, stdout=f,
                            stderr=subprocess.STDOUT, timeout=600).returncode
      except subprocess.TimeoutExpired:
        raise AssertionError(f"the {name} run took over 600 s:\n{_tail(logs[name])}") from None
    assert rc == 0, f"the {name} run failed (exit {rc}):\n{_tail(logs[name])}"

  run(ref, "ref")
  with open(logs["killed"], "w") as f:
    proc = subprocess.Popen(_main(killed), cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + 600
    while not (killed / "checkpoints" / "4").exists():  # orbax renames it in when complete
      assert proc.poll() is None, (
          f"the run ended (exit {proc.returncode}) before checkpoint 4:\n{_tail(logs['killed'])}")
      assert time.monotonic() < deadline, f"no checkpoint 4 after 600 s:\n{_tail(logs['killed'])}"
      time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert not (killed / "results.json").exists()
  run(killed, "rerun")
  # It resumed from a checkpoint: a rerun from scratch would match trivially.
  resumed = re.search(r"resumed from .* at step (\d+)", logs["rerun"].read_text())
  assert resumed and int(resumed.group(1)) >= 4, (
      f"the rerun did not resume from checkpoint 4 or later:\n{_tail(logs['rerun'])}")

  (s1, a), (s2, b) = _final_state(ref), _final_state(killed)
  assert s1 == s2 == 10, (s1, s2)
  assert a.keys() == b.keys() and a, (sorted(a), sorted(b))
  for k in a:
    assert (a[k].dtype, a[k].shape) == (b[k].dtype, b[k].shape), (k, a[k].dtype, b[k].dtype)
  differ = {k: float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))))
            for k in a if a[k].tobytes() != b[k].tobytes()}
  assert not differ, (f"{len(differ)} of {len(a)} arrays differ after kill -9 and resume "
                      f"(max |diff|): {dict(list(differ.items())[:6])}")
  r1 = json.loads((ref / "results.json").read_text())
  r2 = json.loads((killed / "results.json").read_text())
  for key in ("metrics", "curves"):
    # Wall-clock timings aside; compared as text so that NaN equals NaN.
    x, y = ({k: v for k, v in r[key].items() if not k.endswith("seconds")} for r in (r1, r2))
    assert json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True), key


def test_checkpoint_every_zero_saves_only_at_the_end(tmp_path):
  state = _ToyState(step=jnp.zeros((), jnp.int32), w=jnp.full((), -100.0))
  train.run(workdir=tmp_path, state=state, step_fn=_toy_step, rng=jax.random.PRNGKey(0),
            batch_fn=lambda s: {"x": np.ones((2, 3), np.float32)},
            loop=train.LoopConfig(num_steps=3, checkpoint_every=0, progress=False))
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [3]
  with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 0"):
    train.LoopConfig(num_steps=3, checkpoint_every=-1)


@pytest.mark.parametrize("name, new", [
    ("CheckpointError", "rsh.checkpoints"), ("latest_state", "rsh.checkpoints"),
    ("latest_step", "rsh.checkpoints"), ("read_train_history", "rsh.histories"),
    ("data_mesh", "rsh.sharding"), ("shard_batch", "rsh.sharding"), ("replicate", "rsh.sharding"),
    ("CPU_CONV", "rsh.platform"), ("set_cpu_conv", "rsh.platform"),
    ("quiet_closed_event_loops", "rsh.platform"),
    ("workdir_lock", "rsh.workdir"), ("WorkdirLockedError", "rsh.workdir")])
def test_moved_names_still_work_from_rsh_train_with_a_deprecation_warning(name, new):
  with pytest.warns(DeprecationWarning, match=rf"rsh\.train\.{name} moved to {new}\.{name}"):
    old = getattr(train, name)
  assert old is getattr(importlib.import_module(new), name)
  with pytest.raises(AttributeError, match="no_such_name"):  # the shim invents nothing
    train.no_such_name  # noqa: B018


def test_moved_names_import_from_rsh_train():
  with pytest.warns(DeprecationWarning, match="rsh.workdir.WorkdirLockedError"):
    from rsh.train import WorkdirLockedError  # `from ... import` goes through __getattr__ too
  from rsh import workdir
  assert WorkdirLockedError is workdir.WorkdirLockedError
