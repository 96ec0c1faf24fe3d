"""Thesis ch. 4's conditional GANs on the shared GAN step (`rsh.gan`): C-DCGAN and
ACGAN configs, label smoothing, labelled generation, the generated_quality
evaluator, and an ACGAN smoke run end to end through `python -m rsh.main`."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsh import data as rdata
from rsh import evaluators as revals
from rsh import gan
from rsh import losses as rlosses
from rsh import restore
from rsh.methods import cgan as cgan_method
from rsh.methods import uahm

from tests.conftest import cli_main

def _config(name, arg="smoke"):
  return restore.config_from_file(f"configs/{name}.py:{arg}")


@pytest.fixture(scope="module")
def cdcgan(tmp_path_factory):
  """The C-DCGAN smoke method, its data and an initial state."""
  config = _config("cdcgan")
  config.data.cache_dir = str(tmp_path_factory.mktemp("cache"))
  data = rdata.prepare(config)
  method = cgan_method.build(config, data)
  return config, data, method, method.init(jax.random.PRNGKey(0))


def test_the_configs_are_the_thesis_networks_and_optimiser():
  for name, conditioning in (("cdcgan", "input"), ("acgan", "auxiliary")):
    full = _config(name, "full")
    assert (full.data.bands, full.train.batch_size, full.train.num_steps) == ("rgb", 64, 100_000)
    assert (full.optim.lr, full.optim.b1, full.optim.b2) == (2e-4, 0.5, 0.999)
    assert (full.model.conditioning, full.model.noise_dim) == (conditioning, 100)
    assert full.evals.quality.samples == 5000
  assert {"class_real", "class_fake", "class_g"} <= set(_config("acgan").losses)
  assert not {"class_real", "class_fake", "class_g"} & set(_config("cdcgan").losses)


def test_cdcgan_d_sees_13_channels_and_acgan_d_has_11_outputs():
  for name, channels, outputs in (("cdcgan", 13, 1), ("acgan", 3, 11)):
    config = _config(name)
    gen, disc = cgan_method.build_models(config, 10)
    state = jax.eval_shape(lambda rng: cgan_method.init_state(config, gen, disc, rng),
                           jax.random.PRNGKey(0))
    d = state.nets["discriminator"].params
    assert d["conv1"]["kernel"].shape == (5, 5, channels, 16)
    assert d["out"]["kernel"].shape == (1024, outputs)
    assert "conv2_bn" in state.nets["discriminator"].batch_stats
    # G(z, y): z of 100 and a one-hot of 10 into its first layer.
    assert state.nets["generator"].params["net"]["project"]["kernel"].shape[0] == 110


def test_d_without_batch_norm_is_fig_44_as_drawn():
  config = _config("acgan")
  config.model.d_batch_norm = False
  _, disc = cgan_method.build_models(config, 10)
  variables = jax.eval_shape(lambda rng: disc.init(rng, jnp.zeros((2, 64, 64, 3)), None,
                                                   train=False), jax.random.PRNGKey(0))
  assert "batch_stats" not in variables
  assert [k for k in variables["params"] if k.endswith("_bn")] == []


def test_label_smoothing_changes_d_targets_only():
  rng = np.random.default_rng(0)
  real, fake = (jnp.asarray(rng.normal(size=16), jnp.float32) for _ in range(2))
  bce = lambda logits, t: -np.mean(t * np.log(1 / (1 + np.exp(-np.asarray(logits, np.float64))))
                                   + (1 - t) * np.log(1 - 1 / (1 + np.exp(-np.asarray(
                                       logits, np.float64)))))
  smoothed = rlosses.discriminator_adversarial_loss(real, fake, real_target=0.9, fake_target=0.1)
  np.testing.assert_allclose(smoothed, bce(real, 0.9) + bce(fake, 0.1), rtol=1e-5)
  plain = rlosses.discriminator_adversarial_loss(real, fake)
  np.testing.assert_allclose(plain, bce(real, 1.0) + bce(fake, 0.0), rtol=1e-5)
  assert abs(float(smoothed) - float(plain)) > 1e-3
  # The configs smooth D's term; G's term has no target to smooth (refused if asked).
  for name in ("cdcgan", "acgan"):
    bound = rlosses.bind(_config(name).losses, nets=gan.NETS)
    d_adv, = [b for b in bound["discriminator"] if b.name == "adversarial_d"]
    g_adv, = [b for b in bound["generator"] if b.name == "adversarial_g"]
    assert dict(d_adv.options) == {"real_target": 0.9, "fake_target": 0.1}
    assert dict(g_adv.options) == {}
  with pytest.raises(ValueError, match="real_target"):
    rlosses.bind({"adversarial_g": dict(weight=1.0, on="generator", real_target=0.9)},
                 nets=gan.NETS)


def test_classification_loss_is_softmax_cross_entropy():
  logits = jnp.asarray([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
  labels = jnp.asarray([0, 2])
  want = -np.mean([np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1))), np.log(1 / 3)])
  np.testing.assert_allclose(rlosses.classification_loss(logits, labels), want, rtol=1e-6)
  with pytest.raises(ValueError, match="labels"):
    rlosses.classification_loss(logits, jnp.asarray([0, 1, 2]))


def test_generate_gives_images_of_the_classes_asked(cdcgan):
  config, data, method, state = cdcgan
  a = method.generate(state, np.array([0, 0, 3]), 0)
  b = method.generate(state, np.array([1, 1, 3]), 0)
  assert a.shape == (3, 64, 64, 3) and np.all(np.abs(a) <= 1)
  assert np.abs(a[:2] - b[:2]).max() > 1e-4       # another class, another image
  np.testing.assert_array_equal(a[2], b[2])       # the same class and z, the same image
  assert np.abs(a[0] - a[1]).max() > 1e-4         # another z, another image
  with pytest.raises(ValueError, match="labels"):
    method.generate(state, np.zeros((2, 10)), 0)


def test_generate_does_not_depend_on_its_chunk(cdcgan):
  config, data, method, state = cdcgan
  gen, disc = cgan_method.build_models(config, 10)
  spec = cgan_method.make_gan(config, gen, disc)
  labels = np.arange(7) % 10
  whole = gan.make_generate(spec, chunk=256)(state, labels, 3)
  chunked = gan.make_generate(spec, chunk=3)(state, labels, 3)
  np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_an_unconditional_generator_reads_only_how_many():
  # UAHM's Gan calls G with z alone (the default g_inputs); a tiny G stands in for it.
  import flax.linen as nn

  class Tiny(nn.Module):
    @nn.compact
    def __call__(self, z, train):
      return jnp.tanh(nn.Dense(5)(z))

  spec = gan.Gan(discriminator=None, generator=Tiny(), noise_dim=4)
  params = Tiny().init(jax.random.PRNGKey(0), jnp.zeros((1, 4)), train=False)["params"]
  state = gan.update.TrainState.create({"generator": gan.update.NetState(params, {}, None)})
  generate = gan.make_generate(spec)
  a = generate(state, np.zeros(2, int), 1)
  np.testing.assert_array_equal(a, generate(state, np.array([4, 7]), 1))
  assert a.shape == (2, 5) and np.abs(a[0] - a[1]).max() > 0   # one z per image
  # UAHM's own Gan is that: images from z alone.
  config = _config("uahm")
  assert uahm.make_gan(config, None, None).g_inputs(1, {"labels": 2}) == (1,)


def test_the_step_reads_the_labels_and_updates_both_networks(cdcgan):
  config, data, method, state = cdcgan
  assert method.step_inputs == ("labels",)
  rng = np.random.default_rng(0)
  batch = {"x": jnp.asarray(rng.uniform(-1, 1, (4, 64, 64, 3)), jnp.float32),
           "labels": jnp.asarray([0, 1, 2, 3])}
  step = jax.jit(method.step)
  new, metrics = step(state, batch, jax.random.PRNGKey(1))
  assert set(metrics) >= {"d_loss", "g_loss", "d/adversarial_d", "g/adversarial_g"}
  other, other_metrics = step(state, {**batch, "labels": jnp.asarray([4, 5, 6, 7])},
                              jax.random.PRNGKey(1))
  # C-DCGAN's D sees the label: another label, another loss.
  assert float(metrics["d_loss"]) != float(other_metrics["d_loss"])
  for net in ("discriminator", "generator"):
    before, after = (jax.tree.leaves(s.nets[net].params) for s in (state, new))
    assert any(float(jnp.abs(x - y).max()) > 0 for x, y in zip(before, after))


def test_generated_quality_refuses_what_cannot_run(cdcgan):
  config, data, method, state = cdcgan
  ctx = revals.Context(config=config, data=data, encode=method.encode, ssm=None)
  with pytest.raises(ValueError, match="generates no images"):
    revals.build({"q": dict(type="generated_quality")}, ctx)
  ctx.generate = method.generate
  for bad, match in ((dict(samples=4, splits=5), "splits"), (dict(samples=1), "samples"),
                     (dict(backbone="vgg"), "backbone"), (dict(size=3), "not an option")):
    with pytest.raises(ValueError, match=match):
      revals.build({"q": dict(type="generated_quality", **bad)}, ctx)
  ev = revals.build({"q": dict(type="generated_quality")}, ctx)["q"]
  assert (ev.backbone, ev.prefix) == ("efficientnet_lite0", "generated/efficientnet_lite0/")
  # With a weight file, Inception-v3 (the thesis's FID network), named in every key;
  # a missing file is refused by the precheck, before any training.
  inception = revals.Context(config=config.copy_and_resolve_references(), data=data,
                             encode=method.encode, ssm=None, generate=method.generate)
  inception.config.data.weights = "/nonexistent/inception_v3_google.pth"
  ev = revals.build({"q": dict(type="generated_quality")}, inception)["q"]
  assert ev.prefix == "generated/inception_v3/"
  with pytest.raises(FileNotFoundError, match="Inception-v3"):
    ev.precheck(state)


@pytest.mark.slow   # 45 s; C-DCGAN's step, generate and quality run in the default suite
def test_acgan_smoke_run_end_to_end(tmp_path, feature_cache, monkeypatch):
  monkeypatch.setenv("RSH_CACHE_DIR", str(feature_cache))  # the backbone's converted weights
  workdir = tmp_path / "acgan"
  out = cli_main("--config=configs/acgan.py:smoke", f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-2000:]
  results = json.loads((workdir / "results.json").read_text())
  m = results["metrics"]
  for key in ("is", "is_std", "fid", "fid_real_halves", "is_real"):
    assert np.isfinite(m[f"generated/efficientnet_lite0/{key}"]), key
  assert m["generated/efficientnet_lite0/fid"] > 0
  assert m["generated/efficientnet_lite0/samples"] == 20
  assert results["bits"] is None
  assert "generated/efficientnet_lite0/fid=" in out.stdout
  assert {"generated.png", "generated_by_class.png"} <= set(results["figures"])
  assert "map_vs_steps.png" not in results["figures"]   # no codes, no MAP
  # A finished run's generator, asked for classes by id or name (part 2's training set).
  run = restore.load_run(workdir)
  images = restore.generate(run, ["River", 3, "River"], seed=5)
  assert images.shape == (3, 64, 64, 3)
  np.testing.assert_array_equal(images, run.method.generate(run.state, np.array([8, 3, 8]), 5))
  with pytest.raises(ValueError, match="class ids"):
    restore.generate(run, ["Glacier"])

