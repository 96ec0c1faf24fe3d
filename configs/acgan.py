"""ACGAN: an auxiliary-classifier GAN on EuroSAT RGB (thesis ch. 4, Fig. 4.4, eq. 4.6-4.8).

Usage: --config=configs/acgan.py[:variant][,seed=N]
variants: full (default, needs EuroSAT), small (a EuroSAT-MS folder, --config.data.dir),
demo, smoke. D sees the image only and outputs a real/fake logit and 10 class logits;
D minimises its adversarial loss plus the class cross-entropy on real and generated
images, G its adversarial loss plus the cross-entropy of its images' classes (eq. 4.8).
"""

from rsh import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, config_lib.CGAN_VARIANTS, variant="full", seed=0)
  c = config_lib.cgan(a, name="acgan", conditioning="auxiliary")
  c.losses.class_real = dict(type="classification", weight=1.0, on="discriminator",
                             logits="real_class_logit")
  c.losses.class_fake = dict(type="classification", weight=1.0, on="discriminator",
                             logits="fake_class_logit")
  c.losses.class_g = dict(type="classification", weight=1.0, on="generator",
                          logits="fake_class_logit")
  return config_lib.finish(c, a.variant, config_lib.CGAN_VARIANTS)
