"""SSM-Hash: a hashing MLP on frozen features, trained without labels against the
features' own similarity matrix (rsh's method; not in any paper).

Usage: --config=configs/ssm_hash.py[:variant][,bits=N][,seed=N][,encode=dihedral_mean|plain]
variants: full (EuroSAT), small (a EuroSAT-MS folder, e.g. the real files in
../shared/data/eurosat_ms), demo, smoke.

An MLP 1280 -> 1024 -> 512 -> l (LeakyReLU 0.2, tanh out; `rsh/methods/feature_hash.py`)
on frozen EfficientNet-Lite0 features of the RGB bands. Its loss is UAHM's semantic
term (thesis eq. 5.6) against the two-stage-kNN SSM (thesis §5.2, `rsh.similarity`)
of the same frozen features (their mean over the 8 dihedral transforms), plus
quantisation and bit balance (0.1 each). Each
step feeds every image as one of its 8 dihedral transforms (the cached view
`efficientnet_lite0/dihedral`) plus Gaussian noise (std 0.1 of standardised
features). Codes are made from the mean features of the 8 transforms
(`encode=dihedral_mean`, the default: better than `plain` on average at every length,
docs/RESULTS.md); the entry `retrieval_plain` scores the plain features' codes too.
Beside it: LSH and ITQ on the plain features, on the dihedral-mean features and on
pixels. No labels are used anywhere in training.
"""

import ml_collections

from rsh import config_lib

ENCODE = {"dihedral_mean": "efficientnet_lite0/dihedral_mean", "plain": "efficientnet_lite0"}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="full", bits=64, seed=0, encode="dihedral_mean")
  if a.encode not in ENCODE:
    raise ValueError(f"unknown config encode {a.encode!r}; known: {', '.join(ENCODE)}")
  c = config_lib.base(a, method="feature_hash", name="ssm_hash", bands="ms10")
  c.data.input = "efficientnet_lite0/dihedral"  # f32[n, 8, 1280]: one view per row per step
  c.optim = ml_collections.ConfigDict(dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8))
  c.model = ml_collections.ConfigDict(dict(
      bits=a.bits, hidden=(1024, 512), activation="leaky_relu", output="tanh",
      standardise=True, noise=0.1))
  c.losses = ml_collections.ConfigDict(dict(
      semantic=dict(weight=1.0, on="hasher", codes="hash", similarity="similarity"),
      quantisation=dict(weight=0.1, on="hasher", codes="hash"),
      bit_balance=dict(weight=0.1, on="hasher", codes="hash")))
  c.ssm = config_lib.ssm()
  # The SSM of the frozen features alone, their dihedral mean (more invariant neighbours:
  # MAP@100 0.704 +- 0.006 against 0.672 +- 0.012 from the plain features, small, 64 bits).
  c.ssm.spatial, c.ssm.spectral = ENCODE["dihedral_mean"], "none"
  bits = config_lib.own_bits
  other = "plain" if a.encode == "dihedral_mean" else "dihedral_mean"
  c.evals = ml_collections.ConfigDict(dict(
      retrieval=dict(type="retrieval", query="query", archive="archive", input=ENCODE[a.encode],
                     codes="hash", vectors="hash"),
      **{f"retrieval_{other}": dict(type="retrieval", query="query", archive="archive",
                                    input=ENCODE[other], codes="hash", prefix=f"{other}/")},
      **config_lib.baselines(),
      lsh_dihedral_mean=dict(type="lsh", input=ENCODE["dihedral_mean"], bits=bits()),
      itq_dihedral_mean=dict(type="itq", input=ENCODE["dihedral_mean"], bits=bits()),
      ssm_quality=dict(type="ssm_quality")))
  if a.variant == "smoke":  # 60 images (one backbone batch per transform), 16 bits
    c = config_lib.finish(c, a.variant)
    c.data.n_per_class, c.data.n_query, c.model.bits = 6, 1, 16
    c.model.hidden = (32, 16)
    c.ssm.spatial = ENCODE["dihedral_mean"]  # the features are the SSM, in every variant
    return c
  # 1,500 steps of 128 whatever the data size (about 30 s on 2 CPU cores).
  return config_lib.finish(c, a.variant, loop=dict(
      batch_size=128, num_steps=1500, eval_every=500, checkpoint_every=500, log_every=50))
