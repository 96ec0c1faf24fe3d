"""Where BigEarthNet's files lie: the S2 and S1 roots, patch folders, metadata, `dir="example"`."""

from __future__ import annotations

import importlib.resources
import json
import os
import pathlib
import stat as stat_
import tarfile

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

  Args:
    dest: a folder (made if missing); `BigEarthNet-S2-Example/` and
      `BigEarthNet-S1-Example/` are written inside it.

  Returns:
    `dest`, for `load("bigearthnet", dir=example_dir(dest))`.
  """
  tables.constants()
  dest = pathlib.Path(dest).expanduser()
  dest.mkdir(parents=True, exist_ok=True)
  for name in EXAMPLES:
    resource = importlib.resources.files(tables.PACKAGE).joinpath(name)
    try:
      with resource.open("rb") as f, tarfile.open(fileobj=f, mode="r:bz2") as tar:
        if hasattr(tarfile, "data_filter"):
          tar.extractall(dest, filter="data")
        else:  # an older Python without extraction filters: check by hand
          for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(
                dest.resolve()):
              raise DataError(f"{tables.PACKAGE}/{name}: refusing to extract "
                              f"{member.name!r}")
          tar.extractall(dest)
    except (OSError, tarfile.TarError) as e:
      raise DataError(f"{tables.PACKAGE}/{name}: cannot unpack into {dest} "
                      f"({type(e).__name__}: {e})") from None
  return dest


def example_root(cache_dir=None) -> pathlib.Path:
  """Where `dir="example"` reads: the package's examples unpacked once under the
  cache root (a fresh temporary folder when caching is off)."""
  root = cache.cache_root(cache_dir)
  if root is None:
    import tempfile
    return example_dir(tempfile.mkdtemp(prefix="rsh-bigearthnet-example-"))
  dest = root / "bigearthnet-example" / tables.version()
  if not all((dest / name).is_dir() for name in ROOTS[0]):
    example_dir(dest)
  return dest


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


def patches(root: pathlib.Path) -> list[str]:
  """The patch folder names of a root, in natural name order."""
  return sorted((p.name for p in rfiles.listdir(root, "BigEarthNet root")
                 if p.is_dir() and not p.name.startswith(".")), key=rfiles.natural_key)


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
