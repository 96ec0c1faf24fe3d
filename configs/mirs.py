"""MIRS (Sprengel, Schwarz, Hoffmann; slides): metric-learning hashing on frozen
features with inter-class triplets from K-means clusters and a Domain Whitening
Transform (DWT; Roy et al., CVPR 2019).

Usage: --config=configs/mirs.py[:variant][,mode=MODE][,domain=none|demo|folder]
           [,bits=N][,seed=N][,clusters=K][,rate=R][,pair=positive|negative][,group=G]
variants: full (EuroSAT), small (a EuroSAT-MS folder, e.g. the real files in
../shared/data/eurosat_ms), demo, smoke. Modes (the slides' rows):

  supervised        online triplets: batch-hard over P x K batches (10 classes x 8),
                    on the L2-normalised sigmoid outputs, margin 0.2;
  dwt               the same behind a DWT (groups of `group` = 32 features as the
                    reference code, eps 1e-3, momentum 0.1; on 40-row domain
                    batches `group=8` did better here: docs/RESULTS.md);
  interclass        supervised, mixed with inter-class triplets at `rate` (the
                    weights 1 - rate and rate): triplets of the batch built from
                    `clusters` K-means clusters of the frozen features
                    (`rsh.losses.interclass`; pair=positive, the slides: a positive
                    of another class in the anchor's cluster; pair=negative: a
                    negative of another class in it);
  unsupervised      MiLAN's contrastive variant: NT-Xent (t = 8) between two
                    augmented views (dihedral draws + noise), no labels;
  unsupervised_dwt  the same behind a DWT.

Every mode adds MiLAN's push (0.001) and per-code balance (1); the MLP 1280 ->
1024 -> 512 -> l, LeakyReLU 0.2, sigmoid outputs (the code is s >= 0.5), on
frozen EfficientNet-Lite0 features of the RGB bands (MIRS: DenseNet-121, not
shipped); Adam 1e-4, betas (0.5, 0.9).

Domains (`domain=`): the main data is the target, whose query and archive sets
the retrieval uses; `domain=demo` adds the procedural demo scenes (1,000, the
same 10 classes) as a labelled source domain, `domain=folder` a EuroSAT-MS
folder's images (`--config.data.domain.dir=DIR`) to a demo target. Each batch
is half source, half target rows (sampler `domains`); the triplet term reads
the source rows' labels only (`mask="source_domain"`), so the target's labels
are never used in training; with a DWT each domain is whitened with its own
statistics and the target's encode. Reported: MAP@100 (`retrieval`) and
mAP@64 (`map64/`), beside LSH and ITQ on pixels and on the features.
"""

import ml_collections

from rsh import config_lib

MODES = ("supervised", "dwt", "interclass", "unsupervised", "unsupervised_dwt")
DOMAINS = ("none", "demo", "folder")
PAIRS = ("positive", "negative")
FEATURES = "efficientnet_lite0"
# Per variant: (steps supervised, steps unsupervised).
STEPS = {"full": (10_000, 3_000), "small": (3_000, 3_000), "demo": (2_000, 2_000),
         "smoke": (4, 4)}


def _check(a):
  for key, known in (("mode", MODES), ("domain", DOMAINS), ("pair", PAIRS)):
    if a[key] not in known:
      raise ValueError(f"unknown config {key} {a[key]!r}; known: {', '.join(known)}")
  if not 0.0 <= a.rate <= 1.0:
    raise ValueError(f"config rate={a.rate} must lie in [0, 1] (the inter-class triplets' "
                     "weight; the class triplets get 1 - rate)")


def _losses(a, mask: bool):
  shape = dict(push=dict(weight=0.001, on="hasher", codes="sigmoid"),
               balance=dict(weight=1.0, on="hasher", codes="sigmoid"))
  if a.mode.startswith("unsupervised"):
    metric = dict(nt_xent=dict(weight=1.0, on="hasher", a="hash", b="hash_aug",
                               temperature=8.0))
  else:
    labelled = dict(mask="source_domain") if mask else {}
    metric = dict(batch_hard=dict(weight=1.0 - (a.rate if a.mode == "interclass" else 0.0),
                                  on="hasher", codes="sigmoid", margin=0.2, **labelled))
    if a.mode == "interclass":
      metric["interclass"] = dict(weight=a.rate, on="hasher", codes="sigmoid", margin=0.2,
                                  pair=a.pair, **labelled)
  return ml_collections.ConfigDict({**metric, **shape})


def _evals(view):
  retrieval = dict(type="retrieval", query="query", archive="archive", input=view,
                   codes="hash")
  return ml_collections.ConfigDict(dict(
      retrieval=retrieval, map64={**retrieval, "k": 64, "prefix": "map64/"},
      **config_lib.baselines()))


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="full", mode="supervised", domain="none", bits=32,
                           seed=0, clusters=10, rate=0.5, pair="positive", group=32)
  _check(a)
  unsupervised, dwt = a.mode.startswith("unsupervised"), a.mode.endswith("dwt")
  c = config_lib.base(a, method="feature_hash", bands="rgb",
                      name="mirs" if a.mode == "supervised" else f"mirs_{a.mode}")
  view = f"{FEATURES}/dihedral" if unsupervised else FEATURES
  c.data.input = view
  c.data.domain = ml_collections.ConfigDict(dict(
      source=ml_collections.FieldReference(None if a.domain == "none" else a.domain,
                                           field_type=str),
      dir=ml_collections.FieldReference(None, field_type=str),
      n_per_class=ml_collections.FieldReference(100 if a.domain == "demo" else None,
                                                field_type=int),
      seed=a.seed + 1))   # the demo scenes of another seed than a demo target's
  c.optim = ml_collections.ConfigDict(dict(lr=1e-4, b1=0.5, b2=0.9, eps=1e-8))
  c.model = ml_collections.ConfigDict(dict(
      bits=a.bits, hidden=(1024, 512), activation="leaky_relu", output="sigmoid",
      standardise=True, noise=0.1 if unsupervised else 0.0, clusters=a.clusters,
      dwt=dict(group=a.group, eps=1e-3, momentum=0.1, target=0) if dwt else None))
  c.losses = _losses(a, mask=a.domain != "none")
  if a.domain != "none":
    c.train.sampler, batch = "domains", 80   # 40 source + 40 target rows
  elif unsupervised:
    c.train.sampler, batch = "uniform", 128
  else:
    c.train.sampler, batch = "pk", 80
    c.train.sampler_options.k = 8
  c.evals = _evals(FEATURES)
  steps = STEPS[a.variant][int(unsupervised)]
  c = config_lib.finish(c, a.variant, loop=dict(
      batch_size=batch, num_steps=steps, eval_every=max(steps // 4, 1),
      checkpoint_every=max(steps // 4, 1), log_every=max(min(steps // 20, 100), 1)))
  if a.variant == "demo":
    c.data.n_per_class = 100
  if a.variant == "smoke":
    c.model.hidden, c.model.bits = (32, 16), 16
    c.data.domain.n_per_class = 6 if a.domain == "demo" else None
    c.train.batch_size = 16 if unsupervised or a.domain != "none" else 8
    c.train.sampler_options.k = None if unsupervised or a.domain != "none" else 2
    c.evals.map64.k = 5
  return c
