"""configs/mirs.py: a second domain's rows (rsh.data.domains), the `domains` sampler,
the DWT and cluster plumbing of the feature-hashing method, and each mode's smoke run."""

import json

import jax
import ml_collections
import numpy as np
import pytest

from rsh import data as rdata
from rsh import experiment
from rsh import generated
from rsh import losses as rlosses
from rsh import methods
from tests.conftest import cli_main, load_config, one_error_line


def _config(arg="smoke"):
  return load_config("mirs", arg)


def _demo_config(domain=True, **data):
  c = ml_collections.ConfigDict(dict(seed=0, data=dict(
      source="demo", dir=None, cache_dir=None, bands="rgb", n_query=2, n_train=None,
      n_per_class=6, input="pixels", **data)))
  if domain:
    c.data.domain = dict(source="demo", n_per_class=3, seed=1)
  return c


# ----------------------------------------------------------------------------
# rsh.data.domains and Prepared.domain_ids


def test_a_domain_adds_training_rows_only():
  plain = rdata.prepare(_demo_config(domain=False))
  both = generated.prepare(_demo_config())
  n = len(plain.labels)
  for name in ("query", "archive"):
    np.testing.assert_array_equal(both.indices(name), plain.indices(name))
    np.testing.assert_array_equal(both.x(name), plain.x(name))
  assert len(both.split.train) == len(plain.split.train) + 30
  np.testing.assert_array_equal(both.domain_ids, np.repeat([0, 1], [n, 30]))
  np.testing.assert_array_equal(plain.domain_ids, np.zeros(n))
  added = both.split.train[len(plain.split.train):]
  np.testing.assert_array_equal(np.bincount(both.labels[added]), [3] * 10)
  # another seed's scenes, not copies of the target's
  assert not np.isin(both.images[added][:, 0, 0, 0], plain.images[:, 0, 0, 0]).all()
  assert both.added["kind"] == "domain" and both.added["n"] == 30


@pytest.mark.parametrize("change, match", [
    ({"colour": 1}, "domain.colour is not an option"),
    ({"source": "nope"}, "domain.source='nope' is not a source"),
    ({"seed": -1}, "domain.seed must be an integer"),
    ({"source": "folder"}, "config.data.domain: .*needs config.data.domain.dir="),
])
def test_bad_domains_are_refused(change, match):
  c = _demo_config()
  c.data.domain.update(change)
  with pytest.raises(ValueError, match=match):
    generated.prepare(c)


def test_a_domain_and_generated_rows_are_not_mixed():
  c = _demo_config()
  c.data.generated = dict(workdir="runs/x", n=5, seed=0)
  with pytest.raises(ValueError, match="generated and config.data.domain"):
    generated.prepare(c)


# ----------------------------------------------------------------------------
# The `domains` sampler


def test_domains_batches_are_half_each_domain_and_resume_exactly():
  domains = np.repeat([0, 1], [50, 30])
  labels = np.arange(80) % 10
  batch = rdata.sampler("domains", labels, 20, 3, {"n": 8}, domains=domains)
  seen = []
  for step in range(6):
    rows = batch(step)
    assert (domains[rows[:8]] == 1).all() and (domains[rows[8:]] == 0).all()
    assert len(set(rows)) == 20
    seen.append(rows)
  again = rdata.sampler("domains", labels, 20, 3, {"n": 8}, domains=domains)
  np.testing.assert_array_equal(again(4), seen[4])
  # an epoch of the source part (30 rows, 8 a batch: 3 batches) covers 24 distinct rows
  assert len(set(np.concatenate([r[:8] for r in seen[:3]]))) == 24
  default = rdata.sampler("domains", labels, 20, 3, None, domains=domains)(0)
  assert (domains[default[:10]] == 1).all()


def test_domains_sampler_refuses_one_domain():
  with pytest.raises(rdata.DataError, match="two domains"):
    rdata.sampler("domains", np.arange(10), 4, 0, None, domains=np.zeros(10, int))
  with pytest.raises(rdata.DataError, match="lower config.train.batch_size"):
    rdata.sampler("domains", np.arange(10), 8, 0, None, domains=np.repeat([0, 1], [7, 3]))


# ----------------------------------------------------------------------------
# configs/mirs.py


def test_each_mode_binds_its_terms():
  want = {"supervised": {"batch_hard"}, "dwt": {"batch_hard"},
          "interclass": {"batch_hard", "interclass"}, "unsupervised": {"nt_xent"},
          "unsupervised_dwt": {"nt_xent"}}
  for mode, metric in want.items():
    c = _config(f"full,mode={mode}")
    bound = rlosses.bind(c.losses, nets=("hasher",))["hasher"]
    assert {b.name for b in bound} == metric | {"push", "balance"}
    assert bool(c.model.dwt) == mode.endswith("dwt")
  c = _config("full,mode=interclass,rate=0.25,pair=negative")
  assert (c.losses.batch_hard.weight, c.losses.interclass.weight) == (0.75, 0.25)
  assert c.losses.interclass.pair == "negative"
  c = _config("small,mode=dwt,domain=demo")
  assert c.losses.batch_hard.mask == "source_domain" and c.train.sampler == "domains"
  assert c.data.domain.source == "demo" and c.model.dwt.group == 32
  assert _config("small,mode=dwt,group=8").model.dwt.group == 8
  for bad in ("mode=dwt32", "domain=mars", "rate=2", "pair=both"):
    with pytest.raises(ValueError, match="config"):
      _config(f"smoke,{bad}")


def _built(arg, feature_cache, monkeypatch):
  monkeypatch.setenv("RSH_CACHE_DIR", str(feature_cache))
  c = _config(arg)
  data = generated.prepare(c)
  method = methods.get(c.method).build(c, data, None)
  batch_fn, _ = experiment.make_batch_fn(c, data, method, None, c.train.batch_size)
  return c, data, method, batch_fn


def test_target_labels_never_reach_the_loss(feature_cache, monkeypatch):
  """domain=demo: a step with the target rows' labels scrambled is the same step."""
  c, data, method, batch_fn = _built("smoke,mode=interclass,domain=demo", feature_cache,
                                     monkeypatch)
  state = method.init(jax.random.key(0))
  batch = batch_fn(0)
  b = len(batch["labels"])
  target = np.arange(b) >= b // 2   # the `domains` sampler: source rows, then target rows
  scrambled = dict(batch, labels=np.where(target, (batch["labels"] + 3) % 10, batch["labels"]))
  rng = jax.random.key(1)
  (a, ma), (b, mb) = (method.step(state, x, rng) for x in (batch, scrambled))
  jax.tree.map(np.testing.assert_array_equal, a.nets["hasher"].params, b.nets["hasher"].params)
  source = dict(batch, labels=np.where(target, batch["labels"], 0))  # one class: no triplet
  c2, _ = method.step(state, source, rng)
  differ = jax.tree.map(lambda u, v: not np.array_equal(u, v), c2.nets["hasher"].params,
                        a.nets["hasher"].params)
  assert any(jax.tree.leaves(differ))   # the source's labels do reach it


def test_dwt_keeps_statistics_per_domain_and_encodes_with_the_target(feature_cache,
                                                                    monkeypatch):
  c, data, method, batch_fn = _built("smoke,mode=dwt,domain=demo", feature_cache, monkeypatch)
  state = method.init(jax.random.key(0))
  stats0 = state.nets["hasher"].batch_stats["dwt"]
  state, _ = method.step(state, batch_fn(0), jax.random.key(1))
  stats = state.nets["hasher"].batch_stats["dwt"]
  assert stats["mean"].shape[0] == 2   # target and source
  moved = np.abs(np.asarray(stats["mean"]) - np.asarray(stats0["mean"])).sum(axis=1)
  assert (moved > 0).all() and not np.allclose(stats["mean"][0], stats["mean"][1])
  x = data.x("query", c.data.input)
  codes = method.encode(state, x)["hash"]
  assert np.isfinite(codes).all()
  # the target's statistics (domain 0) encode; the source's give other codes
  swapped = jax.tree.map(lambda v: v[::-1], stats)
  other = state.nets["hasher"].replace(batch_stats={"dwt": swapped})
  codes_source = method.encode(state.replace(nets={"hasher": other}), x)["hash"]
  assert not np.allclose(codes, codes_source)


@pytest.mark.parametrize("arg", [
    "mode=interclass", "mode=dwt,domain=demo",
    pytest.param("mode=unsupervised_dwt,domain=demo", marks=pytest.mark.slow),  # dihedral: 60 s
    pytest.param("mode=supervised", marks=pytest.mark.slow),
    pytest.param("mode=dwt", marks=pytest.mark.slow),
    pytest.param("mode=unsupervised", marks=pytest.mark.slow)])
def test_each_mode_trains_through_the_cli(arg, tmp_path, feature_cache, monkeypatch):
  monkeypatch.setenv("RSH_CACHE_DIR", str(feature_cache))
  out = cli_main(f"--config=configs/mirs.py:smoke,{arg}", f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  m = results["metrics"]
  assert 0 < m["map@20"] <= 1 and 0 < m["map64/map@5"] <= 1
  assert {"itq", "random_projection"} <= set(results["baselines"])
  history = json.dumps(results["history"])
  for term in ("push", "balance", "interclass" if "interclass" in arg else "hasher_loss"):
    assert term in history, term
  assert ("domain" in results) == ("domain=" in arg)


def test_a_bad_dwt_group_is_one_line(tmp_path, feature_cache, monkeypatch):
  monkeypatch.setenv("RSH_CACHE_DIR", str(feature_cache))
  out = cli_main("--config=configs/mirs.py:smoke,mode=dwt", "--config.model.dwt.group=7",
                 f"--workdir={tmp_path}")
  one_error_line(out, "config.model.dwt.group=7")


def test_a_features_retrieval_grid_shows_the_rows_images(feature_cache, monkeypatch):
  """A vector view's thumbnail is the row's own picture (it was a black square)."""
  from rsh import plots
  c, data, _, _ = _built("smoke,mode=supervised", feature_cache, monkeypatch)
  view = data.view_name(c.data.input)
  for row in (0, 7):
    thumb = plots._thumbnail(data, view, row)
    np.testing.assert_array_equal(thumb, plots.composite(data.images[row].astype(np.float32),
                                                         data.band_names))
    assert thumb.std() > 0.05
