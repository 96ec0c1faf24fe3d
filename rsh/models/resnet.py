"""ResNet-50 (He et al., 2016) in Flax, laid out like torchvision's `resnet50`.

The papers' ImageNet weights cannot be downloaded here, so `rsh.weights` loads a
user-supplied torchvision state dict (`resnet50-0676ba61.pth` or
`resnet50-11ad3fa6.pth`, both the same architecture). Details that matter for
matching torchvision exactly: the stride sits on the 3x3 convolution of each
bottleneck ("ResNet v1.5"), paddings are PyTorch's symmetric k // 2, BatchNorm
epsilon is 1e-5, and inputs use the ImageNet mean / std.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

NAME = "resnet50"
INPUT_SIZE = 224
FEATURE_DIM = 2048
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1 counts the other way round
STAGE_SIZES = (3, 4, 6, 3)


def _pad(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((k // 2, k // 2), (k // 2, k // 2))


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand (x4), plus the projected shortcut."""
  width: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x: f32[n, h, w, c] -> f32[n, h / stride, w / stride, 4 * width]."""
    bn = functools.partial(nn.BatchNorm, use_running_average=not train,
                           momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
    out = 4 * self.width
    y = nn.relu(bn(name="bn1")(nn.Conv(self.width, (1, 1), use_bias=False, name="conv1")(x)))
    y = nn.Conv(self.width, (3, 3), strides=self.stride, padding=_pad(3), use_bias=False,
                name="conv2")(y)
    y = nn.relu(bn(name="bn2")(y))
    y = bn(name="bn3")(nn.Conv(out, (1, 1), use_bias=False, name="conv3")(y))
    if self.stride != 1 or x.shape[-1] != out:
      x = nn.Conv(out, (1, 1), strides=self.stride, use_bias=False, name="downsample_conv")(x)
      x = bn(name="downsample_bn")(x)
    return nn.relu(y + x)


class ResNet50(nn.Module):
  """ResNet-50 classifier; `features` gives the 2048-d penultimate layer."""
  num_classes: int = 1000
  stage_sizes: Sequence[int] = STAGE_SIZES

  @nn.compact
  def __call__(self, x, train: bool = False, penultimate: bool = False):
    """x: f32[n, h, w, 3] normalised with MEAN / STD (224 x 224 for ImageNet weights).

    Returns:
      f32[n, num_classes] logits, or f32[n, 2048] pooled features if `penultimate`.
    """
    x = nn.Conv(64, (7, 7), strides=2, padding=_pad(7), use_bias=False, name="conv1")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                     epsilon=BN_EPSILON, name="bn1")(x)
    x = nn.relu(x)
    # Padding with -inf (what max_pool does) equals PyTorch's implicit padding.
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))
    for stage, blocks in enumerate(self.stage_sizes):
      for b in range(blocks):
        x = Bottleneck(64 * 2**stage, stride=2 if stage > 0 and b == 0 else 1,
                       name=f"layer{stage + 1}_{b}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    if penultimate and not self.is_initializing():
      return x
    return nn.Dense(self.num_classes, name="fc")(x)

  def features(self, x):
    """x: f32[n, h, w, 3] normalised -> f32[n, 2048]."""
    return self(x, train=False, penultimate=True)


def torch_prefix(path: tuple[str, ...]) -> str:
  """('layer2_0', 'downsample_bn') -> 'layer2.0.downsample.1'."""
  names = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
  return ".".join(names.get(p, p.replace("_", ".")) for p in path)
