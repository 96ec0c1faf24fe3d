"""Contrastive-adversarial cross-modal S1 <-> S2 hashing, after DUCH (SPEC §4).

Usage: --config=configs/duch.py[:variant][,bits=N][,seed=N][,weighting=public|rsh]
    [,temperature=T]
variants: full (BigEarthNet-MM, --config.data.dir=DIR), serbia, demo, smoke.

No labels in training. Encoders: NT-Xent between the modalities of each pair
(inter-modal) and between two augmented views of each image (intra-modal, per
modality), an adversarial term from a code discriminator that tells S1 codes
("fake") from S2 codes ("real"), quantisation and bit balance. The
discriminator: the cross-entropy of telling them apart plus a gradient penalty.

`weighting=public` (the default) is DUCH's public code (github.com/comrados/duch,
controller_DUCH.py) in effect, not only its weights: every encoder term is a
SUM, as there (NT-Xent over the 2b anchors at temperature 1; quantisation over
the 4 b l entries of the four codes s1, s2, s1_aug, s2_aug against one shared
target, the sign of their mean; balance per code, (sum_k h_k)^2 summed over the
4 b codes; the adversarial term summed over 2b codes), with its weights
adversarial 0.01, quantisation 0.001, balance 0.01. The discriminator sees the
augmented codes too (its loss is the clean pair's plus the augmented pair's,
each with its gradient penalty, mixed per entry) and has its own Adam (lr 1e-4,
betas (0.5, 0.9), PyTorch-style L2 weight decay 1e-4). BatchNorm running
statistics come from the clean pass alone (issue 37's choice: the codes
retrieval encodes are clean; the public code's train-mode passes update them
with both, as `weighting=rsh` does). Two things are the public code's and look
odd, kept as they are: its encoders' adversarial term asks D to call
the codes of D's own "real" side (S2 here, its texts) real, which trains only
that encoder (`--config.losses.adversarial.fake_logits=s1_logit` and
`adversarial_aug.fake_logits=s1_logit_aug` turn it on the S1 side); and its
quantisation target is refreshed once an epoch from stored codes, where this
takes the current batch's (`rsh.losses.shared_quantisation_loss`). Not
reproduced: the public encoders' optimiser (Adam 1e-4, L2 5e-4, lr x 0.8 every
50 epochs; here the cross-modal family's Adam 1e-3), its discriminator's
BatchNorm layer, and its "augmented" texts, which are the clean ones.

`weighting=rsh` is this config as it was before (issue 37): the same weights on
per-entry MEANS (NT-Xent per anchor, temperature 0.5; quantisation per entry
of each modality's clean codes against its own sign; balance per bit over the
batch; the swapped-sides cross-entropy on the clean codes), so quantisation was
l times and balance about l^2 times weaker than in the public code; the
discriminator shared the encoders' optimiser settings, never saw augmented
codes, and the augmented pass updated the BatchNorm statistics. On the demo
(docs/RESULTS.md, issue 37) `public` gives the higher MAP@100 in all four
directions for each of seeds 0, 1, 2 (by 0.03 to 0.05 on the mean of the three).
"""

import ml_collections

from rsh import config_lib

WEIGHTINGS = ("public", "rsh")


def get_config(arg=None):
  a = config_lib.parse_arg(arg, config_lib.CROSSMODAL_VARIANTS, variant="full", bits=64,
                           seed=0, weighting="public", temperature=0.0)
  if a.weighting not in WEIGHTINGS:
    raise ValueError(f"unknown config weighting {a.weighting!r}; known: "
                     f"{', '.join(WEIGHTINGS)}")
  public = a.weighting == "public"
  # temperature=0 (unset): the weighting's own, 1.0 public (NTXentLoss's default), 0.5 rsh.
  t = a.temperature or (1.0 if public else 0.5)
  c = config_lib.crossmodal(a, name="duch" if public else "duch_rsh")
  c.model.discriminator = True
  c.losses = ml_collections.ConfigDict(public_losses(t) if public else rsh_losses(t))
  if public:
    c.model.aug_bn_stats = False  # the running statistics of clean inputs, as encoded
    c.model.gp_mix = "element"    # torch.rand(batch, bits): one mixing weight per entry
    c.optim.discriminator = ml_collections.ConfigDict(dict(
        lr=1e-4, b1=0.5, b2=0.9, eps=1e-8, weight_decay=1e-4))
  return config_lib.finish(c, a.variant, config_lib.CROSSMODAL_VARIANTS)


def public_losses(t: float) -> dict:
  """The public code's terms, sums, weights and which codes each reads."""
  total = dict(on="encoders", reduction="sum")
  ntx = lambda a, b: dict(type="nt_xent", weight=1.0, a=a, b=b, temperature=t, **total)
  balance = lambda h: dict(type="bit_balance", weight=0.01, codes=h, per="code", **total)
  # The encoders' side: -sum log D(h) of the codes D trains as real (S2's, clean and augmented).
  adversarial = lambda logits: dict(type="adversarial_g", weight=0.01, fake_logits=logits,
                                    **total)
  # The discriminator, once per pair (clean, augmented): S2 real, S1 fake, + WGAN-GP's penalty.
  d_side = lambda s: dict(type="adversarial_d", weight=1.0, on="discriminator",
                          real_logits=f"s2_logit{s}", fake_logits=f"s1_logit{s}")
  penalty = lambda s: dict(type="gradient_penalty", weight=10.0, on="discriminator",
                           grad_norms=f"grad_norms{s}")
  return dict(
      inter=ntx("s1_hash", "s2_hash"),
      intra_s1=ntx("s1_hash", "s1_hash_aug"),
      intra_s2=ntx("s2_hash", "s2_hash_aug"),
      adversarial=adversarial("s2_logit"),
      adversarial_aug=adversarial("s2_logit_aug"),
      quantisation=dict(type="shared_quantisation", weight=0.001, a="s1_hash", b="s2_hash",
                        c="s1_hash_aug", d="s2_hash_aug", **total),
      balance_s1=balance("s1_hash"), balance_s2=balance("s2_hash"),
      balance_s1_aug=balance("s1_hash_aug"), balance_s2_aug=balance("s2_hash_aug"),
      discriminate=d_side(""), discriminate_aug=d_side("_aug"),
      gradient_penalty=penalty(""), gradient_penalty_aug=penalty("_aug"))


def rsh_losses(t: float) -> dict:
  """The terms as they were before issue 37 (means, own-sign quantisation, per-bit balance)."""
  enc = dict(on="encoders")
  return dict(
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
                            grad_norms="grad_norms"))
