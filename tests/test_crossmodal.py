"""Cross-modal S1 <-> S2 hashing (configs/crossmodal.py, sscm.py, duch.py) on the core.

The smoke variants run in the default suite; the demo variants (a few minutes
each) are `slow` and must beat random codes in all four directions, and so is
the run on the six real BigEarthNet pairs (its data and model side is not).
"""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh import config_lib
from rsh import data as rdata
from rsh import evaluators
from rsh import method as rmethod
from rsh import runs
from rsh.methods import crossmodal as method

REPO = pathlib.Path(__file__).resolve().parents[1]
DIRECTIONS = ("s1_to_s2", "s2_to_s1", "s1_to_s1", "s2_to_s2")
CONFIGS = ("crossmodal", "sscm", "duch")


def get_config(name, arg="smoke"):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
  out = {}
  for name in CONFIGS:
    workdir = tmp_path_factory.mktemp(name)
    config = get_config(name)
    config.data.cache_dir = "none"
    out[name] = (workdir, runs.run(config, workdir))
  return out


@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_reports_four_directions_and_baselines(smoke_runs, name):
  workdir, results = smoke_runs[name]
  m = results["metrics"]
  for d in DIRECTIONS:
    for key in ("map@20", "ndcg@20", "precision@5", "recall@5", "binary/map@20",
                "nonbinary/map@20"):
      assert np.isfinite(m[f"{d}/{key}"]), (d, key)
  assert set(results["baselines"]) == {"random_codes", "lsh_s1", "lsh_s2", "itq_s1", "itq_s2",
                                       "cca_itq_s1_to_s2", "cca_itq_s2_to_s1"}
  assert 0 < results["baselines"]["random_codes"]["map@20"] < 1
  # the training curve of every configured term is in the history
  config = get_config(name)
  last = results["history"][-1]
  for term in config.losses:
    net = "d" if config.losses[term].get("on") == "discriminator" else "enc"
    assert np.isfinite(last[f"train/{net}/{term}"]), term
  figures = {p.name for p in workdir.glob("*.png")}
  assert {f"retrievals_{d}.png" for d in DIRECTIONS} <= figures
  line = runs.summary_line(results)
  assert all(f"{d}/map@20=" in line for d in DIRECTIONS) and "random_codes" in line


def test_one_modality_is_encoded_without_the_other():
  config = get_config("crossmodal")
  config.data.cache_dir = "none"
  data = rdata.prepare(config)
  m = method.build(config, data)
  state = m.init(jax.random.PRNGKey(0))
  s1, s2 = data.x("query", "s1"), np.asarray(data.x("query", "pixels"))
  alone = m.encoders["s1"](state, s1)
  # the joint forward pass gives the same S1 codes
  e = state.nets["encoders"]
  from rsh.models import crossmodal as cm
  model = cm.CrossModalHasher(("s1", "s2"), int(config.model.bits), tuple(config.model.widths),
                              int(config.model.feature_dim))
  mean1, std1 = rdata.channel_stats(data.train_rows("s1"))
  mean2, std2 = rdata.channel_stats(data.train_rows("pixels"))
  joint = model.apply({"params": e.params, "batch_stats": e.batch_stats},
                      {"s1": (s1 - mean1) / std1, "s2": (s2 - mean2) / std2}, train=False)
  np.testing.assert_allclose(alone["hash"], joint["s1_hash"], atol=1e-5)
  assert set(m.encoders) == {"s1", "pixels"}
  assert not np.allclose(m.encoders["pixels"](state, s2)["hash"][:, :4], alone["hash"][:, :4])


def test_batches_hold_both_modalities_and_labels_of_the_same_pairs():
  config = get_config("crossmodal")
  config.data.cache_dir = "none"
  data = rdata.prepare(config)
  m = method.build(config, data)
  assert m.batch_views == {"s1": "s1", "s2": "pixels"}
  # what train_and_evaluate cuts for a step: the same training rows of each
  # view, and the labels of those rows
  src = rmethod.BatchSource(data, lambda: None)
  idx = rdata.batch_at(np.arange(len(data.split.train)), 16, config.seed, 0)
  rows = data.split.train[idx]
  np.testing.assert_array_equal(rmethod.BATCH_INPUTS["labels"](src, idx), data.labels[rows])
  np.testing.assert_array_equal(data.train_rows("s1")[idx], data.view("s1")[rows])
  np.testing.assert_array_equal(data.train_rows("pixels")[idx], data.x("train", "pixels")[idx])


def test_gradient_penalty_norms_match_finite_differences():
  from rsh.models import crossmodal as cm
  d = cm.CodeDiscriminator((8,))
  params = d.init(jax.random.PRNGKey(0), jnp.zeros((1, 6)))["params"]
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 6))
  one = lambda c: d.apply({"params": params}, c[None])[0]
  grads = jax.vmap(jax.grad(one))(x)
  eps = 1e-3
  for i in range(3):
    fd = np.array([(one(x[i].at[j].add(eps)) - one(x[i].at[j].add(-eps))) / (2 * eps)
                   for j in range(6)])
    np.testing.assert_allclose(np.asarray(grads[i]), fd, rtol=2e-2, atol=1e-4)


def test_random_codes_is_the_chance_level():
  config = get_config("crossmodal")
  config.data.cache_dir = "none"
  data = rdata.prepare(config)
  ctx = evaluators.Context(config=config, data=data, encode=None, ssm=None)
  ev = evaluators.RandomCodes("random_codes", {}, ctx)
  res = ev.run(None, True)
  ql = data.labels[data.split.query].astype(bool)
  al = data.labels[data.split.archive].astype(bool)
  # precision of random rankings ~ the share of relevant archive items
  share = float(np.mean((ql[:, None, :] & al[None, :, :]).any(-1)))
  assert abs(res["precision@5"] - share) < 0.2


def test_bad_modalities_are_refused():
  config = get_config("crossmodal")
  config.data.cache_dir = "none"
  data = rdata.prepare(config)
  config.data.inputs = {"s1": "s1"}
  with pytest.raises(ValueError, match="two or more modalities"):
    method.build(config, data)
  config.data.inputs = {"s1": "s1", "s2": "nope"}
  with pytest.raises(ValueError, match="unknown data view 'nope'"):
    method.build(config, data)


def test_cli_smoke_and_a_bad_variant(tmp_path, run_cli):
  out = run_cli("--config=configs/duch.py:nope", f"--workdir={tmp_path}")
  assert out.returncode != 0 and "unknown config variant 'nope'" in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_demo_beats_random_codes_in_every_direction(tmp_path, name):
  config = get_config(name, "demo")
  results = runs.run(config, tmp_path)
  rand = results["baselines"]["random_codes"]["map@100"]
  for d in DIRECTIONS:
    assert results["metrics"][f"{d}/map@100"] > rand + 0.05, (d, results["metrics"][f"{d}/map@100"], rand)
  (tmp_path / "summary.txt").write_text(runs.summary_line(results))


def test_cca_matches_the_generalised_eigenproblem_and_aligns_the_views():
  import scipy.linalg
  from rsh import shallow
  rng = np.random.default_rng(0)
  z = rng.standard_normal((400, 4))                       # the shared latent
  x = z @ rng.standard_normal((4, 12)) + 0.5 * rng.standard_normal((400, 12))
  y = z @ rng.standard_normal((4, 9)) + 0.5 * rng.standard_normal((400, 9))
  hx, hy, corr = shallow.cca(x, y, 4, reg=0.0)
  xc, yc = x - x.mean(0), y - y.mean(0)
  cxx, cyy, cxy = xc.T @ xc / 400, yc.T @ yc / 400, xc.T @ yc / 400
  val = scipy.linalg.eigh(cxy @ np.linalg.solve(cyy, cxy.T), cxx, eigvals_only=True)
  np.testing.assert_allclose(np.sort(corr ** 2), np.sort(val)[-4:], rtol=1e-6)
  u, v = shallow.project(hx, x), shallow.project(hy, y)
  np.testing.assert_allclose(np.corrcoef(u.T, v.T)[np.arange(4), 4 + np.arange(4)], corr,
                             rtol=1e-5)
  # CCA-ITQ: the two views of a pair get codes far closer than unpaired rows
  gx, gy = shallow.fit_cca_itq(x, y, 4, seed=0)
  bx, by = shallow.project(gx, x) >= 0, shallow.project(gy, y) >= 0
  assert (bx == by).mean() > 0.8 > 0.6 > (bx == by[rng.permutation(400)]).mean()


def test_the_example_variant_reads_the_six_real_pairs(tmp_path):
  # The data and model side of the slow run below, in the default suite.
  pytest.importorskip("bigearthnet_common.constants", reason="bigearthnet-common not installed")
  config = get_config("crossmodal", "example")
  config.data.cache_dir = str(tmp_path / "cache")
  data = rdata.prepare(config)
  assert data.dataset.source == "bigearthnet" and "s1" in data.view_names()
  sizes = [len(data.indices(s)) for s in ("query", "archive", "train")]
  assert sizes == [2, 4, 4]  # the snowy pair included
  assert set(method.build(config, data).encoders) == {"s1", "pixels"}


@pytest.mark.slow
def test_the_six_real_pairs_run_end_to_end(tmp_path):
  pytest.importorskip("bigearthnet_common.constants", reason="bigearthnet-common not installed")
  config = get_config("crossmodal", "example")
  config.data.cache_dir = str(tmp_path / "cache")
  results = runs.run(config, tmp_path / "run")
  assert results["data_source"] == "bigearthnet" and results["n_query"] == 2
  assert results["n_archive"] == 4 and results["n_train"] == 4   # the snowy pair included
  for d in DIRECTIONS:
    assert 0 <= results["metrics"][f"{d}/map@4"] <= 1
  assert (tmp_path / "run" / "retrievals_s1_to_s2.png").stat().st_size > 1000
