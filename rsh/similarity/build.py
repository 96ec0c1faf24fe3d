"""`build_ssm`: a training set's images and features -> its packed SSM."""

from __future__ import annotations

import logging
import time

import numpy as np

from rsh import spectral as rspectral
from rsh.similarity import knn

log = logging.getLogger(__name__)

__all__ = ["build_ssm"]


def build_ssm(images, *, spectral: str = "local_hist", n_bins: int = 32, n_patches: int = 4,
              spatial_features=None, eta: float = 6.0, k1: int = 500, k2: int = 300,
              block: int | None = None, progress: bool | None = None):
  """Features -> two-stage kNN: the training set's SSM and what went into it.

  Args:
    images: float[n, h, w, c] in [0, 1] (may be None when spectral="none").
    spectral: one of `rsh.spectral.SPECTRAL`; "none" uses the spatial features alone.
    n_bins, n_patches: histogram settings (see `rsh.spectral.local_histogram`).
    spatial_features: float[n, d] (e.g. `rsh.features.extract(...)`) or None
      for spectral features only.
    eta: weight of the spatial part in the fusion (eq. 5.9).
    k1, k2: neighbours per point in the two stages, self included; scale the
      thesis' 500 / 300 with `scale_k` when n != 5,000.
    block, progress: see `two_stage_knn`.

  Returns:
    (packed S uint8[n, ceil(n / 8)], info) with info = {"n", "k1", "k2",
    "feature_dim", "positives_per_row" (mean +1 entries per row of S),
    "seconds", "features" (tuple of the parts used)}.
  """
  start = time.perf_counter()
  if spectral not in rspectral.SPECTRAL:
    raise ValueError(f"spectral must be one of {rspectral.SPECTRAL}, got {spectral!r}")
  if spectral == "none" and spatial_features is None:
    raise ValueError("spectral='none' needs spatial_features")
  spec = None if spectral == "none" else rspectral.spectral_features(
      images, spectral, n_bins=n_bins, n_patches=n_patches)
  if spatial_features is not None:
    spatial_features = np.asarray(spatial_features, np.float32)
    n = len(spec) if spec is not None else len(spatial_features)
    if spatial_features.ndim != 2 or len(spatial_features) != n:
      raise ValueError(f"spatial_features must be [n, d] with n = {n} images, "
                       f"got shape {spatial_features.shape}")
  if spec is None:
    feats, parts = spatial_features, ("spatial",)
    desc = f"spatial only ({feats.shape[1]}-d)"
  elif spatial_features is None:
    feats, parts = spec, (spectral,)
    desc = f"spectral only ({spectral}, {spec.shape[1]}-d)"
  else:
    feats, parts = rspectral.fuse(spec, spatial_features, eta), (spectral, "spatial")
    desc = (f"fused {spectral} ({spec.shape[1]}-d) + {eta:g} x spatial "
            f"({spatial_features.shape[1]}-d)")
  log.info("SSM features: %s for %d images; K1=%d K2=%d", desc, len(feats), k1, k2)
  packed = knn.two_stage_knn(feats, k1, k2, block=block, progress=progress)
  n = len(feats)
  info = {"n": n, "k1": int(k1), "k2": int(k2), "feature_dim": int(feats.shape[1]),
          "positives_per_row": float(np.bitwise_count(packed).sum(dtype=np.int64) / n),
          "seconds": time.perf_counter() - start, "features": parts}
  log.info("SSM built in %.1f s: %.1f similar per row", info["seconds"],
           info["positives_per_row"])
  return packed, info
