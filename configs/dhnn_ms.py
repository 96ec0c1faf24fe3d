"""DHNN-MS ablation: the discriminator body + hash head, no generator, trained with
the binary and semantic losses only."""

from rsh import config_lib


def get_config(arg=None):
  return config_lib.uahm_family(arg, name="dhnn_ms", head="hash", adversarial=False,
                                bands="ms10", semantic=True)
