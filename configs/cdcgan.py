"""C-DCGAN: a class-conditional DCGAN on EuroSAT RGB (thesis ch. 4, Fig. 4.4, eq. 4.2-4.3).

Usage: --config=configs/cdcgan.py[:variant][,seed=N]
variants: full (default, needs EuroSAT), small (a EuroSAT-MS folder, --config.data.dir),
demo, smoke. D sees the image with the one-hot label tiled onto its channels (64x64x13).
"""

from rsh import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, config_lib.CGAN_VARIANTS, variant="full", seed=0)
  c = config_lib.cgan(a, name="cdcgan", conditioning="input")
  return config_lib.finish(c, a.variant, config_lib.CGAN_VARIANTS)
