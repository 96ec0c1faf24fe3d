"""The shallow baselines on archives larger than memory: sampled fits, pooled inputs,
codes a block of rows at a time (rsh.evaluators.baselines, `fit_rows` / `pool`)."""

import numpy as np
import pytest

from rsh import hamming
from rsh import shallow
from rsh import update
from rsh.evaluators import baselines
from tests.conftest import load_config


class _Counted:
  """Rows sliced on demand, recording the largest slice read (an on-disk set)."""

  def __init__(self, x):
    self.x, self.shape, self.dtype, self.most = x, x.shape, x.dtype, 0

  def __len__(self):
    return len(self.x)

  def __getitem__(self, s):
    out = self.x[s]
    self.most = max(self.most, len(out))
    return out


def test_block_codes_equal_whole_set_codes(monkeypatch):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2500, 8, 8, 3)).astype(np.float32)
  h = shallow.fit_itq(shallow.pool_rows(x, 4), 16, seed=1, iterations=5)
  whole = hamming.pack_codes(shallow.project(h, shallow.pool_rows(x, 4)) >= 0)
  # 768 bytes a row: 1024 rows a block under this bound, so the set is read in 3 blocks.
  monkeypatch.setattr(update, "ENCODE_BYTES", 1024 * 768)
  rows = _Counted(x)
  np.testing.assert_array_equal(baselines._codes(h, rows, 4), whole)
  assert rows.most == 1024
  h_raw = shallow.fit_lsh(x, 16, seed=2)
  np.testing.assert_array_equal(
      baselines._codes(h_raw, _Counted(x), None),
      hamming.pack_codes(shallow.project(h_raw, x) >= 0))


def test_block_rows_bounds_bytes_not_below_1024():
  assert update.block_rows(np.zeros((10, 8), np.float32)) == update.ENCODE_BLOCK
  big = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (10, 120, 120, 10), (0,) * 4)
  assert update.block_rows(big) == 1024  # 576 KB a row: 256 MB is 455 rows, kept at 1024
  mid = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (10, 32, 32, 10), (0,) * 4)
  assert update.block_rows(mid) == 4096 and update.block_rows(mid, max_bytes=1 << 26) == 1024


def test_fit_sample_is_seeded_sorted_and_bounded():
  cfg = {"fit_rows": 30}
  a = baselines._fit_sample(cfg, "itq", 100, seed=3)
  assert len(a) == 30 and len(set(a)) == 30 and (np.diff(a) > 0).all() and a.max() < 100
  np.testing.assert_array_equal(a, baselines._fit_sample(cfg, "itq", 100, seed=3))
  assert not np.array_equal(a, baselines._fit_sample(cfg, "itq", 100, seed=4))
  assert baselines._fit_sample({}, "itq", 100, 0) is None            # default: every row
  assert baselines._fit_sample({"fit_rows": 100}, "itq", 100, 0) is None
  for bad in (0, -1, 2.5, True, "10"):
    with pytest.raises(ValueError, match="config.evals.itq.fit_rows"):
      baselines._fit_sample({"fit_rows": bad}, "itq", 100, 0)
  for bad in (0, 1.5, True):
    with pytest.raises(ValueError, match="config.evals.lsh.pool"):
      baselines._pool_option({"pool": bad}, "lsh", None)


def test_full_bigearthnet_baselines_are_bounded():
  c = load_config("crossmodal", "full")
  for name in ("lsh_s1", "lsh_s2", "itq_s1", "itq_s2", "cca_itq_s1_to_s2", "cca_itq_s2_to_s1"):
    assert c.evals[name].fit_rows == 20_000 and c.evals[name].pool == 8
  demo = load_config("crossmodal", "demo")
  assert "fit_rows" not in demo.evals.itq_s2 and "pool" not in demo.evals.itq_s2
