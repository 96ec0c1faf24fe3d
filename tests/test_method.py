"""The method contract (`rsh.method`), derived data views, and the names that moved
in the tidy-house refactor: each old name warns and is the new object."""

import importlib
import importlib.util
import pathlib
import warnings

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rsh import config_lib
from rsh import data as rdata
from rsh import evaluators as revals
from rsh import experiment
from rsh import losses as rlosses
from rsh import method as rmethod
from rsh.data import prepared as rprepared
from rsh.methods import crossmodal

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(name="uahm", variant="smoke"):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def _data(**data):
  return rdata.prepare(ml_collections.ConfigDict(dict(seed=0, data=dict(
      dict(source="demo", dir=None, cache_dir=None, bands="ms10", n_query=2, n_train=None,
           n_per_class=6, input="pixels"), **data))))


def _method(**kw):
  enc = lambda state, x: {"hash": np.zeros((len(x), 8), np.float32)}
  return rmethod.Method(init=lambda rng: None, step=lambda s, b, r: (s, {}), encode=enc, **kw)


def test_encoder_is_the_one_way_to_get_an_encoder():
  m = _method()
  assert m.encoder("pixels") is m.encode and m.encoder("anything") is m.encode
  s1 = lambda state, x: {"hash": np.ones((len(x), 8), np.float32)}
  two = _method(encoders={"s1": s1, "pixels": lambda state, x: {}})
  assert two.encoder("s1") is s1
  with pytest.raises(ValueError, match="encodes the views s1, pixels, not 'vgg'"):
    two.encoder("vgg")


def test_a_method_adds_its_own_batch_inputs():
  """`Method.batch_inputs` (e.g. cluster ids) reaches the batch when a term reads it."""
  data = _data()
  config = ml_collections.ConfigDict(dict(seed=0, data=dict(input="pixels")))
  cluster = lambda src, idx: np.asarray(idx, np.int32) % 3
  bound = rlosses.bind({"toy": dict(weight=1.0, x="x", c="cluster")}, nets=("net",),
                       terms={"toy": rlosses.Term(lambda x, c: jnp.mean(x) + jnp.mean(c),
                                                  {"x": "x", "c": "cluster"})})
  m = _method(terms=bound, batch_inputs={"cluster": cluster})
  assert set(m.inputs()) == {"similarity", "labels", "cluster"}
  batch_fn, timings = experiment.make_batch_fn(config, data, m, ssm=None, size=4)
  batch = batch_fn(3)
  assert sorted(batch) == ["cluster", "x"] and timings == {}
  np.testing.assert_array_equal(batch["cluster"], batch_fn(3)["cluster"])  # pure in the step
  assert batch["x"].shape == (4, 64, 64, 10)
  # Without a term that reads it, the input is not made.
  plain = _method(batch_inputs={"cluster": cluster})
  assert sorted(experiment.make_batch_fn(config, data, plain, None, 4)[0](0)) == ["x"]


def test_a_derived_view_is_registered_from_above(monkeypatch):
  monkeypatch.setattr(rprepared, "_DERIVED", dict(rprepared._DERIVED))
  calls = []

  def compute(prepared, name):
    calls.append(name)
    return np.full((len(prepared.labels), 3), float(len(name)), np.float32)

  def check(prepared, name):
    if name == "bad":
      raise ValueError("toy/bad needs a file")

  rdata.register_view(rdata.DerivedView("toy/", lambda: ("ab", "bad"), compute, check))
  data = _data()
  assert data.view_name("ab") == "toy/ab"          # a bare derived name means its view
  assert data.x("query", "ab").shape == (len(data.indices("query")), 3)
  data.train_rows("toy/ab")
  assert calls == ["ab"]                           # computed once, for every row
  with pytest.raises(ValueError, match="toy/bad needs a file"):
    data.view_name("bad")
  with pytest.raises(ValueError, match="prefix ends with '/'"):
    rdata.register_view(rdata.DerivedView("toy", lambda: (), compute))


def test_without_the_features_module_the_error_says_how_to_get_the_view(monkeypatch):
  monkeypatch.setattr(rprepared, "_DERIVED", {})
  with pytest.raises(ValueError, match="registered by importing rsh.features"):
    _data().view_name("efficientnet_lite0")


def test_rgb_and_the_ssm_pixels_follow_max_dn():
  """`config.data.max_dn` scales every view made from the pixels, not only `pixels`."""
  low, high = _data(max_dn=4095), _data(max_dn=10_000)
  assert (low.max_dn, high.max_dn) == (4095, 10_000)
  idx = np.arange(4)
  raw = low.dataset.images[idx][..., rdata.band_indices(low.dataset.band_names, rdata.RGB)]
  np.testing.assert_allclose(high.rgb(idx), np.minimum(raw, 10_000) / 10_000, rtol=1e-6)
  np.testing.assert_allclose(low.rgb(idx), np.minimum(raw, 4095) / 4095, rtol=1e-6)


def test_crossmodal_refuses_a_single_view_input():
  config = _config("crossmodal")
  config.data.input = "s1"
  with pytest.raises(ValueError, match="config.data.input='s1' is the view of a single-view "
                                       "method; the cross-modal method reads config.data.inputs"):
    crossmodal.modalities(config, None)


def test_lsh_is_one_evaluator_type_and_the_old_name_warns():
  assert "random_projection" not in revals.EVALUATORS
  assert config_lib.baselines()["random_projection"]["type"] == "lsh"
  config = _config("lsh")
  data = rdata.prepare(config)
  ctx = revals.Context(config=config, data=data, encode=None, ssm=None)
  with pytest.warns(DeprecationWarning, match="type='random_projection' is now 'lsh'"):
    evals = revals.build({"rp": dict(type="random_projection")}, ctx)
  assert type(evals["rp"]) is revals.Shallow and evals["rp"].kind == "lsh"


def test_shallow_configs_keep_their_loop_whatever_the_variant():
  for name, steps in (("lsh", 1), ("itq", 50)):
    for variant in ("smoke", "demo", "full"):
      c = _config(name, variant)
      assert (c.train.batch_size, c.train.num_steps) == (None, steps), (name, variant)
  assert _config("itq", "smoke").train.progress is False  # the variant's other keys apply


@pytest.mark.parametrize("module, old, new", [
    ("rsh.experiment", "Method", "rsh.method"),
    ("rsh.experiment", "Encode", "rsh.method"),
    ("rsh.experiment", "BatchSource", "rsh.method"),
    ("rsh.experiment", "BATCH_INPUTS", "rsh.method"),
    ("rsh.restore", "latest_step", "rsh.checkpoints"),
])
def test_moved_names_warn_and_are_the_new_objects(module, old, new):
  mod, target = importlib.import_module(module), importlib.import_module(new)
  with pytest.warns(DeprecationWarning, match=f"{module}.{old} moved to {new}"):
    got = getattr(mod, old)
  assert got is getattr(target, old)
  with pytest.raises(AttributeError):
    getattr(mod, "no_such_name")


def test_old_constants_of_prepared_warn():
  with pytest.warns(DeprecationWarning, match="rsh.data.bands.RGB"):
    assert rprepared.RGB == rdata.RGB
  with pytest.warns(DeprecationWarning, match="rsh.features.FEATURES"):
    assert rprepared.FEATURES == "features/"


def test_ssm_weights_is_data_weights():
  config = _config("uahm")
  assert "weights" not in config.ssm and "weights" in config.data
  config.data.weights = "/w.pth"
  assert experiment._weights(config) == "/w.pth"
  old = _config("uahm")
  with old.ssm.unlocked():
    old.ssm.weights = "/old.pth"  # a config.json written before the keys were one
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert experiment._weights(old) == "/old.pth"
  assert any("config.ssm.weights is now config.data.weights" in str(w.message) for w in caught)



def test_results_name_the_k_each_evaluator_ranked_with():
  config = _config("uahm")
  data = _data()
  ctx = revals.Context(config=config, data=data, encode=None, ssm=None)
  evals = revals.build({"lsh": dict(type="lsh", k=5), "itq": dict(type="itq", bits=8)}, ctx)
  final = {"lsh": {"map@5": 0.5}, "itq": {"map@20": 0.25}}
  out = experiment.results_dict(config, data, evals, final, [], seconds=1.0)
  assert out["protocol"] == {"lsh": {"k": 5, "n": 5, "pr_step": 10},
                             "itq": {"k": 20, "n": 5, "pr_step": 10}}
  assert (out["k"], out["n"]) == (20, 5)   # config.eval's shared defaults
