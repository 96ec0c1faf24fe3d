"""MiLAN (Roy, Sangineto, Demir, Sebe; IGARSS 2018): metric-learning hashing on frozen features.

Usage: --config=configs/milan.py[:variant][,mode=public|mined|unsupervised]
           [,miner=batch_hard|batch_all|semi_hard][,views=plain|dihedral|backbone]
           [,protocol=split|milan][,bits=N][,seed=N]
variants: full (EuroSAT), small (a EuroSAT-MS folder, e.g. the real files in
../shared/data/eurosat_ms), demo, smoke.

The feature-hashing method (`rsh/methods/feature_hash.py`): an MLP 1280 -> 1024
-> 512 -> K, LeakyReLU 0.2, sigmoid outputs s (the code is s >= 0.5), on frozen
EfficientNet-Lite0 features of the RGB bands (MiLAN took 2048-d features of a
pretrained CNN; rsh ships EfficientNet-Lite0's weights). Its loss, as the public
code (MLEnthusiast/MHCLN) writes it:

    L = L_metric - beta * mean (s - 0.5)^2 + gamma * mean_codes (mean_bits s - 0.5)^2
        (`push`, beta = 0.001; `balance` per code over its bits, gamma = 1)

with L_metric on squared L2 distances of the L2-normalised s, margin 0.2, and
Adam 1e-4, betas (0.5, 0.9), 10,000 steps. Modes:
  public       the public code: each batch n = 60 images of one class and 30 of
               another (`two_class` sampler) read as 30 triplets [anchors;
               positives; negatives] (`triplet`), no mining, plain features;
  mined        online mining: P x K batches (`pk`, 10 classes x 8) and
               `miner` over every triplet of the batch (default batch-hard);
               each row one of its 8 cached dihedral views (`views=dihedral`);
  unsupervised no labels: NT-Xent (t = 8) between two augmented views of each
               image (two independent dihedral draws + noise), + push + balance;
               batches of 128, 3,000 steps.
`views=backbone` runs the frozen backbone inside the step on random crops,
per-band gains and dihedral transforms of the images (`rsh.frozen`; the GPU
path: on CPU it trains far slower per image, benchmarks/frozen_backbone.py).

Evaluation: `retrieval`, the rsh split (queries against the archive, MAP@100),
and `milan_protocol`: MiLAN's (each test image queries the rest of the test
set, leave-one-out, mAP@20 normalised by the relevant items retrieved), under
`milan/`; `protocol=milan` makes it the primary entry (`retrieval`, and the split
`retrieval_split`). Beside them: LSH and ITQ on pixels, on the features and on
their dihedral mean.
"""

import ml_collections

from rsh import config_lib

MODES = ("public", "mined", "unsupervised")
MINERS = ("batch_hard", "batch_all", "semi_hard")
VIEWS = {"plain": "efficientnet_lite0", "dihedral": "efficientnet_lite0/dihedral",
         "backbone": "pixels"}
DEFAULT_VIEWS = {"public": "plain", "mined": "dihedral", "unsupervised": "dihedral"}
PROTOCOLS = ("split", "milan")
PLAIN, MEAN = "efficientnet_lite0", "efficientnet_lite0/dihedral_mean"


def _check(a):
  for key, known in (("mode", MODES), ("miner", MINERS), ("views", tuple(VIEWS) + ("",)),
                     ("protocol", PROTOCOLS)):
    if a[key] not in known:
      raise ValueError(f"unknown config {key} {a[key]!r}; known: {', '.join(filter(None, known))}")


def _losses(a, metric_codes="sigmoid"):
  shape = dict(push=dict(weight=0.001, on="hasher", codes="sigmoid"),
               balance=dict(weight=1.0, on="hasher", codes="sigmoid"))
  if a.mode == "public":
    metric = dict(triplet=dict(weight=1.0, on="hasher", codes=metric_codes, margin=0.2))
  elif a.mode == "mined":
    metric = {a.miner: dict(weight=1.0, on="hasher", codes=metric_codes, labels="labels",
                            margin=0.2)}
  else:  # two augmented views of each image are the positives; the centred codes 2s - 1
    # t = 8: on `small` (seed 0, 1,500 steps) 0.5 / 1 / 2 / 4 / 8 / 16 gave MAP@100
    # 0.48 / 0.58 / 0.64 / 0.71 / 0.74 / 0.70; at t = 0.5 longer training memorises
    # the 319 images and falls below ITQ (docs/RESULTS.md).
    metric = dict(nt_xent=dict(weight=1.0, on="hasher", a="hash", b="hash_aug",
                               temperature=8.0))
  return ml_collections.ConfigDict({**metric, **shape})


def _evals(a, encode):
  bits = config_lib.own_bits
  split = dict(type="retrieval", query="query", archive="archive", input=encode, codes="hash",
               vectors="hash")
  loo = dict(type="retrieval", query="query", leave_one_out=True, input=encode, codes="hash",
             k=20)
  if a.protocol == "milan":
    evals = dict(retrieval=loo, retrieval_split={**split, "prefix": "split/"})
  else:
    evals = dict(retrieval=split, milan_protocol={**loo, "prefix": "milan/"})
  if encode != PLAIN:
    evals["retrieval_plain"] = dict(type="retrieval", query="query", archive="archive",
                                    input=PLAIN, codes="hash", prefix="plain/")
  return ml_collections.ConfigDict(dict(
      **evals, **config_lib.baselines(),
      lsh_dihedral_mean=dict(type="lsh", input=MEAN, bits=bits()),
      itq_dihedral_mean=dict(type="itq", input=MEAN, bits=bits())))


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="full", mode="public", miner="batch_hard", views="",
                           protocol="split", bits=32, seed=0)
  _check(a)
  views = a.views or DEFAULT_VIEWS[a.mode]
  c = config_lib.base(a, method="feature_hash", bands="ms10",
                      name="milan" if a.mode == "public" else f"milan_{a.mode}")
  c.data.input = VIEWS[views]
  c.optim = ml_collections.ConfigDict(dict(lr=1e-4, b1=0.5, b2=0.9, eps=1e-8))
  c.model = ml_collections.ConfigDict(dict(
      bits=a.bits, hidden=(1024, 512), activation="leaky_relu", output="sigmoid",
      standardise=True, noise=0.0 if views == "plain" and a.mode != "unsupervised" else 0.1,
      backbone=ml_collections.FieldReference(None, field_type=str)))
  if views == "backbone":
    c.model.backbone = PLAIN
    c.model.augment = ml_collections.ConfigDict(dict(crop=48, gain=(0.8, 1.2), dihedral=True))
  c.losses = _losses(a)
  c.train.sampler = {"public": "two_class", "mined": "pk", "unsupervised": "uniform"}[a.mode]
  batch, k = {"public": (90, None), "mined": (80, 8), "unsupervised": (128, None)}[a.mode]
  if a.mode == "public":
    # 30 anchors + 30 positives of one class, 30 negatives; in `small` (about 32
    # training images a class) 15 triplets: 30 + 15.
    batch = 45 if a.variant == "small" else 90
    c.train.sampler_options.n = batch * 2 // 3
  c.train.sampler_options.k = k
  c.evals = _evals(a, PLAIN if views == "plain" else MEAN)
  if a.variant == "smoke":
    c = config_lib.finish(c, a.variant)
    # 2 test images a class: MiLAN's protocol needs a second of each class to find
    c.data.n_per_class, c.data.n_query, c.model.bits = 6, 2, 16
    c.model.hidden = (32, 16)
    small = {"public": (6, None), "mined": (8, 2), "unsupervised": (8, None)}[a.mode]
    c.train.batch_size, c.train.sampler_options.k = small
    c.train.sampler_options.n = 4 if a.mode == "public" else None
    loo = "retrieval" if a.protocol == "milan" else "milan_protocol"
    c.evals[loo].k = 5   # 20 test images: each ranks the other 19
    return c
  steps = 3_000 if a.mode == "unsupervised" else 10_000   # MiLAN's 10,000 with labels
  return config_lib.finish(c, a.variant, loop=dict(
      batch_size=batch, num_steps=steps, eval_every=steps // 4, checkpoint_every=steps // 4,
      log_every=100))
