"""Leave-one-out retrieval (a set queries itself, each query without its own row):
`rsh.protocol.evaluate(..., leave_one_out=True)` against per-query archives built
without the query, and the retrieval evaluator's `leave_one_out` option end to end."""

import types

import ml_collections
import numpy as np
import pytest

from rsh import evaluators as revals
from rsh import hamming, protocol, restore, runs
from tests.conftest import with_overrides
from tests.test_metrics import clustered, ref_evaluate


# ----------------------------------------------------------------------------- references


def _mean_as_evaluate(per: list[dict], k: int) -> dict:
  """One dict of per-query results (each query alone) -> evaluate's averages over queries."""
  out = {}
  for key in dict.fromkeys(key for p in per for key in p):
    values = [p[key] for p in per if key in p]  # class-wise keys: the class's queries only
    out[key] = values[0] if key == "pr_curve/cutoffs" else np.mean(values, axis=0)
  ap = np.array([p[f"map@{k}"] for p in per])
  out[f"map@{k}/hit_only"] = ap[ap > 0].mean() if (ap > 0).any() else 0.0  # AP > 0 iff a hit
  return out


def loo_by_evaluate(x, labels, k, n, **kw) -> dict:
  """For each query i, the plain (non leave-one-out) `evaluate` of query i against the set
  with row i deleted; averaged as `evaluate` averages."""
  per = [protocol.evaluate(x[i:i + 1], np.delete(x, i, 0), labels[i:i + 1],
                           np.delete(labels, i, 0), k=k, n=n, threads=1, **kw)
         for i in range(len(x))]
  return _mean_as_evaluate(per, k)


def loo_by_loops(x, labels, k, n, cutoffs, distance="hamming", radius=2) -> dict:
  """The same from `test_metrics.ref_evaluate`'s plain loops over a stable argsort."""
  per = [ref_evaluate(x[i:i + 1], np.delete(x, i, 0), labels[i:i + 1], np.delete(labels, i, 0),
                      k, n, cutoffs, distance, radius) for i in range(len(x))]
  return _mean_as_evaluate(per, k)


def assert_same(got: dict, want: dict, tol: float, keys=None):
  assert keys is not None or sorted(got) == sorted(want)
  for key in keys or want:
    np.testing.assert_allclose(got[key], want[key], rtol=tol, atol=tol, err_msg=key)


def _multi_hot(rng, n, classes=4, p=0.35):
  return (rng.random((n, classes)) < p).astype(np.int32)


# ----------------------------------------------------------------------------- protocol


CASES = [  # (labels, k, n, pr_step, radius): 8-bit codes over 60 items, ties everywhere
    ("int", 10, 5, 7, 2), ("int", 59, 59, 10, 0), ("int", 1, 1, None, 8),
    ("multi", 10, 5, 7, 2), ("multi", 59, 30, 20, 1), ("multi", 3, 59, 59, 3),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind, k, n, pr_step, radius", CASES)
def test_hamming_leave_one_out_is_each_query_against_the_set_without_it(kind, k, n, pr_step,
                                                                         radius, seed):
  rng = np.random.default_rng(seed)
  codes, labels = clustered(rng, 60, 8, 4, flip=0.25)
  if kind == "multi":
    labels = _multi_hot(rng, 60)
  assert len(np.unique(codes)) < 55  # duplicate codes (distance-0 ties); 9 distances in all
  kw = dict(pr_step=pr_step, radius=radius)
  got = protocol.evaluate(codes, codes, labels, labels, k=k, n=n, leave_one_out=True,
                          threads=2, **kw)
  assert_same(got, loo_by_evaluate(codes, labels, k, n, **kw), 1e-9)
  # Without leave-one-out the query is among its own results: the numbers differ.
  plain = protocol.evaluate(codes, codes, labels, labels, k=k, n=n, **kw)
  assert plain[f"map@{k}/tie_aware"] != got[f"map@{k}/tie_aware"]


@pytest.mark.parametrize("kind", ["int", "multi"])
def test_leave_one_out_matches_the_plain_loop_formulas(kind):
  rng = np.random.default_rng(5)
  codes, labels = clustered(rng, 60, 8, 3, flip=0.3)
  if kind == "multi":
    labels = _multi_hot(rng, 60, 3)
  cutoffs = np.array([4, 17, 30, 59])
  got = protocol.evaluate(codes, codes, labels, labels, k=12, n=6, pr_cutoffs=cutoffs,
                          leave_one_out=True)
  want = loo_by_loops(codes, labels, 12, 6, cutoffs)
  assert_same(got, want, 1e-9, keys=want)
  assert got["pr_curve/cutoffs"] == cutoffs.tolist()


@pytest.mark.parametrize("kind", ["int", "multi"])
def test_cosine_leave_one_out_is_each_query_against_the_set_without_it(kind):
  # +-1 features of 16 dims (unit rows of +-1/4) and two zero rows: every cosine is exact
  # whatever the archive's shape (no rounding to break ties), 17 values in all.
  rng = np.random.default_rng(2)
  x = np.where(rng.random((60, 16)) < 0.5, -1.0, 1.0).astype(np.float32)
  x[:, 6:] = x[0, 6:]  # 6 free signs: many equal cosines
  x[[7, 40]] = 0
  labels = _multi_hot(rng, 60) if kind == "multi" else rng.integers(0, 3, 60)
  kw = dict(distance="cosine", pr_step=9)
  got = protocol.evaluate(x, x, labels, labels, k=15, n=8, leave_one_out=True, **kw)
  assert_same(got, loo_by_evaluate(x, labels, 15, 8, **kw), 1e-6)
  want = loo_by_loops(x, labels, 15, 8, np.array(got["pr_curve/cutoffs"]), distance="cosine")
  assert_same(got, want, 1e-6, keys=[key for key in want if key in got])


def test_leave_one_out_takes_codes_of_another_view_of_the_same_rows():
  # Query i against the archive's other-view rows except row i (e.g. S1 -> S2 of one set).
  rng = np.random.default_rng(4)
  q, labels = clustered(rng, 50, 16, 3)
  a = clustered(rng, 50, 16, 3)[0]
  got = protocol.evaluate(q, a, labels, labels, k=7, n=4, pr_step=5, leave_one_out=True)
  per = [protocol.evaluate(q[i:i + 1], np.delete(a, i, 0), labels[i:i + 1],
                           np.delete(labels, i, 0), k=7, n=4, pr_step=5) for i in range(50)]
  assert_same(got, _mean_as_evaluate(per, 7), 1e-9)


@pytest.mark.parametrize("distance", ["hamming", "cosine"])
@pytest.mark.parametrize("kind", ["int", "multi"])
def test_a_query_never_retrieves_itself(distance, kind):
  # Every item is the only one of its class, and its own code is the one nearest to it
  # (distance 0, first in its tie group): ranked, the query itself would be rank 1 and the
  # only relevant item. Left out, nothing relevant remains.
  n = 40
  codes = np.packbits(np.eye(64, dtype=bool)[:n], axis=1)
  x = codes if distance == "hamming" else np.eye(n, dtype=np.float32) + 0.1
  labels = np.eye(n, dtype=np.int32) if kind == "multi" else np.arange(n)
  plain = protocol.evaluate(x, x, labels, labels, k=5, n=3, distance=distance)
  assert plain["map@5"] == plain["map@all"] == 1.0
  got = protocol.evaluate(x, x, labels, labels, k=5, n=3, distance=distance,
                          leave_one_out=True)
  zero = [key for key in got if key.startswith(("map", "precision", "recall", "ndcg", "acg",
                                                 "classwise"))]
  assert zero and all(got[key] == 0.0 for key in zero), {key: got[key] for key in zero}
  assert got["pr_curve/precision"] == [0.0] * len(got["pr_curve/cutoffs"])
  assert got["pr_curve/cutoffs"][-1] == n - 1


def test_one_partner_per_query_is_all_that_counts():
  # Pairs share a class: the one relevant item of query i is its partner (R_i = 1, not 2).
  rng = np.random.default_rng(0)
  codes = np.packbits(rng.integers(0, 2, (30, 8)).astype(bool), axis=1)
  labels = np.arange(30) // 2
  got = protocol.evaluate(codes, codes, labels, labels, k=29, n=29, pr_step=None,
                          leave_one_out=True)
  assert got["recall@29"] == 1.0 and got["map@29/min_k_rel"] == got["map@all"]
  assert got["precision@29"] == pytest.approx(1 / 29)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(k=12), ValueError, r"`k`=12 is larger than the archive \(11 items, less the query "
     r"itself: leave_one_out\)"),
    (dict(n=12), ValueError, r"`n`=12 is larger than the archive \(11 items, less the query"),
    (dict(pr_cutoffs=[3, 12]), ValueError, r"`pr_cutoffs` must increase strictly within 1\.\.11"),
    (dict(archive=slice(0, 11)), ValueError, r"leave_one_out=True ranks the query set against "
     r"itself, but `archive_codes` has 11 rows and `query_codes` 12"),
    (dict(archive_labels=True), ValueError, r"`archive_labels` equal to `query_labels`"),
    (dict(leave_one_out="yes"), TypeError, r"`leave_one_out` must be True or False"),
], ids=["k_is_the_set", "n_is_the_set", "cutoff_is_the_set", "archive_shorter", "labels_differ",
        "not_a_bool"])
def test_leave_one_out_refusals(kwargs, error, match):
  rng = np.random.default_rng(0)
  codes, labels = clustered(rng, 12, 16, 3)
  args = dict(k=11, n=11, leave_one_out=True)
  a, al = codes, labels
  if "archive" in kwargs:
    a, al = codes[kwargs["archive"]], labels[kwargs.pop("archive")]
  if kwargs.pop("archive_labels", False):
    al = np.roll(labels, 1)
  with pytest.raises(error, match=match):
    protocol.evaluate(codes, a, labels, al, **(args | kwargs))
  protocol.evaluate(codes, codes, labels, labels, **args)  # k = n = 11 is allowed


# ----------------------------------------------------------------------------- evaluator


def _context():
  """A Context over named sets: 6 query images, 20 archive ones, "train" the archive's rows."""
  sets = dict(query=np.arange(100, 106), archive=np.arange(20), train=np.arange(20))
  data = types.SimpleNamespace(indices=lambda s: sets[s], view_name=lambda v: v or "pixels")
  config = ml_collections.ConfigDict(dict(eval=dict(k=5, n=3, pr_step=2),
                                          data=dict(input="pixels")))
  return revals.Context(config=config, data=data, encode=None, ssm=None)


def test_evaluator_leave_one_out_defaults_the_archive_to_the_query_set():
  ctx = _context()
  ev = revals.build({"loo": dict(type="retrieval", query="archive", leave_one_out=True,
                                 codes="hash")}, ctx)["loo"]
  assert (ev.query, ev.archive, ev.leave_one_out) == ("archive", "archive", True)
  # Another name for the same rows is the same set.
  revals.build({"loo": dict(type="retrieval", query="archive", archive="train",
                            leave_one_out=True, codes="hash")}, ctx)
  plain = revals.build({"r": dict(type="retrieval", codes="hash")}, ctx)["r"]
  assert (plain.archive, plain.leave_one_out) == ("archive", False)


@pytest.mark.parametrize("cfg, match", [
    (dict(query="query", archive="archive"),
     r"config.evals.loo.archive='archive' is not the query set 'query'"),
    (dict(query="archive", k=20), r"config.evals.loo.k=20 is larger than the archive 'archive' "
     r"of config.evals.loo less the query itself \(leave_one_out\) \(19 images\)"),
    (dict(query="query", n=6), r"config.evals.loo.n=6 is larger .* \(5 images\)"),
    (dict(query="archive", leave_one_out="yes"), r"config.evals.loo.leave_one_out must be"),
], ids=["archive_differs", "k_is_the_set", "n_is_the_set", "not_a_bool"])
def test_evaluator_leave_one_out_refusals_name_the_key(cfg, match):
  cfg = dict(type="retrieval", leave_one_out=True, codes="hash") | cfg
  with pytest.raises(ValueError, match=match):
    revals.build({"loo": cfg}, _context())
  if "k" in cfg:  # k = the set size - 1 is allowed
    revals.build({"loo": cfg | dict(k=cfg["k"] - 1)}, _context())


def test_a_run_reports_leave_one_out_metrics_as_the_reference_computes_them(tmp_path,
                                                                           monkeypatch):
  monkeypatch.setenv("RSH_CACHE_DIR", str(tmp_path / "cache"))
  config = with_overrides(restore.config_from_file("configs/lsh.py:smoke,bits=8"), {
      "evals.loo": dict(type="retrieval", query="archive", leave_one_out=True, codes="hash",
                        vectors="hash", prefix="loo/")})
  results = runs.run(config, tmp_path / "w")
  run = restore.load_run(tmp_path / "w")
  hashes, labels = restore.encode(run, "archive")["hash"], run.labels("archive")
  k, n, step = int(config.eval.k), int(config.eval.n), int(config.eval.pr_step)
  assert len(labels) > k  # the smoke archive: the run's own k and n, not capped
  codes = hamming.pack_codes(hashes >= 0)
  want = loo_by_evaluate(codes, labels, k, n, pr_step=step)
  metrics = results["metrics"]
  for key in (f"map@{k}", f"map@{k}/tie_aware", f"precision@{n}", f"recall@{n}", "map@all"):
    assert metrics[f"loo/{key}"] == pytest.approx(want[key], abs=1e-9), key
    assert metrics[f"loo/binary/{key}"] == metrics[f"loo/{key}"]
  cosine = loo_by_evaluate(hashes, labels, k, n, pr_step=step, distance="cosine")
  assert metrics[f"loo/nonbinary/map@{k}"] == pytest.approx(cosine[f"map@{k}"], abs=1e-6)
  # The plain entry ranks the query set against the archive: other numbers.
  assert metrics[f"map@{k}"] != metrics[f"loo/map@{k}"]
