"""GAN-MS baseline: DCGAN on the 10 bands, non-binary D features ranked by cosine."""

from rsh import config_lib


def get_config(arg=None):
  return config_lib.uahm_family(arg, name="gan_ms", head="gan", adversarial=True,
                                bands="ms10", semantic=False)
