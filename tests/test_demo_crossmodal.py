"""Source "demo_crossmodal": procedural S2 / S1 pairs; and the cache of views and splits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rsh import data as rdata
from rsh.data import __main__ as rmain
from rsh.data import cache
from rsh.data import demo_crossmodal


@pytest.fixture(scope="module")
def ds():
  return rdata.load("demo_crossmodal", seed=0)


def knn_hit_rate(ds, x, k: int = 10) -> float:
  """How often the top class of the k nearest training pairs (per-band means) is a label."""
  train, test = ds.splits["train"], ds.splits["test"]
  f = x.reshape(len(x), -1, x.shape[-1]).mean(1, dtype=np.float64)
  f = (f - f[train].mean(0)) / f[train].std(0)
  d = ((f[test][:, None] - f[train][None]) ** 2).sum(-1)
  votes = ds.labels[train][np.argsort(d, axis=1)[:, :k]].sum(1)
  return float(ds.labels[test][np.arange(len(test)), votes.argmax(1)].mean())


def test_shapes_and_dtypes(ds):
  n = 600
  assert ds.images.shape == (n, 32, 32, 10) and ds.images.dtype == np.uint16
  assert ds.band_names == rdata.MS10
  s1 = ds.views["s1"]
  assert set(ds.views) == {"s1"} and s1.shape == (n, 32, 32, 2) and s1.dtype == np.float32
  assert ds.labels.shape == (n, 8) and ds.labels.dtype == np.uint8 and ds.multi_label
  assert ds.class_names == demo_crossmodal.CLASS_NAMES and len(ds.class_names) == 8
  assert ds.source == "demo_crossmodal"
  assert ds.files[:2] == ("demo_000000", "demo_000001") and ds.files[-1] == "demo_000599"
  assert 0 < ds.images.min() and ds.images.max() < 20000
  assert 300 < np.median(ds.images) < 5000
  assert np.isfinite(s1).all() and -25 < np.median(s1) < 0
  assert np.median(s1[..., 0]) > np.median(s1[..., 1])  # VV above VH
  small = rdata.load("demo_crossmodal", size=16, limit=50, seed=2)
  assert small.images.shape == (50, 16, 16, 10) and small.views["s1"].shape == (50, 16, 16, 2)


def test_splits_partition_the_pairs(ds):
  assert list(ds.splits) == ["train", "val", "test"]
  assert [len(v) for v in ds.splits.values()] == [360, 120, 120]
  rows = np.concatenate(list(ds.splits.values()))
  np.testing.assert_array_equal(np.sort(rows), np.arange(600))
  assert all((np.diff(v) > 0).all() for v in ds.splits.values())
  assert not np.array_equal(ds.splits["test"], np.arange(480, 600))  # shuffled, not blocks


def test_deterministic_in_seed(ds):
  again = rdata.load("demo_crossmodal", seed=0)
  for a, b in [(ds.images, again.images), (ds.labels, again.labels),
               (ds.views["s1"], again.views["s1"])]:
    np.testing.assert_array_equal(a, b)
  for k in ds.splits:
    np.testing.assert_array_equal(ds.splits[k], again.splits[k])
  other = rdata.load("demo_crossmodal", seed=1)
  assert not np.array_equal(ds.labels, other.labels)
  assert not np.array_equal(ds.images, other.images)
  assert not np.array_equal(ds.splits["train"], other.splits["train"])


def test_labels_one_to_three_with_co_occurrence(ds):
  per = ds.labels.sum(1)
  assert per.min() == 1 and per.max() == 3
  assert all(100 < c for c in np.bincount(per)[1:])  # 1, 2 and 3 labels all common
  assert (ds.labels.sum(0) > 40).all()  # every class is used
  def lift(a, b):  # P(a and b) / (P(a) P(b)): 1 for independent labels
    x, y = (ds.labels[:, ds.class_names.index(c)].astype(float) for c in (a, b))
    return (x * y).mean() / (x.mean() * y.mean())

  # Forests go with forests, not with towns.
  assert lift("Broad-leaved forest", "Coniferous forest") > 1.4
  assert lift("Urban fabric", "Coniferous forest") < 0.5


def test_every_label_covers_a_tenth_of_its_scene():
  rng = np.random.default_rng(5)
  labels, count = demo_crossmodal.make_labels(rng, 400)
  layout = demo_crossmodal.make_layout(rng, labels, count, 24)
  for i in range(400):
    own = labels[i, :count[i]]
    assert len(set(own)) == count[i]
    values, pixels = np.unique(layout[i], return_counts=True)
    assert set(values) == set(own), i
    assert (pixels >= 0.1 * 24 * 24).all(), (i, pixels)


def test_both_modalities_carry_the_labels(ds):
  train, test = ds.splits["train"], ds.splits["test"]
  constant = float(ds.labels[test][:, ds.labels[train].sum(0).argmax()].mean())
  s2 = knn_hit_rate(ds, ds.images)
  s1 = knn_hit_rate(ds, ds.views["s1"])
  assert s2 > constant + 0.3, (s2, constant)
  assert s1 > constant + 0.1, (s1, constant)
  assert s2 > s1 + 0.1, (s2, s1)  # S1 is informative, but less than S2
  # Labels that do not belong to the pixels are not predicted.
  rng = np.random.default_rng(0)
  shuffled = rdata.Dataset(ds.images, ds.labels[rng.permutation(len(ds))], ds.class_names,
                           ds.band_names, "shuffled", splits=ds.splits)
  assert knn_hit_rate(shuffled, ds.images) < constant + 0.1


def test_class_names_are_bigearthnet_names():
  constants = pytest.importorskip("bigearthnet_common.constants",
                                  reason="bigearthnet-common is not installed")
  assert set(demo_crossmodal.CLASS_NAMES) <= set(constants.NEW_LABELS)


def test_argument_errors():
  for kwargs, message in [(dict(n_per_class=5), "n_per_class=5 does not apply.*limit"),
                          (dict(dir="x"), "takes no dir"),
                          (dict(limit=0), "limit"), (dict(size=2), "size"),
                          (dict(seed=-1), "seed"), (dict(band_names="rgb"), "band_names only"),
                          (dict(countries="Serbia"), "countries only applies to "
                                                     "source=bigearthnet")]:
    with pytest.raises(rdata.DataError, match=message):
      rdata.load("demo_crossmodal", **kwargs)
  with pytest.raises(rdata.DataError, match="no sub-name"):
    rdata.load("demo_crossmodal:x")


def test_cache_round_trips_views_and_splits(tmp_path):
  ds = rdata.load("demo_crossmodal", limit=20, size=8, seed=4)
  entry = cache.entry_path(tmp_path, "demo_crossmodal", ["test"])
  cache.write(entry, ds)
  assert (entry / "view_s1.npy").is_file() and (entry / "splits.npz").is_file()
  back = cache.read(entry)
  np.testing.assert_array_equal(back.images, ds.images)
  np.testing.assert_array_equal(back.labels, ds.labels)
  assert back.files == ds.files and list(back.views) == ["s1"]
  np.testing.assert_array_equal(back.views["s1"], ds.views["s1"])
  assert back.views["s1"].dtype == np.float32
  assert list(back.splits) == ["train", "val", "test"]
  for k in ds.splits:
    np.testing.assert_array_equal(back.splits[k], ds.splits[k])
  # Any view or split name survives, in order.
  odd = rdata.Dataset(ds.images, ds.labels, ds.class_names, ds.band_names, "x",
                      views={"a/b c": ds.views["s1"], "s1": ds.views["s1"][:, :1]},
                      splits={"file": np.arange(3), "arr_0": np.arange(2)})
  cache.write(entry, odd)
  back = cache.read(entry)
  assert list(back.views) == ["a/b c", "s1"] and back.views["s1"].shape == (20, 1, 8, 2)
  assert {k: v.tolist() for k, v in back.splits.items()} == {"file": [0, 1, 2], "arr_0": [0, 1]}


def test_cache_reads_entries_without_views_or_splits(tmp_path):
  ds = rdata.load("demo_crossmodal", limit=10, size=8)
  entry = cache.entry_path(tmp_path, "demo_crossmodal", ["old"])
  cache.write(entry, ds)
  meta = json.loads((entry / "meta.json").read_text())
  for key in ("views", "splits"):  # as written before they existed
    del meta[key]
  (entry / "meta.json").write_text(json.dumps(meta))
  (entry / "view_s1.npy").unlink()
  (entry / "splits.npz").unlink()
  back = cache.read(entry)
  assert back is not None and back.views is None and back.splits is None
  np.testing.assert_array_equal(back.images, ds.images)


def test_summary_cli(capsys):
  assert rmain.main(["--source=demo_crossmodal", "--limit", "100", "--size", "16"]) == 0
  out = capsys.readouterr().out
  for line in ["source: demo_crossmodal", "pairs: 100 (S2 16x16 px, 10 bands uint16; "
               "S1 16x16 px, 2 channels float32 dB)", "labels (8)", "Inland waters",
               "splits: train 60, val 20, test 20, in none 0", "S2 (raw DN)", "S1 (dB)",
               "  VV ", "  VH ", "  B8A "]:
    assert line in out, line
  assert "dropped" not in out  # no filters here
  assert rmain.main(["--source=demo_crossmodal", "--n_per_class", "3"]) == 2
  assert capsys.readouterr().err.strip().startswith("error: n_per_class=3 does not apply")
  # EuroSAT-style summaries are unchanged.
  assert rmain.main(["--source=demo", "--n_per_class", "2"]) == 0
  out = capsys.readouterr().out
  assert "classes (10):" in out and "total: 20 images, 64x64 px, uint16" in out
