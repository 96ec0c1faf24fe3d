"""Pixel reading: the S2 bands on one 120 px grid (uint16 DN) and the S1 VV / VH
backscatter in dB (f32), optionally area-averaged to a smaller side."""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib

import numpy as np

from rsh.data import bands as rbands
from rsh.data import files as rfiles
from rsh.data.bands import DataError

GRID = 120
# Every band of a BigEarthNet-S2 patch (Sentinel-2 L2A has no B10), and how many
# 10 m pixels one of its pixels spans along each axis.
S2_BANDS = tuple(b for b in rbands.BANDS if b != "B10")
UPSAMPLE = {"B02": 1, "B03": 1, "B04": 1, "B08": 1,
            "B05": 2, "B06": 2, "B07": 2, "B8A": 2, "B11": 2, "B12": 2,
            "B01": 6, "B09": 6}
DEFAULT_BANDS = rbands.MS10
S1_CHANNELS = ("VV", "VH")


def resolve_bands(spec=None) -> tuple[str, ...]:
  """The bands to load: None = `ms10`; `all` = the 12 BigEarthNet bands; no B10."""
  if spec is None:
    return DEFAULT_BANDS
  if isinstance(spec, str) and spec.strip().lower() == "all":
    return S2_BANDS
  names = rbands.resolve_bands(spec)
  if "B10" in names:
    raise DataError(f"band B10 (cirrus) is not in BigEarthNet (bands={spec!r}): its S2 "
                    f"patches have the 12 bands {' '.join(S2_BANDS)}")
  return names


def check_size(size) -> int:
  """The patch side to load: None = 120, else a whole divisor of 120."""
  if size is None:
    return GRID
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not (
      1 <= size <= GRID) or GRID % size:
    raise DataError(f"size={size!r}: BigEarthNet patches are {GRID}x{GRID} px; size must "
                    "be a whole divisor of 120 (120, 60, 40, 30, 24, 20, ...)")
  return int(size)


def pair_files(found, band_names: tuple[str, ...], i: int
               ) -> list[tuple[str, pathlib.Path, list[str]]]:
  """[(what, folder, file names)] of pair i of the `Scan` `found`: S2 then S1,
  the image files in band / channel order, then the metadata."""
  s2, s1 = found.s2_files[i], found.s1_files[i]
  return [(f"S2 patch {s2}", found.s2_root / s2,
           [f"{s2}_{b}.tif" for b in band_names] + [f"{s2}_labels_metadata.json"]),
          (f"S1 patch {s1} (pair of S2 patch {s2})", found.s1_root / s1,
           [f"{s1}_{c}.tif" for c in S1_CHANNELS] + [f"{s1}_labels_metadata.json"])]


def file_stats(found, band_names: tuple[str, ...], i: int) -> list[tuple]:
  """(folder name, file name, size, mtime_ns, ctime_ns) of each file of pair i,
  or a DataError naming a missing or unreadable one."""
  out = []
  for what, folder, names in pair_files(found, band_names, i):
    for name in names:
      try:
        st = (folder / name).stat()
      except FileNotFoundError:
        if not rfiles.is_symlink(folder / name):
          raise DataError(f"{what}: missing file {name} in {folder}") from None
        raise DataError(f"{what}: {folder / name} "
                        f"{rfiles.why(folder / name, None)}") from None
      except OSError as e:
        raise DataError(f"{what}: {folder / name} "
                        f"{rfiles.why(folder / name, e)}") from None
      out.append((folder.name, name, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
  return out


def files_digest(found, band_names: tuple[str, ...], progress: bool | None) -> str:
  """sha256 of the names, sizes, mtimes and ctimes of every file the pairs of the
  `Scan` `found` read (`file_stats`): what identifies their content without
  reading it (a content write always moves the ctime, even when the mtime is set
  back). Keys the cache and identifies a store's source."""
  digest = hashlib.sha256()
  for stats in rfiles.parallel_map(lambda i: file_stats(found, band_names, i), len(found),
                                   progress, "checking files", unit="patch"):
    digest.update(json.dumps(stats).encode())
  return digest.hexdigest()


def read_pairs(found, band_names: tuple[str, ...], size: int, progress: bool | None
               ) -> tuple[np.ndarray, np.ndarray]:
  """The pixels of every pair of the `Scan` `found`, read in parallel.

  Returns:
    (uint16[n, size, size, len(band_names)] S2 digital numbers,
     f32[n, size, size, 2] S1 (VV, VH) in dB).
  """
  n = len(found)
  images = np.empty((n, size, size, len(band_names)), np.uint16)
  s1 = np.empty((n, size, size, len(S1_CHANNELS)), np.float32)
  read_into(found, band_names, size, images, s1, 0, n, progress)
  return images, s1


def read_into(found, band_names: tuple[str, ...], size: int, images, s1, start: int,
              stop: int, progress: bool | None) -> None:
  """Pairs [start, stop) of the `Scan` `found`, read in parallel into `images`
  (uint16[stop - start, size, size, b]) and `s1` (f32[stop - start, size, size, 2]),
  pair i into row i - start: arrays in memory, or a chunk of an on-disk store's
  memory maps (`rsh.data.bigearthnet.store`)."""

  def read(i):
    (what2, folder2, names2), (what1, folder1, names1) = pair_files(found, band_names, i)
    for j, band in enumerate(band_names):
      x = read_band(folder2 / names2[j], what2, GRID // UPSAMPLE[band])
      x = np.repeat(np.repeat(x, UPSAMPLE[band], axis=0), UPSAMPLE[band], axis=1)
      images[i - start, :, :, j] = x if size == GRID else np.rint(area_mean(x, size))
    for j in range(len(S1_CHANNELS)):
      x = read_band(folder1 / names1[j], what1, GRID, db=True)
      s1[i - start, :, :, j] = x if size == GRID else db_mean(x, size)

  # tifffile logs what it dislikes before raising; our error names the file instead.
  tiff_log = logging.getLogger("tifffile")
  level = tiff_log.level
  tiff_log.setLevel(logging.CRITICAL)
  try:
    rfiles.parallel_map(read, stop, progress, f"reading {found.s2_root.parent}",
                        unit="patch", start=start)
  finally:
    tiff_log.setLevel(level)


def read_band(path: pathlib.Path, what: str, side: int, db: bool = False) -> np.ndarray:
  """One single-band GeoTIFF: uint16[side, side] (S2) or f32[side, side] dB (S1)."""
  import tifffile
  try:
    x = np.asarray(tifffile.imread(path))
  except FileNotFoundError:
    raise DataError(f"{what}: missing file {path.name} in {path.parent}") from None
  except Exception as e:  # tifffile raises many types on a broken file
    raise DataError(f"{what}: cannot read {path.name} as TIFF ({type(e).__name__}: {e})"
                    ) from None
  if x.ndim == 3 and 1 in (x.shape[0], x.shape[-1]):
    x = x.reshape(x.shape[:2] if x.shape[-1] == 1 else x.shape[1:])
  if x.shape != (side, side):
    raise DataError(f"{what}: {path.name} is {'x'.join(map(str, x.shape))} px, expected "
                    f"{side}x{side}")
  if not db:
    return rfiles.to_dn(x, f"{what}: {path.name}")
  if x.dtype.kind not in "uif":
    raise DataError(f"{what}: {path.name}: pixel type {x.dtype} is not a number")
  x = x.astype(np.float32, copy=False)
  if not np.isfinite(x).all():
    raise DataError(f"{what}: {path.name} has non-finite values (NaN or inf)")
  return x


def area_mean(x: np.ndarray, size: int) -> np.ndarray:
  """f64[size, size]: the means of the (GRID / size)^2 blocks of x[GRID, GRID]."""
  f = GRID // size
  return x.reshape(size, f, size, f).mean(axis=(1, 3), dtype=np.float64)


def db_mean(x: np.ndarray, size: int) -> np.ndarray:
  """f64[size, size]: the block means of backscatter x[GRID, GRID] in dB, averaged
  as power: 10 log10(mean(10^(x / 10))).

  Backscatter is a power; its dB values are logarithms, and the mean of
  logarithms (a geometric mean) sits below the mean power of a block, the more
  so the more speckled it is. The radar equation and any coarser S1 product
  average the power, so a smaller patch should too.
  """
  power = np.power(10.0, np.asarray(x, np.float64) / 10.0)
  return 10.0 * np.log10(area_mean(power, size))
