"""Adversarial loss terms: the GAN's generator and discriminator losses (thesis
eq. 5.3, 5.4), ACGAN's auxiliary classifier (eq. 4.8) and WGAN-GP's gradient
penalty, as pure array functions.

Every function is jittable and differentiable, has no state, and returns an
f32[] scalar. Logits are D's pre-sigmoid outputs (D = sigmoid(logit)); the
losses use `log_sigmoid`, finite for any logit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rsh.losses.hashing import reduced

Array = jax.Array


def generator_adversarial_loss(fake_logits: Array, *, reduction: str = "mean") -> Array:
  """L_GA = -E_z log D(G(z)) (eq. 5.3), the non-saturating generator loss.

  Args:
    fake_logits: f32[b] D's logits on generated images (or on any codes an
      encoder wants D to call real); D = sigmoid(logit).
    reduction: "mean" (eq. 5.3) or "sum" over the b logits (DUCH's public code).

  Returns:
    f32[] scalar. `log_sigmoid` keeps it finite (and its gradient non-zero)
    for any logit, where log(sigmoid(.)) underflows to log(0) below about -88.
  """
  return reduced(-jax.nn.log_sigmoid(fake_logits), reduction, "generator_adversarial_loss")


def discriminator_adversarial_loss(real_logits: Array, fake_logits: Array, *,
                                   real_target: float = 1.0, fake_target: float = 0.0) -> Array:
  """L_DA = -E_x log D(x) - E_z log(1 - D(G(z))) (eq. 5.4, 4.2, 4.6).

  Args:
    real_logits: f32[b] D's logits on real images.
    fake_logits: f32[b'] D's logits on generated images.
    real_target: label of real images; 1.0 is eq. 5.4. A value below 1 (0.9 is
      usual) is one-sided label smoothing (Salimans et al., 2016): the real
      term becomes the cross-entropy with target `real_target`.
    fake_target: label of generated images; 0.0 is eq. 5.4. Thesis §4.1.1
      smooths both sides: targets 0.9 / 0.1. Only D's term has targets to
      smooth: G's (`generator_adversarial_loss`) keeps target 1.

  Returns:
    f32[] scalar: mean over real images + mean over generated images.
  """
  # log(1 - sigmoid(a)) = log_sigmoid(-a): finite for any logit.
  real = -(real_target * jax.nn.log_sigmoid(real_logits)
           + (1.0 - real_target) * jax.nn.log_sigmoid(-real_logits))
  if fake_target == 0.0:  # eq. 5.4 exactly (UAHM's numbers, bit for bit)
    fake = -jax.nn.log_sigmoid(-fake_logits)
  else:
    fake = -(fake_target * jax.nn.log_sigmoid(fake_logits)
             + (1.0 - fake_target) * jax.nn.log_sigmoid(-fake_logits))
  return jnp.mean(real) + jnp.mean(fake)


def classification_loss(logits: Array, labels: Array) -> Array:
  """Softmax cross-entropy of class logits against int class ids: ACGAN's L_C
  (eq. 4.8, one of its two expectations; D is given it on real and on generated
  images, G on generated ones).

  Args:
    logits: f32[b, c] class logits (ACGAN's D: `real_class_logit`, `fake_class_logit`).
    labels: int[b] class ids in [0, c).

  Returns:
    f32[] scalar: -mean_i log softmax(logits_i)[labels_i].
  """
  if jnp.ndim(logits) != 2 or jnp.shape(labels) != jnp.shape(logits)[:1]:
    raise ValueError(f"classification_loss: logits [b, c] and int labels [b]; got shapes "
                     f"{tuple(jnp.shape(logits))} and {tuple(jnp.shape(labels))}")
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, labels.astype(jnp.int32)[:, None], axis=-1))


def gradient_penalty_loss(grad_norms: Array, *, target: float = 1.0) -> Array:
  """WGAN-GP's gradient penalty on given gradient norms.

  The method computes ||grad_x D(x)|| at codes interpolated between real and
  fake ones and offers those norms as an input; this term only penalises them.

  Args:
    grad_norms: f32[b] one norm per interpolated sample.
    target: the norm aimed at (1, a 1-Lipschitz critic).

  Returns:
    f32[] scalar: mean_i (grad_norms_i - target)^2.
  """
  if jnp.ndim(grad_norms) != 1:
    raise ValueError(f"gradient_penalty_loss: grad_norms must be rank 1 [batch], got shape "
                     f"{tuple(jnp.shape(grad_norms))}")
  return jnp.mean(jnp.square(grad_norms - target))
