"""UAHM: unsupervised adversarial hashing for multispectral images (thesis ch. 5).

Usage: --config=configs/uahm.py[:variant][,bits=32|64|128][,seed=N][,recipe=paper|tuned]
variants: full (default, needs EuroSAT), small (real 369-image folder), demo, smoke.

`recipe=paper` weights the losses as the thesis does: eq. 5.5's binary term
sums over the l bits, so at w1 = 0.1 and 64 bits its gradient outweighs the
semantic term's about 30 to 1. `recipe=tuned` takes the per-bit mean (w1 / l),
the setting docs/RESULTS.md measured best.
"""

import ml_collections

from rsh import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="full", bits=64, seed=0, recipe="paper")
  c = config_lib.base(a, method="uahm", name="uahm", bands="ms10")
  c.model = ml_collections.ConfigDict(dict(
      bits=a.bits, head="uahm", adversarial=True, conv_impl="phase",
      d_stats="real"))  # where D's BatchNorm statistics come from (rsh/methods/uahm.py)
  c.losses = ml_collections.ConfigDict(dict(
      adversarial_d=dict(weight=1.0, on="discriminator"),
      adversarial_g=dict(weight=1.0, on="generator"),
      binary=dict(weight=0.1 if a.recipe == "paper" else 0.1 / a.bits,   # w1
                  on="discriminator", codes="real_hash"),
      semantic=dict(weight=0.1, on="discriminator",                     # w2
                    codes="real_hash", similarity="similarity")))
  c.ssm = config_lib.ssm()
  c.evals = ml_collections.ConfigDict(dict(
      retrieval=dict(type="retrieval", query="query", archive="archive",
                     codes="hash", vectors="hash"),
      **config_lib.baselines(),
      ssm_quality=dict(type="ssm_quality")))
  return config_lib.finish(c, a.variant)
