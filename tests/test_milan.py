"""configs/milan.py: its modes, batches and protocol, and each mode's smoke run."""

import json

import numpy as np
import pytest

from rsh import data as rdata
from rsh import losses as rlosses
from tests.conftest import cli_main, load_config


def _config(arg="smoke"):
  return load_config("milan", arg)


@pytest.mark.parametrize("mode, metric", [("public", "triplet"), ("mined", "batch_hard"),
                                          ("unsupervised", "nt_xent")])
def test_each_mode_trains_through_the_cli(mode, metric, tmp_path, feature_cache, monkeypatch):
  monkeypatch.setenv("RSH_CACHE_DIR", str(feature_cache))
  out = cli_main(f"--config=configs/milan.py:smoke,mode={mode}", f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  m = results["metrics"]
  assert 0 < m["map@20"] <= 1 and 0 < m["milan/map@5"] <= 1
  assert "itq_dihedral_mean" in results["baselines"]
  history = json.dumps(results["history"])
  for term in (metric, "push", "balance"):
    assert f"hasher/{term}" in history, term


def test_public_batches_are_triplets_in_thirds():
  """two_class with n = 2/3 of 90: rows 0-29 anchors and 30-59 positives of one
  class, 60-89 negatives of another: what the `triplet` term reads."""
  c = _config("full")
  labels = np.repeat(np.arange(10), 100)
  batch = rdata.sampler(c.train.sampler, labels, c.train.batch_size, 0,
                        c.train.sampler_options)
  for step in range(5):
    y = labels[batch(step)]
    a, p, n = y[:30], y[30:60], y[60:]
    assert len(set(a) | set(p)) == 1 and len(set(n)) == 1 and n[0] != a[0]
  assert c.losses.triplet.codes == "sigmoid" and c.losses.triplet.margin == 0.2
  assert (c.optim.lr, c.optim.b1, c.optim.b2, c.train.num_steps) == (1e-4, 0.5, 0.9, 10_000)


def test_the_config_binds_to_registered_terms():
  for mode in ("public", "mined", "unsupervised"):
    for miner in ("batch_hard", "batch_all", "semi_hard"):
      bound = rlosses.bind(_config(f"full,mode={mode},miner={miner}").losses, nets=("hasher",))
      names = {b.name for b in bound["hasher"]}
      metric = {"public": "triplet", "mined": miner, "unsupervised": "nt_xent"}[mode]
      assert names == {metric, "push", "balance"}


def test_milan_protocol_variant():
  c = _config("small,protocol=milan")
  assert c.evals.retrieval.leave_one_out and c.evals.retrieval.k == 20
  assert c.evals.retrieval_split.archive == "archive"
  c = _config("small")
  assert c.evals.milan_protocol.leave_one_out and c.evals.milan_protocol.prefix == "milan/"


@pytest.mark.parametrize("arg, message", [
    ("mode=supervised", "unknown config mode 'supervised'"),
    ("miner=hardest", "unknown config miner 'hardest'"),
    ("views=random", "unknown config views 'random'"),
    ("protocol=ucmd", "unknown config protocol 'ucmd'"),
])
def test_bad_arguments_are_named(arg, message):
  with pytest.raises(ValueError, match=message):
    _config(f"smoke,{arg}")


def test_a_miner_on_one_class_batches_is_refused_before_training(tmp_path, feature_cache,
                                                                 monkeypatch):
  """pk with batch_size == k: one class a batch, no negatives: the miner's loss
  would be 0 at every step (only push and balance would train)."""
  monkeypatch.setenv("RSH_CACHE_DIR", str(feature_cache))
  out = cli_main("--config=configs/milan.py:smoke,mode=mined", f"--workdir={tmp_path}",
                 "--config.train.sampler_options.k=8")
  assert out.returncode != 0
  assert "no negatives" in out.stderr and "batch_hard" in out.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_the_summary_line_shows_each_entry_at_its_own_k():
  from rsh import runs
  results = {"name": "milan", "variant": "small", "bits": 64, "k": 100, "n": 20,
             "protocol": {"retrieval": {"k": 20, "n": 20}},
             "metrics": {"map@20": 0.5, "map@100": 0.9, "precision@20": 0.4,
                         "split/map@100": 0.3, "binary/map@20": 0.5, "split/map@all": 0.2},
             "baselines": {"itq": {"map@100": 0.25}}}
  line = runs.summary_line(results)
  assert line.startswith("milan (small, 64 bits): map@20=0.5000 precision@20=0.4000 ")
  assert "split/map@100=0.3000" in line and "binary/" not in line and "map@all" not in line
  assert "map@100=0.9" not in line and line.endswith("baselines map@100: itq 0.2500")
