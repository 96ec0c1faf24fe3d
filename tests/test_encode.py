"""Codes written as they are made: `rsh.update.stream_codes` and `python -m rsh.encode`.

One toy run (tests/test_core.py's linear hash, an `in_batches` encoder; 2 steps) is
encoded by every test here; `rsh.encode` is reached only through `run_cli` (its absl
flags are registered one command line at a time, see conftest)."""

import json
import pathlib
import weakref

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rsh import evaluators as revals
from rsh import hamming
from rsh import restore
from rsh import runs
from rsh import update
from rsh.search import codefile
from tests import test_core
from tests.conftest import one_error_line

BITS, BLOCK = 16, 64  # BLOCK: the toy encoder's own chunk, so blocks keep its chunks


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
  """A finished 2-step run of the toy method (120 demo images), no evaluators (no figures:
  the retrieval evaluator is run below on the restored run)."""
  scope = {}
  exec(test_core.CONFIG, scope)  # noqa: S102 -- the test's own config text
  config = scope["get_config"]()
  with config.unlocked():
    config.evals = ml_collections.ConfigDict()
    config.train.num_steps = config.train.eval_every = config.train.checkpoint_every = 2
  workdir = tmp_path_factory.mktemp("toy")
  runs.run(config, workdir)
  return restore.load_run(workdir)


def encode_cli(run_cli, toy, out, *args):
  return run_cli(f"--workdir={toy.workdir}", f"--out={out}", f"--batch_size={BLOCK}", *args,
                 module="rsh.encode")


def whole(toy, set_name):
  """The codes of a set by the whole-set path: every float output, then packed."""
  return hamming.pack_codes(restore.encode(toy, set_name)["hash"] >= 0)


# ----------------------------------------------------------------------------- stream_codes


def test_stream_codes_packs_each_block_and_holds_one_block_of_floats():
  rng = np.random.default_rng(0)
  rows, w = rng.normal(size=(150, 5)).astype(np.float32), rng.normal(size=(5, 24))
  calls, alive = [], []

  def fn(x):
    calls.append(x.shape)
    # When a block is encoded, no earlier block's outputs may still be held.
    assert not [r for r in alive if r() is not None], len(calls)
    out = {"hash": np.asarray(x @ w, np.float32), "feature": np.asarray(x * 2)}
    alive.extend(weakref.ref(v) for v in out.values())
    return out

  plain = lambda x: {"hash": np.asarray(x @ w, np.float32)}  # for in_batches, which keeps all

  sink, seen = [], []
  done = update.stream_codes(fn, rows, "hash", sink, 64, check=lambda o: seen.append(sorted(o)))
  assert done == 150 and calls == [(64, 5)] * 3    # padded to one shape
  assert seen == [["feature", "hash"]]             # the first block only
  assert [(c.dtype, c.shape) for c in sink] == [(np.uint8, (64, 3))] * 2 + [(np.uint8, (22, 3))]
  expect = hamming.pack_codes(update.in_batches(plain, rows, 64)["hash"] >= 0)
  np.testing.assert_array_equal(np.concatenate(sink), expect)
  np.testing.assert_array_equal(expect, np.packbits(rows @ w.astype(np.float32) >= 0, axis=1))

  # From a row on, unpadded, with ids: the sink is told which rows each block holds.
  class Sink(list):
    def append(self, codes, ids):
      super().append((codes, ids))

  calls.clear()
  sink, ids = Sink(), np.arange(150) * 10
  assert update.stream_codes(fn, rows, "hash", sink, 64, pad=False, start=100, ids=ids) == 50
  assert calls == [(50, 5)]
  np.testing.assert_array_equal(sink[0][0], expect[100:])
  np.testing.assert_array_equal(sink[0][1], ids[100:])
  with pytest.raises(ValueError, match="no output 'code'.*feature"):
    update.stream_codes(fn, rows, "code", [], 64)


def test_in_batches_is_unchanged_on_a_jitted_encoder():
  x = np.random.default_rng(1).normal(size=(70, 8)).astype(np.float32)
  fn = jax.jit(lambda x: {"h": x[:, :4] * 2, "n": x[:, 0] + 1})
  out = update.in_batches(fn, x, 32)
  assert {k: v.shape for k, v in out.items()} == {"h": (70, 4), "n": (70,)}
  np.testing.assert_array_equal(out["h"], x[:, :4] * 2)
  np.testing.assert_array_equal(out["n"], x[:, 0] + 1)


def test_the_retrieval_evaluator_streams_codes_and_scores_as_before(toy, monkeypatch):
  from rsh import plots
  monkeypatch.setattr(update, "ENCODE_BLOCK", BLOCK)  # the archive in two blocks
  ctx = revals.Context(config=toy.config, data=toy.data, encode=toy.method.encode, ssm=None)
  ev, = revals.build({"retrieval": dict(type="retrieval", codes="hash")}, ctx).values()
  got = ev.run(toy.state, final=True)
  q, a, _ = ev.last  # packed codes are what it keeps, not floats
  assert q.dtype == a.dtype == np.uint8 and a.shape == (len(toy.data.indices("archive")), 2)
  np.testing.assert_array_equal(a, whole(toy, "archive"))
  data = toy.data
  expect = revals.protocol(ev, whole(toy, "query"), whole(toy, "archive"),
                           data.labels[data.indices("query")],
                           data.labels[data.indices("archive")], final=True)
  assert got == {**{f"binary/{k}": v for k, v in expect.items()}, **expect}
  drawn = {}  # the figures are drawn from the codes alone: ±1 rows that pack back to them
  monkeypatch.setattr(plots, "pr_curve", lambda *a: None)
  monkeypatch.setattr(plots, "retrievals", lambda d, q, a, *r, **kw: drawn.update(q=q, a=a, **kw))
  ev.figures(pathlib.Path(toy.workdir))
  assert drawn["binary"] and drawn["a"].shape == (len(a), BITS)
  np.testing.assert_array_equal(hamming.pack_codes(drawn["a"] >= 0), a)
  np.testing.assert_array_equal(hamming.pack_codes(drawn["q"] >= 0), q)
  with pytest.raises(ValueError, match="query encoder has no output 'code'.*hash"):
    revals.build({"r": dict(type="retrieval", codes="code")}, ctx)["r"].run(toy.state, True)


# ----------------------------------------------------------------------------- rsh.encode


@pytest.mark.parametrize("set_name", ["archive", "all"])
def test_the_code_file_is_the_whole_set_encoding(toy, tmp_path, run_cli, set_name):
  out = encode_cli(run_cli, toy, tmp_path / "c.rsh", f"--set={set_name}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "encoded" in out.stdout and "rows/s" in out.stdout
  f = codefile.open_codes(tmp_path / "c.rsh")
  data = toy.data
  if set_name == "all":  # every row of the prepared data, by the toy's in_batches
    ids = np.arange(len(data.labels))
    codes = hamming.pack_codes(toy.method.encode(toy.state, data.view("pixels"))["hash"] >= 0)
  else:
    ids, codes = data.indices("archive"), whole(toy, "archive")
  assert len(ids) > BLOCK  # more than one block
  assert f.codes.dtype == np.uint8 and f.bits == BITS
  np.testing.assert_array_equal(f.codes, codes)
  np.testing.assert_array_equal(f.ids, ids)
  fp = json.loads((toy.workdir / "data.json").read_text())
  assert f.meta == dict(workdir=str(pathlib.Path(toy.workdir).resolve()), step=2, config="toy",
                        method="tests.test_core:build", set=set_name, view="pixels",
                        output="hash", bits=BITS, data_digest=fp["digest"])


def test_a_killed_encoding_resumes_to_the_same_file(toy, tmp_path, run_cli, monkeypatch):
  assert encode_cli(run_cli, toy, tmp_path / "whole.rsh", "--set=all").returncode == 0
  append = codefile.CodeWriter.append

  def dies_after_one_block(self, codes, ids=None):
    if self.written:  # killed: nothing is written any more, not even on the way out
      monkeypatch.setattr(codefile.CodeWriter, "flush", lambda self: None)
      raise RuntimeError("killed")
    append(self, codes, ids)

  monkeypatch.setattr(codefile.CodeWriter, "append", dies_after_one_block)
  out = encode_cli(run_cli, toy, tmp_path / "c.rsh", "--set=all")
  assert out.returncode == 1 and "killed" in out.stderr
  header = json.loads((tmp_path / "c.rsh" / "header.json").read_text())
  assert (header["written"], header["count"]) == (BLOCK, 120)  # the first block is on disk
  monkeypatch.undo()
  out = encode_cli(run_cli, toy, tmp_path / "c.rsh", "--set=all")
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"encoded {120 - BLOCK} rows" in out.stdout and f"resumed at row {BLOCK}" in out.stdout
  a, b = codefile.open_codes(tmp_path / "c.rsh"), codefile.open_codes(tmp_path / "whole.rsh")
  np.testing.assert_array_equal(a.codes, b.codes)
  np.testing.assert_array_equal(a.ids, b.ids)
  assert a.meta == b.meta
  out = encode_cli(run_cli, toy, tmp_path / "c.rsh", "--set=all")  # finished: left as it is
  assert out.returncode == 0 and "already complete" in out.stdout


def test_another_encoding_is_refused_unless_overwrite(toy, tmp_path, run_cli):
  assert encode_cli(run_cli, toy, tmp_path / "c.rsh", "--set=archive").returncode == 0
  one_error_line(encode_cli(run_cli, toy, tmp_path / "c.rsh", "--set=query"),
                 "holds another encoding", "set 'archive' (now 'query')", "--overwrite")
  out = encode_cli(run_cli, toy, tmp_path / "c.rsh", "--set=query", "--overwrite")
  assert out.returncode == 0, out.stderr[-3000:]
  f = codefile.open_codes(tmp_path / "c.rsh")
  assert f.meta["set"] == "query"
  np.testing.assert_array_equal(f.codes, whole(toy, "query"))


def test_bad_arguments_are_one_error_line(toy, tmp_path, run_cli):
  bare = tmp_path / "bare"  # a workdir without a checkpoint
  bare.mkdir()
  (bare / "config.json").write_text((toy.workdir / "config.json").read_text())
  (tmp_path / "taken").write_text("not codes")
  out = lambda *a, workdir=toy.workdir, to="c.rsh": run_cli(
      f"--workdir={workdir}", f"--out={tmp_path / to}", *a, module="rsh.encode")
  one_error_line(out(workdir=tmp_path / "nowhere"), "--workdir", "no such directory")
  one_error_line(out(workdir=bare), "no checkpoint")
  one_error_line(out("--set=nope"), "--set=nope", "unknown image set", "archive")
  one_error_line(out("--view=s1"), "--view=s1", "unknown data view")
  one_error_line(out("--view=efficientnet_lite0"), "--view=")
  one_error_line(out("--output=code"), "--output=code", "hash")
  one_error_line(out(to="taken"), "taken", "not a code file", "--overwrite")
  one_error_line(out("--batch_size=0"), "batch_size")
  one_error_line(run_cli(f"--workdir={toy.workdir}", module="rsh.encode"), "--out is required")
  assert not (tmp_path / "c.rsh").exists()  # nothing was written by a refused command
