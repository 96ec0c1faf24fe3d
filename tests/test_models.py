"""Tests of rsh.models.layers and rsh.models.dcgan against thesis Tables 5.4 / 5.5."""

import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh.models import dcgan
from rsh.models import layers


def _abstract(*shape):
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def _variables(module, x, seed=1):
  """Variables with the shapes of `module.init`, filled from numpy.

  Compiling a full-size `init` costs ~4 s on CPU (one threefry sampler per
  parameter); the tests of the forward pass do not need flax's RNG stream.
  `test_dcgan_init` checks the real initialiser once.
  """
  shapes = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x, train=False), x)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return jnp.asarray(rng.normal(0, 0.02, leaf.shape), jnp.float32)
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, jnp.float32)
    return jnp.asarray(rng.normal(0, 0.1, leaf.shape), jnp.float32)  # bias, offset, mean

  return jax.tree_util.tree_map_with_path(fill, shapes)


# ----------------------------------------------------------------------------
# ConvTranspose2x == nn.ConvTranspose(features, k, strides=2, padding="SAME").


def test_conv_transpose2x_params_are_flax_conv_transpose():
  # Same names, shapes, dtypes and initial values as nn.ConvTranspose.
  x = jnp.ones((2, 3, 3, 5))
  ref = nn.ConvTranspose(7, (5, 5), strides=(2, 2), padding="SAME")
  init = lambda m: jax.jit(m.init)(jax.random.PRNGKey(1), x)
  v_ref = init(ref)
  # `impl` does not touch the parameters; one is enough.
  v = init(layers.ConvTranspose2x(7))
  assert jax.tree.map(lambda a: (a.shape, a.dtype), v) == jax.tree.map(
      lambda a: (a.shape, a.dtype), v_ref)
  jax.tree.map(np.testing.assert_array_equal, v, v_ref)


@pytest.mark.parametrize("impl", layers.IMPLS)
@pytest.mark.parametrize("k, h, w, cin, cout", [
    (5, 4, 4, 3, 5),     # DCGAN kernel, odd channel counts
    (5, 1, 1, 1, 1),     # a single pixel: only the centre taps reach the output
    (5, 3, 5, 7, 2),     # non-square, odd sizes
    (5, 8, 8, 16, 8),
    (3, 4, 3, 2, 3),     # other kernel sizes: the phase split is generic
    (4, 3, 3, 3, 1),
    (6, 2, 3, 1, 4),
])
def test_conv_transpose2x_equals_flax(impl, k, h, w, cin, cout):
  rng = np.random.default_rng(k * 1000 + h * 100 + w * 10 + cin)
  x = jnp.asarray(rng.normal(size=(2, h, w, cin)), jnp.float32)
  # A non-zero bias so that the bias path is compared too.
  v = {"params": {"kernel": jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32),
                  "bias": jnp.asarray(rng.normal(size=(cout,)), jnp.float32)}}
  # A loss that weights every output position differently.
  g = jnp.asarray(rng.normal(size=(2, 2 * h, 2 * w, cout)), jnp.float32)
  ref = nn.ConvTranspose(cout, (k, k), strides=(2, 2), padding="SAME")
  mine = layers.ConvTranspose2x(cout, (k, k), impl=impl)

  # One jit: eager dispatch of the many small ops would dominate the test.
  @jax.jit
  def forward_and_grads(v, x):
    y, pull = jax.vjp(mine.apply, v, x)
    y_ref, pull_ref = jax.vjp(ref.apply, v, x)
    return y, y_ref, pull(g), pull_ref(g)

  y, y_ref, grads, grads_ref = forward_and_grads(v, x)
  assert y.shape == (2, 2 * h, 2 * w, cout)
  np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
  # Gradients w.r.t. kernel, bias and input.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5),
               grads, grads_ref)


@pytest.mark.parametrize("impl", layers.IMPLS)
@pytest.mark.parametrize("k, s, h, w, cin, cout", [
    (3, 2, 8, 8, 3, 5),      # the discriminator's stride-2 layers
    (3, 2, 6, 4, 2, 3),      # non-square
    (5, 2, 8, 8, 2, 3),      # other kernel sizes: the phase split is generic
    (4, 2, 6, 6, 2, 2),
    (1, 2, 4, 4, 3, 2),
    (3, 2, 5, 5, 2, 2),      # odd sizes: the plain convolution (no phase form)
    (3, 1, 5, 4, 3, 4),      # stride 1
])
def test_conv_equals_flax(impl, k, s, h, w, cin, cout):
  rng = np.random.default_rng(k * 1000 + s * 100 + h * 10 + cin)
  x = jnp.asarray(rng.normal(size=(2, h, w, cin)), jnp.float32)
  ref = nn.Conv(cout, (k, k), strides=(s, s), padding="SAME")
  mine = layers.Conv(cout, (k, k), strides=s, impl=impl)
  v_ref = jax.jit(ref.init)(jax.random.PRNGKey(1), x)
  v = jax.jit(mine.init)(jax.random.PRNGKey(1), x)
  jax.tree.map(np.testing.assert_array_equal, v, v_ref)  # same parameters
  v = {"params": {"kernel": v["params"]["kernel"],
                  "bias": jnp.asarray(rng.normal(size=(cout,)), jnp.float32)}}
  g = jnp.asarray(rng.normal(size=(2, -(-h // s), -(-w // s), cout)), jnp.float32)

  @jax.jit
  def forward_and_grads(v, x):
    y, pull = jax.vjp(mine.apply, v, x)
    y_ref, pull_ref = jax.vjp(ref.apply, v, x)
    return y, y_ref, pull(g), pull_ref(g)

  y, y_ref, grads, grads_ref = forward_and_grads(v, x)
  np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
               grads, grads_ref)


def test_conv_stride2_phase_gradient_is_not_xla_path():
  # The phase form really replaces XLA's dilated-gradient convolution: no
  # lhs_dilate convolution is left in the compiled input gradient.
  x, kernel = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
  grad = lambda impl: jax.jit(jax.grad(lambda x: layers.conv(x, kernel, 2, impl).sum()))
  hlo = lambda impl: grad(impl).lower(x).as_text("hlo")
  assert "lhs_dilate" in hlo("xla") and "lhs_dilate" not in hlo("phase")


def test_down_phase_taps_stride2_3x3():
  # Input 2p gets the output gradient at p-1, p with taps 2, 0; input 2p+1 only
  # tap 1 at p (3 marks the zero tap).
  taps, lo = layers.down_phase_taps(3, 0)
  assert lo == -1
  np.testing.assert_array_equal(taps, [[2, 0], [3, 1]])


def test_phase_taps_dcgan_kernel():
  # Output 2p reads x[p-1], x[p] with taps 1, 3; output 2p+1 reads x[p-1..p+1]
  # with taps 0, 2, 4; 5 marks the zero tap.
  taps, lo = layers.phase_taps(5)
  assert lo == -1
  np.testing.assert_array_equal(taps, [[1, 3, 5], [0, 2, 4]])


def test_conv_transpose2x_errors():
  x = jnp.zeros((1, 4, 4, 3))
  with pytest.raises(ValueError, match="phase"):
    layers.ConvTranspose2x(4, impl="cudnn").init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="NHWC"):
    layers.ConvTranspose2x(4).init(jax.random.PRNGKey(0), jnp.zeros((4, 4, 3)))


def test_conv_transpose2x_bf16_compute():
  x = jnp.ones((1, 2, 2, 3))
  m = layers.ConvTranspose2x(4, dtype=jnp.bfloat16)
  v = jax.eval_shape(m.init, jax.random.PRNGKey(0), x)
  assert v["params"]["kernel"].dtype == jnp.float32
  assert jax.eval_shape(m.apply, v, x).dtype == jnp.bfloat16


# ----------------------------------------------------------------------------
# Table 5.4 / 5.5: output shapes.


@pytest.mark.parametrize("c", [3, 10])
def test_generator_shapes_table_5_4(c):
  b, l = 2, 64
  shapes = dcgan.layer_shapes(dcgan.Generator(c), _abstract(b, l), train=False)
  assert shapes == {
      "project": (b, 4 * 4 * 512), "project_bn": (b, 4, 4, 512),
      "up1": (b, 8, 8, 256), "up1_bn": (b, 8, 8, 256),
      "up2": (b, 16, 16, 128), "up2_bn": (b, 16, 16, 128),
      "up3": (b, 32, 32, 64), "up3_bn": (b, 32, 32, 64),
      "up4": (b, 64, 64, c),
  }


def _body_shapes(b):
  return {
      "conv1": (b, 32, 32, 32), "conv1_bn": (b, 32, 32, 32),
      "conv2": (b, 32, 32, 64), "conv2_bn": (b, 32, 32, 64),
      "conv3": (b, 16, 16, 128), "conv3_bn": (b, 16, 16, 128),
      "conv4": (b, 16, 16, 256), "conv4_bn": (b, 16, 16, 256),
      "conv5": (b, 8, 8, 256), "conv5_bn": (b, 8, 8, 256),
      # Flatten: 8 * 8 * 256 = 16384 inputs to the first fully connected layer.
      "fc": (b, 1024), "fc_bn": (b, 1024),
  }


@pytest.mark.parametrize("c", [3, 10])
@pytest.mark.parametrize("l", [32, 64, 128])
@pytest.mark.parametrize("head", dcgan.HEADS)
def test_discriminator_shapes_tables_5_4_5_5(c, l, head):
  b = 2
  shapes = dcgan.layer_shapes(dcgan.Discriminator(c, l, head), _abstract(b, 64, 64, c),
                              train=False)
  expected = _body_shapes(b)
  if head in ("uahm", "hash"):
    expected.update({"hash": (b, l), "hash_bn": (b, l)})
  if head == "uahm":
    expected["source"] = (b, 1)
  if head == "gan":
    expected.update({"feature": (b, l), "feature_bn": (b, l), "source": (b, 1)})
  assert shapes == expected
  assert list(shapes) == list(expected)  # in the table's order


# ----------------------------------------------------------------------------
# Table 5.4 / 5.5: parameter counts, written out from the tables.


def conv(k, cin, cout):      # weights + bias
  return k * k * cin * cout + cout


def dense(cin, cout):
  return cin * cout + cout


def bn(n):                   # scale + offset; running mean / var are not trained
  return 2 * n


@pytest.mark.parametrize("c", [3, 10])
@pytest.mark.parametrize("l", [32, 64, 128])
def test_generator_param_counts(c, l):
  counts = dcgan.param_counts(dcgan.Generator(c), _abstract(2, l), train=False)
  assert counts == {
      "project": dense(l, 4 * 4 * 512), "project_bn": bn(512),  # BN per channel
      "up1": conv(5, 512, 256), "up1_bn": bn(256),
      "up2": conv(5, 256, 128), "up2_bn": bn(128),
      "up3": conv(5, 128, 64), "up3_bn": bn(64),
      "up4": conv(5, 64, c),                                    # no BN
  }


@pytest.mark.parametrize("c", [3, 10])
@pytest.mark.parametrize("l", [32, 64, 128])
@pytest.mark.parametrize("head", dcgan.HEADS)
def test_discriminator_param_counts(c, l, head):
  counts = dcgan.param_counts(dcgan.Discriminator(c, l, head), _abstract(2, 64, 64, c),
                              train=False)
  expected = {
      "conv1": conv(3, c, 32), "conv1_bn": bn(32),
      "conv2": conv(3, 32, 64), "conv2_bn": bn(64),
      "conv3": conv(3, 64, 128), "conv3_bn": bn(128),
      "conv4": conv(3, 128, 256), "conv4_bn": bn(256),
      "conv5": conv(3, 256, 256), "conv5_bn": bn(256),
      "fc": dense(8 * 8 * 256, 1024), "fc_bn": bn(1024),
  }
  if head in ("uahm", "hash"):
    expected.update({"hash": dense(1024, l), "hash_bn": bn(l)})
  if head == "uahm":
    expected["source"] = dense(1024, 1)          # parallel to the hash layer
  if head == "gan":
    expected.update({"feature": dense(1024, l), "feature_bn": bn(l),
                     "source": dense(l, 1)})     # on top of the feature
  assert counts == expected


def test_param_totals_c10_l64():
  # The numbers quoted in the docs: G 4,851,658; D (uahm) 17,829,025.
  g = dcgan.param_counts(dcgan.Generator(10), _abstract(2, 64), train=False)
  d = dcgan.param_counts(dcgan.Discriminator(10, 64, "uahm"), _abstract(2, 64, 64, 10),
                         train=False)
  assert sum(g.values()) == 4_851_658
  assert sum(d.values()) == 17_829_025


# ----------------------------------------------------------------------------
# Running the networks.


@pytest.fixture(scope="module")
def small_images():
  return jax.random.uniform(jax.random.PRNGKey(0), (3, 64, 64, 3), minval=-1, maxval=1)


@pytest.mark.parametrize("head", dcgan.HEADS)
def test_discriminator_outputs(head, small_images):
  x = small_images
  d = dcgan.Discriminator(3, 32, head)
  v = _variables(d, x)
  out, upd = jax.jit(lambda v, x: d.apply(v, x, train=True, mutable=["batch_stats"]))(v, x)
  keys = {"uahm": {"hash", "feature", "logit"}, "gan": {"feature", "logit"},
          "hash": {"hash", "feature"}}[head]
  assert set(out) == keys
  for k, a in out.items():
    assert a.dtype == jnp.float32
    assert a.shape == ((3,) if k == "logit" else (3, 32))
    assert np.all(np.isfinite(a))
  if "hash" in out:
    assert np.all(np.abs(out["hash"]) < 1)
    np.testing.assert_array_equal(out["feature"], out["hash"])
  if head == "gan":
    assert np.any(out["feature"] < 0)  # LeakyReLU, not ReLU
  # Training mode moves the running statistics (momentum 0.9: 10% per step).
  mean0 = v["batch_stats"]["conv1_bn"]["mean"]
  mean1 = upd["batch_stats"]["conv1_bn"]["mean"]
  assert not np.allclose(mean0, mean1)
  # Inference uses the running statistics: one image alone gives the same
  # output as inside a batch.
  infer = jax.jit(lambda v, x: d.apply(v, x, train=False))
  full, one = infer(v, x), infer(v, x[:1])
  for k in one:
    np.testing.assert_allclose(one[k], full[k][:1], atol=1e-5)


def test_batch_norm_momentum_is_dcgan():
  x = jnp.ones((2, 64, 64, 3))
  d = dcgan.Discriminator(3, 32, "hash")
  v = _variables(d, x)
  _, upd = jax.jit(lambda v, x: d.apply(v, x, train=True, mutable=["batch_stats"]))(v, x)
  # Running var starts at 1; the batch variance of a constant image is ~0:
  # new running var = 0.9 * 1 + 0.1 * 0.
  np.testing.assert_allclose(upd["batch_stats"]["conv1_bn"]["var"], 0.9, atol=1e-4)


def test_generator_outputs_and_impls_agree():
  z = jax.random.uniform(jax.random.PRNGKey(0), (2, 32), minval=-1, maxval=1)
  g = dcgan.Generator(3)
  v = _variables(g, z)
  y, upd = jax.jit(lambda v, z: g.apply(v, z, train=True, mutable=["batch_stats"]))(v, z)
  assert y.shape == (2, 64, 64, 3) and y.dtype == jnp.float32
  assert np.all(np.abs(y) <= 1)
  assert set(upd["batch_stats"]) == {"project_bn", "up1_bn", "up2_bn", "up3_bn"}
  g_xla = dcgan.Generator(3, impl="xla")
  y_phase, y_xla = jax.jit(lambda v, z: (g.apply(v, z, train=False),
                                         g_xla.apply(v, z, train=False)))(v, z)
  np.testing.assert_allclose(y_phase, y_xla, atol=1e-5)


@functools.cache  # pure: the plain form's result serves two tests
def _d_value_and_grads(impl):
  # DCGAN's own initialisation and 16 images: train-mode BatchNorm of channels
  # that barely vary (few images, `_variables`' large biases on tiny kernels)
  # amplifies rounding, which differs between kernels, far past 1e-5.
  x = jax.random.uniform(jax.random.PRNGKey(0), (16, 64, 64, 4), minval=-1, maxval=1)
  d = dcgan.Discriminator(4, 16, "uahm", impl=impl)
  v = dcgan.Discriminator(4, 16, "uahm").init(jax.random.PRNGKey(3), x, train=False)

  def f(params, x):
    out, _ = d.apply({"params": params, "batch_stats": v["batch_stats"]}, x,
                     train=True, mutable=["batch_stats"])
    return jnp.sum(out["logit"]) + jnp.sum(out["hash"] * jnp.arange(16.0))

  return jax.jit(jax.value_and_grad(f, (0, 1)))(v["params"], x)


def _assert_same_training_signal(fast, plain):
  (l1, g1), (l2, g2) = fast, plain
  # On a CPU with AMX (bf16 tiles, e.g. Sapphire Rapids Xeons) XLA's own convolutions
  # are less exact in float32: measured against a float64 run of the same network, the
  # loss off by 1.5e-5 relative (the plain form 3e-6) and the gradients by 1.8e-3 of
  # their scale (the plain form 2e-6). Elsewhere both agree to float32 rounding.
  amx = "amx_bf16" in (pathlib.Path("/proc/cpuinfo").read_text()
                       if pathlib.Path("/proc/cpuinfo").exists() else "")
  np.testing.assert_allclose(l1, l2, rtol=1e-4 if amx else 1e-5)
  # To 1e-5 of the gradients' scale: a conv bias followed by BatchNorm has a true
  # gradient of 0, so what both forms give there is rounding of large sums.
  scale = max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g2))
  diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)))
  assert diff <= (5e-3 if amx else 1e-5) * scale, (diff, scale)


def test_discriminator_impls_agree_with_gradients():
  # The phase form of the stride-2 input gradients against XLA's own.
  _assert_same_training_signal(_d_value_and_grads("phase"), _d_value_and_grads("xla"))


def test_eigen_cpu_convolutions_agree_with_gradients(tmp_path):
  # config.train.cpu_conv="eigen" (the CPU default of rsh.main) is a process-wide
  # XLA flag: the fast form runs in a child process, the plain one here.
  import os, pickle, subprocess, sys, textwrap
  code = textwrap.dedent(f"""
      import pickle, sys
      sys.path.insert(0, {str(pathlib.Path(__file__).parent.parent)!r})
      from rsh import platform
      assert platform.set_cpu_conv("eigen")
      import jax, numpy as np
      from tests.test_models import _d_value_and_grads
      out = jax.tree.map(np.asarray, _d_value_and_grads("phase"))
      pickle.dump(out, open({str(tmp_path / "out.pkl")!r}, "wb"))
  """)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  subprocess.run([sys.executable, "-c", code], check=True, env=env)
  fast = pickle.load(open(tmp_path / "out.pkl", "rb"))
  _assert_same_training_signal(fast, _d_value_and_grads("xla"))


def test_generator_to_discriminator_gradients_finite():
  z = jax.random.uniform(jax.random.PRNGKey(0), (2, 32), minval=-1, maxval=1)
  g, d = dcgan.Generator(3), dcgan.Discriminator(3, 32, "uahm")
  vg = _variables(g, z)
  vd = _variables(d, jnp.zeros((2, 64, 64, 3)))

  def loss(pg):
    fake, _ = g.apply({**vg, "params": pg}, z, train=True, mutable=["batch_stats"])
    out, _ = d.apply(vd, fake, train=True, mutable=["batch_stats"])
    return jnp.mean(out["logit"])

  grads = jax.jit(jax.grad(loss))(vg["params"])
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(a)) for a in leaves)
  assert any(np.any(a != 0) for a in leaves)


# ----------------------------------------------------------------------------
# Bad configurations and inputs.


@pytest.mark.parametrize("bits", [12, 0, -8, 4, 64.0])
def test_bits_must_be_multiple_of_8(bits):
  with pytest.raises(ValueError, match="multiple of 8"):
    dcgan.Discriminator(10, bits)


def test_unknown_head_lists_choices():
  with pytest.raises(ValueError, match="uahm.*gan.*hash"):
    dcgan.Discriminator(10, 64, head="dhnn")


@pytest.mark.parametrize("channels", [0, -1, 2.5])
def test_bad_channels(channels):
  with pytest.raises(ValueError, match="channels"):
    dcgan.Discriminator(channels, 64)
  with pytest.raises(ValueError, match="channels"):
    dcgan.Generator(channels)


def test_generator_unknown_impl():
  with pytest.raises(ValueError, match="phase"):
    dcgan.Generator(3, impl="fast")


@pytest.mark.parametrize("shape", [
    (2, 64, 64, 3),    # 3 bands given to a 10-band D
    (2, 32, 32, 10),   # wrong spatial size
    (64, 64, 10),      # no batch axis
    (2, 10, 64, 64),   # NCHW
])
def test_discriminator_rejects_wrong_input(shape):
  with pytest.raises(ValueError, match=r"\[batch, 64, 64, 10\]"):
    dcgan.layer_shapes(dcgan.Discriminator(10, 64), _abstract(*shape), train=False)


def test_generator_rejects_wrong_noise():
  with pytest.raises(ValueError, match="noise"):
    dcgan.layer_shapes(dcgan.Generator(3), _abstract(64), train=False)


def test_dcgan_init():
  # Weights ~ N(0, 0.02), biases 0, BN scale 1 / offset 0, running stats 0 / 1.
  g = dcgan.Generator(3)
  v = jax.jit(lambda rng, z: g.init(rng, z, train=False))(
      jax.random.PRNGKey(0), jnp.zeros((1, 32)))
  kernel = np.asarray(v["params"]["up1"]["kernel"])
  assert abs(kernel.std() - 0.02) < 1e-3 and abs(kernel.mean()) < 1e-3
  np.testing.assert_array_equal(v["params"]["up1"]["bias"], 0)
  np.testing.assert_array_equal(v["params"]["project_bn"]["scale"], 1)
  np.testing.assert_array_equal(v["batch_stats"]["project_bn"]["var"], 1)
  np.testing.assert_array_equal(v["batch_stats"]["project_bn"]["mean"], 0)
