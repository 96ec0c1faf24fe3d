"""Adversarial loss terms: the GAN's generator and discriminator losses (thesis
eq. 5.3, 5.4) and WGAN-GP's gradient penalty, as pure array functions.

Every function is jittable and differentiable, has no state, and returns an
f32[] scalar. Logits are D's pre-sigmoid outputs (D = sigmoid(logit)); the
losses use `log_sigmoid`, finite for any logit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def generator_adversarial_loss(fake_logits: Array) -> Array:
  """L_GA = -E_z log D(G(z)) (eq. 5.3), the non-saturating generator loss.

  Args:
    fake_logits: f32[b] D's logits on generated images; D = sigmoid(logit).

  Returns:
    f32[] scalar. `log_sigmoid` keeps it finite (and its gradient non-zero)
    for any logit, where log(sigmoid(.)) underflows to log(0) below about -88.
  """
  return -jnp.mean(jax.nn.log_sigmoid(fake_logits))


def discriminator_adversarial_loss(real_logits: Array, fake_logits: Array, *,
                                   real_target: float = 1.0) -> Array:
  """L_DA = -E_x log D(x) - E_z log(1 - D(G(z))) (eq. 5.4).

  Args:
    real_logits: f32[b] D's logits on real images.
    fake_logits: f32[b'] D's logits on generated images.
    real_target: label of real images; 1.0 is eq. 5.4. A value below 1 (0.9 is
      usual) is one-sided label smoothing (Salimans et al., 2016): the real
      term becomes the cross-entropy with target `real_target`; fake targets
      stay 0.

  Returns:
    f32[] scalar: mean over real images + mean over generated images.
  """
  # log(1 - sigmoid(a)) = log_sigmoid(-a): finite for any logit.
  real = -(real_target * jax.nn.log_sigmoid(real_logits)
           + (1.0 - real_target) * jax.nn.log_sigmoid(-real_logits))
  fake = -jax.nn.log_sigmoid(-fake_logits)
  return jnp.mean(real) + jnp.mean(fake)


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
