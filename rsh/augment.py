"""Pure, seeded, jittable augmentations of multispectral images.

Images are `[..., h, w, c]` with any number of bands c; the random ones take a
batch `[b, h, w, c]` and draw one independent transform per image from `rng`
(same rng -> same output). Every spatial transform moves whole pixels, so all
bands of an image get the same geometry.

The dihedral group of the square (`DIHEDRAL` = 8 elements) acts on the h, w
axes (-3, -2). Element k = 4 * flip + rot, flip in {0, 1}, rot in 0..3:

    dihedral(x, k) = flip_w(rot90(x, rot)) if flip else rot90(x, rot)

rot90 is `np.rot90(x, rot, axes=(-3, -2))` (counter-clockwise quarter turns as
the array is printed, rows down); flip_w reverses the w axis (a mirror left to
right). k = 0 is the identity, k = 1..3 the rotations, k = 4..7 the four
reflections (each its own inverse). A Python int k works on any h x w image
(numpy in -> numpy out); a traced int32 k (under jit / vmap) needs h == w.

`random_flips_noise` is the second view of the cross-modal methods
(`rsh.methods.crossmodal`, DUCH's intra-modal term): its draws are fixed, as
results depend on them bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DIHEDRAL", "dihedral", "dihedral_inverse", "dihedral_all", "random_dihedral", "random_crop",
    "band_gain", "gaussian_noise", "random_flips_noise",
]

DIHEDRAL = 8
_H, _W = -3, -2


# ---------------------------------------------------------------------------
# The dihedral group of the square.

def _xp(x):
  return np if isinstance(x, np.ndarray) else jnp


def _static(x, k: int):
  xp = _xp(x)
  y = xp.rot90(x, k % 4, axes=(_H, _W))
  return xp.flip(y, _W) if k >= 4 else y


def dihedral(x, k):
  """Element k (0..7, convention above) of the dihedral group applied to x [..., h, w, c].

  k a Python (or numpy) int: any h, w, numpy stays numpy; k a traced int32
  scalar: `jax.lax.switch` over the eight, which needs a square image."""
  if isinstance(k, (int, np.integer)):
    if not 0 <= k < DIHEDRAL:
      raise ValueError(f"dihedral element k must be in 0..{DIHEDRAL - 1}, got {k}")
    return _static(x, int(k))
  if x.shape[_H] != x.shape[_W]:
    raise ValueError(f"a traced dihedral k needs square images, got h, w = "
                     f"{x.shape[_H]}, {x.shape[_W]}")
  branches = [lambda y, j=j: _static(y, j) for j in range(DIHEDRAL)]
  return jax.lax.switch(jnp.asarray(k, jnp.int32), branches, jnp.asarray(x))


def dihedral_inverse(k):
  """The k' with dihedral(dihedral(x, k), k') == x: rotations invert, reflections are their own.

  Python int in, Python int out; a traced k gives a traced k'."""
  if isinstance(k, (int, np.integer)):
    k = int(k)
    return k if k >= 4 else (4 - k) % 4
  k = jnp.asarray(k, jnp.int32)
  return jnp.where(k >= 4, k, (4 - k) % 4)


def dihedral_all(x):
  """All eight transforms of x [..., h, h, c] stacked in k order: [8, ..., h, h, c].

  numpy in -> numpy out (the same values jax gives)."""
  return _xp(x).stack([_static(x, k) for k in range(DIHEDRAL)])


def random_dihedral(x: jax.Array, rng: jax.Array) -> jax.Array:
  """One uniformly drawn dihedral element per image of x [b, h, h, c]."""
  k = jax.random.randint(rng, (x.shape[0],), 0, DIHEDRAL)
  return jax.vmap(dihedral)(jnp.asarray(x), k)


# ---------------------------------------------------------------------------
# Crops, gains, noise.

def random_crop(x: jax.Array, rng: jax.Array, size: int, resize: bool = False) -> jax.Array:
  """A size x size window per image of x [b, h, w, c] at a uniform offset (the same for
  every band): [b, size, size, c], or with `resize` bilinearly resized back to [b, h, w, c].

  `size` and `resize` are static (Python values under jit)."""
  b, h, w, c = x.shape
  size = int(size)
  if not 0 < size <= min(h, w):
    raise ValueError(f"crop size must be in 1..{min(h, w)} for {h} x {w} images, got {size}")
  k_y, k_x = jax.random.split(rng)
  oy = jax.random.randint(k_y, (b,), 0, h - size + 1)
  ox = jax.random.randint(k_x, (b,), 0, w - size + 1)
  window = lambda img, y, x0: jax.lax.dynamic_slice(img, (y, x0, 0), (size, size, c))
  crops = jax.vmap(window)(jnp.asarray(x), oy, ox)
  if resize:
    crops = jax.image.resize(crops, (b, h, w, c), "bilinear").astype(crops.dtype)
  return crops


def band_gain(x: jax.Array, rng: jax.Array, low: float = 0.9, high: float = 1.1) -> jax.Array:
  """x [b, h, w, c] times a gain per image and band, uniform in [low, high], the same at
  every pixel (a per-band radiometric change)."""
  b, c = x.shape[0], x.shape[-1]
  x = jnp.asarray(x)
  gain = jax.random.uniform(rng, (b, 1, 1, c), x.dtype, low, high)
  return x * gain


def gaussian_noise(x: jax.Array, rng: jax.Array, std: float) -> jax.Array:
  """x plus i.i.d. Gaussian noise of standard deviation `std` (in x's units)."""
  x = jnp.asarray(x)
  return x + std * jax.random.normal(rng, x.shape, x.dtype)


def random_flips_noise(x: jax.Array, rng: jax.Array, noise: float = 0.1) -> jax.Array:
  """A random element of the dihedral group per image of x [b, h, h, c], as three fair coins
  (mirror w, mirror h, transpose, in that order), plus Gaussian noise of std `noise`.

  The cross-modal second view (inputs standardised). Draws: `jax.random.split(rng, 4)`
  -> one bernoulli [b, 1, 1, 1] per coin, then `gaussian_noise` with the fourth key."""
  b = x.shape[0]
  k_h, k_v, k_t, k_n = jax.random.split(rng, 4)
  flag = lambda k: jax.random.bernoulli(k, 0.5, (b, 1, 1, 1))
  x = jnp.where(flag(k_h), x[:, :, ::-1], x)
  x = jnp.where(flag(k_v), x[:, ::-1], x)
  x = jnp.where(flag(k_t), jnp.swapaxes(x, 1, 2), x)
  return gaussian_noise(x, k_n, noise)
