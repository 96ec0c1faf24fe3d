"""A frozen pretrained backbone inside the jitted training step.

The cached feature views (`rsh.features`: plain, the 8 dihedral transforms) give
augmentation at no backbone cost, but only the augmentations made in advance.
Random crops and per-band gains draw a new image every step, so their features
must be computed in the step: images -> `augment_rgb` -> the backbone (eval
mode, BatchNorm statistics fixed, no gradient) -> the hashing network.

The backbone is a network of the train state with no optimiser state
(`frozen_net`): its parameters travel with the state (checkpointed, sharded like
any other) and a step returns them untouched. Which path to use, measured on
2 CPU cores in `benchmarks/frozen_backbone.py` (docs/RESULTS.md): the cached
views train hundreds of times faster per image, so on a CPU they are the
choice whenever their augmentations are enough; the in-step backbone is for an
accelerator, or augmentations no cache can hold.

    aug = frozen.augmentation(config.model.augment, size=64)
    forward = frozen.Backbone("efficientnet_lite0")
    net = frozen.frozen_net(rweights.load_pretrained("efficientnet_lite0"))
    feats = forward(net, frozen.augment_rgb(rgb, rng, aug))   # f32[b, 1280]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsh import augment
from rsh import features as rfeatures
from rsh import update

# config.model.augment keys: crop (window size, resized back; None = no crop),
# gain ([low, high] per image and band; None = none), dihedral (a random one of 8).
AUGMENT_DEFAULTS = {"crop": 48, "gain": (0.8, 1.2), "dihedral": True}


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Random image augmentations, drawn per image in the step."""
  crop: int | None = AUGMENT_DEFAULTS["crop"]
  gain: tuple[float, float] | None = AUGMENT_DEFAULTS["gain"]
  dihedral: bool = True


def augmentation(cfg: Mapping[str, Any] | None, size: int,
                 where: str = "config.model.augment") -> Augmentation:
  """An `Augmentation` from a config mapping, checked against the image size."""
  given = {} if cfg is None else {k: cfg[k] for k in cfg.keys()}
  unknown = sorted(set(given) - set(AUGMENT_DEFAULTS))
  if unknown:
    raise ValueError(f"{where}: unknown keys {unknown}; known: {', '.join(AUGMENT_DEFAULTS)}")
  a = {**AUGMENT_DEFAULTS, **given}
  crop, gain = a["crop"], a["gain"]
  if crop is not None and (isinstance(crop, bool) or not isinstance(crop, (int, np.integer))
                           or not 1 <= crop <= size):
    raise ValueError(f"{where}.crop must be an int in 1..{size} (the image size) or None; "
                     f"got {crop!r}")
  if gain is not None:
    gain = tuple(float(g) for g in gain)
    if len(gain) != 2 or not 0 < gain[0] <= gain[1]:
      raise ValueError(f"{where}.gain must be (low, high) with 0 < low <= high, or None; "
                       f"got {a['gain']!r}")
  if not isinstance(a["dihedral"], (bool, np.bool_)):
    raise ValueError(f"{where}.dihedral must be True or False; got {a['dihedral']!r}")
  return Augmentation(crop=None if crop is None else int(crop), gain=gain,
                      dihedral=bool(a["dihedral"]))


def augment_rgb(rgb: jax.Array, rng: jax.Array, aug: Augmentation) -> jax.Array:
  """rgb f32[b, h, h, 3] in [0, 1] -> one random draw per image: a dihedral
  transform, a crop resized back to h x h, a gain per band (clipped to [0, 1])."""
  k_dihedral, k_crop, k_gain = jax.random.split(rng, 3)
  x = jnp.asarray(rgb, jnp.float32)
  if aug.dihedral:
    x = augment.random_dihedral(x, k_dihedral)
  if aug.crop is not None and aug.crop < x.shape[-2]:
    x = augment.random_crop(x, k_crop, aug.crop, resize=True)
  if aug.gain is not None:
    x = jnp.clip(augment.band_gain(x, k_gain, *aug.gain), 0.0, 1.0)
  return x


def frozen_net(variables: Mapping[str, Any]) -> update.NetState:
  """A network of the train state that no step updates: no optimiser state."""
  to_jax = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)
  return update.NetState(params=to_jax(variables["params"]),
                         batch_stats=to_jax(variables.get("batch_stats", {})),
                         opt_state=optax.EmptyState())


class Backbone:
  """`(net, rgb f32[b, h, w, 3] in [0, 1]) -> f32[b, d]`: `rsh.features`' forward
  pass (the same preprocessing as the cached views) under stop_gradient."""

  def __init__(self, name: str, gain: float = rfeatures.DEFAULT_GAIN):
    self.name, self.feature_dim = name, rfeatures.get_backbone(name).feature_dim
    self._forward = rfeatures.backbone_forward(name, gain)

  def __call__(self, net: update.NetState, rgb: jax.Array) -> jax.Array:
    variables = {"params": net.params, "batch_stats": net.batch_stats}
    return jax.lax.stop_gradient(self._forward(variables, rgb))
