"""Domain Whitening Transform (DWT) for feature vectors, after Roy et al. 2019.

Roy, Siarohin, Sangineto, Bulò, Sebe, Ricci, "Unsupervised Domain Adaptation
using Feature-Whitening and Consensus Loss", CVPR 2019. DWT is BatchNorm with the
per-feature standardisation replaced by a full (grouped) whitening, and with one
set of statistics per domain: every domain's features are mapped to zero mean and
identity covariance by its own statistics, so source and target features reach the
next layer (here: a hashing MLP on frozen CNN features) with the same first two
moments.

    dwt = DomainWhitening(num_domains=2, group=32)
    variables = dwt.init(rng, x, domains, train=False)    # x: f32[b, d], domains: int[b]
    y, updates = dwt.apply(variables, x, domains, train=True, mutable=["batch_stats"])
    y = dwt.apply({**variables, **updates}, x, domains, train=False)

Per group of `group` consecutive features and per domain k, with S = (1 - eps) Σ_k
+ eps I (Σ_k the domain's covariance) and L = cholesky(S), the whitening matrix is
W_k = L^-1 (lower triangular), so W_k S W_k^T = I and y = W_k (x - μ_k), then
y * scale + bias. The shrinkage towards I keeps W finite when a domain has fewer
rows than `group` (Σ_k singular; with eps = 0 it would not be); the whitened output
of such a domain then has covariance W Σ W^T = (I - eps W W^T) / (1 - eps), not I.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_HIGHEST = jax.lax.Precision.HIGHEST


def cholesky_lower(a: Array) -> Array:
  """Lower Cholesky factor of symmetric positive definite a: f32[..., g, g].

  Column by column (Cholesky-Crout) in a `fori_loop` of g steps of array ops, not
  LAPACK: XLA:CPU runs independent LAPACK custom calls of one program (e.g. two
  whitened passes of a batch) on its thread pool at once, and such a program was
  seen to stall on 2 cores; this one is plain XLA, differentiable, and as exact
  as LAPACK's `potrf` at these sizes (tests/test_whitening.py).
  """
  a = jnp.asarray(a)
  g = a.shape[-1]
  idx = jnp.arange(g)

  def column(j, low):
    row = jnp.where(idx < j, low[..., j, :], 0.0)                 # L[j, :j]
    pivot = jnp.sqrt(jnp.maximum(a[..., j, j] - jnp.sum(row * row, -1), 1e-30))
    dots = jnp.einsum("...ik,...k->...i", low, row, precision=_HIGHEST)
    col = jnp.where(idx > j, (a[..., :, j] - dots) / pivot[..., None], 0.0)
    col = jnp.where(idx == j, pivot[..., None], col)
    return low.at[..., :, j].set(col)

  return jax.lax.fori_loop(0, g, column, jnp.zeros_like(a))


def lower_inverse(low: Array) -> Array:
  """L^-1 of lower-triangular L: f32[..., g, g], by forward substitution (row by row)."""
  low = jnp.asarray(low)
  g = low.shape[-1]
  idx = jnp.arange(g)

  def row(i, inv):
    li = jnp.where(idx < i, low[..., i, :], 0.0)                   # L[i, :i]
    rhs = (idx == i).astype(low.dtype) - jnp.einsum("...k,...kj->...j", li, inv,
                                                    precision=_HIGHEST)
    return inv.at[..., i, :].set(rhs / low[..., i, i][..., None])

  return jax.lax.fori_loop(0, g, row, jnp.zeros_like(low))


def whitening_matrices(cov: Array, eps: float) -> Array:
  """Cholesky whitening matrices of shrunk covariances.

  Args:
    cov: f32[..., g, g] symmetric positive semi-definite covariances.
    eps: shrinkage towards the identity, in [0, 1): S = (1 - eps) cov + eps I.

  Returns:
    f32[..., g, g] lower-triangular W = cholesky(S)^-1, so that W S W^T = I
    (`cholesky_lower`, then `lower_inverse`: forward substitution, no general inverse).
  """
  g = cov.shape[-1]
  eye = jnp.eye(g, dtype=cov.dtype)
  return lower_inverse(cholesky_lower((1.0 - eps) * cov + eps * eye))


def batch_moments(x: Array, domains: Array, num_domains: int,
                  group: int) -> tuple[Array, Array, Array]:
  """Per-domain mean and grouped covariance of a batch, by masks (jittable).

  Args:
    x: f32[b, d] features, d % group == 0.
    domains: int[b] domain of each row in [0, num_domains); rows outside that
      range count for no domain.
    num_domains: D.
    group: g, the width of each whitened group of consecutive features.

  Returns:
    (mean, cov, count): mean f32[D, d]; cov f32[D, d // g, g, g], the biased
    covariance (sum of outer products of centred rows divided by the domain's row
    count n, not n - 1); count f32[D] rows per domain. A domain with no rows gets
    zero mean and zero covariance (divisions are by max(n, 1)).
  """
  b, d = x.shape
  onehot = jax.nn.one_hot(domains, num_domains, dtype=jnp.float32)  # [b, D]
  count = jnp.sum(onehot, axis=0)
  safe = jnp.maximum(count, 1.0)
  mean = jnp.einsum("bk,bf->kf", onehot, x, precision=_HIGHEST) / safe[:, None]
  # Centre every row with its own domain's mean (two passes: no E[x²] - E[x]²).
  centred = x - jnp.einsum("bk,kf->bf", onehot, mean, precision=_HIGHEST)
  xg = centred.reshape(b, d // group, group)
  weighted = onehot[:, :, None, None] * xg[:, None]  # [b, D, G, g]
  cov = jnp.einsum("bkni,bnj->knij", weighted, xg, precision=_HIGHEST)
  return mean, cov / safe[:, None, None, None], count


def _whiten(x: Array, onehot: Array, mean: Array, white: Array) -> Array:
  """y[r] = W_{k(r)} (x[r] - mean_{k(r)}) per group, k(r) the row's domain.

  Args:
    x: f32[b, d]. onehot: f32[b, D] (an all-zero row gives y = 0).
    mean: f32[D, d]. white: f32[D, G, g, g].

  Returns:
    f32[b, d].
  """
  b, d = x.shape
  num_groups, g = white.shape[1], white.shape[2]
  centred = x - jnp.einsum("bk,kf->bf", onehot, mean, precision=_HIGHEST)
  xg = centred.reshape(b, num_groups, g)
  # Whiten every row with every domain's W, then keep its own: D is small, and
  # this holds b * D * d numbers where gathering W per row would hold b * d * g.
  every = jnp.einsum("knij,bnj->bkni", white, xg, precision=_HIGHEST)
  return jnp.einsum("bk,bkni->bni", onehot, every, precision=_HIGHEST).reshape(b, d)


def _check_inputs(x: Array, domains: Array, num_domains: int, group: int) -> None:
  """Raises ValueError on shapes, dtypes and (when concrete) domain ids."""
  if x.ndim != 2:
    raise ValueError(f"DomainWhitening expects x of shape [b, d], got {x.shape}")
  if group < 1 or x.shape[1] % group:
    raise ValueError(f"feature size {x.shape[1]} is not divisible by group {group}")
  if domains.shape != x.shape[:1]:
    raise ValueError(f"domains must have shape {x.shape[:1]}, got {domains.shape}")
  if not jnp.issubdtype(domains.dtype, jnp.integer):
    raise ValueError(f"domains must be integers, got {domains.dtype}")
  if num_domains < 1:
    raise ValueError(f"num_domains must be >= 1, got {num_domains}")
  try:  # only outside jit: a traced array has no values to check
    values = np.asarray(domains)
  except jax.errors.TracerArrayConversionError:
    return
  if values.size and (values.min() < 0 or values.max() >= num_domains):
    raise ValueError(f"domains must lie in [0, {num_domains}), got "
                     f"[{values.min()}, {values.max()}]")


class DomainWhitening(nn.Module):
  """Grouped Cholesky whitening with one set of statistics per domain.

  Variables:
    params (when `affine`): "scale" f32[d] (init 1) and "bias" f32[d] (init 0),
      shared by all domains.
    batch_stats: "mean" f32[D, d] (init 0) and "cov" f32[D, d // group, g, g]
      (init I), the running statistics of each domain.

  train=True whitens each row with its own domain's batch statistics and needs
  `mutable=["batch_stats"]`: the running statistics of every domain present in
  the batch move as running = (1 - momentum) * running + momentum * batch
  (PyTorch's convention); an absent domain's stay exactly as they were. As in
  the authors' code (utils/whitening.py), the running covariance averages the
  *biased* batch covariance (divided by n, no n / (n - 1) correction). Nothing
  is updated while the module is being initialised. train=False whitens each row
  with its domain's running statistics.

  Rows whose domain id lies outside [0, num_domains) (which only jit can let
  through) count for no domain and come out as `bias`. A domain with one row in
  a batch has zero covariance; that row is centred, hence whitened, to 0.

  Attributes:
    num_domains: D, the number of domains (e.g. 2: source and target).
    group: g; features are whitened in d // g groups of g consecutive features.
    eps: shrinkage of the covariance towards I before the Cholesky factor.
    momentum: weight of the batch statistics in the running averages.
    affine: learn a scale and bias applied after whitening.
  """
  num_domains: int
  group: int = 32
  eps: float = 1e-3
  momentum: float = 0.1
  affine: bool = True

  @nn.compact
  def __call__(self, x: Array, domains: Array, *, train: bool) -> Array:
    """Whitens x: f32[b, d] per domain (domains: int[b]); returns f32[b, d]."""
    x = jnp.asarray(x, jnp.float32)
    domains = jnp.asarray(domains)
    _check_inputs(x, domains, self.num_domains, self.group)
    d, g = x.shape[1], self.group
    num_domains, num_groups = self.num_domains, d // g
    running_mean = self.variable("batch_stats", "mean", jnp.zeros,
                                 (num_domains, d), jnp.float32)
    running_cov = self.variable(
        "batch_stats", "cov",
        lambda: jnp.broadcast_to(jnp.eye(g, dtype=jnp.float32),
                                 (num_domains, num_groups, g, g)))
    onehot = jax.nn.one_hot(domains, num_domains, dtype=jnp.float32)
    if train:
      mean, cov, count = batch_moments(x, domains, num_domains, g)
      # With 0 rows a domain's covariance is never used; with 1 row it is 0 and
      # the row is centred to 0 whatever W. I keeps W finite even with eps = 0.
      present = count > 0
      used_cov = jnp.where((count > 1)[:, None, None, None], cov,
                           jnp.eye(g, dtype=jnp.float32))
      if not self.is_initializing():
        m = self.momentum
        new_mean = (1.0 - m) * running_mean.value + m * jax.lax.stop_gradient(mean)
        new_cov = (1.0 - m) * running_cov.value + m * jax.lax.stop_gradient(cov)
        running_mean.value = jnp.where(present[:, None], new_mean, running_mean.value)
        running_cov.value = jnp.where(present[:, None, None, None], new_cov,
                                      running_cov.value)
    else:
      mean, used_cov = running_mean.value, running_cov.value
    y = _whiten(x, onehot, mean, whitening_matrices(used_cov, self.eps))
    if self.affine:
      y = y * self.param("scale", nn.initializers.ones, (d,), jnp.float32)
      y = y + self.param("bias", nn.initializers.zeros, (d,), jnp.float32)
    return y
