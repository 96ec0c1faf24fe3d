"""An on-disk store of decoded BigEarthNet pairs, read through memory maps: the
whole of BigEarthNet-MM (590,326 pairs, ~240 GB decoded at 120 px) on a host with
less memory than that.

A store is a folder of standard `.npy` files (`np.lib.format`) and one manifest:

  s2.npy        uint16[n, size, size, b]  S2 digital numbers of `bands`, in order
  s1.npy        f32[n, size, size, 2]     S1 (VV, VH) in dB
  labels.npy    uint8[n, 19]              multi-hot over `class_names`
  names.json    {"s2": [n names], "s1": [n names]}, in row order
  splits.npz    the official train / val / test row indices (int64)
  manifest.json what it holds: format, version, bands, size, the package version,
                the scan's file digest (`pixels.files_digest`), the filters, the
                rows `written`, `complete`, and once complete the digests of
                s2 / s1 (`fingerprint.digest_array`) and their files' size and mtime

Written once (`convert`, the CLI below, or `load(..., store=PATH)` when absent)
and resumable: the pairs are decoded in chunks into the memory-mapped rows, each
chunk flushed to disk before the manifest's `written` moves past it (the
manifest is replaced atomically), so a killed conversion resumes at its last
whole chunk. A complete store of the same pairs is reused; a store of other files
or options (bands, size, filters, package, or any file's size / mtime / ctime) is
refused, never overwritten (`rebuild=True` / `--rebuild` replaces it).

Read back (`open_store`), the `Dataset`'s images and `s1` view are read-only
memory maps: `rsh.data.Prepared` then reads rows per batch (`rsh.data.lazy`).

  python -m rsh.data.bigearthnet.store --dir=DIR --out=STORE [--bands=ms10] [--size=120]
      [--exclude=snow,cloud] [--countries=...] [--limit=N --seed=0] [--rebuild]
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pathlib
import shutil
import time

import numpy as np

from rsh.data import files as rfiles
from rsh.data import fingerprint
from rsh.data.bands import DataError
from rsh.data.bigearthnet import pixels
from rsh.data.bigearthnet import tables
from rsh.data.dataset import Dataset

log = logging.getLogger("rsh.data.bigearthnet.store")  # also when run as __main__

FORMAT = "rsh-bigearthnet-store"
VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = {"s2": "s2.npy", "s1": "s1.npy"}
FILES = (MANIFEST, "s2.npy", "s1.npy", "labels.npy", "names.json", "splits.npz", ".lock")
# What the stored numbers are made from: a manifest that differs in one is other data.
IDENTITY = ("format", "version", "package", "bands", "size", "s1_mean", "pairs", "files")
# Pairs decoded and flushed between two manifest updates (~400 MB at 120 px, ms10).
CHUNK = 1024


def identity(found, band_names, size: int, files: str) -> dict:
  """The manifest fields that identify the pairs of the `Scan` `found` as stored."""
  return dict(format=FORMAT, version=VERSION, package=tables.version(),
              bands=list(band_names), size=int(size), s1_mean="power", pairs=len(found),
              files=files)


def options_of(found, seed: int) -> dict:
  """The filters that chose the `Scan` `found`'s pairs, as the manifest records them."""
  return dict(exclude=list(found.exclude),
              countries=None if found.countries is None else list(found.countries),
              limit=found.limit, seed=None if found.limit is None else int(seed))


def _differences(manifest: dict, want: dict) -> list[str]:
  return [f"{k} {manifest.get(k)!r} (wanted {want[k]!r})" if k != "files" else
          "the source files (names, sizes, mtimes or ctimes) differ"
          for k in IDENTITY if manifest.get(k) != want[k]]


def read_manifest(out: pathlib.Path) -> dict | None:
  """The store's manifest, None when it has none; a DataError when it is damaged."""
  path = out / MANIFEST
  try:
    manifest = json.loads(path.read_text())
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise DataError(f"BigEarthNet store {out}: cannot read {MANIFEST} "
                    f"({type(e).__name__}: {e})") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise DataError(f"{path} is not the manifest of a BigEarthNet store (format {FORMAT})")
  return manifest


def _write_manifest(out: pathlib.Path, manifest: dict) -> None:
  """Replaces the manifest atomically (written, synced, renamed): whole or the old one."""
  tmp = out / f".{MANIFEST}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, out / MANIFEST)


@contextlib.contextmanager
def _locked(out: pathlib.Path):
  """Holds `out/.lock` exclusively: one converter per store at a time (others wait)."""
  try:
    import fcntl
  except ImportError:  # no locks on this platform: one converter is the user's to keep
    yield
    return
  with open(out / ".lock", "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    yield


def convert(found, band_names, size: int, files: str, out, *, options: dict | None = None,
            chunk: int = CHUNK, progress: bool | None = None, on_chunk=None,
            rebuild: bool = False) -> dict:
  """Writes (or resumes, or reuses) the store of the `Scan` `found` at `out`.

  Args:
    found: the pairs (`rsh.data.bigearthnet.scan`), stored in its row order.
    band_names, size: the S2 bands and the patch side (`pixels.resolve_bands`,
      `check_size`).
    files: `pixels.files_digest(found, band_names)`.
    out: the store's folder (made if missing; must be empty or a store).
    options: the filters that chose the pairs (exclude, countries, limit, seed),
      recorded in the manifest.
    chunk: pairs decoded per committed chunk.
    progress: a progress bar (default: on a tty, for many pairs).
    on_chunk: called with the rows written after each committed chunk.
    rebuild: replace a store of other pairs or options instead of refusing it.

  Returns:
    The complete store's manifest.
  """
  out = pathlib.Path(out).expanduser()
  want = identity(found, band_names, size, files)
  try:
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
      manifest = _existing(out, want, rebuild)
      if manifest is not None and manifest.get("complete"):
        log.info("BigEarthNet store %s: complete (%d pairs), reused", out, manifest["pairs"])
        return manifest
      if manifest is None:
        manifest = _create(out, found, want, dict(options or {}), int(chunk))
      _fill(out, found, manifest, int(chunk), progress, on_chunk)
      return _finish(out, manifest, progress)
  except OSError as e:
    raise DataError(f"BigEarthNet store {out}: cannot write ({type(e).__name__}: {e})"
                    ) from None


def _existing(out: pathlib.Path, want: dict, rebuild: bool) -> dict | None:
  """The manifest of the store at `out` to resume or reuse, or None (start afresh)."""
  manifest = read_manifest(out)
  if manifest is not None and not rebuild:
    diff = _differences(manifest, want)
    if diff:
      raise DataError(f"BigEarthNet store {out} holds other pairs or options than asked "
                      f"for: {'; '.join(diff)}. Refusing to overwrite it: delete it, choose "
                      "another store path, or rebuild it (--rebuild)")
    return manifest
  others = sorted(p.name for p in out.iterdir() if p.name not in FILES
                  and not p.name.startswith(f".{MANIFEST}."))
  if others:
    raise DataError(f"{out} is not empty and not a BigEarthNet store (it holds "
                    f"{', '.join(others[:3])}{' ...' if len(others) > 3 else ''}); "
                    "choose an empty or new folder for the store")
  if manifest is not None:
    log.warning("BigEarthNet store %s: rebuilding it (%s)", out,
                "; ".join(_differences(manifest, want)) or "as asked")
    (out / MANIFEST).unlink()
  return None


def _create(out: pathlib.Path, found, want: dict, options: dict, chunk: int) -> dict:
  """The store's small files and its two arrays at full size, then its first
  manifest (written = 0): the manifest is the last thing made."""
  n, size, bands = want["pairs"], want["size"], len(want["bands"])
  shapes = {"s2": ((n, size, size, bands), np.uint16),
            "s1": ((n, size, size, len(pixels.S1_CHANNELS)), np.float32)}
  need = sum(int(np.prod(s)) * np.dtype(t).itemsize for s, t in shapes.values())
  free = shutil.disk_usage(out).free + sum(
      (out / f).stat().st_size for f in ARRAYS.values() if (out / f).exists())
  if free < need:
    raise DataError(f"BigEarthNet store {out}: {n} pairs at {size} px need "
                    f"{need / 1e9:.1f} GB, only {free / 1e9:.1f} GB are free there")
  np.save(out / "labels.npy", np.asarray(found.labels, np.uint8), allow_pickle=False)
  (out / "names.json").write_text(json.dumps({"s2": list(found.s2_files),
                                              "s1": list(found.s1_files)}))
  np.savez(out / "splits.npz", **{k: np.asarray(v, np.int64) for k, v in found.splits.items()})
  for key, (shape, dtype) in shapes.items():
    path = out / ARRAYS[key]
    np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
    _allocate(path)
  manifest = {**want, "class_names": list(found.class_names), "options": options,
              "chunk": chunk, "written": 0, "complete": False, "created": time.time()}
  _write_manifest(out, manifest)
  return manifest


def _allocate(path: pathlib.Path) -> None:
  """Reserves the file's blocks now: a full disk is an error here, not a SIGBUS
  while writing through the memory map."""
  if not hasattr(os, "posix_fallocate"):
    return
  with open(path, "r+b") as f:
    try:
      os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as e:
      if e.errno == errno.ENOSPC:
        raise DataError(f"no space left on the device of {path} for the store") from None
      # EOPNOTSUPP / EINVAL: a file system without it; the free-space check stands.


def _rows(out: pathlib.Path, key: str, start: int, stop: int, mode: str = "r+") -> np.memmap:
  """Rows [start, stop) of the store's array `key`, memory-mapped alone."""
  whole = np.load(out / ARRAYS[key], mmap_mode="r")
  row = whole[0].nbytes if len(whole) else 0
  return np.memmap(out / ARRAYS[key], whole.dtype, mode,
                   offset=whole.offset + start * row, shape=(stop - start,) + whole.shape[1:])


def _fill(out: pathlib.Path, found, manifest: dict, chunk: int, progress, on_chunk) -> None:
  """Decodes the pairs from `written` on, a chunk at a time: rows written and
  flushed, then the manifest's `written` moved past them."""
  n, start0 = manifest["pairs"], manifest["written"]
  bands, size = tuple(manifest["bands"]), manifest["size"]
  bar = None
  if start0 < n and rfiles.show_progress(progress, n):
    from tqdm import tqdm
    bar = tqdm(total=n, initial=start0, desc=f"storing {found.s2_root.parent}", unit="pair")
  t0 = time.perf_counter()
  try:
    for start in range(start0, n, chunk):
      stop = min(n, start + chunk)
      s2, s1 = _rows(out, "s2", start, stop), _rows(out, "s1", start, stop)
      pixels.read_into(found, bands, size, s2, s1, start, stop, progress=False)
      s2.flush()
      s1.flush()
      del s2, s1
      manifest["written"] = stop
      _write_manifest(out, manifest)
      if bar is not None:
        bar.update(stop - start)
      if on_chunk is not None:
        on_chunk(stop)
  finally:
    if bar is not None:
      bar.close()
  if n > start0:
    seconds = time.perf_counter() - t0
    log.info("BigEarthNet store %s: %d pairs decoded in %.0f s (%.0f pairs/s)", out,
             n - start0, seconds, (n - start0) / max(seconds, 1e-9))


def _finish(out: pathlib.Path, manifest: dict, progress) -> dict:
  """Digests of the finished arrays (what `rsh.data.fingerprint` would compute),
  their files' size and mtime, and `complete`."""
  digests, stats = {}, {}
  for key, file in ARRAYS.items():
    x = np.load(out / file, mmap_mode="r")
    bar = None
    if rfiles.show_progress(progress, len(x)):
      from tqdm import tqdm
      bar = tqdm(total=len(x), desc=f"digesting {file}", unit="pair")
    try:
      digests[key] = fingerprint.digest_array(
          x, on_rows=None if bar is None else lambda k: bar.update(k - bar.n))
    finally:
      if bar is not None:
        bar.close()
    st = (out / file).stat()
    stats[file] = [st.st_size, st.st_mtime_ns]
  manifest.update(digests=digests, arrays=stats, complete=True)
  _write_manifest(out, manifest)
  return manifest


def open_store(out, expect: dict | None = None) -> Dataset:
  """The complete store at `out` as a `Dataset` whose `images` and `views["s1"]` are
  read-only memory maps (labels, names and splits in memory).

  Args:
    out: the store's folder.
    expect: `identity(...)` of the pairs asked for; a store that differs is refused.
  """
  out = pathlib.Path(out).expanduser()
  manifest = read_manifest(out)
  if manifest is None:
    raise DataError(f"{out} is no BigEarthNet store (no {MANIFEST}); write one with "
                    "`python -m rsh.data.bigearthnet.store --dir=DIR --out=STORE`")
  if not manifest.get("complete"):
    raise DataError(f"BigEarthNet store {out} is incomplete ({manifest.get('written')} of "
                    f"{manifest.get('pairs')} pairs written); run the conversion again to "
                    "finish it")
  if expect is not None and _differences(manifest, expect):
    raise DataError(f"BigEarthNet store {out} holds other pairs or options than asked for: "
                    f"{'; '.join(_differences(manifest, expect))}")
  try:
    arrays = {k: np.load(out / f, mmap_mode="r") for k, f in ARRAYS.items()}
    labels = np.load(out / "labels.npy", allow_pickle=False)
    names = json.loads((out / "names.json").read_text())
    with np.load(out / "splits.npz", allow_pickle=False) as z:
      splits = {k: z[k] for k in z.files}
  except (OSError, ValueError, KeyError) as e:
    raise DataError(f"BigEarthNet store {out} is damaged ({type(e).__name__}: {e}); "
                    "rebuild it (--rebuild)") from None
  n, size, bands = manifest["pairs"], manifest["size"], len(manifest["bands"])
  if (arrays["s2"].shape != (n, size, size, bands) or arrays["s1"].shape != (n, size, size, 2)
      or len(labels) != n or len(names.get("s2", ())) != n):
    raise DataError(f"BigEarthNet store {out} is damaged: its arrays do not have the "
                    f"{n} rows of {size} px its manifest says; rebuild it (--rebuild)")
  for key, file in ARRAYS.items():
    st = (out / file).stat()
    if manifest.get("arrays", {}).get(file) == [st.st_size, st.st_mtime_ns]:
      arrays[key].content_digest = manifest["digests"][key]  # unchanged since digested
    else:
      log.warning("BigEarthNet store %s: %s changed since it was written", out, file)
  return Dataset(arrays["s2"], labels, manifest["class_names"], tuple(manifest["bands"]),
                 "bigearthnet", tuple(names["s2"]), views={"s1": arrays["s1"]}, splits=splits)


def main(argv=None) -> int:
  """`python -m rsh.data.bigearthnet.store`: converts a BigEarthNet folder into a store."""
  import argparse
  import sys
  from rsh.data.bigearthnet import pairs as rpairs
  parser = argparse.ArgumentParser(prog="python -m rsh.data.bigearthnet.store",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--dir", required=True, help="the folder holding the S2 and S1 roots")
  parser.add_argument("--out", required=True, help="the store's folder (new, empty or a store)")
  parser.add_argument("--bands", default=None, help="ms10 (default), all, or e.g. B04,B03,B02")
  parser.add_argument("--size", type=int, default=None, help="patch side, divides 120 (120)")
  parser.add_argument("--exclude", default=None, help="snow,cloud (default) or none")
  parser.add_argument("--countries", default=None, help="e.g. Serbia,Austria (default all)")
  parser.add_argument("--limit", type=int, default=None, help="a seeded random N pairs")
  parser.add_argument("--seed", type=int, default=0, help="the seed of --limit")
  parser.add_argument("--chunk", type=int, default=CHUNK, help="pairs per committed chunk")
  parser.add_argument("--rebuild", action="store_true",
                      help="replace a store of other pairs or options instead of refusing")
  parser.add_argument("--no_progress", action="store_true")
  args = parser.parse_args(argv)
  # Our own progress notes (pairs found, decoded, reused) on stderr, for this call only.
  handler, logger = logging.StreamHandler(sys.stderr), logging.getLogger("rsh.data")
  level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  progress = False if args.no_progress else None
  try:
    if args.chunk < 1:
      raise DataError(f"--chunk={args.chunk}: must be a number of pairs >= 1")
    bands, size = pixels.resolve_bands(args.bands), pixels.check_size(args.size)
    found = rpairs.scan(args.dir, exclude=args.exclude, countries=args.countries,
                        limit=args.limit, seed=args.seed, progress=progress)
    if not len(found):
      raise DataError(f"{found.s2_root.parent}: no BigEarthNet pairs left after the filters")
    files = pixels.files_digest(found, bands, progress)
    manifest = convert(found, bands, size, files, args.out, options=options_of(found, args.seed),
                       chunk=args.chunk, progress=progress, rebuild=args.rebuild)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  gb = sum((pathlib.Path(args.out).expanduser() / f).stat().st_size for f in ARRAYS.values())
  print(f"{args.out}: {manifest['pairs']} pairs, {size} px, bands {' '.join(bands)}, "
        f"{gb / 1e9:.2f} GB; use it with --config.data.options.store={args.out}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
