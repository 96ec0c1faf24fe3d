"""DomainWhitening (DWT, Roy et al. 2019) against a float64 numpy reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh.models import whitening
from rsh.models.whitening import DomainWhitening, batch_moments, whitening_matrices

D_FEAT, GROUP = 64, 32


def _domain_batch(seed, sizes, means, scales, d=D_FEAT):
  """Rows of len(sizes) domains, shuffled together: (x f32[b, d], domains int[b]).

  Domain k has mean means[k] (+ a random offset per feature) and a correlated
  covariance scales[k]² M_k M_kᵀ, M_k = diag(0.5..2) + a random dense part.
  """
  rng = np.random.default_rng(seed)
  rows, ids = [], []
  for k, (n, mu, s) in enumerate(zip(sizes, means, scales)):
    mix = np.diag(rng.uniform(0.5, 2.0, d)) + 0.6 * rng.standard_normal((d, d)) / np.sqrt(d)
    centre = mu + rng.standard_normal(d)
    rows.append(centre + s * rng.standard_normal((n, d)) @ mix)
    ids.append(np.full(n, k))
  order = rng.permutation(sum(sizes))
  x = np.concatenate(rows)[order].astype(np.float32)
  return x, np.concatenate(ids)[order].astype(np.int32)


def _ref_moments(x, domains, num_domains, group):
  """float64 per-domain mean f[D, d] and biased grouped covariance f[D, G, g, g]."""
  x = x.astype(np.float64)
  d = x.shape[1]
  mean = np.zeros((num_domains, d))
  cov = np.zeros((num_domains, d // group, group, group))
  for k in range(num_domains):
    rows = x[domains == k]
    if not len(rows):
      continue
    mean[k] = rows.mean(0)
    for n in range(d // group):
      part = rows[:, n * group:(n + 1) * group] - mean[k, n * group:(n + 1) * group]
      cov[k, n] = part.T @ part / len(rows)
  return mean, cov


def _ref_whiten(x, domains, mean, cov, eps, scale, bias, group):
  """float64 y[r] = inv(cholesky((1 - eps) Σ_k + eps I)) (x[r] - μ_k) per group."""
  x = x.astype(np.float64)
  y = np.zeros_like(x)
  num_domains, num_groups = cov.shape[:2]
  for k in range(num_domains):
    for n in range(num_groups):
      shrunk = (1 - eps) * cov[k, n] + eps * np.eye(group)
      w = np.linalg.inv(np.linalg.cholesky(shrunk))
      cols = slice(n * group, (n + 1) * group)
      for r in np.flatnonzero(domains == k):
        y[r, cols] = w @ (x[r, cols] - mean[k, cols])
  return y * scale + bias


def _white_moments(y, group):
  """float64 mean f[d] and grouped biased covariance f[G, g, g] of rows y."""
  y = y.astype(np.float64)
  centred = (y - y.mean(0)).reshape(len(y), -1, group)
  return y.mean(0), np.einsum("bni,bnj->nij", centred, centred) / len(y)


@functools.cache
def _train_fn(model):
  return jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))


def _init(model, x, domains):
  """The module's variables for rows like x (jitted: the eager path is slow on CPU)."""
  return jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x, domains)


def _train(model, variables, x, domains):
  """One jitted training application: (y, {"batch_stats": updated})."""
  return _train_fn(model)(variables, x, domains)


def test_whitening_matrices_are_inverse_cholesky_factors():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((3, 2, 8, 20))
  cov = np.einsum("...ik,...jk->...ij", a, a) / 20
  eps = 1e-3
  w = np.asarray(whitening_matrices(jnp.asarray(cov, jnp.float32), eps))
  shrunk = (1 - eps) * cov + eps * np.eye(8)
  assert w.shape == cov.shape
  np.testing.assert_array_equal(np.triu(w, 1), 0.0)
  np.testing.assert_allclose(np.linalg.inv(np.linalg.cholesky(shrunk)), w, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(w @ shrunk @ np.swapaxes(w, -1, -2),
                             np.broadcast_to(np.eye(8), w.shape), atol=1e-5)


def test_batch_moments_match_numpy_and_leave_absent_domains_zero():
  x, domains = _domain_batch(1, (40, 70), (-2.0, 3.0), (1.0, 0.5))
  mean, cov, count = batch_moments(jnp.asarray(x), jnp.asarray(domains), 3, GROUP)
  ref_mean, ref_cov = _ref_moments(x, domains, 3, GROUP)
  assert mean.shape == (3, D_FEAT) and cov.shape == (3, D_FEAT // GROUP, GROUP, GROUP)
  np.testing.assert_array_equal(count, [40.0, 70.0, 0.0])
  np.testing.assert_allclose(mean, ref_mean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cov, ref_cov, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(mean[2], 0.0)
  np.testing.assert_array_equal(cov[2], 0.0)


def test_train_output_is_white_per_domain_and_group():
  x, domains = _domain_batch(2, (500, 500), (5.0, -4.0), (1.0, 3.0))
  model = DomainWhitening(num_domains=2, group=GROUP, eps=0.0)
  variables = _init(model, x, domains)
  y, _ = _train(model, variables, x, domains)
  for k in range(2):
    mean, cov = _white_moments(np.asarray(y)[domains == k], GROUP)
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(cov, np.broadcast_to(np.eye(GROUP), cov.shape), atol=1e-4)


def test_different_domains_are_mapped_to_the_same_distribution():
  # Tiny vs huge scale, far-apart means, different correlations.
  x, domains = _domain_batch(3, (500, 500), (-3.0, 40.0), (0.1, 10.0))
  model = DomainWhitening(num_domains=2, group=GROUP, eps=0.0)
  variables = _init(model, x, domains)
  y = np.asarray(_train(model, variables, x, domains)[0])
  (m0, c0), (m1, c1) = (_white_moments(y[domains == k], GROUP) for k in range(2))
  np.testing.assert_allclose(m0, m1, atol=2e-4)
  np.testing.assert_allclose(c0, c1, atol=2e-4)
  # One set of statistics for both (plain batch whitening) keeps them apart.
  pooled = DomainWhitening(num_domains=1, group=GROUP, eps=0.0)
  zeros = np.zeros_like(domains)
  y1 = np.asarray(_train(pooled, _init(pooled, x, zeros),
                         x, zeros)[0])
  assert np.abs(y1[domains == 0].mean(0) - y1[domains == 1].mean(0)).max() > 0.5


def test_train_matches_numpy_reference_with_affine_params():
  x, domains = _domain_batch(4, (300, 200), (1.0, -1.0), (2.0, 0.3))
  eps = 1e-3
  model = DomainWhitening(num_domains=2, group=GROUP, eps=eps)
  variables = _init(model, x, domains)
  rng = np.random.default_rng(5)
  scale = rng.uniform(0.5, 2.0, D_FEAT).astype(np.float32)
  bias = rng.standard_normal(D_FEAT).astype(np.float32)
  variables = {**variables, "params": {"scale": scale, "bias": bias}}
  y, _ = _train(model, variables, x, domains)
  mean, cov = _ref_moments(x, domains, 2, GROUP)
  ref = _ref_whiten(x, domains, mean, cov, eps, scale, bias, GROUP)
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_running_stats_are_per_domain_and_used_in_eval():
  model = DomainWhitening(num_domains=2, group=GROUP)
  x1, _ = _domain_batch(6, (200,), (2.0,), (1.5,))
  d1 = np.ones(len(x1), np.int32)  # a batch holding domain 1 only
  variables = model.init(jax.random.key(0), x1, d1, train=True)
  stats0 = jax.tree.map(np.asarray, variables["batch_stats"])
  assert set(variables["params"]) == {"scale", "bias"}
  np.testing.assert_array_equal(stats0["mean"], np.zeros((2, D_FEAT)))
  np.testing.assert_array_equal(stats0["cov"], np.broadcast_to(np.eye(GROUP), (2, 2, GROUP, GROUP)))

  _, updates = _train(model, variables, x1, d1)
  stats1 = jax.tree.map(np.asarray, updates["batch_stats"])
  mean_b, cov_b = _ref_moments(x1, d1, 2, GROUP)
  np.testing.assert_array_equal(stats1["mean"][0], stats0["mean"][0])
  np.testing.assert_array_equal(stats1["cov"][0], stats0["cov"][0])
  np.testing.assert_allclose(stats1["mean"][1], 0.9 * stats0["mean"][1] + 0.1 * mean_b[1],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stats1["cov"][1], 0.9 * stats0["cov"][1] + 0.1 * cov_b[1],
                             rtol=1e-5, atol=1e-5)

  x2, d2 = _domain_batch(7, (80, 120), (-5.0, 6.0), (0.5, 2.5))
  _, updates = _train(model, {**variables, **updates}, x2, d2)
  stats2 = jax.tree.map(np.asarray, updates["batch_stats"])
  mean_b, cov_b = _ref_moments(x2, d2, 2, GROUP)
  for k in range(2):
    np.testing.assert_allclose(stats2["mean"][k], 0.9 * stats1["mean"][k] + 0.1 * mean_b[k],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats2["cov"][k], 0.9 * stats1["cov"][k] + 0.1 * cov_b[k],
                               rtol=1e-5, atol=1e-4)

  # Now both domains' running means are nonzero: a domain-0-only batch must
  # leave domain 1's exactly as they were (not decay them towards 0).
  x0, _ = _domain_batch(9, (200,), (1.0,), (1.0,))
  _, after = _train(model, {**variables, **updates}, x0, np.zeros(len(x0), np.int32))
  np.testing.assert_array_equal(after["batch_stats"]["mean"][1], stats2["mean"][1])
  np.testing.assert_array_equal(after["batch_stats"]["cov"][1], stats2["cov"][1])
  assert np.abs(after["batch_stats"]["mean"][0] - stats2["mean"][0]).max() > 0.1

  x3, d3 = _domain_batch(8, (60, 40), (-4.0, 5.0), (0.7, 2.0))
  y = jax.jit(functools.partial(model.apply, train=False))({**variables, **updates}, x3, d3)
  ref = _ref_whiten(x3, d3, stats2["mean"].astype(np.float64), stats2["cov"].astype(np.float64),
                    model.eps, 1.0, 0.0, GROUP)
  np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("eps", [1e-3, 0.0])
def test_absent_and_single_row_domains_stay_finite(eps):
  x, domains = _domain_batch(9, (1, 50), (3.0, -3.0), (1.0, 1.0))
  model = DomainWhitening(num_domains=3, group=GROUP, eps=eps)
  variables = _init(model, x, domains)
  y, updates = _train(model, variables, x, domains)
  stats = updates["batch_stats"]
  assert np.isfinite(y).all()
  np.testing.assert_array_equal(y[domains == 0], 0.0)  # centred on itself
  np.testing.assert_allclose(stats["mean"][0], 0.1 * x[domains == 0][0], rtol=1e-6)
  np.testing.assert_allclose(stats["cov"][0], 0.9 * variables["batch_stats"]["cov"][0])
  np.testing.assert_array_equal(stats["mean"][2], variables["batch_stats"]["mean"][2])
  np.testing.assert_array_equal(stats["cov"][2], variables["batch_stats"]["cov"][2])
  grads = jax.jit(jax.grad(
      lambda p: jnp.sum(_train(model, {**variables, "params": p}, x, domains)[0] ** 3)))(
          variables["params"])
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_fewer_rows_than_group_is_finite_and_exact():
  x, domains = _domain_batch(10, (8,), (1.0,), (1.0,))
  eps = 1e-3
  model = DomainWhitening(num_domains=1, group=GROUP, eps=eps)
  variables = _init(model, x, domains)
  y, _ = _train(model, variables, x, domains)
  mean, cov = _ref_moments(x, domains, 1, GROUP)
  ref = _ref_whiten(x, domains, mean, cov, eps, 1.0, 0.0, GROUP)
  assert np.isfinite(y).all()
  np.testing.assert_allclose(y, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


@pytest.mark.parametrize("x_shape, dom, msg", [
    ((10, 48), np.zeros(10, np.int32), "divisible"),
    ((10,), np.zeros(10, np.int32), r"\[b, d\]"),
    ((2, 5, 64), np.zeros(2, np.int32), r"\[b, d\]"),
    ((10, 64), np.zeros(9, np.int32), "shape"),
    ((10, 64), np.zeros(10, np.float32), "integers"),
    ((10, 64), np.full(10, 2, np.int32), r"\[0, 2\)"),
])
def test_bad_inputs_raise(x_shape, dom, msg):
  model = DomainWhitening(num_domains=2, group=GROUP)
  with pytest.raises(ValueError, match=msg):
    model.init(jax.random.key(0), np.zeros(x_shape, np.float32), dom, train=False)


def test_jit_and_grad_are_finite():
  x, domains = _domain_batch(11, (40, 60), (1.0, -2.0), (1.0, 4.0))
  model = DomainWhitening(num_domains=2, group=GROUP)
  variables = _init(model, x, domains)
  target = np.random.default_rng(12).standard_normal(x.shape).astype(np.float32)

  @jax.jit
  def step(params, stats, x, domains):
    def loss(params, x):
      y, updates = _train(model, {"params": params, "batch_stats": stats}, x, domains)
      return jnp.mean((y - target) ** 2), updates
    (value, updates), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    return value, grads, updates

  value, (g_params, g_x), updates = step(variables["params"], variables["batch_stats"], x, domains)
  assert np.isfinite(value)
  assert all(np.isfinite(g).all() and np.abs(g).max() > 0 for g in jax.tree.leaves(g_params))
  assert np.isfinite(g_x).all() and np.abs(g_x).max() > 0
  _, plain = _train(model, variables, x, domains)  # the same update outside grad
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), updates, plain)
  evaluate = jax.jit(functools.partial(model.apply, train=False))
  assert np.isfinite(evaluate({**variables, **updates}, x, domains)).all()


def test_the_plain_xla_cholesky_and_inverse_equal_lapack():
  """`cholesky_lower` / `lower_inverse` (no LAPACK custom calls) against numpy's."""
  rng = np.random.default_rng(7)
  a = rng.normal(size=(3, 2, 32, 40))
  spd = (a @ np.swapaxes(a, -1, -2) / 40 + 1e-3 * np.eye(32))
  low = np.asarray(jax.jit(whitening.cholesky_lower)(spd.astype(np.float32)), np.float64)
  np.testing.assert_allclose(low, np.linalg.cholesky(spd), rtol=1e-4, atol=1e-5)
  inv = np.asarray(whitening.lower_inverse(low.astype(np.float32)), np.float64)
  np.testing.assert_allclose(inv @ low, np.broadcast_to(np.eye(32), low.shape), atol=1e-4)
  assert np.allclose(np.triu(inv, 1), 0) and np.allclose(np.triu(low, 1), 0)
  g = jax.grad(lambda x: jnp.sum(whitening.whitening_matrices(x, 1e-3)))(spd.astype(np.float32))
  assert np.isfinite(np.asarray(g)).all()
