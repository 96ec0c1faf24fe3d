"""The generic loop: sharded step equivalence, exact resume after kill -9, NaN stop."""

import json
import os
import pathlib
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
  restored = train.latest_state(tmp_path, state)
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
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, numpy as np
    from rsh import train
    from rsh.methods import uahm
    import importlib.util
    spec = importlib.util.spec_from_file_location("c", "configs/uahm.py")
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    config = m.get_config("smoke")
    assert len(jax.devices()) == 2
    gen, disc = uahm.build_models(config)
    state0 = uahm.init_state(config, gen, disc, jax.random.PRNGKey(0))
    step = uahm.make_train_step(config, gen, disc)
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (8, 64, 64, 10)).astype(np.float32),
             "similarity": np.where(rng.random((8, 8)) < 0.3, 1, -1).astype(np.int8)}
    out = []
    for devices in (jax.devices()[:1], jax.devices()):
      mesh = train.data_mesh(devices)
      s = train.replicate(state0, mesh)
      f = train.jit_step(step, mesh)
      for i in range(2):
        s, metrics = f(s, train.shard_batch(batch, mesh), jax.random.PRNGKey(i))
      out.append(jax.device_get((s, metrics)))
    a, b = out
    diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(
        np.asarray(x, np.float64) - np.asarray(y, np.float64)))), a, b))
    print("MAXDIFF", max(diffs))
""")


def test_sharded_step_on_two_devices_equals_one_device():
  env = dict(os.environ)
  out = subprocess.run([sys.executable, "-c", _SHARDED], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  maxdiff = float(out.stdout.split("MAXDIFF")[1])
  # Same maths; only the order of the cross-device sums differs.
  assert maxdiff < 1e-4, maxdiff


def _main(workdir, *extra):
  return [sys.executable, "-m", "rsh.main", "--config=configs/uahm.py:smoke",
          f"--workdir={workdir}", "--config.train.num_steps=10",
          "--config.train.checkpoint_every=2", "--config.train.eval_every=0", *extra]


def _final_params(workdir):
  ckpt = pathlib.Path(workdir) / "checkpoints"
  last = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  tree = ocp.StandardCheckpointer().restore((ckpt / str(last) / "default").absolute())
  return last, tree


def test_kill_minus_nine_then_rerun_gives_bitwise_same_parameters(tmp_path):
  ref, killed = tmp_path / "ref", tmp_path / "killed"
  subprocess.run(_main(ref), cwd=REPO, check=True, capture_output=True, timeout=900)
  proc = subprocess.Popen(_main(killed), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not (killed / "checkpoints" / "4").exists():
    assert proc.poll() is None, "the run ended before it could be killed"
    assert time.time() < deadline
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (killed / "results.json").exists()
  subprocess.run(_main(killed), cwd=REPO, check=True, capture_output=True, timeout=900)
  (s1, a), (s2, b) = _final_params(ref), _final_params(killed)
  assert s1 == s2 == 10
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  r1 = json.loads((ref / "results.json").read_text())
  r2 = json.loads((killed / "results.json").read_text())
  assert r1["metrics"]["map@20"] == r2["metrics"]["map@20"]
