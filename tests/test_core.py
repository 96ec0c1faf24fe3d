"""The core's seams: a method, a loss term and an evaluator written here, outside
`rsh/`, train through the entry point; the runner evaluates once at the end."""

import json
import pathlib
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh import evaluators as revals
from rsh import method as rmethod
from rsh import losses as rlosses
from rsh import runs
from rsh import update

REPO = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------
# A toy method: a linear hash of 8x8-pooled pixels, one network "encoder".


class _Linear(nn.Module):
  bits: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = nn.avg_pool(x, (8, 8), (8, 8)).reshape(x.shape[0], -1)
    return {"hash": jnp.tanh(nn.Dense(self.bits)(x))}


def build(config, data, terms=None):
  model = _Linear(bits=int(config.model.bits))
  tx = update.optimizer(config.optim)
  bound = rlosses.bind(config.losses, nets=("encoder",), terms=terms)

  def init(rng):
    return update.TrainState.create(
        {"encoder": update.init_net(model, tx, rng, jnp.zeros((2,) + data.images.shape[1:]))})

  def step(state, batch, rng):
    del rng
    forward = lambda params: (model.apply({"params": params}, batch["x"]), {})
    net, metrics = update.update_net(state.nets["encoder"], tx, forward, bound["encoder"],
                                     batch, "encoder")
    return update.TrainState(step=state.step + 1, nets={"encoder": net}), metrics

  apply = jax.jit(lambda params, x: model.apply({"params": params}, x))

  def encode(state, images):
    return update.in_batches(lambda x: apply(state.nets["encoder"].params, x), images, 64)

  return rmethod.Method(init=init, step=step, encode=encode, terms=bound)


def spread(codes):
  """A toy term: pushes the codes towards the corners +-1."""
  return -jnp.mean(jnp.abs(codes))


class Saturation(revals.Evaluator):
  """A toy evaluator: mean |code| of the archive (1 = every bit at +-1)."""

  def run(self, state, final):
    self.calls = getattr(self, "calls", 0) + 1
    out = self.ctx.encode(state, self.ctx.data.x("archive"))
    return {"mean_abs": float(np.mean(np.abs(out["hash"]))), "calls": self.calls,
            "final": float(final)}


CONFIG = textwrap.dedent("""
    import ml_collections
    from rsh import config_lib

    def get_config(arg=None):
      a = config_lib.parse_arg(arg, variant="smoke", bits=16, seed=0)
      c = config_lib.base(a, method="tests.test_core:build", name="toy", bands="rgb")
      c.model = ml_collections.ConfigDict(dict(bits=a.bits))
      c.optim.lr = 3e-2
      c.losses = ml_collections.ConfigDict(dict(
          spread=dict(type="tests.test_core:spread", weight=1.0, on="encoder", codes="hash")))
      c.evals = ml_collections.ConfigDict(dict(
          retrieval=dict(type="retrieval", codes="hash"),
          saturation=dict(type="tests.test_core:Saturation")))
      c = config_lib.finish(c, a.variant)
      c.train.num_steps, c.train.eval_every = 6, 3
      return c
""")


def test_a_toy_method_term_and_evaluator_train_through_the_entry_point(tmp_path):
  # In a real process, `python -m rsh.main` end to end (app.run, the XLA flag
  # set before jax starts): the suite's one successful run in a process of its own.
  (tmp_path / "toy.py").write_text(CONFIG)
  out = subprocess.run([sys.executable, "-m", "rsh.main", f"--config={tmp_path / 'toy.py'}",
                        f"--workdir={tmp_path / 'w'}"], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "w" / "results.json").read_text())
  assert results["method"] == "tests.test_core:build" and results["bits"] == 16
  # The toy evaluator ran in the loop (step 3) and once at the end (step 6).
  sat = results["evals"]["saturation"]
  assert sat == {**sat, "calls": 2, "final": 1.0}
  rows = {r["step"]: r for r in results["history"]}
  assert sorted(rows) == [3, 6]
  # The toy term trained the toy model: codes move away from 0 as it falls.
  assert rows[6]["mean_abs"] > rows[3]["mean_abs"]
  assert -rows[6]["train/encoder/spread"] > -rows[3]["train/encoder/spread"] > 0
  assert results["metrics"]["mean_abs"] == rows[6]["mean_abs"]
  # The built-in retrieval evaluator scored the toy codes; RP is not configured.
  assert 0 < results["metrics"]["map@20"] <= 1 and results["baselines"] == {}
  for fig in ("map_vs_steps.png", "pr_curve.png", "retrievals.png"):
    assert (tmp_path / "w" / fig).stat().st_size > 1000, fig
  assert not (tmp_path / "w" / "generated.png").exists()


def test_the_final_evaluation_runs_once_and_a_finished_run_reevaluates_once(tmp_path):
  # In-process, notebook style: the evaluator and the term passed as objects.
  calls = []

  class Counting(revals.Evaluator):
    in_loop = False

    def run(self, state, final):
      calls.append((int(state.step), final))
      return {"step": int(state.step)}

  spec = {}
  exec(CONFIG, spec)
  config = spec["get_config"]()
  config.losses.spread.type = "mine"
  config.evals.counting = dict(type="counting")
  results = runs.run(config, tmp_path, terms={"mine": spread},
                     evaluators={"counting": Counting})
  assert calls == [(6, True)]  # not in the loop, and only once at the end
  assert results["metrics"]["step"] == 6
  # Resuming a finished run trains nothing and evaluates once more.
  runs.run(config, tmp_path, terms={"mine": spread}, evaluators={"counting": Counting})
  assert calls == [(6, True), (6, True)]


@pytest.mark.parametrize("key, value, message", [
    ("evals.bad", dict(type="retrievl"), r"config.evals.bad.type='retrievl'.*retrieval"),
    ("evals.retrieval.query", "queries", r"unknown image set 'queries'"),
    ("evals.retrieval.archve", "archive", r"config.evals.retrieval.archve is not an option"),
    ("evals.retrieval.codes", "code", r"encoder has no output 'code'.*hash"),
    ("method", "tests.test_core:no_such_build", r"cannot import method"),
])
def test_unknown_evaluator_and_method_are_named(tmp_path, key, value, message):
  spec = {}
  exec(CONFIG, spec)
  config = spec["get_config"]()
  *path, leaf = key.split(".")
  section = config
  for part in path:
    section = section[part]
  section[leaf] = value
  with pytest.raises(ValueError, match=message):
    runs.run(config, tmp_path)
