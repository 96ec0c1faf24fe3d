"""Self-supervised cross-modal S1 <-> S2 hashing, after SS-CM-RSIR (SPEC §4).

Usage: --config=configs/sscm.py[:variant][,bits=N][,seed=N]
variants: full (BigEarthNet-MM, --config.data.dir=DIR), serbia, demo, smoke.

No labels in training. Terms on the two modalities' codes: a mutual-
information term (InfoNCE between the two images of each pair, the other
modality's images as negatives), an angular term pulling each pair's codes
together, and per modality a term raising the cosine similarity of each
image's k most similar images in the batch; a small quantisation term (ours:
SS-CM-RSIR retrieves with features, we hash).
"""

import ml_collections

from rsh import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, config_lib.CROSSMODAL_VARIANTS, variant="full", bits=64,
                           seed=0, temperature=0.2, k=3)
  c = config_lib.crossmodal(a, name="sscm")
  on = dict(on="encoders")
  c.losses = ml_collections.ConfigDict(dict(
      mutual_information=dict(type="infonce", weight=1.0, a="s1_hash", b="s2_hash",
                              temperature=a.temperature, **on),
      angular=dict(type="angular", weight=1.0, a="s1_hash", b="s2_hash", **on),
      intra_s1=dict(type="intra_topk", weight=0.5, x="s1_hash", k=a.k, **on),
      intra_s2=dict(type="intra_topk", weight=0.5, x="s2_hash", k=a.k, **on),
      quantisation_s1=dict(type="quantisation", weight=0.01, codes="s1_hash", **on),
      quantisation_s2=dict(type="quantisation", weight=0.01, codes="s2_hash", **on)))
  return config_lib.finish(c, a.variant, config_lib.CROSSMODAL_VARIANTS)
