"""An embedded procedural EuroSAT look-alike, made at run time from a seed.

Each patch is a spatial mixture of a few surface materials ("endmembers": tree
canopy, grass, green crop, bare soil, dry vegetation, water, roofs, asphalt),
each with its own 13-band reflectance spectrum, arranged in a layout typical of
the class: striped fields, rows of orchard trees, blobby canopy, a road or river
through vegetation, small or large building blocks, open water. Then per image
illumination gain, haze, spectral jitter and sensor noise blur the classes into
each other, so retrieval on it is informative but not trivial.

No files; deterministic given (seed, n_per_class); ~1,000 patches per second or
more on one core.
"""

from __future__ import annotations

import numpy as np

from rsh.data import bands
from rsh.data import dataset

CLASS_NAMES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
               "Pasture", "PermanentCrop", "Residential", "River", "SeaLake")
SIZE = 64
DEFAULT_N_PER_CLASS = 100

# Mean top-of-atmosphere digital numbers of each material, in EUROSAT_BANDS
# order (B01 ... B12, B8A). Shapes follow textbook spectra at EuroSAT's scale:
# vegetation dark in red with the red-edge rise to a bright NIR plateau, soil
# rising slowly into a bright SWIR, water dark beyond green, man-made surfaces
# flat and bright with high SWIR. B10 (cirrus) is set separately.
_SPECTRA = {
    #          B01   B02   B03   B04   B05   B06   B07   B08   B09  B10   B11   B12   B8A
    "tree":  (1130,  820,  680,  410,  720, 2050, 2650, 2600,  760,  0, 1280,  520, 2970),
    "grass": (1280, 1000,  960,  670, 1210, 2820, 3440, 3390, 1150,  0, 2060, 1000, 3820),
    "crop":  (1250,  950,  900,  600, 1150, 2900, 3700, 3650, 1200,  0, 2000,  950, 4100),
    "soil":  (1550, 1450, 1600, 1900, 2100, 2350, 2500, 2450,  950,  0, 3400, 2700, 2650),
    "dry":   (1400, 1250, 1250, 1350, 1650, 2100, 2350, 2300, 1000,  0, 2800, 1900, 2550),
    "water": (1190,  920,  770,  490,  500,  390,  390,  330,   95,  0,  100,   66,  300),
    "roof":  (1850, 1750, 1700, 1750, 1850, 2050, 2200, 2100,  650,  0, 2600, 2100, 2300),
    "road":  (1500, 1350, 1300, 1300, 1350, 1500, 1600, 1550,  500,  0, 1900, 1600, 1700),
}
_B10 = bands.EUROSAT_BANDS.index("B10")
# Haze adds most to the short (blue) wavelengths.
_HAZE = np.array([1.0, 0.8, 0.55, 0.4, 0.3, 0.2, 0.15, 0.15, 0.1, 0, 0.05, 0.03, 0.12],
                 np.float32)

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def _uniform(rng, m, lo, hi):
  """f32[m, 1, 1]: one value per image, broadcastable over the pixels."""
  return rng.uniform(lo, hi, (m, 1, 1)).astype(np.float32)


def _rotated(rng, m, centre=True):
  """Pixel coordinates along and across a random direction: 2 x f32[m, 64, 64]."""
  theta = _uniform(rng, m, 0, np.pi)
  c, s = np.cos(theta), np.sin(theta)
  x, y = (_XX - SIZE / 2, _YY - SIZE / 2) if centre else (_XX, _YY)
  return x * c + y * s, -x * s + y * c


def _interp_matrix(cells: int) -> np.ndarray:
  """f32[64, cells + 1]: bilinear upsampling of a coarse grid to 64 pixels."""
  pos = np.linspace(0, cells, SIZE, dtype=np.float32)
  lo = np.minimum(np.floor(pos).astype(int), cells - 1)
  frac = pos - lo
  w = np.zeros((SIZE, cells + 1), np.float32)
  w[np.arange(SIZE), lo] = 1 - frac
  w[np.arange(SIZE), lo + 1] = frac
  return w


def _smooth(rng, m, cells):
  """f32[m, 64, 64] smooth random field, ~unit variance; blobs ~64 / cells px."""
  w = _interp_matrix(cells)
  coarse = rng.standard_normal((m, cells + 1, cells + 1), dtype=np.float32)
  field = np.einsum("ij,njk,lk->nil", w, coarse, w, optimize=True)
  return field / (field.std(axis=(1, 2), keepdims=True) + 1e-6)


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _band(dist, half_width):
  """Soft 0..1 indicator of |dist| < half_width with a 1-px ramp."""
  return np.clip(half_width + 0.5 - np.abs(dist), 0, 1)


def _cell_values(rng, m, iu, iv, lo, hi, k=64):
  """f32[m, 64, 64]: one random value per grid cell (iu, iv integer cell ids)."""
  table = rng.uniform(lo, hi, (m, k * k)).astype(np.float32)
  flat = (np.mod(iu, k) * k + np.mod(iv, k)).reshape(m, -1)
  return np.take_along_axis(table, flat, axis=1).reshape(iu.shape)


def _vegetation_background(rng, m):
  """Abundances of a mixed grass / dry / tree background."""
  dry = _sigmoid(1.5 * _smooth(rng, m, 4) + _uniform(rng, m, -2, 1)) * 0.8
  tree = _sigmoid(2 * _smooth(rng, m, 6) - 2.5) * 0.6 * _uniform(rng, m, 0, 1)
  grass = 1 - dry - tree
  return {"grass": grass, "dry": dry, "tree": tree}


def _annual_crop(rng, m):
  # Two parcels split by a random line, each ploughed in its own direction.
  side = (_rotated(rng, m)[0] + _uniform(rng, m, -20, 20)) > 0
  rows = []
  for _ in range(2):
    u, _ = _rotated(rng, m)
    period = _uniform(rng, m, 3, 10)
    phase = _uniform(rng, m, 0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + phase)
    rows.append(stripes * _uniform(rng, m, 0.2, 1.0))  # crop growth stage
  crop = np.where(side, rows[0], rows[1])
  return {"crop": crop, "soil": (1 - crop) * 0.8, "dry": (1 - crop) * 0.2}


def _permanent_crop(rng, m):
  # Orchards and vineyards: trees on a lattice, dry soil or grass in between.
  u, v = _rotated(rng, m)
  pu, pv = _uniform(rng, m, 4, 8), _uniform(rng, m, 3, 6)
  du = (u / pu + _uniform(rng, m, 0, 1)) % 1 - 0.5
  dv = (v / pv + _uniform(rng, m, 0, 1)) % 1 - 0.5
  radius = _uniform(rng, m, 0.12, 0.3)
  dots = np.exp(-(du**2 + dv**2) / (2 * radius**2))
  grass = _uniform(rng, m, 0, 0.7)
  rest = 1 - dots
  return {"tree": dots, "soil": rest * (1 - grass) * 0.6, "dry": rest * (1 - grass) * 0.4,
          "grass": rest * grass}


def _forest(rng, m):
  canopy = _smooth(rng, m, 12)
  gaps = _sigmoid(2 * _smooth(rng, m, 5) - 3) * 0.4
  tree = np.clip(1 - gaps, 0, 1)
  # Crowns and their shadows: brightness, not material, changes across a canopy.
  return {"tree": tree * (1 + 0.12 * canopy), "grass": gaps}


def _herbaceous(rng, m):
  a = _vegetation_background(rng, m)
  soil = _sigmoid(2 * _smooth(rng, m, 8) - 3) * 0.4
  return {k: v * (1 - soil) for k, v in a.items()} | {"soil": soil}


def _pasture(rng, m):
  dry = _sigmoid(1.5 * _smooth(rng, m, 3) - 2.5) * 0.5
  lush = 1 + 0.05 * _smooth(rng, m, 16)
  return {"grass": (1 - dry) * lush, "dry": dry}


def _highway(rng, m):
  a = _vegetation_background(rng, m)
  u, _ = _rotated(rng, m)
  road = _band(u - _uniform(rng, m, -16, 16), _uniform(rng, m, 1.5, 4))
  concrete = _uniform(rng, m, 0.3, 1)
  out = {k: v * (1 - road) for k, v in a.items()}
  out["roof"] = road * concrete
  out["road"] = road * (1 - concrete)
  return out


def _river(rng, m):
  a = _vegetation_background(rng, m)
  u, v = _rotated(rng, m)
  wavelength = _uniform(rng, m, 30, 90)
  centre = (_uniform(rng, m, -14, 14)
            + _uniform(rng, m, 2, 10) * np.sin(2 * np.pi * v / wavelength
                                               + _uniform(rng, m, 0, 2 * np.pi)))
  water = _band(u - centre, _uniform(rng, m, 2, 7))
  out = {k: val * (1 - water) for k, val in a.items()}
  out["water"] = water
  return out


def _blocks(rng, m, size_lo, size_hi, fill, street):
  """Buildings on a rotated grid: (roof abundance, street abundance)."""
  u, v = _rotated(rng, m, centre=False)
  size = _uniform(rng, m, size_lo, size_hi)
  fu = u / size + _uniform(rng, m, 0, 1)
  fv = v / size + _uniform(rng, m, 0, 1)
  iu, iv = np.floor(fu).astype(np.int64), np.floor(fv).astype(np.int64)
  # Each cell: a building with probability `fill`, of random footprint.
  present = _cell_values(rng, m, iu, iv, 0, 1) < fill
  extent = _cell_values(rng, m, iu, iv, 0.25, 0.45)
  inside = (np.abs(fu - iu - 0.5) < extent) & (np.abs(fv - iv - 0.5) < extent)
  roof = (present & inside).astype(np.float32)
  brightness = _cell_values(rng, m, iu, iv, 0.75, 1.3)
  near_street = (np.abs(fu - iu - 0.5) > 0.5 - street) | (np.abs(fv - iv - 0.5) > 0.5 - street)
  streets = near_street.astype(np.float32) * (1 - roof)
  return roof * brightness, streets


def _residential(rng, m):
  roof, streets = _blocks(rng, m, 5, 9, fill=0.75, street=0.12)
  built = np.clip(roof, 0, 1)
  green = 1 - built - streets
  a = _vegetation_background(rng, m)
  out = {k: v * green for k, v in a.items()}
  out["roof"], out["road"] = roof, streets
  return out


def _industrial(rng, m):
  roof, _ = _blocks(rng, m, 14, 28, fill=0.85, street=0.1)
  paved = 1 - np.clip(roof, 0, 1)  # yards and parking, not streets
  green = paved * _sigmoid(2 * _smooth(rng, m, 4) - 2.5) * 0.5
  return {"roof": roof, "road": paved - green, "grass": green * 0.5, "dry": green * 0.5}


def _sea_lake(rng, m):
  # A third of the lakes show some shore.
  u, _ = _rotated(rng, m)
  shore_at = np.where(rng.uniform(size=(m, 1, 1)) < 0.35, _uniform(rng, m, 18, 40), 1e3)
  land = np.clip(u - shore_at + 0.5, 0, 1)
  ripple = 1 + 0.03 * _smooth(rng, m, 6)
  sediment = _sigmoid(_smooth(rng, m, 3) - 1) * _uniform(rng, m, 0, 0.3)
  water = (1 - land) * ripple
  return {"water": water * (1 - sediment), "soil": (1 - land) * sediment * 0.3,
          "tree": land * 0.6, "grass": land * 0.4}


_RECIPES = {
    "AnnualCrop": _annual_crop, "Forest": _forest, "HerbaceousVegetation": _herbaceous,
    "Highway": _highway, "Industrial": _industrial, "Pasture": _pasture,
    "PermanentCrop": _permanent_crop, "Residential": _residential, "River": _river,
    "SeaLake": _sea_lake,
}


def _render(rng, abundances: dict[str, np.ndarray], m: int) -> np.ndarray:
  """Mixes the materials with per-image spectra, lighting and noise: f32[m, 64, 64, 13]."""
  nb = len(bands.EUROSAT_BANDS)
  names = list(abundances)
  spectra = np.asarray([_SPECTRA[k] for k in names], np.float32)          # [e, 13]
  # Each image sees each material a little differently (moisture, phenology,
  # roofing), under its own illumination and atmosphere.
  jitter = np.exp(rng.normal(0, 0.08, (m, len(names), nb)))
  gain = np.exp(rng.normal(0, 0.15, (m, 1, 1)))
  tilt = np.exp(rng.normal(0, 0.05, (m, 1, nb)))
  spectra = (spectra * jitter * gain * tilt).astype(np.float32)           # [m, e, 13]
  mix = np.stack([abundances[k].reshape(m, SIZE * SIZE) for k in names], axis=-1)
  img = np.matmul(mix, spectra)                                           # [m, 4096, 13]
  img += rng.uniform(0, 250, (m, 1, 1)).astype(np.float32) * _HAZE
  sigma = img * np.float32(0.03)
  sigma += 20
  # Triangular (sum of two uniform bytes) instead of Gaussian noise: it looks
  # the same at this level and is several times faster to draw.
  u8 = np.frombuffer(rng.bytes(2 * img.size), np.uint8).reshape((2,) + img.shape)
  noise = u8[0].astype(np.float32)
  noise += u8[1]
  noise -= 255
  noise *= sigma * np.float32(1 / 104.5)  # unit variance
  img += noise
  # Rare specular glints (glass, metal roofs, sun on water) beyond 12 bits.
  n_glint = rng.binomial(m * SIZE * SIZE, 2e-4)
  at = rng.integers(0, m * SIZE * SIZE, n_glint)
  flat = img.reshape(m * SIZE * SIZE, nb)
  flat[at] *= rng.uniform(2, 5, (n_glint, 1)).astype(np.float32)
  # B10 (cirrus) sees almost nothing of the ground.
  img[..., _B10] = (12 + rng.normal(0, 3, (m, 1)) + rng.normal(0, 1.5, (m, SIZE * SIZE)))
  return img.reshape(m, SIZE, SIZE, nb)


def make_images(n_per_class: int = DEFAULT_N_PER_CLASS, seed: int = 0):
  """The demo arrays, classes in `CLASS_NAMES` order.

  Returns:
    images: uint16[10 * n_per_class, 64, 64, 13] raw digital numbers in
      `bands.EUROSAT_BANDS` order; labels: int32[10 * n_per_class].
  """
  n = int(n_per_class)
  if n < 1:
    raise bands.DataError(f"demo: n_per_class must be >= 1, not {n_per_class}")
  if int(seed) < 0:
    raise bands.DataError(f"demo: seed must be >= 0, not {seed}")
  images = np.empty((len(CLASS_NAMES) * n, SIZE, SIZE, len(bands.EUROSAT_BANDS)), np.uint16)
  for c, name in enumerate(CLASS_NAMES):
    # One stream per class: a class looks the same whatever the others do.
    rng = np.random.default_rng((int(seed), c))
    abundances = _RECIPES[name](rng, n)
    img = _render(rng, abundances, n)
    img += 0.5  # round half up on the truncating cast below
    np.clip(img, 1, np.iinfo(np.uint16).max, out=img)
    images[c * n:(c + 1) * n] = img
  labels = np.repeat(np.arange(len(CLASS_NAMES), dtype=np.int32), n)
  return images, labels


@dataset.register("demo")
def _load(*, source, sub, dir, cache_dir, seed, n_per_class, progress):
  """The "demo" source of `rsh.data.load`: no files, no cache; `n_per_class` images per class."""
  del cache_dir, progress  # made in memory, fast
  if dir is not None or sub:
    raise bands.DataError(f"source=demo takes no dir and no sub-name (got dir={dir!r}, "
                          f"{source!r})")
  n = DEFAULT_N_PER_CLASS if n_per_class is None else int(n_per_class)
  images, labels = make_images(n, seed)
  return dataset.Dataset(images, labels, CLASS_NAMES, bands.EUROSAT_BANDS, "demo")
