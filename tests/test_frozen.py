"""rsh.frozen: augmentations drawn in the step and a frozen backbone inside it."""

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh import data as rdata
from rsh import frozen
from rsh.methods import feature_hash
from tests.conftest import cli_main, with_overrides


def _config(arg="smoke,views=backbone,mode=unsupervised"):
  spec = importlib.util.spec_from_file_location("milan", "configs/milan.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_augment_rgb_draws_per_image_and_per_rng():
  rgb = np.random.default_rng(0).uniform(0, 1, (6, 16, 16, 3)).astype(np.float32)
  aug = frozen.augmentation({"crop": 8}, size=16)
  a = np.asarray(frozen.augment_rgb(rgb, jax.random.key(1), aug))
  assert a.shape == rgb.shape and a.min() >= 0 and a.max() <= 1
  np.testing.assert_array_equal(a, frozen.augment_rgb(rgb, jax.random.key(1), aug))
  assert not np.allclose(a, frozen.augment_rgb(rgb, jax.random.key(2), aug))
  none = frozen.augmentation({"crop": None, "gain": None, "dihedral": False}, size=16)
  np.testing.assert_array_equal(frozen.augment_rgb(rgb, jax.random.key(1), none), rgb)
  gain = frozen.augmentation({"crop": None, "gain": (0.5, 0.5), "dihedral": False}, size=16)
  np.testing.assert_allclose(frozen.augment_rgb(rgb, jax.random.key(1), gain), rgb * 0.5,
                             rtol=1e-6)


@pytest.mark.parametrize("cfg, message", [
    ({"crop": 17}, r"crop must be an int in 1\.\.16"),
    ({"crop": 2.5}, "crop"),
    ({"gain": (1.2, 0.8)}, "gain must be"),
    ({"gain": (0.0, 1.0)}, "gain must be"),
    ({"dihedral": "yes"}, "dihedral must be"),
    ({"flip": True}, "unknown keys"),
])
def test_bad_augmentations_are_named(cfg, message):
  with pytest.raises(ValueError, match=message):
    frozen.augmentation({"crop": 8, **cfg}, size=16, where="config.model.augment")


@pytest.fixture(scope="module")
def built(feature_cache):
  mp = pytest.MonkeyPatch()
  mp.setenv("RSH_CACHE_DIR", str(feature_cache))
  config = _config()   # the smoke data of configs/milan.py: features shared via the cache
  prepared = rdata.prepare(config)
  yield config, prepared, feature_hash.build(config, prepared)
  mp.undo()


def test_the_backbone_is_never_updated_and_encodes_like_the_cached_view(built):
  config, prepared, method = built
  state = method.init(jax.random.key(0))
  x = prepared.train_rows("pixels")[:4]
  step = jax.jit(method.step)
  new = state
  for i in range(2):
    new, metrics = step(new, {"x": x}, jax.random.key(i))
  assert np.isfinite(float(metrics["hasher_loss"])) and int(new.step) == 2
  same = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)),
                                state.nets["backbone"], new.nets["backbone"])
  assert all(jax.tree_util.tree_leaves(same))
  assert jax.tree_util.tree_leaves(state.nets["backbone"].params)
  moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)),
                                 state.nets["hasher"].params, new.nets["hasher"].params)
  assert not all(jax.tree_util.tree_leaves(moved))
  # Images through the backbone in the encoder = the cached features of the same images.
  q = prepared.indices("query")
  from_pixels = method.encoder("pixels")(new, prepared.x("query", "pixels"))
  from_cache = method.encoder("features/efficientnet_lite0")(
      new, prepared.view("efficientnet_lite0")[q])
  np.testing.assert_allclose(from_pixels["sigmoid"], from_cache["sigmoid"], atol=1e-4)


def test_two_draws_of_one_batch_differ(built):
  """The augmentations are random per step: the step's two views are not equal."""
  config, prepared, method = built
  state = method.init(jax.random.key(0))
  x = prepared.train_rows("pixels")[:4]
  _, m1 = jax.jit(method.step)(state, {"x": x}, jax.random.key(0))
  _, m2 = jax.jit(method.step)(state, {"x": x}, jax.random.key(1))
  assert float(m1["hasher/nt_xent"]) != float(m2["hasher/nt_xent"])


@pytest.mark.parametrize("changes, message", [
    ({"data.input": "efficientnet_lite0"}, "set config.data.input='pixels'"),
    ({"data.bands": "B08,B11"}, "needs the bands B04 B03 B02"),
])
def test_bad_backbone_settings(changes, message, tmp_path, monkeypatch):
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path))
  config = with_overrides(_config(), {"data.n_per_class": 3, **changes})
  with pytest.raises(ValueError, match=message):
    feature_hash.build(config, rdata.prepare(config))


@pytest.mark.slow
def test_a_backbone_run_checkpoints_and_resumes(tmp_path, feature_cache, monkeypatch):
  """The frozen net (no optimiser state) goes through orbax and back (slow: two
  compilations of the backbone step, about 40 s)."""
  monkeypatch.setenv("RSH_CACHE_DIR", str(feature_cache))
  args = ("--config=configs/milan.py:smoke,views=backbone,mode=unsupervised",
          f"--workdir={tmp_path / 'run'}", "--config.train.batch_size=4")
  out = cli_main(*args, "--config.train.num_steps=2")
  assert out.returncode == 0, out.stderr[-3000:]
  out = cli_main(*args, "--config.train.num_steps=4")
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert max(row["step"] for row in results["history"]) == 4
  assert 0 < results["metrics"]["map@20"] <= 1
