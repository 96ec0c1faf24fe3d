"""Sentinel-2 band names, band presets and pixel scaling.

Also home of `DataError`, the one exception every function of `rsh.data`
raises for bad input, because every other data module builds on this one.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Iterable, Sequence

import numpy as np


class DataError(ValueError):
  """Bad data or a bad data argument; the message names the file, band or key."""


# Every Sentinel-2 MSI band. A `Dataset` may hold any subset, in any order.
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10",
         "B11", "B12", "B8A")

# The last axis of a 13-band EuroSAT-MS GeoTIFF. B8A comes last, not after B08:
# checked on real files, where band 10 is ~0 everywhere (B10, cirrus) and
# band 13 tracks band 8 (the narrow NIR B8A next to the broad NIR B08).
EUROSAT_BANDS = BANDS

# The paper's 10 bands: the 10 m and 20 m bands; the 60 m atmospheric bands
# B01, B09 and B10 carry no land-cover information and are dropped.
MS10 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
RGB = ("B04", "B03", "B02")

PRESETS = {"ms10": MS10, "rgb": RGB, "all": EUROSAT_BANDS}

# 12-bit radiometry: the few larger raw values (bright roofs, specular water)
# saturate instead of compressing everything else.
MAX_DN = 4095


def resolve_bands(spec: str | Iterable[str]) -> tuple[str, ...]:
  """Band names for a preset (`ms10`, `rgb`, `all`), a list or `"B04,B03,B02"`.

  Names are case-insensitive; the result is upper-case, in the given order.
  `all` is the EuroSAT 13-band order.
  """
  if isinstance(spec, str):
    if spec.strip().lower() in PRESETS:
      return PRESETS[spec.strip().lower()]
    names = [s for s in spec.replace(" ", ",").split(",") if s]
  else:
    try:
      names = [str(s).strip() for s in spec]
    except TypeError:
      raise DataError(f"bands must be a preset ({', '.join(PRESETS)}), a list of band "
                      f"names or a comma-separated string, not {spec!r}") from None
  if not names:
    raise DataError(f"no bands in {spec!r}")
  out = []
  for name in names:
    upper = name.upper()
    if upper not in BANDS:
      raise DataError(f"unknown band {name!r} in bands={spec!r}; known bands: "
                      f"{' '.join(BANDS)}; presets: {', '.join(PRESETS)}")
    if upper in out:
      raise DataError(f"band {upper} listed twice in bands={spec!r}")
    out.append(upper)
  return tuple(out)


def band_indices(band_names: Sequence[str], wanted: str | Iterable[str]) -> list[int]:
  """Positions in `band_names` (a dataset's last axis) of the bands `wanted`.

  `wanted` is anything `resolve_bands` takes, except that `all` means every
  band of `band_names` in its own order.
  """
  band_names = tuple(band_names)
  if isinstance(wanted, str) and wanted.strip().lower() == "all":
    return list(range(len(band_names)))
  wanted = resolve_bands(wanted)
  missing = [name for name in wanted if name not in band_names]
  if missing:
    raise DataError(f"band{'s' * (len(missing) > 1)} {' '.join(missing)} not in the data, "
                    f"which has {' '.join(band_names)}")
  return [band_names.index(name) for name in wanted]


def select_bands(ds, spec: str | Iterable[str]):
  """A new `Dataset` with only the bands `spec`, in that order."""
  idx = band_indices(ds.band_names, spec)
  return dataclasses.replace(ds, images=ds.images[..., idx],
                             band_names=tuple(ds.band_names[i] for i in idx))


def _jnp_for(x):
  """`jax.numpy` if `x` is a jax array, else None (jax is only imported by callers)."""
  jax = sys.modules.get("jax")
  if jax is not None and isinstance(x, jax.Array):
    import jax.numpy as jnp  # already imported along with jax
    return jnp
  return None


def _check_finite(x, xp, what: str):
  if not xp.issubdtype(x.dtype, xp.floating):
    return
  jax = sys.modules.get("jax")
  if jax is not None and isinstance(x, jax.core.Tracer):
    return  # inside jit the values are unknown; checked where they are concrete
  if not bool(xp.isfinite(x).all()):
    raise DataError(f"{what}: input has non-finite values (NaN or inf)")


def normalise(x, max_dn: int = MAX_DN):
  """Raw digital numbers -> float32 reflectance-like values in [0, 1].

  Args:
    x: uint16 (or any real dtype) array of any shape, numpy or jax.
    max_dn: the saturation level: 4095 for EuroSAT's 12-bit L1C digital
      numbers; Sentinel-2 L2A reflectances x 10,000 (BigEarthNet) need 10000,
      as a third of their NIR values exceed 4095.

  Returns:
    float32 array of the same shape and kind: `min(max(x, 0), max_dn) / max_dn`.
  """
  jnp = _jnp_for(x)
  if jnp is not None:
    _check_finite(x, jnp, "normalise")
    return jnp.clip(x.astype(jnp.float32), 0, max_dn) / jnp.float32(max_dn)
  x = np.asarray(x)
  _check_finite(x, np, "normalise")
  if x.dtype.kind == "u":
    out = np.minimum(x, max_dn).astype(np.float32)
  else:
    out = np.clip(x, 0, max_dn).astype(np.float32)
  out /= np.float32(max_dn)
  return out


def to_signed(x):
  """[0, 1] -> [-1, 1] (`2 x - 1`), float32, numpy or jax: what the GAN sees."""
  jnp = _jnp_for(x)
  if jnp is not None:
    _check_finite(x, jnp, "to_signed")
    return x.astype(jnp.float32) * 2 - 1
  x = np.asarray(x)
  _check_finite(x, np, "to_signed")
  out = x.astype(np.float32)  # a copy, so the in-place ops below stay private
  out *= 2
  out -= 1
  return out


# channel_stats' float64 copy of a chunk holds at most this many values (256 MB):
# 512 rows of 64 x 64 x 13 EuroSAT pixels, 232 of 120 x 120 x 10 BigEarthNet ones.
_STATS_VALUES = 1 << 25


def channel_stats(x, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std (float64 accumulation, std at least 1e-6) of f32[n, ..., c],
  e.g. the training rows a method standardises its inputs with.

  `x` is an array or any row-sliceable array-like (`rsh.data.lazy.Rows` of an
  archive on disk): read `chunk` rows at a time, fewer when its rows are large,
  so only one chunk (at most 256 MB as float64) is ever in memory.
  """
  c = x.shape[-1]
  chunk = max(1, min(chunk, _STATS_VALUES // max(1, int(np.prod(x.shape[1:])))))
  s, s2, count = np.zeros(c), np.zeros(c), 0
  for i in range(0, len(x), chunk):
    v = np.asarray(x[i:i + chunk], np.float64).reshape(-1, c)
    s, s2, count = s + v.sum(0), s2 + np.square(v).sum(0), count + len(v)
  mean = s / count
  std = np.sqrt(np.maximum(s2 / count - mean ** 2, 0.0))
  return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)
