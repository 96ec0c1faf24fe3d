"""What a run was trained on, recorded in its workdir (`data.json`) and checked.

`fingerprint(prepared)` holds the source, the band names, the row count, the
images per class, the sizes of the sets and digests of the file names, the
labels, the pixels (each view a source loads beside them too) and the split.
A resumed run and `rsh.restore.load_run` compare it with the workdir's: data
changed under a workdir (a file added, edited or removed) is refused naming
what changed, instead of mixing two datasets into one run's results.

Arrays are digested in chunks of rows, so an archive on disk (a memory map, or
a `rsh.data.lazy.Bands` of one) is read through once, never copied whole; a
memory map that carries `content_digest` (set by a finished BigEarthNet store,
`rsh.data.bigearthnet.store`, which computed it with `digest_array` and checks its
files are unchanged since) is not read at all. Either way the digest is the
same as of the same numbers in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib

import numpy as np

from rsh import distributed
from rsh.data.bands import DataError

log = logging.getLogger(__name__)

FILE = "data.json"
# Up to this many file names are kept (so a change names the files); beyond, a digest.
MAX_NAMES = 2000
_CHUNK = 1 << 26  # bytes hashed at a time: a large archive is never copied whole


class DataChangedError(DataError):
  """The data loaded now is not what the workdir's run was trained on."""


def digest_array(x, on_rows=None) -> str:
  """blake2b-128 of `x`'s dtype, shape and bytes (C order), read in chunks of rows.

  Args:
    x: an array, or any array-like with `shape`, `dtype` and row slicing
      (`rsh.data.lazy.Bands`); a memory map is read chunk by chunk. Its
      `content_digest` attribute, when it has one, is returned unread.
    on_rows: called with the number of rows digested so far (a progress bar).
  """
  known = getattr(x, "__dict__", {}).get("content_digest")
  if known is not None:
    return known
  h = hashlib.blake2b(digest_size=16)
  if not (hasattr(x, "shape") and hasattr(x, "dtype")) or not len(x.shape):
    x = np.asarray(x)
  shape = tuple(int(d) for d in x.shape)
  h.update(f"{np.dtype(x.dtype).str}{shape}".encode())
  if not shape or not int(np.prod(shape)):
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()
  rows = max(1, _CHUNK // max(1, np.asarray(x[0]).nbytes))
  for i in range(0, shape[0], rows):
    h.update(np.ascontiguousarray(x[i:i + rows]).data)
    if on_rows is not None:
      on_rows(min(i + rows, shape[0]))
  return h.hexdigest()


def _digest_text(items) -> str:
  return hashlib.blake2b("\n".join(map(str, items)).encode(), digest_size=16).hexdigest()


def fingerprint(prepared) -> dict:
  """The record of what `prepared` (an `rsh.data.Prepared`) holds."""
  ds, split = prepared.dataset, prepared.split
  files = list(ds.files) if ds.files is not None else None
  fp = {
      "source": ds.source,
      "bands": list(prepared.band_names),
      "rows": int(len(prepared.labels)),
      "classes": ds.counts(),
      "sets": {name: int(len(prepared.indices(name))) for name in prepared.set_names},
      "labels": digest_array(prepared.labels),
      "pixels": digest_array(prepared.images),
      "views": {name: digest_array(v) for name, v in sorted((ds.views or {}).items())},
      "split": _digest_text(digest_array(getattr(split, s)) for s in split._fields),
      "files": None if files is None else _digest_text(files),
  }
  if files is not None and len(files) <= MAX_NAMES:
    fp["file_names"] = files
  fp["digest"] = _digest_text(json.dumps({k: v for k, v in fp.items() if k != "file_names"},
                                         sort_keys=True).splitlines())
  return fp


def changes(old: dict, new: dict) -> list[str]:
  """What differs between two fingerprints, in words (empty: the same data)."""
  out = []
  for key in ("source", "bands", "rows"):
    if old.get(key) != new.get(key):
      out.append(f"{key} {old.get(key)} -> {new.get(key)}")
  if old.get("file_names") is not None and new.get("file_names") is not None:
    before, after = set(old["file_names"]), set(new["file_names"])
    gone = [f for f in old["file_names"] if f not in after]
    came = [f for f in new["file_names"] if f not in before]
    for sign, names in (("+", came), ("-", gone)):
      if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        out.append(f"files {sign}{len(names)}: {shown}")
  elif old.get("files") != new.get("files"):
    out.append("the file names differ")
  for key, what in (("classes", "images per class"), ("sets", "set sizes")):
    a, b = old.get(key) or {}, new.get(key) or {}
    diff = [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]
    if diff:
      out.append(f"{what}: {', '.join(diff[:4])}" + (" ..." if len(diff) > 4 else ""))
  for key, what in (("labels", "the labels"), ("pixels", "the pixels"), ("views", "a view's "
                    "rows"), ("split", "the split")):
    if old.get(key) != new.get(key) and not out:
      out.append(f"{what} differ")
  return out


def read(workdir: str | os.PathLike) -> dict | None:
  """The workdir's recorded fingerprint, or None (none recorded: an older run)."""
  path = pathlib.Path(workdir) / FILE
  if not path.exists():
    return None
  try:
    out = json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise DataError(f"{path} is not valid JSON ({e}): the workdir's record of its data is "
                    "damaged; delete it to record the data loaded now") from None
  if not isinstance(out, dict):
    raise DataError(f"{path} is not a data fingerprint; delete it to record the data loaded now")
  return out


def write(workdir: str | os.PathLike, fp: dict) -> None:
  """Records `fp` as the workdir's data.json; in a multi-host run, by the writer alone."""
  if not distributed.is_writer():
    return
  path = pathlib.Path(workdir) / FILE
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(fp, indent=1, sort_keys=True) + "\n")
  os.replace(tmp, path)


def check(workdir: str | os.PathLike, fp: dict, allow_change: bool = False,
          override: str = "--allow_data_change") -> None:
  """Refuses data that differs from what the workdir recorded (DataChangedError
  naming the changes and `override`); with `allow_change`, only warns."""
  old = read(workdir)
  if old is None or old.get("digest") == fp["digest"]:
    return
  diff = changes(old, fp) or ["the data differ"]
  message = (f"the data loaded now is not what the run in {workdir} was trained on: "
             f"{'; '.join(diff)}")
  if not allow_change:
    raise DataChangedError(f"{message}. Use another workdir, or {override} to use it "
                           "anyway (its results would then mix two datasets)")
  log.warning("%s (allowed: %s)", message, override)
