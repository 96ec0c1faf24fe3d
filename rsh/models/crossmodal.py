"""One small CNN encoder per modality, each with a hash head into the same l bits.

The cross-modal proposal trains one CNN per modality from scratch (no ImageNet
weights): Sentinel-1 (2 channels, VV / VH in dB) and Sentinel-2 (10 or 12
bands) differ in statistics and structure, so they share only the Hamming
space, not the layers. `CrossModalHasher` holds the encoders by modality name
and runs the ones it is given inputs for, so a query of one modality is
encoded without the other.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
BN_MOMENTUM = 0.9


class Encoder(nn.Module):
  """Conv (3x3, stride 2 after the first) + BatchNorm + ReLU blocks, global
  average pooling, a dense feature layer and a tanh hash layer.

  Returns {"feature": f32[b, feature_dim] (ReLU), "hash": f32[b, bits] in (-1, 1)}.
  Any square input size works (the pooling is global).
  """
  bits: int
  widths: Sequence[int] = (32, 64, 128)
  feature_dim: int = 256

  @nn.compact
  def __call__(self, x: Array, train: bool) -> dict[str, Array]:
    for i, width in enumerate(self.widths):
      x = nn.Conv(width, (3, 3), strides=(1, 1) if i == 0 else (2, 2), padding="SAME",
                  use_bias=False, name=f"conv{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, name=f"bn{i}")(x)
      x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    feature = nn.relu(nn.Dense(self.feature_dim, name="feature")(x))
    return {"feature": feature, "hash": jnp.tanh(nn.Dense(self.bits, name="hash")(feature))}


class CrossModalHasher(nn.Module):
  """Encoders by modality: `{m: x_m} -> {f"{m}_hash", f"{m}_feature"}` for the
  modalities given (the others' parameters are untouched)."""
  modalities: Sequence[str]
  bits: int
  widths: Sequence[int] = (32, 64, 128)
  feature_dim: int = 256

  def setup(self):
    self.encoders = {m: Encoder(self.bits, tuple(self.widths), self.feature_dim, name=m)
                     for m in self.modalities}

  def __call__(self, inputs: Mapping[str, Array], train: bool) -> dict[str, Array]:
    unknown = set(inputs) - set(self.modalities)
    if unknown:
      raise ValueError(f"CrossModalHasher: unknown modalities {sorted(unknown)}; "
                       f"it has {list(self.modalities)}")
    return {f"{m}_{k}": v for m, x in inputs.items()
            for k, v in self.encoders[m](x, train).items()}


class CodeDiscriminator(nn.Module):
  """A small MLP on codes: the logit that a code comes from the `real` modality
  (DUCH's adversarial alignment of the two modalities' code distributions).
  No normalisation layers, so the input gradient of each row is its own
  (needed by the gradient penalty)."""
  hidden: Sequence[int] = (128, 64)

  @nn.compact
  def __call__(self, codes: Array, train: bool = False) -> Array:
    del train
    x = codes
    for i, width in enumerate(self.hidden):
      x = nn.leaky_relu(nn.Dense(width, name=f"dense{i}")(x), 0.2)
    return nn.Dense(1, name="logit")(x)[:, 0]
