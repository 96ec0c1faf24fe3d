"""The on-disk BigEarthNet store (`rsh.data.bigearthnet.store`): written in chunks,
resumed after a failure or a kill, reused, refused for other data; read through
memory maps with the same numbers, batches, statistics, fingerprint and results
as the in-memory path.

The archives are BigEarthNet-layout folders made here from the 6 real pairs of
`bigearthnet-common`: each made-up pair takes a real pair's metadata and files,
written again with its own offset (every pair distinct) or, for the large
archive of the slow test, linked (cheap to make at any size).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

import rsh
from rsh import data as rdata
from rsh.data import fingerprint
from rsh.data import lazy

pytest.importorskip("bigearthnet_common.constants",
                    reason="bigearthnet-common is not installed (pip install 'rsh[bigearthnet]')")
tifffile = pytest.importorskip("tifffile")
from rsh.data import bigearthnet  # noqa: E402
from rsh.data.bigearthnet import pixels  # noqa: E402
from rsh.data.bigearthnet import store as rstore  # noqa: E402

REPO = pathlib.Path(rsh.__file__).resolve().parents[1]
S2, S1 = "BigEarthNet-S2-Example", "BigEarthNet-S1-Example"
N = 300       # pairs of the default suite's archive
CHUNK = 64    # pairs a chunk: 300 = 4 whole chunks and 44


def make_archive(example: pathlib.Path, dest: pathlib.Path, n: int, link: bool = False
                 ) -> pathlib.Path:
  """A BigEarthNet folder of `n` pairs made from the 6 real ones: pair k has real
  pair k % 6's labels and files, linked, except its B02 (digital numbers + k // 6)
  and its VV and VH (dB - (k // 6) / 100), written anew so that every pair differs
  (with `link`, every file linked: cheap at any size, pairs repeat)."""
  s2_names = sorted(p.name for p in (example / S2).iterdir())
  s1_of = {}
  for p in (example / S1).iterdir():
    s1_of[json.loads((p / f"{p.name}_labels_metadata.json").read_text())[
        "corresponding_s2_patch"]] = p.name
  read = {}
  for k in range(n):
    real2 = s2_names[k % 6]
    real1, shift = s1_of[real2], k // 6
    name2, name1 = f"S2X_MSIL2A_20990101T0_{k}_0", f"S1X_IW_GRDH_1SDV_20990101T0_{k}_0"
    for root, real, name in ((S2, real2, name2), (S1, real1, name1)):
      folder = dest / root / name
      folder.mkdir(parents=True)
      for src in (example / root / real).iterdir():
        target = folder / src.name.replace(real, name)
        if src.suffix == ".json":
          meta = json.loads(src.read_text())
          if root == S1:
            meta["corresponding_s2_patch"] = name2
          target.write_text(json.dumps(meta))
        elif link or not src.name.endswith(("_B02.tif", "_VV.tif", "_VH.tif")):
          target.symlink_to(src)
        else:
          x = read[src] = read[src] if src in read else tifffile.imread(src)
          tifffile.imwrite(target, x + np.uint16(shift) if root == S2 else
                           x - np.float32(shift / 100))
  return dest


@pytest.fixture(scope="module")
def example(tmp_path_factory):
  return bigearthnet.example_dir(tmp_path_factory.mktemp("bigearthnet"))


@pytest.fixture(scope="module")
def archive(example, tmp_path_factory):
  return make_archive(example, tmp_path_factory.mktemp("ben") / "ben", N)


def _convert(archive, out, **kwargs):
  """The store of `archive` (every pair, ms10 at 120 px) at `out`."""
  found = bigearthnet.scan(archive, exclude="none")
  bands = pixels.resolve_bands(None)
  return rstore.convert(found, bands, 120, pixels.files_digest(found, bands, False), out,
                        options=rstore.options_of(found, 0), **kwargs)


def _reads(monkeypatch) -> list:
  """Counts the pairs read (one count per S1 VV file)."""
  count, real = [], pixels.read_band
  def read_band(path, *args, **kwargs):
    if path.name.endswith("_VV.tif"):
      count.append(path.parent.name)
    return real(path, *args, **kwargs)
  monkeypatch.setattr(pixels, "read_band", read_band)
  return count


class Stop(Exception):
  """Raised from `on_chunk`: a conversion that fails after some chunks."""


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
  """The in-memory path's cache: the archive's TIFFs are decoded once for every test."""
  return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def memory(archive, cache_root):
  """The archive read into memory, the path every store must equal."""
  return rdata.load("bigearthnet", dir=archive, cache_dir=cache_root, exclude="none")


@pytest.fixture(scope="module")
def store(archive, tmp_path_factory):
  """The archive's store, written by a conversion that fails after two chunks and is
  resumed: (its folder, the manifest left by the failure, the pairs the resumption
  read, the manifest of a third call)."""
  out = tmp_path_factory.mktemp("store") / "ben.store"

  def stop(written):
    if written == 2 * CHUNK:
      raise Stop

  with pytest.MonkeyPatch.context() as mp:
    with pytest.raises(Stop):
      _convert(archive, out, chunk=CHUNK, on_chunk=stop)
    failed = rstore.read_manifest(out)
    with pytest.raises(rdata.DataError, match=f"incomplete .{2 * CHUNK} of {N} pairs"):
      rstore.open_store(out)
    read = _reads(mp)
    _convert(archive, out, chunk=CHUNK)
    resumed = list(read)
    again = _convert(archive, out, chunk=CHUNK)
    assert len(read) == len(resumed)  # the third call read nothing
  return out, failed, resumed, again


def test_a_failed_conversion_resumes_at_its_last_chunk(store, memory):
  out, failed, resumed, again = store
  assert failed["written"] == 2 * CHUNK and not failed["complete"]
  names = [f"S1X_IW_GRDH_1SDV_20990101T0_{k}_0" for k in range(N)]
  assert sorted(resumed) == sorted(names[2 * CHUNK:])  # each pair after the chunks, once
  ds = rstore.open_store(out)
  assert isinstance(ds.images, np.memmap) and not ds.images.flags.writeable
  assert isinstance(ds.views["s1"], np.memmap) and not ds.views["s1"].flags.writeable
  for a, b in ((ds.images, memory.images), (ds.views["s1"], memory.views["s1"]),
               (ds.labels, memory.labels)):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
  assert ds.files == memory.files and ds.class_names == memory.class_names
  assert ds.band_names == memory.band_names == rdata.MS10
  assert {k: list(v) for k, v in ds.splits.items()} == {
      k: list(v) for k, v in memory.splits.items()}
  assert len(np.unique(memory.images.reshape(N, -1), axis=0)) == N  # every pair differs
  # The digests recorded once complete are the fingerprint's of the same numbers.
  assert again["complete"] and again["written"] == N
  assert again["digests"] == {"s2": fingerprint.digest_array(np.asarray(memory.images)),
                              "s1": fingerprint.digest_array(np.asarray(memory.views["s1"]))}
  assert ds.images.content_digest == again["digests"]["s2"]


def _config(archive, store=None, cache="none", **changes):
  """configs/crossmodal.py:smoke's settings on `archive` (every pair, 120 px)."""
  from tests.conftest import load_config, with_overrides
  return with_overrides(load_config("crossmodal", "smoke"), {
      "data.source": "bigearthnet", "data.dir": str(archive), "data.cache_dir": str(cache),
      "data.options.exclude": "none", "data.options.limit": None,
      "data.options.size": None, "data.options.store": store, **changes})


def test_training_reads_the_store_lazily_with_the_same_numbers(archive, store, memory,
                                                              cache_root, tmp_path):
  from rsh import experiment
  from rsh.methods import crossmodal
  a = rdata.prepare(_config(archive, cache=cache_root))
  b = rdata.prepare(_config(archive, str(store[0]), cache=tmp_path))
  assert not (tmp_path / "data").exists()  # the whole-dataset cache is not written
  assert b.images is b.dataset.images and isinstance(b.images, np.memmap)  # no band copy
  assert fingerprint.fingerprint(a) == fingerprint.fingerprint(b)
  rows = {}
  for view in ("pixels", "s1"):
    ra, rb = a.train_rows(view), b.train_rows(view)
    assert isinstance(ra, np.ndarray) and isinstance(rb, lazy.Rows), view
    assert rb.shape == ra.shape and rb.ndim == 4 and rb.dtype == ra.dtype == np.float32
    np.testing.assert_array_equal(rb[np.array([5, 0, 77])], ra[[5, 0, 77]])
    assert all(np.array_equal(x, y) for x, y in zip(rdata.channel_stats(ra),
                                                    rdata.channel_stats(rb)))
    for name in ("query", "archive"):
      xb = b.x(name, view)[:]
      assert isinstance(xb, lazy.Rows)  # an evaluator's "every row" stays lazy
      xa = np.asarray(a.x(name, view)[:])
      for lo in range(0, len(xa), 100):
        np.testing.assert_array_equal(xb[lo:lo + 100], xa[lo:lo + 100])
    rows[view] = rb
  # The batches the runner cuts, step by step, from the method built on each.
  fns = [experiment.make_batch_fn(config, data, crossmodal.build(config, data), None,
                                  config.train.batch_size)[0]
         for config, data in ((_config(archive, cache=cache_root), a),
                              (_config(archive, str(store[0])), b))]
  for step in range(4):
    x, y = fns[0](step), fns[1](step)
    assert set(x) == set(y) == {"s1", "s2", "labels"}
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_band_selection_reads_the_bands_of_each_row(archive, store, memory, cache_root):
  a = rdata.prepare(_config(archive, cache=cache_root, **{"data.bands": "rgb"}))
  b = rdata.prepare(_config(archive, str(store[0]), **{"data.bands": "rgb"}))
  assert isinstance(b.images, lazy.Bands) and b.images.shape == a.images.shape
  np.testing.assert_array_equal(b.images[[3, 1]], a.images[[3, 1]])
  np.testing.assert_array_equal(np.asarray(b.train_x), a.train_x)
  np.testing.assert_array_equal(b.rgb([4, 2]), a.rgb([4, 2]))
  assert fingerprint.fingerprint(a) == fingerprint.fingerprint(b)
  with pytest.raises(TypeError, match="rows only"):
    b.images[..., 0]


def test_other_data_is_refused_and_rebuilt_when_asked(example, tmp_path):
  small = make_archive(example, tmp_path / "ben", 12)
  out = tmp_path / "store"
  _convert(small, out, chunk=5)
  found = bigearthnet.scan(small, exclude="none")
  rgb = pixels.resolve_bands("rgb")
  files = pixels.files_digest(found, rgb, False)
  with pytest.raises(rdata.DataError, match=r"holds other pairs or options.*bands .*"
                                            r"(wanted \['B04', 'B03', 'B02'\]).*--rebuild"):
    rstore.convert(found, rgb, 120, files, out)
  # A file written since (a new mtime) is other data too.
  vv = next((small / S1).glob("*/*_VV.tif"))
  os.utime(vv, ns=(vv.stat().st_atime_ns, vv.stat().st_mtime_ns + 10**9))
  with pytest.raises(rdata.DataError, match="the source files .* differ"):
    _convert(small, out)
  with pytest.raises(rdata.DataError, match="holds other pairs"):
    rstore.open_store(out, rstore.identity(found, rdata.MS10, 120, pixels.files_digest(
        found, rdata.MS10, False)))
  _convert(small, out, rebuild=True)
  ds = rdata.load("bigearthnet", dir=small, exclude="none", store=out)
  np.testing.assert_array_equal(ds.views["s1"], rdata.load(
      "bigearthnet", dir=small, cache_dir=False, exclude="none").views["s1"])
  # Read alone (no folder): the same options, or a DataError naming the one that differs.
  alone = rdata.load("bigearthnet", exclude="none", store=out)
  np.testing.assert_array_equal(alone.images, ds.images)
  with pytest.raises(rdata.DataError, match="written with other options: bands"):
    rdata.load("bigearthnet", exclude="none", bands="rgb", store=out)
  with pytest.raises(rdata.DataError, match="written with other options: options"):
    rdata.load("bigearthnet", store=out)  # the default excludes snow and cloud
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  with pytest.raises(rdata.DataError, match="not empty and not a BigEarthNet store .*notes.txt"):
    _convert(small, tmp_path / "other")
  (out / "manifest.json").write_text("{not json")
  with pytest.raises(rdata.DataError, match="cannot read manifest.json"):
    rstore.open_store(out)
  with pytest.raises(rdata.DataError, match="no BigEarthNet store"):
    rstore.open_store(tmp_path / "other")


def test_the_command_line_converts_and_explains(example, tmp_path, capsys):
  small = make_archive(example, tmp_path / "ben", 7)
  out = tmp_path / "store"
  assert rstore.main([f"--dir={small}", f"--out={out}", "--exclude=none", "--size=40",
                      "--no_progress"]) == 0
  assert f"7 pairs, 40 px" in capsys.readouterr().out
  ds = rstore.open_store(out)
  assert ds.images.shape == (7, 40, 40, 10) and ds.views["s1"].shape == (7, 40, 40, 2)
  assert rstore.main([f"--dir={small}", f"--out={out}", "--exclude=none", "--size=40",
                      "--limit=6", "--no_progress"]) == 2
  err = capsys.readouterr().err
  assert "error: BigEarthNet store" in err and "pairs 7 (wanted 6)" in err
  assert rstore.main([f"--dir={tmp_path / 'none'}", f"--out={out}", "--no_progress"]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_s1_is_averaged_as_power():
  x = np.full((120, 120), -20.0, np.float32)
  x[0, 0] = 0.0    # one bright pixel in the first 2 x 2 block: 1 + 3 * 0.01 in power
  out = pixels.db_mean(x, 60)
  assert out[0, 0] == pytest.approx(10 * np.log10((1 + 3 * 0.01) / 4))
  assert out[0, 0] > -20 * 3 / 4 + 0  # far above the mean of the dB values (-15)
  np.testing.assert_allclose(out[1:, 1:], -20.0, atol=1e-9)


# -- the training path, limited in memory (slow) ----------------------------------------

# A child's prologue: two CPUs at most (XLA sizes its thread pools, whose stacks count
# as data, by them; every child alike, so their numbers are comparable), RLIMIT_DATA =
# argv[1] bytes (0: none), and its own memory sampled every 20 ms; at exit the peaks
# {VmPeak, VmHWM, VmData, RssAnon, RssFile} (kB) are written to argv[2].
_PROLOGUE = """
import atexit, json, os, resource, sys, threading, time
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
limit, report = int(sys.argv[1]), sys.argv[2]
if limit:
  resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
def status():
  out = {}
  for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("VmPeak", "VmHWM", "VmData", "RssAnon", "RssFile"):
      out[key] = int(value.split()[0])
  return out
peak = {}
def sample():
  while True:
    for k, v in status().items():
      peak[k] = max(peak.get(k, 0), v)
    time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
def write():
  peak.update({k: v for k, v in status().items() if k in ("VmPeak", "VmHWM")})
  open(report, "w").write(json.dumps(peak))
atexit.register(write)
sys.path.insert(0, ".")
"""

# Trains configs/crossmodal.py:smoke with the changes argv[3] (JSON) in workdir argv[4],
# evaluating S1 -> S2 retrieval (and random codes) only: one direction reads every row.
_TRAIN = _PROLOGUE + """
from tests.conftest import load_config, with_overrides
from rsh import runs
config = with_overrides(load_config("crossmodal", "smoke"), json.loads(sys.argv[3]))
for name in list(config.evals):
  if name not in ("s1_to_s2", "random_codes"):
    del config.evals[name]
runs.run(config, sys.argv[4])
"""

# Converts argv[3] into the store argv[4], killed (SIGKILL) at the argv[5]-th pair read.
_KILLED = _PROLOGUE + """
import signal
from rsh import data as rdata
from rsh.data.bigearthnet import pixels
real, count = pixels.read_band, [0]
def read_band(path, *args, **kwargs):
  if path.name.endswith("_VV.tif"):
    count[0] += 1
    if count[0] == int(sys.argv[5]):
      os.kill(os.getpid(), signal.SIGKILL)
  return real(path, *args, **kwargs)
pixels.read_band = read_band
rdata.load("bigearthnet", dir=sys.argv[3], exclude="none", store=sys.argv[4], progress=False)
"""


def _child(code: str, limit: int, report: pathlib.Path, *args) -> tuple[int, dict, str]:
  """(exit code, memory peaks in kB, stderr) of `code` run in a fresh interpreter."""
  report.unlink(missing_ok=True)
  child = subprocess.run([sys.executable, "-c", code, str(limit), str(report), *map(str, args)],
                         cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
  peaks = json.loads(report.read_text()) if report.exists() else {}
  return child.returncode, peaks, child.stderr


PAIRS = 12_000        # pairs of the large archive: 4.84 GB decoded at 120 px (ms10 + S1)
TRAIN = 3_000         # of them trained on; the evaluation reads every one
LIMIT = 13 * 2**28    # RLIMIT_DATA of the training child: 3.25 GiB
REFERENCE = 12 * 2**30  # RLIMIT_DATA of the in-memory run: a failure, not a host out of memory


@pytest.mark.slow
def test_an_archive_larger_than_the_memory_limit_trains_from_its_store(example, tmp_path):
  """A store larger than the training process's memory limit, converted by a process
  killed midway and finished by the training run itself, trains to the results of
  the in-memory path (metrics, history, data.json); the in-memory path fails under
  the same limit.

  The limit is RLIMIT_DATA: it counts a process's private writable memory (heap,
  anonymous mmaps: every numpy array, XLA's buffers), not file-backed shared
  mappings: exactly what a copy of the archive would take, while the store's
  memory-mapped pages stay page cache, which the kernel may drop. RLIMIT_AS cannot
  tell the two apart (a memory map of the whole store is address space too, and JAX
  reserves GBs of it unused), and a cgroup's memory.max needs root.
  What the training needs besides the archive is fixed: JAX and XLA (~0.4 GB), XLA's
  temporaries for the encoder's 256-row batches at 120 px (~1.3 GB, the peak), a chunk
  of channel statistics (<0.5 GB). Measured (2 CPUs): a VmData peak of 2.98 GB under
  a limit of 3.49 GB (3.25 GiB) for a 4.84 GB archive (12,000 pairs at 120 px); VmHWM
  6.0 GB, of which 4.7 GB the store's page cache (RssFile) and 1.3 GB private. The
  in-memory run of the same config (its own limit 12 GiB, so that a regression fails
  the test instead of the host) peaks at 10.1 GB VmData, 8.9 GB VmHWM. ~6 min.
  """
  archive = make_archive(example, tmp_path / "ben", PAIRS, link=True)
  out, decoded = tmp_path / "ben.store", PAIRS * 120 * 120 * (10 * 2 + 2 * 4)
  assert decoded > 1.3 * LIMIT
  rc, _, err = _child(_KILLED, 0, tmp_path / "killed.json", archive, out,
                      2 * rstore.CHUNK + rstore.CHUNK // 2)  # killed in the third chunk
  assert rc == -signal.SIGKILL, err[-3000:]
  left = rstore.read_manifest(out)
  assert left["written"] == 2 * rstore.CHUNK and not left["complete"]

  changes = {"data.source": "bigearthnet", "data.dir": str(archive), "data.cache_dir": "none",
             "data.options.exclude": "none", "data.options.limit": None,
             "data.options.size": None, "data.n_train": TRAIN, "train.num_steps": 4,
             "train.eval_every": 4}
  runs = {}
  for name, store, limit in (("store", out, LIMIT), ("memory", None, LIMIT),
                             ("reference", None, REFERENCE)):
    workdir = tmp_path / name
    runs[name] = _child(_TRAIN, limit, tmp_path / f"{name}.json",
                        json.dumps({**changes, "data.options.store": store and str(store)}),
                        workdir)
    print(name, runs[name][:2])  # pytest -s: the measurements
  rc, peaks, err = runs["store"]
  assert rc == 0, err[-3000:]
  assert rstore.read_manifest(out)["complete"]
  assert peaks["VmData"] * 1024 < LIMIT < decoded
  rc, _, err = runs["memory"]
  assert rc != 0 and ("MemoryError" in err or "bad_alloc" in err), err[-3000:]
  rc, _, err = runs["reference"]
  assert rc == 0, err[-3000:]
  a, b = (json.loads((tmp_path / name / "results.json").read_text())
          for name in ("store", "reference"))
  assert a["metrics"] == b["metrics"] and a["history"] == b["history"]
  assert a["n_archive"] + a["n_query"] == PAIRS
  assert (json.loads((tmp_path / "store" / "data.json").read_text())
          == json.loads((tmp_path / "reference" / "data.json").read_text()))
