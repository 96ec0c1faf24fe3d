"""A hashing MLP on frozen features: Dense -> activation, ..., Dense -> l bits.

    model = HashMLP(hidden=(1024, 512), bits=64)          # tanh codes
    out = model.apply(variables, x)                        # x: f32[b, d]
    out["hash"]     # f32[b, l] in [-1, 1]: the code is its sign
    out["logits"]   # f32[b, l] before the output activation

`output="sigmoid"` (MiLAN's, and the thesis ch. 4's head) adds out["sigmoid"]
in [0, 1] (the code is s >= 0.5) and gives out["hash"] = 2 s - 1, so every
evaluator thresholds "hash" at 0 whatever the head. `output="linear"`: hash =
logits.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rsh.models.whitening import DomainWhitening

ACTIVATIONS = {
    "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope=0.2),
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "gelu": nn.gelu,
}
OUTPUTS = ("tanh", "sigmoid", "linear")


class HashMLP(nn.Module):
  """Fully connected layers of widths `hidden`, then `bits` outputs."""
  hidden: Sequence[int] = (1024, 512)
  bits: int = 64
  activation: str = "leaky_relu"
  output: str = "tanh"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    del train  # no BatchNorm or dropout: the same function in both modes
    act = ACTIVATIONS[self.activation]
    for width in self.hidden:
      x = act(nn.Dense(width)(x))
    logits = nn.Dense(self.bits)(x)
    if self.output == "tanh":
      return {"hash": jnp.tanh(logits), "logits": logits}
    if self.output == "sigmoid":
      s = nn.sigmoid(logits)
      return {"hash": 2.0 * s - 1.0, "sigmoid": s, "logits": logits}
    return {"hash": logits, "logits": logits}


class WhitenedHashMLP(nn.Module):
  """MIRS's Domain Whitening Transform of the features, then the hashing MLP.

  `DomainWhitening` (`rsh.models.whitening`, param / batch_stats collection
  "dwt") whitens each row with its domain's statistics (its batch's in
  training, the running ones otherwise), then `mlp` (params "mlp") codes it.
  Rows without a domain given (`domains=None`: encoding) use `target`'s.
  """
  mlp: HashMLP
  num_domains: int = 1
  group: int = 32
  eps: float = 1e-3
  momentum: float = 0.1
  target: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, domains: jax.Array | None = None,
               train: bool = False) -> dict[str, jax.Array]:
    if domains is None:
      domains = jnp.full(x.shape[:1], self.target, jnp.int32)
    x = DomainWhitening(self.num_domains, self.group, self.eps, self.momentum,
                        name="dwt")(x, domains, train=train)
    return self.mlp(x, train=train)
