"""GAN-RGB baseline: DCGAN on B04 B03 B02, non-binary D features ranked by cosine."""

from rsh import config_lib


def get_config(arg=None):
  return config_lib.uahm_family(arg, name="gan_rgb", head="gan", adversarial=True,
                                bands="rgb", semantic=False)
