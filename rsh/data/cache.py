"""The on-disk cache of loaded datasets: `<root>/data/<kind>-<key digest>/`.

An entry holds `images.npy`, `labels.npy` and `meta.json` (class and band
names, source, files), plus one `view_<name>.npy` per `Dataset.views` entry and
`splits.npz` when the dataset has them (`meta.json` lists both; an entry
written before they existed reads as views=None, splits=None).

`meta.json` also holds the CRC-32 of every array file written, checked on every
read: a damaged entry, even one of the right size, is ignored with one warning
naming the entry and the file (and rewritten by the loader), never an error. An
entry of another `_CACHE_VERSION` is outdated and never read.

An entry is written into a temporary folder `.<entry>~<host>~<pid>~<random>`
and renamed into place, so a reader sees a complete entry or none; two
processes caching the same entry at once leave one of their two complete
entries there, without a warning. Each write (and each read that finds no
entry) removes the temporary folders of writers that died on this host, and
any older than a day; never a live writer's.

`derived` makes any other folder derived once and shared (the unpacked
BigEarthNet examples) the same way, marked complete by a file written last.

A loader may pass an `origin` (the source kind, the resolved folder and the
options that are no file stats): after a successful write, the other entries
of the same origin are superseded (their files changed) and removed, so an
edited source does not pile up full copies. Entries of other origins stay.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pathlib
import re
import shutil
import socket
import tempfile
import time
import zlib

import numpy as np

from rsh import distributed
from rsh.data.dataset import Dataset

log = logging.getLogger(__name__)

# 2: CRC-32 of each array file in meta.json ("crc32"), and "origin".
_CACHE_VERSION = 2
# A temporary folder older than this is abandoned, whoever wrote it.
STALE_TMP_S = 24 * 3600
# `.<entry>~<host>~<pid>~<mkdtemp suffix>`; and the `.<entry>.<suffix>` of version 1.
_TMP = re.compile(r"\.(?P<entry>[^~]+)~(?P<host>[^~]+)~(?P<pid>\d+)~[^~]*")
_OLD_TMP = re.compile(r"\.[A-Za-z0-9_]+-[0-9a-f]{24}\.[a-z0-9_]{8}")
# Written last into a `derived` folder: one without it is a killed writer's, or
# an older rsh's that wrote in place, and is made again.
COMPLETE = ".rsh-complete"


class _Damaged(Exception):
  """An entry file whose bytes are not those written (its CRC-32 differs)."""


def cache_root(cache_dir: str | os.PathLike | bool | None) -> pathlib.Path | None:
  """The cache root directory, or None when caching is off (False or "none")."""
  if cache_dir is None or cache_dir is True:
    cache_dir = os.environ.get("RSH_CACHE_DIR") or pathlib.Path.home() / ".cache" / "rsh"
  if cache_dir is False or (isinstance(cache_dir, str) and cache_dir.lower() in ("none", "")):
    return None
  return pathlib.Path(cache_dir).expanduser()


def entry_path(cache_dir, kind: str, key: object) -> pathlib.Path | None:
  """The entry of source `kind` for `key` (any JSON value), or None when caching is off."""
  root = cache_root(cache_dir)
  if root is None:
    return None
  digest = hashlib.sha256(json.dumps([_CACHE_VERSION, key]).encode()).hexdigest()[:24]
  return root / "data" / f"{kind}-{digest}"


def read(path: pathlib.Path | None) -> Dataset | None:
  """The `Dataset` cached at `path`, or None (no path, no entry, or an unreadable,
  damaged or outdated one)."""
  if path is None:
    return None
  if not path.is_dir():
    sweep(path.parent)
    return None
  try:
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("version") != _CACHE_VERSION:
      log.info("ignoring outdated cache %s (version %s, not %s)", path, meta.get("version"),
               _CACHE_VERSION)
      return None
    crc = meta["crc32"]
    images = _load_npy(path, "images.npy", crc)
    labels = _load_npy(path, "labels.npy", crc)
    views = None
    if meta.get("views") is not None:
      views = {name: _load_npy(path, file, crc) for name, file in meta["views"].items()}
    splits = None
    if meta.get("splits") is not None:
      data = _read_checked(path, "splits.npz", crc)
      with np.load(io.BytesIO(data), allow_pickle=False) as z:
        splits = {name: z[f"arr_{i}"] for i, name in enumerate(meta["splits"])}
    ds = Dataset(images, labels, tuple(meta["class_names"]), tuple(meta["band_names"]),
                 meta["source"], None if meta["files"] is None else tuple(meta["files"]),
                 views=views, splits=splits)
  except _Damaged as e:
    log.warning("ignoring damaged cache %s: %s does not match its checksum; reading the "
                "source again", path, e)
    return None
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    # A damaged cache is only a lost shortcut: read the source again.
    log.warning("ignoring unreadable cache %s (%s: %s)", path, type(e).__name__, e)
    return None
  log.info("loaded %d images from cache %s", len(ds), path)
  return ds


def write(path: pathlib.Path | None, ds: Dataset, origin: object = None) -> None:
  """Writes `ds` to `path` atomically: a complete cache entry or none at all.

  `origin` (any JSON value, or None): where the entry comes from, without the
  file stats; once written, the other entries of the same origin are removed.
  """
  if path is None or not distributed.is_writer():  # a multi-host run's writer alone
    return
  if origin is not None:
    origin = json.loads(json.dumps(origin))  # tuples as lists, as read back
  tmp = old = None
  written = False
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path.parent)
    tmp = mkdtemp(path)
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    crc = {}
    _save_npy(tmp, "images.npy", ds.images, crc)
    _save_npy(tmp, "labels.npy", ds.labels, crc)
    views = None
    if ds.views is not None:
      views = {name: _view_file(i, name) for i, name in enumerate(ds.views)}
      for name, file in views.items():
        _save_npy(tmp, file, ds.views[name], crc)
    if ds.splits is not None:
      # Positional (arr_0, arr_1, ...) in meta's order: any split name round-trips.
      np.savez(tmp / "splits.npz", *(np.asarray(idx) for idx in ds.splits.values()))
      crc["splits.npz"] = _file_crc(tmp / "splits.npz")
    (tmp / "meta.json").write_text(json.dumps(dict(
        version=_CACHE_VERSION, class_names=ds.class_names, band_names=ds.band_names,
        source=ds.source, files=ds.files, shape=list(ds.images.shape), views=views,
        splits=None if ds.splits is None else list(ds.splits), crc32=crc, origin=origin)))
    if path.exists():  # a stale or damaged entry under the same key: out of the way first
      old = mkdtemp(path)
      with contextlib.suppress(FileNotFoundError):  # another writer moved it first
        os.replace(path, old)
    try:  # The directory appears complete or not at all, even if we are killed.
      os.replace(tmp, path)
    except OSError:
      if not (path / "meta.json").is_file():
        raise
      # Another process renamed its entry into place in between: as good as ours.
      log.info("cache %s was written by another process first", path)
      return
    tmp, written = None, True
    log.info("cached %d images in %s", len(ds), path)
  except OSError as e:
    # The cache is not writable (full, read-only, permissions): not fatal.
    log.warning("could not write cache %s (%s)", path, e)
  finally:
    for folder in (tmp, old):
      if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
  if written and origin is not None:
    _remove_superseded(path, origin)


def derived(path: pathlib.Path, fill) -> pathlib.Path:
  """`path`, a folder made once by `fill(folder)` and shared by every process.

  `fill` writes into a temporary sibling, marked complete (`COMPLETE`, written
  last) and renamed into place: a reader sees the whole folder or none, even
  beside a killed or racing maker. A folder at `path` without the mark (an
  interrupted or older in-place write) is made again. Of two processes making
  it at once, the first to finish wins and the other's copy is dropped.
  Raises the `OSError` of a folder that cannot be written.
  """
  if (path / COMPLETE).is_file():
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  sweep(path.parent)
  tmp = old = None
  try:
    tmp = mkdtemp(path)
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    fill(tmp)
    (tmp / COMPLETE).write_text(f"{_host()} {os.getpid()} {time.time():.0f}\n")
    with _lock(path):
      if (path / COMPLETE).is_file():
        return path  # another process finished first: ours is dropped
      if os.path.lexists(path):
        log.info("making %s again: it has no %s (an interrupted or older unpack)", path,
                 COMPLETE)
        old = mkdtemp(path)
        os.replace(path, old / path.name)  # a folder, a file or a link alike
      try:
        os.replace(tmp, path)
        tmp = None
      except OSError:
        if not (path / COMPLETE).is_file():  # else no lock here, and a rival finished first
          raise
  finally:
    for folder in (tmp, old):
      if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
  return path


def sweep(data_dir: pathlib.Path) -> list[pathlib.Path]:
  """Removes the abandoned temporary folders in `data_dir`: those of a writer no
  longer running on this host, and any older than `STALE_TMP_S`; returns them."""
  try:
    children = list(os.scandir(data_dir))
  except OSError:
    return []
  removed = []
  host = _host()
  for e in children:
    m = _TMP.fullmatch(e.name)
    if m is None and _OLD_TMP.fullmatch(e.name) is None:
      continue
    try:
      if not e.is_dir(follow_symlinks=False):
        continue
      age = time.time() - e.stat(follow_symlinks=False).st_mtime
    except OSError:
      continue
    if m is not None and m["host"] == host:
      if _alive(int(m["pid"])):
        continue  # a live writer's, however old
    elif age < STALE_TMP_S:
      continue  # another host's writer, or one of the old naming: maybe still at work
    shutil.rmtree(e.path, ignore_errors=True)
    if not os.path.lexists(e.path):
      log.info("removed abandoned cache temporary folder %s", e.path)
      removed.append(pathlib.Path(e.path))
  return removed


def _remove_superseded(path: pathlib.Path, origin) -> None:
  """Removes the entries beside `path` whose meta.json has the same `origin`."""
  try:
    others = [p for p in path.parent.iterdir()
              if p.name != path.name and not p.name.startswith(".") and p.is_dir()]
  except OSError:
    return
  for p in others:
    try:
      meta = json.loads((p / "meta.json").read_text())
    except (OSError, ValueError):
      continue
    if not isinstance(meta, dict) or meta.get("origin") != origin:
      continue
    try:  # out of the way first, so a reader sees the whole entry or none
      gone = mkdtemp(p)
      os.replace(p, gone)
    except OSError:
      continue  # another process removed it first
    shutil.rmtree(gone, ignore_errors=True)
    log.info("removed cache %s, superseded by %s", p, path)


@contextlib.contextmanager
def _lock(path: pathlib.Path):
  """An exclusive lock on `.<name>.lock` beside `path`, held for the block; none
  where the platform or file system has no locks (the rename alone decides)."""
  try:
    import fcntl
    f = open(path.parent / f".{path.name}.lock", "a")
  except (ImportError, OSError):
    yield
    return
  with f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX)
    except OSError:
      pass
    yield


def _host() -> str:
  return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def _alive(pid: int) -> bool:
  """Whether process `pid` runs on this host (True when that cannot be told)."""
  if pid <= 0:
    return False
  if pid == os.getpid():
    return True
  if os.name != "posix":
    return True  # no safe probe (os.kill would signal it); the age rule applies
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:  # PermissionError: alive, another user's
    return True
  return True


def mkdtemp(path: pathlib.Path) -> pathlib.Path:
  """A new temporary folder beside `path`, named for this host and process (`sweep`
  removes it once that process is gone)."""
  return pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}~{_host()}~{os.getpid()}~",
                                       dir=path.parent))


def _file_crc(path: pathlib.Path) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      crc = zlib.crc32(chunk, crc)
  return crc


def _save_npy(folder: pathlib.Path, file: str, x, crc: dict) -> None:
  np.save(folder / file, np.ascontiguousarray(x), allow_pickle=False)
  crc[file] = _file_crc(folder / file)


def _load_npy(folder: pathlib.Path, file: str, crc: dict) -> np.ndarray:
  """`folder/file`, checked against `crc[file]` (CRC-32 of the file) in one read."""
  with open(folder / file, "rb") as f:
    x = np.load(f, allow_pickle=False)
    header = os.fstat(f.fileno()).st_size - x.nbytes
    if header <= 0:
      raise _Damaged(file)
    f.seek(0)
    got = zlib.crc32(f.read(header))
  # CRC-32 runs on: the header's, then the data's, straight from memory.
  got = zlib.crc32(x if x.flags.c_contiguous else x.T, got)
  if got != crc.get(file):
    raise _Damaged(file)
  return x


def _read_checked(folder: pathlib.Path, file: str, crc: dict) -> bytes:
  data = (folder / file).read_bytes()
  if zlib.crc32(data) != crc.get(file):
    raise _Damaged(file)
  return data


def _view_file(i: int, name: str) -> str:
  """`view_<name>.npy`, or `view.<i>.npy` for a name that is no plain file name."""
  if re.fullmatch(r"[A-Za-z0-9_.-]+", name):
    return f"view_{name}.npy"
  return f"view.{i}.npy"
