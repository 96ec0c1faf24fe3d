"""LSH: random hyperplanes through the training mean, the first baseline to beat.

Usage: --config=configs/lsh.py[:variant][,bits=N][,seed=N]
       [--config.data.input=pixels|efficientnet_lite0]
variants: full (EuroSAT), small (the real 369-image folder), demo, smoke.

codes = sign((x - mean) @ P) with P ~ N(0, 1), on the config's bands in
[-1, 1] (`pixels`) or on a backbone's frozen features of the RGB bands.
Nothing is trained: the run is one no-op step, then the evaluation.
"""

import ml_collections

from rsh import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, variant="full", bits=64, seed=0)
  c = config_lib.base(a, method="lsh", name="lsh", bands="ms10")
  c.model = ml_collections.ConfigDict(dict(bits=a.bits))
  c.evals = ml_collections.ConfigDict(dict(
      retrieval=dict(type="retrieval", query="query", archive="archive",
                     codes="hash", vectors="hash")))
  # Full-batch and one step: LSH draws its hyperplanes once, whatever the variant.
  return config_lib.finish(c, a.variant, loop=dict(
      batch_size=None, num_steps=1, eval_every=1, checkpoint_every=1, log_every=1))
