"""Folder and file helpers the file-reading sources share (folder, tfds, bigearthnet).

Listing, naming why a path cannot be read, natural name order, the uint16
digital-number check and a threaded map with a first-failure-in-order error:
each raises `DataError` naming the file or folder.
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
import pathlib
import re
import sys

import numpy as np

from rsh.data.bands import DataError

# Below this many files a read is quick enough that a progress bar is noise.
_PROGRESS_MIN_FILES = 500


def is_symlink(p: pathlib.Path) -> bool:
  """`p.is_symlink()`, False where even that cannot be asked (permissions)."""
  try:
    return p.is_symlink()
  except OSError:
    return False


def why(p: pathlib.Path, e: OSError | None) -> str:
  """Why `p` cannot be read, in words (after `p`'s stat failed with `e`)."""
  if e is not None and e.errno == errno.ELOOP:
    return "is a symlink loop (it links, maybe through other links, back to itself)"
  if (e is None or e.errno == errno.ENOENT) and is_symlink(p):
    try:
      target = os.readlink(p)
    except OSError:
      target = "?"
    return f"is a broken symlink (to {target}, which does not exist)"
  if e is not None and e.errno in (errno.EACCES, errno.EPERM):
    return "cannot be read: permission denied"
  return f"cannot be read ({e.strerror if e is not None and e.strerror else e})"


def listdir(folder: pathlib.Path, what: str) -> list[pathlib.Path]:
  """The entries of `folder`, sorted, or a DataError naming it."""
  try:
    return sorted(folder.iterdir())
  except OSError as e:
    raise DataError(f"{what} {folder} {why(folder, e)}") from None


def natural_key(name: str):
  """'Forest_10.tif' after 'Forest_9.tif'."""
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def to_dn(x: np.ndarray, what: str) -> np.ndarray:
  """Any numeric image -> uint16 digital numbers, refusing what does not fit."""
  if x.dtype == np.uint16:
    return x
  if x.dtype.kind not in "uif":
    raise DataError(f"{what}: pixel type {x.dtype} is not a number")
  if x.dtype.kind == "f" and not np.isfinite(x).all():
    raise DataError(f"{what}: has non-finite values (NaN or inf)")
  lo, hi = x.min(), x.max()
  if lo < 0 or hi > np.iinfo(np.uint16).max:
    raise DataError(f"{what}: values {lo}..{hi} do not fit 16-bit digital numbers")
  return np.rint(x).astype(np.uint16) if x.dtype.kind == "f" else x.astype(np.uint16)


def show_progress(progress: bool | None, n: int) -> bool:
  """Whether to show a bar over `n` items: `progress` if set, else when many, on a tty."""
  if progress is not None:
    return progress
  return n >= _PROGRESS_MIN_FILES and sys.stderr.isatty()


def parallel_map(fn, n: int, progress: bool | None, desc: str, *, unit: str = "file",
                 start: int = 0) -> list:
  """[fn(i) for i in range(start, n)] in a thread pool (None below `start`); the
  first failure in index order is raised.

  tifffile and file reads release the GIL while reading and decoding, so
  threads scale; one bad file among 27,000 stops the rest early rather than
  after a full pass.
  """
  out = [None] * n
  if n <= start:
    return out

  def run(i):
    out[i] = fn(i)

  bar = None
  if show_progress(progress, n):
    from tqdm import tqdm
    bar = tqdm(total=n, initial=start, desc=desc, unit=unit)
  workers = min(32, 4 * (os.cpu_count() or 1), n - start)
  pool = concurrent.futures.ThreadPoolExecutor(workers)
  try:
    futures = {pool.submit(run, i): i for i in range(start, n)}
    for f in concurrent.futures.as_completed(futures):
      if f.exception() is not None:
        break
      if bar is not None:
        bar.update()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    if bar is not None:
      bar.close()
  errors = {i: f.exception() for f, i in futures.items()
            if f.done() and not f.cancelled() and f.exception() is not None}
  if errors:
    raise errors[min(errors)]  # of the files read, the first bad one in index order
  return out
