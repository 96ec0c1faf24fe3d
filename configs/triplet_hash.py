"""Triplet hashing on frozen features, trained on real images alone or with a
conditional GAN's (thesis ch. 4, Tables 4.3 / 4.4).

Usage: --config=configs/triplet_hash.py[:variant][,bits=N][,seed=N][,backbone=NAME]
           [,margin=A][,n_generated=N]
       [--config.data.generated.workdir=RUN]   (a finished configs/cdcgan.py or acgan.py run)
variants: full (EuroSAT), small (a EuroSAT-MS folder, e.g. the real files in
../shared/data/eurosat_ms), demo, smoke.

The feature-hashing method (`rsh/methods/feature_hash.py`): three fully connected
layers 2048 | 1280 -> 1024 -> 512 -> l, LeakyReLU 0.2, l sigmoid outputs s (the
code is s >= 0.5), on frozen ImageNet features of the RGB bands: Inception-v3's
as in the thesis with `backbone=inception_v3` and `--config.data.weights=PATH`
(a torchvision state dict), else EfficientNet-Lite0's (packaged). The loss
(eq. 4.12) is

    L = triplet (eq. 4.9) + beta * binary (eq. 4.10) + gamma * balance (eq. 4.11)

  triplet  mean over the batch's triplets of relu(|s_a - s_p|^2 - |s_a - s_n|^2 + alpha),
           squared distances of the sigmoid outputs themselves (not normalised),
           alpha = `margin` (default l / 8: at l bits apart codes differ in l / 8);
  binary   `push`, -mean (s - 0.5)^2 over entries, weight 0.01 (eq. 4.10 sums over
           the l bits: the thesis's beta is this weight / l);
  balance  per code, (mean of its bits - 0.5)^2, weight 1.

The thesis gives no alpha, beta, gamma ("by cross validation"): docs/RESULTS.md
has what was tried. Batches as the thesis's: 96 = 64 images of one class
(anchors, then positives) + 32 of another (negatives), the `two_class` sampler
read as 32 stacked triplets; Adam 1e-4, betas (0.5, 0.9).

Protocol (thesis §4.2.1): the test set is 100 random images per class (the query
set); each ranks the other test images (leave-one-out, MAP@100 with class-wise
MAP and its tie-aware twin); every other image trains (plus the generated ones,
`config.data.generated`, training set only: `rsh.generated`). Beside it, on the
same features and protocol: LSH and ITQ (rows "not in thesis").

`small`: the 369 real files, 5 test images a class (each ranks the other 49:
MAP@49), batches 24 + 12, 60 generated images (the thesis's 5,000 : 26,000).
"""

import ml_collections

from rsh import config_lib

BACKBONES = ("efficientnet_lite0", "inception_v3", "resnet50")
# Per variant: test images a class / k of MAP@k (the test set less the query) /
# generated images / batch (n of one class + the rest of another) / steps.
SIZES = {"full": (100, 100, 5000, (64, 96), 10_000),
         "small": (5, 49, 60, (24, 36), 2_000),
         "demo": (10, 99, 100, (40, 60), 2_000),
         "smoke": (2, 10, 20, (4, 6), 4)}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="full", bits=32, seed=0, backbone="efficientnet_lite0",
                           margin=-1.0, n_generated=-1)
  if a.backbone not in BACKBONES:
    raise ValueError(f"unknown config backbone {a.backbone!r}; known: {', '.join(BACKBONES)}")
  n_query, k, n_generated, (n, batch), steps = SIZES[a.variant]
  margin = a.bits / 8 if a.margin < 0 else a.margin
  c = config_lib.base(a, method="feature_hash", name="triplet_hash", bands="rgb")
  c.data.input = a.backbone
  c.data.generated = ml_collections.ConfigDict(dict(
      workdir=ml_collections.FieldReference(None, field_type=str),
      n=n_generated if a.n_generated < 0 else a.n_generated, seed=0))
  c.optim = ml_collections.ConfigDict(dict(lr=1e-4, b1=0.5, b2=0.9, eps=1e-8))
  c.model = ml_collections.ConfigDict(dict(
      bits=a.bits, hidden=(1024, 512), activation="leaky_relu", output="sigmoid",
      standardise=True, noise=0.0))
  c.losses = ml_collections.ConfigDict(dict(
      triplet=dict(weight=1.0, on="hasher", codes="sigmoid", margin=margin, normalise=False),
      push=dict(weight=0.01, on="hasher", codes="sigmoid"),
      balance=dict(weight=1.0, on="hasher", codes="sigmoid")))
  c.train.sampler = "two_class"
  c.train.sampler_options.n = n
  bits = config_lib.own_bits
  loo = dict(query="query", leave_one_out=True)
  c.evals = ml_collections.ConfigDict(dict(
      retrieval=dict(type="retrieval", input=a.backbone, codes="hash", **loo),
      lsh_features=dict(type="lsh", input=a.backbone, bits=bits(), **loo),
      itq_features=dict(type="itq", input=a.backbone, bits=bits(), **loo)))
  c = config_lib.finish(c, a.variant, loop=dict(
      batch_size=batch, num_steps=steps, eval_every=max(steps // 4, 1),
      checkpoint_every=max(steps // 4, 1), log_every=max(min(steps // 20, 100), 1)))
  c.data.n_query, c.data.n_train = n_query, None
  c.eval.k, c.eval.n = k, min(k, 20)
  if a.variant == "smoke":
    c.model.hidden = (32, 16)
    c.model.bits = 16
    c.losses.triplet.margin = 2.0 if a.margin < 0 else a.margin
  return c
