"""Inception-v3 (Szegedy et al., 2016) in Flax, laid out like torchvision's `inception_v3`.

The papers' ImageNet weights cannot be downloaded here, so `rsh.weights` loads a
user-supplied torchvision state dict (`inception_v3_google-0cc3c7bd.pth`). Flax
module names are torchvision's (`Mixed_5b/branch1x1/conv`, ...), so the mapping
is a plain join with '.'. Details that matter for matching torchvision: every
convolution is conv (no bias) + BatchNorm (epsilon 1e-3) + ReLU with PyTorch's
explicit paddings; average pools count the zero padding; input is 299 x 299.

torchvision builds the Google weights with `transform_input=True`, which maps
ImageNet-normalised input to (x - 0.5) / 0.5; normalising with MEAN = STD = 0.5
here is the same thing in one step.

The auxiliary classifier (`AuxLogits`, used only in training) is built when
`aux_logits=True`; the feature extractor leaves it out and ignores its weights.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

NAME = "inception_v3"
INPUT_SIZE = 299
FEATURE_DIM = 2048
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1 counts the other way round


def _pair(v):
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nn.Module):
  """Conv (no bias) + BatchNorm + ReLU, with PyTorch-style symmetric padding."""
  features: int
  kernel: int | tuple[int, int]
  stride: int = 1
  padding: int | tuple[int, int] = 0

  @nn.compact
  def __call__(self, x, train: bool = False):
    ph, pw = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel), strides=self.stride,
                padding=((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                     epsilon=BN_EPSILON, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  # PyTorch's avg_pool2d(3, stride=1, padding=1) divides by 9 at the borders too.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=True)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2))


class InceptionA(nn.Module):
  """35 x 35 block: 1x1 | 5x5 | double 3x3 | pool, 224 + pool_features channels."""
  pool_features: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    b1 = BasicConv2d(64, 1, name="branch1x1")(x, train)
    b5 = BasicConv2d(48, 1, name="branch5x5_1")(x, train)
    b5 = BasicConv2d(64, 5, padding=2, name="branch5x5_2")(b5, train)
    b3 = BasicConv2d(64, 1, name="branch3x3dbl_1")(x, train)
    b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(b3, train)
    b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_3")(b3, train)
    bp = BasicConv2d(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3(x), train)
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """35 -> 17 grid reduction: strided 3x3 | double 3x3 | max pool."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    b3 = BasicConv2d(384, 3, stride=2, name="branch3x3")(x, train)
    bd = BasicConv2d(64, 1, name="branch3x3dbl_1")(x, train)
    bd = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(bd, train)
    bd = BasicConv2d(96, 3, stride=2, name="branch3x3dbl_3")(bd, train)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """17 x 17 block with factorised 7x7 convolutions (1x7 then 7x1), 768 channels."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    c7 = self.channels_7x7
    b1 = BasicConv2d(192, 1, name="branch1x1")(x, train)
    b7 = BasicConv2d(c7, 1, name="branch7x7_1")(x, train)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7, train)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7, train)
    bd = BasicConv2d(c7, 1, name="branch7x7dbl_1")(x, train)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd, train)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd, train)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd, train)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd, train)
    bp = BasicConv2d(192, 1, name="branch_pool")(_avg_pool_3x3(x), train)
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """17 -> 8 grid reduction: 3x3 | 7x7 then 3x3 | max pool."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    b3 = BasicConv2d(192, 1, name="branch3x3_1")(x, train)
    b3 = BasicConv2d(320, 3, stride=2, name="branch3x3_2")(b3, train)
    b7 = BasicConv2d(192, 1, name="branch7x7x3_1")(x, train)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7, train)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7, train)
    b7 = BasicConv2d(192, 3, stride=2, name="branch7x7x3_4")(b7, train)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """8 x 8 block with the 3x3 split into parallel 1x3 and 3x1, 2048 channels."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    b1 = BasicConv2d(320, 1, name="branch1x1")(x, train)
    b3 = BasicConv2d(384, 1, name="branch3x3_1")(x, train)
    b3 = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3, train),
        BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3, train)], axis=-1)
    bd = BasicConv2d(448, 1, name="branch3x3dbl_1")(x, train)
    bd = BasicConv2d(384, 3, padding=1, name="branch3x3dbl_2")(bd, train)
    bd = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd, train),
        BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd, train)], axis=-1)
    bp = BasicConv2d(192, 1, name="branch_pool")(_avg_pool_3x3(x), train)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(nn.Module):
  """Auxiliary classifier on the 17 x 17 grid (training only)."""
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.avg_pool(x, (5, 5), strides=(3, 3))
    x = BasicConv2d(128, 1, name="conv0")(x, train)
    x = BasicConv2d(768, 5, name="conv1")(x, train)
    return nn.Dense(self.num_classes, name="fc")(jnp.mean(x, axis=(1, 2)))


class InceptionV3(nn.Module):
  """Inception-v3 classifier; `features` gives the 2048-d penultimate layer.

  With `aux_logits` and `train`, returns (logits, aux_logits) as torchvision does.
  """
  num_classes: int = 1000
  aux_logits: bool = False
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x, train: bool = False, penultimate: bool = False):
    """x: f32[n, h, w, 3] normalised with MEAN / STD; h = w = 299 for the weights
    (at least 75 for the grid reductions to leave a pixel).

    Returns:
      f32[n, num_classes] logits, or f32[n, 2048] pooled features if `penultimate`.
    """
    x = BasicConv2d(32, 3, stride=2, name="Conv2d_1a_3x3")(x, train)
    x = BasicConv2d(32, 3, name="Conv2d_2a_3x3")(x, train)
    x = BasicConv2d(64, 3, padding=1, name="Conv2d_2b_3x3")(x, train)
    x = _max_pool_3x3_s2(x)
    x = BasicConv2d(80, 1, name="Conv2d_3b_1x1")(x, train)
    x = BasicConv2d(192, 3, name="Conv2d_4a_3x3")(x, train)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, name="Mixed_5b")(x, train)
    x = InceptionA(64, name="Mixed_5c")(x, train)
    x = InceptionA(64, name="Mixed_5d")(x, train)
    x = InceptionB(name="Mixed_6a")(x, train)
    x = InceptionC(128, name="Mixed_6b")(x, train)
    x = InceptionC(160, name="Mixed_6c")(x, train)
    x = InceptionC(160, name="Mixed_6d")(x, train)
    x = InceptionC(192, name="Mixed_6e")(x, train)
    aux = None
    if self.aux_logits and (train or self.is_initializing()):
      aux = InceptionAux(self.num_classes, name="AuxLogits")(x, train)
    x = InceptionD(name="Mixed_7a")(x, train)
    x = InceptionE(name="Mixed_7b")(x, train)
    x = InceptionE(name="Mixed_7c")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    if penultimate and not self.is_initializing():
      return x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, name="fc")(x)
    return (x, aux) if aux is not None and train else x

  def features(self, x):
    """x: f32[n, h, w, 3] normalised -> f32[n, 2048]."""
    return self(x, train=False, penultimate=True)


def torch_prefix(path: tuple[str, ...]) -> str:
  """('Mixed_5b', 'branch1x1', 'conv') -> 'Mixed_5b.branch1x1.conv'."""
  return ".".join(path)
