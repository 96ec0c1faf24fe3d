"""Shallow hashing: the baselines a user tries first, as pure functions.

    LSH  (random hyperplanes through the training mean):
         h(x) = sign((x - mean) @ P),  P ~ N(0, 1)^{d x l}
    ITQ  (Gong & Lazebnik 2011, "Iterative quantization: a Procrustean approach"):
         V = (x - mean) @ W   (W: the top-l principal directions of the training set)
         minimise ||B - V R||^2 over codes B in {-1, 1}^{n x l} and orthogonal R,
         alternating  B = sign(V R)  and  R = argmin ||B - V R|| = S U^T  where
         V^T B = S Omega U^T (orthogonal Procrustes); R starts as a random rotation.

    CCA-ITQ (Gong et al. 2013, the cross-view form): CCA directions W_x, W_y of
         two paired views (e.g. S1 and S2 patches of the same places), then one
         ITQ rotation fitted on both views' projections, so both hash into one
         Hamming space.

`fit_lsh` / `pca` / `cca` run once in numpy; `itq_step` is one alternation, a pure
jittable function (the ITQ method runs one per training step, so its
quantisation loss is the training curve). Every projection is `LinearHash`:
codes = (x - mean) @ proj, scored by the sign.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class LinearHash:
  """codes = (x - mean) @ proj: f32[d] and f32[d, l]."""
  mean: np.ndarray
  proj: np.ndarray


def _rows(x) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x.reshape(len(x), -1)


def _check_bits(bits: int, d: int, n: int | None = None) -> int:
  bits = int(bits)
  if bits < 1:
    raise ValueError(f"bits must be >= 1, not {bits}")
  if bits > d or (n is not None and bits > n):
    raise ValueError(f"{bits} bits need at least {bits} input dimensions and training "
                     f"images; the input has {d} dimensions and {n} images")
  return bits


def fit_lsh(x, bits: int, seed: int) -> LinearHash:
  """Random hyperplanes through the mean of `x` f32[n, ...]."""
  x = _rows(x)
  bits = _check_bits(bits, x.shape[1])
  proj = np.random.default_rng(int(seed)).standard_normal((x.shape[1], bits)).astype(np.float32)
  return LinearHash(mean=x.mean(0), proj=proj)


def pca(x, bits: int) -> LinearHash:
  """The mean and the top-`bits` principal directions f32[d, bits] of `x`.

  By the n x n Gram matrix when there are fewer images than dimensions (pixels),
  else the d x d covariance; float64 eigendecomposition either way. Each
  direction's sign is fixed (largest |entry| positive) so a refit is identical.
  """
  x = _rows(x)
  bits = _check_bits(bits, x.shape[1], len(x))
  mean = x.mean(0)
  xc = x - mean
  if len(x) < x.shape[1]:
    gram = (xc @ xc.T).astype(np.float64)
    val, vec = np.linalg.eigh(gram)
    top = np.argsort(-val, kind="stable")[:bits]
    w = xc.T.astype(np.float64) @ vec[:, top] / np.sqrt(np.maximum(val[top], 1e-12))
  else:
    cov = (xc.T @ xc).astype(np.float64)
    val, vec = np.linalg.eigh(cov)
    w = vec[:, np.argsort(-val, kind="stable")[:bits]]
  w *= np.sign(w[np.abs(w).argmax(0), np.arange(bits)])
  return LinearHash(mean=mean, proj=w.astype(np.float32))


def random_rotation(bits: int, seed: int) -> np.ndarray:
  """A random orthogonal f32[bits, bits] (QR of a Gaussian matrix, signs fixed)."""
  g = np.random.default_rng(int(seed)).standard_normal((bits, bits))
  q, r = np.linalg.qr(g)
  return (q * np.sign(np.diag(r))).astype(np.float32)


def itq_step(v, rotation):
  """One ITQ alternation on projected data v f32[n, l]: (new rotation, loss).

  loss = ||sign(v R) - v R||^2 / n, the quantisation error of the codes the
  rotation gave before this update (it never increases from step to step).
  """
  z = v @ rotation
  b = jnp.where(z >= 0, 1.0, -1.0)
  loss = jnp.sum((b - z) ** 2) / v.shape[0]
  s, _, ut = jnp.linalg.svd(v.T @ b)
  return s @ ut, loss


def with_rotation(pca_hash: LinearHash, rotation) -> LinearHash:
  """The ITQ hash: PCA directions followed by the learned rotation."""
  return LinearHash(mean=pca_hash.mean, proj=pca_hash.proj @ rotation)


def fit_itq(x, bits: int, seed: int, iterations: int = 50) -> LinearHash:
  """PCA then `iterations` ITQ alternations on all of `x` (the paper uses 50)."""
  p = pca(x, bits)
  v = jnp.asarray(project(p, x))
  rotation = jnp.asarray(random_rotation(p.proj.shape[1], seed))
  step = jax.jit(itq_step)
  for _ in range(int(iterations)):
    rotation, _ = step(v, rotation)
  return with_rotation(p, np.asarray(rotation))


def project(h: LinearHash, x, batch: int = 1024) -> np.ndarray:
  """f32[n, l] real codes (x - mean) @ proj of `x` (any array-like of rows)."""
  mean, proj = np.asarray(h.mean, np.float32), np.asarray(h.proj, np.float32)
  out = [(_rows(x[s:s + batch]) - mean) @ proj for s in range(0, len(x), batch)]
  return np.concatenate(out) if out else np.zeros((0, proj.shape[1]), np.float32)


def pool_rows(x, size: int | None) -> np.ndarray:
  """f32[n, size * size * c] of images [n, h, h, c] averaged down to size x size
  (h must divide by size); None or a vector view: the rows flattened."""
  x = np.asarray(x, np.float32)
  if size is None or x.ndim != 4:
    return x.reshape(len(x), -1)
  n, h, w, c = x.shape
  if h % size or w % size:
    raise ValueError(f"pooling {h}x{w} images to {size}x{size}: the size must divide both")
  return x.reshape(n, size, h // size, size, w // size, c).mean((2, 4)).reshape(n, -1)


def cca(x, y, bits: int, reg: float = 1e-3) -> tuple[LinearHash, LinearHash, np.ndarray]:
  """The top-`bits` canonical directions of paired rows x f32[n, dx], y f32[n, dy].

  Each covariance is regularised by `reg` times its mean eigenvalue (so more
  dimensions than images work); float64. Returns the two projections and the
  canonical correlations f64[bits].
  """
  x, y = _rows(x).astype(np.float64), _rows(y).astype(np.float64)
  if len(x) != len(y):
    raise ValueError(f"cca: {len(x)} and {len(y)} rows; the views must be paired row by row")
  bits = _check_bits(bits, min(x.shape[1], y.shape[1]))
  mx, my = x.mean(0), y.mean(0)
  xc, yc = x - mx, y - my

  def inv_sqrt(c):
    c = c + reg * np.trace(c) / len(c) * np.eye(len(c))
    val, vec = np.linalg.eigh(c)
    return (vec / np.sqrt(np.maximum(val, 1e-12))) @ vec.T

  n = len(x)
  wx, wy = inv_sqrt(xc.T @ xc / n), inv_sqrt(yc.T @ yc / n)
  u, corr, vt = np.linalg.svd(wx @ (xc.T @ yc / n) @ wy)
  px, py = wx @ u[:, :bits], wy @ vt.T[:, :bits]
  flip = np.sign(px[np.abs(px).argmax(0), np.arange(bits)])  # a refit is identical
  return (LinearHash(mean=mx.astype(np.float32), proj=(px * flip).astype(np.float32)),
          LinearHash(mean=my.astype(np.float32), proj=(py * flip).astype(np.float32)),
          corr[:bits])


def fit_cca_itq(x, y, bits: int, seed: int, iterations: int = 50, reg: float = 1.0
                ) -> tuple[LinearHash, LinearHash]:
  """CCA of the paired views, then one ITQ rotation on both projections stacked.

  `reg` is strong by default: with more dimensions than a few hundred pairs
  carry, weakly regularised CCA finds spurious directions of correlation
  ~0.97 (on the demo pairs, S1 -> S2 MAP@100 0.393 at reg 1e-3, 0.438 at 0.1,
  0.446 at 1.0)."""
  hx, hy, _ = cca(x, y, bits, reg=reg)
  v = jnp.asarray(np.concatenate([project(hx, x), project(hy, y)]))
  rotation = jnp.asarray(random_rotation(bits, seed))
  step = jax.jit(itq_step)
  for _ in range(int(iterations)):
    rotation, _ = step(v, rotation)
  r = np.asarray(rotation)
  return with_rotation(hx, r), with_rotation(hy, r)
