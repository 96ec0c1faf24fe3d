"""rsh.metrics and rsh.protocol against slow obvious references: per-query loops over a
stable argsort."""

import itertools
import math

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from rsh import metrics, protocol, ranking

FAST = settings(max_examples=40, deadline=None)


# ----------------------------------------------------------------------------- references


def ref_rankings(q, a, distance):
  """(order, sorted scores) by a plain stable argsort, ties by archive index."""
  if distance == "hamming":
    d = np.unpackbits(q[:, None, :] ^ a[None, :, :], axis=-1).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")
  else:
    d = ranking.normalise_rows(q) @ ranking.normalise_rows(a).T
    order = np.argsort(-d, axis=1, kind="stable")
  return order, np.take_along_axis(d, order, 1), d


def ref_ap(rel, k, mode, n_rel):
  """One query: AP from the definitions, summing P(j) over relevant ranks."""
  upto = len(rel) if mode == "all" else k
  hits, total = 0, 0.0
  for j in range(upto):
    if rel[j]:
      hits += 1
      total += hits / (j + 1)
  norm = {"thesis": hits, "hit_only": hits, "min_k_rel": min(k, n_rel), "all": n_rel}[mode]
  return total / norm if norm else 0.0


def ref_evaluate(q, a, ql, al, k, n, cutoffs, distance="hamming", radius=2):
  order, ranked_scores, scores = ref_rankings(q, a, distance)
  gains = metrics.relevance(ql, al)
  out = {f"{m}": [] for m in ("thesis", "min_k_rel", "all", "p", "r", "ndcg", "acg", "pr_p",
                                "pr_r", "rad", "tie")}
  for i in range(len(q)):
    g = gains[i, order[i]].astype(np.int64)
    rel = g > 0
    n_rel = int(rel.sum())
    for m in ("thesis", "min_k_rel", "all"):
      out[m].append(ref_ap(rel, k, m, n_rel))
    out["p"].append(rel[:n].sum() / n)
    out["r"].append(rel[:n].sum() / n_rel if n_rel else 0.0)
    out["pr_p"].append([rel[:c].sum() / c for c in cutoffs])
    out["pr_r"].append([rel[:c].sum() / n_rel if n_rel else 0.0 for c in cutoffs])
    dcg = sum((2.0**g[j] - 1) / math.log2(j + 2) for j in range(k))
    ideal = np.sort(gains[i].astype(np.int64))[::-1]
    idcg = sum((2.0**ideal[j] - 1) / math.log2(j + 2) for j in range(k))
    out["ndcg"].append(dcg / idcg if idcg else 0.0)
    out["acg"].append(g[:k].mean())
    # Tie groups: runs of equal scores over the whole ranking.
    starts = np.flatnonzero(np.r_[True, ranked_scores[i, 1:] != ranked_scores[i, :-1]])
    sizes = np.diff(np.r_[starts, len(rel)])
    rels = np.add.reduceat(rel.astype(np.int64), starts)
    out["tie"].append(metrics.tie_aware_average_precision([sizes], [rels], k, "thesis")[0])
    if distance == "hamming":
      within = scores[i] <= radius
      out["rad"].append((within & (gains[i] > 0)).sum() / within.sum() if within.any() else 0.0)
  thesis = np.array(out["thesis"])
  hit = np.array([rel.any() for rel in (gains[i, order[i, :k]] > 0 for i in range(len(q)))])
  res = {f"map@{k}": thesis.mean(), f"map@{k}/min_k_rel": np.mean(out["min_k_rel"]),
         "map@all": np.mean(out["all"]),
         f"map@{k}/hit_only": thesis[hit].mean() if hit.any() else 0.0,
         f"map@{k}/tie_aware": np.mean(out["tie"]),
         f"precision@{n}": np.mean(out["p"]), f"recall@{n}": np.mean(out["r"]),
         f"ndcg@{k}": np.mean(out["ndcg"]), f"acg@{k}": np.mean(out["acg"]),
         "pr_curve/precision": np.mean(out["pr_p"], 0), "pr_curve/recall": np.mean(out["pr_r"], 0)}
  if distance == "hamming":
    res[f"precision@r{radius}"] = np.mean(out["rad"])
  classes = range(ql.shape[1]) if ql.ndim == 2 else np.unique(ql)
  for c in classes:
    member = ql[:, c] > 0 if ql.ndim == 2 else ql == c
    if member.any():
      res[f"classwise_map@{k}/{c}"] = thesis[member].mean()
      res[f"classwise_map@{k}/tie_aware/{c}"] = np.array(out["tie"])[member].mean()
  return res


def assert_matches(got, want):
  for key, v in want.items():
    np.testing.assert_allclose(got[key], v, rtol=1e-9, atol=1e-12, err_msg=key)


def clustered(rng, n, bits, classes, flip=0.3):
  """Codes near a prototype per class (few distinct distances, many ties)."""
  protos = np.random.default_rng(7).integers(0, 2, (classes, bits)).astype(bool)
  labels = rng.integers(0, classes, n)
  codes = protos[labels] ^ (rng.random((n, bits)) < flip)
  return np.packbits(codes, axis=1), labels


# ----------------------------------------------------------------------------- hand-worked


def test_hand_worked_map_at_k():
  # One query, archive codes at distances 0, 1, 1, 2, 3 (ties broken by index):
  # relevance in rank order = [1, 0, 1, 1, 0].
  q = np.zeros((1, 8), bool)
  a = np.zeros((5, 8), bool)
  a[1, 0] = a[2, 1] = True            # distance 1
  a[3, :2] = True                     # distance 2
  a[4, :3] = True                     # distance 3
  ql = np.array([7])
  al = np.array([7, 3, 7, 7, 3])
  r = protocol.evaluate(q, a, ql, al, k=4, n=2, pr_cutoffs=[2, 5])
  # MAP@4 (thesis): P(1) = 1/1, P(3) = 2/3, P(4) = 3/4 at the relevant ranks,
  # n_1 = 3 relevant in the top 4: AP = (1 + 2/3 + 3/4) / 3 = 29/36.
  assert r["map@4"] == pytest.approx(29 / 36)
  assert r["map@4/min_k_rel"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)  # min(4, 3) = 3
  assert r["map@all"] == pytest.approx(29 / 36)  # no relevant item after rank 4
  assert r["precision@2"] == pytest.approx(1 / 2)
  assert r["recall@2"] == pytest.approx(1 / 3)
  assert r["pr_curve/precision"] == pytest.approx([1 / 2, 3 / 5])
  assert r["pr_curve/recall"] == pytest.approx([1 / 3, 1])
  # Within radius 2: ranks 1-4, three relevant.
  assert r["precision@r2"] == pytest.approx(3 / 4)
  assert r["classwise_map@4/7"] == pytest.approx(29 / 36)
  # Tie-aware: the distance-1 pair (one relevant) is in either order, each with
  # probability 1/2: [1, 1, 0, 1] gives (1 + 1 + 3/4) / 3, [1, 0, 1, 1] 29/36.
  assert r["map@4/tie_aware"] == pytest.approx(((1 + 1 + 3 / 4) / 3 + 29 / 36) / 2)


def test_no_relevant_item_in_top_k_gives_zero():
  q, a = np.zeros((2, 8), bool), np.zeros((3, 8), bool)
  r = protocol.evaluate(q, a, np.array([1, 2]), np.array([0, 0, 1]), k=2, n=1, pr_step=None)
  # Query 0: relevant only at rank 3; query 1: nothing relevant anywhere.
  assert r["map@2"] == 0.0 and r["map@2/hit_only"] == 0.0
  assert r["map@all"] == pytest.approx((1 / 3) / 2)
  assert "pr_curve/precision" not in r


# ----------------------------------------------------------------------------- properties


@FAST
@given(nq=st.integers(1, 30), na=st.integers(5, 300), bits=st.sampled_from([8, 16, 64]),
       classes=st.integers(1, 5), k=st.integers(1, 40), n=st.integers(1, 40),
       step=st.integers(1, 80), seed=st.integers(0, 2**16))
def test_evaluate_single_label_hamming(nq, na, bits, classes, k, n, step, seed):
  rng = np.random.default_rng(seed)
  k, n = min(k, na), min(n, na)
  q, ql = clustered(rng, nq, bits, classes)
  a, al = clustered(rng, na, bits, classes)
  r = protocol.evaluate(q, a, ql, al, k=k, n=n, pr_step=step)
  cutoffs = list(range(step, na + 1, step))
  if not cutoffs or cutoffs[-1] != na:
    cutoffs.append(na)
  assert r["pr_curve/cutoffs"] == cutoffs
  assert_matches(r, ref_evaluate(q, a, ql, al, k, n, np.array(cutoffs)))
  assert all(isinstance(v, (float, list)) for v in r.values())


@FAST
@given(nq=st.integers(1, 20), na=st.integers(5, 200), classes=st.integers(1, 5),
       k=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_evaluate_multi_label(nq, na, classes, k, seed):
  rng = np.random.default_rng(seed)
  k = min(k, na)
  q, a = clustered(rng, nq, 16, 3)[0], clustered(rng, na, 16, 3)[0]
  ql = (rng.random((nq, classes)) < 0.4).astype(np.int32)
  al = rng.random((na, classes)) < 0.4
  r = protocol.evaluate(q, a, ql, al, k=k, n=min(5, na), pr_cutoffs=[na])
  assert_matches(r, ref_evaluate(q, a, ql, al, k, min(5, na), np.array([na])))


@FAST
@given(nq=st.integers(1, 15), na=st.integers(3, 150), f=st.integers(1, 5), k=st.integers(1, 20),
       seed=st.integers(0, 2**16))
def test_evaluate_cosine(nq, na, f, k, seed):
  rng = np.random.default_rng(seed)
  k = min(k, na)
  # Small integer features: tied similarities.
  q = rng.integers(-2, 3, (nq, f)).astype(np.float32)
  a = rng.integers(-2, 3, (na, f)).astype(np.float32)
  ql, al = rng.integers(0, 3, nq), rng.integers(0, 3, na)
  r = protocol.evaluate(q, a, ql, al, k=k, n=k, distance="cosine", pr_step=7)
  cutoffs = list(range(7, na + 1, 7)) + ([na] if na % 7 else [])
  assert_matches(r, ref_evaluate(q, a, ql, al, k, k, np.array(cutoffs), distance="cosine"))
  assert "precision@r2" not in r


def test_evaluate_accepts_every_code_form_and_threads_agree():
  rng = np.random.default_rng(0)
  bits = rng.integers(0, 2, (40, 32)).astype(bool)
  labels = rng.integers(0, 4, 40)
  q, a = bits[:10], bits[10:]
  ql, al = labels[:10], labels[10:]
  want = protocol.evaluate(np.packbits(q, axis=1), np.packbits(a, axis=1), ql, al, k=10, n=5,
                           pr_step=10, threads=1)
  for form in (lambda x: x, lambda x: x.astype(np.int8), lambda x: np.where(x, 1.0, -1.0)):
    assert protocol.evaluate(form(q), form(a), ql, al, k=10, n=5, pr_step=10, threads=2) == want
  # Without "all" the full-ranking positions are skipped: same numbers for the rest.
  light = protocol.evaluate(q, a, ql, al, k=10, n=5, pr_step=10, map_modes=("thesis",))
  assert "map@all" not in light and "map@10/min_k_rel" not in light
  assert all(light[key] == want[key] for key in light)


def test_class_names_label_classwise_entries():
  rng = np.random.default_rng(1)
  q, ql = clustered(rng, 12, 16, 3)
  a, al = clustered(rng, 50, 16, 3)
  r = protocol.evaluate(q, a, ql, al, k=5, n=5, class_names=["Forest", "River", "SeaLake"])
  by_name = sorted(key for key in r if key.startswith("classwise"))
  names = [["Forest", "River", "SeaLake"][c] for c in np.unique(ql)]
  assert by_name == sorted([f"classwise_map@5/{n}" for n in names]
                           + [f"classwise_map@5/tie_aware/{n}" for n in names])


def test_tie_aware_metrics_do_not_depend_on_archive_order():
  # 16-bit codes clustered by class: many ties. The plain class-wise MAP moves
  # when the archive is permuted (ties go to the lower archive position); the
  # tie-aware figures must not.
  rng = np.random.default_rng(3)
  q, ql = clustered(rng, 40, 16, 4, flip=0.35)
  a, al = clustered(rng, 300, 16, 4, flip=0.35)
  by_class = np.argsort(al, kind="stable")
  base = protocol.evaluate(q, a[by_class], ql, al[by_class], k=20, n=5, pr_step=None)
  moved = False
  for seed in range(3):
    perm = np.random.default_rng(seed).permutation(len(al))
    r = protocol.evaluate(q, a[by_class][perm], ql, al[by_class][perm], k=20, n=5,
                          pr_step=None)
    for key in base:
      if "tie_aware" in key:
        assert r[key] == pytest.approx(base[key], rel=1e-9, abs=1e-12), key
      elif key.startswith("classwise"):
        moved |= abs(r[key] - base[key]) > 1e-3
  assert moved, "the test's codes have too few ties to tell the two apart"


def test_identical_codes_give_every_class_the_same_tie_aware_map():
  # All codes equal: one tie group. Stored class-sorted, the plain MAP gives
  # the first class 1.0 and the last 0.0; the expected AP is one number.
  classes, per = 5, 30
  al = np.repeat(np.arange(classes), per)
  ql = np.repeat(np.arange(classes), 3)
  codes = np.zeros((len(al), 2), np.uint8)
  r = protocol.evaluate(codes[:len(ql)], codes, ql, al, k=20, n=5, pr_step=None)
  tie = [r[f"classwise_map@20/tie_aware/{c}"] for c in range(classes)]
  assert tie == pytest.approx([tie[0]] * classes, rel=1e-12)
  # 1 in 5 relevant; thesis AP divides by the hits found, so above 0.2.
  assert 0.2 < tie[0] < 0.4
  assert r["classwise_map@20/0"] == 1.0 and r[f"classwise_map@20/{classes - 1}"] == 0.0


def test_rank_is_the_stable_order():
  rng = np.random.default_rng(2)
  q, _ = clustered(rng, 9, 16, 2)
  a, _ = clustered(rng, 70, 16, 2)
  np.testing.assert_array_equal(metrics.rank(q, a), ref_rankings(q, a, "hamming")[0])
  qf, af = rng.normal(size=(4, 3)), rng.normal(size=(20, 3))
  np.testing.assert_array_equal(metrics.rank(qf, af, "cosine"), ref_rankings(qf, af, "cosine")[0])


# ----------------------------------------------------------------------------- pure functions


@FAST
@given(nq=st.integers(1, 6), m=st.integers(1, 60), k=st.integers(1, 60), n=st.integers(1, 60),
       mode=st.sampled_from(sorted(metrics.MAP_MODES)), seed=st.integers(0, 2**16))
def test_ranked_list_functions(nq, m, k, n, mode, seed):
  rng = np.random.default_rng(seed)
  k, n = min(k, m), min(n, m)
  rel = rng.random((nq, m)) < rng.random()
  n_rel = rel.sum(1)
  np.testing.assert_allclose(metrics.average_precision(rel, k, mode),
                             [ref_ap(r, k, mode, c) for r, c in zip(rel, n_rel)])
  np.testing.assert_allclose(metrics.precision_at(rel, n), rel[:, :n].sum(1) / n)
  np.testing.assert_allclose(metrics.recall_at(rel, n),
                             [r[:n].sum() / c if c else 0 for r, c in zip(rel, n_rel)])
  cutoffs = np.unique(rng.integers(1, m + 1, 4))
  p, r = metrics.pr_curve(rel, cutoffs)
  np.testing.assert_allclose(p, [[x[:c].sum() / c for c in cutoffs] for x in rel])
  np.testing.assert_allclose(r, [[x[:c].sum() / t if t else 0 for c in cutoffs]
                                 for x, t in zip(rel, n_rel)])
  gains = rng.integers(0, 3, (nq, m))
  ideal = -np.sort(-gains, axis=1)
  np.testing.assert_allclose(metrics.acg_at(gains, k), gains[:, :k].mean(1))
  nd = metrics.ndcg_at(gains, k, ideal)
  assert ((nd >= 0) & (nd <= 1 + 1e-12)).all()


# ----------------------------------------------------------------------------- tie-aware


def expected_ap_by_permutations(sizes, rels, k, mode):
  """Averages AP over every order inside every tie group (tiny inputs only)."""
  groups = [[True] * r + [False] * (s - r) for s, r in zip(sizes, rels)]
  perms = [sorted(set(itertools.permutations(g))) for g in groups]
  n_rel = sum(rels)
  values = [ref_ap(list(itertools.chain(*choice)), k, mode, n_rel)
            for choice in itertools.product(*perms)]
  return np.mean(values)


@FAST
@given(groups=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=4),
       k=st.integers(1, 12), mode=st.sampled_from(["thesis", "min_k_rel", "all"]))
def test_tie_aware_ap_equals_average_over_permutations(groups, k, mode):
  sizes = [s for s, _ in groups]
  rels = [min(r, s) for s, r in groups]
  if sum(sizes) == 0:
    return
  k = min(k, sum(sizes))
  got = metrics.tie_aware_average_precision([sizes], [rels], None if mode == "all" else k, mode)
  want = expected_ap_by_permutations(sizes, rels, k, mode)
  np.testing.assert_allclose(got, [want], rtol=1e-9, atol=1e-12)


def test_tie_aware_ap_matches_monte_carlo():
  rng = np.random.default_rng(0)
  sizes, rels, k = [3, 40, 25, 30], [1, 11, 9, 4], 50
  samples = []
  for _ in range(20000):
    ranked = np.concatenate([rng.permutation([1] * r + [0] * (s - r)) for s, r in zip(sizes, rels)])
    samples.append(ref_ap(ranked, k, "thesis", sum(rels)))
  got = metrics.tie_aware_average_precision([sizes], [rels], k, "thesis")[0]
  assert abs(got - np.mean(samples)) < 4 * np.std(samples) / np.sqrt(len(samples))


def test_tie_aware_equals_plain_map_without_ties():
  rng = np.random.default_rng(4)
  q = rng.normal(size=(10, 6))
  a = rng.normal(size=(80, 6))  # continuous features: no ties
  ql, al = rng.integers(0, 3, 10), rng.integers(0, 3, 80)
  r = protocol.evaluate(q, a, ql, al, k=20, n=5, distance="cosine")
  assert r["map@20/tie_aware"] == pytest.approx(r["map@20"], rel=1e-12)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument():
  codes = np.zeros((4, 2), np.uint8)
  lab = np.zeros(4, np.int64)
  with pytest.raises(ValueError, match="`query_codes` have 16 bits but `archive_codes` have 8"):
    protocol.evaluate(codes, codes[:, :1], lab, lab, k=1, n=1)
  with pytest.raises(ValueError, match="`archive_codes`.*multiple of 8"):
    protocol.evaluate(np.ones((4, 8), bool), np.ones((4, 12), bool), lab, lab, k=1, n=1)
  with pytest.raises(TypeError, match="`query_codes`"):
    protocol.evaluate(np.array([["x"] * 8] * 4), codes, lab, lab, k=1, n=1)
  with pytest.raises(ValueError, match="`query_codes`.*distance='cosine'"):
    protocol.evaluate(np.full((4, 8), 0.5), np.ones((4, 8)), lab, lab, k=1, n=1)
  with pytest.raises(ValueError, match="`k`=5 is larger than the archive"):
    protocol.evaluate(codes, codes, lab, lab, k=5, n=1)
  with pytest.raises(ValueError, match="`n`=9 is larger than the archive"):
    protocol.evaluate(codes, codes, lab, lab, k=1, n=9)
  with pytest.raises(ValueError, match="`archive_codes` is empty"):
    protocol.evaluate(codes, codes[:0], lab, lab[:0], k=1, n=1)
  with pytest.raises(ValueError, match="`archive_codes` contains NaN"):
    protocol.evaluate(np.ones((4, 3)), np.full((4, 3), np.nan), lab, lab, k=1, n=1,
                      distance="cosine")
  with pytest.raises(ValueError, match="`query_labels` has 3 rows but there are 4 codes"):
    protocol.evaluate(codes, codes, lab[:3], lab, k=1, n=1)
  with pytest.raises(ValueError, match="`archive_labels`"):
    protocol.evaluate(codes, codes, lab, np.zeros((4, 3)), k=1, n=1)
  with pytest.raises(ValueError, match="multi-hot `query_labels` must hold only 0 and 1"):
    protocol.evaluate(codes, codes, np.full((4, 3), 2), np.zeros((4, 3)), k=1, n=1)
  with pytest.raises(ValueError, match="`query_labels` have 3 classes but `archive_labels` have 2"):
    protocol.evaluate(codes, codes, np.zeros((4, 3)), np.zeros((4, 2)), k=1, n=1)
  with pytest.raises(TypeError, match="`query_labels` must be integer"):
    protocol.evaluate(codes, codes, np.zeros(4), lab, k=1, n=1)
  with pytest.raises(ValueError, match="`map_modes`"):
    protocol.evaluate(codes, codes, lab, lab, k=1, n=1, map_modes=("median",))
  with pytest.raises(ValueError, match="`pr_cutoffs`"):
    protocol.evaluate(codes, codes, lab, lab, k=1, n=1, pr_cutoffs=[3, 2])
  with pytest.raises(ValueError, match="`distance`"):
    protocol.evaluate(codes, codes, lab, lab, k=1, n=1, distance="l2")
  with pytest.raises(ValueError, match="`class_names`"):
    protocol.evaluate(codes, codes, lab + 3, lab + 3, k=1, n=1, class_names=["a"])


# ----------------------------------------------------------------------------- fast paths


def test_many_classes_and_labels_absent_from_the_archive():
  # Over 254 classes: archive ids are int32, not uint8; query labels 900+ are in no
  # archive item (nothing relevant, n_rel = 0).
  rng = np.random.default_rng(5)
  q, _ = clustered(rng, 25, 16, 4)
  a, _ = clustered(rng, 400, 16, 4)
  al = rng.integers(0, 300, 400)
  ql = np.concatenate([al[rng.integers(0, 400, 20)], [900, 901, 902, 903, 904]])
  r = protocol.evaluate(q, a, ql, al, k=30, n=10, pr_step=60)
  assert_matches(r, ref_evaluate(q, a, ql, al, 30, 10, np.r_[np.arange(60, 401, 60), 400]))
  # uint8 ids with an absent label.
  small_al = al % 7
  r = protocol.evaluate(q, a, np.where(ql >= 900, 50, ql % 7), small_al, k=30, n=10, pr_step=60)
  want = ref_evaluate(q, a, np.where(ql >= 900, 50, ql % 7), small_al, 30, 10,
                      np.r_[np.arange(60, 401, 60), 400])
  assert_matches(r, want)


def test_ranks_within_and_prefix_count_match_the_ranking():
  rng = np.random.default_rng(6)
  for distance in ("hamming", "cosine"):
    if distance == "hamming":
      scores = rng.integers(0, 6, (9, 50)).astype(np.uint8)
    else:
      scores = rng.integers(-3, 4, (9, 50)).astype(np.float32) / 4
    order = ranking.order(scores, distance)
    ranked = np.take_along_axis(scores, order, 1)
    top = ranked[:, :7]
    for value in (top[:, -1], top[:, 2], np.full(9, ranked.max() if distance == "hamming"
                                                  else ranked.min())):
      value = value.astype(scores.dtype)
      got = protocol._ranks_within(scores, top, value, distance)
      inside = ranked <= value[:, None] if distance == "hamming" else ranked >= value[:, None]
      np.testing.assert_array_equal(got, inside.sum(1))
  rel = rng.random((9, 50)) < 0.4
  c = rng.integers(0, 51, 9)
  np.testing.assert_array_equal(protocol._prefix_count(rel, c),
                                [r[:ci].sum() for r, ci in zip(rel, c)])


def test_sum_precision_all_is_the_sequential_sum():
  rng = np.random.default_rng(7)
  rel = rng.random((6, 300)) < 0.2
  rel[2] = False
  want = []
  for row in rel:
    total, hits = 0.0, 0
    for j in np.flatnonzero(row):
      hits += 1
      total += hits / (j + 1)
    want.append(total)
  assert metrics.sum_precision_all(rel).tolist() == want
