"""Source "bigearthnet" on the 6 real S1 / S2 pairs that bigearthnet-common ships.

Every expectation is computed here from the files themselves (TIFFs, metadata
JSON, the package's CSV tables), independently of `rsh.data.bigearthnet`.
"""

from __future__ import annotations

import bz2
import csv
import importlib.resources
import io
import json
import logging
import os
import pathlib
import shutil
import sys

import numpy as np
import pytest

from rsh import data as rdata
from rsh.data import __main__ as rmain
from rsh.data import bigearthnet
from rsh.data import cache

constants = pytest.importorskip(
    "bigearthnet_common.constants",
    reason="bigearthnet-common is not installed (pip install 'rsh[bigearthnet]')")
tifffile = pytest.importorskip("tifffile")

S2, S1 = "BigEarthNet-S2-Example", "BigEarthNet-S1-Example"
SNOWY = "S2B_MSIL2A_20180204T94161_57_38"  # the one example pair on the seasonal-snow list
PAIRS = {  # S2 name -> (S1 name, country), from the package's name / country table
    "S2A_MSIL2A_20170613T101031_87_48": ("S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48", "Austria"),
    "S2A_MSIL2A_20170617T113321_4_55": ("S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55", "Ireland"),
    "S2A_MSIL2A_20170617T113321_36_85": ("S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85", "Ireland"),
    "S2A_MSIL2A_20171221T112501_56_35": ("S1A_IW_GRDH_1SDV_20171221T064238_29SND_56_35",
                                         "Portugal"),
    "S2B_MSIL2A_20170924T93020_69_24": ("S1A_IW_GRDH_1SDV_20170925T043256_35VPK_69_24", "Finland"),
    SNOWY: ("S1A_IW_GRDH_1SDV_20180204T043253_35VPK_57_38", "Finland"),
}
NAMES = tuple(PAIRS)  # natural name order (4_55 before 36_85)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
  """The package's two example tarballs, unpacked once (read only by the tests)."""
  return bigearthnet.example_dir(tmp_path_factory.mktemp("bigearthnet"))


@pytest.fixture(scope="module")
def full(example):
  """All 6 pairs, all 12 bands, no exclusions, no cache."""
  return rdata.load("bigearthnet", dir=example, cache_dir=False, exclude=(), bands="all")


@pytest.fixture
def copy(example, tmp_path):
  """A private copy of the examples, to break."""
  shutil.copytree(example, tmp_path / "ben")
  return tmp_path / "ben"


def table(name: str, keep=lambda row: True) -> list[list[str]]:
  """The rows of one of the package's bz2 CSV tables that `keep` keeps."""
  text = bz2.decompress(
      importlib.resources.files("bigearthnet_common").joinpath(name).read_bytes()).decode()
  return [row for row in csv.reader(io.StringIO(text)) if row and keep(row)]


def metadata(root: pathlib.Path, name: str) -> dict:
  return json.loads((root / name / f"{name}_labels_metadata.json").read_text())


def edit_labels(root: pathlib.Path, name: str, labels: list[str]) -> None:
  path = root / name / f"{name}_labels_metadata.json"
  meta = json.loads(path.read_text())
  meta["labels"] = labels
  path.write_text(json.dumps(meta))


def test_example_layout(example):
  assert sorted(p.name for p in (example / S2).iterdir()) == sorted(NAMES)
  assert sorted(p.name for p in (example / S1).iterdir()) == sorted(s1 for s1, _ in PAIRS.values())


def test_shapes_and_dtypes(example, full):
  ds = rdata.load("bigearthnet", dir=example, cache_dir=False, exclude=())
  assert ds.images.shape == (6, 120, 120, 10) and ds.images.dtype == np.uint16
  assert ds.band_names == rdata.MS10 == ("B02", "B03", "B04", "B05", "B06", "B07", "B08",
                                         "B8A", "B11", "B12")
  assert ds.views["s1"].shape == (6, 120, 120, 2) and ds.views["s1"].dtype == np.float32
  assert ds.labels.shape == (6, 19) and ds.labels.dtype == np.uint8 and ds.multi_label
  assert ds.files == NAMES and ds.source == "bigearthnet"
  assert full.images.shape == (6, 120, 120, 12)
  assert full.band_names == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09",
                             "B11", "B12", "B8A")
  # The MS10 load is the same pixels as the matching bands of the 12-band one.
  np.testing.assert_array_equal(
      ds.images, full.images[..., [full.band_names.index(b) for b in ds.band_names]])
  picked = rdata.load("bigearthnet", dir=example, cache_dir=False, bands="B8A,b04,B01")
  assert picked.band_names == ("B8A", "B04", "B01")
  np.testing.assert_array_equal(picked.images[..., 1],
                                full.images[[NAMES.index(f) for f in picked.files], ..., 3])


def test_bands_are_the_files_on_one_grid(example, full):
  for i, name in enumerate(NAMES):
    for band, factor in [("B02", 1), ("B08", 1), ("B05", 2), ("B11", 2), ("B01", 6),
                         ("B09", 6)]:
      x = tifffile.imread(example / S2 / name / f"{name}_{band}.tif")
      assert x.shape == (120 // factor,) * 2 and x.dtype == np.uint16
      np.testing.assert_array_equal(full.images[i, ..., full.band_names.index(band)],
                                    np.repeat(np.repeat(x, factor, 0), factor, 1))


def test_s1_view_is_db_of_the_paired_patch(example, full):
  s1 = full.views["s1"]
  assert np.isfinite(s1).all() and -60 < s1.min() and s1.max() < 30
  assert (s1 < 0).mean() > 0.95  # backscatter in dB is almost always negative
  assert np.median(s1[..., 0]) > np.median(s1[..., 1])  # VV above VH (cross-pol is weaker)
  found = bigearthnet.scan(example, exclude=())
  assert found.s2_files == full.files
  for i, (s2, s1_name) in enumerate(zip(found.s2_files, found.s1_files)):
    assert s1_name == PAIRS[s2][0]
    assert metadata(example / S1, s1_name)["corresponding_s2_patch"] == s2
    for j, pol in enumerate(("VV", "VH")):
      np.testing.assert_array_equal(
          s1[i, ..., j], tifffile.imread(example / S1 / s1_name / f"{s1_name}_{pol}.tif"))


def test_labels_match_each_patch_metadata(example, full):
  assert full.class_names == tuple(constants.NEW_LABELS) and len(full.class_names) == 19
  for i, name in enumerate(NAMES):
    expected = np.zeros(19, np.uint8)
    for old in metadata(example / S2, name)["labels"]:
      new = constants.OLD2NEW_LABELS_DICT[old]
      if new is not None:
        expected[list(constants.NEW_LABELS).index(new)] = 1
    np.testing.assert_array_equal(full.labels[i], expected, err_msg=name)
  # e.g. Peatbogs -> Inland wetlands, Water bodies -> Inland waters.
  i = NAMES.index("S2B_MSIL2A_20170924T93020_69_24")
  assert {full.class_names[j] for j in np.flatnonzero(full.labels[i])} == {
      "Coniferous forest", "Mixed forest", "Transitional woodland, shrub", "Inland wetlands",
      "Inland waters"}


def test_official_splits(full):
  for split in ("train", "val", "test"):
    members = {row[0] for row in table(f"{split}.csv.bz2")}
    assert {full.files[i] for i in full.splits[split]} == set(NAMES) & members, split
  assert [full.files[i] for i in full.splits["test"]] == ["S2A_MSIL2A_20170613T101031_87_48"]
  assert len(full.splits["train"]) == 4 and len(full.splits["val"]) == 0
  # The snowy patch is in no official split.
  assert NAMES.index(SNOWY) not in np.concatenate(list(full.splits.values()))


def test_exclusion_lists_and_countries(example):
  snow = {row[0] for row in table("patches_with_seasonal_snow.csv.bz2")} & set(NAMES)
  cloud = {row[0] for row in table("patches_with_cloud_and_shadow.csv.bz2")} & set(NAMES)
  assert snow == {SNOWY} and cloud == set()
  rows = table("s1_s2_name_country_season.csv.bz2", keep=lambda row: row[1] in PAIRS)
  assert {row[0] for row in rows} == {s1 for s1, _ in PAIRS.values()}
  country = {row[1]: row[2] for row in rows}
  assert country == {s2: c for s2, (_, c) in PAIRS.items()}

  default = bigearthnet.scan(example)
  assert default.s2_files == tuple(n for n in NAMES if n not in snow | cloud)
  assert default.dropped == dict(snow=1, cloud=0, country=0, no_label=0, limit=0)
  assert len(bigearthnet.scan(example, exclude="none")) == 6
  assert len(bigearthnet.scan(example, exclude=("cloud",))) == 6
  assert bigearthnet.scan(example, exclude="snow").dropped["snow"] == 1
  finland = bigearthnet.scan(example, exclude=(), countries=("Finland",))
  assert set(finland.s2_files) == {n for n in NAMES if country[n] == "Finland"}
  assert finland.dropped["country"] == 4
  both = bigearthnet.scan(example, countries="finland,Ireland")  # snow first, then country
  assert both.countries == ("Finland", "Ireland") and len(both) == 3
  assert both.dropped == dict(snow=1, cloud=0, country=2, no_label=0, limit=0)
  ds = rdata.load("bigearthnet", dir=example, cache_dir=False, countries=["Portugal"])
  assert ds.files == ("S2A_MSIL2A_20171221T112501_56_35",)
  with pytest.raises(rdata.DataError, match="unknown country 'Atlantis'.*Serbia"):
    rdata.load("bigearthnet", dir=example, cache_dir=False, countries="Atlantis")
  with pytest.raises(rdata.DataError, match="unknown exclude list 'rain'"):
    rdata.load("bigearthnet", dir=example, cache_dir=False, exclude="rain")
  with pytest.raises(rdata.DataError, match="no BigEarthNet pairs left.*5 not in Serbia"):
    rdata.load("bigearthnet", dir=example, cache_dir=False, countries="Serbia")


def test_limit_is_seeded_and_in_name_order(example, full):
  a = rdata.load("bigearthnet", dir=example, cache_dir=False, exclude=(), limit=3, seed=1)
  b = rdata.load("bigearthnet", dir=example, cache_dir=False, exclude=(), limit=3, seed=1)
  assert len(a) == 3 and a.files == b.files
  assert list(a.files) == sorted(a.files, key=NAMES.index)
  subsets = {rdata.load("bigearthnet", dir=example, cache_dir=False, exclude=(), limit=3,
                        seed=s).files for s in range(6)}
  assert len(subsets) > 1
  rows = [NAMES.index(f) for f in a.files]
  np.testing.assert_array_equal(a.labels, full.labels[rows])
  np.testing.assert_array_equal(a.views["s1"], full.views["s1"][rows])
  assert bigearthnet.scan(example, exclude=(), limit=3, seed=1).dropped["limit"] == 3
  assert len(rdata.load("bigearthnet", dir=example, cache_dir=False, limit=99)) == 5
  for bad in (0, -1, 2.5, True):
    with pytest.raises(rdata.DataError, match="limit"):
      rdata.load("bigearthnet", dir=example, cache_dir=False, limit=bad)


def test_size_averages_both_modalities(example, full):
  small = rdata.load("bigearthnet", dir=example, cache_dir=False, exclude=(), bands="all",
                     size=60)
  assert small.images.shape == (6, 60, 60, 12) and small.images.dtype == np.uint16
  assert small.views["s1"].shape == (6, 60, 60, 2) and small.views["s1"].dtype == np.float32
  blocks = full.images.reshape(6, 60, 2, 60, 2, 12).astype(np.float64).mean((2, 4))
  np.testing.assert_array_equal(small.images, np.rint(blocks).astype(np.uint16))
  # A 20 m band at 60 px is exactly its file again.
  name = NAMES[0]
  np.testing.assert_array_equal(small.images[0, ..., small.band_names.index("B05")],
                                tifffile.imread(example / S2 / name / f"{name}_B05.tif"))
  # S1 is averaged as power (10^(dB / 10)), then back to dB: not the mean of the dB values.
  power = 10 ** (full.views["s1"].astype(np.float64) / 10)
  s1 = 10 * np.log10(power.reshape(6, 60, 2, 60, 2, 2).mean((2, 4)))
  np.testing.assert_allclose(small.views["s1"], s1, rtol=0, atol=1e-4)
  in_db = full.views["s1"].reshape(6, 60, 2, 60, 2, 2).astype(np.float64).mean((2, 4))
  assert (small.views["s1"] >= in_db - 1e-4).all()  # the mean power is never below (AM-GM)
  assert (small.views["s1"] - in_db).mean() > 0.1
  for bad in (50, 0, 121, "60"):
    with pytest.raises(rdata.DataError, match="size"):
      rdata.load("bigearthnet", dir=example, cache_dir=False, size=bad)


def test_cache_round_trip(example, tmp_path, monkeypatch, caplog):
  root = tmp_path / "cache"
  first = rdata.load("bigearthnet", dir=example, cache_dir=root, exclude=())
  entries = list((root / "data").iterdir())
  assert len(entries) == 1 and entries[0].name.startswith("bigearthnet-")
  assert {"view_s1.npy", "splits.npz"} <= {p.name for p in entries[0].iterdir()}
  cached = cache.read(entries[0])
  np.testing.assert_array_equal(cached.views["s1"], first.views["s1"])
  assert {k: list(v) for k, v in cached.splits.items()} == {
      k: list(v) for k, v in first.splits.items()}

  def no_reading(*args, **kwargs):
    raise AssertionError("read a TIFF despite the cache")

  monkeypatch.setattr(bigearthnet.pixels, "read_band", no_reading)
  with caplog.at_level(logging.INFO, logger="rsh.data"):
    again = rdata.load("bigearthnet", dir=example, cache_dir=root, exclude=())
  assert "from cache" in caplog.text
  for a, b in [(first.images, again.images), (first.labels, again.labels),
               (first.views["s1"], again.views["s1"])]:
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype
  assert again.files == first.files and again.band_names == first.band_names
  assert again.class_names == first.class_names and set(again.splits) == {"train", "val", "test"}
  for k in first.splits:
    np.testing.assert_array_equal(again.splits[k], first.splits[k])
  # Other options are other entries, and each is read from the files.
  with pytest.raises(AssertionError, match="despite the cache"):
    rdata.load("bigearthnet", dir=example, cache_dir=root, exclude=(), size=60)


def test_cache_sees_an_edited_file(copy, tmp_path):
  root = tmp_path / "cache"
  first = rdata.load("bigearthnet", dir=copy, cache_dir=root, exclude=())
  name = NAMES[2]
  path = copy / S2 / name / f"{name}_B03.tif"
  # Rewrite the first pixel in place (the file is uncompressed): same size, new mtime.
  with tifffile.TiffFile(path) as tif:
    offset = tif.pages[0].dataoffsets[0]
  data = bytearray(path.read_bytes())
  data[offset:offset + 2] = (int.from_bytes(data[offset:offset + 2], "little") + 7).to_bytes(
      2, "little")
  size, mtime = path.stat().st_size, path.stat().st_mtime_ns
  path.write_bytes(bytes(data))
  os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
  assert path.stat().st_size == size
  again = rdata.load("bigearthnet", dir=copy, cache_dir=root, exclude=())
  assert again.images[2, 0, 0, 1] == first.images[2, 0, 0, 1] + 7
  np.testing.assert_array_equal(again.images[2, ..., 1], tifffile.imread(path))
  # The new entry supersedes the old one (pruned), which would otherwise stay forever.
  assert len(list((root / "data").iterdir())) == 1


def test_errors_name_the_patch(copy):
  name, s1 = NAMES[1], PAIRS[NAMES[1]][0]
  (copy / S2 / name / f"{name}_B05.tif").unlink()
  with pytest.raises(rdata.DataError, match=f"S2 patch {name}: missing file {name}_B05.tif"):
    rdata.load("bigearthnet", dir=copy, cache_dir=False)
  # Not read, not needed: B05 is not in rgb.
  assert len(rdata.load("bigearthnet", dir=copy, cache_dir=False, bands="rgb")) == 5

  tifffile.imwrite(copy / S2 / name / f"{name}_B02.tif", np.zeros((60, 60), np.uint16))
  with pytest.raises(rdata.DataError,
                     match=f"{name}.*{name}_B02.tif is 60x60 px, expected 120x120"):
    rdata.load("bigearthnet", dir=copy, cache_dir=False, bands="rgb")
  (copy / S2 / name / f"{name}_B02.tif").write_bytes(b"not a tiff")
  with pytest.raises(rdata.DataError, match=f"{name}.*cannot read {name}_B02.tif as TIFF"):
    rdata.load("bigearthnet", dir=copy, cache_dir=False, bands="rgb")
  (copy / S1 / s1 / f"{s1}_VH.tif").unlink()
  with pytest.raises(rdata.DataError, match=f"S1 patch {s1} .pair of S2 patch {name}.: "
                                            f"missing file {s1}_VH.tif"):
    rdata.load("bigearthnet", dir=copy, cache_dir=False, bands="B04")


def test_mismatched_pairs(copy):
  name, s1 = NAMES[3], PAIRS[NAMES[3]][0]
  labels = metadata(copy / S1, s1)["labels"]
  edit_labels(copy / S1, s1, labels[:-1])
  with pytest.raises(rdata.DataError, match=f"S1 patch {s1} and its S2 pair {name} have "
                                            "different labels"):
    rdata.load("bigearthnet", dir=copy, cache_dir=False)
  edit_labels(copy / S1, s1, labels)
  meta = metadata(copy / S1, s1)
  meta["corresponding_s2_patch"] = "S2A_MSIL2A_20990101T000000_1_1"
  (copy / S1 / s1 / f"{s1}_labels_metadata.json").write_text(json.dumps(meta))
  with pytest.raises(rdata.DataError, match=f"S1 patch {s1} names S2 patch "
                                            "S2A_MSIL2A_20990101T000000_1_1.*has no folder"):
    rdata.load("bigearthnet", dir=copy, cache_dir=False)
  meta["corresponding_s2_patch"] = NAMES[0]  # taken by another S1 patch
  (copy / S1 / s1 / f"{s1}_labels_metadata.json").write_text(json.dumps(meta))
  with pytest.raises(rdata.DataError, match=f"{PAIRS[NAMES[0]][0]} and {s1} both name S2 "
                                            f"patch {NAMES[0]}"):
    rdata.load("bigearthnet", dir=copy, cache_dir=False)


def test_unknown_and_unmapped_labels(copy):
  name, s1 = NAMES[4], PAIRS[NAMES[4]][0]
  for root, patch in [(copy / S2, name), (copy / S1, s1)]:
    edit_labels(root, patch, ["Coniferous forest", "Moon craters"])
  with pytest.raises(rdata.DataError, match=f"S2 patch {name}: unknown label 'Moon craters'"):
    rdata.load("bigearthnet", dir=copy, cache_dir=False)
  # Labels that map to no 19-class label: the pair is skipped and counted.
  for root, patch in [(copy / S2, name), (copy / S1, s1)]:
    edit_labels(root, patch, ["Airports", "Bare rock"])
  found = bigearthnet.scan(copy, exclude=())
  assert name not in found.s2_files and len(found) == 5
  assert found.dropped["no_label"] == 1


def test_argument_errors(example, tmp_path, monkeypatch):
  with pytest.raises(rdata.DataError, match="needs dir=.*BigEarthNet-S1-v1.0"):
    rdata.load("bigearthnet", cache_dir=False)
  with pytest.raises(rdata.DataError, match="no BigEarthNet S2 and S1 roots"):
    rdata.load("bigearthnet", dir=tmp_path, cache_dir=False)
  with pytest.raises(rdata.DataError, match="does not exist"):
    rdata.load("bigearthnet", dir=tmp_path / "nope", cache_dir=False)
  with pytest.raises(rdata.DataError, match="n_per_class.*multi-hot.*limit"):
    rdata.load("bigearthnet", dir=example, cache_dir=False, n_per_class=2)
  with pytest.raises(rdata.DataError, match="B10 .cirrus. is not in BigEarthNet"):
    rdata.load("bigearthnet", dir=example, cache_dir=False, bands="B02,B10")
  with pytest.raises(rdata.DataError, match="unknown load option colour; known: .*countries"):
    rdata.load("bigearthnet", dir=example, colour="red")
  with pytest.raises(rdata.DataError, match="countries only applies to source=bigearthnet"):
    rdata.load("folder", dir=example, countries="Serbia")
  with pytest.raises(rdata.DataError, match="size only applies to source=bigearthnet/demo_cross"):
    rdata.load("demo", size=32)
  monkeypatch.setitem(sys.modules, "bigearthnet_common", None)  # as if not installed
  with pytest.raises(rdata.DataError, match=r"pip install 'rsh\[bigearthnet\]'"):
    rdata.load("bigearthnet", dir=example, cache_dir=False)


def test_summary_cli(example, tmp_path, capsys):
  assert rmain.main(["--source=bigearthnet", f"--dir={example}", "--cache_dir=none",
                     "--bands=ms10"]) == 0
  out = capsys.readouterr().out
  for line in ["source: bigearthnet", "pairs: 5 (S2 120x120 px, 10 bands uint16; S1 120x120 px",
               "found: 6 pairs", "dropped: 1 seasonal snow, 0 cloud and shadow, "
               "0 without a 19-class label", "labels (19)", "2  40.0%  Pastures",
               "splits: train 4, val 0, test 1, in none 0", "S2 (raw DN)", "S1 (dB)"]:
    assert line in out, line
  assert "  B8A " in out and "  VV " in out and "  VH " in out and "B01" not in out
  assert rmain.main(["--source=bigearthnet", f"--dir={example}", "--cache_dir=none",
                     "--countries", "Finland", "--exclude", "none", "--size", "40",
                     "--limit", "1"]) == 0
  out = capsys.readouterr().out
  assert "pairs: 1 (S2 40x40 px, 12 bands" in out
  assert "dropped: 4 not in Finland, 0 without a 19-class label, 1 over limit=1" in out
  for argv, message in [([f"--dir={example}", "--countries", "Atlantis"], "unknown country"),
                        ([f"--dir={example}", "--size", "7"], "size=7"),
                        ([f"--dir={tmp_path}"], "no BigEarthNet S2 and S1 roots"),
                        ([], "needs dir=")]:
    assert rmain.main(["--source=bigearthnet", "--cache_dir=none", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
