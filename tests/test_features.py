"""rsh.features: preprocessing, batching, the on-disk cache and the CLI."""

import jax
import numpy as np
import pytest

from rsh import features
from rsh import weights as rweights
from rsh.models import efficientnet


@pytest.fixture(scope="module")
def rgb():
  """f32[3, 16, 16, 3] in [0, 1]: three small, different images."""
  return np.random.default_rng(0).uniform(0, 0.5, (3, 16, 16, 3)).astype(np.float32)


def test_extract_preprocesses_batches_and_caches(rgb, tmp_path, monkeypatch):
  feats = features.extract("efficientnet_lite0", rgb, batch_size=2, cache_dir=tmp_path,
                           progress=False)
  assert feats.shape == (3, 1280) and feats.dtype == np.float32
  assert np.isfinite(feats).all() and not np.allclose(feats[0], feats[1])
  assert len(list((tmp_path / "features").glob("efficientnet_lite0-*.npy"))) == 1

  # What extract promises: gain and clip, bilinear resize to 224, (x - mean) / std,
  # then the pooled 1280-d head. The padded last batch does not leak into row 2.
  variables = rweights.load_pretrained("efficientnet_lite0", cache_dir=tmp_path)
  model = efficientnet.EfficientNetLite0()
  x = np.clip(rgb * features.DEFAULT_GAIN, 0, 1)
  x = jax.image.resize(x, (3, 224, 224, 3), "bilinear")
  x = (x - np.float32(efficientnet.MEAN)) / np.float32(efficientnet.STD)
  want = jax.jit(lambda v, x: model.apply(v, x, method=model.features))(variables, x)
  np.testing.assert_allclose(feats, want, atol=1e-4, rtol=1e-4)

  # The second call is served from disk: no forward pass, no weights.
  monkeypatch.setattr(features, "_compute", lambda *a, **k: pytest.fail("recomputed"))
  monkeypatch.setattr(rweights, "load_pretrained", lambda *a, **k: pytest.fail("reloaded"))
  again = features.extract("efficientnet_lite0", rgb, batch_size=2, cache_dir=tmp_path,
                           progress=False)
  np.testing.assert_array_equal(again, feats)

  # Another gain is another key.
  with pytest.raises(pytest.fail.Exception, match="reloaded"):
    features.extract("efficientnet_lite0", rgb, gain=1.0, cache_dir=tmp_path, progress=False)


def test_cache_key_stands_for_the_data(rgb, tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(features, "_compute",
                      lambda name, v, x, **k: calls.append(len(x)) or np.ones((len(x), 1280),
                                                                              np.float32))
  monkeypatch.setattr(features, "fingerprint", lambda x: pytest.fail("hashed the data"))
  first = features.extract("efficientnet_lite0", rgb, cache_key="eurosat-rgb-v1",
                           cache_dir=tmp_path, progress=False)
  # The caller vouches that equal keys mean equal images; a new key recomputes.
  second = features.extract("efficientnet_lite0", rgb, cache_key="eurosat-rgb-v1",
                            cache_dir=tmp_path, progress=False)
  features.extract("efficientnet_lite0", rgb, cache_key="other", cache_dir=tmp_path,
                   progress=False)
  assert calls == [3, 3]
  np.testing.assert_array_equal(first, second)
  # cache=False neither reads nor writes.
  features.extract("efficientnet_lite0", rgb, cache=False, cache_dir=tmp_path, progress=False)
  assert calls == [3, 3, 3]


def test_fingerprint_is_content_shape_and_dtype():
  a = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
  assert features.fingerprint(a) == features.fingerprint(a.copy())
  assert features.fingerprint(a) != features.fingerprint(a.reshape(4, 3))
  assert features.fingerprint(a) != features.fingerprint(a.astype(np.float64))
  b = a.copy()
  b[1, 1, 2] += 1
  assert features.fingerprint(a) != features.fingerprint(b)
  assert features.fingerprint(a[:, ::-1]) == features.fingerprint(np.ascontiguousarray(a[:, ::-1]))


def test_unknown_backbone_and_missing_weights(rgb, tmp_path):
  with pytest.raises(ValueError, match="efficientnet_lite0, inception_v3, resnet50"):
    features.extract("vgg16", rgb, cache_dir=tmp_path)
  with pytest.raises(FileNotFoundError, match="inception_v3_google-0cc3c7bd.pth"):
    features.extract("inception_v3", rgb, cache_dir=tmp_path, progress=False)
  with pytest.raises(FileNotFoundError, match="resnet50-"):
    features.extract("resnet50", rgb, weights=tmp_path / "none.pth", cache_dir=tmp_path)
  with pytest.raises(ValueError, match=r"\[n, h, w, 3\]"):
    features.extract("efficientnet_lite0", rgb[..., :2], cache_dir=tmp_path)
  assert {b.feature_dim for b in features.BACKBONES.values()} == {1280, 2048}


def test_cli_rejects_unknown_backbone(capsys):
  with pytest.raises(SystemExit) as e:  # argparse's exit, as `python -m rsh.features` ends
    features.main(["--backbone=vgg16"])
  err = capsys.readouterr().err
  assert e.value.code == 2
  assert "invalid choice: 'vgg16'" in err
  assert "efficientnet_lite0" in err and "resnet50" in err
  assert "Traceback" not in err


def _data_layer():
  rdata = pytest.importorskip("rsh.data")
  if not hasattr(rdata, "load"):
    pytest.skip("rsh.data.load not available yet")
  return rdata


def test_cli_on_demo_data(tmp_path, capsys):
  _data_layer()
  rc = features.main(["--source=demo", "--n_per_class=1", "--batch_size=8",
                      f"--cache_dir={tmp_path}", "--no_progress"])
  out = capsys.readouterr().out
  assert rc == 0, out
  assert "dim=1280" in out and "images/s" in out and str(tmp_path / "features") in out
  assert features.main(["--source=demo", "--n_per_class=1", "--batch_size=8",
                        f"--cache_dir={tmp_path}", "--no_progress"]) == 0
  assert "from cache" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_dihedral_caches_the_eight_transforms(tmp_path, capsys):
  _data_layer()
  args = ["--source=demo", "--n_per_class=1", "--batch_size=10", f"--cache_dir={tmp_path}",
          "--no_progress", "--dihedral"]
  assert features.main(args) == 0, capsys.readouterr()
  assert len(list((tmp_path / "features").glob("*.npy"))) == 8   # k = 0 is the plain one
  assert features.main(args) == 0 and "from cache" in capsys.readouterr().out


def test_cli_data_errors_are_one_line(tmp_path, capsys):
  _data_layer()
  rc = features.main(["--source=folder", f"--dir={tmp_path / 'missing'}",
                      f"--cache_dir={tmp_path}"])
  err = capsys.readouterr().err
  assert rc == 2 and err.startswith("error: ") and "Traceback" not in err


@pytest.mark.slow
def test_cli_on_real_eurosat(eurosat_dir, tmp_path, capsys):
  _data_layer()
  rc = features.main(["--source=folder", f"--dir={eurosat_dir}", f"--cache_dir={tmp_path}",
                      "--batch_size=32", "--no_progress"])
  out = capsys.readouterr().out
  assert rc == 0 and "n=369 dim=1280" in out, out
