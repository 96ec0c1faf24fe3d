"""Source "demo_crossmodal": procedural Sentinel-2 / Sentinel-1 pairs of the same scenes.

The demo and test data of cross-modal hashing (S1 -> S2, S2 -> S1, S1 -> S1,
S2 -> S2): made at run time, no files, deterministic in the seed. Each scene
has 1-3 of 8 BigEarthNet-MM classes (`CLASS_NAMES`, spelt as in
`bigearthnet_common`'s NEW_LABELS; drawn with co-occurrence: forests with
forests and shrub, crops with crops and pastures, ...), laid out as the
Voronoi cells of 6 random seeds on warped coordinates, each cell one label of
the scene and each label at least 10 % of the patch. Both modalities see the
same label map:

- `images` (S2-like): uint16 reflectance-like digital numbers (~0-5000) in the
  10 bands `MS10`; each class its own smooth spectrum (vegetation's red edge,
  water dark in NIR and SWIR, urban bright and flat up to the SWIR), varied per
  scene and class, with per-class texture, a per-scene illumination gain and
  haze, and sensor noise.
- `views["s1"]` (S1-like): f32[n, size, size, 2], (VV, VH) in dB (mostly
  -25..0): a class mean backscatter (water very dark, urban bright in VV, forest
  high in VH) with a per-scene offset (incidence angle, moisture) and texture,
  times 4-look gamma speckle in linear power (Gamma(4, 1/4)), then
  10 log10. Its classes differ less than S2's, but clearly.

Options `size` (default 32 px a side) and `limit` (the number of pairs, default
600; the name matches bigearthnet's); `n_per_class` does not apply to
multi-hot labels and is refused. `splits` = a seeded 60 / 20 / 20 partition
"train" / "val" / "test"; `files` = "demo_000000", ... 600 pairs of 32 x 32 take
well under a second.
"""

from __future__ import annotations

import numpy as np

from rsh.data import bands
from rsh.data import dataset
from rsh.data.bands import DataError

CLASS_NAMES = ("Urban fabric", "Arable land", "Permanent crops", "Pastures",
               "Broad-leaved forest", "Coniferous forest", "Transitional woodland, shrub",
               "Inland waters")
BAND_NAMES = bands.MS10
S1_CHANNELS = ("VV", "VH")
DEFAULT_SIZE = 32
DEFAULT_N = 600
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
MIN_COVER = 0.1
_SEEDS = 6  # Voronoi seeds per scene

# Surface reflectance x 10,000 of each class, in MS10 order
# (B02 B03 B04 B05 B06 B07 B08 B8A B11 B12).
_SPECTRA = np.array([
    (1100, 1150, 1250, 1400, 1600, 1700, 1800, 1850, 2300, 2000),  # urban: flat, bright SWIR
    (700, 950, 1000, 1350, 2000, 2300, 2450, 2600, 2600, 1800),    # arable: crop and soil
    (550, 800, 800, 1200, 2100, 2500, 2700, 2850, 2300, 1500),     # permanent crops
    (400, 700, 500, 1000, 2500, 3100, 3300, 3500, 2200, 1200),     # pastures: strong red edge
    (300, 550, 350, 800, 2400, 3100, 3300, 3500, 1800, 850),       # broad-leaved forest
    (250, 400, 250, 550, 1400, 1800, 1900, 2000, 1100, 500),       # coniferous: darker NIR
    (450, 650, 550, 950, 1800, 2200, 2300, 2450, 2000, 1200),      # transitional woodland
    (500, 550, 400, 300, 250, 220, 200, 180, 100, 80),             # water: dark beyond green
], np.float32)
# Relative texture amplitude of each class: coarse (fields, crowns) and fine.
_S2_TEXTURE = np.array([(0.10, 0.20), (0.15, 0.05), (0.10, 0.10), (0.06, 0.03),
                        (0.08, 0.08), (0.06, 0.10), (0.12, 0.08), (0.02, 0.01)], np.float32)
# Haze adds most to the short wavelengths.
_HAZE = np.array([1.0, 0.8, 0.6, 0.45, 0.35, 0.3, 0.25, 0.25, 0.1, 0.05], np.float32)
# Mean backscatter (VV, VH) in dB and its texture amplitude in dB.
_S1_DB = np.array([(-6.0, -13.0), (-11.0, -18.0), (-10.0, -16.5), (-12.0, -19.0),
                   (-8.0, -13.5), (-7.5, -13.0), (-9.0, -15.0), (-20.0, -26.0)], np.float32)
_S1_TEXTURE = np.array([3.0, 1.5, 1.5, 1.0, 1.2, 1.2, 1.5, 0.5], np.float32)
_LOOKS = 4
# First-label frequencies, and how strongly a present label draws each next one.
_PRIOR = np.array([0.12, 0.18, 0.10, 0.15, 0.12, 0.13, 0.10, 0.10])
_AFFINITY = np.array([
    # urb  ara  per  pas  bro  con  tra  wat
    (0.0, 3.0, 1.0, 2.0, 0.5, 0.3, 0.5, 1.0),  # urban
    (2.0, 0.0, 3.0, 3.0, 0.7, 0.5, 0.7, 0.7),  # arable
    (1.0, 3.0, 0.0, 2.0, 1.0, 0.3, 1.0, 0.5),  # permanent crops
    (1.5, 3.0, 2.0, 0.0, 1.0, 0.7, 1.0, 1.0),  # pastures
    (0.3, 0.7, 0.7, 1.0, 0.0, 4.0, 3.0, 1.0),  # broad-leaved
    (0.2, 0.5, 0.2, 0.7, 4.0, 0.0, 4.0, 1.5),  # coniferous
    (0.3, 0.7, 0.7, 1.0, 3.0, 4.0, 0.0, 1.0),  # transitional
    (1.0, 0.7, 0.3, 1.5, 1.0, 2.0, 1.0, 0.0),  # water
])
_N_LABELS = (0.4, 0.4, 0.2)  # P(1, 2, 3 labels)


@dataset.register("demo_crossmodal", options=("size", "limit"))
def _load(*, source, sub, dir, cache_dir, seed, n_per_class, progress, size=None, limit=None):
  """The "demo_crossmodal" source of `rsh.data.load`: no files, no cache."""
  del cache_dir, progress  # made in memory, fast
  if dir is not None or sub:
    raise DataError(f"source=demo_crossmodal takes no dir and no sub-name (got dir={dir!r}, "
                    f"{source!r})")
  if n_per_class is not None:
    raise DataError(f"n_per_class={n_per_class!r} does not apply to source=demo_crossmodal: "
                    "its labels are multi-hot (1-3 classes per scene); use limit=<pairs>")
  return make_dataset(DEFAULT_N if limit is None else limit,
                      DEFAULT_SIZE if size is None else size, seed)


def _count(value, what: str, lo: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
    raise DataError(f"demo_crossmodal: {what} must be a whole number >= {lo}, not {value!r}")
  return int(value)


def _draw(rng, p: np.ndarray) -> np.ndarray:
  """One index per row of p[n, c] (rows of non-negative weights), by inverse CDF."""
  cdf = np.cumsum(p, axis=1)
  u = rng.uniform(0, 1, (len(p), 1)) * cdf[:, -1:]
  return np.minimum((cdf <= u).sum(axis=1), p.shape[1] - 1)


def make_labels(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
  """(labels int[n, 3] padded with -1, count int[n] in 1..3): the scenes' classes."""
  c = len(CLASS_NAMES)
  count = _draw(rng, np.tile(_N_LABELS, (n, 1))) + 1
  labels = np.full((n, 3), -1, np.int64)
  labels[:, 0] = _draw(rng, np.tile(_PRIOR, (n, 1)))
  present = np.zeros((n, c), bool)
  present[np.arange(n), labels[:, 0]] = True
  for slot in (1, 2):
    weights = (present[:, :, None] * _AFFINITY[None]).sum(1) + 0.05  # draw of the present
    weights[present] = 0
    nxt = _draw(rng, weights)
    take = count > slot
    labels[take, slot] = nxt[take]
    present[np.flatnonzero(take), nxt[take]] = True
  return labels, count


def _smooth(rng, n: int, size: int, cells: int) -> np.ndarray:
  """f32[n, size, size] smooth random field, ~unit variance, blobs ~size / cells px."""
  pos = np.linspace(0, cells, size, dtype=np.float32)
  lo = np.minimum(np.floor(pos).astype(int), cells - 1)
  w = np.zeros((size, cells + 1), np.float32)
  w[np.arange(size), lo] = 1 - (pos - lo)
  w[np.arange(size), lo + 1] = pos - lo
  coarse = rng.standard_normal((n, cells + 1, cells + 1), dtype=np.float32)
  field = np.einsum("ij,njk,lk->nil", w, coarse, w, optimize=True)
  return field / (field.std(axis=(1, 2), keepdims=True) + 1e-6)


def make_layout(rng, labels: np.ndarray, count: np.ndarray, size: int) -> np.ndarray:
  """int[n, size, size]: each pixel's class, every label of a scene >= 10 % of it.

  Voronoi cells of `_SEEDS` random seeds on coordinates warped by a smooth
  field; seed j < count takes label j, the others a random label of the scene.
  Scenes where a label covers too little are drawn again (a few rounds); any
  left after 50 rounds are cut into equal stripes instead.
  """
  n = len(labels)
  out = np.empty((n, size, size), np.int64)
  todo = np.arange(n)
  grid = (np.arange(size, dtype=np.float32) + 0.5) / size
  for _ in range(50):
    m = len(todo)
    if not m:
      break
    yy = grid[None, :, None] + 0.08 * _smooth(rng, m, size, 3)
    xx = grid[None, None, :] + 0.08 * _smooth(rng, m, size, 3)
    seeds = rng.uniform(0, 1, (m, _SEEDS, 2)).astype(np.float32)
    d = ((yy[..., None] - seeds[:, None, None, :, 0]) ** 2
         + (xx[..., None] - seeds[:, None, None, :, 1]) ** 2)     # [m, s, s, seeds]
    slot = np.floor(rng.uniform(0, 1, (m, _SEEDS)) * count[todo, None]).astype(np.int64)
    slot[:, :3] = np.where(np.arange(3) < count[todo, None], np.arange(3), slot[:, :3])
    owner = np.take_along_axis(slot, d.argmin(-1).reshape(m, -1), axis=1)   # [m, s*s]
    cover = np.stack([(owner == k).mean(1) for k in range(3)], axis=1)       # [m, 3]
    ok = ((cover >= MIN_COVER) | (np.arange(3) >= count[todo, None])).all(1)
    classes = np.take_along_axis(labels[todo], owner, axis=1).reshape(m, size, size)
    out[todo[ok]] = classes[ok]
    todo = todo[~ok]
  for i in todo:  # equal vertical stripes: always >= 10 % each
    k = count[i]
    out[i] = labels[i, (np.arange(size) * k // size)][None, :]
  return out


def make_dataset(n: int = DEFAULT_N, size: int = DEFAULT_SIZE, seed: int = 0) -> dataset.Dataset:
  """The demo pairs: S2-like `images` and S1-like `views["s1"]` of the same scenes.

  Args:
    n: the number of pairs (>= 1).
    size: patch side in pixels (>= 4).
    seed: everything follows from it (>= 0).

  Returns:
    A multi-hot `Dataset` over `CLASS_NAMES` with band names `MS10`,
    `views={"s1": f32[n, size, size, 2]}` (VV, VH dB) and seeded 60 / 20 / 20
    `splits` "train" / "val" / "test".
  """
  n, size = _count(n, "limit (the number of pairs)", 1), _count(size, "size", 4)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise DataError(f"demo_crossmodal: seed must be a whole number >= 0, not {seed!r}")
  rng = np.random.default_rng((int(seed), 2024))
  labels, count = make_labels(rng, n)
  layout = make_layout(rng, labels, count, size).reshape(n, -1)            # [n, p]
  c, nb = len(CLASS_NAMES), len(BAND_NAMES)
  coarse, fine = _smooth(rng, n, size, 3), _smooth(rng, n, size, max(4, size // 3))

  # S2: each scene sees each class a little differently, under its own light.
  spectra = _SPECTRA[None] * np.exp(rng.normal(0, 0.1, (n, c, nb))).astype(np.float32)
  img = np.take_along_axis(spectra, layout[..., None], axis=1)            # [n, p, b]
  tex = (_S2_TEXTURE[layout, 0] * coarse.reshape(n, -1)
         + _S2_TEXTURE[layout, 1] * fine.reshape(n, -1))
  img *= (1 + tex)[..., None]
  img *= np.exp(rng.normal(0, 0.15, (n, 1, 1))).astype(np.float32)        # illumination
  img += rng.uniform(0, 300, (n, 1, 1)).astype(np.float32) * _HAZE         # haze
  img += (img * 0.02 + 15) * rng.standard_normal(img.shape, dtype=np.float32)
  images = np.clip(np.rint(img), 1, np.iinfo(np.uint16).max).astype(np.uint16)

  # S1: class backscatter, a per-scene offset, texture in dB, then speckle.
  db = (_S1_DB[None] + rng.normal(0, 1.0, (n, c, 2))
        + rng.normal(0, 1.5, (n, 1, 1)) + rng.normal(0, 0.5, (n, 1, 2))).astype(np.float32)
  s1 = np.take_along_axis(db, layout[..., None], axis=1)                  # [n, p, 2]
  s1 += (_S1_TEXTURE[layout] * _smooth(rng, n, size, max(3, size // 4)).reshape(n, -1)
         )[..., None]
  power = 10 ** (s1 / 10) * rng.gamma(_LOOKS, 1 / _LOOKS, s1.shape).astype(np.float32)
  s1 = (10 * np.log10(np.maximum(power, 1e-5))).astype(np.float32)

  multi_hot = np.zeros((n, c), np.uint8)
  for slot in range(3):
    has = labels[:, slot] >= 0
    multi_hot[np.flatnonzero(has), labels[has, slot]] = 1
  order = np.random.default_rng((int(seed), 2025)).permutation(n)
  n_train = int(round(SPLIT_FRACTIONS["train"] * n))
  n_val = int(round(SPLIT_FRACTIONS["val"] * n))
  splits = {"train": np.sort(order[:n_train]), "val": np.sort(order[n_train:n_train + n_val]),
            "test": np.sort(order[n_train + n_val:])}
  return dataset.Dataset(images.reshape(n, size, size, nb), multi_hot, CLASS_NAMES,
                         BAND_NAMES, "demo_crossmodal",
                         tuple(f"demo_{i:06d}" for i in range(n)),
                         views={"s1": s1.reshape(n, size, size, 2)}, splits=splits)
