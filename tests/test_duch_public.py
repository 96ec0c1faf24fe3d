"""configs/duch.py as DUCH's public code weights it (issue 37).

The references below are float64 NumPy transcriptions, written here, of the
formulas of the public code (github.com/comrados/duch: controller_DUCH.py's
losses and optimisers; its NTXentLoss, type "orig"): every encoder term a sum,
one quantisation target shared by the four codes, balance per code. rsh's
jitted f32 terms, bound from the config, must give the same numbers. The
method's own side (BatchNorm statistics of the clean pass only, the
discriminator's optimiser, the augmented codes in its loss) runs one step of
the smoke config.
"""

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rsh import augment as raug
from rsh import data as rdata
from rsh import losses
from rsh import update
from rsh.methods import crossmodal as method
from rsh.models import crossmodal as cm

REPO = pathlib.Path(__file__).resolve().parents[1]
RTOL = 2e-5


def get_config(arg="smoke"):
  spec = importlib.util.spec_from_file_location("duch", REPO / "configs" / "duch.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config(arg)
  config.data.cache_dir = "none"
  return config


# ----------------------------------------------------------------------------
# The public code's formulas, float64 (img = S1, txt = S2; "1" clean, "2" augmented).


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def ntxent_public(x, y, t=1.0, eps=1e-6):
  """Rows normalised; per anchor -log(pos / (sum_k exp(cos / t) - e + eps)), summed over 2b."""
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
  z = np.concatenate([x, y])
  neg = np.maximum(np.exp(z @ z.T / t).sum(axis=1) - math.e, eps)  # e = exp(cos(z, z) / 1)
  pos = np.exp(np.sum(x * y, axis=1) / t)
  return float(np.sum(-np.log(np.concatenate([pos, pos]) / (neg + eps))))


def quantisation_public(*codes):
  target = np.sign(np.mean(codes, axis=0))  # B = sign of the mean of the four codes
  return float(sum(np.sum((target - h) ** 2) for h in codes))


def balance_public(*codes):
  return float(sum(np.sum(np.sum(h, axis=1) ** 2) for h in codes))


def adversarial_public(*logits):
  return float(sum(np.sum(-np.log(_sigmoid(d))) for d in logits))


def discriminator_public(real, fake, norms):
  """One train_discriminator_step: real and fake BCE means, 10 x the penalty's mean."""
  return float(-np.log(_sigmoid(real)).mean() - np.log(1.0 - _sigmoid(fake)).mean()
               + 10.0 * ((norms - 1.0) ** 2).mean())


def encoder_loss_public(i1, i2, t1, t2, d_t1, d_t2, alpha=0.01, beta=0.001, gamma=0.01):
  """calculate_losses: NT-Xent inter + intra img + intra txt, then the weighted rest."""
  ntx = ntxent_public(i1, t1) + ntxent_public(i1, i2) + ntxent_public(t1, t2)
  return (ntx + alpha * adversarial_public(d_t1, d_t2)
          + beta * quantisation_public(i1, i2, t1, t2) + gamma * balance_public(i1, i2, t1, t2))


@pytest.fixture(scope="module")
def arrays():
  rng = np.random.default_rng(37)
  b, l = 6, 16
  codes = {k: np.tanh(1.5 * rng.standard_normal((b, l))).astype(np.float32)
           for k in ("s1_hash", "s2_hash", "s1_hash_aug", "s2_hash_aug")}
  logits = {k: rng.standard_normal(b).astype(np.float32) * 2
            for k in ("s1_logit", "s2_logit", "s1_logit_aug", "s2_logit_aug")}
  norms = {k: rng.random(b).astype(np.float32) * 2 for k in ("grad_norms", "grad_norms_aug")}
  return {**codes, **logits, **norms}


def _f64(x):
  return np.asarray(x, np.float64)


def test_each_term_is_the_public_sum(arrays):
  h = {k: _f64(v) for k, v in arrays.items()}
  ntx = jax.jit(lambda a, b: losses.nt_xent_loss(a, b, temperature=1.0, reduction="sum"))
  np.testing.assert_allclose(ntx(arrays["s1_hash"], arrays["s2_hash"]),
                             ntxent_public(h["s1_hash"], h["s2_hash"]), rtol=RTOL)
  codes = [arrays[k] for k in ("s1_hash", "s1_hash_aug", "s2_hash", "s2_hash_aug")]
  quant = jax.jit(lambda *c: losses.shared_quantisation_loss(*c, reduction="sum"))
  np.testing.assert_allclose(quant(*codes), quantisation_public(*map(_f64, codes)), rtol=RTOL)
  bb = jax.jit(lambda c: losses.bit_balance_loss(c, per="code", reduction="sum"))
  np.testing.assert_allclose(sum(bb(c) for c in codes), balance_public(*map(_f64, codes)),
                             rtol=RTOL)
  adv = jax.jit(lambda d: losses.generator_adversarial_loss(d, reduction="sum"))
  np.testing.assert_allclose(adv(arrays["s2_logit"]) + adv(arrays["s2_logit_aug"]),
                             adversarial_public(h["s2_logit"], h["s2_logit_aug"]), rtol=RTOL)


def test_the_configs_weighted_losses_are_the_public_ones(arrays):
  config = get_config()
  bound = losses.bind(config.losses, nets=method.NETS)
  total = jax.jit(lambda net, x: losses.total_loss(bound[net], x)[0], static_argnums=0)
  h = {k: _f64(v) for k, v in arrays.items()}
  want = encoder_loss_public(h["s1_hash"], h["s1_hash_aug"], h["s2_hash"], h["s2_hash_aug"],
                             h["s2_logit"], h["s2_logit_aug"])
  np.testing.assert_allclose(total("encoders", arrays), want, rtol=RTOL)
  # train_discriminator: the clean pair's step, then the augmented pair's, gradients added.
  want_d = (discriminator_public(h["s2_logit"], h["s1_logit"], h["grad_norms"])
            + discriminator_public(h["s2_logit_aug"], h["s1_logit_aug"], h["grad_norms_aug"]))
  np.testing.assert_allclose(total("discriminator", arrays), want_d, rtol=RTOL)


def test_weighting_rsh_is_the_earlier_config_and_a_typo_is_refused():
  old = get_config("smoke,weighting=rsh")
  assert old.losses.inter.temperature == 0.5 and "reduction" not in old.losses.inter
  assert "discriminator" not in old.optim and "aug_bn_stats" not in old.model
  with pytest.raises(ValueError, match="unknown config weighting 'pubic'"):
    get_config("smoke,weighting=pubic")


# ----------------------------------------------------------------------------
# One step of the method on the smoke config.


@pytest.fixture(scope="module")
def smoke():
  """The smoke config with the smallest networks (the step's compile dominates), its data,
  a batch, the state before and after one step, and the jitted step."""
  config = get_config()
  config.model.update(dict(widths=(4,), feature_dim=8, bits=16, disc_hidden=(8,)))
  data = rdata.prepare(config)
  idx = np.arange(8)
  batch = {"s1": data.train_rows("s1")[idx], "s2": data.train_rows("pixels")[idx]}
  m = method.build(config, data)
  state = jax.jit(m.init)(jax.random.PRNGKey(0))
  step = jax.jit(m.step)
  new, metrics = step(state, batch, jax.random.PRNGKey(1))
  return config, data, batch, (state, new, metrics), step


def _standardised(data, batch):
  x = {}
  for mod, view in (("s1", "s1"), ("s2", "pixels")):
    mean, std = rdata.channel_stats(data.train_rows(view))
    x[mod] = (jnp.asarray(batch[mod], jnp.float32) - mean) / std
  return x


def _model(config):
  return cm.CrossModalHasher(("s1", "s2"), int(config.model.bits), tuple(config.model.widths),
                             int(config.model.feature_dim))


def test_augmented_pass_leaves_batch_norm_statistics_alone(smoke):
  config, data, batch, (state, new, _), _ = smoke
  e = state.nets["encoders"]
  apply = jax.jit(lambda p, s, x: update.apply(_model(config), p, s, x))
  _, clean = apply(e.params, e.batch_stats, _standardised(data, batch))
  got, want = jax.tree.leaves(new.nets["encoders"].batch_stats), jax.tree.leaves(clean)
  assert len(got) == len(want) > 0
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _torch_adam_l2(p, grads, lr, b1, b2, eps, wd):
  """PyTorch's Adam(weight_decay=wd): wd * p joins the gradient, then Adam's moments."""
  m = v = np.zeros_like(p)
  for t, g in enumerate(grads, 1):
    g = g + wd * p
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
  return p


def test_discriminator_has_its_own_public_optimiser(smoke):
  config, _, _, (state, new, _), _ = smoke
  own = config.optim.discriminator
  assert (own.lr, own.b1, own.b2, own.weight_decay) == (1e-4, 0.5, 0.9, 1e-4)
  assert config.optim.lr != own.lr  # not the encoders' settings
  tx = method.discriminator_optimizer(config.optim)
  rng = np.random.default_rng(0)
  p0 = rng.standard_normal(6)
  # Gradients of two sizes: where wd * p outweighs them, L2-in-Adam (PyTorch) and
  # decoupled decay (AdamW) move the parameters in different directions.
  grads = [rng.standard_normal(6) * np.array([1, 1, 1, 1e-7, 1e-7, 1e-7]) for _ in range(3)]
  p, s = jnp.asarray(p0, jnp.float32), tx.init(jnp.asarray(p0, jnp.float32))
  for g in grads:
    u, s = tx.update(jnp.asarray(g, jnp.float32), s, p)
    p = optax.apply_updates(p, u)
  np.testing.assert_allclose(p, _torch_adam_l2(p0, grads, 1e-4, 0.5, 0.9, 1e-8, 1e-4),
                             rtol=1e-6, atol=1e-8)
  # In the method: D's state is that optimiser's, and its first step is Adam's
  # lr-sized one (the encoders' lr is 10x larger).
  d0, d1 = state.nets["discriminator"], new.nets["discriminator"]
  assert (jax.tree.structure(d0.opt_state) == jax.tree.structure(tx.init(d0.params))
          != jax.tree.structure(state.nets["encoders"].opt_state))
  moved = np.concatenate([np.abs(np.ravel(a - b)) for a, b in
                          zip(jax.tree.leaves(d1.params), jax.tree.leaves(d0.params))])
  assert 0.9e-4 < moved.max() <= 1.001e-4


def test_discriminator_loss_includes_the_augmented_codes(smoke):
  config, data, batch, (state, _, metrics), step = smoke
  d = config.losses
  assert (d.discriminate_aug.real_logits, d.discriminate_aug.fake_logits) == (
      "s2_logit_aug", "s1_logit_aug")
  assert d.discriminate_aug.on == d.gradient_penalty_aug.on == "discriminator"
  np.testing.assert_allclose(metrics["d_loss"], metrics["d/discriminate"]
                             + metrics["d/discriminate_aug"] + 10 * (
                                 metrics["d/gradient_penalty"]
                                 + metrics["d/gradient_penalty_aug"]), rtol=1e-5)
  # The augmented pair's cross-entropy and penalty, recomputed from the step's
  # augmented inputs (its key for them: the first half of the step's key, one
  # fold per modality) through the initial encoders and a discriminator whose
  # weights are scaled up: the initial one gives nearly the same logit to any
  # code, so clean codes in place of the augmented ones would pass unnoticed.
  d0 = state.nets["discriminator"]
  state = state.replace(nets={**state.nets, "discriminator": d0.replace(
      params=jax.tree.map(lambda w: 10 * w, d0.params))})
  _, metrics = step(state, batch, jax.random.PRNGKey(1))
  assert abs(metrics["d/discriminate_aug"] / metrics["d/discriminate"] - 1) > 1e-2
  disc = cm.CodeDiscriminator(tuple(config.model.disc_hidden))

  @jax.jit
  def augmented(nets, x):
    k_aug, k_gp = jax.random.split(jax.random.PRNGKey(1))
    x_aug = {mod: raug.random_flips_noise(x[mod], jax.random.fold_in(k_aug, i),
                                          float(config.model.augment_noise))
             for i, mod in enumerate(("s1", "s2"))}
    e, d_params = nets["encoders"], nets["discriminator"].params
    out, _ = update.apply(_model(config), e.params, e.batch_stats, x_aug)
    h1, h2 = out["s1_hash"], out["s2_hash"]
    # The penalty's points: one mixing weight per entry (torch.rand(batch, bits)).
    eps = jax.random.uniform(jax.random.fold_in(k_gp, 1), h1.shape)
    one = lambda c: disc.apply({"params": d_params}, c[None])[0]
    grads = jax.vmap(jax.grad(one))(eps * h1 + (1 - eps) * h2)
    return ({m: disc.apply({"params": d_params}, out[f"{m}_hash"]) for m in ("s1", "s2")},
            jnp.linalg.norm(grads, axis=-1))

  logit, norms = augmented(state.nets, _standardised(data, batch))
  logit = {m: _f64(v) for m, v in logit.items()}
  want = (-np.log(_sigmoid(logit["s2"])).mean() - np.log(1.0 - _sigmoid(logit["s1"])).mean())
  np.testing.assert_allclose(metrics["d/discriminate_aug"], want, rtol=1e-4)
  np.testing.assert_allclose(metrics["d/gradient_penalty_aug"],
                             np.mean((_f64(norms) - 1) ** 2), rtol=1e-4)
