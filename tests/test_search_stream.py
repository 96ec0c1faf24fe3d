"""rsh.search.stream_search against numpy brute force and the in-memory `search`."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from rsh import distributed
from rsh import search
from rsh.search import codefile
from rsh.search import stream

REPO = pathlib.Path(__file__).resolve().parents[1]


def brute_search(q, db, k):
  """(int64[nq, k], int64[nq, k]): every distance by unpacking bits, stable argsort."""
  d = np.unpackbits(q[:, None, :] ^ db[None, :, :], axis=-1).sum(-1).astype(np.int64)
  order = np.argsort(d, axis=1, kind="stable")[:, :k]  # ties by archive index
  return np.take_along_axis(d, order, 1), order


def codes(rng, n, nbytes, tied=False):
  """Uniform random codes, or codes from 3 byte values with duplicated rows (many ties)."""
  if not tied:
    return rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
  base = rng.integers(0, 3, (max(1, n // 4), nbytes), dtype=np.uint8)
  return base[rng.integers(0, len(base), n)]


def check_equal(q, db, k, **kwargs):
  d, i = search.stream_search(q, db, k, progress=False, **kwargs)
  bd, bi = brute_search(q, np.asarray(db), k)
  sd, si = search.search(q, np.asarray(db), k)
  assert d.dtype == np.int32 and i.dtype == np.int64 and d.shape == i.shape == (len(q), k)
  np.testing.assert_array_equal(d, bd)
  np.testing.assert_array_equal(i, bi)
  np.testing.assert_array_equal(d, sd)
  np.testing.assert_array_equal(i, si)


@pytest.mark.parametrize("bits", [8, 24, 64, 128])
@pytest.mark.parametrize("tied", [False, True])
def test_equals_brute_force_and_search(bits, tied):
  rng = np.random.default_rng(bits + tied)
  db = codes(rng, 1500, bits // 8, tied)
  q = codes(rng, 9, bits // 8, tied)
  check_equal(q, db, 10, chunk=333)   # chunks that do not divide n (1500 = 4 x 333 + 168)
  check_equal(q, db, 500, chunk=128)  # k larger than a chunk
  check_equal(q[:1], db, 7, chunk=1000)  # one query


def test_k_equals_n_and_single_code_chunks():
  rng = np.random.default_rng(3)
  db = codes(rng, 61, 2, tied=True)
  q = codes(rng, 4, 2, tied=True)
  check_equal(q, db, 61, chunk=7)
  check_equal(q, db, 5, chunk=1)


def test_large_archive_crosses_search_blocks():
  """Chunks of whole and partial `hamming.ARCHIVE_BLOCK`s (pruned by group minima)."""
  rng = np.random.default_rng(4)
  db = codes(rng, (1 << 20) + 5000, 8, tied=True)
  q = codes(rng, 3, 8, tied=True)
  d, i = search.stream_search(q, db, 20, chunk=(1 << 19) + 3, progress=False)
  sd, si = search.search(q, db, 20)
  np.testing.assert_array_equal(d, sd)
  np.testing.assert_array_equal(i, si)


def test_code_file_memmap_path_and_ids(tmp_path):
  rng = np.random.default_rng(5)
  db = codes(rng, 2000, 8, tied=True)
  ids = rng.integers(0, 2**40, 2000)  # ids beyond int32
  with codefile.create(tmp_path / "a.rsh", 2000, 64) as w:
    w.append(db[:1200], ids[:1200])
    w.append(db[1200:], ids[1200:])
  cf = codefile.open_codes(tmp_path / "a.rsh")
  q = codes(rng, 6, 8, tied=True)
  bd, bi = brute_search(q, db, 50)
  for archive in (cf, cf.codes, tmp_path / "a.rsh", str(tmp_path / "a.rsh")):
    d, i = search.stream_search(q, archive, 50, chunk=301, progress=False)
    np.testing.assert_array_equal(d, bd)
    np.testing.assert_array_equal(i, bi)
  d, i = search.stream_search(q, cf, 50, chunk=301, progress=False, ids=True)
  np.testing.assert_array_equal(i, ids[bi])
  d, i = search.stream_search(q, db, 50, chunk=301, progress=False, ids=ids)
  np.testing.assert_array_equal(i, ids[bi])


def _rss_file_mb():
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith("RssFile")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux /proc only")
def test_scanned_pages_leave_the_process_and_cow_maps_are_kept(tmp_path):
  """A read-only memmap's scanned pages are dropped from RSS (else 10^9 codes = 8 GB
  resident); a copy-on-write map's private edits survive (no MADV_DONTNEED there)."""
  rng = np.random.default_rng(6)
  n = 1 << 22  # 32 MB of 64-bit codes
  path = tmp_path / "c.npy"
  np.save(path, rng.integers(0, 256, (n, 8), dtype=np.uint8))
  q = codes(rng, 2, 8)
  mm = np.load(path, mmap_mode="r")
  search.stream_search(q, np.array(mm[:1 << 20]), 5, progress=False)  # compiled, not measured
  before = _rss_file_mb()
  search.stream_search(q, mm, 5, chunk=1 << 20, progress=False)
  assert _rss_file_mb() - before < 12, "the scanned archive stayed resident"
  cow = np.load(path, mmap_mode="c")
  cow[123] = q[0]  # a private page: dropping it would bring the file's bytes back
  d, i = search.stream_search(q, cow, 1, chunk=1 << 20, progress=False)
  assert d[0, 0] == 0 and i[0, 0] == 123
  np.testing.assert_array_equal(cow[123], q[0])


def test_default_chunk_and_progress_bar(capsys):
  assert stream._default_chunk(8) == 1 << 24  # 2^27 bytes of 64-bit codes
  assert stream._default_chunk(16) == 1 << 23
  assert stream._default_chunk(1024) == 1 << 17  # 8,192-bit codes: under one block
  rng = np.random.default_rng(11)
  db = codes(rng, 300, 8)
  search.stream_search(codes(rng, 2, 8), db, 3, chunk=100, progress=True)
  assert "3/3" in capsys.readouterr().err
  search.stream_search(codes(rng, 2, 8), db, 3, chunk=100)  # not a terminal: no bar
  assert "3/3" not in capsys.readouterr().err


def test_mesh_goes_through_sharded_search():
  from jax.sharding import Mesh
  rng = np.random.default_rng(7)
  db = codes(rng, 900, 8, tied=True)
  q = codes(rng, 5, 8, tied=True)
  check_equal(q, db, 40, chunk=512, mesh=Mesh(np.array(jax.local_devices()[:1]), ("archive",)))


# ----------------------------------------------------------------------------- processes


def _process_lists(q, db, k, procs):
  """What each of `procs` processes holds before the gather: the top-min(k, share) of
  its row share, padded to k with index -1 (and distance 0: padding must lose anyway)."""
  d_all, i_all = [], []
  for p in range(procs):
    lo, hi = distributed.row_share(len(db), p, procs)
    d = np.zeros((len(q), k), np.int64)
    i = np.full((len(q), k), -1, np.int64)
    if hi > lo:
      bd, bi = brute_search(q, db[lo:hi], min(k, hi - lo))
      d[:, :bd.shape[1]], i[:, :bd.shape[1]] = bd, bi + lo
    d_all.append(d)
    i_all.append(i)
  return np.stack(d_all), np.stack(i_all)


@pytest.mark.parametrize("procs", [1, 2, 3, 7])
def test_merge_topk_of_process_lists_equals_brute_force(procs):
  rng = np.random.default_rng(procs)
  db = codes(rng, 20, 1, tied=True)  # 7 processes of 3 rows: the last has none
  q = codes(rng, 5, 1, tied=True)
  bd, bi = brute_search(q, db, 8)
  d, i = search.merge_topk(*_process_lists(q, db, 8, procs), 8)
  np.testing.assert_array_equal(d, bd)
  np.testing.assert_array_equal(i, bi)
  # The order of the lists does not matter: the merge is by (distance, global index).
  ds, is_ = _process_lists(q, db, 8, procs)
  d, i = search.merge_topk(ds[::-1], is_[::-1], 8)
  np.testing.assert_array_equal(i, bi)


def test_merge_topk_refuses_bad_lists():
  d = np.zeros((2, 3), np.int64)
  with pytest.raises(ValueError, match="one shape"):
    search.merge_topk(d, np.zeros((2, 4), np.int64), 2)
  with pytest.raises(ValueError, match="fewer than k"):
    search.merge_topk(d, np.array([[0, 1, -1], [0, -1, -1]]), 2)


@pytest.mark.parametrize("procs", [3, 5])
def test_processes_share_chunks_and_gather(monkeypatch, procs):
  """stream_search as each process would run it (its row share of the 7 chunks; with 5
  processes the last has none), then the gather (int64 indices through int32 halves)
  and the merge, as the last process sees them."""
  rng = np.random.default_rng(8)
  db = codes(rng, 1000, 8, tied=True)
  q = codes(rng, 4, 8, tied=True)
  sent, share = [], distributed.row_share
  monkeypatch.setattr(distributed, "process_count", lambda: procs)

  def fake_gather(x, n):
    assert n == procs and x.shape[0] == 1 and x.dtype == np.int32
    sent.append(x)
    return np.concatenate(sent) if len(sent) == procs else np.concatenate(sent * procs)[:procs]

  monkeypatch.setattr(distributed, "gather_rows", fake_gather)
  for p in range(procs):
    monkeypatch.setattr(distributed, "row_share",
                        lambda n, p=p: share(n, p, procs))
    d, i = search.stream_search(q, db, 30, chunk=150, progress=False)
  bd, bi = brute_search(q, db, 30)
  np.testing.assert_array_equal(d, bd)  # the last process saw every list
  np.testing.assert_array_equal(i, bi)


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_are_refused(tmp_path):
  rng = np.random.default_rng(9)
  db = codes(rng, 50, 8)
  q = codes(rng, 2, 8)
  with pytest.raises(ValueError, match="larger than the archive"):
    search.stream_search(q, db, 51)
  with pytest.raises(ValueError, match=">= 1"):
    search.stream_search(q, db, 0)
  with pytest.raises(ValueError, match="64-bit codes but `codes` has 32-bit"):
    search.stream_search(q, db[:, :4], 3)
  for chunk, err in ((0, ValueError), (-5, ValueError), (2.5, TypeError), (True, TypeError),
                     (2**31, ValueError)):
    with pytest.raises(err, match="chunk"):
      search.stream_search(q, db, 3, chunk=chunk)
  with pytest.raises(TypeError, match="uint8"):
    search.stream_search(q, db.astype(np.int64), 3)
  with pytest.raises(ValueError, match="2-D"):
    search.stream_search(q, db.ravel(), 3)
  with pytest.raises(ValueError, match="empty"):
    search.stream_search(q, db[:0], 1)
  with pytest.raises(TypeError, match="not a code file"):
    search.stream_search(q, db, 3, ids=True)
  with pytest.raises(ValueError, match="int\\[50\\]"):
    search.stream_search(q, db, 3, ids=np.arange(49))
  with pytest.raises(FileNotFoundError, match="not a code file"):
    search.stream_search(q, tmp_path / "missing.rsh", 3)
  w = codefile.create(tmp_path / "half.rsh", 50, 64)
  w.append(db[:20])
  w.flush()
  with pytest.raises(ValueError, match="unfinished"):
    search.stream_search(q, tmp_path / "half.rsh", 3)
  from jax.sharding import Mesh
  with pytest.raises(ValueError, match="'archive'"):
    search.stream_search(q, db, 3, mesh=Mesh(np.array(jax.local_devices()[:1]), ("x",)))


# ----------------------------------------------------------------------------- benchmark


def test_benchmark_streamed_mode_equals_brute_force(tmp_path):
  path = tmp_path / "bench.rsh"
  argv = [sys.executable, str(REPO / "benchmarks" / "hamming.py"), f"--archive_memmap={path}",
          "--sizes=30000", "--bits=64", "--queries=16", "--k=10", "--repeats=1",
          "--chunk=4096", "--check_queries=5", "--threads=1"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["benchmark"] == "hamming_stream"
  (row,) = result["results"]
  assert row["archive"] == 30000 and row["checked_queries"] == 5
  assert row["brute_equal"] is True and row["inmemory_equal"] is True
  assert row["rsh_peak_rss_mb"] > 0 and row["rsh_codes_per_s"] > 0
  if "faiss_s" in row:
    assert row["faiss_same_distances"] is True
  assert len(codefile.open_codes(path)) == 30000


_WORKER = """
import sys
import numpy as np
from rsh import distributed
distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
from rsh import search
rng = np.random.default_rng(10)
db = rng.integers(0, 3, (2500, 8), dtype=np.uint8)
q = rng.integers(0, 3, (6, 8), dtype=np.uint8)
d, i = search.stream_search(q, db, 40, chunk=300, progress=False)  # 9 chunks: 5 and 4
np.savez(sys.argv[3], d=d, i=i)
"""


@pytest.mark.slow
def test_two_real_processes_equal_one(tmp_path):
  """Two processes joined by jax.distributed (gloo), each scanning its chunks."""
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1",
             JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", XLA_FLAGS="")
  procs = [subprocess.Popen([sys.executable, "-c", _WORKER, f"127.0.0.1:{port}", str(p),
                             str(tmp_path / f"out{p}.npz")], cwd=REPO, env=env,
                            stderr=subprocess.PIPE, text=True) for p in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
  rng = np.random.default_rng(10)
  db = rng.integers(0, 3, (2500, 8), dtype=np.uint8)
  q = rng.integers(0, 3, (6, 8), dtype=np.uint8)
  bd, bi = brute_search(q, db, 40)
  for p in range(2):
    out = np.load(tmp_path / f"out{p}.npz")
    np.testing.assert_array_equal(out["d"], bd)
    np.testing.assert_array_equal(out["i"], bi)
