"""Thesis ch. 4 part 2: triplet hashing on real + GAN-generated images (`rsh.generated`,
`rsh.data.with_training_rows`, `configs/triplet_hash.py`).

One C-DCGAN smoke run (2 steps, no evaluators) is the generator every test reads."""

import json
import shutil

import numpy as np
import pytest

from rsh import data as rdata
from rsh import generated
from rsh import losses as rlosses
from rsh import paper
from rsh import restore
from rsh import runs
from rsh import tables_ch4

from tests.conftest import cli_main, one_error_line, with_overrides

SMOKE = "configs/triplet_hash.py:smoke"


def _gan_config(steps=2):
  config = restore.config_from_file("configs/cdcgan.py:smoke")
  config.evals = {}
  config.train.num_steps, config.train.checkpoint_every = steps, 2
  return config


@pytest.fixture(scope="module")
def gan(tmp_path_factory, feature_cache):
  """A finished C-DCGAN smoke run (2 steps) on the smoke split, and the cache dir."""
  workdir = tmp_path_factory.mktemp("gan") / "cdcgan"
  config = _gan_config()
  config.data.cache_dir = str(feature_cache)
  runs.run(config, workdir)
  return workdir, str(feature_cache)


def _hash_config(gan, n=20, **changes):
  workdir, cache = gan
  config = restore.config_from_file(SMOKE)
  config.data.cache_dir = cache
  config.data.generated.workdir = None if workdir is None else str(workdir)
  config.data.generated.n = n
  return with_overrides(config, changes)


def test_generated_rows_enter_the_training_set_only(gan):
  plain = generated.prepare(_hash_config((None, gan[1])))
  added = generated.prepare(_hash_config(gan))
  n, m = len(plain.labels), 20
  assert len(added.labels) == n + m and added.added["n"] == m
  for name in ("query", "archive"):
    np.testing.assert_array_equal(added.indices(name), plain.indices(name))
    assert not np.isin(added.indices(name), np.arange(n, n + m)).any()
    for view in ("pixels", "efficientnet_lite0"):
      a, b = np.asarray(added.x(name, view)[:]), np.asarray(plain.x(name, view)[:])
      assert a.tobytes() == b.tobytes(), (name, view)   # byte-identical
  train = added.indices("train")
  np.testing.assert_array_equal(train[:len(plain.split.train)], plain.split.train)
  np.testing.assert_array_equal(train[len(plain.split.train):], np.arange(n, n + m))
  # The features of the training rows: the real ones unchanged, the generated ones new.
  feats = added.train_rows("efficientnet_lite0")
  np.testing.assert_array_equal(feats[:len(plain.split.train)],
                                plain.train_rows("efficientnet_lite0"))
  assert feats.shape == (len(train), 1280) and np.isfinite(feats).all()


def test_the_rows_are_the_generators_images_of_the_classes_asked(gan):
  data = generated.prepare(_hash_config(gan, n=23))
  n = len(data.labels) - 23
  labels = data.labels[n:]
  np.testing.assert_array_equal(labels, np.arange(23) % 10)   # balanced, in order
  assert data.added["per_class"]["AnnualCrop"] == 3 and data.added["per_class"]["SeaLake"] == 2
  run = restore.load_run(gan[0])
  x = restore.generate(run, [data.class_names[c] for c in labels], seed=0)
  dn = np.rint((np.clip(x, -1, 1) + 1) / 2 * run.data.max_dn).astype(np.uint16)
  np.testing.assert_array_equal(data.images[n:], dn)
  assert data.added["step"] == 2 and data.added["workdir"] == str(gan[0])


def test_the_cache_is_keyed_by_step_n_and_seed(gan, tmp_path, monkeypatch):
  workdir = tmp_path / "gan"
  shutil.copytree(gan[0], workdir)
  cfg = lambda n=20, seed=0: _hash_config((workdir, str(tmp_path / "cache")), n=n,
                                          **{"data.generated.seed": seed})
  first = generated.prepare(cfg())
  entries = lambda: sorted((tmp_path / "cache" / "generated").glob("*.npz"))
  assert len(entries()) == 1
  made = []
  real_make = generated._make
  monkeypatch.setattr(generated, "_make", lambda *a: made.append(1) or real_make(*a))
  again = generated.prepare(cfg())           # served from the cache, the same rows
  assert not made and again.images.tobytes() == first.images.tobytes()
  generated.prepare(cfg(n=10))
  generated.prepare(cfg(seed=1))
  assert len(made) == 2 and len(entries()) == 3


@pytest.mark.slow   # trains the GAN two more steps (25 s)
def test_a_run_trained_further_is_a_new_cache_entry(gan, tmp_path, monkeypatch):
  workdir = tmp_path / "gan"
  shutil.copytree(gan[0], workdir)
  cfg = lambda: _hash_config((workdir, str(tmp_path / "cache")), n=20)
  first = generated.prepare(cfg())
  made = []
  real_make = generated._make
  monkeypatch.setattr(generated, "_make", lambda *a: made.append(1) or real_make(*a))
  # The run trained further (step 2 -> 4): a new entry, new images.
  config = _gan_config(steps=4)
  config.data.cache_dir = str(tmp_path / "cache")
  runs.run(config, workdir, allow_config_change=True)
  moved = generated.prepare(cfg())
  assert len(made) == 1 and moved.added["step"] == 4
  assert moved.images[-20:].tobytes() != first.images[-20:].tobytes()


def test_unusable_generator_runs_are_refused_naming_the_workdir(gan, tmp_path):
  missing = tmp_path / "absent"
  with pytest.raises(ValueError, match=f"generated.workdir={missing}.*not a directory"):
    generated.prepare(_hash_config((missing, gan[1])))
  unfinished = tmp_path / "unfinished"
  shutil.copytree(gan[0], unfinished)
  config = json.loads((unfinished / "config.json").read_text())
  config["train"]["num_steps"] = 10
  (unfinished / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match=f"{unfinished}: the generator run is unfinished "
                                       r"\(its last checkpoint is step 2 of 10\)"):
    generated.prepare(_hash_config((unfinished, gan[1])))
  # Three test images a class: the generator (trained with two held out) saw the third.
  with pytest.raises(ValueError, match="trained on 10 of this run's 30 query images"):
    generated.prepare(_hash_config(gan, **{"data.n_query": 3}))
  with pytest.raises(ValueError, match="generated.n must be an integer >= 1"):
    generated.prepare(_hash_config(gan, n=0))


def test_added_rows_are_checked():
  data = rdata.prepare(_hash_config((None, None)))
  rows = np.zeros((2,) + data.images.shape[1:], np.uint16)
  with pytest.raises(rdata.DataError, match="must be uint16"):
    rdata.with_training_rows(data, rows.astype(np.float32), np.zeros(2, int), {})
  with pytest.raises(rdata.DataError, match=r"one class id in \[0, 10\)"):
    rdata.with_training_rows(data, rows, np.array([0, 10]), {})
  twice = rdata.with_training_rows(data, rows, np.array([0, 1]), {})
  with pytest.raises(rdata.DataError, match="already has added rows"):
    rdata.with_training_rows(twice, rows, np.array([0, 1]), {})


def test_the_thesis_batch_is_64_of_one_class_then_32_of_another():
  config = restore.config_from_file("configs/triplet_hash.py:full")
  assert (config.train.batch_size, config.train.sampler, config.train.sampler_options.n) == (
      96, "two_class", 64)
  labels = np.repeat(np.arange(10), 80)   # e.g. real + generated training labels
  batch = rdata.sampler("two_class", labels, 96, 0, {"n": 64})
  for step in range(20):
    idx = batch(step)
    assert len(set(idx.tolist())) == 96
    a, b = labels[idx[:64]], labels[idx[64:]]
    assert len(set(a)) == 1 and len(set(b)) == 1 and a[0] != b[0]
  # Read as 32 stacked triplets: anchors and positives of one class, negatives of another.
  term = rlosses.LOSSES["triplet"]
  codes = np.eye(3, 8)[np.repeat([0, 0, 1], 32)].astype(np.float32)  # a, p equal; n far
  assert float(term.fn(codes, margin=1.0, normalise=False)) == 0.0
  codes = np.eye(3, 8)[np.repeat([0, 1, 0], 32)].astype(np.float32)  # p far, n equal
  assert float(term.fn(codes, margin=1.0, normalise=False)) == pytest.approx(3.0)


def test_a_smoke_run_on_real_and_generated_images(gan, tmp_path, monkeypatch):
  monkeypatch.setenv("RSH_CACHE_DIR", gan[1])
  workdir = tmp_path / "run"
  out = cli_main(f"--config={SMOKE}", f"--workdir={workdir}",
                 f"--config.data.generated.workdir={gan[0]}")
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.loads((workdir / "results.json").read_text())
  assert res["generated"]["workdir"] == str(gan[0]) and res["generated"]["step"] == 2
  assert res["n_train"] == 100 + 20 and res["n_query"] == 20
  assert "map@10" in res["metrics"] and "itq_features" in res["baselines"]
  run = restore.load_run(workdir)     # the same training rows, loaded again
  assert len(run.data.split.train) == 120
  bad = cli_main(f"--config={SMOKE}", f"--workdir={tmp_path / 'bad'}",
                 f"--config.data.generated.workdir={tmp_path / 'absent'}")
  one_error_line(bad, str(tmp_path / "absent"))


def _fake_results(cond, bits, seed, k=49):
  """A triplet_hash results.json whose MAP encodes its cell (class c: 0.5 + c / 100)."""
  shift = {"real": 0.0, "cdcgan": 0.01, "acgan": -0.02}[cond] + bits / 1000
  names = list(paper.PAPER["5.9"])   # EuroSAT's classes, in order
  metrics = {f"map@{k}": 0.6 + shift, f"map@{k}/tie_aware": 0.59 + shift}
  for c, name in enumerate(names):
    metrics[f"classwise_map@{k}/{name}"] = 0.5 + c / 100 + shift
    metrics[f"classwise_map@{k}/tie_aware/{name}"] = 0.49 + c / 100 + shift
  return {"metrics": metrics, "protocol": {"retrieval": {"k": k}}, "n_query": 50,
          "n_train": 319 + (0 if cond == "real" else 60),
          "generated": None if cond == "real" else {"n": 60},
          "baselines": {"itq_features": {f"map@{k}": 0.5}, "lsh_features": {f"map@{k}": 0.3}}}


def _fake_run(calls):
  def run(name, bits, seed, generated=None):
    calls.append((name, bits, seed, generated))
    if name in ("cdcgan", "acgan"):
      return {"workdir": f"/runs/{name}_seed{seed}", "reused": name == "acgan",
              "history": [{"step": 1000}], "metrics": {}}
    if name == "ssm_hash":
      return {"metrics": {"map@49": 0.45}}
    return _fake_results(generated or "real", bits, seed)
  return run


def test_table_43_puts_the_thesis_beside_every_cell_and_names_the_generators():
  calls = []
  text = tables_ch4.table_43(_fake_run(calls), [0], [16, 32, 64], "small")
  assert ("triplet_hash", 32, 0, "acgan") in calls and ("ssm_hash", 64, 0, None) in calls
  assert "MAP@49" in text and "the other 49" in text and "+ 60 generated" in text
  assert "| Only real images | 0.6160 (0.9338) | 0.6320 (0.9357) | 0.6640 (0.9334) |" in text
  assert "| Real + ACGAN images | 0.5960 (0.9217) | 0.6120 (0.9404) | 0.6440 (0.9313) |" in text
  assert "| ITQ on the same features, real images (not in thesis) | 0.5000 |" in text
  assert "| SSM-Hash (rsh's, no labels), real images (not in thesis) | 0.4500 |" in text
  assert "/runs/cdcgan_seed0 (1000 steps; trained now)" in text
  assert "/runs/acgan_seed0 (1000 steps; reused, finished before)" in text


def test_table_44_gives_class_wise_map_and_the_change_against_real():
  text = tables_ch4.table_44(_fake_run([]), [0], 32, "small")
  lines = {l.split(" | ")[0]: l for l in text.splitlines() if l.startswith("| ")}
  real = lines["| Only real images"]
  assert "| 0.5320 (0.9844) |" in real and real.endswith("| 0.6320 (0.9357) |")  # Ann., ALL
  change = lines["| Real + C-DCGAN images: change vs real (Table 4.5)"]
  # Annual crop: (0.542 - 0.532) / 0.532 = +1.88 %; the thesis's -3.29 % beside it.
  assert change.split(" | ")[1] == "+1.88% (-3.29%)", change
  # Annual crop and forest, tie-aware: 0.49 + c / 100 + 0.032.
  assert lines["| Only real images, tie-aware"].startswith("| Only real images, tie-aware | "
                                                          "0.5220 | 0.5320 |")


def test_reproduce_table_43_trains_each_generator_once_and_feeds_it_to_its_cells(
    tmp_path, monkeypatch, run_cli):
  """The command line's wiring, each run faked (`runs.run` records its config)."""
  seen = []

  def fake_run(config, workdir, **_):
    seen.append((workdir.name, config))
    gen = config.data.get("generated")
    cond = "real" if gen is None or gen.workdir is None else (
        "cdcgan" if "cdcgan" in gen.workdir else "acgan")
    res = ({"metrics": {}} if config.method == "cgan" else
           {"metrics": {"map@99": 0.45}} if config.name == "ssm_hash" else
           _fake_results(cond, config.model.bits, config.seed, k=99))
    res = {"method": config.method, "name": config.name, "bits": None, "history":
           [{"step": int(config.train.num_steps)}], "figures": [], "baselines": {}, **res}
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(runs.config_to_dict(config)))
    (workdir / "results.json").write_text(json.dumps(res))
    return res

  monkeypatch.setattr(runs, "run", fake_run)
  monkeypatch.setattr(runs, "summary_line", lambda res: "")
  root = tmp_path / "t43"
  out = run_cli("--table=4.3", f"--workdir={root}", "--variant=demo", "--bits=16,32",
                "--set=data.generated.n=7", module="rsh.reproduce")
  assert out.returncode == 0, out.stderr[-3000:]
  names = [name for name, _ in seen]
  assert names.count("cdcgan_seed0") == 1 and names.count("acgan_seed0") == 1
  assert names.index("cdcgan_seed0") < names.index("triplet_hash_cdcgan_16b_seed0")
  configs = dict(seen)
  assert configs["triplet_hash_acgan_32b_seed0"].data.generated.workdir == str(
      root / "acgan_seed0")
  assert configs["triplet_hash_32b_seed0"].data.generated.workdir is None
  assert configs["triplet_hash_acgan_16b_seed0"].data.generated.n == 7   # --set, not the GANs'
  assert "generated" not in configs["cdcgan_seed0"].data
  assert configs["triplet_hash_acgan_32b_seed0"].train.num_steps == 2_000   # its own length
  ssm = configs["ssm_hash_16b_seed0"]
  assert ssm.evals.retrieval.leave_one_out and ssm.evals.retrieval.archive == "query"
  assert (ssm.data.n_query, ssm.data.n_train, ssm.eval.k) == (10, None, 99)
  assert "| Only real images | 0.6160 (0.9338) | 0.6320 (0.9357) |" in out.stdout
  assert "acgan_seed0 (2 steps" not in out.stdout and "trained now" in out.stdout
  typo = run_cli("--table=4.3", f"--workdir={root}", "--variant=demo", "--set=data.generatd.n=7",
                 module="rsh.reproduce")
  one_error_line(typo, "data.generatd.n=7", "'generatd'")
  # Table 4.4 reuses every cell.
  out = run_cli("--table=4.4", f"--workdir={root}", "--variant=demo", "--set=data.generated.n=7",
                module="rsh.reproduce")
  assert out.returncode == 0, out.stderr[-3000:]
  assert len(seen) == 2 + 6 + 2 and "reused, finished before" in out.stdout
  assert "| Real + ACGAN images: change vs real (Table 4.5) |" in out.stdout
