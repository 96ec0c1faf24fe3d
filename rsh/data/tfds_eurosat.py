"""Source "tfds": tensorflow-datasets `eurosat/all` (13 bands) or `eurosat/rgb`.

Read from a prepared tfds data dir (no download is attempted), without
TensorFlow when the files are array_record; cached like the folder source.
"""

from __future__ import annotations

import logging

import numpy as np

from rsh.data import bands
from rsh.data import cache
from rsh.data import dataset
from rsh.data import eurosat_folder
from rsh.data import files as rfiles
from rsh.data.bands import DataError
from rsh.data.dataset import Dataset

log = logging.getLogger(__name__)

# tfds `eurosat/all` builds its 'sentinel2' tensor by reading the very same
# EuroSAT-MS GeoTIFFs with tifffile and casting to float32 (see
# tensorflow_datasets/image_classification/eurosat.py, `_extract_channels`), so
# its last axis is in GeoTIFF order, B8A last.
TFDS_EUROSAT_ALL_BANDS = bands.EUROSAT_BANDS
# tfds `eurosat/rgb` holds the 8-bit JPEG RGB release of EuroSAT (key 'image').
TFDS_EUROSAT_RGB_BANDS = ("B04", "B03", "B02")
TFDS_NAMES = {"eurosat/all": ("sentinel2", TFDS_EUROSAT_ALL_BANDS),
              "eurosat/rgb": ("image", TFDS_EUROSAT_RGB_BANDS)}
# The RGB release is contrast-stretched to 8 bits: not digital numbers at all.
# Spreading 0..255 over 0..4095 makes `normalise` give x / 255, the usual [0, 1]
# scaling of 8-bit images, but its values are not comparable to `eurosat/all`.
RGB8_TO_DN = bands.MAX_DN / 255


@dataset.register("tfds", options=("split",))
def _load(*, source, sub, dir, cache_dir, seed, n_per_class, progress, split=None):
  """The "tfds" source of `rsh.data.load`: "tfds" = "tfds:eurosat/all", or "tfds:eurosat/rgb"."""
  del source  # `sub` names the dataset
  ds = load_tfds(sub or "eurosat/all", data_dir=dir, split=split or "train",
                 cache_dir=cache_dir, progress=progress)
  return dataset.subsample(ds, n_per_class, seed) if n_per_class is not None else ds


_HOW_TO_GET = ("or read the unzipped EuroSAT-MS GeoTIFFs instead: "
               "--config.data.source=folder --config.data.dir=PATH for rsh.main, "
               "--source=folder --dir=PATH for rsh.data")


def _import_tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataError(f"source=tfds needs tensorflow-datasets ({e}); install it with "
                    f"`pip install rsh[tfds]` (or `pip install tensorflow-datasets`), "
                    f"{_HOW_TO_GET}") from None
  return tfds


def _tfds_records(name: str, data_dir, split: str):
  """(records, count, label names, data dir) of a prepared tfds dataset, without TF if possible."""
  tfds = _import_tfds()
  # tfds warns about a missing dataset_info.json before we can say it better.
  absl_log = logging.getLogger("absl")
  level = absl_log.level
  absl_log.setLevel(logging.ERROR)
  try:
    builder = tfds.builder(name, data_dir=None if data_dir is None else str(data_dir))
    prepared = builder.is_prepared()
  except Exception as e:  # tfds raises its own registry / version errors
    raise DataError(f"tfds dataset {name!r}: {type(e).__name__}: {e}") from None
  finally:
    absl_log.setLevel(level)
  where = getattr(builder, "data_dir", data_dir)
  if not prepared:
    raise DataError(
        f"tfds dataset {name} is not prepared in {where} (no network download is "
        f"attempted); prepare it where there is network with `tfds build {name} "
        f"--data_dir={data_dir or '~/tensorflow_datasets'} --file_format=array_record` "
        f"(~2 GB for eurosat/all), {_HOW_TO_GET}")
  names = tuple(builder.info.features["label"].names)
  try:
    n = builder.info.splits[split].num_examples
  except Exception as e:  # tfds raises several types for a bad split string
    raise DataError(f"tfds dataset {name} in {where}: bad split {split!r} "
                    f"({type(e).__name__}: {e})") from None
  try:
    # Random-access array_record files: no TensorFlow needed.
    return builder.as_data_source(split=split), n, names, where
  except (NotImplementedError, ValueError, ImportError) as e:
    log.info("tfds %s: no TF-free data source (%s); trying tfds.as_numpy", name, e)
  try:
    return tfds.as_numpy(builder.as_dataset(split=split)), n, names, where
  except ImportError as e:
    raise DataError(
        f"tfds dataset {name} in {where} is stored as tfrecord, which needs TensorFlow "
        f"to read ({e}): `pip install tensorflow`, or prepare it again with "
        f"`--file_format=array_record`, {_HOW_TO_GET}") from None
  except Exception as e:  # tfds split-name and file errors
    raise DataError(f"tfds dataset {name} split {split!r} in {where}: "
                    f"{type(e).__name__}: {e}") from None


def load_tfds(name: str = "eurosat/all", *, data_dir=None, split: str = "train",
              cache_dir=None, progress=None) -> Dataset:
  """Reads tfds `eurosat/all` (13 bands, float32 DN) or `eurosat/rgb` (8-bit RGB).

  `eurosat/all` keeps its digital numbers (`TFDS_EUROSAT_ALL_BANDS` order);
  `eurosat/rgb` is 8-bit and is spread over 0..4095 (`RGB8_TO_DN`), so it
  normalises like 8-bit images, not like the 12-bit multispectral data.
  """
  if name not in TFDS_NAMES:
    raise DataError(f"unknown tfds dataset {name!r}; known: {', '.join(TFDS_NAMES)}")
  key, band_names = TFDS_NAMES[name]
  source = f"tfds:{name}"
  records, n, class_names, where = _tfds_records(name, data_dir, split)
  entry = cache.entry_path(cache_dir, "tfds", [name, split, str(where), n])
  ds = cache.read(entry)
  if ds is not None:
    return ds
  images = np.empty((n, eurosat_folder.SIZE, eurosat_folder.SIZE, len(band_names)), np.uint16)
  labels = np.empty((n,), np.int32)
  files = []
  it = iter(records)
  if rfiles.show_progress(progress, n):
    from tqdm import tqdm
    it = tqdm(it, total=n, desc=f"reading {source}", unit="image")
  i = -1
  for i, ex in enumerate(it):
    if i >= n:
      raise DataError(f"{source} split {split!r} in {where}: more than the {n} examples "
                      "its metadata lists; prepare it again")
    x = np.asarray(ex[key])
    what = f"{source} example {i} ({ex.get('filename', b'?')!r})"
    if x.shape != images.shape[1:]:
      raise DataError(f"{what}: {key} has shape {x.shape}, expected {images.shape[1:]}")
    if x.dtype == np.uint8:
      images[i] = np.rint(x * RGB8_TO_DN).astype(np.uint16)
    else:
      images[i] = rfiles.to_dn(x, what)
    labels[i] = ex["label"]
    f = ex.get("filename", "")
    files.append(f.decode() if isinstance(f, bytes) else str(f))
  if i + 1 != n:
    raise DataError(f"{source} split {split!r} in {where}: {i + 1} examples, but its "
                    f"metadata lists {n}; prepare it again")
  # tfds shuffles files when preparing: sort by class, then by name, like a folder.
  order = sorted(range(n), key=lambda i: (labels[i], rfiles.natural_key(files[i])))
  ds = Dataset(images[order], labels[order], class_names, band_names, source,
               tuple(files[i] for i in order))
  cache.write(entry, ds)
  return ds
