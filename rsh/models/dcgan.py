"""The DCGAN generator and discriminator of UAHM and its baselines (thesis Tables 5.4, 5.5).

Generator: z f32[b, l] -> image f32[b, 64, 64, c] in (-1, 1).
Discriminator: image f32[b, 64, 64, c] -> dict of heads (see `Discriminator`).

Conventions not stated in the thesis, taken from DCGAN (Radford et al., 2016) and
its reference TensorFlow code, which the thesis networks follow:
  - weights ~ N(0, 0.02), biases 0 (`kernel_init` overrides);
  - BatchNorm momentum 0.9 (running = 0.9 * running + 0.1 * batch) and epsilon
    1e-5; flax's defaults (0.99) would make the running statistics used at
    retrieval time lag training by ~100 steps instead of ~10;
  - the generator's BatchNorm after "Linear + Reshape" is per channel (512),
    applied after the reshape;
  - every layer has a bias, also those followed by BatchNorm (the parameter
    counts in the tests assume so).
Padding is 'SAME' everywhere, which gives the table's sizes 64 -> 32 -> 32 -> 16
-> 16 -> 8 in D and 4 -> 8 -> 16 -> 32 -> 64 in G.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rsh.models import layers

Array = jax.Array

IMAGE_SIZE = 64
HEADS = ("uahm", "gan", "hash")
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
LEAKY_SLOPE = 0.2

# Table 5.4, G: (features, BN + ReLU?) of each 5x5 stride-2 transposed conv
# after the 4x4x512 projection; the last one is the image (no BN, tanh).
G_PROJECT = (4, 4, 512)
G_UPSAMPLE = (256, 128, 64)
# Table 5.4, D body: (features, stride) of each 3x3 conv, all BN + LeakyReLU.
D_BODY = ((32, 2), (64, 1), (128, 2), (256, 1), (256, 2))
D_HIDDEN = 1024  # Table 5.5: the first fully connected layer of every head.

dcgan_init = nn.initializers.normal(stddev=0.02)


def _batch_norm(train: bool, dtype: Any, param_dtype: Any, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                      epsilon=BN_EPSILON, dtype=dtype, param_dtype=param_dtype, name=name)


def _leaky_relu(x: Array) -> Array:
  return nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


class Generator(nn.Module):
  """DCGAN generator of Table 5.4.

  z [b, l] -> Dense 4*4*512 -> reshape -> BN, ReLU -> three 5x5 stride-2
  transposed convs (256, 128, 64; BN, ReLU) -> 5x5 stride-2 transposed conv to
  `channels` -> tanh.

  Attributes:
    channels: image bands c (3 for RGB, 10 for the multispectral bands).
    impl: how the transposed convs run: "phase" (fast on CPU; default) or "xla"
      (`lax.conv_transpose`; fine on GPU). Same parameters either way.
    dtype: computation dtype; params stay in `param_dtype`.
    param_dtype: parameter dtype.
    kernel_init: initialiser of every Dense / conv kernel.
  """
  channels: int
  impl: str = "phase"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = dcgan_init

  def __post_init__(self):
    if not isinstance(self.channels, (int, np.integer)) or self.channels < 1:
      raise ValueError(f"Generator.channels must be a positive int, got {self.channels!r}")
    if self.impl not in layers.IMPLS:
      raise ValueError(f"Generator.impl must be one of {layers.IMPLS}, got {self.impl!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, z: Array, train: bool) -> Array:
    """z: f32[b, l] noise -> f32[b, 64, 64, channels] in (-1, 1) (`dtype`)."""
    if z.ndim != 2:
      raise ValueError(f"Generator expects noise of shape [batch, code_length], got {z.shape}")
    bn = functools.partial(_batch_norm, train, self.dtype, self.param_dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=self.kernel_init)
    up = functools.partial(layers.ConvTranspose2x, kernel_size=(5, 5), impl=self.impl,
                           dtype=self.dtype, param_dtype=self.param_dtype,
                           kernel_init=self.kernel_init)

    x = dense(int(np.prod(G_PROJECT)), name="project")(z)
    x = x.reshape((z.shape[0],) + G_PROJECT)
    x = nn.relu(bn("project_bn")(x))
    for i, features in enumerate(G_UPSAMPLE, start=1):
      x = up(features, name=f"up{i}")(x)
      x = nn.relu(bn(f"up{i}_bn")(x))
    x = up(self.channels, name=f"up{len(G_UPSAMPLE) + 1}")(x)
    return jnp.tanh(x)


class Discriminator(nn.Module):
  """DCGAN discriminator body of Table 5.4 with one of the heads of Table 5.5.

  Body: five 3x3 convs (32 s2, 64 s1, 128 s2, 256 s1, 256 s2), each BN +
  LeakyReLU(0.2), flattened to 8*8*256 = 16384; then Dense 1024 + BN + LeakyReLU.
  Heads (`head`):
    - "uahm" (GAN_UAHM): two parallel layers on the 1024 vector: hash
      Dense l + BN + tanh, and source Dense 1 (the logit).
    - "gan" (GAN-RGB / GAN-MS): Dense l + BN + LeakyReLU = the non-binary
      feature, then Dense 1 on it (the logit).
    - "hash" (DHNN-MS): the hash layer only, no source prediction.
  The source head returns the logit, not the sigmoid of Table 5.5: the losses
  apply the sigmoid through log-sigmoid, which stays finite for any logit.

  Attributes:
    channels: image bands c.
    bits: code length l (a multiple of 8, so codes pack into bytes); for
      head="gan" the feature length.
    head: "uahm", "gan" or "hash".
    impl: how the stride-2 convolutions are differentiated: "phase" (their input
      gradient as one stride-1 convolution + depth-to-space; fast on CPU) or
      "xla" (XLA's own). Same parameters and forward pass either way.
    dtype: computation dtype; the outputs are float32.
    param_dtype: parameter dtype.
    kernel_init: initialiser of every Dense / conv kernel.
  """
  channels: int
  bits: int
  head: str = "uahm"
  impl: str = "phase"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = dcgan_init

  def __post_init__(self):
    if not isinstance(self.channels, (int, np.integer)) or self.channels < 1:
      raise ValueError(f"Discriminator.channels must be a positive int, got {self.channels!r}")
    if not isinstance(self.bits, (int, np.integer)) or self.bits < 8 or self.bits % 8:
      raise ValueError(f"Discriminator.bits (code length) must be a positive multiple of 8, "
                       f"got {self.bits!r}")
    if self.head not in HEADS:
      raise ValueError(f"Discriminator.head must be one of {HEADS}, got {self.head!r}")
    if self.impl not in layers.IMPLS:
      raise ValueError(f"Discriminator.impl must be one of {layers.IMPLS}, got {self.impl!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, train: bool) -> dict[str, Array]:
    """Runs D on a batch of images.

    Args:
      x: f32[b, 64, 64, channels], real or generated, in [-1, 1].
      train: batch statistics (and their running averages are updated, when
        "batch_stats" is mutable) if True; running averages if False.

    Returns:
      A dict of float32 arrays:
        "hash": [b, bits] tanh code in (-1, 1) (heads "uahm", "hash");
        "feature": [b, bits] the retrieval representation: the LeakyReLU
          feature for "gan"; for "uahm" / "hash" the same array as "hash" (the
          real-valued code before sign), so every head has a "feature";
        "logit": [b] real-vs-generated logit, D(x) = sigmoid(logit)
          (heads "uahm", "gan").
    """
    expected = (IMAGE_SIZE, IMAGE_SIZE, self.channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
      raise ValueError(f"Discriminator expects images [batch, {IMAGE_SIZE}, {IMAGE_SIZE}, "
                       f"{self.channels}] (NHWC), got shape {tuple(x.shape)}")
    bn = functools.partial(_batch_norm, train, self.dtype, self.param_dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=self.kernel_init)

    for i, (features, stride) in enumerate(D_BODY, start=1):
      x = layers.Conv(features, (3, 3), strides=stride, impl=self.impl, dtype=self.dtype,
                      param_dtype=self.param_dtype, kernel_init=self.kernel_init,
                      name=f"conv{i}")(x)
      x = _leaky_relu(bn(f"conv{i}_bn")(x))
    x = x.reshape((x.shape[0], -1))
    x = _leaky_relu(bn("fc_bn")(dense(D_HIDDEN, name="fc")(x)))

    out = {}
    if self.head in ("uahm", "hash"):
      h = jnp.tanh(bn("hash_bn")(dense(self.bits, name="hash")(x)))
      out["hash"] = out["feature"] = h.astype(jnp.float32)
      if self.head == "uahm":
        out["logit"] = dense(1, name="source")(x)[:, 0].astype(jnp.float32)
    else:
      f = _leaky_relu(bn("feature_bn")(dense(self.bits, name="feature")(x)))
      out["feature"] = f.astype(jnp.float32)
      out["logit"] = dense(1, name="source")(f)[:, 0].astype(jnp.float32)
    return out


def layer_shapes(module: nn.Module, *args, **kwargs) -> dict[str, tuple[int, ...]]:
  """Output shape of every named layer of `module`, in call order.

  Shapes are traced abstractly (`jax.eval_shape`): no weights are created and
  no FLOPs run, so this is cheap even for the full-size networks.

  Args:
    module: e.g. `Discriminator(10, 64)`.
    *args: its call inputs, arrays or `jax.ShapeDtypeStruct`s.
    **kwargs: static call arguments, e.g. `train=False`.

  Returns:
    {"conv1": (b, 32, 32, 32), "conv1_bn": (b, 32, 32, 32), ...}; nested layers
    are named "parent/child".
  """
  names: list[str] = []

  def walk(tree, prefix):
    for key, value in tree.items():
      if key == "__call__":
        if prefix:  # the root's own output is the whole model, not a layer
          yield prefix, value[0]
      else:
        yield from walk(value, f"{prefix}/{key}" if prefix else key)

  def run(rng, *inputs):
    variables = module.init(rng, *inputs, **kwargs)
    _, state = module.apply(variables, *inputs, capture_intermediates=True,
                            mutable=["intermediates", "batch_stats"], **kwargs)
    # eval_shape rebuilds dicts with sorted keys; keep the call order aside.
    found = list(walk(state["intermediates"], ""))
    names[:] = [name for name, _ in found]
    return [value for _, value in found]

  shapes = jax.eval_shape(run, jax.random.PRNGKey(0), *args)
  return {name: tuple(s.shape) for name, s in zip(names, shapes)}


def param_counts(module: nn.Module, *args, **kwargs) -> dict[str, int]:
  """Number of trainable parameters per top-level layer (abstractly, no FLOPs).

  Batch-norm running statistics are not counted (they are not trained).

  Returns:
    {"conv1": 9 * c * 32 + 32, "conv1_bn": 64, ...}; sum the values for the total.
  """
  variables = jax.eval_shape(lambda rng, *inputs: module.init(rng, *inputs, **kwargs),
                             jax.random.PRNGKey(0), *args)
  return {name: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
          for name, tree in variables["params"].items()}
