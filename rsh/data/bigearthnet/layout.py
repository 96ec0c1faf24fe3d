"""Where BigEarthNet's files lie: the S2 and S1 roots, patch folders, metadata, `dir="example"`."""

from __future__ import annotations

import atexit
import importlib.resources
import json
import os
import pathlib
import shutil
import stat as stat_
import tarfile
import tempfile
import threading

from rsh.data import cache
from rsh.data import files as rfiles
from rsh.data.bands import DataError
from rsh.data.bigearthnet import tables

# (S2 root, S1 root) as the package's examples unpack, and as the full download.
ROOTS = (("BigEarthNet-S2-Example", "BigEarthNet-S1-Example"),
         ("BigEarthNet-v1.0", "BigEarthNet-S1-v1.0"))
EXAMPLES = ("BigEarthNet-S2-Example.tar.bz2", "BigEarthNet-S1-Example.tar.bz2")
EXAMPLE = "example"  # dir="example": the package's 6 real pairs, unpacked on first use

LAYOUT = ("dir=<folder holding the S2 and the S1 root side by side: BigEarthNet-v1.0/ + "
          "BigEarthNet-S1-v1.0/ (the full download) or BigEarthNet-S2-Example/ + "
          "BigEarthNet-S1-Example/ (rsh.data.bigearthnet.example_dir(dest) unpacks the 6 "
          "example pairs of bigearthnet-common there)>")


def example_dir(dest: str | os.PathLike) -> pathlib.Path:
  """Unpacks the 6 real example pairs of `bigearthnet-common` into `dest`.

  Both roots are unpacked into a temporary folder inside `dest`, then renamed
  into place (S1 first: a reader needs both), replacing any already there; an
  interrupted call leaves no partial root.

  Args:
    dest: a folder (made if missing); `BigEarthNet-S2-Example/` and
      `BigEarthNet-S1-Example/` are written inside it.

  Returns:
    `dest`, for `load("bigearthnet", dir=example_dir(dest))`.
  """
  tables.constants()
  dest = pathlib.Path(dest).expanduser()
  tmp = old = None
  try:
    dest.mkdir(parents=True, exist_ok=True)
    cache.sweep(dest)
    tmp = cache.mkdtemp(dest / "example")
    _unpack(tmp, dest)
    for name in reversed(ROOTS[0]):
      if os.path.lexists(dest / name):  # out of the way first, removed below
        old = old or cache.mkdtemp(dest / "example")
        os.replace(dest / name, old / name)
      os.replace(tmp / name, dest / name)
  except OSError as e:
    raise DataError(f"{tables.PACKAGE} examples: cannot unpack into {dest} "
                    f"({type(e).__name__}: {e})") from None
  finally:
    for folder in (tmp, old):
      if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
  return dest


def _unpack(folder: pathlib.Path, dest: pathlib.Path) -> None:
  """Extracts the package's two example tarballs into `folder`, on the way to `dest`."""
  for name in EXAMPLES:
    resource = importlib.resources.files(tables.PACKAGE).joinpath(name)
    try:
      with resource.open("rb") as f, tarfile.open(fileobj=f, mode="r:bz2") as tar:
        if hasattr(tarfile, "data_filter"):
          tar.extractall(folder, filter="data")
        else:  # an older Python without extraction filters: check by hand
          for member in tar.getmembers():
            target = (folder / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(
                folder.resolve()):
              raise DataError(f"{tables.PACKAGE}/{name}: refusing to extract "
                              f"{member.name!r}")
          tar.extractall(folder)
    except (OSError, tarfile.TarError) as e:
      raise DataError(f"{tables.PACKAGE}/{name}: cannot unpack into {dest} "
                      f"({type(e).__name__}: {e})") from None


def example_root(cache_dir=None) -> pathlib.Path:
  """Where `dir="example"` reads: the package's examples unpacked once under the
  cache root, atomically (`cache.derived`); when caching is off, once per
  process into a temporary folder removed at exit."""
  root = cache.cache_root(cache_dir)
  if root is None:
    return _private_example()
  tables.constants()
  dest = root / "bigearthnet-example" / tables.version()
  try:
    return cache.derived(dest, lambda folder: _unpack(folder, dest))
  except OSError as e:
    raise DataError(f"{tables.PACKAGE} examples: cannot unpack into {dest} "
                    f"({type(e).__name__}: {e})") from None


# (pid, folder): this process's examples when caching is off.
_private = [None]
_private_lock = threading.Lock()


def _private_example() -> pathlib.Path:
  """This process's own unpack of the examples, removed when it exits."""
  with _private_lock:
    made = _private[0]
    if made is not None and made[0] == os.getpid() and all(
        (made[1] / name).is_dir() for name in ROOTS[0]):
      return made[1]
    dest = pathlib.Path(tempfile.mkdtemp(prefix="rsh-bigearthnet-example-"))
    atexit.register(_remove, dest, os.getpid())
    example_dir(dest)
    _private[0] = (os.getpid(), dest)
    return dest


def _remove(folder: pathlib.Path, pid: int) -> None:
  """Removes `folder` at exit, unless in a forked child (its parent may still read it)."""
  if os.getpid() == pid:
    shutil.rmtree(folder, ignore_errors=True)


def roots(dir, cache_dir=None) -> tuple[pathlib.Path, pathlib.Path]:
  """(S2 root, S1 root) inside `dir`, or a DataError explaining the layout."""
  if dir is None:
    raise DataError(f"source=bigearthnet needs {LAYOUT}")
  if str(dir) == EXAMPLE:
    dir = example_root(cache_dir)
  root = pathlib.Path(dir).expanduser()
  try:
    is_dir = stat_.S_ISDIR(root.stat().st_mode)
  except OSError as e:
    if isinstance(e, FileNotFoundError) and not rfiles.is_symlink(root):
      raise DataError(f"BigEarthNet folder {root} does not exist") from None
    raise DataError(f"BigEarthNet folder {root} {rfiles.why(root, e)}") from None
  if not is_dir:
    raise DataError(f"BigEarthNet folder {root} is not a directory")
  for s2, s1 in ROOTS:
    if (root / s2).is_dir() and (root / s1).is_dir():
      return root / s2, root / s1
  found = sorted(p.name for p in rfiles.listdir(root, "BigEarthNet folder")
                 if p.is_dir() and not p.name.startswith("."))
  raise DataError(f"{root} holds no BigEarthNet S2 and S1 roots side by side (found "
                  f"{', '.join(found) or 'no folders'}); source=bigearthnet needs {LAYOUT}")


def patches(root: pathlib.Path, links: str = "skip") -> list[str]:
  """The patch folder names of a root, in natural name order; `links="raise"`: a
  broken symlink (or loop) among them is a DataError naming it, not skipped."""
  names = []
  for p in rfiles.listdir(root, "BigEarthNet root"):
    if p.name.startswith("."):
      continue
    if p.is_dir():
      names.append(p.name)
    elif links == "raise" and rfiles.is_symlink(p):
      try:
        p.stat()
      except OSError as e:
        raise DataError(f"BigEarthNet patch folder {p} {rfiles.why(p, e)}") from None
  return sorted(names, key=rfiles.natural_key)


def no_folder(folder: pathlib.Path) -> str:
  """Why patch `folder` is none, in words: "<root> has no folder <name>", or the
  broken symlink and where it leads, or "<folder> is not a folder"."""
  try:
    folder.stat()
  except OSError as e:
    if isinstance(e, FileNotFoundError) and not rfiles.is_symlink(folder):
      return f"{folder.parent} has no folder {folder.name}"
    return f"{folder} {rfiles.why(folder, e)}"
  return f"{folder} is not a folder"


def metadata(folder: pathlib.Path, what: str) -> dict:
  """A patch's `<name>_labels_metadata.json`, checked to have a "labels" list."""
  path = folder / f"{folder.name}_labels_metadata.json"
  try:
    meta = json.loads(path.read_text())
  except FileNotFoundError:
    raise DataError(f"{what}: missing {path.name} in {folder}") from None
  except (OSError, ValueError) as e:
    raise DataError(f"{what}: cannot read {path} ({type(e).__name__}: {e})") from None
  if not isinstance(meta, dict) or not isinstance(meta.get("labels"), list):
    raise DataError(f"{what}: {path} has no \"labels\" list")
  return meta
