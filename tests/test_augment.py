"""rsh.augment: seeded multispectral augmentations and the dihedral group of the square.

The group is checked exactly on a generic (random, so asymmetric) image against
numpy's rot90 / flips; the random transforms against what they must produce for
the draws they made; the cross-modal view against a copy of its old formula.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh import augment as aug

B, H, C = 16, 6, 5  # one shape throughout: jax compiles each random draw once per shape


@pytest.fixture(scope="module")
def x():
  return np.random.default_rng(0).normal(size=(B, H, H, C)).astype(np.float32)


def reference(img: np.ndarray, k: int) -> np.ndarray:
  """The documented convention in numpy: rot quarter turns on (h, w), then a mirror of w."""
  y = np.rot90(img, k % 4, axes=(-3, -2))
  return y[..., :, ::-1, :] if k >= 4 else y


def test_dihedral_matches_numpy_and_identity(x):
  np.testing.assert_array_equal(np.asarray(aug.dihedral(jnp.asarray(x), 0)), x)
  for k in range(aug.DIHEDRAL):
    np.testing.assert_array_equal(np.asarray(aug.dihedral(jnp.asarray(x), k)), reference(x, k))
    out = aug.dihedral(x, k)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, reference(x, k))
  # Non-square images with a static k: shapes swap under odd rotations.
  rect = x[:, :, :4]
  assert aug.dihedral(rect, 1).shape == (B, 4, H, C)
  np.testing.assert_array_equal(aug.dihedral(rect, 5), reference(rect, 5))
  with pytest.raises(ValueError, match="0..7"):
    aug.dihedral(x, 8)


def test_dihedral_group_is_exact(x):
  img = x[0]
  all8 = [aug.dihedral(img, k) for k in range(aug.DIHEDRAL)]
  assert len({a.tobytes() for a in all8}) == aug.DIHEDRAL  # eight distinct transforms
  for k in range(aug.DIHEDRAL):
    back = aug.dihedral(all8[k], aug.dihedral_inverse(k))
    np.testing.assert_array_equal(back, img)
    assert aug.dihedral_inverse(aug.dihedral_inverse(k)) == k
  index = {a.tobytes(): k for k, a in enumerate(all8)}
  for a, b in itertools.product(range(aug.DIHEDRAL), repeat=2):
    assert aug.dihedral(all8[a], b).tobytes() in index  # closure
  # The inverse, traced, agrees with the static one.
  traced = jax.jit(aug.dihedral_inverse)(jnp.arange(aug.DIHEDRAL))
  assert list(np.asarray(traced)) == [aug.dihedral_inverse(k) for k in range(aug.DIHEDRAL)]


def test_traced_k_and_dihedral_all(x):
  f = jax.jit(aug.dihedral)
  for k in range(aug.DIHEDRAL):
    np.testing.assert_array_equal(np.asarray(f(x, jnp.int32(k))), reference(x, k))
  ks = (np.arange(B) + 3) % aug.DIHEDRAL
  per_image = jax.jit(jax.vmap(aug.dihedral))(x, jnp.asarray(ks, jnp.int32))
  for i in range(B):
    np.testing.assert_array_equal(np.asarray(per_image[i]), reference(x[i], ks[i]))
  stacked_j = np.asarray(aug.dihedral_all(jnp.asarray(x)))
  stacked_n = aug.dihedral_all(x)
  assert isinstance(stacked_n, np.ndarray) and stacked_n.shape == (aug.DIHEDRAL,) + x.shape
  np.testing.assert_array_equal(stacked_n, stacked_j)
  for k in range(aug.DIHEDRAL):
    np.testing.assert_array_equal(stacked_n[k], reference(x, k))
  with pytest.raises(ValueError, match="square"):
    f(x[:, :, :4], jnp.int32(1))


def test_random_dihedral_picks_group_members(x):
  rng = jax.random.PRNGKey(1)
  out = np.asarray(jax.jit(aug.random_dihedral)(x, rng))
  np.testing.assert_array_equal(out, np.asarray(aug.random_dihedral(x, rng)))
  picked = set()
  for i in range(B):
    hits = [k for k in range(aug.DIHEDRAL) if np.array_equal(out[i], reference(x[i], k))]
    assert len(hits) == 1
    picked.add(hits[0])
  assert len(picked) > 4  # per image, not one draw for the batch


def find_windows(crop: np.ndarray, img: np.ndarray) -> list:
  s = crop.shape[0]
  return [(i, j) for i in range(img.shape[0] - s + 1) for j in range(img.shape[1] - s + 1)
          if np.array_equal(img[i:i + s, j:j + s], crop)]


def test_random_crop_is_a_window(x):
  rng = jax.random.PRNGKey(3)
  crops = np.asarray(jax.jit(aug.random_crop, static_argnums=(2, 3))(x, rng, 3, False))
  assert crops.shape == (B, 3, 3, C)
  offsets = []
  for i in range(B):
    hits = find_windows(crops[i], x[i])  # every band from the same offset
    assert hits
    offsets.append(hits[0])
  assert len(set(offsets)) > 4  # per image
  full = aug.random_crop(x, rng, H)
  np.testing.assert_array_equal(np.asarray(full), x)
  resized = np.asarray(aug.random_crop(x, rng, 3, resize=True))
  assert resized.shape == x.shape
  expect = jax.image.resize(jnp.asarray(crops), x.shape, "bilinear")
  np.testing.assert_allclose(resized, np.asarray(expect), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="crop size"):
    aug.random_crop(x, rng, H + 1)


def test_band_gain_per_band_constant(x):
  pos = np.abs(x) + 0.5
  low, high = 0.8, 1.25
  out = np.asarray(aug.band_gain(pos, jax.random.PRNGKey(4), low, high))
  gain = out / pos
  np.testing.assert_allclose(gain, gain[:, :1, :1, :] * np.ones_like(gain), rtol=1e-5)
  g = gain[:, 0, 0, :]
  assert np.all(g >= low - 1e-6) and np.all(g <= high + 1e-6)
  assert len(np.unique(np.round(g, 5))) == B * C  # per image and band


def test_gaussian_noise_std():
  zeros = jnp.zeros((B, H, H, C))
  out = np.asarray(aug.gaussian_noise(zeros, jax.random.PRNGKey(5), 0.3))
  assert abs(out.std() - 0.3) < 0.02 and abs(out.mean()) < 0.02


@pytest.mark.parametrize("fn, args", [
    (aug.random_dihedral, ()), (aug.random_crop, (4,)), (aug.band_gain, (0.5, 2.0)),
    (aug.gaussian_noise, (0.1,)), (aug.random_flips_noise, (0.1,))])
def test_seeded(x, fn, args):
  a = np.asarray(fn(x, jax.random.PRNGKey(6), *args))
  b = np.asarray(fn(x, jax.random.PRNGKey(6), *args))
  c = np.asarray(fn(x, jax.random.PRNGKey(7), *args))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def old_crossmodal_augment(x, rng, noise=0.1):
  """rsh.methods.crossmodal.augment as it was before the move (a frozen copy)."""
  b = x.shape[0]
  k_h, k_v, k_t, k_n = jax.random.split(rng, 4)
  flag = lambda k: jax.random.bernoulli(k, 0.5, (b, 1, 1, 1))
  x = jnp.where(flag(k_h), x[:, :, ::-1], x)
  x = jnp.where(flag(k_v), x[:, ::-1], x)
  x = jnp.where(flag(k_t), jnp.swapaxes(x, 1, 2), x)
  return x + noise * jax.random.normal(k_n, x.shape, x.dtype)


def test_random_flips_noise_is_the_old_crossmodal_view(x):
  xj = jnp.asarray(x)
  for seed, noise in ((0, 0.1), (11, 0.5), (12, 0.0)):
    rng = jax.random.PRNGKey(seed)
    new = np.asarray(aug.random_flips_noise(xj, rng, noise))
    np.testing.assert_array_equal(new, np.asarray(old_crossmodal_augment(xj, rng, noise)))
  flips = new  # the last, noise-free
  for i in range(B):  # with no noise, a member of the group
    assert any(np.array_equal(flips[i], reference(x[i], k)) for k in range(aug.DIHEDRAL))
