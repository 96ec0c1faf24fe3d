"""Tests of rsh.data: sources, bands, normalisation, splits and batches."""

import itertools
import os
import pathlib
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings, strategies as st

from rsh import data as rdata
from rsh.data import cache as rcache

REPO = pathlib.Path(__file__).resolve().parents[1]


def _write_folder(root, classes=("A", "B"), n=2, bands=13, dtype=np.uint16, size=64, seed=0):
  """A tiny `<Class>/*.tif` folder; returns {relative path: array}."""
  rng = np.random.default_rng(seed)
  out = {}
  for c in classes:
    (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
      x = rng.integers(0, 5000, (size, size, bands)).astype(dtype)
      tifffile.imwrite(root / c / f"{c}_{i + 1}.tif", x)
      out[f"{c}/{c}_{i + 1}.tif"] = x
  return out


def _cache_entries(cache):
  d = pathlib.Path(cache) / "data"
  return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.fixture
def folder(tmp_path):
  root = tmp_path / "ms"
  return root, _write_folder(root)


@pytest.fixture(scope="module")
def demo_small():
  return rdata.load("demo", n_per_class=4, seed=3)


# -- bands and normalisation ---------------------------------------------------


def test_band_presets():
  assert rdata.resolve_bands("ms10") == ("B02", "B03", "B04", "B05", "B06", "B07", "B08",
                                         "B8A", "B11", "B12")
  assert rdata.resolve_bands("RGB") == ("B04", "B03", "B02")
  assert rdata.resolve_bands("all") == rdata.EUROSAT_BANDS
  assert rdata.EUROSAT_BANDS[9] == "B10" and rdata.EUROSAT_BANDS[12] == "B8A"
  assert rdata.resolve_bands("b04, B8a") == ("B04", "B8A")
  assert rdata.resolve_bands(["B02"]) == ("B02",)
  # The paper's 10 bands sit at these GeoTIFF positions.
  assert rdata.band_indices(rdata.EUROSAT_BANDS, "ms10") == [1, 2, 3, 4, 5, 6, 7, 12, 10, 11]


@pytest.mark.parametrize("spec, named", [("ms99", "ms99"), ("B02,B13", "B13"), (["B1"], "B1"),
                                         ("B02,B02", "B02"), ("", "no bands")])
def test_bad_bands_are_named(spec, named):
  with pytest.raises(rdata.DataError, match=named):
    rdata.resolve_bands(spec)


def test_band_indices_missing_band():
  with pytest.raises(rdata.DataError, match="B05"):
    rdata.band_indices(("B04", "B03", "B02"), "B05")
  assert rdata.band_indices(("B04", "B03", "B02"), "all") == [0, 1, 2]


def test_select_bands(demo_small):
  rgb = rdata.select_bands(demo_small, "rgb")
  assert rgb.band_names == ("B04", "B03", "B02") and rgb.images.shape[-1] == 3
  np.testing.assert_array_equal(rgb.images[..., 0], demo_small.images[..., 3])
  np.testing.assert_array_equal(rgb.labels, demo_small.labels)
  assert rdata.select_bands(rgb, "B02").images.shape[-1] == 1
  with pytest.raises(rdata.DataError, match="B08"):
    rdata.select_bands(rgb, "ms10")


def test_normalise_values():
  x = np.array([0, 1, 2047, 4095, 4096, 65535], np.uint16)
  y = rdata.normalise(x)
  assert y.dtype == np.float32
  np.testing.assert_allclose(y, [0, 1 / 4095, 2047 / 4095, 1, 1, 1], rtol=1e-6)
  np.testing.assert_allclose(rdata.to_signed(y), 2 * y - 1, rtol=1e-6)
  assert rdata.to_signed(np.float32(0)) == -1 and rdata.to_signed(np.float32(1)) == 1
  np.testing.assert_allclose(rdata.normalise(np.array([-3.0, 8190.0])), [0, 1])


def test_normalise_jax():
  import jax
  import jax.numpy as jnp
  x = jnp.array([0, 4095, 9000], jnp.uint16)
  y = rdata.normalise(x)
  assert isinstance(y, jax.Array) and y.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y), [0, 1, 1])
  z = jax.jit(lambda v: rdata.to_signed(rdata.normalise(v)))(x)
  np.testing.assert_allclose(np.asarray(z), [-1, 1, 1], atol=1e-6)  # XLA: x * (1 / 4095)
  with pytest.raises(rdata.DataError, match="non-finite"):
    rdata.normalise(jnp.array([1.0, jnp.nan]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_normalise_rejects_non_finite(bad):
  with pytest.raises(rdata.DataError, match="non-finite"):
    rdata.normalise(np.array([1.0, bad], np.float32))
  with pytest.raises(rdata.DataError, match="non-finite"):
    rdata.to_signed(np.array([bad]))


def test_dataset_validates():
  images = np.zeros((2, 64, 64, 3), np.uint16)
  ok = dict(images=images, labels=np.array([0, 1]), class_names=("a", "b"),
            band_names=("B04", "B03", "B02"), source="t")
  assert rdata.Dataset(**ok).labels.dtype == np.int32
  bad = [dict(images=images.astype(np.float32)), dict(labels=np.array([0, 2])),
         dict(labels=np.array([0])), dict(band_names=("B04", "B03")),
         dict(band_names=("B04", "B03", "B99")), dict(files=("x",)),
         dict(class_names=("a", "a"))]
  for change in bad:
    with pytest.raises(rdata.DataError):
      rdata.Dataset(**{**ok, **change})


# -- folder source -------------------------------------------------------------


def test_folder_reads_layout(folder, tmp_path):
  root, arrays = folder
  (root / "A" / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
  ds = rdata.load("folder", dir=root, cache_dir=tmp_path / "c")
  assert ds.class_names == ("A", "B") and ds.band_names == rdata.EUROSAT_BANDS
  assert ds.files == tuple(arrays) and ds.source == "folder"
  np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1])
  np.testing.assert_array_equal(ds.images, np.stack(list(arrays.values())))


def test_folder_files_in_natural_order(tmp_path):
  root = tmp_path / "ms"
  (root / "A").mkdir(parents=True)
  for i in (10, 2, 1):
    tifffile.imwrite(root / "A" / f"A_{i}.tif", np.full((64, 64, 13), i, np.uint16))
  ds = rdata.load("folder", dir=root, cache_dir=False)
  assert ds.files == ("A/A_1.tif", "A/A_2.tif", "A/A_10.tif")
  assert ds.images[:, 0, 0, 0].tolist() == [1, 2, 10]


def _corrupt(root):
  bad = root / "B" / "B_2.tif"
  bad.write_bytes(bad.read_bytes()[:3000])
  return bad


@pytest.mark.parametrize("make_bad, message", [
    (lambda r: r / "missing", "does not exist"),
    (lambda r: _corrupt(r), "B_2.tif"),
    (lambda r: (r / "B" / "B_9.tif").write_bytes(b"not a tiff at all") and r / "B" / "B_9.tif",
     "B_9.tif"),
    (lambda r: (r / "B" / "notes.txt").write_text("hello") and r / "B" / "notes.txt",
     "notes.txt"),
    (lambda r: tifffile.imwrite(r / "B" / "B_9.tif", np.zeros((32, 32, 13), np.uint16))
     or r / "B" / "B_9.tif", "32x32"),
    (lambda r: tifffile.imwrite(r / "B" / "B_9.tif", np.zeros((64, 64, 12), np.uint16))
     or r / "B" / "B_9.tif", "12 bands"),
    (lambda r: (r / "C").mkdir() or r / "C", "no .tif images"),
    (lambda r: tifffile.imwrite(r / "B" / "B_9.tif", np.full((64, 64, 13), np.nan, np.float32))
     or r / "B" / "B_9.tif", "non-finite"),
    (lambda r: tifffile.imwrite(r / "B" / "B_9.tif", np.full((64, 64, 13), -5, np.int16))
     or r / "B" / "B_9.tif", "16-bit"),
])
def test_folder_errors_name_the_file(folder, tmp_path, make_bad, message):
  root, _ = folder
  bad = make_bad(root)
  cache = tmp_path / "cache"
  target = bad if bad.name == "missing" else root
  with pytest.raises(rdata.DataError, match=message) as e:
    rdata.load("folder", dir=target, cache_dir=cache)
  assert str(bad) in str(e.value)
  assert _cache_entries(cache) == []  # nothing half-written


def test_folder_empty_and_missing(tmp_path):
  with pytest.raises(rdata.DataError, match="no class folders"):
    rdata.load("folder", dir=tmp_path, cache_dir=False)
  with pytest.raises(rdata.DataError, match="needs dir"):
    rdata.load("folder", cache_dir=False)
  (tmp_path / "x.tif").write_bytes(b"")
  with pytest.raises(rdata.DataError, match="not a directory"):
    rdata.load("folder", dir=tmp_path / "x.tif", cache_dir=False)


def test_folder_other_band_counts(tmp_path):
  root = tmp_path / "rgb"
  arrays = _write_folder(root, bands=3)
  with pytest.raises(rdata.DataError, match="band_names"):
    rdata.load("folder", dir=root, cache_dir=False)
  ds = rdata.load("folder", dir=root, cache_dir=False, band_names="B04,B03,B02")
  assert ds.band_names == ("B04", "B03", "B02")
  np.testing.assert_array_equal(ds.images, np.stack(list(arrays.values())))
  with pytest.raises(rdata.DataError, match="band_names lists 2"):
    rdata.load("folder", dir=root, cache_dir=False, band_names="B04,B03")


def test_folder_float_and_planar_tiffs(tmp_path):
  root = tmp_path / "f"
  (root / "A").mkdir(parents=True)
  x = np.random.default_rng(0).integers(0, 9000, (64, 64, 13)).astype(np.uint16)
  tifffile.imwrite(root / "A" / "a1.tif", x.astype(np.float32))
  tifffile.imwrite(root / "A" / "a2.tiff", np.moveaxis(x, -1, 0), planarconfig="separate")
  ds = rdata.load("folder", dir=root, cache_dir=False)
  np.testing.assert_array_equal(ds.images[0], x)
  np.testing.assert_array_equal(ds.images[1], x)


def test_folder_cache(folder, tmp_path, monkeypatch):
  root, _ = folder
  cache = tmp_path / "cache"
  first = rdata.load("folder", dir=root, cache_dir=cache)
  assert len(_cache_entries(cache)) == 1

  def no_reading(*a, **k):
    raise AssertionError("read a TIFF despite the cache")
  with monkeypatch.context() as m:
    m.setattr(tifffile, "imread", no_reading)
    again = rdata.load("folder", dir=root, cache_dir=cache)
  np.testing.assert_array_equal(again.images, first.images)
  assert again.files == first.files and again.class_names == first.class_names

  # A changed file is a new key: read again.
  x = np.full((64, 64, 13), 7, np.uint16)
  tifffile.imwrite(root / "A" / "A_1.tif", x)
  os.utime(root / "A" / "A_1.tif", ns=(1, 1))
  changed = rdata.load("folder", dir=root, cache_dir=cache)
  np.testing.assert_array_equal(changed.images[0], x)
  assert len(_cache_entries(cache)) == 1  # the new entry supersedes the old one


def test_cache_off_and_env(folder, tmp_path, monkeypatch):
  root, _ = folder
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "env"))
  for off in (False, "none"):
    rdata.load("folder", dir=root, cache_dir=off)
  assert not (tmp_path / "env").exists()
  rdata.load("folder", dir=root)
  assert len(_cache_entries(tmp_path / "env")) == 1


def test_cache_write_failure_leaves_nothing(folder, tmp_path, monkeypatch):
  root, _ = folder
  cache = tmp_path / "cache"
  calls = []

  def dying_save(path, *a, **k):
    calls.append(path)
    if len(calls) == 2:
      raise OSError("disk full")
    return np.lib.format.write_array(open(path, "wb"), *a)
  with monkeypatch.context() as m:
    m.setattr(rcache.np, "save", dying_save)
    ds = rdata.load("folder", dir=root, cache_dir=cache)
  assert len(ds) == 4 and calls
  assert list((cache / "data").iterdir()) == []  # no entry, no temp folder


def test_damaged_cache_is_read_again(folder, tmp_path):
  root, _ = folder
  cache = tmp_path / "cache"
  first = rdata.load("folder", dir=root, cache_dir=cache)
  (entry,) = _cache_entries(cache)
  (cache / "data" / entry / "images.npy").write_bytes(b"garbage")
  again = rdata.load("folder", dir=root, cache_dir=cache)
  np.testing.assert_array_equal(again.images, first.images)
  # ... and the cache is repaired.
  np.testing.assert_array_equal(np.load(cache / "data" / entry / "images.npy"), first.images)


def test_n_per_class_subsample(tmp_path):
  root = tmp_path / "ms"
  _write_folder(root, n=5)
  ds = rdata.load("folder", dir=root, cache_dir=False, n_per_class=3, seed=1)
  assert ds.counts() == {"A": 3, "B": 3}
  again = rdata.load("folder", dir=root, cache_dir=False, n_per_class=3, seed=1)
  assert ds.files == again.files
  assert len(rdata.load("folder", dir=root, cache_dir=False, n_per_class=99)) == 10


def test_load_argument_errors(folder):
  root, _ = folder
  for kwargs, message in [(dict(source="nope"), "nope"),
                          (dict(source="folder", dir=root, split="train"), "split"),
                          (dict(source="demo", band_names="rgb"), "band_names"),
                          (dict(source="demo", n_per_class=0), "n_per_class"),
                          (dict(source="tfds:eurosat/xyz"), "eurosat/xyz")]:
    with pytest.raises(rdata.DataError, match=message):
      rdata.load(**kwargs)


# -- the real EuroSAT-MS files ---------------------------------------------------


def test_real_eurosat_folder(eurosat_dir, tmp_path):
  ds = rdata.load("folder", dir=eurosat_dir, cache_dir=tmp_path)
  assert ds.class_names == rdata.EUROSAT_CLASSES
  assert len(ds) == 369 and ds.images.shape == (369, 64, 64, 13)
  counts = {c.name: len(list(c.glob("*.tif"))) for c in eurosat_dir.iterdir()}
  assert ds.counts() == counts
  b = dict(zip(ds.band_names, np.moveaxis(ds.images, -1, 0)))
  assert b["B10"].mean() < 50 and b["B10"].max() < 100   # cirrus: ~nothing
  assert (ds.images > rdata.MAX_DN).any()                # hence the clipping
  assert 0.005 < (ds.images > rdata.MAX_DN).mean() < 0.05
  # B8A is the narrow NIR band: it tracks the broad NIR B08 closely.
  assert np.corrcoef(b["B08"].ravel(), b["B8A"].ravel())[0, 1] > 0.9
  x = rdata.normalise(rdata.select_bands(ds, "ms10").images)
  assert x.shape[-1] == 10 and x.min() >= 0 and x.max() == 1
  cached = rdata.load("folder", dir=eurosat_dir, cache_dir=tmp_path)
  np.testing.assert_array_equal(cached.images, ds.images)


# -- tfds --------------------------------------------------------------------------


def test_tfds_band_order_constants():
  assert sorted(rdata.TFDS_EUROSAT_ALL_BANDS) == sorted(rdata.BANDS)
  assert len(set(rdata.TFDS_EUROSAT_ALL_BANDS)) == 13
  assert set(rdata.TFDS_EUROSAT_RGB_BANDS) <= set(rdata.BANDS)


def test_tfds_missing_package(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
  with pytest.raises(rdata.DataError, match=r"pip install rsh\[tfds\]") as e:
    rdata.load("tfds")
  assert "--source=folder" in str(e.value)


def test_tfds_missing_data(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(rdata.DataError, match="not prepared") as e:
    rdata.load("tfds", dir=tmp_path / "tfds", cache_dir=False)
  assert str(tmp_path / "tfds") in str(e.value) and "tfds build eurosat/all" in str(e.value)


def _fake_tfds(examples, names, n=None):
  """A stand-in tensorflow_datasets module serving `examples` TF-free."""
  class Builder:
    data_dir = "/fake/eurosat"
    info = types.SimpleNamespace(
        features={"label": types.SimpleNamespace(names=names)},
        splits={"train": types.SimpleNamespace(num_examples=len(examples) if n is None else n)})

    def is_prepared(self):
      return True

    def as_data_source(self, split):
      assert split == "train"
      return examples
  return types.SimpleNamespace(builder=lambda name, data_dir=None: Builder())


def test_tfds_all_and_rgb_with_a_fake_module(monkeypatch):
  rng = np.random.default_rng(0)
  names = list(rdata.EUROSAT_CLASSES)
  ms = [rng.integers(0, 9000, (64, 64, 13)).astype(np.float32) for _ in range(3)]
  examples = [{"sentinel2": ms[0], "label": 2, "filename": b"Forest_9.tif"},
              {"sentinel2": ms[1], "label": 1, "filename": b"Forest_10.tif"},
              {"sentinel2": ms[2], "label": 1, "filename": b"Forest_2.tif"}]
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(examples, names))
  ds = rdata.load("tfds", cache_dir=False)
  assert ds.band_names == rdata.TFDS_EUROSAT_ALL_BANDS and ds.source == "tfds:eurosat/all"
  assert ds.files == ("Forest_2.tif", "Forest_10.tif", "Forest_9.tif")
  np.testing.assert_array_equal(ds.labels, [1, 1, 2])
  np.testing.assert_array_equal(ds.images[0], ms[2].astype(np.uint16))

  rgb = [{"image": np.array([[[0, 255, 51]]], np.uint8).repeat(64, 0).repeat(64, 1),
          "label": 0, "filename": "a.jpg"}]
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(rgb, names))
  ds = rdata.load("tfds:eurosat/rgb", cache_dir=False)
  assert ds.band_names == ("B04", "B03", "B02")
  np.testing.assert_allclose(rdata.normalise(ds.images[0, 0, 0]), [0, 1, 0.2], atol=1e-3)

  bad = [{**examples[0], "sentinel2": np.full((64, 64, 13), np.nan, np.float32)}]
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(bad, names))
  with pytest.raises(rdata.DataError, match="Forest_9.tif"):
    rdata.load("tfds", cache_dir=False)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(examples, names, n=5))
  with pytest.raises(rdata.DataError, match="prepare it again"):
    rdata.load("tfds", cache_dir=False)


# -- demo ------------------------------------------------------------------------


def _cosine_knn_map(images, labels):
  """MAP of every image against all others, ranked by cosine on normalised pixels."""
  f = rdata.normalise(images).reshape(len(images), -1)
  f /= np.linalg.norm(f, axis=1, keepdims=True)
  s = f @ f.T
  np.fill_diagonal(s, -np.inf)
  rel = labels[np.argsort(-s, axis=1)[:, :-1]] == labels[:, None]
  precision = np.cumsum(rel, 1) / np.arange(1, rel.shape[1] + 1)
  return float(((precision * rel).sum(1) / rel.sum(1)).mean())


def test_demo_shape_and_determinism():
  a = rdata.load("demo", n_per_class=3, seed=7)
  b = rdata.load("demo", n_per_class=3, seed=7)
  c = rdata.load("demo", n_per_class=3, seed=8)
  assert a.images.shape == (30, 64, 64, 13) and a.images.dtype == np.uint16
  assert a.class_names == rdata.EUROSAT_CLASSES and a.band_names == rdata.EUROSAT_BANDS
  np.testing.assert_array_equal(a.images, b.images)
  assert not np.array_equal(a.images, c.images)
  assert a.counts() == dict.fromkeys(rdata.EUROSAT_CLASSES, 3)


def test_demo_radiometry_and_speed():
  start = time.perf_counter()
  ds = rdata.load("demo")  # 100 per class
  elapsed = time.perf_counter() - start
  assert len(ds) == 1000
  assert elapsed < 5, f"demo took {elapsed:.1f} s"  # ~0.5 s on one core
  b = dict(zip(ds.band_names, np.moveaxis(ds.images, -1, 0)))
  assert b["B10"].mean() < 50
  assert 0.001 < (ds.images > rdata.MAX_DN).mean() < 0.05
  by_class = {c: ds.images[ds.labels == i].mean(axis=(0, 1, 2))
              for i, c in enumerate(ds.class_names)}
  ndvi = {c: (m[7] - m[3]) / (m[7] + m[3]) for c, m in by_class.items()}
  assert ndvi["Forest"] > 0.5 and ndvi["Pasture"] > 0.5 and ndvi["SeaLake"] < 0
  assert ndvi["Industrial"] < ndvi["AnnualCrop"] < ndvi["Pasture"]


def test_demo_retrieval_is_meaningful_not_trivial():
  ds = rdata.load("demo", n_per_class=40, seed=0)
  m = _cosine_knn_map(ds.images, ds.labels)
  assert 0.25 < m < 0.75, m   # chance is 0.1


# -- splits and batches ------------------------------------------------------------


def test_paper_split_properties():
  labels = np.repeat(np.arange(4), [10, 12, 15, 11])
  s = rdata.paper_split(labels, 3, 5, seed=0)
  for part in s:
    assert part.dtype == np.int64 and len(np.unique(part)) == len(part)
    # A seeded permutation, never class blocks: ties in a ranking go to the
    # lower archive position, which must not favour the classes stored first.
    assert not np.all(np.diff(part) > 0)
    assert np.sum(np.diff(labels[part]) != 0) > len(np.unique(labels[part]))
  assert len(s.query) == 12 and len(s.train) == 20 and len(s.archive) == len(labels) - 12
  assert np.intersect1d(s.query, s.archive).size == 0
  np.testing.assert_array_equal(np.union1d(s.query, s.archive), np.arange(len(labels)))
  assert np.isin(s.train, s.archive).all()
  assert (np.bincount(labels[s.query]) == 3).all() and (np.bincount(labels[s.train]) == 5).all()
  again = rdata.paper_split(labels, 3, 5, seed=0)
  assert all(np.array_equal(x, y) for x, y in zip(s, again))
  other = rdata.paper_split(labels, 3, 5, seed=1)
  assert not np.array_equal(s.query, other.query)
  whole = rdata.paper_split(labels, 3, None, seed=0)
  np.testing.assert_array_equal(whole.train, whole.archive)
  np.testing.assert_array_equal(whole.query, s.query)
  assert (rdata.PAPER_N_QUERY, rdata.PAPER_N_TRAIN) == (100, 500)


def test_paper_split_too_large():
  labels = np.repeat(np.arange(2), [10, 4])
  with pytest.raises(rdata.DataError, match=r"'Forest' has 4 images.*n_query=3 \+ n_train=2"):
    rdata.paper_split(labels, 3, 2, 0, class_names=("AnnualCrop", "Forest"))
  with pytest.raises(rdata.DataError, match="class 1 has 4 images"):
    rdata.paper_split(labels, 4, None, 0)


def test_batch_at_epochs_and_determinism():
  idx = np.arange(100, 110)
  first = [rdata.batch_at(idx, 3, 5, s) for s in range(6)]
  again = [rdata.batch_at(idx, 3, 5, s) for s in range(6)]
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  epoch0 = np.concatenate(first[:3])
  assert len(set(epoch0)) == 9 and set(epoch0) <= set(idx)   # drop remainder
  assert not np.array_equal(epoch0, np.concatenate(first[3:]))  # reshuffled
  other = [rdata.batch_at(idx, 3, 6, s) for s in range(3)]
  assert not np.array_equal(epoch0, np.concatenate(other))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), batch=st.integers(1, 40), seed=st.integers(0, 2**31),
       resume=st.integers(0, 50), procs=st.sampled_from([1, 2, 4]))
def test_resume_sees_the_same_batches(n, batch, seed, resume, procs):
  batch = min(batch, n) // procs * procs
  if batch == 0:
    return
  idx = np.arange(n) * 7
  # A resumed run asks for step `resume` first, without drawing the steps before it.
  resumed = [rdata.batch_at(idx, batch, seed, s) for s in range(resume, resume + 5)]
  full = [rdata.batch_at(idx, batch, seed, s) for s in range(resume + 5)]
  for a, b, s in zip(full[resume:], resumed, itertools.count(resume)):
    np.testing.assert_array_equal(a, b)
    # The hosts' slices, in order, make up the global batch.
    parts = [rdata.batch_at(idx, batch, seed, s, process_index=p, process_count=procs)
             for p in range(procs)]
    np.testing.assert_array_equal(np.concatenate(parts), a)


def test_batch_errors():
  idx = np.arange(10)
  with pytest.raises(rdata.DataError, match="batch_size=11"):
    rdata.batch_at(idx, 11, 0, 0)
  with pytest.raises(rdata.DataError, match="process_count=4"):
    rdata.batch_at(idx, 6, 0, 0, process_index=0, process_count=4)
  with pytest.raises(rdata.DataError, match="process_index=2"):
    rdata.batch_at(idx, 6, 0, 0, process_index=2, process_count=2)
  with pytest.raises(rdata.DataError, match="step"):
    rdata.batch_at(idx, 2, 0, -1)


# -- the CLI -----------------------------------------------------------------------


def _cli(*args, cache):
  env = {**os.environ, "RSH_CACHE_DIR": str(cache)}
  return subprocess.run([sys.executable, "-m", "rsh.data", *args], capture_output=True,
                        text=True, timeout=120, cwd=REPO, env=env)


def test_cli_on_real_folder(eurosat_dir, tmp_path):
  out = _cli("--source=folder", f"--dir={eurosat_dir}", cache=tmp_path)
  assert out.returncode == 0, out.stderr
  assert "classes (10)" in out.stdout and "total: 369 images" in out.stdout
  assert "B01 B02 B03 B04 B05 B06 B07 B08 B09 B10 B11 B12 B8A" in out.stdout
  assert "SeaLake" in out.stdout and ">4095" in out.stdout


def test_cli_names_the_corrupt_file(folder, tmp_path):
  root, _ = folder
  bad = _corrupt(root)
  out = _cli("--source=folder", f"--dir={root}", cache=tmp_path / "cache")
  assert out.returncode == 2
  assert out.stderr.startswith("error: ") and str(bad) in out.stderr
  assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_cli_demo_in_process(capsys, tmp_path):
  from rsh.data import __main__ as cli
  assert cli.main(["--source=demo", "--n_per_class=2", "--bands=rgb"]) == 0
  out = capsys.readouterr().out
  assert "bands (3): B04 B03 B02" in out and "total: 20 images" in out
  assert cli.main(["--source=demo", "--bands=B13"]) == 2
  assert "B13" in capsys.readouterr().err


def test_the_data_cli_leaves_no_handler_behind(capsys):
  """Called in a process (a notebook, a test), `python -m rsh.data`'s main must not
  leave a handler on a stream that goes away with the call."""
  import logging
  from rsh.data import __main__ as cli
  log = logging.getLogger("rsh.data")
  before = (list(log.handlers), log.level)
  assert cli.main(["--source=demo", "--n_per_class=2"]) == 0
  assert "demo" in capsys.readouterr().out
  assert (list(log.handlers), log.level) == before
