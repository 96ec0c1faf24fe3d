"""Tests of the metric-learning terms (rsh.losses.metric) against float64 numpy loops,
against a brute-force enumeration of every triplet of a batch, and of NT-Xent
(rsh.losses.contrastive) against optax.

TF-Addons is not installed: the semi-hard reference follows its documented rule
("the smallest D_an with D_an > D_ap; if no such negative exists, the largest
D_an") and a numpy transcription of its `triplet_semihard_loss` code.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rsh import losses

RTOL = 1e-5
FLAGS = ("normalise", "squared")


# Jitted once per static option (eager dispatch compiles every primitive per shape).
def _jit(fn, *static):
  return jax.jit(fn, static_argnames=static)


triplet = _jit(losses.triplet_loss, *FLAGS)
stacked = _jit(losses.stacked_triplet_loss, *FLAGS)
push = _jit(losses.push_loss)
code_balance = _jit(losses.code_balance_loss)


@_jit
def _nt_xent_pair(a, b, ids, t):
  return (losses.nt_xent_loss(a, b, temperature=t),
          optax.losses.ntxent(jnp.concatenate([a, b]), jnp.concatenate([ids, ids]), t))


@jax.jit
def miners(x, y, margin):
  """{(normalise, squared): {variant: value}}, every miner and variant under every
  flag at once: one compilation per shape."""
  out = {}
  for normalise, squared in itertools.product((True, False), repeat=2):
    kw = dict(margin=margin, normalise=normalise, squared=squared)
    out[normalise, squared] = {
        "hard": losses.batch_hard_loss(x, y, **kw),
        "hard_soft": losses.batch_hard_loss(x, y, **kw, soft=True),
        "all": losses.batch_all_loss(x, y, **kw),
        "all_mean": losses.batch_all_loss(x, y, **kw, reduce="mean"),
        "semi": losses.semi_hard_loss(x, y, **kw)}
  return out


# ----------------------------------------------------------------------------
# Slow, obvious references (float64, loops).


def _relu(t):
  return max(t, 0.0)


def _softplus(t):
  return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


def _unit(u, normalise):
  u = [float(v) for v in u]
  if not normalise:
    return u
  norm = max(math.sqrt(sum(v * v for v in u)), 1e-8)
  return [v / norm for v in u]


def dist_ref(u, v, normalise=True, squared=True):
  u, v = _unit(u, normalise), _unit(v, normalise)
  d = sum((x - y) ** 2 for x, y in zip(u, v))
  return d if squared else math.sqrt(d)


def dist_matrix_ref(x, normalise=True, squared=True):
  b = len(x)
  return [[dist_ref(x[i], x[j], normalise, squared) for j in range(b)] for i in range(b)]


def shares_ref(y, i, j):
  if y.ndim == 1:
    return y[i] == y[j]
  return any(y[i, c] and y[j, c] for c in range(y.shape[1]))


def triplet_ref(a, p, n, margin=0.2, normalise=True, squared=True):
  return sum(_relu(dist_ref(a[i], p[i], normalise, squared)
                   - dist_ref(a[i], n[i], normalise, squared) + margin)
             for i in range(len(a))) / len(a)


def batch_hard_ref(x, y, margin=0.2, normalise=True, squared=True, soft=False):
  d, b = dist_matrix_ref(x, normalise, squared), len(x)
  total, count = 0.0, 0
  for a in range(b):
    d_pos = [d[a][p] for p in range(b) if p != a and shares_ref(y, a, p)]
    d_neg = [d[a][n] for n in range(b) if n != a and not shares_ref(y, a, n)]
    if d_pos and d_neg:
      t = max(d_pos) - min(d_neg)
      total += _softplus(t) if soft else _relu(t + margin)
      count += 1
  return total / count if count else 0.0


def batch_all_ref(x, y, margin=0.2, normalise=True, squared=True, reduce="nonzero"):
  d, b = dist_matrix_ref(x, normalise, squared), len(x)
  total, count = 0.0, 0
  for a in range(b):
    for p in range(b):
      if p == a or not shares_ref(y, a, p):
        continue
      for n in range(b):
        if n == a or shares_ref(y, a, n):
          continue
        loss = _relu(d[a][p] - d[a][n] + margin)
        total += loss
        count += reduce == "mean" or loss > 1e-16
  return total / count if count else 0.0


def semi_hard_ref(x, y, margin=0.2, normalise=True, squared=True):
  d, b = dist_matrix_ref(x, normalise, squared), len(x)
  total, count = 0.0, 0
  for a in range(b):
    d_neg = [d[a][n] for n in range(b) if n != a and not shares_ref(y, a, n)]
    if not d_neg:
      continue  # documented deviation from TF: pairs of an anchor without negatives are skipped
    for p in range(b):
      if p == a or not shares_ref(y, a, p):
        continue
      further = [v for v in d_neg if v > d[a][p]]
      d_an = min(further) if further else max(d_neg)
      total += _relu(d[a][p] - d_an + margin)
      count += 1
  return total / count if count else 0.0


def tf_semihard_port(x, y, margin):
  """TF-Addons' `triplet_semihard_loss` ("L_2": squared distances, no normalisation),
  transcribed op by op to numpy (int labels)."""
  pdist = np.asarray(dist_matrix_ref(x, normalise=False, squared=True))
  adjacency = y[:, None] == y[None, :]
  adjacency_not = ~adjacency
  b = len(y)
  pdist_tile = np.tile(pdist, [b, 1])
  mask = np.tile(adjacency_not, [b, 1]) & (pdist_tile > pdist.T.reshape(-1, 1))
  mask_final = (mask.sum(1, keepdims=True) > 0).reshape(b, b).T
  axis_max = pdist_tile.max(1, keepdims=True)
  outside = ((pdist_tile - axis_max) * mask).min(1, keepdims=True) + axis_max
  outside = outside.reshape(b, b).T
  axis_min = pdist.min(1, keepdims=True)
  inside = np.tile(((pdist - axis_min) * adjacency_not).max(1, keepdims=True) + axis_min, [1, b])
  loss_mat = margin + pdist - np.where(mask_final, outside, inside)
  mask_positives = adjacency.astype(float) - np.eye(b)
  return np.maximum(loss_mat * mask_positives, 0.0).sum() / mask_positives.sum()


def push_ref(s, center=0.5):
  b, l = s.shape
  return -sum((float(s[i, k]) - center) ** 2 for i in range(b) for k in range(l)) / (b * l)


def code_balance_ref(s, center=0.5):
  b, l = s.shape
  return sum((sum(float(s[i, k]) for k in range(l)) / l - center) ** 2 for i in range(b)) / b


# ----------------------------------------------------------------------------
# Random batches: each label kind has an anchor without positive or negative.

B, L, C = 10, 6, 4


def _codes(rng, b=B, l=L):
  return rng.normal(size=(b, l)).astype(np.float32)


def _labels(rng, kind, b=B):
  if kind == "int":      # classes 0..2 and a singleton (no positive)
    y = rng.integers(0, 3, size=b)
    y[-1] = 7
    return y.astype(np.int32)
  y = (rng.random((b, C)) < 0.35).astype(np.uint8)
  if kind == "multihot":  # an image without labels: no positive, negative to all
    y[0] = 0
  else:                   # "multihot_all": every row labelled, one with all labels
    y[y.sum(1) == 0, 0] = 1
    y[0] = 1
  return y


KINDS = ("int", "multihot", "multihot_all")


def _close(actual, expected, rtol=RTOL):
  np.testing.assert_allclose(float(actual), expected, rtol=rtol, atol=1e-6)


# ----------------------------------------------------------------------------
# Distances and masks.


@jax.jit
def _distances_and_grads(x):
  """{(normalise, squared): (distances, d sum(distances) / d x)}."""
  out = {}
  for normalise, squared in itertools.product((True, False), repeat=2):
    fn = functools.partial(losses.pairwise_distances, normalise=normalise, squared=squared)
    out[normalise, squared] = fn(x), jax.grad(lambda x: jnp.sum(fn(x)))(x)
  return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pairwise_distances(seed):
  x = 3 * _codes(np.random.default_rng(seed))
  x[3] = 0.0                  # a zero row
  x[5], x[7] = x[4], x[6]     # duplicates: |a|^2 + |b|^2 - 2ab rounds to +-1e-7
  for (normalise, squared), (d, grad) in _distances_and_grads(x).items():
    assert d.shape == (B, B) and d.dtype == jnp.float32
    ref = np.asarray(dist_matrix_ref(x, normalise, squared=True))
    np.testing.assert_allclose(d if squared else np.square(d), ref, rtol=RTOL, atol=1e-5)
    if not squared:  # the root of that rounding error is ~5e-4: compare elsewhere
      far = ref > 1e-4
      np.testing.assert_allclose(np.asarray(d)[far], np.sqrt(ref[far]), rtol=RTOL)
    assert np.all(np.diag(d) == 0) and np.all(d >= 0), (normalise, squared)
    assert np.all(np.isfinite(grad)), (normalise, squared)


def test_positive_mask():
  np.testing.assert_array_equal(losses.positive_mask(np.array([0, 1, 0, 2])),
                                [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]])
  y = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
  expected = [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]  # empty row: nothing
  for dtype in (np.uint8, np.float32, bool):
    mask = losses.positive_mask(y.astype(dtype))
    assert mask.dtype == jnp.bool_
    np.testing.assert_array_equal(mask, expected)
  assert jax.jit(losses.positive_mask)(y).shape == (4, 4)


# ----------------------------------------------------------------------------
# Against the references.


@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_triplet_and_stacked(normalise, squared, seed):
  rng = np.random.default_rng(seed)
  a, p, n = _codes(rng, 5), _codes(rng, 5), _codes(rng, 5)
  kw = dict(normalise=normalise, squared=squared)
  for margin in (0.2, 1.0):
    expected = triplet_ref(a, p, n, margin, **kw)
    _close(triplet(a, p, n, margin=margin, **kw), expected)
    _close(stacked(np.concatenate([a, p, n]), margin=margin, **kw), expected)


@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_miners_against_loops(normalise, squared, kind):
  kw = dict(normalise=normalise, squared=squared)
  for seed in range(3):
    rng = np.random.default_rng(10 * seed + len(kind))
    x, y = _codes(rng), _labels(rng, kind)
    margin = 0.2 if normalise else 2.0
    got = miners(x, y, margin)[normalise, squared]
    _close(got["hard"], batch_hard_ref(x, y, margin, **kw))
    _close(got["hard_soft"], batch_hard_ref(x, y, soft=True, **kw))
    _close(got["all"], batch_all_ref(x, y, margin, reduce="nonzero", **kw))
    _close(got["all_mean"], batch_all_ref(x, y, margin, reduce="mean", **kw))
    _close(got["semi"], semi_hard_ref(x, y, margin, **kw))


def test_references_cover_the_edge_cases():
  # The label kinds above do hold anchors without positives / negatives.
  rng = np.random.default_rng(0)
  for kind in KINDS:
    y = _labels(rng, kind)
    pos = [[shares_ref(y, a, p) and a != p for p in range(B)] for a in range(B)]
    neg = [[not shares_ref(y, a, n) and a != n for n in range(B)] for a in range(B)]
    assert any(not any(r) for r in (pos if kind != "multihot_all" else neg)), kind


def _triplets(y):
  """Every valid (a, p, n) of the batch, by brute force."""
  b = len(y)
  return [(a, p, n) for a, p, n in itertools.product(range(b), repeat=3)
          if a != p and a != n and shares_ref(y, a, p) and not shares_ref(y, a, n)]


@pytest.mark.parametrize("kind", KINDS)
def test_miners_against_enumeration(kind):
  rng = np.random.default_rng(5)
  x, y, m = _codes(rng), _labels(rng, kind), 0.3
  d = dist_matrix_ref(x)
  triplets = _triplets(y)
  loss = {t: _relu(d[t[0]][t[1]] - d[t[0]][t[2]] + m) for t in triplets}
  assert triplets
  got = miners(x, y, m)[True, True]
  # batch_all: mean over the enumerated triplets (all, or those with loss > 0).
  _close(got["all_mean"], sum(loss.values()) / len(loss))
  nonzero = [v for v in loss.values() if v > 1e-16]
  _close(got["all"], sum(nonzero) / len(nonzero))
  # batch_hard: per anchor the worst of its triplets, max_{p,n} relu(d_ap - d_an + m).
  anchors = sorted({a for a, _, _ in triplets})
  worst = [max(v for t, v in loss.items() if t[0] == a) for a in anchors]
  _close(got["hard"], sum(worst) / len(worst))
  # semi_hard: per positive pair (a, p), TF's choice among its triplets.
  pairs = sorted({(a, p) for a, p, _ in triplets})
  per_pair = []
  for a, p in pairs:
    d_an = [d[a][n] for aa, pp, n in triplets if (aa, pp) == (a, p)]
    further = [v for v in d_an if v > d[a][p]]
    per_pair.append(_relu(d[a][p] - (min(further) if further else max(d_an)) + m))
  _close(got["semi"], sum(per_pair) / len(per_pair))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semi_hard_is_tf_addons(seed):
  # Where every anchor has a negative, TF's code (its defaults: squared L2 on the
  # codes as given, margin 1.0) and ours agree; on L2-normalised codes our
  # default normalisation changes nothing.
  rng = np.random.default_rng(seed)
  x = _codes(rng)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  y = rng.integers(0, 3, size=B)
  expected = tf_semihard_port(x, y, 1.0)
  got = miners(x, y, 1.0)
  _close(got[False, True]["semi"], expected)
  _close(got[True, True]["semi"], expected)


def test_semi_hard_ties():
  # A negative exactly as far as a positive is not "further" (TF's strict >):
  # the next further negative is chosen, or the farthest one.
  rng = np.random.default_rng(4)
  x = _codes(rng)
  y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3])
  x[3], x[6] = x[1], x[2]     # negatives 3, 6 of anchor 0 tie with positives 1, 2
  got = miners(x, y, 1.0)
  for normalise, squared in itertools.product((True, False), repeat=2):
    _close(got[normalise, squared]["semi"], semi_hard_ref(x, y, 1.0, normalise, squared))
  _close(got[False, True]["semi"], tf_semihard_port(x, y, 1.0))


def test_push_and_code_balance():
  rng = np.random.default_rng(3)
  s = jax.nn.sigmoid(2 * _codes(rng))
  _close(push(s), push_ref(np.asarray(s)))
  _close(code_balance(s), code_balance_ref(np.asarray(s)))
  h = np.tanh(_codes(rng))
  _close(push(h, center=0.0), push_ref(h, 0.0))
  _close(code_balance(h, center=0.0), code_balance_ref(h, 0.0))
  # Per code, not per bit: alternating codes are balanced, their bits constant.
  alt = np.tile([1.0, 0.0], (4, 4))
  assert float(code_balance(alt)) == 0.0
  assert float(losses.bit_balance_loss(2 * alt - 1)) == 1.0
  assert float(push(alt)) == -0.25


def test_nt_xent_is_optax_ntxent():
  """rsh's nt_xent_loss(a, b, temperature=t) == optax.losses.ntxent(concat([a, b]),
  concat([ids, ids]), t) for distinct ids (here arange and a permutation of it).

  They agree when every row has exactly one positive: optax's denominator for a
  positive pair (i, j) is exp(s_ij) + the exps of i's negatives (other positives
  of i left out), averaged over positive pairs; with one positive per row that is
  rsh's sum over k != i, averaged over the 2n rows. They differ (untested) for
  groups of 3+ rows with one label (rsh has no such labels), in the default
  temperature (optax 0.07, rsh 0.5), and for rows of tiny norm: optax clips
  ||z||^2 at float32 eps (||z|| >= 3.5e-4), rsh clips ||z|| at 1e-8.
  """
  rng = np.random.default_rng(7)
  a, b = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(6, 5)).astype(np.float32)
  for ids, t in ((np.arange(6), 0.5), (rng.permutation(6) + 10, 0.07)):
    ours, theirs = _nt_xent_pair(a, b, ids, t)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL)


# ----------------------------------------------------------------------------
# jit, grad and degenerate batches.

_TERMS = {
    "triplet": lambda x, y: losses.triplet_loss(x[:3], x[3:6], x[6:9]),
    "stacked": lambda x, y: losses.stacked_triplet_loss(x[:9]),
    "stacked_root": lambda x, y: losses.stacked_triplet_loss(x[:9], squared=False),
    "batch_hard": losses.batch_hard_loss,
    "batch_hard_root": lambda x, y: losses.batch_hard_loss(x, y, squared=False, soft=True),
    "batch_all": losses.batch_all_loss,
    "batch_all_root": lambda x, y: losses.batch_all_loss(x, y, squared=False, reduce="mean"),
    "semi_hard": losses.semi_hard_loss,
    "semi_hard_root": lambda x, y: losses.semi_hard_loss(x, y, squared=False),
    "push": lambda x, y: losses.push_loss(x),
    "balance": lambda x, y: losses.code_balance_loss(x),
}


@jax.jit
def _values_and_grads(x, y):
  """{term: (value, d value / d x)} for every term: one compilation per label shape."""
  return {name: jax.value_and_grad(fn)(x, y) for name, fn in _TERMS.items()}


def test_jit_and_grad():
  rng = np.random.default_rng(8)
  x, y = _codes(rng, 12), _labels(rng, "multihot", 12)
  out = _values_and_grads(x, y)
  assert set(out) == set(_TERMS)
  for name, (value, grad) in out.items():
    assert value.shape == () and value.dtype == jnp.float32, name
    assert np.all(np.isfinite(grad)) and np.any(grad != 0), name
  _close(out["batch_all"][0], batch_all_ref(x, y))
  _close(out["semi_hard_root"][0], semi_hard_ref(x, y, squared=False))
  # All-identical codes (every distance 0) and zero codes: finite values and grads.
  for codes in (np.tile(x[:1], (12, 1)), np.zeros_like(x)):
    for name, (value, grad) in _values_and_grads(codes, y).items():
      assert np.isfinite(value) and np.all(np.isfinite(grad)), name


@pytest.mark.parametrize("labels", [np.zeros(12, np.int32), np.ones((12, 4), np.uint8),
                                    np.zeros((12, 4), np.uint8), np.arange(12)])
def test_miners_without_triplets_are_zero(labels):
  # One class (no negatives), every row all labels, no labels (no positives),
  # all classes distinct: loss 0, gradients 0.
  x = _codes(np.random.default_rng(9), 12)
  for name, (value, grad) in _values_and_grads(x, labels).items():
    if name.startswith(("batch_", "semi_")):
      assert float(value) == 0.0 and np.all(grad == 0), name


def test_identical_codes_pay_the_margin():
  x = np.ones((B, L), np.float32)
  y = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
  for name, value in miners(x, y, 0.3)[True, True].items():
    _close(value, 0.3 if name != "hard_soft" else math.log(2))
  _close(stacked(x[:9]), 0.2)


# ----------------------------------------------------------------------------
# Bad inputs.

X = np.zeros((6, 4), np.float32)


@pytest.mark.parametrize("call, match", [
    (lambda: losses.pairwise_distances(X[0]), r"pairwise_distances:.*rank 2"),
    (lambda: losses.positive_mask(np.zeros((2, 2, 2))), r"positive_mask:.*labels"),
    (lambda: losses.triplet_loss(X, X, X[:5]), r"triplet_loss:.*batch"),
    (lambda: losses.triplet_loss(X, X, X[:, :3]), r"triplet_loss:.*code length"),
    (lambda: losses.triplet_loss(X[:0], X[:0], X[:0]), r"triplet_loss:.*at least one"),
    (lambda: losses.stacked_triplet_loss(X[:5]), r"stacked_triplet_loss:.*multiple of 3.*\(5, 4\)"),
    (lambda: losses.stacked_triplet_loss(X[0]), r"stacked_triplet_loss:.*rank 2"),
    (lambda: losses.batch_hard_loss(X, np.zeros(5)), r"batch_hard_loss:.*batch.*\(6, 4\).*\(5,\)"),
    (lambda: losses.batch_hard_loss(X[0], np.zeros(4)), r"batch_hard_loss:.*rank 2"),
    (lambda: losses.batch_all_loss(X, np.zeros((6, 2, 2))), r"batch_all_loss:.*labels"),
    (lambda: losses.batch_all_loss(X, np.zeros(6), reduce="sum"), r"batch_all_loss:.*'sum'"),
    (lambda: losses.semi_hard_loss(X, np.zeros((4, 3))), r"semi_hard_loss:.*batch"),
    (lambda: losses.semi_hard_loss(X, np.zeros(())), r"semi_hard_loss:.*labels"),
    (lambda: losses.push_loss(X[0]), r"push_loss:.*rank 2"),
    (lambda: losses.code_balance_loss(X[None]), r"code_balance_loss:.*rank 2"),
])
def test_bad_inputs(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# ----------------------------------------------------------------------------
# Registry and binding.


def test_registered_terms():
  expected = {
      "triplet": (losses.stacked_triplet_loss, {"codes": "hash"}),
      "batch_hard": (losses.batch_hard_loss, {"codes": "hash", "labels": "labels"}),
      "batch_all": (losses.batch_all_loss, {"codes": "hash", "labels": "labels"}),
      "semi_hard": (losses.semi_hard_loss, {"codes": "hash", "labels": "labels"}),
      "push": (losses.push_loss, {"codes": "sigmoid"}),
      "balance": (losses.code_balance_loss, {"codes": "sigmoid"}),
  }
  for name, (fn, inputs) in expected.items():
    assert losses.LOSSES[name].fn is fn and dict(losses.LOSSES[name].inputs) == inputs
    assert fn.__name__ in losses.__all__


def test_bind_metric_terms():
  rng = np.random.default_rng(12)
  s = jax.nn.sigmoid(_codes(rng, 9))
  inputs = {"sigmoid": s, "hash": 2 * s - 1, "labels": _labels(rng, "int", 9)}
  bound = losses.bind({"batch_hard": dict(weight=1.0, on="hasher", codes="sigmoid")},
                      nets=("hasher",))
  total, values = jax.jit(lambda v: losses.total_loss(bound["hasher"], v))(inputs)
  expected = batch_hard_ref(np.asarray(s), inputs["labels"])
  _close(total, expected)
  _close(values["batch_hard"], expected)
  # MiLAN's objective: triplet + push + balance, with options and default keys.
  config = {"triplet": dict(weight=1.0, margin=0.5), "push": dict(weight=0.001),
            "balance": dict(weight=0.01), "semi": dict(type="semi_hard", weight=1.0,
                                                       squared=False)}
  bound = losses.bind(config, nets=("hasher",))["hasher"]
  total, values = jax.jit(lambda v: losses.total_loss(bound, v))(inputs)
  h = np.asarray(inputs["hash"])
  _close(values["triplet"], triplet_ref(h[:3], h[3:6], h[6:], 0.5))
  _close(values["push"], push_ref(np.asarray(s)))
  _close(values["balance"], code_balance_ref(np.asarray(s)))
  _close(values["semi"], semi_hard_ref(h, inputs["labels"], squared=False))
  _close(total, sum(config[k]["weight"] * float(values[k]) for k in config))
