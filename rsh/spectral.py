"""Spectral (colour) features of images, fused with spatial features (UAHM, thesis §5.1.4).

What `rsh.similarity.build_ssm` builds the training set's SSM from:

    feats = fuse(local_histogram(images, 32, 4), spatial, eta=6.0)

Definitions, with the thesis lines (`spec/sources/uahm_thesis.txt`) they come from:

- Spectral features (Table 5.1, l.1096): raw colour is the flattened image;
  a colour histogram counts, per band, the pixels in each of `n_bins` equal
  intervals of [0, 1]; the local version cuts every band into `n_patches`
  patches and concatenates one histogram per patch and band. The thesis gives
  the count, not the layout (the table's body is lost from our copy; only its
  caption survives, l.1112), so the patches are a square grid
  (n_patches = 4 -> 2 x 2, 16 -> 4 x 4). Each histogram is divided by its
  pixel count, so every (band, patch) histogram sums to 1.
- Fusion (eq. 5.9, l.1100-1103): concat(spectral, eta * spatial). The thesis
  balances the two scales with eta alone and normalises neither part, so
  neither is L2-normalised here. eta = 6 was chosen for Inception-v3 features
  next to histograms; a backbone whose features have another scale needs
  another eta, not a different fusion.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "SPECTRAL", "raw_colour", "global_histogram", "local_histogram", "spectral_features", "fuse",
]

SPECTRAL = ("raw", "global_hist", "local_hist", "none")


# ---------------------------------------------------------------------------
# Spectral features (Table 5.1) and fusion (eq. 5.9).

def _check_images(x, name: str = "x") -> np.ndarray:
  """Returns `x` as float32[n, h, w, c] after checking its rank and dtype."""
  x = np.asarray(x)
  if x.ndim != 4:
    raise ValueError(f"{name} must be [n, h, w, c], got shape {x.shape}")
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{name} must be float in [0, 1], got dtype {x.dtype}")
  x = x.astype(np.float32, copy=False)
  return x


def raw_colour(x) -> np.ndarray:
  """The raw-colour feature: each image flattened.

  Args:
    x: float[n, h, w, c] images in [0, 1].

  Returns:
    float32[n, h * w * c], row-major over (h, w, c); a view when `x` is
    float32 and contiguous.
  """
  x = _check_images(x)
  return x.reshape(x.shape[0], -1)


def global_histogram(x, n_bins: int = 32) -> np.ndarray:
  """Per-band colour histogram of each image (`local_histogram` with one patch).

  Args:
    x: float[n, h, w, c] images in [0, 1].
    n_bins: equal intervals of [0, 1].

  Returns:
    float32[n, c * n_bins], band-major; each band's histogram sums to 1.
  """
  return local_histogram(x, n_bins, 1)


def local_histogram(x, n_bins: int = 32, n_patches: int = 4, *, chunk: int = 256) -> np.ndarray:
  """Per-band, per-patch colour histograms of each image, concatenated.

  Every band is cut by a g x g grid (g = sqrt(n_patches)); patch k starts at
  row floor(k * h / g) (columns alike), so a size not divisible by g gives patches that differ by
  one pixel. Bin b holds values in [b / n_bins, (b + 1) / n_bins); 1.0 falls
  in the last bin and values outside [0, 1] are clipped into the end bins.

  Args:
    x: float[n, h, w, c] images in [0, 1].
    n_bins: equal intervals of [0, 1].
    n_patches: patches per band; a perfect square (1, 4, 9, 16, ...).
    chunk: images per vectorised step (bounds the work memory to ~25 bytes
      per pixel value of a chunk).

  Returns:
    float32[n, c * n_patches * n_bins], ordered (band, patch row-major, bin);
    each (band, patch) histogram sums to 1.
  """
  x = _check_images(x)
  n, h, w, c = x.shape
  n_bins, n_patches = int(n_bins), int(n_patches)
  if n_bins < 1:
    raise ValueError(f"n_bins must be >= 1, got {n_bins}")
  g = math.isqrt(max(n_patches, 0))
  if n_patches < 1 or g * g != n_patches:
    raise ValueError(f"n_patches must be a perfect square (1, 4, 9, 16, ...), got {n_patches}")
  if g > h or g > w:
    raise ValueError(f"n_patches={n_patches} cuts a {h}x{w} image into empty patches")
  def cut(size):  # patch index of each row (column): patches start at floor(k * size / g)
    return np.searchsorted((np.arange(g) * size) // g, np.arange(size), side="right") - 1
  patch = cut(h)[:, None] * g + cut(w)[None, :]
  pixels = np.bincount(patch.ravel(), minlength=n_patches)           # per patch
  width = c * n_patches * n_bins
  # Where each (row, column, band) value's histogram starts in a feature row.
  offset = (np.arange(c)[None, None, :] * n_patches + patch[:, :, None]) * n_bins
  offset = offset.astype(np.int64)
  per_column = pixels[(np.arange(width) // n_bins) % n_patches].astype(np.float32)
  out = np.empty((n, width), np.float32)
  for start in range(0, n, chunk):
    xb = x[start:start + chunk]
    if not np.isfinite(xb).all():
      raise ValueError("x contains NaN or inf")
    b = len(xb)
    bins = np.clip(xb * np.float32(n_bins), 0, n_bins - 1).astype(np.int64)
    bins += offset
    bins += (np.arange(b, dtype=np.int64) * width)[:, None, None, None]
    counts = np.bincount(bins.ravel(), minlength=b * width).reshape(b, width)
    out[start:start + b] = counts / per_column
  return out


def spectral_features(images, kind: str = "local_hist", *, n_bins: int = 32,
                      n_patches: int = 4) -> np.ndarray | None:
  """One of Table 5.1's spectral features by name (`SPECTRAL`); None for "none"."""
  if kind == "raw":
    return raw_colour(images)
  if kind == "global_hist":
    return global_histogram(images, n_bins)
  if kind == "local_hist":
    return local_histogram(images, n_bins, n_patches)
  if kind == "none":
    return None
  raise ValueError(f"spectral must be one of {SPECTRAL}, got {kind!r}")


def fuse(spectral, spatial=None, eta: float = 6.0) -> np.ndarray:
  """Fused feature of eq. 5.9: concat(spectral, eta * spatial).

  Neither part is normalised first (the thesis does not; eta balances the
  scales). With `spatial=None` the spectral feature is returned as it is.

  Args:
    spectral: float[n, d1].
    spatial: float[n, d2] (e.g. penultimate-layer CNN features) or None.
    eta: weight of the spatial part.

  Returns:
    float32[n, d1 + d2] (or [n, d1]).
  """
  spectral = np.asarray(spectral, np.float32)
  if spectral.ndim != 2:
    raise ValueError(f"spectral must be [n, d], got shape {spectral.shape}")
  if spatial is None:
    return spectral
  spatial = np.asarray(spatial, np.float32)
  if spatial.ndim != 2 or len(spatial) != len(spectral):
    raise ValueError(f"spatial must be [n, d] with n = {len(spectral)} (the spectral rows), "
                     f"got shape {spatial.shape}")
  return np.concatenate([spectral, np.float32(eta) * spatial], axis=1)
