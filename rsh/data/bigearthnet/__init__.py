"""Source "bigearthnet": BigEarthNet-S2 / BigEarthNet-S1 patch pairs (BigEarthNet-MM).

`dir` holds the S2 root and the S1 root side by side, either as the examples of
the `bigearthnet-common` package unpack (`BigEarthNet-S2-Example/` +
`BigEarthNet-S1-Example/`, see `example_dir`) or as the full download
(`BigEarthNet-v1.0/` + `BigEarthNet-S1-v1.0/`):

  <S2 root>/<s2>/<s2>_B01.tif ... <s2>_B12.tif, <s2>_B8A.tif  uint16, no B10:
      120 x 120 px at 10 m (B02 B03 B04 B08), 60 x 60 at 20 m (B05 B06 B07
      B8A B11 B12), 20 x 20 at 60 m (B01 B09);
  <S2 root>/<s2>/<s2>_labels_metadata.json   "labels": the original 43-class names;
  <S1 root>/<s1>/<s1>_VV.tif, <s1>_VH.tif    float32 backscatter, already in dB;
  <S1 root>/<s1>/<s1>_labels_metadata.json   "corresponding_s2_patch": its S2 pair.

One row per S1 / S2 pair:

- `images`: the S2 bands on one 120 x 120 grid. The 20 m and 60 m bands are
  upsampled by nearest neighbour (`np.repeat` x 2 and x 6 along both axes), which
  is exact: each 10 m pixel takes the value of the coarse pixel it lies in.
  Option `bands` (default `ms10`, the 10 bands at 10 m and 20 m, in MS10 order;
  `all` = the 12 bands BigEarthNet has) sets `band_names` and their order.
- `views["s1"]`: f32[n, 120, 120, 2], (VV, VH) in dB, values as in the files.
- option `size` (default 120, must divide 120): both modalities area-averaged
  down to size x size: S2 as the mean digital number rounded to uint16, S1 as
  the mean power in dB, 10 log10(mean(10^(dB / 10))) (`pixels.db_mean`; before
  the store existed, the mean of the dB values: ~0.15 dB lower at 60 px).
- `labels`: multi-hot uint8[n, 19] over `class_names` = `NEW_LABELS` of
  `bigearthnet_common.constants` (the 19 BigEarthNet-MM classes, in that order),
  each S2 patch's labels mapped with its `OLD2NEW_LABELS_DICT` (names that map to
  None are dropped; a patch left with none is skipped and counted).
- `files`: the S2 patch names, in natural name order. The S1 partner of row i is
  `Scan.s1_files[i]`: `load_with_scan` returns the `Scan` beside the `Dataset`
  (no global state is kept), as does `scan` alone, without reading pixels.
- `splits`: {"train", "val", "test"}: rows of the official lists (a pair in
  none of them is in no split).

Options `exclude` (default ("snow", "cloud"): drop the patches the package lists
as having seasonal snow / cloud and shadow; () keeps them) and `countries`
(default all; e.g. ("Serbia",), from the package's S1 / S2 name, country and
season table) filter the pairs by S2 name; `limit` then keeps a seeded random
`limit` of them (seed = `load`'s seed), still in name order. `n_per_class`
does not apply to multi-hot labels and is refused.

Pairs are read in parallel and cached (`rsh.data.cache`), keyed by the bands,
the size, the package version, and the names, sizes, mtimes and ctimes of
every file read. Option `store=PATH` keeps them in an on-disk store instead
(`store`: memory-mapped `.npy` arrays, written once, resumable, checked against
the same file digest; `dir` None reads the store alone): images and the S1 view
are then read-only memory maps and `rsh.data.Prepared` reads rows per batch, so
the whole of BigEarthNet-MM (590,326 pairs, ~240 GB at 120 px) trains on a host
with less memory than that. The package's tables are read once per process (the country
table takes a few seconds). Only `bigearthnet_common.constants` is imported, never `.base`
or `.sets` (they need a `fastcore` that no longer exists).

The modules, by job: `tables` (the package's label mapping and lists),
`layout` (the roots, patch folders, metadata and `dir="example"`), `pairs`
(pairing and filtering: `scan`), `pixels` (reading the bands), `store` (the
on-disk store and its converter, `python -m rsh.data.bigearthnet.store`) and
`loader` (the registered source, `load_with_scan`).
"""

from rsh.data.bigearthnet.layout import EXAMPLE
from rsh.data.bigearthnet.layout import example_dir
from rsh.data.bigearthnet.layout import example_root
from rsh.data.bigearthnet.layout import EXAMPLES
from rsh.data.bigearthnet.layout import ROOTS
from rsh.data.bigearthnet.layout import roots
# Registers the "bigearthnet" source.
from rsh.data.bigearthnet.loader import load_with_scan
from rsh.data.bigearthnet.pairs import describe_dropped
from rsh.data.bigearthnet.pairs import DROP_REASONS
from rsh.data.bigearthnet.pairs import Scan
from rsh.data.bigearthnet.pairs import scan
from rsh.data.bigearthnet.pixels import DEFAULT_BANDS
from rsh.data.bigearthnet.pixels import GRID
from rsh.data.bigearthnet.pixels import resolve_bands
from rsh.data.bigearthnet.pixels import S1_CHANNELS
from rsh.data.bigearthnet.pixels import S2_BANDS
from rsh.data.bigearthnet.pixels import UPSAMPLE
from rsh.data.bigearthnet.tables import class_names
from rsh.data.bigearthnet.tables import countries_of
from rsh.data.bigearthnet.tables import COUNTRY_TABLE
from rsh.data.bigearthnet.tables import DEFAULT_EXCLUDE
from rsh.data.bigearthnet.tables import EXCLUDE_LISTS
from rsh.data.bigearthnet.tables import EXCLUDE_WHAT
from rsh.data.bigearthnet.tables import listed
from rsh.data.bigearthnet.tables import PACKAGE
from rsh.data.bigearthnet.tables import SPLIT_LISTS
