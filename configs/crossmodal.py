"""Supervised cross-modal S1 <-> S2 hashing on multi-label BigEarthNet-MM (SPEC §4).

Usage: --config=configs/crossmodal.py[:variant][,bits=N][,seed=N][,similarity=any|jaccard]
variants: full (BigEarthNet-MM, --config.data.dir=DIR), serbia, demo, smoke.

One CNN per modality from scratch, a shared Hamming space. Losses (the
IRSC / IASC constraints extended to multi-label): an inter-modal pairwise
term (S1 codes against S2 codes, similar when the labels overlap) and an
intra-modal one per modality, with the label similarity `any` (at least one
shared label) or `jaccard` (|A n B| / |A u B|); quantisation and bit balance
on both modalities' codes.
"""

import ml_collections

from rsh import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, config_lib.CROSSMODAL_VARIANTS, variant="full", bits=64,
                           seed=0, similarity="any")
  c = config_lib.crossmodal(a, name="crossmodal" if a.similarity == "any" else
                            f"crossmodal_{a.similarity}", similarity=a.similarity)
  pairwise = lambda w, x, y: dict(type="pairwise", weight=w, on="encoders", codes_a=x,
                                  codes_b=y, labels_a="labels", labels_b="labels",
                                  measure=a.similarity)
  c.losses = ml_collections.ConfigDict(dict(
      inter=pairwise(1.0, "s1_hash", "s2_hash"),          # IRSC: across the modalities
      intra_s1=pairwise(0.5, "s1_hash", "s1_hash"),       # IASC: within each modality
      intra_s2=pairwise(0.5, "s2_hash", "s2_hash"),
      quantisation_s1=dict(type="quantisation", weight=0.1, on="encoders", codes="s1_hash"),
      quantisation_s2=dict(type="quantisation", weight=0.1, on="encoders", codes="s2_hash"),
      balance_s1=dict(type="bit_balance", weight=0.1, on="encoders", codes="s1_hash"),
      balance_s2=dict(type="bit_balance", weight=0.1, on="encoders", codes="s2_hash")))
  return config_lib.finish(c, a.variant, config_lib.CROSSMODAL_VARIANTS)
