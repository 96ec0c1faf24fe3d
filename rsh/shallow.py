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


def _rows(x, name: str = "x", fn: str = "shallow", *, fit: bool = False) -> np.ndarray:
  """`x` [n, ...] as float32[n, d] rows (an image [h, w, c] or a vector each).

  fit: training data, which must be non-empty and finite (one pass over it, cheap
  next to the fit itself).
  """
  x = np.asarray(x)
  if x.dtype.kind not in "biuf":
    raise TypeError(f"{fn}: `{name}` must be a numeric array [n, ...]; got dtype {x.dtype}")
  if x.ndim < 2:
    raise ValueError(f"{fn}: `{name}` must be rows [n, ...] (2-D or more); got shape "
                     f"{x.shape} (use x[None] for a single row)")
  x = x.astype(np.float32, copy=False).reshape(len(x), int(np.prod(x.shape[1:])))
  if fit:
    if not len(x) or not x.shape[1]:
      raise ValueError(f"{fn}: `{name}` is empty (shape {x.shape}); fitting needs rows")
    if not np.isfinite(x).all():
      raise ValueError(f"{fn}: `{name}` contains NaN or infinite values")
  return x


def _check_bits(bits: int, d: int, n: int | None = None, fn: str = "shallow") -> int:
  if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
    raise TypeError(f"{fn}: `bits` must be an int; got {type(bits).__name__} {bits!r}")
  bits = int(bits)
  if bits < 1:
    raise ValueError(f"{fn}: bits must be >= 1; got `bits`={bits}")
  if bits > d or (n is not None and bits > n):
    need = "input dimensions" if n is None else "input dimensions and training images"
    has = f"{d} dimensions" if n is None else f"{d} dimensions and {n} images"
    raise ValueError(f"{fn}: {bits} bits need at least {bits} {need}; the input has {has} "
                     f"(`bits`={bits})")
  return bits


def _check_count(value, name: str, fn: str, lo: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{fn}: `{name}` must be an int; got {type(value).__name__} {value!r}")
  if value < lo:
    raise ValueError(f"{fn}: `{name}` must be an int >= {lo}; got {value}")
  return int(value)


def fit_lsh(x, bits: int, seed: int) -> LinearHash:
  """Random hyperplanes through the mean of `x` f32[n, ...]."""
  x = _rows(x, "x", "fit_lsh", fit=True)
  bits = _check_bits(bits, x.shape[1], fn="fit_lsh")
  proj = np.random.default_rng(int(seed)).standard_normal((x.shape[1], bits)).astype(np.float32)
  return LinearHash(mean=x.mean(0), proj=proj)


def pca(x, bits: int) -> LinearHash:
  """The mean and the top-`bits` principal directions f32[d, bits] of `x`.

  By the n x n Gram matrix when there are fewer images than dimensions (pixels),
  else the d x d covariance; float64 eigendecomposition either way. Each
  direction's sign is fixed (largest |entry| positive) so a refit is identical.
  """
  x = _rows(x, "x", "pca", fit=True)
  bits = _check_bits(bits, x.shape[1], len(x), fn="pca")
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
  bits = _check_count(bits, "bits", "random_rotation", 1)
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
  l = np.shape(pca_hash.proj)[-1]
  if np.shape(rotation) != (l, l):
    raise ValueError(f"with_rotation: `rotation` must be [{l}, {l}] for {l}-bit `pca_hash`; "
                     f"got shape {np.shape(rotation)}")
  return LinearHash(mean=pca_hash.mean, proj=pca_hash.proj @ rotation)


def fit_itq(x, bits: int, seed: int, iterations: int = 50) -> LinearHash:
  """PCA then `iterations` ITQ alternations on all of `x` (the paper uses 50)."""
  iterations = _check_count(iterations, "iterations", "fit_itq", 0)
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
  batch = _check_count(batch, "batch", "project", 1)
  if np.ndim(x) < 2:
    raise ValueError(f"project: `x` must be rows [n, ...] (2-D or more); got shape "
                     f"{np.shape(x)} (use x[None] for a single row)")
  d = int(np.prod(np.shape(x)[1:]))
  if d != len(mean):
    raise ValueError(f"project: rows of `x` have {d} values (shape {np.shape(x)}) but the hash "
                     f"was fitted on {len(mean)}")

  def rows(s):  # checked per batch: a cheap pass next to the product
    r = _rows(x[s:s + batch], "x", "project")
    if not np.isfinite(r).all():
      raise ValueError("project: `x` contains NaN or infinite values")
    return r

  out = [(rows(s) - mean) @ proj for s in range(0, len(x), batch)]
  return np.concatenate(out) if out else np.zeros((0, proj.shape[1]), np.float32)


def pool_rows(x, size: int | None) -> np.ndarray:
  """f32[n, size * size * c] of images [n, h, w, c] averaged down to size x size
  cells; None or a vector view: the rows flattened.

  Cell i of an axis of length h averages pixels floor(i h / size) up to
  ceil((i + 1) h / size) (adaptive average pooling), so any patch size pools to
  any grid: disjoint equal blocks when size divides h, overlapping ones when it
  does not, a pixel repeated when size exceeds h.
  """
  if size is None or np.ndim(x) != 4:
    return _rows(x, "x", "pool_rows")
  x = np.asarray(x)
  if x.dtype.kind not in "biuf":
    raise TypeError(f"pool_rows: `x` must be a numeric array [n, h, w, c]; got dtype {x.dtype}")
  x = x.astype(np.float32, copy=False)
  size = _check_count(size, "size", "pool_rows", 1)
  n, h, w, c = x.shape
  if not (h % size or w % size):  # equal blocks: the plain block mean
    return x.reshape(n, size, h // size, size, w // size, c).mean((2, 4)).reshape(n, -1)
  out = np.einsum("ih,nhwc,jw->nijc", _pool_matrix(size, h), x, _pool_matrix(size, w),
                  optimize=True)
  return out.astype(np.float32).reshape(n, -1)


def _pool_matrix(size: int, h: int) -> np.ndarray:
  """f32[size, h]: row i averages pixels floor(i h / size) .. ceil((i + 1) h / size) - 1."""
  m = np.zeros((size, h), np.float32)
  for i in range(size):
    lo, hi = (i * h) // size, -((-(i + 1) * h) // size)
    m[i, lo:hi] = 1.0 / (hi - lo)
  return m


def cca(x, y, bits: int, reg: float = 1e-3) -> tuple[LinearHash, LinearHash, np.ndarray]:
  """The top-`bits` canonical directions of paired rows x f32[n, dx], y f32[n, dy].

  Each covariance is regularised by `reg` times its mean eigenvalue (so more
  dimensions than images work); float64. Returns the two projections and the
  canonical correlations f64[bits].
  """
  x = _rows(x, "x", "cca", fit=True).astype(np.float64)
  y = _rows(y, "y", "cca", fit=True).astype(np.float64)
  if len(x) != len(y):
    raise ValueError(f"cca: `x` has {len(x)} rows and `y` {len(y)}; the views must be paired "
                     "row by row")
  bits = _check_bits(bits, min(x.shape[1], y.shape[1]), fn="cca")
  if isinstance(reg, bool) or not isinstance(reg, (int, float, np.integer, np.floating)) \
      or not np.isfinite(reg) or reg < 0:
    raise ValueError(f"cca: `reg` must be a finite number >= 0; got {reg!r}")
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
  iterations = _check_count(iterations, "iterations", "fit_cca_itq", 0)
  hx, hy, _ = cca(x, y, bits, reg=reg)
  v = jnp.asarray(np.concatenate([project(hx, x), project(hy, y)]))
  rotation = jnp.asarray(random_rotation(bits, seed))
  step = jax.jit(itq_step)
  for _ in range(int(iterations)):
    rotation, _ = step(v, rotation)
  r = np.asarray(rotation)
  return with_rotation(hx, r), with_rotation(hy, r)
