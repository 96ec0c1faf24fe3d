"""UAHM's step and encoder: where D's BatchNorm statistics come from, and loss
terms written outside the project reaching a real run through the entry point."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh import losses as rlosses
from rsh import runs
from rsh import update
from rsh.methods import uahm
from rsh.models import dcgan

REPO = pathlib.Path(__file__).resolve().parents[1]


def _get_config(arg):
  spec = importlib.util.spec_from_file_location("c", REPO / "configs/uahm.py")
  m = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(m)
  return m.get_config(arg)


def _smoke(**model):
  config = _get_config("smoke")
  for k, v in model.items():
    config.model[k] = v
  return config


def _bound(config):
  return rlosses.bind(config.losses, nets=uahm.NETS)


def _batch(b=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"x": jnp.asarray(rng.uniform(-1, 1, (b, 64, 64, 10)), jnp.float32),
          "similarity": jnp.asarray(np.where(rng.random((b, b)) < 0.3, 1, -1), jnp.int8)}


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                              jax.tree.leaves(b)))


def _step_and_real_only_stats(config):
  gen, disc = uahm.build_models(config)
  state = uahm.init_state(config, gen, disc, jax.random.PRNGKey(0))
  batch = _batch()
  # What the running statistics are after the real pass alone, with the
  # parameters the step starts from.
  d = state.nets["discriminator"]
  _, upd = disc.apply({"params": d.params, "batch_stats": d.batch_stats},
                      batch["x"], train=True, mutable=["batch_stats"])
  step = uahm.make_train_step(config, gen, disc, _bound(config))
  new, _ = jax.jit(step)(state, batch, jax.random.PRNGKey(1))
  return new.nets["discriminator"].batch_stats, upd["batch_stats"], d.batch_stats


def test_d_running_statistics_come_from_real_images_only():
  stats, real_only, before = _step_and_real_only_stats(_smoke())
  assert _max_diff(stats, before) > 1e-3  # the step did update them
  assert _max_diff(stats, real_only) < 1e-6


def test_paper_literal_statistics_are_an_explicit_option():
  # d_stats="real_and_fake" lets the pass over generated images move them too:
  # the check above tells the two behaviours apart.
  stats, real_only, _ = _step_and_real_only_stats(_smoke(d_stats="real_and_fake"))
  assert _max_diff(stats, real_only) > 1e-3


def test_unknown_d_stats_is_named():
  config = _smoke(d_stats="fake_only")
  gen, disc = uahm.build_models(config)
  with pytest.raises(ValueError, match="d_stats.*fake_only"):
    uahm.make_train_step(config, gen, disc, _bound(config))


def test_recalibrated_statistics_are_the_mean_batch_moments():
  config = _smoke()
  gen, disc = uahm.build_models(config)
  state = uahm.init_state(config, gen, disc, jax.random.PRNGKey(0))
  images = np.asarray(_batch(24, seed=3)["x"])
  d = state.nets["discriminator"]
  got = update.recalibrate_batch_stats(disc, d.params, d.batch_stats, images, batch_size=8,
                                       momentum=dcgan.BN_MOMENTUM)
  # Reference by another road: from arbitrary starting statistics S, one
  # train-mode pass leaves m * S + (1 - m) * moments; solve for the moments of
  # each of the 3 batches and average them.
  m = dcgan.BN_MOMENTUM
  start = jax.tree.map(lambda v: v + 0.5, d.batch_stats)
  per_batch = []
  for s in range(0, 24, 8):
    _, upd = disc.apply({"params": d.params, "batch_stats": start},
                        images[s:s + 8], train=True, mutable=["batch_stats"])
    per_batch.append(jax.tree.map(lambda new, old: (new - m * old) / (1 - m),
                                  upd["batch_stats"], start))
  want = jax.tree.map(lambda *v: sum(v) / len(v), *per_batch)
  assert _max_diff(got, want) < 1e-4
  # Not simply the last batch's moments.
  assert _max_diff(got, per_batch[-1]) > 1e-3


def test_notebook_loss_terms_reach_a_real_run_through_the_entry_point(tmp_path):
  seen = {}

  def balance(codes):
    # Bit balance: each bit's mean over the batch near 0.
    seen["d"] = codes.shape
    return jnp.sum(jnp.square(jnp.mean(codes, axis=0)))

  def fake_codes_near_corners(fake_hash, fake_image, fake_logit):
    # G-side: the generated images' codes, images and logits are all inputs.
    seen["g"] = (fake_hash.shape, fake_image.shape, fake_logit.shape)
    return (-jnp.mean(jnp.square(fake_hash))
            + 0.0 * jnp.mean(fake_image) + 0.0 * jnp.mean(fake_logit))

  config = _smoke()
  config.losses.balance = dict(weight=0.5, on="discriminator", codes="fake_hash")
  config.losses.fake_corners = dict(weight=2.0, on="generator")
  results = runs.run(config, tmp_path, terms={"balance": balance,
                                              "fake_corners": fake_codes_near_corners})
  assert seen["d"] == (8, 64)  # D-side terms can read the fake pass too
  assert seen["g"] == ((8, 64), (8, 64, 64, 10), (8,))
  last = results["history"][-1]
  # Each total is the weighted sum of its terms: the notebook's are in it.
  d_total = (last["train/d/adversarial_d"] + 0.1 * last["train/d/binary"]
             + 0.1 * last["train/d/semantic"] + 0.5 * last["train/d/balance"])
  assert last["train/d_loss"] == pytest.approx(d_total, rel=1e-5, abs=1e-6)
  g_total = last["train/g/adversarial_g"] + 2.0 * last["train/g/fake_corners"]
  assert last["train/g_loss"] == pytest.approx(g_total, rel=1e-5, abs=1e-6)
  assert last["train/d/balance"] > 0


def test_a_g_side_term_cannot_read_the_real_pass():
  config = _smoke()
  config.losses.peek = dict(type="binary", weight=1.0, on="generator", codes="real_hash")
  gen, disc = uahm.build_models(config)
  state = uahm.init_state(config, gen, disc, jax.random.PRNGKey(0))
  step = uahm.make_train_step(config, gen, disc, _bound(config))
  # Found while the step is traced: abstract shapes are enough (no op is run).
  with pytest.raises(rlosses.MissingInputError, match="peek.*real_hash"):
    jax.eval_shape(step, state, _batch(), jax.random.PRNGKey(1))


@pytest.mark.parametrize("bits", [32, 64, 128])
def test_tuned_recipe_takes_the_per_bit_mean_of_the_binary_term(bits):
  paper, tuned = _get_config(f"demo,bits={bits}"), _get_config(f"demo,bits={bits},recipe=tuned")
  assert paper.losses.binary.weight == 0.1 and paper.name == "uahm"
  assert tuned.losses.binary.weight == pytest.approx(0.1 / bits) and tuned.name == "uahm_tuned"
  assert tuned.losses.semantic.weight == paper.losses.semantic.weight == 0.1


@pytest.mark.slow
def test_every_form_of_the_step_gives_the_same_training():
  # The CPU-fast forms (phase gradients in G and D, G's pass shared) against
  # the plain one: the same losses over two steps.
  config = _get_config("smoke")
  losses = {}
  for impl, g_pass in (("phase", "shared"), ("xla", "separate")):
    config.model.conv_impl, config.model.g_pass = impl, g_pass
    gen, disc = uahm.build_models(config)
    state = uahm.init_state(config, gen, disc, jax.random.PRNGKey(0))
    step = jax.jit(uahm.make_train_step(config, gen, disc, _bound(config)))
    out = []
    for s in range(2):
      state, metrics = step(state, _batch(seed=s), jax.random.PRNGKey(s))
      out.append({k: float(v) for k, v in metrics.items()})
    losses[impl] = out
  # Step 0 reads the same parameters: its losses agree to 1e-5. Adam's first
  # update is +-lr for every parameter whatever its gradient's size, so where a
  # true gradient is 0 (a conv bias before BatchNorm) rounding picks the sign:
  # step 1 agrees to 1e-3 (a wrong gradient moves the losses by far more).
  for s, (fast, plain) in enumerate(zip(losses["phase"], losses["xla"])):
    assert fast.keys() == plain.keys()
    for k in fast:
      np.testing.assert_allclose(fast[k], plain[k], rtol=1e-5 if s == 0 else 1e-3, atol=1e-6,
                                 err_msg=f"step {s}: {k}")


def test_unknown_cpu_conv_is_named():
  from rsh import platform
  with pytest.raises(ValueError, match="cpu_conv"):
    platform.set_cpu_conv("onednn")


def test_shared_generator_pass_is_the_separate_one_exactly():
  # G's step pulling its gradient back through the pass D's step read (the
  # default) is the same computation as running G again: the same state.
  config = _get_config("smoke")
  states = []
  for g_pass in ("shared", "separate"):
    config.model.g_pass = g_pass
    gen, disc = uahm.build_models(config)
    state = uahm.init_state(config, gen, disc, jax.random.PRNGKey(0))
    step = jax.jit(uahm.make_train_step(config, gen, disc, _bound(config)))
    states.append(step(state, _batch(), jax.random.PRNGKey(1)))
  jax.tree.map(np.testing.assert_array_equal, states[0], states[1])
  config.model.g_pass = "twice"
  with pytest.raises(ValueError, match="g_pass"):
    uahm.make_train_step(config, *uahm.build_models(config), _bound(config))
