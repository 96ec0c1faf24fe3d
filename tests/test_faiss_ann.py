"""rsh.search.approx (FAISS IVF / HNSW, recall@k) against exact search and loop references."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rsh import search
from rsh.search import approx

faiss = pytest.importorskip("faiss")

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "faiss_ann.py"


def clustered(n, centres, flip=0.1, seed=0):
  """uint8[n, 8]: 64-bit codes, rows of `centres` with each bit flipped w.p. `flip`."""
  rng = np.random.default_rng(seed)
  noise = np.packbits(rng.random((n, 64)) < flip, axis=1)
  return centres[rng.integers(0, len(centres), n)] ^ noise


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
  """Tiny indexes gain nothing from OpenMP, and its spinning threads crawl on a busy machine."""
  before = faiss.omp_get_max_threads()
  faiss.omp_set_num_threads(1)
  yield
  faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data():
  centres = np.random.default_rng(99).integers(0, 256, (30, 8), dtype=np.uint8)
  return clustered(4000, centres, seed=1), clustered(40, centres, seed=2)


def brute_distances(q, db):
  return (np.unpackbits(q, axis=1)[:, None, :] != np.unpackbits(db, axis=1)[None]).sum(-1)


# ----------------------------------------------------------------------------- loop references


def loop_recall(approx_idx, exact_idx):
  return np.mean([len(set(a) & set(e)) / len(e)
                  for a, e in zip(approx_idx.tolist(), exact_idx.tolist())])


def loop_distance_recall(approx_dist, exact_dist):
  return np.mean([sum(d <= max(e) for d in a) / len(a)
                  for a, e in zip(approx_dist.tolist(), exact_dist.tolist())])


@settings(max_examples=60, deadline=None)
@given(nq=st.integers(1, 12), k=st.integers(1, 9), span=st.integers(1, 30),
       seed=st.integers(0, 2**16))
def test_recalls_equal_the_loop_references(nq, k, span, seed):
  rng = np.random.default_rng(seed)
  n = k + span  # few ids: approximate and exact rows overlap often
  exact_idx = np.stack([rng.permutation(n)[:k] for _ in range(nq)])
  approx_idx = np.stack([rng.permutation(n)[:k] for _ in range(nq)])
  approx_idx[rng.random((nq, k)) < 0.2] = -1  # missing results
  exact_dist = np.sort(rng.integers(0, 4, (nq, k)), axis=1)  # 4 values: many ties
  approx_dist = rng.integers(0, 5, (nq, k))
  approx_dist[approx_idx < 0] = approx.MISSING_DISTANCE
  assert approx.recall_at_k(approx_idx, exact_idx) == pytest.approx(
      loop_recall(approx_idx, exact_idx))
  assert approx.distance_recall_at_k(approx_dist, exact_dist) == pytest.approx(
      loop_distance_recall(approx_dist, exact_dist))


def test_recalls_on_a_tie_by_hand():
  # Exact keeps ids 5, 6, 7 at distances 1, 2, 2; id 8 is also at distance 2.
  exact_idx, exact_dist = np.array([[5, 6, 7]]), np.array([[1, 2, 2]])
  approx_idx, approx_dist = np.array([[5, 8, 7]]), np.array([[1, 2, 2]])
  assert approx.recall_at_k(approx_idx, exact_idx) == pytest.approx(2 / 3)
  assert approx.distance_recall_at_k(approx_dist, exact_dist) == 1.0
  # A missing slot counts as a miss in both; a farther code in the distance recall.
  assert approx.recall_at_k(np.array([[5, -1, 9]]), exact_idx) == pytest.approx(1 / 3)
  assert approx.distance_recall_at_k(np.array([[1, approx.MISSING_DISTANCE, 3]]),
                                     exact_dist) == pytest.approx(1 / 3)
  # Ids of one row never match another row's (the row keying of the fast version).
  assert approx.recall_at_k(np.array([[0], [1]]), np.array([[1], [0]])) == 0.0


# ----------------------------------------------------------------------------- IVF


def test_ivf_probing_every_list_gives_exact_distances(data):
  db, q = data
  k = 30
  index = approx.to_faiss_ivf(db, nlist=16)
  assert isinstance(index, faiss.IndexBinaryIVF) and (index.nlist, index.ntotal) == (16, 4000)
  d, i = approx.approx_search(index, q, k, nprobe=16)
  assert index.nprobe == 1  # the knob applied to the call only
  ed, ei = search.search(q, db, k)
  np.testing.assert_array_equal(d, ed)
  true = brute_distances(q, db)
  np.testing.assert_array_equal(np.take_along_axis(true, i, 1), d)  # reported = true distance
  assert all(len(set(row)) == k for row in i.tolist())
  # Only the codes tied at the k-th distance may differ from the exact ids.
  kth = ed[:, -1:]
  for row_i, row_e, row_ed, t in zip(i, ei, ed, kth[:, 0]):
    assert set(row_i[row_ed < t]) == set(row_e[row_ed < t])
  assert ((true <= kth).sum(1) > k).any()  # the data do have ties past the k-th place
  assert approx.distance_recall_at_k(d, ed) == 1.0
  assert approx.recall_at_k(i, ei) <= 1.0


def test_ivf_defaults_are_seeded_and_few_probes_can_miss(data):
  db, q = data
  assert approx.default_nlist(10**7) == 12649
  assert approx.default_nlist(4000) == 102 and approx.default_nlist(1000) == 25
  assert approx.default_nlist(10) == 1
  # 50 lists train on a seeded sample of 2000 codes: the same seed, the same index.
  a = approx.to_faiss_ivf(db, nlist=50, seed=3)
  b = approx.to_faiss_ivf(db, nlist=50, seed=3)
  np.testing.assert_array_equal(approx.approx_search(a, q, 10, nprobe=2)[1],
                                approx.approx_search(b, q, 10, nprobe=2)[1])
  c = approx.to_faiss_ivf(db)
  assert c.nlist == approx.default_nlist(4000)
  assert faiss.downcast_IndexBinary(c.quantizer).query_batch_size == approx.ADD_BATCH
  # One probe of 102 lists holds ~40 codes: k=200 leaves slots empty.
  d, i = approx.approx_search(c, q, 200, nprobe=1)
  assert (i == -1).any()
  assert (d[i == -1] == approx.MISSING_DISTANCE).all()
  assert approx.distance_recall_at_k(d, search.search(q, db, 200)[0]) < 1.0


# ----------------------------------------------------------------------------- HNSW


def test_hnsw_finds_high_recall_on_clustered_codes(data):
  db, q = data
  index = approx.to_faiss_hnsw(db, m=16)
  assert isinstance(index, faiss.IndexBinaryHNSW) and index.ntotal == 4000
  ed, ei = search.search(q, db, 10)
  d, i = approx.approx_search(index, q, 10, ef_search=64)
  np.testing.assert_array_equal(np.take_along_axis(brute_distances(q, db), i, 1), d)
  assert approx.distance_recall_at_k(d, ed) >= 0.95
  assert approx.recall_at_k(i, ei) <= approx.distance_recall_at_k(d, ed)
  # The flat index takes no knob and is exact.
  fd, _ = approx.approx_search(search.to_faiss(db), q, 10)
  np.testing.assert_array_equal(fd, ed)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument(data):
  db, q = data
  small = db[:200]
  ivf, hnsw = approx.to_faiss_ivf(small, nlist=4), approx.to_faiss_hnsw(small, m=4)
  with pytest.raises(ValueError, match="`nprobe` is a knob of IndexBinaryIVF"):
    approx.approx_search(hnsw, q, 5, nprobe=4)
  with pytest.raises(ValueError, match="`ef_search` is a knob of IndexBinaryHNSW"):
    approx.approx_search(ivf, q, 5, ef_search=4)
  with pytest.raises(ValueError, match="`nprobe` is a knob"):
    approx.approx_search(search.to_faiss(small), q, 5, nprobe=1)
  with pytest.raises(ValueError, match=r"`nprobe`=5 is larger than the index's nlist \(4\)"):
    approx.approx_search(ivf, q, 5, nprobe=5)
  with pytest.raises(ValueError, match="`ef_search` must be an int >= 1"):
    approx.approx_search(hnsw, q, 5, ef_search=0)
  with pytest.raises(ValueError, match=r"`k`=201 is larger than the number of codes"):
    approx.approx_search(ivf, q, 201)
  with pytest.raises(ValueError, match="`q` has 32-bit codes but `index` has 64-bit"):
    approx.approx_search(ivf, q[:, :4], 5)
  with pytest.raises(TypeError, match="`q` must be packed codes"):
    approx.approx_search(ivf, q.astype(np.int64), 5)
  with pytest.raises(TypeError, match="`index` must be a faiss binary index"):
    approx.approx_search(faiss.IndexFlatL2(8), q, 5)
  with pytest.raises(ValueError, match="`index` is empty"):
    approx.approx_search(faiss.IndexBinaryFlat(64), q, 1)
  for nlist, err in ((0, ValueError), (201, ValueError), (2.0, TypeError)):
    with pytest.raises(err, match="`nlist`"):
      approx.to_faiss_ivf(small, nlist=nlist)
  with pytest.raises(ValueError, match="`train_size` must be an int in 8..200"):
    approx.to_faiss_ivf(small, nlist=8, train_size=4)
  for build in (approx.to_faiss_ivf, approx.to_faiss_hnsw):
    with pytest.raises(ValueError, match="`codes` is empty"):
      build(np.zeros((0, 8), np.uint8))
    with pytest.raises(TypeError, match="`codes` must be packed codes"):
      build(small.astype(np.float32))
  with pytest.raises(ValueError, match="`m` must be an int >= 2"):
    approx.to_faiss_hnsw(small, m=1)
  with pytest.raises(ValueError, match="`approx_idx` has shape"):
    approx.recall_at_k(np.zeros((2, 3), int), np.zeros((2, 4), int))
  with pytest.raises(TypeError, match="`approx_dist` must be an integer array"):
    approx.distance_recall_at_k(np.zeros((2, 3)), np.zeros((2, 3), int))
  with pytest.raises(ValueError, match="`exact_idx` must be 2-D"):
    approx.recall_at_k(np.zeros((1, 3), int), np.zeros((0, 3), int))
  with pytest.raises(ValueError, match="`exact_idx` holds negative ids"):
    approx.recall_at_k(np.zeros((1, 2), int), np.array([[0, -1]]))


# ----------------------------------------------------------------------------- the benchmark


def test_benchmark_tiny_run_prints_a_table_and_exact_full_probe():
  done = subprocess.run(
      [sys.executable, str(SCRIPT), "--n=3000", "--queries=20", "--k=10", "--centres=20",
       "--nlist=8", "--nprobe=1,8,64", "--ef_search=16,64", "--hnsw_max=2000", "--threads=1",
       "--repeats=1"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = done.stdout.strip().splitlines()
  out = json.loads(lines[-1])
  assert out["benchmark"] == "faiss_ann" and out["n"] == 3000 and out["nlist"] == 8
  assert any(line.startswith("| index |") for line in lines)
  assert "first 2e+03 codes only" in done.stdout
  assert [r["nprobe"] for r in out["ivf"]] == [1, 8]  # 64 > nlist is skipped
  assert out["ivf"][-1]["distance_recall"] == 1.0  # every list probed: exact distances
  assert out["flat_same_distances"] is True
  assert out["hnsw_n"] == 2000 and [r["ef_search"] for r in out["hnsw"]] == [16, 64]
  for r in out["ivf"] + out["hnsw"]:
    assert 0 <= r["recall"] <= r["distance_recall"] <= 1 and r["qps"] > 0
