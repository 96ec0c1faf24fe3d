"""The prepared dataset's named views, multi-hot labels and named splits."""

import ml_collections
import numpy as np
import pytest

from rsh import data as rdata
from rsh import features  # noqa: F401  registers the features/<backbone> view
from rsh.data import dataset as rdataset


def _config(source="demo", **data):
  return ml_collections.ConfigDict(dict(seed=0, data=dict(
      dict(source=source, dir=None, cache_dir=None, bands="ms10", n_query=2, n_train=None,
           n_per_class=12, input="pixels"), **data)))


def _toy(n=40, classes=5, multi=True, seed=0):
  rng = np.random.default_rng(seed)
  labels = (rng.random((n, classes)) < 0.3).astype(np.uint8) if multi else (
      rng.integers(0, classes, n))
  return rdata.Dataset(
      images=rng.integers(0, 4096, (n, 64, 64, 13)).astype(np.uint16), labels=labels,
      class_names=[f"c{i}" for i in range(classes)], band_names=rdata.EUROSAT_BANDS,
      source="toy", views={"s1": rng.normal(size=(n, 16, 16, 2)).astype(np.float32)},
      splits={"val": np.arange(5)})


@pytest.fixture
def toy_source(monkeypatch):
  """A multi-label source with a second modality, registered for one test."""
  monkeypatch.setitem(rdataset.SOURCES, "toy",
                      rdataset.Source("toy", lambda **kw: _toy()))


def test_pixels_view_is_the_signed_bands():
  d = rdata.prepare(_config())
  q = d.indices("query")
  np.testing.assert_array_equal(d.x("query", "pixels")[:], d.signed(q))
  np.testing.assert_array_equal(d.train_rows(), d.train_x)
  assert d.view_name(None) == "pixels"
  assert d.view_name("efficientnet_lite0") == "features/efficientnet_lite0"


def test_unknown_view_and_set_are_named():
  d = rdata.prepare(_config())
  with pytest.raises(ValueError, match="unknown data view 'vgg'.*features/efficientnet_lite0"):
    d.view("vgg")
  with pytest.raises(ValueError, match="unknown image set 'val'"):
    d.indices("val")
  with pytest.raises(ValueError, match="unknown data view"):
    rdata.prepare(_config(input="vgg"))  # before anything is trained
  with pytest.raises(ValueError, match="features/resnet50 needs ResNet-50 weights: pass "
                                       "--config.data.weights=PATH"):
    rdata.prepare(_config(input="resnet50"))  # no packaged weights: said up front


def test_features_view_is_computed_once_for_all_rows(monkeypatch):
  from rsh import features
  calls = []

  def fake_extract(backbone, rgb, **kw):
    calls.append((backbone, rgb.shape, kw))
    return rgb.reshape(len(rgb), -1)[:, :8].copy()  # a stand-in: the first 8 values

  monkeypatch.setattr(features, "extract", fake_extract)
  d = rdata.prepare(_config(weights="/w.pth"))
  a = d.x("archive", "efficientnet_lite0")
  t = d.train_rows("features/efficientnet_lite0")
  assert len(calls) == 1 and calls[0][:2] == ("efficientnet_lite0", (len(d.labels), 64, 64, 3))
  assert calls[0][2] == {"weights": "/w.pth"}
  rgb = d.rgb(d.indices("archive"))
  np.testing.assert_array_equal(a, rgb.reshape(len(rgb), -1)[:, :8])
  assert t.shape == (len(d.indices("train")), 8)


def test_multi_hot_labels_modalities_and_shipped_splits(toy_source):
  d = rdata.prepare(_config("toy", n_query=8, n_train=20, n_per_class=None))
  assert d.multi_label and d.labels.dtype == np.uint8 and d.labels.shape == (40, 5)
  q, a, t = d.indices("query"), d.indices("archive"), d.indices("train")
  assert len(q) == 8 and len(a) == 32 and len(t) == 20
  assert not set(q) & set(a) and set(t) <= set(a)
  np.testing.assert_array_equal(d.x("query", "s1"), d.dataset.views["s1"][q])
  np.testing.assert_array_equal(d.indices("val"), np.arange(5))
  assert "val" in d.set_names and "s1" in d.view_names()
  # The same seed gives the same split; another seed another one.
  again = rdata.prepare(_config("toy", n_query=8, n_train=20, n_per_class=None))
  np.testing.assert_array_equal(again.indices("query"), q)
  other = rdata.random_split(40, 8, 20, seed=1)
  assert not np.array_equal(other.query, q)


def test_dataset_checks_multi_hot_views_and_splits():
  ok = _toy()
  with pytest.raises(rdata.DataError, match="view 's1' must have 40 rows"):
    rdata.Dataset(ok.images, ok.labels, ok.class_names, ok.band_names, "toy",
                  views={"s1": np.zeros((39, 2))})
  with pytest.raises(rdata.DataError, match="split 'val'"):
    rdata.Dataset(ok.images, ok.labels, ok.class_names, ok.band_names, "toy",
                  splits={"val": np.array([0, 40])})
  with pytest.raises(rdata.DataError):
    rdata.Dataset(ok.images, ok.labels * 2, ok.class_names, ok.band_names, "toy")


def test_random_split_errors_name_the_value():
  with pytest.raises(rdata.DataError, match="n_query=10 leaves no archive"):
    rdata.random_split(10, 10, None, 0)
  with pytest.raises(rdata.DataError, match="n_train must be in 1..5"):
    rdata.random_split(10, 5, 6, 0)
