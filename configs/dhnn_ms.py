"""DHNN-MS ablation: the discriminator body + hash head, no generator, trained with
the binary and semantic losses only (thesis ch. 5).

Usage: --config=configs/dhnn_ms.py[:variant][,bits=N][,seed=N][,recipe=paper|tuned]
"""

import ml_collections

from rsh import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="full", bits=64, seed=0, recipe="paper")
  c = config_lib.base(a, method="uahm", name="dhnn_ms", bands="ms10")
  c.model = ml_collections.ConfigDict(dict(
      bits=a.bits, head="hash", adversarial=False, conv_impl="phase", d_stats="real"))
  c.losses = ml_collections.ConfigDict(dict(
      binary=dict(weight=0.1 if a.recipe == "paper" else 0.1 / a.bits,
                  on="discriminator", codes="real_hash"),
      semantic=dict(weight=0.1, on="discriminator",
                    codes="real_hash", similarity="similarity")))
  c.ssm = config_lib.ssm()
  c.evals = ml_collections.ConfigDict(dict(
      retrieval=dict(type="retrieval", query="query", archive="archive",
                     codes="hash", vectors="hash"),
      **config_lib.baselines(),
      ssm_quality=dict(type="ssm_quality")))
  return config_lib.finish(c, a.variant)
