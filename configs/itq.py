"""ITQ: PCA + iterative quantisation (Gong & Lazebnik 2011), a shallow baseline.

Usage: --config=configs/itq.py[:variant][,bits=N][,seed=N]
       [--config.data.input=pixels|efficientnet_lite0]
variants: full (EuroSAT), small (the real 369-image folder), demo, smoke.

On `pixels` it hashes the config's bands (ms10) in [-1, 1]; on a backbone's
name, its frozen ImageNet features of the RGB bands (`rsh.features`). One
training step is one ITQ alternation over the whole training set; the
quantisation loss is the training curve (`train/quantisation`).
"""

import ml_collections

from rsh import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="full", bits=64, seed=0, iterations=50)
  c = config_lib.base(a, method="itq", name="itq", bands="ms10")
  c.model = ml_collections.ConfigDict(dict(bits=a.bits))
  c.evals = ml_collections.ConfigDict(dict(
      retrieval=dict(type="retrieval", query="query", archive="archive",
                     codes="hash", vectors="hash"),
      random_projection=dict(type="lsh")))
  # Full-batch whatever the variant: every step is one alternation on the whole
  # training set. Evaluated every 10: map_vs_steps.png is MAP against iterations.
  return config_lib.finish(c, a.variant, loop=dict(
      batch_size=None, num_steps=a.iterations, eval_every=10,
      checkpoint_every=a.iterations, log_every=10))
