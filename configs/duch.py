"""Contrastive-adversarial cross-modal S1 <-> S2 hashing, after DUCH (SPEC §4).

Usage: --config=configs/duch.py[:variant][,bits=N][,seed=N]
variants: full (BigEarthNet-MM, --config.data.dir=DIR), serbia, demo, smoke.

No labels in training. Encoders: NT-Xent between the modalities of each pair
(inter-modal) and between two augmented views of each image (intra-modal, per
modality), an adversarial term that makes a code discriminator unable to tell
S1 codes from S2 codes, quantisation and bit balance. The discriminator: the
cross-entropy of telling them apart plus a gradient penalty. Weights as the
public DUCH code: quantisation 0.001, balance 0.01, adversarial 0.01.
"""

import ml_collections

from rsh import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, config_lib.CROSSMODAL_VARIANTS, variant="full", bits=64,
                           seed=0, temperature=0.5)
  c = config_lib.crossmodal(a, name="duch")
  c.model.discriminator = True
  enc, t = dict(on="encoders"), a.temperature
  c.losses = ml_collections.ConfigDict(dict(
      inter=dict(type="nt_xent", weight=1.0, a="s1_hash", b="s2_hash", temperature=t, **enc),
      intra_s1=dict(type="nt_xent", weight=1.0, a="s1_hash", b="s1_hash_aug",
                    temperature=t, **enc),
      intra_s2=dict(type="nt_xent", weight=1.0, a="s2_hash", b="s2_hash_aug",
                    temperature=t, **enc),
      # The encoders' side: the discriminator's cross-entropy with the sides swapped.
      adversarial=dict(type="adversarial_d", weight=0.01, real_logits="s1_logit",
                       fake_logits="s2_logit", **enc),
      quantisation_s1=dict(type="quantisation", weight=0.001, codes="s1_hash", **enc),
      quantisation_s2=dict(type="quantisation", weight=0.001, codes="s2_hash", **enc),
      balance_s1=dict(type="bit_balance", weight=0.01, codes="s1_hash", **enc),
      balance_s2=dict(type="bit_balance", weight=0.01, codes="s2_hash", **enc),
      # The discriminator: S2 codes as "real", S1 codes as "fake", plus WGAN-GP's penalty.
      discriminate=dict(type="adversarial_d", weight=1.0, on="discriminator",
                        real_logits="s2_logit", fake_logits="s1_logit"),
      gradient_penalty=dict(type="gradient_penalty", weight=10.0, on="discriminator",
                            grad_norms="grad_norms")))
  return config_lib.finish(c, a.variant, config_lib.CROSSMODAL_VARIANTS)
