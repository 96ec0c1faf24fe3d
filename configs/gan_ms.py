"""GAN-MS baseline: DCGAN on the 10 bands, non-binary D features ranked by cosine (thesis ch. 5).

Usage: --config=configs/gan_ms.py[:variant][,bits=N][,seed=N]
"""

import ml_collections

from rsh import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="full", bits=64, seed=0, recipe="paper")
  c = config_lib.base(a, method="uahm", name="gan_ms", bands="ms10")
  c.model = ml_collections.ConfigDict(dict(
      bits=a.bits, head="gan", adversarial=True, conv_impl="phase", d_stats="real"))
  c.losses = ml_collections.ConfigDict(dict(
      adversarial_d=dict(weight=1.0, on="discriminator"),
      adversarial_g=dict(weight=1.0, on="generator")))
  c.evals = ml_collections.ConfigDict(dict(
      retrieval=dict(type="retrieval", query="query", archive="archive", vectors="feature"),
      **config_lib.baselines()))
  return config_lib.finish(c, a.variant)
