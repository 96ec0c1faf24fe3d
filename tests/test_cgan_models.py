"""Tests of rsh.models.cgan against thesis Fig. 4.4 (C-DCGAN and ACGAN, EuroSAT RGB)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh.models import cgan
from rsh.models import dcgan

B, C, K = 2, 3, 10


def _abstract(*shape):
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def _onehot(labels, k=K):
  return jax.nn.one_hot(jnp.asarray(labels), k, dtype=jnp.float32)


def _images(b=B, seed=0):
  return jax.random.uniform(jax.random.PRNGKey(seed), (b, 64, 64, C), minval=-1, maxval=1)


@functools.cache
def _d_variables(conditioning, seed=1):
  """D's variables with the shapes of `init`, filled from numpy.

  A full-size `init` compiles one threefry sampler per parameter (seconds on
  CPU); these tests only need some weights. BatchNorm statistics are the fresh
  ones (mean 0, var 1), as after `init`.
  """
  d = cgan.ConditionalDiscriminator(C, K, conditioning)
  shapes = jax.eval_shape(lambda x, y: d.init(jax.random.PRNGKey(0), x, y, train=False),
                          _abstract(B, 64, 64, C), _abstract(B, K))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, jnp.float32)
    if name == "mean":
      return jnp.zeros(leaf.shape, jnp.float32)
    return jnp.asarray(rng.normal(0, 0.02 if name == "kernel" else 0.1, leaf.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def test_one_hot_tiled():
  x = jnp.zeros((2, 4, 5, 3))
  out = cgan.one_hot_tiled(x, _onehot([2, 7]))
  assert out.shape == (2, 4, 5, 13)
  np.testing.assert_array_equal(out[..., :3], 0)
  np.testing.assert_array_equal(out[0, :, :, 3:], np.broadcast_to(np.eye(K)[2], (4, 5, K)))
  np.testing.assert_array_equal(out[1, :, :, 3:], np.broadcast_to(np.eye(K)[7], (4, 5, K)))
  with pytest.raises(ValueError, match=r"\(3, 10\)"):
    cgan.one_hot_tiled(x, jnp.zeros((3, 10)))


def test_input_discriminator_sees_image_and_label():
  d = cgan.ConditionalDiscriminator(C, K, "input")
  counts = dcgan.param_counts(d, _abstract(B, 64, 64, C), _abstract(B, K), train=False)
  assert counts["conv1"] == 5 * 5 * (C + K) * 16 + 16  # 13 input channels
  assert counts["out"] == 1024 + 1
  assert "conv1_bn" not in counts  # no BatchNorm on D's input layer
  assert [n for n in counts if n.endswith("_bn")] == [
      "conv2_bn", "conv3_bn", "conv4_bn", "conv5_bn", "fc_bn"]
  assert counts["fc"] == 8 * 8 * 256 * 1024 + 1024
  out = jax.eval_shape(lambda x, y: d.init_with_output(jax.random.PRNGKey(0), x, y,
                                                       train=False)[0],
                       _abstract(B, 64, 64, C), _abstract(B, K))
  assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
      "logit": ((B,), jnp.float32), "feature": ((B, 1024), jnp.float32)}


def test_auxiliary_discriminator_sees_image_only_and_predicts_classes():
  d = cgan.ConditionalDiscriminator(C, K, "auxiliary")
  counts = dcgan.param_counts(d, _abstract(B, 64, 64, C), None, train=False)
  assert counts["conv1"] == 5 * 5 * C * 16 + 16
  assert counts["out"] == 1024 * (1 + K) + (1 + K)
  out = jax.eval_shape(lambda x: d.init_with_output(jax.random.PRNGKey(0), x, None,
                                                    train=False)[0],
                       _abstract(B, 64, 64, C))
  assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
      "logit": ((B,), jnp.float32), "class_logit": ((B, K), jnp.float32),
      "feature": ((B, 1024), jnp.float32)}
  # Column 0 of the one output layer is the source logit, the rest the classes.
  v = _d_variables("auxiliary")
  out = jax.jit(lambda x: d.apply(v, x, None, train=False))(_images())
  w, b = v["params"]["out"]["kernel"], v["params"]["out"]["bias"]
  full = out["feature"] @ w + b
  np.testing.assert_allclose(out["logit"], full[:, 0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["class_logit"], full[:, 1:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conditioning", cgan.CONDITIONINGS)
def test_discriminator_layer_shapes(conditioning):
  d = cgan.ConditionalDiscriminator(C, K, conditioning)
  shapes = dcgan.layer_shapes(d, _abstract(B, 64, 64, C), _abstract(B, K), train=False)
  sizes = (32, 32, 16, 16, 8)
  for i, ((features, _), size) in enumerate(zip(cgan.D_BODY, sizes), start=1):
    assert shapes[f"conv{i}"] == (B, size, size, features)
  assert [f for f, _ in cgan.D_BODY] == [16, 32, 64, 128, 256]
  assert shapes["fc"] == (B, 1024)
  assert shapes["out"] == (B, 1 if conditioning == "input" else 1 + K)


def test_generator_output_and_label_reaches_it():
  g = cgan.ConditionalGenerator(C, K)
  z = jax.random.uniform(jax.random.PRNGKey(1), (B, cgan.NOISE_DIM), minval=-1, maxval=1)
  v = jax.jit(lambda z, y: g.init(jax.random.PRNGKey(0), z, y, train=False))(z, _onehot([0, 0]))
  assert v["params"]["net"]["project"]["kernel"].shape == (cgan.NOISE_DIM + K, 4 * 4 * 512)
  run = jax.jit(lambda z, y: g.apply(v, z, y, train=False))
  a, b = run(z, _onehot([0, 0])), run(z, _onehot([3, 3]))
  assert a.shape == (B, 64, 64, C) and a.dtype == jnp.float32
  assert np.all(np.abs(a) < 1) and np.all(np.abs(b) < 1)
  assert float(jnp.abs(a - b).max()) > 1e-4
  # Same label, same z: same image (the difference is the label's, not noise).
  np.testing.assert_array_equal(a, run(z, _onehot([0, 0])))


def test_generator_bad_inputs():
  g = cgan.ConditionalGenerator(C, K)
  with pytest.raises(ValueError, match=r"\(2, 9\)"):
    jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), jnp.zeros((2, 100)),
                                  jnp.zeros((2, 9)), train=False))
  with pytest.raises(ValueError, match=r"\(2, 1, 100\)"):
    jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), jnp.zeros((2, 1, 100)),
                                  jnp.zeros((2, K)), train=False))
  with pytest.raises(ValueError, match="impl"):
    cgan.ConditionalGenerator(C, K, impl="fast")


def test_label_reaches_input_discriminator():
  d = cgan.ConditionalDiscriminator(C, K, "input")
  x = _images()
  v = _d_variables("input")
  run = jax.jit(lambda y: d.apply(v, x, y, train=False)["logit"])
  a, b = run(_onehot([0, 0])), run(_onehot([5, 5]))
  assert float(jnp.abs(a - b).min()) > 1e-6
  np.testing.assert_array_equal(a, run(_onehot([0, 0])))


def test_discriminator_bad_inputs():
  x = jnp.zeros((B, 64, 64, C))
  d = cgan.ConditionalDiscriminator(C, K, "input")
  with pytest.raises(ValueError, match="labels_onehot"):
    jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), x, None, train=False))
  with pytest.raises(ValueError, match=r"\(2, 4\)"):
    jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), x, jnp.zeros((B, 4)), train=False))
  with pytest.raises(ValueError, match=r"\(2, 64, 64, 13\)"):
    jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), jnp.zeros((B, 64, 64, 13)),
                                  jnp.zeros((B, K)), train=False))
  with pytest.raises(ValueError, match="conditioning"):
    cgan.ConditionalDiscriminator(C, K, "projection")
  with pytest.raises(ValueError, match="impl"):
    cgan.ConditionalDiscriminator(C, K, "auxiliary", impl="fast")


def test_discriminator_impls_agree(conditioning="input"):
  # Same forward pass; and the stride-2 5x5 convs' phase-form input gradients
  # match XLA's own. (The body is the same for "auxiliary"; only conv1's input
  # channels and the output layer differ.)
  v, x, y = _d_variables(conditioning), _images(4, seed=2), _onehot([1, 4, 7, 9])
  outs = []
  for impl in ("phase", "xla"):
    d = cgan.ConditionalDiscriminator(C, K, conditioning, impl=impl)

    def f(x, d=d):
      out = d.apply(v, x, y, train=False)
      return jnp.sum(out["logit"]) + jnp.sum(out["feature"] * jnp.linspace(-1, 1, 1024)), out

    outs.append(jax.jit(jax.value_and_grad(f, has_aux=True))(x))
  ((_, o1), g1), ((_, o2), g2) = outs
  for key in o1:
    np.testing.assert_allclose(o1[key], o2[key], atol=1e-5)
  scale = float(jnp.abs(g2).max())
  assert scale > 0
  assert float(jnp.abs(g1 - g2).max()) <= 1e-5 * scale
