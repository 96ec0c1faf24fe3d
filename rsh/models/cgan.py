"""The class-conditional GANs of thesis Fig. 4.4 on EuroSAT RGB (64x64x3).

Two discriminators share one body and one generator:
  - C-DCGAN ("input" conditioning): the one-hot label is tiled onto every pixel
    and concatenated with the image's channels, so D sees 64x64x(c + k) and
    answers one real/fake logit for the (image, label) pair;
  - ACGAN ("auxiliary" conditioning): D sees the image only and answers, from
    one output layer, a real/fake logit and k class logits.
The generator is the same for both: DCGAN's generator (`dcgan.Generator`) on the
noise z concatenated with the one-hot label.

Fig. 4.4 gives D's body: five 5x5 convs (16 s2, 32 s1, 64 s2, 128 s1, 256 s2),
LeakyReLU, flattened 8*8*256, then a fully connected 1024. Conventions not in the
figure come from `rsh.models.dcgan` (i.e. from DCGAN, which the thesis follows):
weights ~ N(0, 0.02) and biases 0, BatchNorm momentum 0.9 and epsilon 1e-5,
LeakyReLU slope 0.2, 'SAME' padding (64 -> 32 -> 32 -> 16 -> 16 -> 8), a bias on
every layer, no BatchNorm on D's input layer, and `layers.Conv` for the stride-2
convolutions (`impl`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rsh.models import dcgan
from rsh.models import layers

Array = jax.Array

NOISE_DIM = 100
CONDITIONINGS = ("input", "auxiliary")
# Fig. 4.4, D body: (features, stride) of each 5x5 conv.
D_BODY = ((16, 2), (32, 1), (64, 2), (128, 1), (256, 2))
D_KERNEL = (5, 5)


def _check_onehot(onehot: Array, batch: int, num_classes: int, who: str) -> None:
  if onehot.ndim != 2 or tuple(onehot.shape) != (batch, num_classes):
    raise ValueError(f"{who} expects one-hot labels [batch={batch}, num_classes={num_classes}], "
                     f"got shape {tuple(onehot.shape)}")


def one_hot_tiled(x: Array, onehot: Array) -> Array:
  """The one-hot label broadcast to every pixel and concatenated on the channels.

  Args:
    x: f32[b, h, w, c] images (64x64 in Fig. 4.4).
    onehot: f32[b, k] one-hot labels.

  Returns:
    f32[b, h, w, c + k] (`x`'s dtype): channels c.. hold the label at every pixel.
  """
  if x.ndim != 4:
    raise ValueError(f"one_hot_tiled expects images [batch, h, w, c], got shape {tuple(x.shape)}")
  if onehot.ndim != 2 or onehot.shape[0] != x.shape[0]:
    raise ValueError(f"one_hot_tiled expects one-hot labels [batch={x.shape[0]}, k], "
                     f"got shape {tuple(onehot.shape)}")
  b, h, w, _ = x.shape
  tiled = jnp.broadcast_to(onehot.astype(x.dtype)[:, None, None, :], (b, h, w, onehot.shape[1]))
  return jnp.concatenate([x, tiled], axis=-1)


class ConditionalGenerator(nn.Module):
  """Generator of Fig. 4.4: `dcgan.Generator` on [z, one-hot label].

  [z, y] f32[b, 100 + k] -> Dense 4*4*512 -> reshape -> BN, ReLU -> three 5x5
  stride-2 transposed convs (256, 128, 64; BN, ReLU) -> 5x5 stride-2 transposed
  conv to `channels` -> tanh. The parameters live under "net" (the dcgan
  generator's own names below it).

  Attributes:
    channels: image bands c (3 for EuroSAT RGB).
    num_classes: classes k (10 for EuroSAT).
    impl: how the transposed convs run, "phase" or "xla" (see `dcgan.Generator`).
    dtype: computation dtype; params stay in `param_dtype`.
    param_dtype: parameter dtype.
    kernel_init: initialiser of every Dense / conv kernel.
  """
  channels: int = 3
  num_classes: int = 10
  impl: str = "phase"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = dcgan.dcgan_init

  def __post_init__(self):
    name = "ConditionalGenerator"
    if not isinstance(self.channels, (int, np.integer)) or self.channels < 1:
      raise ValueError(f"{name}.channels must be a positive int, got {self.channels!r}")
    if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 1:
      raise ValueError(f"{name}.num_classes must be a positive int, got {self.num_classes!r}")
    if self.impl not in layers.IMPLS:
      raise ValueError(f"{name}.impl must be one of {layers.IMPLS}, got {self.impl!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, z: Array, labels_onehot: Array, train: bool) -> Array:
    """Generates one image per (noise, label) pair.

    Args:
      z: f32[b, l] noise (l = NOISE_DIM = 100 in the thesis).
      labels_onehot: f32[b, num_classes] one-hot labels.
      train: batch statistics if True (updated when "batch_stats" is mutable);
        running averages if False.

    Returns:
      f32[b, 64, 64, channels] in (-1, 1) (`dtype`).
    """
    if z.ndim != 2:
      raise ValueError(f"ConditionalGenerator expects noise of shape [batch, code_length], "
                       f"got {tuple(z.shape)}")
    _check_onehot(labels_onehot, z.shape[0], self.num_classes, "ConditionalGenerator")
    zy = jnp.concatenate([z, labels_onehot.astype(z.dtype)], axis=-1)
    return dcgan.Generator(channels=self.channels, impl=self.impl, dtype=self.dtype,
                           param_dtype=self.param_dtype, kernel_init=self.kernel_init,
                           name="net")(zy, train)


class ConditionalDiscriminator(nn.Module):
  """Discriminator of Fig. 4.4, C-DCGAN ("input") or ACGAN ("auxiliary").

  Input: 64x64x(channels + num_classes) for "input" (`one_hot_tiled`), 64x64x
  channels for "auxiliary". Body: five 5x5 'SAME' convs (16 s2, 32 s1, 64 s2,
  128 s1, 256 s2), each LeakyReLU(0.2), flattened to 8*8*256 = 16384; then
  Dense 1024 + BN + LeakyReLU (the "feature"). Output layer "out": Dense 1 (the
  logit) for "input"; for "auxiliary" one Dense(1 + num_classes) whose column 0
  is the real/fake logit and columns 1: the class logits.

  BatchNorm: Fig. 4.4 lists none. BatchNorm follows every conv except the first
  (and the Dense 1024), per the DCGAN guidelines the thesis says it follows
  (BN everywhere but G's output and D's input layer); momentum and epsilon as in
  `dcgan`. Like `dcgan.Discriminator`, D returns logits, not sigmoids/softmaxes.

  Attributes:
    channels: image bands c (3 for EuroSAT RGB).
    num_classes: classes k (10 for EuroSAT).
    conditioning: "input" (C-DCGAN) or "auxiliary" (ACGAN).
    batch_norm: False drops every BatchNorm of D (Fig. 4.4 as drawn). With it, D
      normalises a batch of generated images by that batch's own statistics, so
      a collapsed G (near-identical images) is normalised to its small differences.
    impl: how the stride-2 convolutions are differentiated, "phase" or "xla"
      (see `dcgan.Discriminator`); same parameters and forward pass either way.
    dtype: computation dtype; the outputs are float32.
    param_dtype: parameter dtype.
    kernel_init: initialiser of every Dense / conv kernel.
  """
  channels: int = 3
  num_classes: int = 10
  conditioning: str = "input"
  batch_norm: bool = True
  impl: str = "phase"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = dcgan.dcgan_init

  def __post_init__(self):
    name = "ConditionalDiscriminator"
    if not isinstance(self.channels, (int, np.integer)) or self.channels < 1:
      raise ValueError(f"{name}.channels must be a positive int, got {self.channels!r}")
    if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 1:
      raise ValueError(f"{name}.num_classes must be a positive int, got {self.num_classes!r}")
    if self.conditioning not in CONDITIONINGS:
      raise ValueError(f"{name}.conditioning must be one of {CONDITIONINGS}, "
                       f"got {self.conditioning!r}")
    if self.impl not in layers.IMPLS:
      raise ValueError(f"{name}.impl must be one of {layers.IMPLS}, got {self.impl!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, labels_onehot: Array | None, train: bool) -> dict[str, Array]:
    """Runs D on a batch of images (and, for "input", their labels).

    Args:
      x: f32[b, 64, 64, channels], real or generated, in [-1, 1].
      labels_onehot: f32[b, num_classes] one-hot labels; required for "input",
        may be None for "auxiliary" (where D does not see it; a given one is
        only shape-checked).
      train: batch statistics (and their running averages are updated, when
        "batch_stats" is mutable) if True; running averages if False.

    Returns:
      A dict of float32 arrays:
        "logit": [b] real-vs-generated logit, D(x) = sigmoid(logit);
        "class_logit": [b, num_classes] class logits ("auxiliary" only);
        "feature": [b, 1024] the LeakyReLU output of the Dense 1024 layer.
    """
    expected = (dcgan.IMAGE_SIZE, dcgan.IMAGE_SIZE, self.channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
      raise ValueError(f"ConditionalDiscriminator expects images [batch, {dcgan.IMAGE_SIZE}, "
                       f"{dcgan.IMAGE_SIZE}, {self.channels}] (NHWC), got shape {tuple(x.shape)}")
    if labels_onehot is None:
      if self.conditioning == "input":
        raise ValueError("ConditionalDiscriminator(conditioning='input') needs labels_onehot, "
                         "got None")
    else:
      _check_onehot(labels_onehot, x.shape[0], self.num_classes, "ConditionalDiscriminator")
    if self.conditioning == "input":
      x = one_hot_tiled(x, labels_onehot)
    bn = functools.partial(dcgan._batch_norm, train, self.dtype, self.param_dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=self.kernel_init)

    for i, (features, stride) in enumerate(D_BODY, start=1):
      x = layers.Conv(features, D_KERNEL, strides=stride, impl=self.impl, dtype=self.dtype,
                      param_dtype=self.param_dtype, kernel_init=self.kernel_init,
                      name=f"conv{i}")(x)
      if i > 1 and self.batch_norm:  # DCGAN: no BatchNorm on D's input layer
        x = bn(f"conv{i}_bn")(x)
      x = dcgan._leaky_relu(x)
    x = x.reshape((x.shape[0], -1))
    x = dense(dcgan.D_HIDDEN, name="fc")(x)
    feature = dcgan._leaky_relu(bn("fc_bn")(x) if self.batch_norm else x)

    out = {"feature": feature.astype(jnp.float32)}
    if self.conditioning == "input":
      out["logit"] = dense(1, name="out")(feature)[:, 0].astype(jnp.float32)
    else:
      y = dense(1 + self.num_classes, name="out")(feature).astype(jnp.float32)
      out["logit"], out["class_logit"] = y[:, 0], y[:, 1:]
    return out
