"""Tests of the cross-modal loss terms (rsh.losses.pairwise, .hashing, .contrastive,
.adversarial) against float64 numpy loops written from the formulas."""

import importlib
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh import losses

RTOL = 1e-5


# The tests call jitted functions (options static where they steer Python
# code): eager dispatch compiles every primitive per shape, ~6x slower here.
def _jit(fn, *static, grad=None):
  if grad is not None:
    fn = jax.value_and_grad(fn, argnums=grad)
  return jax.jit(fn, static_argnames=static)


label_similarity = _jit(losses.label_similarity, "measure")
pairwise = _jit(losses.pairwise_similarity_loss, "measure", "alpha")
quantisation = _jit(losses.quantisation_loss)
bit_balance = _jit(losses.bit_balance_loss)
nt_xent = _jit(losses.nt_xent_loss)
infonce = _jit(losses.infonce_loss)
angular = _jit(losses.angular_loss)
intra_topk = _jit(losses.intra_topk_loss, "k")
gradient_penalty = _jit(losses.gradient_penalty_loss)


# ----------------------------------------------------------------------------
# Slow, obvious references (float64, loops, the formulas as written).


def _dot(u, v):
  return sum(float(x) * float(y) for x, y in zip(u, v))


def _cos(u, v, eps=1e-8):
  nu, nv = max(math.sqrt(_dot(u, u)), eps), max(math.sqrt(_dot(v, v)), eps)
  return _dot(u, v) / (nu * nv)


def _softplus(t):
  return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


def label_similarity_ref(ya, yb, measure="any"):
  out = np.zeros((len(ya), len(yb)))
  for i in range(len(ya)):
    for j in range(len(yb)):
      sa = {c for c in range(ya.shape[1]) if ya[i, c]}
      sb = {c for c in range(yb.shape[1]) if yb[j, c]}
      if measure == "any":
        out[i, j] = 1.0 if sa & sb else 0.0
      else:
        out[i, j] = len(sa & sb) / len(sa | sb) if sa | sb else 0.0
  return out


def pairwise_ref(ha, hb, ya, yb, measure="any", alpha=None):
  l = ha.shape[1]
  alpha = 0.5 * 32 / l if alpha is None else alpha
  s = label_similarity_ref(ya, yb, measure)
  total = 0.0
  for i in range(len(ha)):
    for j in range(len(hb)):
      theta = alpha * _dot(ha[i], hb[j])
      total += _softplus(theta) - s[i, j] * theta
  return total / (len(ha) * len(hb))


def quantisation_ref(h):
  b, l = h.shape
  total = 0.0
  for i in range(b):
    for k in range(l):
      sign = 1.0 if h[i, k] >= 0 else -1.0
      total += (float(h[i, k]) - sign) ** 2
  return total / (b * l)


def bit_balance_ref(h):
  b, l = h.shape
  return sum((sum(float(h[i, k]) for i in range(b)) / b) ** 2 for k in range(l)) / l


def nt_xent_ref(a, b, temperature=0.5):
  z = list(a) + list(b)
  n = len(a)
  total = 0.0
  for i in range(2 * n):
    p = i + n if i < n else i - n
    denom = sum(math.exp(_cos(z[i], z[k]) / temperature) for k in range(2 * n) if k != i)
    total += -math.log(math.exp(_cos(z[i], z[p]) / temperature) / denom)
  return total / (2 * n)


def infonce_ref(a, b, temperature=0.1):
  n = len(a)
  logit = [[_cos(a[i], b[j]) / temperature for j in range(n)] for i in range(n)]
  rows = sum(-math.log(math.exp(logit[i][i]) / sum(math.exp(logit[i][j]) for j in range(n)))
             for i in range(n)) / n
  cols = sum(-math.log(math.exp(logit[j][j]) / sum(math.exp(logit[i][j]) for i in range(n)))
             for j in range(n)) / n
  return 0.5 * (rows + cols)


def angular_ref(a, b, eps=1e-6):
  total = 0.0
  for i in range(len(a)):
    c = min(max(_cos(a[i], b[i]), -1 + eps), 1 - eps)
    total += math.acos(c) / math.pi
  return total / len(a)


def intra_topk_ref(x, k=3):
  n = len(x)
  total = 0.0
  for i in range(n):
    others = sorted((_cos(x[i], x[j]) for j in range(n) if j != i), reverse=True)
    total += sum(others[:k])
  return 1.0 - total / (n * k)


def gradient_penalty_ref(g, target=1.0):
  return sum((float(v) - target) ** 2 for v in g) / len(g)


# ----------------------------------------------------------------------------
# Random inputs.


def _codes(rng, b, l):
  return np.tanh(2 * rng.normal(size=(b, l))).astype(np.float32)


def _features(rng, b, d):
  return rng.normal(size=(b, d)).astype(np.float32)


def _labels(rng, b, c, p=0.3):
  y = (rng.random((b, c)) < p).astype(np.uint8)
  y[0] = 0  # an image without labels: Jaccard's 0 / 0 case
  y[1] = 0
  return y


def _close(actual, expected, rtol=RTOL):
  np.testing.assert_allclose(float(actual), expected, rtol=rtol, atol=1e-6)


# ----------------------------------------------------------------------------
# Against the references.


@pytest.mark.parametrize("measure", ["any", "jaccard"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_label_similarity(measure, dtype):
  rng = np.random.default_rng(0)
  ya, yb = _labels(rng, 7, 5).astype(dtype), _labels(rng, 6, 5).astype(dtype)
  s = label_similarity(ya, yb, measure=measure)
  assert s.shape == (7, 6) and s.dtype == jnp.float32
  np.testing.assert_allclose(s, label_similarity_ref(ya, yb, measure), rtol=RTOL)


def test_label_similarity_by_hand():
  ya = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]], np.uint8)
  yb = np.array([[1, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]], np.uint8)
  np.testing.assert_array_equal(label_similarity(ya, yb, measure="any"),
                                [[1, 1, 0], [0, 0, 0], [0, 1, 0]])
  np.testing.assert_allclose(label_similarity(ya, yb, measure="jaccard"),
                             [[1 / 2, 1 / 4, 0], [0, 0, 0], [0, 1 / 3, 0]], rtol=1e-6)
  # A set with itself: 1 under both measures, unless it is empty (Jaccard 0).
  np.testing.assert_array_equal(np.diag(label_similarity(ya, ya, measure="jaccard")),
                                [1, 0, 1])


def test_label_similarity_unknown_measure():
  y = np.ones((2, 3), np.uint8)
  with pytest.raises(ValueError, match=r"label_similarity.*'cosine'.*'any'.*'jaccard'"):
    label_similarity(y, y, measure="cosine")


@pytest.mark.parametrize("measure", ["any", "jaccard"])
@pytest.mark.parametrize("alpha", [None, 0.3])
@pytest.mark.parametrize("b, b2, l", [(6, 6, 16), (5, 7, 64)])
def test_pairwise_similarity_loss(measure, alpha, b, b2, l):
  rng = np.random.default_rng(b + b2 + l)
  ha, hb = _codes(rng, b, l), _codes(rng, b2, l)
  ya, yb = _labels(rng, b, 6), _labels(rng, b2, 6)
  _close(pairwise(ha, hb, ya, yb, measure=measure, alpha=alpha),
         pairwise_ref(ha, hb, ya, yb, measure, alpha))


def test_pairwise_intra_modal_and_default_alpha():
  rng = np.random.default_rng(1)
  h, y = _codes(rng, 6, 64), _labels(rng, 6, 4)
  _close(pairwise(h, h, y, y), pairwise_ref(h, h, y, y))
  # alpha=None is 0.5 at 32 bits, 0.25 at 64.
  _close(pairwise(h, h, y, y), pairwise_ref(h, h, y, y, alpha=0.25))


def test_pairwise_lower_when_codes_agree_with_similarity():
  # Two classes; items 0-3 of class 0, 4-7 of class 1; S = 1 within a class.
  y = np.repeat(np.eye(2, dtype=np.uint8), 4, axis=0)
  agree = np.where(y[:, :1] == 1, 1.0, -1.0) * np.ones((1, 32), np.float32)
  contradict = agree.copy()
  contradict[::2] *= -1  # half of each class flipped: similar pairs far, dissimilar near
  lo = pairwise(agree, agree, y, y)
  hi = pairwise(contradict, contradict, y, y)
  assert lo < hi
  # Agreeing +-1 codes at 32 bits: theta = +-16, loss = softplus(-16) ~ 1e-7.
  assert lo < 1e-6


def test_pairwise_extreme_theta_finite():
  y = np.array([[1, 0], [0, 1], [1, 1]], np.uint8)
  h = np.array([[1.0], [-1.0], [1.0]], np.float32)
  for alpha in (1e3, -1e3):
    value, grads = _jit(losses.pairwise_similarity_loss, "measure", "alpha", grad=(0, 1))(
        h, h, y, y, alpha=alpha, measure="jaccard")
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)
    _close(value, pairwise_ref(h, h, y, y, "jaccard", alpha))


@pytest.mark.parametrize("b, l", [(1, 1), (5, 16), (8, 64)])
def test_quantisation_loss(b, l):
  h = _codes(np.random.default_rng(b * l), b, l)
  _close(quantisation(h), quantisation_ref(h))


def test_quantisation_of_signs_is_zero_and_sign_is_constant():
  h = np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32)
  assert float(quantisation(h)) == 0.0
  # sign(0) = +1: (0 - 1)^2 = 1.
  assert float(quantisation(np.zeros((1, 2), np.float32))) == 1.0
  # The target is constant: d/dh (h - sign h)^2 / n = 2 (h - sign h) / n, and
  # at h = 0 the target is +1 (a gradient step moves 0 towards +1).
  h = np.array([[0.5, -0.25, 0.0, 0.0]], np.float32)
  _, grad = _jit(losses.quantisation_loss, grad=0)(h)
  np.testing.assert_allclose(grad, [[-0.25, 0.375, -0.5, -0.5]], rtol=1e-6)


@pytest.mark.parametrize("b, l", [(1, 3), (6, 16), (9, 32)])
def test_bit_balance_loss(b, l):
  h = _codes(np.random.default_rng(b + l), b, l)
  _close(bit_balance(h), bit_balance_ref(h))


def test_bit_balance_of_balanced_codes_is_zero():
  h = np.array([[1, -1, 1], [-1, 1, 1], [1, 1, -1], [-1, -1, -1]], np.float32)
  assert float(bit_balance(h)) == 0.0
  assert float(bit_balance(np.ones((4, 3), np.float32))) == 1.0


@pytest.mark.parametrize("temperature", [0.5, 0.2])
@pytest.mark.parametrize("b, d", [(1, 4), (5, 16), (8, 8)])
def test_nt_xent_loss(temperature, b, d):
  rng = np.random.default_rng(b * d)
  a, c = _features(rng, b, d), _features(rng, b, d)
  _close(nt_xent(a, c, temperature=temperature), nt_xent_ref(a, c, temperature))


def test_nt_xent_lower_for_aligned_pairs():
  rng = np.random.default_rng(2)
  a = _features(rng, 8, 16)
  near = a + 0.1 * _features(rng, 8, 16)
  aligned = nt_xent(a, near)
  shuffled = nt_xent(a, near[np.roll(np.arange(8), 1)])
  assert aligned < shuffled


@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("b, d", [(1, 4), (6, 16)])
def test_infonce_loss(temperature, b, d):
  rng = np.random.default_rng(b + d)
  a, c = _features(rng, b, d), _features(rng, b, d)
  _close(infonce(a, c, temperature=temperature), infonce_ref(a, c, temperature))


def test_infonce_is_symmetric_in_rows_and_columns():
  rng = np.random.default_rng(3)
  a, c = _features(rng, 6, 8), _features(rng, 6, 8)
  _close(infonce(a, c), float(infonce(c, a)))
  near = a + 0.1 * _features(rng, 6, 8)
  assert infonce(a, near) < infonce(a, near[::-1])


@pytest.mark.parametrize("b, d", [(1, 3), (7, 16)])
def test_angular_loss(b, d):
  rng = np.random.default_rng(b * d + 1)
  a, c = _features(rng, b, d), _features(rng, b, d)
  _close(angular(a, c), angular_ref(a, c))


def test_angular_of_identical_and_opposite_pairs():
  a = _features(np.random.default_rng(4), 5, 8)
  same = float(angular(a, 3.0 * a))
  assert 0.0 <= same < 1e-3
  assert float(angular(a, -a)) > 1 - 1e-3
  _close(angular(a, -a), angular_ref(a, -a), rtol=1e-3)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("b, d", [(6, 8), (9, 16)])
def test_intra_topk_loss(k, b, d):
  x = _features(np.random.default_rng(b * d + k), b, d)
  _close(intra_topk(x, k=k), intra_topk_ref(x, k))


def test_intra_topk_neighbours_are_constant():
  # The gradient is that of 1 - mean(C[i, nbr(i)]) with nbr fixed: moving one
  # item towards a non-neighbour must not change the choice, only C's values.
  x = _features(np.random.default_rng(5), 6, 4)
  _, grad = _jit(losses.intra_topk_loss, "k", grad=0)(x, k=2)
  c = np.array([[_cos(u, v) for v in x] for u in x])
  np.fill_diagonal(c, -np.inf)
  nbr = np.argsort(-c, axis=1)[:, :2]
  def fixed(y):
    u = y / jnp.linalg.norm(y, axis=1, keepdims=True)
    return 1.0 - jnp.mean(jnp.take_along_axis(u @ u.T, nbr, axis=1))
  np.testing.assert_allclose(grad, jax.jit(jax.grad(fixed))(x), rtol=1e-4, atol=1e-7)


def test_intra_topk_of_clusters_is_zero():
  # Two tight clusters of 3 identical items: each item's 2 neighbours are its copies.
  x = np.repeat(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), 3, axis=0)
  assert abs(float(intra_topk(x, k=2))) < 1e-6
  assert float(intra_topk(x, k=3)) > 0.3  # a third neighbour: cos 0


def test_gradient_penalty_loss():
  g = np.random.default_rng(6).random(7).astype(np.float32) * 3
  _close(gradient_penalty(g), gradient_penalty_ref(g))
  _close(gradient_penalty(g, target=2.0), gradient_penalty_ref(g, 2.0))
  assert float(gradient_penalty(np.ones(4, np.float32))) == 0.0


# ----------------------------------------------------------------------------
# Gradients, jit, shape errors.


def _all_losses(rng, b=6, l=16, d=8):
  ha, hb = jnp.asarray(_codes(rng, b, l)), jnp.asarray(_codes(rng, b, l))
  fa, fb = jnp.asarray(_features(rng, b, d)), jnp.asarray(_features(rng, b, d))
  y = _labels(rng, b, 4)
  g = jnp.asarray(rng.random(b).astype(np.float32))
  return {
      "pairwise": (losses.pairwise_similarity_loss, (ha, hb, y, y)),
      "quantisation": (losses.quantisation_loss, (ha,)),
      "bit_balance": (losses.bit_balance_loss, (ha,)),
      "nt_xent": (losses.nt_xent_loss, (fa, fb)),
      "infonce": (losses.infonce_loss, (fa, fb)),
      "angular": (losses.angular_loss, (fa, fb)),
      "intra_topk": (losses.intra_topk_loss, (fa,)),
      "gradient_penalty": (losses.gradient_penalty_loss, (g,)),
  }


@pytest.mark.parametrize("name", sorted(_all_losses(np.random.default_rng(0))))
def test_jittable_and_differentiable(name):
  # (Every reference test above runs the functions under jax.jit.)
  fn, args = _all_losses(np.random.default_rng(7))[name]
  value, grad = jax.jit(jax.value_and_grad(fn))(*args)
  assert value.shape == () and value.dtype == jnp.float32 and np.isfinite(value)
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)


@pytest.mark.parametrize("fn", [losses.nt_xent_loss, losses.infonce_loss, losses.angular_loss])
def test_cosine_losses_finite_for_zero_vectors(fn):
  a = np.zeros((4, 8), np.float32)
  c = _features(np.random.default_rng(8), 4, 8)
  c[1] = 0
  value_and_grad = _jit(fn, grad=(0, 1))
  for x, y in ((a, c), (c, a), (a, a)):
    value, grads = value_and_grad(x, y)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_intra_topk_finite_for_zero_vectors():
  x = _features(np.random.default_rng(9), 5, 8)
  x[2] = 0
  value_and_grad = _jit(losses.intra_topk_loss, "k", grad=0)
  for y in (x, np.zeros_like(x)):
    value, grad = value_and_grad(y, k=2)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_angular_finite_gradient_at_identical_and_opposite_pairs():
  # Axis vectors: cos is exactly +-1, where arccos' is infinite without the clip.
  axes = np.array([[1, 0, 0], [0, 2, 0], [0, 0, -3]], np.float32)
  rand = _features(np.random.default_rng(10), 3, 3)
  value_and_grad = _jit(losses.angular_loss, grad=(0, 1))
  for a, b in ((axes, axes), (axes, -axes), (rand, rand)):
    value, grads = value_and_grad(a, b)
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)


H = np.zeros((4, 8), np.float32)
Y = np.zeros((4, 3), np.uint8)


@pytest.mark.parametrize("call, match", [
    (lambda: losses.label_similarity(Y[0], Y),
     r"label_similarity: labels_a must be rank 2.*\(3,\)"),
    (lambda: losses.label_similarity(Y, Y[:, :2]),
     r"label_similarity:.*number of classes.*\(4, 3\).*\(4, 2\)"),
    (lambda: losses.pairwise_similarity_loss(H, H[:, :4], Y, Y),
     r"pairwise_similarity_loss:.*code length.*\(4, 8\).*\(4, 4\)"),
    (lambda: losses.pairwise_similarity_loss(H, H, Y[:3], Y),
     r"pairwise_similarity_loss:.*batch.*codes_a \(4, 8\).*labels_a \(3, 3\)"),
    (lambda: losses.pairwise_similarity_loss(H, H[:2], Y, Y),
     r"pairwise_similarity_loss:.*batch.*codes_b \(2, 8\).*labels_b \(4, 3\)"),
    (lambda: losses.pairwise_similarity_loss(H[0], H, Y, Y), r"pairwise_similarity_loss: codes_a"),
    (lambda: losses.quantisation_loss(H[0]), r"quantisation_loss: codes must be rank 2.*\(8,\)"),
    (lambda: losses.bit_balance_loss(H[None]), r"bit_balance_loss: codes must be rank 2"),
    (lambda: losses.nt_xent_loss(H, H[:3]), r"nt_xent_loss:.*batch.*\(4, 8\).*\(3, 8\)"),
    (lambda: losses.nt_xent_loss(H, H[:, :3]), r"nt_xent_loss:.*dimension"),
    (lambda: losses.infonce_loss(H, H[:3]), r"infonce_loss:.*batch"),
    (lambda: losses.infonce_loss(H[0], H[0]), r"infonce_loss: a must be rank 2"),
    (lambda: losses.angular_loss(H, H[:, :3]), r"angular_loss:.*dimension.*\(4, 3\)"),
    (lambda: losses.intra_topk_loss(H[0]), r"intra_topk_loss: x must be rank 2"),
    (lambda: losses.intra_topk_loss(H, k=4), r"intra_topk_loss: k must.*k=4.*\(4, 8\)"),
    (lambda: losses.intra_topk_loss(H, k=0), r"intra_topk_loss: k must"),
    (lambda: losses.gradient_penalty_loss(H), r"gradient_penalty_loss: grad_norms must be rank 1"),
])
def test_shape_errors(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# ----------------------------------------------------------------------------
# Registered terms: bind + total_loss.


def test_registered_terms_and_default_keys():
  # Generic terms read generic keys, or none: the config names the codes and
  # features of each modality (configs/crossmodal.py, sscm.py, duch.py).
  expected = {
      "pairwise": (losses.pairwise_similarity_loss,
                   {"codes_a": None, "codes_b": None, "labels_a": "labels", "labels_b": "labels"}),
      "quantisation": (losses.quantisation_loss, {"codes": "hash"}),
      "bit_balance": (losses.bit_balance_loss, {"codes": "hash"}),
      "nt_xent": (losses.nt_xent_loss, {"a": None, "b": None}),
      "infonce": (losses.infonce_loss, {"a": None, "b": None}),
      "angular": (losses.angular_loss, {"a": None, "b": None}),
      "intra_topk": (losses.intra_topk_loss, {"x": None}),
      "gradient_penalty": (losses.gradient_penalty_loss, {"grad_norms": "grad_norms"}),
  }
  for name, (fn, inputs) in expected.items():
    assert losses.LOSSES[name].fn is fn
    assert dict(losses.LOSSES[name].inputs) == inputs


@pytest.mark.parametrize("name, entry, missing", [
    ("pairwise", dict(codes_a="s1_hash"), "codes_b"),
    ("pairwise", {}, "codes_a, codes_b"),
    ("nt_xent", dict(b="s2_hash"), "a"),
    ("infonce", {}, "a, b"),
    ("angular", dict(a="s1_hash"), "b"),
    ("intra_topk", dict(k=2), "x"),
])
def test_bind_requires_the_keys_a_term_has_no_default_for(name, entry, missing):
  with pytest.raises(ValueError, match=rf"config.losses.{name}: .*no default key for {missing};"):
    losses.bind({name: dict(weight=1.0, **entry)}, nets=("encoders",))


def test_generic_code_terms_read_hash_by_default():
  h = jnp.asarray(_codes(np.random.default_rng(12), 6, 16))
  bound = losses.bind(dict(quantisation=dict(weight=1.0), bit_balance=dict(weight=1.0)),
                      nets=("encoder",))
  _, values = losses.total_loss(bound["encoder"], {"hash": h})
  _close(values["quantisation"], quantisation_ref(np.asarray(h)))
  _close(values["bit_balance"], bit_balance_ref(np.asarray(h)))


def test_old_module_warns_and_reexports():
  sys.modules.pop("rsh.losses_crossmodal", None)
  with pytest.warns(DeprecationWarning, match=r"rsh.losses_crossmodal is deprecated.*rsh.losses"):
    old = importlib.import_module("rsh.losses_crossmodal")
  for name in ("label_similarity", "pairwise_similarity_loss", "quantisation_loss",
               "bit_balance_loss", "nt_xent_loss", "infonce_loss", "angular_loss",
               "intra_topk_loss", "gradient_penalty_loss"):
    assert getattr(old, name) is getattr(losses, name), name


@pytest.fixture
def step_values():
  rng = np.random.default_rng(11)
  return {"s1_hash": jnp.asarray(_codes(rng, 6, 16)), "s2_hash": jnp.asarray(_codes(rng, 6, 16)),
          "s1_feature": jnp.asarray(_features(rng, 6, 8)),
          "s2_feature": jnp.asarray(_features(rng, 6, 8)),
          "labels": jnp.asarray(_labels(rng, 6, 4)),
          "grad_norms": jnp.asarray(rng.random(6).astype(np.float32))}


def test_bind_pairwise_with_option(step_values):
  o = {k: np.asarray(v) for k, v in step_values.items()}
  bound = losses.bind(dict(pairwise=dict(weight=1.0, on="encoders", measure="jaccard",
                                    codes_a="s1_hash", codes_b="s2_hash")), nets=("encoders",))
  (term,) = bound["encoders"]
  assert term.options == {"measure": "jaccard"}
  total, values = jax.jit(lambda v: losses.total_loss(bound["encoders"], v))(step_values)
  expected = pairwise_ref(o["s1_hash"], o["s2_hash"], o["labels"], o["labels"], "jaccard")
  _close(values["pairwise"], expected)
  _close(total, expected)


def test_bind_all_terms_with_options_and_rebound_keys(step_values):
  o = {k: np.asarray(v) for k, v in step_values.items()}
  config = {
      "pairwise": dict(weight=1.0, on="encoders", alpha=0.2, codes_a="s1_hash",
                       codes_b="s2_hash"),
      "pairwise_s2": dict(type="pairwise", weight=0.5, on="encoders",
                          codes_a="s2_hash", codes_b="s2_hash", measure="jaccard"),
      "quantisation": dict(weight=0.001, on="encoders", codes="s2_hash"),
      "bit_balance": dict(weight=0.01, on="encoders", codes="s1_hash"),
      "nt_xent": dict(weight=1.0, on="encoders", temperature=0.3, a="s1_hash", b="s2_hash"),
      "infonce": dict(weight=1.0, on="encoders", temperature=0.2, a="s1_feature",
                      b="s2_feature"),
      "angular": dict(weight=1.0, on="encoders", eps=1e-5, a="s1_feature", b="s2_feature"),
      "intra_topk": dict(weight=0.5, on="encoders", k=5, x="s2_feature"),
      "gradient_penalty": dict(weight=10.0, on="critic", target=0.5),
  }
  bound = losses.bind(config, nets=("encoders", "critic"))
  floats = {k: v for k, v in step_values.items() if k != "labels"}
  objective = lambda v: losses.total_loss(bound["encoders"], {**v, "labels": o["labels"]})
  (total, values), grad = jax.jit(jax.value_and_grad(objective, has_aux=True))(floats)
  _, critic = jax.jit(lambda v: losses.total_loss(bound["critic"], v))(step_values)
  values = {**values, **critic}
  expected = {
      "pairwise": pairwise_ref(o["s1_hash"], o["s2_hash"], o["labels"], o["labels"], alpha=0.2),
      "pairwise_s2": pairwise_ref(o["s2_hash"], o["s2_hash"], o["labels"], o["labels"],
                                  "jaccard"),
      "quantisation": quantisation_ref(o["s2_hash"]),
      "bit_balance": bit_balance_ref(o["s1_hash"]),
      "nt_xent": nt_xent_ref(o["s1_hash"], o["s2_hash"], 0.3),
      "infonce": infonce_ref(o["s1_feature"], o["s2_feature"], 0.2),
      "angular": angular_ref(o["s1_feature"], o["s2_feature"], 1e-5),
      "intra_topk": intra_topk_ref(o["s2_feature"], 5),
      "gradient_penalty": gradient_penalty_ref(o["grad_norms"], 0.5),
  }
  assert set(values) == set(expected)
  for name, value in expected.items():
    _close(values[name], value)
  _close(total, sum(config[n]["weight"] * expected[n] for n in expected
                    if n != "gradient_penalty"))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))
  assert np.any(grad["s2_hash"] != 0) and np.any(grad["s2_feature"] != 0)


def test_bind_rejects_unknown_option():
  with pytest.raises(ValueError, match=r"config.losses.intra_topk.kk.*x.*k"):
    losses.bind(dict(intra_topk=dict(weight=1.0, kk=5)), nets=("encoders",))
