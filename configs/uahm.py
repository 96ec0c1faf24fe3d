"""UAHM: unsupervised adversarial hashing for multispectral images (thesis ch. 5).

Usage: --config=configs/uahm.py[:variant][,bits=32|64|128][,seed=N]
variants: full (default, needs EuroSAT), small (real 369-image folder), demo, smoke.
"""

from rsh import config_lib


def get_config(arg=None):
  return config_lib.uahm_family(arg, name="uahm", head="uahm", adversarial=True,
                                bands="ms10", semantic=True)
