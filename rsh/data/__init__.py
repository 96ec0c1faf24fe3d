"""The data layer: sources -> bands -> normalise -> split -> batches.

Images stay raw uint16 digital numbers with their band order named, from the
source to the last moment; `normalise` / `to_signed` make what networks see.
Bad input raises `DataError` (a `ValueError`) naming the file, band or key.
Depends on nothing else in rsh.
"""

from rsh.data.bands import BANDS
from rsh.data.bands import band_indices
from rsh.data.bands import channel_stats
from rsh.data.bands import DataError
from rsh.data.bands import EUROSAT_BANDS
from rsh.data.bands import MAX_DN
from rsh.data.bands import MS10
from rsh.data.bands import normalise
from rsh.data.bands import PRESETS
from rsh.data.bands import resolve_bands
from rsh.data.bands import RGB
from rsh.data.bands import select_bands
from rsh.data.bands import to_signed
from rsh.data.cache import cache_root
from rsh.data.dataset import Dataset
from rsh.data.dataset import load
from rsh.data.dataset import register
from rsh.data.dataset import Source
from rsh.data.dataset import SOURCES
from rsh.data.dataset import subsample
# The sources register themselves on import, in this order (folder, tfds, demo,
# bigearthnet, demo_crossmodal).
from rsh.data import eurosat_folder  # noqa: F401  "folder"
from rsh.data import tfds_eurosat  # noqa: F401  "tfds"
from rsh.data import demo  # noqa: F401  "demo"
from rsh.data import bigearthnet  # noqa: F401  "bigearthnet"
from rsh.data import demo_crossmodal  # noqa: F401  "demo_crossmodal"
from rsh.data.demo import CLASS_NAMES as EUROSAT_CLASSES
from rsh.data.tfds_eurosat import TFDS_EUROSAT_ALL_BANDS
from rsh.data.tfds_eurosat import TFDS_EUROSAT_RGB_BANDS
from rsh.data.split import batch_at
from rsh.data.split import PAPER_N_QUERY
from rsh.data.split import PAPER_N_TRAIN
from rsh.data.split import paper_split
from rsh.data.split import random_split
from rsh.data.split import Split
from rsh.data.split import steps_per_epoch
from rsh.data.samplers import PK_DEFAULT_K
from rsh.data.samplers import pk_batch
from rsh.data.samplers import sampler
from rsh.data.samplers import SAMPLERS
from rsh.data.samplers import two_class_batch
from rsh.data.samplers import uniform_batch
from rsh.data.prepared import PIXELS
from rsh.data.prepared import prepare
from rsh.data.prepared import Prepared
from rsh.data.prepared import DerivedView
from rsh.data.prepared import register_view
from rsh.data.prepared import with_training_rows
from rsh.data.domains import with_domain
