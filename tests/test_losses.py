"""Tests of UAHM's loss terms (rsh.losses.adversarial, .hashing, .pairwise) against
float64 numpy loops written from eq. 5.3-5.8, and of the binding (rsh.losses)."""

import functools
import math

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh import losses


# ----------------------------------------------------------------------------
# Slow, obvious references (float64, loops, the equations as written).


def log_sigmoid_ref(a):
  # Stable in float64 too: log(1 / (1 + e^-a)).
  return -math.log1p(math.exp(-a)) if a >= 0 else a - math.log1p(math.exp(a))


def generator_ref(fake):
  return -sum(log_sigmoid_ref(float(a)) for a in fake) / len(fake)


def discriminator_ref(real, fake, real_target=1.0):
  real_term = sum(-(real_target * log_sigmoid_ref(float(a))
                    + (1 - real_target) * log_sigmoid_ref(-float(a))) for a in real) / len(real)
  fake_term = sum(-log_sigmoid_ref(-float(a)) for a in fake) / len(fake)  # log(1 - sigmoid)
  return real_term + fake_term


def binary_ref(h):
  b, l = h.shape
  return -sum(sum(float(h[i, k]) ** 2 for k in range(l)) for i in range(b)) / b


def semantic_ref(h, s, include_diagonal=True):
  b, l = h.shape
  total, n = 0.0, 0
  for i in range(b):
    for j in range(b):
      if i == j and not include_diagonal:
        continue
      inner = sum(float(h[i, k]) * float(h[j, k]) for k in range(l))
      total += (inner / l - float(s[i, j])) ** 2
      n += 1
  return total / n


def _codes(rng, b, l):
  return np.tanh(2 * rng.normal(size=(b, l))).astype(np.float32)


def _similarity(rng, b):
  s = np.where(rng.random((b, b)) < 0.3, 1, -1).astype(np.int8)
  np.fill_diagonal(s, 1)
  return s


# ----------------------------------------------------------------------------
# Array functions.


def test_generator_adversarial_loss():
  fake = np.random.default_rng(0).normal(size=7).astype(np.float32) * 3
  np.testing.assert_allclose(losses.generator_adversarial_loss(fake), generator_ref(fake),
                             rtol=1e-6)
  # D(G(z)) = 1/2 everywhere: log 2.
  np.testing.assert_allclose(losses.generator_adversarial_loss(jnp.zeros(4)), math.log(2),
                             rtol=1e-6)


@pytest.mark.parametrize("real_target", [1.0, 0.9])
def test_discriminator_adversarial_loss(real_target):
  rng = np.random.default_rng(1)
  real = (rng.normal(size=6) * 3).astype(np.float32)
  fake = (rng.normal(size=5) * 3).astype(np.float32)  # batches may differ in size
  np.testing.assert_allclose(
      losses.discriminator_adversarial_loss(real, fake, real_target=real_target),
      discriminator_ref(real, fake, real_target), rtol=1e-6)


def test_adversarial_extreme_logits_finite():
  big = jnp.array([100.0, -100.0, 1e4, -1e4, 0.0])
  for fn in (losses.generator_adversarial_loss,
             lambda a: losses.discriminator_adversarial_loss(a, a),
             lambda a: losses.discriminator_adversarial_loss(a, -a, real_target=0.9)):
    value, grad = jax.value_and_grad(fn)(big)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
  # The values at +-100 are what the stable formula gives, not log(0).
  np.testing.assert_allclose(losses.generator_adversarial_loss(jnp.array([-100.0])), 100.0)
  np.testing.assert_allclose(
      losses.discriminator_adversarial_loss(jnp.array([-100.0]), jnp.array([100.0])), 200.0)
  np.testing.assert_allclose(
      losses.discriminator_adversarial_loss(jnp.array([100.0]), jnp.array([-100.0])), 0.0,
      atol=1e-30)
  # A saturated generator still gets a gradient (the non-saturating loss).
  g = jax.grad(losses.generator_adversarial_loss)(jnp.array([-100.0]))
  np.testing.assert_allclose(g, [-1.0])


@pytest.mark.parametrize("b, l", [(1, 8), (5, 32), (4, 64)])
def test_binary_loss(b, l):
  h = _codes(np.random.default_rng(b * l), b, l)
  np.testing.assert_allclose(losses.binary_loss(h), binary_ref(h), rtol=1e-5)


def test_binary_loss_normalisation():
  # Sum over bits, mean over the batch: +-1 codes of length l give -l.
  assert float(losses.binary_loss(jnp.ones((3, 64)))) == -64.0
  assert float(losses.binary_loss(-jnp.ones((5, 32)))) == -32.0
  assert float(losses.binary_loss(jnp.zeros((2, 16)))) == 0.0


@pytest.mark.parametrize("include_diagonal", [True, False])
@pytest.mark.parametrize("b, l", [(2, 8), (6, 32), (9, 16)])
def test_semantic_loss(b, l, include_diagonal):
  rng = np.random.default_rng(b + l)
  h, s = _codes(rng, b, l), _similarity(rng, b)
  s[0, 1], s[1, 0] = 1, -1  # not symmetric: rows are anchors
  got = losses.semantic_loss(h, s, include_diagonal=include_diagonal)
  np.testing.assert_allclose(got, semantic_ref(h, s, include_diagonal), rtol=1e-5)
  # Any ±1 dtype.
  np.testing.assert_allclose(
      losses.semantic_loss(h, s.astype(np.float32), include_diagonal=include_diagonal), got,
      rtol=1e-6)


def test_semantic_loss_normalisation():
  # Binary codes agreeing with S give 0; codes of length l with inner product
  # l/2 against S = -1 give (1/2 + 1)^2 on those pairs.
  h = jnp.array([[1, 1, 1, 1], [1, 1, -1, -1], [-1, -1, -1, -1.0]])
  s = jnp.array([[1, -1, -1], [-1, 1, -1], [-1, -1, 1]], jnp.int8)
  # pairs: (0,1): 0 - (-1) = 1; (0,2): -1 - (-1) = 0; (1,2): 0 + 1 = 1; diagonal 0.
  np.testing.assert_allclose(losses.semantic_loss(h, s), 4 / 9, rtol=1e-6)
  np.testing.assert_allclose(losses.semantic_loss(h, s, include_diagonal=False), 4 / 6,
                             rtol=1e-6)
  # S = -1 on the diagonal is not special-cased: (1 - (-1))^2 = 4 there.
  np.testing.assert_allclose(losses.semantic_loss(h[:1], -jnp.ones((1, 1))), 4.0)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    h=hnp.arrays(np.float32, (4, 8), elements=st.floats(-1, 1, width=32)),
    s=hnp.arrays(np.int8, (4, 4), elements=st.sampled_from([-1, 1])))
def test_semantic_and_binary_match_reference_property(h, s):
  np.testing.assert_allclose(_jit_semantic(h, s), semantic_ref(h, s), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(_jit_binary(h), binary_ref(h), rtol=1e-5, atol=1e-6)


_jit_semantic = jax.jit(losses.semantic_loss)
_jit_binary = jax.jit(losses.binary_loss)


def test_losses_are_jittable_and_differentiable():
  rng = np.random.default_rng(3)
  h, s = _codes(rng, 4, 16), _similarity(rng, 4)

  @jax.jit
  def both(h, s):
    return jax.grad(lambda h: losses.semantic_loss(h, s) + losses.binary_loss(h))(h)

  grad = both(h, s)
  assert grad.shape == h.shape and np.all(np.isfinite(grad))
  # d/dh of -mean_b ||h||^2 is -2h / b.
  np.testing.assert_allclose(jax.grad(losses.binary_loss)(h), -2 * h / 4, rtol=1e-6)


@pytest.mark.parametrize("h, s, match", [
    (np.zeros((4, 8)), np.ones((4, 3)), r"\[4, 4\]"),
    (np.zeros((8,)), np.ones((8, 8)), r"\[batch, code_length\]"),
])
def test_semantic_loss_bad_shapes(h, s, match):
  with pytest.raises(ValueError, match=match):
    losses.semantic_loss(jnp.asarray(h), jnp.asarray(s))


def test_binary_loss_bad_shape():
  with pytest.raises(ValueError, match=r"\[batch, code_length\]"):
    losses.binary_loss(jnp.zeros((2, 4, 8)))


# ----------------------------------------------------------------------------
# Terms: the registry, binding to inputs by config, and total_loss.

D_CONFIG = {"adversarial_d": dict(weight=1.0, on="discriminator"),
            "adversarial_g": dict(weight=1.0, on="generator"),
            "binary": dict(weight=0.1, on="discriminator", codes="real_hash"),
            "semantic": dict(weight=0.1, on="discriminator", codes="real_hash",
                             similarity="similarity")}
NETS = ("discriminator", "generator")


@pytest.fixture
def step_values():
  rng = np.random.default_rng(4)
  return {"real_logit": jnp.asarray(rng.normal(size=6), jnp.float32),
          "fake_logit": jnp.asarray(rng.normal(size=6), jnp.float32),
          "real_hash": jnp.asarray(_codes(rng, 6, 16)),
          "other_hash": jnp.asarray(_codes(rng, 6, 16)),
          "similarity": jnp.asarray(_similarity(rng, 6))}


def _bind(config, **kw):
  return losses.bind(config, nets=NETS, **kw)


def test_bound_terms_are_the_equations(step_values):
  o = {k: np.asarray(v) for k, v in step_values.items()}
  assert {"adversarial_d", "adversarial_g", "binary", "semantic"} <= set(losses.LOSSES)
  bound = _bind(D_CONFIG)
  assert [b.name for b in bound["discriminator"]] == ["adversarial_d", "binary", "semantic"]
  assert [b.name for b in bound["generator"]] == ["adversarial_g"]
  _, d = losses.total_loss(bound["discriminator"], step_values)
  _, g = losses.total_loss(bound["generator"], step_values)
  expected = {"adversarial_d": discriminator_ref(o["real_logit"], o["fake_logit"]),
              "adversarial_g": generator_ref(o["fake_logit"]),
              "binary": binary_ref(o["real_hash"]),
              "semantic": semantic_ref(o["real_hash"], o["similarity"])}
  for name, value in expected.items():
    np.testing.assert_allclose({**d, **g}[name], value, rtol=1e-5)


def test_binding_moves_a_term_to_other_inputs(step_values):
  # The same registered term read from another key: the value follows the key.
  bound = _bind({"semantic": dict(weight=1.0, codes="other_hash")})
  _, values = losses.total_loss(bound["discriminator"], step_values)
  np.testing.assert_allclose(values["semantic"], semantic_ref(
      np.asarray(step_values["other_hash"]), np.asarray(step_values["similarity"])), rtol=1e-5)
  # Two entries of one type, under their own names, and an option of the function.
  bound = _bind({"sem_a": dict(type="semantic", weight=1.0),
                 "sem_b": dict(type="semantic", weight=1.0, include_diagonal=False),
                 "smooth": dict(type="adversarial_d", weight=1.0, real_target=0.9)})
  _, values = losses.total_loss(bound["discriminator"], step_values)
  assert values["sem_a"] != values["sem_b"]
  np.testing.assert_allclose(values["sem_b"], losses.semantic_loss(
      step_values["real_hash"], step_values["similarity"], include_diagonal=False))
  np.testing.assert_allclose(values["smooth"], discriminator_ref(
      np.asarray(step_values["real_logit"]), np.asarray(step_values["fake_logit"]), 0.9),
      rtol=1e-5)


def test_total_loss_is_eq_5_8(step_values):
  total, values = losses.total_loss(_bind(D_CONFIG)["discriminator"], step_values)
  assert list(values) == ["adversarial_d", "binary", "semantic"]
  expected = (values["adversarial_d"] + 0.1 * values["binary"] + 0.1 * values["semantic"])
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  np.testing.assert_allclose(values["binary"], losses.binary_loss(step_values["real_hash"]))


def test_total_loss_zero_weight_still_reported(step_values):
  bound = _bind({"adversarial_d": dict(weight=1.0), "semantic": dict(weight=0)})
  total, values = losses.total_loss(bound["discriminator"], step_values)
  np.testing.assert_allclose(total, values["adversarial_d"])
  assert float(values["semantic"]) > 0
  # A zero-weighted term that is NaN does not poison the total or the gradients.
  nan_term = lambda real_logit: jnp.sum(real_logit) * jnp.nan
  bound = _bind({"adversarial_d": dict(weight=1.0), "nan": dict(weight=0.0)},
                terms={"nan": nan_term})["discriminator"]
  total, values = losses.total_loss(bound, step_values)
  assert np.isfinite(total) and np.isnan(values["nan"])
  floats = {k: v for k, v in step_values.items() if k != "similarity"}
  grad = jax.grad(lambda o: losses.total_loss(
      bound, {**o, "similarity": step_values["similarity"]})[0])(floats)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))


def test_bind_errors_name_the_key():
  with pytest.raises(ValueError, match=r"'semantik'.*adversarial_d.*binary.*semantic"):
    _bind({"semantik": dict(weight=0.1)})
  with pytest.raises(ValueError, match=r"config.losses.semantic.on must be"):
    _bind({"semantic": dict(weight=0.1, on="both")})
  with pytest.raises(ValueError, match=r"config.losses.semantic.kodes.*codes.*similarity"):
    _bind({"semantic": dict(weight=0.1, kodes="real_hash")})
  with pytest.raises(ValueError, match=r"config.losses.binary needs a weight"):
    _bind({"binary": dict(on="discriminator")})
  with pytest.raises(ValueError, match=r"cannot import loss term 'no_such_module:f'"):
    _bind({"x": dict(type="no_such_module:f", weight=1.0)})


def test_total_loss_missing_input_names_it(step_values):
  bound = _bind({"semantic": dict(weight=0.1)})["discriminator"]
  with pytest.raises(losses.MissingInputError, match=r"semantic.*similarity='similarity'"):
    losses.total_loss(bound, {"real_hash": step_values["real_hash"]})
  with pytest.raises(losses.MissingInputError, match=r"fake_logit"):
    # DHNN-MS has no generator: a None entry counts as missing.
    losses.total_loss(_bind({"adversarial_d": dict(weight=1.0)})["discriminator"],
                      {**step_values, "fake_logit": None})


def test_notebook_terms_are_pure(step_values):
  def mine(codes):
    return jnp.mean(codes) ** 2
  bound = _bind({"mine": dict(weight=2.0, codes="real_hash"), "binary": dict(weight=1.0)},
                terms={"mine": mine})["discriminator"]
  total, values = losses.total_loss(bound, step_values)
  np.testing.assert_allclose(total, 2 * values["mine"] + values["binary"], rtol=1e-6)
  np.testing.assert_allclose(values["mine"], jnp.mean(step_values["real_hash"]) ** 2)
  assert "mine" not in losses.LOSSES
  with pytest.raises(TypeError):
    losses.LOSSES["mine"] = mine  # read-only: no global registration
  # A plain function's arguments read keys of their own names unless bound.
  bound = _bind({"m": dict(weight=1.0, type="mine")},
                terms={"mine": lambda other_hash: jnp.sum(other_hash)})["discriminator"]
  _, values = losses.total_loss(bound, step_values)
  np.testing.assert_allclose(values["m"], jnp.sum(step_values["other_hash"]))
  # A replacement for a built-in: one-sided label smoothing.
  smooth = losses.Term(functools.partial(losses.discriminator_adversarial_loss, real_target=0.9),
                       losses.LOSSES["adversarial_d"].inputs)
  _, values = losses.total_loss(
      _bind({"adversarial_d": dict(weight=1.0)}, terms={"adversarial_d": smooth})["discriminator"],
      step_values)
  np.testing.assert_allclose(
      values["adversarial_d"],
      losses.discriminator_adversarial_loss(step_values["real_logit"], step_values["fake_logit"],
                                            real_target=0.9), rtol=1e-6)


@pytest.mark.parametrize("path", ["rsh.losses:binary_loss", "rsh.losses.hashing:binary_loss"])
def test_a_term_named_by_import_path(step_values, path):
  bound = _bind({"b": dict(type=path, weight=1.0, codes="other_hash")})
  _, values = losses.total_loss(bound["discriminator"], step_values)
  np.testing.assert_allclose(values["b"], binary_ref(np.asarray(step_values["other_hash"])),
                             rtol=1e-5)


def test_total_loss_rejects_non_scalar_term(step_values):
  bound = _bind({"vec": dict(weight=1.0)}, terms={"vec": lambda real_logit: real_logit})
  with pytest.raises(ValueError, match="'vec'.*scalar"):
    losses.total_loss(bound["discriminator"], step_values)


def test_total_loss_jit_and_grad(step_values):
  bound = _bind(D_CONFIG)

  @jax.jit
  def f(inputs):
    return losses.total_loss(bound["discriminator"], inputs)

  total, _ = f(step_values)
  eager_total, _ = losses.total_loss(bound["discriminator"], step_values)
  np.testing.assert_allclose(total, eager_total, rtol=1e-6)
  floats = {k: v for k, v in step_values.items() if k != "similarity"}
  grads = jax.grad(lambda o: losses.total_loss(
      bound["discriminator"], {**o, "similarity": step_values["similarity"]})[0])(floats)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  # The generator's total: one term.
  g_total, g_values = losses.total_loss(bound["generator"], step_values)
  np.testing.assert_allclose(g_total, g_values["adversarial_g"])


def test_total_loss_empty_is_zero(step_values):
  total, values = losses.total_loss([], step_values)
  assert float(total) == 0.0 and values == {}
