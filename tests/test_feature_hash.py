"""The augmented feature views, the hashing MLP method, and configs/ssm_hash.py."""

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh import data as rdata
from rsh import features
from rsh import methods
from rsh.methods import feature_hash
from rsh.models import mlp
from tests.conftest import cli_main, with_overrides


def _config(arg="smoke"):
  spec = importlib.util.spec_from_file_location("ssm_hash", "configs/ssm_hash.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _numpy_dihedral(rgb, k):
  """The reference: k = 4 * flip + rot, rot quarter turns (np.rot90), then a mirror of w."""
  out = np.rot90(rgb, k % 4, axes=(1, 2))
  return np.ascontiguousarray(out[:, :, ::-1] if k >= 4 else out)


def _fake_extract(backbone, rgb, **options):
  """A cheap stand-in for the backbone: position-weighted sums per channel (not
  invariant to any dihedral element)."""
  del backbone, options
  h, w = rgb.shape[1:3]
  weights = np.arange(1, h * w + 1, dtype=np.float32).reshape(1, h, w, 1) ** 1.5
  return np.concatenate([(rgb * weights).sum((1, 2)), (rgb * weights[:, ::-1]).sum((1, 2)),
                         rgb[:, 0, :5].reshape(len(rgb), -1)], axis=1).astype(np.float32)


@pytest.fixture
def prepared(monkeypatch, tmp_path):
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setattr(features, "extract", _fake_extract)
  return rdata.prepare(with_overrides(_config(), {"data.n_per_class": 2}))


def test_dihedral_views_are_the_features_of_each_transform(prepared):
  rgb = prepared.rgb(np.arange(len(prepared.labels)))
  views = prepared.view("efficientnet_lite0/dihedral")
  assert views.shape == (len(rgb), 8, _fake_extract(None, rgb[:1]).shape[1])
  for k in range(8):
    np.testing.assert_allclose(views[:, k], _fake_extract(None, _numpy_dihedral(rgb, k)),
                               rtol=1e-5)
  assert len({tuple(views[0, k].round(-2)) for k in range(8)}) == 8   # 8 distinct transforms
  np.testing.assert_allclose(prepared.view("efficientnet_lite0/dihedral_mean"), views.mean(1),
                             rtol=1e-6)
  np.testing.assert_allclose(prepared.view("efficientnet_lite0"), views[:, 0], rtol=1e-5)  # k = 0
  # Bare names resolve, and a set's rows are rows of the view.
  assert prepared.view_name("efficientnet_lite0/dihedral") == "features/efficientnet_lite0/dihedral"
  np.testing.assert_array_equal(prepared.x("query", "efficientnet_lite0/dihedral"),
                                views[prepared.indices("query")])


@pytest.mark.slow
def test_dihedral_features_equal_the_backbone_on_transformed_images(tmp_path):
  """The real backbone, cached: each transform's features are the backbone run on it."""
  rng = np.random.default_rng(0)
  rgb = rng.uniform(0, 0.5, (3, 32, 32, 3)).astype(np.float32)
  views = features.dihedral_features("efficientnet_lite0", rgb, batch_size=3,
                                     cache_dir=tmp_path, progress=False)
  assert views.shape == (3, 8, 1280)
  for k in (1, 6):
    ref = features.extract("efficientnet_lite0", _numpy_dihedral(rgb, k), batch_size=3,
                           cache=False, progress=False)
    np.testing.assert_allclose(views[:, k], ref, rtol=1e-5, atol=1e-5)
  again = features.dihedral_features("efficientnet_lite0", rgb, batch_size=3,
                                     cache_dir=tmp_path, progress=False)   # from the cache
  np.testing.assert_array_equal(again, views)
  assert len(list((tmp_path / "features").glob("*.npy"))) == 8


def _built(prepared, **changes):
  config = with_overrides(_config(), {"model.hidden": (16,), **changes})
  return config, feature_hash.build(config, prepared)


def test_each_step_feeds_one_of_each_rows_views():
  x = np.random.default_rng(1).normal(size=(6, 8, 5)).astype(np.float32)
  mean, std = np.float32(0.5), np.float32(2.0)
  drawn = np.asarray(feature_hash.draw_inputs(x, jax.random.key(0), mean, std, 0.0))
  standard = (x - mean) / std
  picks = [np.flatnonzero(np.all(np.isclose(standard[i], drawn[i]), axis=1)) for i in range(6)]
  assert all(len(p) == 1 for p in picks), picks
  assert len({int(p[0]) for p in picks}) > 1            # not the same view for every row
  again = np.asarray(feature_hash.draw_inputs(x, jax.random.key(0), mean, std, 0.0))
  np.testing.assert_array_equal(drawn, again)           # seeded
  noisy = np.asarray(feature_hash.draw_inputs(x, jax.random.key(0), mean, std, 0.1))
  assert 0.05 < np.std(noisy - drawn) < 0.2


def test_encoders_read_every_view_of_the_backbone(prepared):
  config, method = _built(prepared)
  state = method.init(jax.random.key(0))
  views = prepared.view("efficientnet_lite0/dihedral")
  enc = method.encoder("features/efficientnet_lite0/dihedral_mean")
  codes = enc(state, views.mean(1))["hash"]
  assert codes.shape == (len(views), 16) and np.all(np.abs(codes) <= 1)
  np.testing.assert_allclose(method.encoder("features/efficientnet_lite0/dihedral")(
      state, views)["hash"], codes, rtol=1e-5, atol=1e-6)   # [n, 8, d] -> the mean's code
  assert set(method.encoders) == {f"features/efficientnet_lite0{s}"
                                  for s in ("", "/dihedral", "/dihedral_mean")}
  with pytest.raises(ValueError, match="encodes the views"):
    method.encoder("pixels")


def test_sigmoid_head_codes_are_thresholds_at_one_half():
  model = mlp.HashMLP(hidden=(8,), bits=8, output="sigmoid")
  x = jnp.asarray(np.random.default_rng(2).normal(size=(5, 4)), jnp.float32)
  out = model.apply(model.init(jax.random.key(0), x), x)
  np.testing.assert_allclose(out["hash"], 2 * out["sigmoid"] - 1, atol=1e-6)
  np.testing.assert_array_equal(out["hash"] >= 0, out["sigmoid"] >= 0.5)


@pytest.mark.parametrize("changes, message", [
    ({"data.input": "pixels"}, "config.data.input='pixels'"),
    ({"model.output": "relu"}, "config.model.output"),
    ({"model.activation": "swish"}, "config.model.activation"),
    ({"model.hidden": (16, 0)}, "config.model.hidden"),
    ({"model.bits": 12}, "config.model.bits"),
    ({"model.noise": -0.1}, "config.model.noise"),
])
def test_bad_settings_name_their_key(prepared, changes, message):
  config = with_overrides(_config(), {"model.hidden": (16,), **changes})
  with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
    feature_hash.build(config, prepared)


def test_a_second_view_for_contrastive_terms(prepared):
  """A term reading `hash_aug` gets a second draw of the same rows' views."""
  config, method = _built(prepared, **{"losses": {
      "nt_xent": dict(weight=1.0, on="hasher", a="hash", b="hash_aug")}})
  state = method.init(jax.random.key(0))
  x = prepared.train_rows("efficientnet_lite0/dihedral")[:8]
  state2, metrics = jax.jit(method.step)(state, {"x": x}, jax.random.key(1))
  assert np.isfinite(float(metrics["hasher/nt_xent"])) and int(state2.step) == 1


def test_registered():
  assert methods.get("feature_hash").build is feature_hash.build


def test_ssm_hash_smoke_trains_through_the_cli(tmp_path, feature_cache, monkeypatch):
  monkeypatch.setenv("RSH_CACHE_DIR", str(feature_cache))  # the images of milan's smoke
  out = cli_main("--config=configs/ssm_hash.py:smoke", f"--workdir={tmp_path / 'run'}")
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  m, b = results["metrics"], results["baselines"]
  for key in ("map@20", "plain/map@20"):
    assert 0 < m[key] <= 1, key
  for name in ("itq_dihedral_mean", "lsh_dihedral_mean", "itq", "random_projection"):
    assert 0 < b[name]["map@20"] <= 1, name
  assert "hasher/semantic" in json.dumps(results["history"])


def test_leave_one_out_retrieval_figure_never_shows_the_query(prepared, tmp_path, monkeypatch):
  from rsh import plots
  shown = []
  monkeypatch.setattr(plots, "_thumbnail", lambda p, view, i: (shown.append(int(i)),
                                                              np.zeros((4, 4, 3)))[1])
  idx = prepared.indices("archive")
  codes = np.random.default_rng(0).choice([-1.0, 1.0], (len(idx), 8))
  plots.retrievals(prepared, codes, codes, tmp_path / "r.png", binary=True, top=5,
                   query="archive", archive="archive", leave_one_out=True)
  rows = np.array(shown).reshape(-1, 6)   # the query, then its 5 retrievals
  assert len(rows) == len(np.unique(prepared.labels[idx]))
  for query, *retrieved in rows:
    assert query not in retrieved and len(set(retrieved)) == 5
  shown.clear()
  plots.retrievals(prepared, codes, codes, tmp_path / "r.png", binary=True, top=5,
                   query="archive", archive="archive")
  assert all(row[0] == row[1] for row in np.array(shown).reshape(-1, 6))   # itself first


def test_the_ssm_of_a_features_view(prepared):
  from rsh import experiment, similarity
  config = _config()
  packed, info = experiment.training_ssm(config, prepared)
  rows = prepared.train_rows("efficientnet_lite0/dihedral_mean")
  ref, _ = similarity.build_ssm(None, spectral="none", spatial_features=rows,
                                k1=info["k1"], k2=info["k2"])
  np.testing.assert_array_equal(packed, ref)
  config.ssm.spatial = "efficientnet_lite0/dihedral"
  with pytest.raises(ValueError, match=r"config.ssm.spatial='efficientnet_lite0/dihedral' is a "
                                       r"view of shape \[\d+, 8, \d+\]"):
    experiment.training_ssm(config, prepared)
