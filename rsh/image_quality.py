"""Generated-image quality metrics (thesis eq. 4.13 and 4.14), each a pure function of arrays.

  inception_score            eq. 4.13: IS = exp(E_x KL(p(y|x) || p(y))) from a classifier's
                             logits on the generated images, as (mean, std) over `splits`
                             consecutive chunks, p(y) the chunk's mean of p(y|x)
  frechet_distance           eq. 4.14: FID = ||m_a - m_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^{1/2})
                             between two feature sets (rows = images), C the unbiased
                             sample covariance
  gaussian_frechet_distance  the same closed form from given means and covariances

Everything is computed on the host in float64 numpy; inputs may be numpy or jax arrays.
Both metrics are biased at small sample sizes (FID upwards, IS downwards with fewer
images per split): compare numbers computed at the same n (and `splits`) only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["inception_score", "frechet_distance", "gaussian_frechet_distance"]


# ----------------------------------------------------------------------------- checks


def _matrix(x, name: str, fn: str) -> np.ndarray:
  """`x` as a finite float64 2-D array, else a ValueError naming `name` and its shape."""
  a = np.asarray(x)
  if a.ndim != 2:
    raise ValueError(f"{fn}: `{name}` must be 2-D [rows, columns]; got shape {a.shape}")
  if a.dtype.kind not in "biuf":
    raise ValueError(f"{fn}: `{name}` must be numeric; got dtype {a.dtype}")
  a = a.astype(np.float64)
  if not np.isfinite(a).all():
    raise ValueError(f"{fn}: `{name}` of shape {a.shape} has "
                     f"{int((~np.isfinite(a)).sum())} non-finite values")
  return a


# ----------------------------------------------------------------------------- inception score


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
  """Inception Score (thesis eq. 4.13) of n generated images, as (mean, std) over splits.

  p(y|x_i) = softmax(logits_i), taken as log-softmax in float64. The rows are cut into
  `splits` consecutive chunks of n // splits rows; the last n - splits * (n // splits) rows
  are dropped, as the reference Inception-Score code does. For each chunk,
  IS = exp(mean_i KL(p(y|x_i) || p(y))), p(y) the chunk's mean of p(y|x), with
  KL = sum_y p (log p - log p(y)) and 0 log 0 = 0. IS lies in [1, min(c, chunk size)]:
  1 when every image gets the same class distribution, c for confident, evenly spread ones.

  Args:
    logits: f32[n, c] classifier logits (pre-softmax) on the n generated images.
    splits: the number of chunks, >= 1 and <= n.

  Returns:
    (mean, std) of the per-chunk scores, std with ddof=0 (0.0 for one split).

  Raises:
    ValueError: `logits` not 2-D or not finite; `splits` < 1 or n // splits < 1.
  """
  fn = "inception_score"
  x = _matrix(logits, "logits", fn)
  n, c = x.shape
  if isinstance(splits, bool) or not isinstance(splits, (int, np.integer)):
    raise ValueError(f"{fn}: `splits` must be an int; got {splits!r}")
  if splits < 1:
    raise ValueError(f"{fn}: `splits` must be >= 1; got {splits}")
  size = n // splits
  if size < 1:
    raise ValueError(f"{fn}: {n} images cannot fill {splits} splits (n // splits = {size}); "
                     "pass more images or fewer splits")
  if c < 1:
    raise ValueError(f"{fn}: `logits` of shape {x.shape} has no classes")
  shifted = x - x.max(axis=1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  log_p = log_p[:splits * size].reshape(splits, size, c)
  p = np.exp(log_p)
  p_y = p.mean(axis=1, keepdims=True)  # [splits, 1, c]: each chunk's marginal
  # p_y >= p / size > 0 wherever p > 0; where p underflows to 0 the term is 0 (0 log 0).
  log_p_y = np.log(p_y, out=np.zeros_like(p_y), where=p_y > 0)
  kl = np.where(p > 0, p * (log_p - log_p_y), 0.0).sum(axis=2)  # [splits, size]
  scores = np.exp(kl.mean(axis=1))
  return float(scores.mean()), float(scores.std())


# ----------------------------------------------------------------------------- Frechet distance


def _rank_cut(w: np.ndarray) -> np.ndarray:
  """Eigenvalues `w` of a symmetric PSD matrix, those at rounding level set to 0.

  Negative ones, and those <= d * eps * max(w) (numpy's matrix_rank cut), are 0: a zero
  eigenvalue comes back as +-eps-sized noise, and sqrt would turn it into a spurious
  ~1e-8 relative term per null direction (visible when n < d).
  """
  cut = len(w) * np.finfo(np.float64).eps * max(float(w.max(initial=0.0)), 0.0)
  return np.where(w > cut, w, 0.0)


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
  """The symmetric PSD square root of symmetric `c` (via eigh, after `_rank_cut`)."""
  w, v = np.linalg.eigh((c + c.T) / 2)
  return (v * np.sqrt(_rank_cut(w))) @ v.T


def gaussian_frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
  """Frechet distance between N(mean_a, cov_a) and N(mean_b, cov_b), in float64.

  d^2 = ||m_a - m_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^{1/2}). C_a C_b is not symmetric, and
  a general matrix square root of it (e.g. scipy.linalg.sqrtm) can return spurious large
  imaginary parts. Here S = C_a^{1/2} is the symmetric PSD root (via eigh), and
  S C_b S = S^{-1} (C_a C_b) S is a similarity transform of C_a C_b (for singular S, the
  two still share their non-zero eigenvalues), so both have the same eigenvalues; S C_b S
  is symmetric PSD, so they are real and >= 0 and eigvalsh finds them stably. Then
  Tr((C_a C_b)^{1/2}) = sum_i sqrt(lambda_i). This stays finite for rank-deficient
  covariances (e.g. sample covariances with fewer rows than features). In both
  eigen-decompositions, negative and rounding-level eigenvalues (<= d * eps * the largest)
  count as 0, so null directions add nothing (a set against itself gives ~1e-16 relative
  to its trace, not ~1e-8). Tiny negative results from rounding are clipped to 0.

  Args:
    mean_a, mean_b: float[d] means.
    cov_a, cov_b: float[d, d] symmetric positive semi-definite covariances.

  Returns:
    The squared Frechet distance d^2 >= 0, a python float.

  Raises:
    ValueError: shapes that do not fit together, or non-finite values.
  """
  fn = "gaussian_frechet_distance"
  ma, mb = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
  ca, cb = _matrix(cov_a, "cov_a", fn), _matrix(cov_b, "cov_b", fn)
  d = ma.shape[0] if ma.ndim == 1 else -1
  if (ma.ndim != 1 or mb.shape != ma.shape or ca.shape != (d, d) or cb.shape != (d, d)):
    raise ValueError(f"{fn}: need means [d] and covariances [d, d] of one d; got mean_a "
                     f"{ma.shape}, cov_a {ca.shape}, mean_b {mb.shape}, cov_b {cb.shape}")
  if not (np.isfinite(ma).all() and np.isfinite(mb).all()):
    raise ValueError(f"{fn}: the means of shapes {ma.shape} and {mb.shape} must be finite")
  s = _psd_sqrt(ca)
  m = s @ cb @ s
  eig = np.linalg.eigvalsh((m + m.T) / 2)
  tr_sqrt = np.sqrt(_rank_cut(eig)).sum()
  diff = ma - mb
  value = diff @ diff + np.trace(ca) + np.trace(cb) - 2.0 * tr_sqrt
  return max(float(value), 0.0)


def frechet_distance(features_a, features_b) -> float:
  """Frechet (Inception) Distance, thesis eq. 4.14, between two sets of feature rows.

  Fits a Gaussian to each set (mean and unbiased sample covariance, ddof=1, float64) and
  returns `gaussian_frechet_distance` of the two; see there for why Tr((C_a C_b)^{1/2}) is
  taken through the symmetric S C_b S, S = C_a^{1/2}, rather than a general matrix square
  root. The result is finite also for rank-deficient covariances (n < d rows).

  FID is biased upwards at small n (the sample covariances' noise adds to the trace term),
  so two sets of real images score > 0, the more so the fewer rows: compare FIDs computed
  from the same number of rows only.

  Args:
    features_a: float[n_a, d] features (e.g. Inception pool activations), one row an image.
    features_b: float[n_b, d] features of the other set, the same d.

  Returns:
    FID >= 0, a python float.

  Raises:
    ValueError: inputs not 2-D, different feature dimensions, fewer than 2 rows, or
      non-finite values.
  """
  fn = "frechet_distance"
  a = _matrix(features_a, "features_a", fn)
  b = _matrix(features_b, "features_b", fn)
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"{fn}: `features_a` {a.shape} and `features_b` {b.shape} have "
                     "different feature dimensions")
  if len(a) < 2 or len(b) < 2:
    raise ValueError(f"{fn}: need at least 2 rows per set for a covariance; got "
                     f"`features_a` {a.shape} and `features_b` {b.shape}")
  cov_a = np.atleast_2d(np.cov(a, rowvar=False, ddof=1))
  cov_b = np.atleast_2d(np.cov(b, rowvar=False, ddof=1))
  return gaussian_frechet_distance(a.mean(0), cov_a, b.mean(0), cov_b)
