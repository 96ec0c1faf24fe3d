"""`dir="example"` and the data cache under kills, concurrent first use and broken
links: an unpack or a cache entry is whole or absent, and nothing is left behind.

The expected tree is read from the package's tarballs here, independently of
`rsh.data.bigearthnet`; the races run in subprocesses (`_child`).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest

import rsh
from rsh import data as rdata
from rsh.data import cache

pytest.importorskip("bigearthnet_common.constants",
                    reason="bigearthnet-common is not installed (pip install 'rsh[bigearthnet]')")
from rsh.data import bigearthnet  # noqa: E402
from rsh.data.bigearthnet import tables  # noqa: E402

S2, S1 = "BigEarthNet-S2-Example", "BigEarthNet-S1-Example"
REPO = pathlib.Path(rsh.__file__).resolve().parents[1]

# Run first by every child: `hook` makes tarfile call `action` at the `at`-th S1 file
# it writes, and sleep `sleep` s after each.
_HOOK = """
import json, os, pathlib, signal, sys, tarfile, time
def hook(at, action, sleep=0.0):
  real, count = tarfile.TarFile.makefile, [0]
  def makefile(self, tarinfo, targetpath):
    s1 = "BigEarthNet-S1-Example" in str(targetpath)
    count[0] += s1
    if s1 and count[0] == at:
      action()
    real(self, tarinfo, targetpath)
    if s1:
      time.sleep(sleep)
  tarfile.TarFile.makefile = makefile
"""


@functools.lru_cache(maxsize=None)
def expected() -> dict[str, int]:
  """{path under the unpack: size} of every file in the package's two tarballs."""
  out = {}
  for name in bigearthnet.EXAMPLES:
    with importlib.resources.files("bigearthnet_common").joinpath(name).open("rb") as f, \
         tarfile.open(fileobj=f, mode="r:bz2") as tar:
      out.update({m.name: m.size for m in tar.getmembers() if m.isfile()})
  return out


def tree(dest: pathlib.Path) -> dict[str, int]:
  """{path under `dest`: size} of the files in its two roots."""
  return {p.relative_to(dest).as_posix(): p.stat().st_size
          for root in (S2, S1) for p in (dest / root).rglob("*") if p.is_file()}


def _child(code: str, *args, env=None) -> subprocess.Popen:
  """`code` (after `_HOOK`) in a fresh interpreter that imports this checkout's rsh."""
  env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
  return subprocess.Popen([sys.executable, "-c", _HOOK + textwrap.dedent(code), *map(str, args)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _leftovers(cache_root: pathlib.Path) -> list[str]:
  """Temporary folders left beside the unpack (the lock file is no folder)."""
  return sorted(p.name for p in (cache_root / "bigearthnet-example").iterdir()
                if p.is_dir() and p.name != tables.version())


@pytest.fixture(scope="module")
def example(tmp_path_factory):
  return bigearthnet.example_dir(tmp_path_factory.mktemp("bigearthnet"))


@pytest.fixture
def copy(example, tmp_path):
  shutil.copytree(example, tmp_path / "ben")
  return tmp_path / "ben"


# -- item 3: atomic unpack ---------------------------------------------------------------


def test_partial_unpack_of_an_old_run_is_redone(tmp_path):
  # What a killed in-place unpack leaves: no mark, a VV missing, a VH truncated,
  # the last S2 patch folder not yet written.
  dest = tmp_path / "bigearthnet-example" / tables.version()
  bigearthnet.example_dir(dest)
  next((dest / S1).glob("*/*_VV.tif")).unlink()
  vh = next((dest / S1).glob("*/*_VH.tif"))
  vh.write_bytes(vh.read_bytes()[:100])
  shutil.rmtree(sorted((dest / S2).iterdir())[-1])
  assert bigearthnet.example_root(tmp_path) == dest
  assert tree(dest) == expected()
  ds = rdata.load("bigearthnet", dir="example", cache_dir=tmp_path, exclude=(), bands="rgb")
  assert len(ds) == 6 and ds.views["s1"].shape == (6, 120, 120, 2)


def test_unpack_killed_midway_is_redone(tmp_path):
  child = _child("""
      hook(7, lambda: os.kill(os.getpid(), signal.SIGKILL))
      from rsh.data import bigearthnet
      bigearthnet.example_root(sys.argv[1])
      """, tmp_path)
  out, err = child.communicate(timeout=60)
  assert child.returncode == -9, err
  dest = bigearthnet.example_root(tmp_path)
  assert tree(dest) == expected()
  assert _leftovers(tmp_path) == []  # the killed writer's temporary folder is swept


def test_unpack_failing_midway_leaves_nothing(tmp_path, monkeypatch):
  real, count = tarfile.TarFile.makefile, [0]

  def makefile(self, tarinfo, targetpath):
    count[0] += 1
    if count[0] == 80:  # into the S1 tarball
      raise OSError(28, "No space left on device")
    return real(self, tarinfo, targetpath)

  monkeypatch.setattr(tarfile.TarFile, "makefile", makefile)
  with pytest.raises(rdata.DataError, match="cannot unpack into") as e:
    bigearthnet.example_root(tmp_path)
  dest = tmp_path / "bigearthnet-example" / tables.version()
  assert str(dest) in str(e.value) and not dest.exists() and _leftovers(tmp_path) == []
  monkeypatch.undo()
  assert tree(bigearthnet.example_root(tmp_path)) == expected()


_RACER = """
    from rsh.data import bigearthnet
    go = pathlib.Path(sys.argv[2])
    if sys.argv[3] == "first":  # slow, and says "go" once its S1 tarball is under way
      hook(1, go.touch, sleep=0.03)
    else:
      deadline = time.time() + 60
      while not go.exists() and time.time() < deadline:
        time.sleep(0.005)
    dest = bigearthnet.example_root(sys.argv[1])
    files = {p.relative_to(dest).as_posix(): p.stat().st_size
             for root in bigearthnet.ROOTS[0] for p in (dest / root).rglob("*") if p.is_file()}
    try:
      pairs = len(bigearthnet.scan(dest, exclude=()))
    except Exception as e:
      pairs = f"{type(e).__name__}: {e}"
    print(json.dumps(dict(dest=str(dest), files=files, pairs=pairs)))
    """


def test_concurrent_first_use_never_sees_a_partial_tree(tmp_path):
  # The second starts while the first is writing its S1 files, as in the report.
  go = tmp_path / "go"
  racers = [_child(_RACER, tmp_path / "cache", go, which) for which in ("first", "second")]
  results = []
  for racer in racers:
    out, err = racer.communicate(timeout=120)
    assert racer.returncode == 0, err
    results.append(json.loads(out.splitlines()[-1]))
  for got in results:
    assert got["pairs"] == 6
    assert got["files"] == expected()
  assert results[0]["dest"] == results[1]["dest"]
  assert tree(pathlib.Path(results[0]["dest"])) == expected()
  assert _leftovers(tmp_path / "cache") == []


def test_cache_write_losing_a_race_keeps_the_winner_quietly(tmp_path, monkeypatch, caplog):
  ds = rdata.Dataset(np.arange(2 * 4 * 4 * 3, dtype=np.uint16).reshape(2, 4, 4, 3),
                     np.array([0, 1]), ("a", "b"), ("B04", "B03", "B02"), "t",
                     views={"s1": np.ones((2, 4, 4, 2), np.float32)},
                     splits={"train": np.array([0]), "test": np.array([1])})
  entry = cache.entry_path(tmp_path, "t", "race")
  real, raced = os.replace, []

  def replace(src, dst):
    # Another process renames its entry into place just before this one does.
    if pathlib.Path(dst) == entry and not raced:
      raced.append(src)
      cache.write(entry, ds)
    return real(src, dst)

  monkeypatch.setattr(os, "replace", replace)
  with caplog.at_level(logging.INFO, logger="rsh.data.cache"):
    cache.write(entry, ds)
  monkeypatch.undo()
  assert raced
  assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
  got = cache.read(entry)
  assert got is not None and got.files is None
  np.testing.assert_array_equal(got.images, ds.images)
  np.testing.assert_array_equal(got.views["s1"], ds.views["s1"])
  assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]


# -- item 9: broken links, unpaired S2 patches, no cache ----------------------------------


@pytest.mark.parametrize("root", [S2, S1])
def test_a_patch_that_is_a_broken_symlink_is_named(copy, tmp_path, root):
  # S2: once "has no folder"; S1: the pair was dropped without a word.
  patch = sorted((copy / root).iterdir())[0]
  target = tmp_path / "moved" / patch.name
  shutil.rmtree(patch)
  os.symlink(target, patch)
  with pytest.raises(rdata.DataError, match="broken symlink") as e:
    rdata.load("bigearthnet", dir=copy, cache_dir=False, exclude=())
  assert str(patch) in str(e.value) and str(target) in str(e.value)
  assert "has no folder" not in str(e.value)


def test_s2_patches_without_an_s1_pair_are_warned_about_once(copy, caplog):
  s1 = sorted((copy / S1).iterdir())[:2]
  lonely = sorted(json.loads((p / f"{p.name}_labels_metadata.json").read_text())[
      "corresponding_s2_patch"] for p in s1)
  for p in s1:
    shutil.rmtree(p)
  with caplog.at_level(logging.WARNING, logger="rsh.data.bigearthnet"):
    ds = rdata.load("bigearthnet", dir=copy, cache_dir=False, exclude=(), bands="rgb")
  assert len(ds) == 4
  warned = [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name.startswith("rsh.data.bigearthnet")]
  assert len(warned) == 1, warned
  assert "2 S2 patch folders" in warned[0] and all(name in warned[0] for name in lonely)


def test_example_without_cache_leaves_no_temporary_folder(tmp_path):
  tmp = tmp_path / "tmp"
  tmp.mkdir()
  child = _child("""
      from rsh import data as rdata
      from rsh.data import bigearthnet
      for _ in range(2):
        ds = rdata.load("bigearthnet", dir="example", cache_dir="none", exclude=(), bands="rgb")
      found = bigearthnet.scan("example", cache_dir="none", exclude=())
      print(len(ds), len(found), len(list(pathlib.Path(sys.argv[1]).iterdir())))
      """, tmp, env={"TMPDIR": str(tmp)})
  out, err = child.communicate(timeout=120)
  assert child.returncode == 0, err
  assert out.split() == ["6", "6", "1"]  # one unpack per process, while it runs
  assert list(tmp.iterdir()) == []
