"""Tests of rsh.data.samplers (`config.train.sampler`): each sampler's batches,
their purity in the step (exact resume), the refusals naming the config key,
and one toy run end to end through the runner."""

import itertools
import json

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from rsh import data as rdata
from rsh import experiment
from rsh import runs
from tests.conftest import REPO, with_overrides
from tests.test_core import CONFIG, build

SIZES = (12, 30, 7, 40, 3, 25)  # images per class


def _labels(sizes=SIZES, seed=0):
  """int32[n] class ids, `sizes[c]` images of class c, in a seeded random order."""
  ids = np.repeat(np.arange(len(sizes)), sizes).astype(np.int32)
  return np.random.default_rng(seed).permutation(ids)


def _multi_hot(n=300, classes=8, p=0.3, seed=0):
  """uint8[n, classes], each image carrying each label with probability p."""
  return (np.random.default_rng(seed).random((n, classes)) < p).astype(np.uint8)


# ----------------------------------------------------------------------------
# What each sampler draws.


@pytest.mark.parametrize("labels", [_labels(), _multi_hot()], ids=["class", "multi_hot"])
@pytest.mark.parametrize("size", [1, 8, 117])
def test_uniform_is_batch_at_bitwise(labels, size):
  n = len(labels)
  batch = rdata.sampler("uniform", labels, size, 3)
  for step in (0, 1, 5, 20, 1000):
    expected = rdata.batch_at(np.arange(n), size, 3, step)
    got = batch(step)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert np.array_equal(rdata.uniform_batch(labels, size, 3, step), expected)


def test_uniform_full_batch_is_every_row():
  labels = _labels()
  assert sorted(rdata.sampler("uniform", labels, len(labels), 0)(7)) == list(range(len(labels)))


@pytest.mark.parametrize("size, n", [(96, None), (12, 9), (10, 1), (2, None)])
def test_two_class_is_n_of_one_class_then_m_of_another(size, n):
  labels = _labels(sizes=(70, 40, 5, 64, 33))
  want_n = round(2 * size / 3) if n is None else n  # 96 -> 64 + 32
  batch = rdata.sampler("two_class", labels, size, 1, {"n": n})
  pairs = set()
  for step in range(40):
    idx = batch(step)
    assert idx.dtype == np.int64 and len(idx) == size == len(set(idx.tolist()))
    assert 0 <= idx.min() and idx.max() < len(labels)
    a, b = labels[idx[:want_n]], labels[idx[want_n:]]
    assert len(set(a)) == 1 and len(set(b)) == 1 and a[0] != b[0]
    assert (labels == a[0]).sum() >= want_n and (labels == b[0]).sum() >= size - want_n
    pairs.add((a[0], b[0]))
  assert len(pairs) > 3  # the classes vary with the step


def test_two_class_with_multi_hot_labels():
  labels = _multi_hot()
  for step in range(30):
    idx = rdata.two_class_batch(labels, 24, 0, step, n=16)
    assert len(set(idx.tolist())) == 24
    first, second = labels[idx[:16]].astype(bool), labels[idx[16:]].astype(bool)
    a = np.flatnonzero(first.all(0))  # labels every image of the first part carries
    assert len(a) >= 1
    # Some class a carried by all n first images, carried by none of the m others,
    # and some b != a carried by all of them.
    assert any((~second[:, c]).all() and np.delete(second.all(0), c).any() for c in a)


def _pk_classes(labels, idx, p, k):
  """The P distinct classes, one per block of k images that all carry it, or None."""
  blocks = [labels[idx[i * k:(i + 1) * k]] for i in range(p)]
  if labels.ndim == 1:
    common = [set(np.unique(b)) if len(np.unique(b)) == 1 else set() for b in blocks]
  else:
    common = [set(np.flatnonzero(b.astype(bool).all(0))) for b in blocks]
  for pick in itertools.product(*common):
    if len(set(pick)) == p:
      return pick
  return None


@pytest.mark.parametrize("size, k", [(8, None), (12, 3), (24, 6), (5, 1)])
def test_pk_is_p_classes_of_k_distinct_images(size, k):
  labels = _labels()
  kk = 4 if k is None else k
  batch = rdata.sampler("pk", labels, size, 2, {"k": k})
  seen = set()
  for step in range(40):
    idx = batch(step)
    assert idx.dtype == np.int64 and len(set(idx.tolist())) == size
    classes = _pk_classes(labels, idx, size // kk, kk)
    assert classes is not None, labels[idx]
    assert all((labels == c).sum() >= kk for c in classes)
    seen.update(classes)
  assert seen == {c for c, s in enumerate(SIZES) if s >= kk}


@pytest.mark.parametrize("p_label", [0.3, 0.7])
def test_pk_with_multi_hot_labels_draws_distinct_images(p_label):
  labels = _multi_hot(n=200, classes=6, p=p_label, seed=1)
  batch = rdata.sampler("pk", labels, 16, 0, {"k": 4})
  for step in range(50):
    idx = batch(step)
    assert len(set(idx.tolist())) == 16
    assert _pk_classes(labels, idx, 4, 4) is not None


# ----------------------------------------------------------------------------
# Purity in the step: the batch of step s after a resume is the batch of step s.


@pytest.mark.parametrize("name, labels, options", [
    ("uniform", _labels(), {}), ("two_class", _labels(), {"n": 5}),
    ("pk", _labels(), {"k": 2}), ("two_class", _multi_hot(), {}), ("pk", _multi_hot(), {})])
def test_a_step_s_batch_is_the_same_again_and_from_a_fresh_sampler(name, labels, options):
  batch = rdata.sampler(name, labels, 8, 5, options)
  first = [batch(s) for s in range(12)]
  again = [rdata.sampler(name, labels, 8, 5, options)(s) for s in reversed(range(12))][::-1]
  for a, b, c in zip(first, again, [batch(s) for s in range(12)]):
    assert np.array_equal(a, b) and np.array_equal(a, c)
  assert len({tuple(b) for b in first}) == 12  # the steps differ
  assert not np.array_equal(first[3], rdata.sampler(name, labels, 8, 6, options)(3))  # seed


def test_the_pure_functions_are_the_sampler():
  labels = _labels()
  assert np.array_equal(rdata.two_class_batch(labels, 9, 0, 4, n=6),
                        rdata.sampler("two_class", labels, 9, 0, {"n": 6})(4))
  assert np.array_equal(rdata.pk_batch(labels, 9, 0, 4, k=3),
                        rdata.sampler("pk", labels, 9, 0, {"k": 3})(4))


# ----------------------------------------------------------------------------
# Each mistake refused at construction, naming the key.


@pytest.mark.parametrize("name, labels, size, options, message", [
    ("pkk", _labels(), 8, {}, r"config.train.sampler='pkk'.*uniform, two_class, pk"),
    ("pk", _labels(), 8, {"n": 4},
     r"config.train.sampler_options.n is not an option of config.train.sampler='pk'"),
    ("two_class", _labels(), 8, {"k": 4}, r"config.train.sampler_options.k is not an option"),
    ("uniform", _labels(), 8, {"k": 4}, r"sampler_options.k .*'uniform' \(its options: none"),
    ("pk", _labels(), 8, {"k": 3}, r"config.train.sampler_options.k=3 must divide "
     r"config.train.batch_size=8"),
    ("pk", _labels(), 8, {"k": 16}, r"config.train.sampler_options.k=16 must divide"),
    ("pk", _labels(), 8, {"k": 0}, r"config.train.sampler_options.k must be an integer >= 1"),
    ("pk", _labels(), 8, {"k": True}, r"config.train.sampler_options.k must be an integer"),
    ("two_class", _labels(), 8, {"n": "4"}, r"config.train.sampler_options.n must be an int"),
    ("two_class", _labels(), 8, {"n": 8}, r"config.train.sampler_options.n=8 must lie in 1..7"),
    ("two_class", _labels(), 1, {}, r"needs config.train.batch_size >= 2"),
    ("uniform", _labels(), 0, {}, r"config.train.batch_size must be an integer >= 1"),
    ("uniform", _labels(), 118, {}, r"config.train.batch_size=118 is larger than the training"),
    ("two_class", _labels(), 60, {"n": 41},
     r"n=41 .*largest classes have 40, 30, 25, 12, 7 .*lower config.train.sampler_options.n$"),
    ("two_class", _labels(), 60, {"n": 10}, r"m=50; .*lower config.train.batch_size \(m ="),
    ("pk", _labels(), 24, {"k": 4}, r"needs P=6 classes .* with >= k=4 training images; 5 "
     r"have, the largest classes have 40, .*lower config.train.batch_size, or set "
     r"config.train.sampler_options.k"),
    ("pk", np.ones((5, 4), np.uint8), 6, {"k": 2},
     r"cannot always draw P\*k=6 distinct images.*config.train.sampler_options.k"),
    ("pk", np.full(20, 0.5), 8, {}, r"labels must be int\[n\] class ids or multi-hot"),
])
def test_each_mistake_names_its_key(name, labels, size, options, message):
  with pytest.raises(ValueError, match=message):
    rdata.sampler(name, labels, size, 0, options)


def test_two_class_refuses_where_only_the_first_class_has_images_without_it():
  # Every image carries both labels: neither has images without the other.
  labels = np.ones((40, 2), np.uint8)
  with pytest.raises(ValueError, match=r"m=2 not carrying the first's label"):
    rdata.sampler("two_class", labels, 6, 0, {"n": 4})


# ----------------------------------------------------------------------------
# The config keys and the runner.


def _toy(**changes):
  spec = {}
  exec(CONFIG, spec)
  return with_overrides(spec["get_config"](), changes)


def test_the_config_defaults_and_command_line_options():
  # A config file that sets none of them: base() declares the keys.
  argv = ["x", f"--config={REPO / 'configs' / 'uahm.py'}:smoke", "--config.train.sampler=pk",
          "--config.train.sampler_options.k=2", "--config.train.sampler_options.n=6"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv)
  fv(argv)
  c = fv.config.train
  assert (c.sampler, c.sampler_options.k, c.sampler_options.n) == ("pk", 2, 6)
  train = _toy().train
  assert train.sampler == "uniform" and dict(train.sampler_options) == {"n": None, "k": None}


def _batch_fn(config):
  data = rdata.prepare(config)
  method = build(config, data)
  size = experiment.batch_size(config, len(data.split.train))
  return data, experiment.make_batch_fn(config, data, method, None, size)[0]


def test_make_batch_fn_takes_the_configs_sampler_and_old_configs_are_uniform():
  config = _toy(**{"train.sampler": "pk"})
  data, batch_fn = _batch_fn(config)
  labels = data.labels[data.split.train]
  for step in range(3):
    idx = rdata.sampler("pk", labels, 8, config.seed)(step)
    assert np.array_equal(batch_fn(step)["x"], data.train_x[idx])
    assert _pk_classes(labels, idx, 2, 4) is not None
  old = _toy()
  del old.train["sampler"], old.train["sampler_options"]  # a config from before the samplers
  for config in (old, _toy()):
    data, batch_fn = _batch_fn(config)
    for step in (0, 13, 40):
      idx = rdata.batch_at(np.arange(len(data.split.train)), 8, config.seed, step)
      assert np.array_equal(batch_fn(step)["x"], data.train_x[idx])
  with pytest.raises(ValueError, match=r"config.train.sampler_options.n is not an option"):
    _batch_fn(_toy(**{"train.sampler": "pk", "train.sampler_options.n": 4}))


def _run(workdir, **changes):
  config = _toy(**changes)
  del config.evals["retrieval"]  # the toy evaluator alone: a few seconds a run
  results = runs.run(config, workdir)
  return results, (results["metrics"], results["history"])


def test_a_toy_run_trains_with_pk_and_the_default_gives_the_numbers_of_batch_at(
    tmp_path, monkeypatch):
  pk, pk_numbers = _run(tmp_path / "pk", **{"train.sampler": "pk"})
  rows = {r["step"]: r for r in pk["history"]}
  assert sorted(rows) == [3, 6] and all(np.isfinite(list(r.values())).all() for r in rows.values())
  # The toy term trains the toy model: the codes move towards +-1.
  assert rows[6]["mean_abs"] > rows[3]["mean_abs"]
  assert rows[6]["train/encoder/spread"] < rows[3]["train/encoder/spread"] < 0
  _, default = _run(tmp_path / "default")
  assert pk_numbers != default  # pk fed other batches
  # The runner as it was before the samplers: batch_at on the training positions.
  monkeypatch.setattr(rdata, "sampler", lambda name, labels, size, seed, options, domains=None: (
      lambda step: rdata.batch_at(np.arange(len(labels)), size, seed, step)))
  _, before = _run(tmp_path / "before")
  assert default == before


def test_a_workdir_from_before_samplers_resumes(tmp_path):
  """config.json written before `train.sampler` existed: the run was uniform."""
  config = _toy()
  old = runs.config_to_dict(config)
  del old["train"]["sampler"], old["train"]["sampler_options"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  runs.check_workdir(config, tmp_path)
  config.train.sampler = "pk"
  with pytest.raises(runs.ConfigMismatchError, match="train.sampler: 'uniform' -> 'pk'"):
    runs.check_workdir(config, tmp_path)


def test_a_resumed_pk_run_ends_where_an_uninterrupted_one_does(tmp_path):
  """Stopped at step 4 (checkpointed) and resumed to 6: the same batches, the same numbers."""
  _, (metrics, history) = _run(tmp_path / "whole", **{"train.sampler": "pk"})
  _run(tmp_path / "cut", **{"train.sampler": "pk", "train.num_steps": 4})
  _, (resumed, resumed_history) = _run(tmp_path / "cut", **{"train.sampler": "pk"})
  drop = lambda d: {k: v for k, v in d.items() if "calls" not in k}  # the toy evaluator's count
  last = lambda rows: [drop(r) for r in rows if r["step"] == 6]
  assert drop(resumed) == drop(metrics) and last(resumed_history) == last(history) != []
