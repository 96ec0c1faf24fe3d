"""Code files: packed codes on disk, memory-mapped, written as they are made.

An encoded archive is a folder (by convention named `*.rsh`) of plain numpy files,
readable without rsh (`np.load(path / "codes.npy", mmap_mode="r")`):

  codes.npy    uint8[n, l // 8]  packed codes (`rsh.hamming.pack_codes`)
  ids.npy      int64[n]          each code's id (e.g. its row in the source set)
  header.json  {"format", "bits", "count", "written", "meta": {run, step, set, ...}}

`create(path, count, bits, meta=)` allocates both arrays at their final size and
returns a `CodeWriter`; `append(codes, ids)` writes the next rows, and every
`flush_every` rows the arrays are flushed and then `header.json`'s `written` is
replaced atomically, so a killed writer leaves a file whose first `written` rows are
whole. `create(..., resume=True)` reopens such a file (same count, bits and meta) at
`written`. `open_codes(path)` refuses a file that is not complete; its `codes` and
`ids` are read-only memmaps, so an archive of 10^9 codes costs page cache, not RAM.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil

import numpy as np

__all__ = ["CodeFile", "CodeWriter", "create", "open_codes", "FORMAT"]

FORMAT = "rsh.codes/1"
_HEADER = "header.json"
# Every name a code file's folder may hold (what `overwrite` may remove).
_OWN = frozenset({"codes.npy", "ids.npy", _HEADER, f".{_HEADER}.tmp"})


@dataclasses.dataclass(frozen=True)
class CodeFile:
  """A complete code file: `codes: uint8[n, bits // 8]` and `ids: int64[n]` memmaps."""
  path: pathlib.Path
  bits: int
  codes: np.ndarray
  ids: np.ndarray
  meta: dict

  def __len__(self) -> int:
    return len(self.codes)


def _read_header(path: pathlib.Path) -> dict:
  try:
    header = json.loads((path / _HEADER).read_text())
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: not a code file (no {_HEADER}); make one with "
                            "`python -m rsh.encode` or rsh.search.codefile.create") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path / _HEADER}: not valid JSON ({e})") from None
  if header.get("format") != FORMAT:
    raise ValueError(f"{path}: format {header.get('format')!r}, expected {FORMAT!r}")
  return header


def _write_header(path: pathlib.Path, header: dict) -> None:
  tmp = path / f".{_HEADER}.tmp"
  tmp.write_text(json.dumps(header, indent=1, sort_keys=True) + "\n")
  os.replace(tmp, path / _HEADER)


def _check_bits(bits) -> int:
  if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits <= 0 or bits % 8:
    raise ValueError(f"code file: `bits` must be a positive multiple of 8; got {bits!r}")
  return int(bits)


class CodeWriter:
  """Writes rows `written..count` of a code file in order; see `create`."""

  def __init__(self, path: pathlib.Path, header: dict, flush_every: int):
    self.path, self.header, self.flush_every = path, header, flush_every
    self.bits, self.count = header["bits"], header["count"]
    self.written = self._flushed = header["written"]
    self._codes = np.load(path / "codes.npy", mmap_mode="r+")
    self._ids = np.load(path / "ids.npy", mmap_mode="r+")

  def append(self, codes, ids=None) -> None:
    """Writes the next rows: `codes: uint8[m, bits // 8]`, `ids: int[m]` (default:
    their row numbers)."""
    codes = np.asarray(codes)
    m = len(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] * 8 != self.bits:
      raise ValueError(f"{self.path}: append takes uint8[m, {self.bits // 8}] packed codes; "
                       f"got {codes.dtype}{list(codes.shape)}")
    if self.written + m > self.count:
      raise ValueError(f"{self.path}: {self.written} + {m} rows exceed the file's count "
                       f"{self.count}")
    ids = (np.arange(self.written, self.written + m) if ids is None
           else np.asarray(ids))
    if ids.shape != (m,) or ids.dtype.kind not in "iu":
      raise ValueError(f"{self.path}: `ids` must be int[{m}]; got {ids.dtype}{list(ids.shape)}")
    self._codes[self.written:self.written + m] = codes
    self._ids[self.written:self.written + m] = ids
    self.written += m
    if self.written - self._flushed >= self.flush_every or self.written == self.count:
      self.flush()

  def flush(self) -> None:
    """Data first, then the header: `written` never counts rows not on disk."""
    self._codes.flush()
    self._ids.flush()
    self.header["written"] = self._flushed = self.written
    _write_header(self.path, self.header)

  @property
  def done(self) -> bool:
    return self.written == self.count

  def close(self) -> CodeFile | None:
    """Flushes; returns the finished file (None while rows are missing)."""
    self.flush()
    del self._codes, self._ids
    return open_codes(self.path) if self.done else None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if hasattr(self, "_codes"):
      self.close()


def create(path, count: int, bits: int, *, meta: dict | None = None, resume: bool = False,
           overwrite: bool = False, flush_every: int = 1 << 20) -> CodeWriter:
  """A writer for a code file of `count` codes of `bits` bits at `path` (a folder).

  Args:
    meta: JSON-able facts about the codes (which run, step, set); kept in the header
      and compared on resume.
    resume: reopen an unfinished file with the same count, bits and meta at its
      `written` row (a finished one is reopened with nothing left to write).
    overwrite: replace whatever is at `path`. Without it (nor `resume`), an
      existing `path` is refused.
  """
  path = pathlib.Path(path)
  bits = _check_bits(bits)
  if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
    raise ValueError(f"code file: `count` must be an int >= 0; got {count!r}")
  meta = json.loads(json.dumps(meta or {}))  # JSON-able now, and compared as JSON later
  if path.exists() and resume:
    header = _read_header(path)
    want = dict(bits=bits, count=int(count), meta=meta)
    have = {k: header.get(k) for k in want}
    if have != want:
      raise ValueError(f"{path}: cannot resume: the file holds {have}, this run makes {want}; "
                       "pass overwrite=True (--overwrite) to replace it")
    return CodeWriter(path, header, flush_every)
  if path.exists():
    if not overwrite:
      raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it, "
                            "or resume=True to finish it")
    # Only a code file's own files are removed: a mistyped path must not delete a
    # folder of other things.
    others = (sorted(p.name for p in path.iterdir() if p.name not in _OWN) if path.is_dir()
              else [path.name])
    if others:
      raise FileExistsError(f"{path} is not a code file (it holds {others[:5]}); refusing to "
                            "overwrite it: give another path")
    shutil.rmtree(path)
  path.mkdir(parents=True)
  np.lib.format.open_memmap(path / "codes.npy", "w+", np.uint8, (int(count), bits // 8)).flush()
  np.lib.format.open_memmap(path / "ids.npy", "w+", np.int64, (int(count),)).flush()
  header = dict(format=FORMAT, bits=bits, count=int(count), written=0, meta=meta)
  _write_header(path, header)
  return CodeWriter(path, header, flush_every)


def open_codes(path, *, partial: bool = False) -> CodeFile:
  """The code file at `path`, memory-mapped read-only.

  An unfinished file is refused (its missing rows are zeros, i.e. codes), unless
  `partial`, which gives its first `written` rows.
  """
  path = pathlib.Path(path)
  header = _read_header(path)
  n = header["written"]
  if n != header["count"] and not partial:
    raise ValueError(f"{path}: unfinished: {n} of {header['count']} codes written; finish it "
                     "(rerun the command that made it, which resumes) or pass partial=True")
  codes = np.load(path / "codes.npy", mmap_mode="r")
  ids = np.load(path / "ids.npy", mmap_mode="r")
  if codes.shape != (header["count"], header["bits"] // 8) or ids.shape != (header["count"],):
    raise ValueError(f"{path}: arrays of shape {codes.shape} / {ids.shape} do not match the "
                     f"header (count {header['count']}, bits {header['bits']})")
  return CodeFile(path, header["bits"], codes[:n], ids[:n], header["meta"])
