"""MIRS's inter-class triplets (rsh.losses.interclass) and the miners' row mask."""

import itertools

import jax
import numpy as np
import pytest

from rsh import losses


def _batch(seed, b=12, classes=3, clusters=3):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(b, 8)).astype(np.float32), rng.integers(0, classes, b),
          rng.integers(0, clusters, b))


def _enumerate(labels, clusters, pair, keep=None):
  """Every (a, p, n) by the definitions, with loops."""
  b = len(labels)
  keep = np.ones(b, bool) if keep is None else keep
  out = set()
  for a, p, n in itertools.permutations(range(b), 3):
    if not (keep[a] and keep[p] and keep[n]):
      continue
    if pair == "positive":
      ok = (clusters[p] == clusters[a] and labels[p] != labels[a]
            and clusters[n] != clusters[a])
    else:
      ok = (labels[p] == labels[a] and labels[n] != labels[a]
            and clusters[n] == clusters[a])
    if ok:
      out.add((a, p, n))
  return out


@pytest.mark.parametrize("pair", ["positive", "negative"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_is_the_brute_force_enumeration(pair, seed):
  _, y, c = _batch(seed)
  keep = np.random.default_rng(seed + 10).random(len(y)) > 0.2
  for m in (None, keep):
    got = np.asarray(jax.jit(lambda y, c, m: losses.interclass_mask(y, c, pair=pair, mask=m))(
        y, c, m))
    triplets = {tuple(map(int, t)) for t in np.argwhere(got)}
    assert triplets == _enumerate(y, c, pair, m)
    assert triplets  # the batches are chosen to hold some
    a, p, n = np.array(sorted(triplets)).T
    inter = (a, p) if pair == "positive" else (a, n)   # the inter-class pair
    assert (y[inter[0]] != y[inter[1]]).all() and (c[inter[0]] == c[inter[1]]).all()


def test_multi_hot_labels_count_shared_labels():
  y = np.array([[1, 0], [1, 1], [0, 1], [0, 1]], np.uint8)
  c = np.array([0, 0, 0, 1])
  got = {tuple(map(int, t)) for t in np.argwhere(np.asarray(
      losses.interclass_mask(y, c, pair="positive")))}
  # 0 and 2 share no label and one cluster; 1 shares a label with everyone.
  assert got == {(0, 2, 3), (2, 0, 3)}


def _loss_ref(x, y, c, pair, margin=0.2, reduce="nonzero"):
  z = x / np.linalg.norm(x, axis=1, keepdims=True)
  per = [max(np.sum((z[a] - z[p]) ** 2) - np.sum((z[a] - z[n]) ** 2) + margin, 0.0)
         for a, p, n in _enumerate(y, c, pair)]
  counted = [v for v in per if v > 1e-16] if reduce == "nonzero" else per
  return sum(per) / max(len(counted), 1)


@pytest.mark.parametrize("pair", ["positive", "negative"])
@pytest.mark.parametrize("reduce", ["nonzero", "mean"])
def test_loss_against_loops(pair, reduce):
  x, y, c = _batch(3)
  got = jax.jit(lambda x: losses.interclass_loss(x, y, c, pair=pair, reduce=reduce))(x)
  np.testing.assert_allclose(got, _loss_ref(x, y, c, pair, reduce=reduce), rtol=1e-5)
  g = jax.grad(lambda x: losses.interclass_loss(x, y, c, pair=pair))(x)
  assert np.isfinite(g).all() and np.abs(g).sum() > 0


def test_no_triplet_gives_zero():
  x, y, _ = _batch(4)
  assert float(losses.interclass_loss(x, y, np.arange(len(y)))) == 0.0  # every row alone


@pytest.mark.parametrize("fn", [losses.batch_hard_loss, losses.batch_all_loss,
                                losses.semi_hard_loss])
def test_a_miners_mask_is_the_loss_of_the_rows_kept(fn):
  x, y, _ = _batch(5, b=16)
  keep = np.arange(16) % 3 != 0
  np.testing.assert_allclose(fn(x, y, keep), fn(x[keep], y[keep]), rtol=1e-6)
  assert not np.isclose(fn(x, y, keep), fn(x, y))


def test_bind_reads_the_mask_only_when_named():
  cfg = {"batch_hard": dict(weight=1.0, codes="sigmoid", mask="labelled"),
         "interclass": dict(weight=0.5, codes="sigmoid", pair="negative")}
  bound = losses.bind(cfg, nets=("hasher",))["hasher"]
  assert bound[0].inputs == {"codes": "sigmoid", "labels": "labels", "mask": "labelled"}
  assert bound[1].inputs == {"codes": "sigmoid", "labels": "labels", "clusters": "clusters"}
  assert bound[1].options == {"pair": "negative"}
  x, y, c = _batch(6)
  keep = np.arange(len(y)) < 8
  total, values = losses.total_loss(bound, dict(sigmoid=x, labels=y, clusters=c,
                                                labelled=keep))
  np.testing.assert_allclose(values["batch_hard"], losses.batch_hard_loss(x[:8], y[:8]),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="pair must be one of"):
    losses.interclass_mask(y, c, pair="both")
  with pytest.raises(ValueError, match="mask must be bool"):
    losses.batch_hard_loss(x, y, keep[:3])
