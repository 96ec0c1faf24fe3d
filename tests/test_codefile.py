"""rsh.search.codefile: write, append, resume, refuse; plain numpy files on disk."""

import json

import numpy as np
import pytest

from rsh.search import codefile


def _codes(n, nbytes=8, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, nbytes), dtype=np.uint8)


def test_create_append_open(tmp_path):
  path = tmp_path / "a.rsh"
  x = _codes(100)
  ids = np.arange(100) * 7 + 2**40  # ids beyond int32
  with codefile.create(path, 100, 64, meta={"run": "r1", "step": 3}) as w:
    w.append(x[:30], ids[:30])
    w.append(x[30:31], ids[30:31])
    w.append(x[31:], ids[31:])
    assert w.done
  cf = codefile.open_codes(path)
  assert len(cf) == 100 and cf.bits == 64 and cf.meta == {"run": "r1", "step": 3}
  np.testing.assert_array_equal(cf.codes, x)
  np.testing.assert_array_equal(cf.ids, ids)
  assert isinstance(cf.codes, np.memmap) and not cf.codes.flags.writeable
  # Readable without rsh.
  np.testing.assert_array_equal(np.load(path / "codes.npy"), x)
  header = json.loads((path / "header.json").read_text())
  assert header["written"] == header["count"] == 100 and header["format"] == codefile.FORMAT


def test_default_ids_are_row_numbers_and_close_returns_the_file(tmp_path):
  w = codefile.create(tmp_path / "b.rsh", 10, 24)
  w.append(_codes(4, 3))
  assert w.close() is None  # rows missing: not a file yet
  w = codefile.create(tmp_path / "b.rsh", 10, 24, resume=True)
  w.append(_codes(6, 3, seed=1))
  cf = w.close()
  np.testing.assert_array_equal(cf.ids, np.arange(10))
  assert cf.codes.shape == (10, 3)


def test_killed_writer_resumes_from_the_last_flush(tmp_path):
  path = tmp_path / "c.rsh"
  x = _codes(1000)
  w = codefile.create(path, 1000, 64, meta={"set": "db"}, flush_every=250)
  for s in range(0, 500, 100):
    w.append(x[s:s + 100])  # flushed at 300 (>= 250 rows since the last flush), not at 500
  del w  # killed: rows 300..499 were written but never counted
  assert json.loads((path / "header.json").read_text())["written"] == 300
  with pytest.raises(ValueError, match="unfinished: 300 of 1000"):
    codefile.open_codes(path)
  part = codefile.open_codes(path, partial=True)
  assert len(part) == 300
  np.testing.assert_array_equal(part.codes, x[:300])
  w = codefile.create(path, 1000, 64, meta={"set": "db"}, resume=True, flush_every=250)
  assert w.written == 300
  w.append(x[300:])
  cf = w.close()
  np.testing.assert_array_equal(cf.codes, x)
  np.testing.assert_array_equal(cf.ids, np.arange(1000))
  # A finished file resumes with nothing left to write.
  w = codefile.create(path, 1000, 64, meta={"set": "db"}, resume=True)
  assert w.done
  with pytest.raises(ValueError, match="exceed"):
    w.append(x[:1])


@pytest.mark.parametrize("change", [dict(count=999), dict(bits=128), dict(meta={"set": "q"})])
def test_resume_refuses_another_file(tmp_path, change):
  path = tmp_path / "d.rsh"
  codefile.create(path, 1000, 64, meta={"set": "db"}).append(_codes(10))
  args = dict(count=1000, bits=64, meta={"set": "db"}) | change
  with pytest.raises(ValueError, match="cannot resume"):
    codefile.create(path, args["count"], args["bits"], meta=args["meta"], resume=True)


def test_existing_path_refused_unless_overwrite(tmp_path):
  path = tmp_path / "e.rsh"
  with codefile.create(path, 5, 8) as w:
    w.append(_codes(5, 1))
  with pytest.raises(FileExistsError, match="overwrite=True"):
    codefile.create(path, 5, 8)
  with codefile.create(path, 3, 16, overwrite=True) as w:
    w.append(_codes(3, 2, seed=2))
  cf = codefile.open_codes(path)
  assert cf.bits == 16 and len(cf) == 3
  np.testing.assert_array_equal(cf.codes, _codes(3, 2, seed=2))


def test_overwrite_refuses_a_folder_that_is_not_a_code_file(tmp_path):
  """overwrite=True replaces a code file, never someone's folder of other things."""
  folder = tmp_path / "results"
  folder.mkdir()
  (folder / "keep.txt").write_text("precious")
  with pytest.raises(FileExistsError, match="not a code file"):
    codefile.create(folder, 5, 8, overwrite=True)
  assert (folder / "keep.txt").read_text() == "precious"
  empty = tmp_path / "empty"
  empty.mkdir()
  codefile.create(empty, 0, 8, overwrite=True).close()  # an empty folder is fine
  assert len(codefile.open_codes(empty)) == 0


def test_bad_inputs(tmp_path):
  for bits in (0, 12, -8, 8.0, True):
    with pytest.raises(ValueError, match="bits"):
      codefile.create(tmp_path / f"b{bits}.rsh", 5, bits)
  for count in (-1, 2.0, True):
    with pytest.raises(ValueError, match="count"):
      codefile.create(tmp_path / f"c{count}.rsh", count, 8)
  w = codefile.create(tmp_path / "f.rsh", 5, 16)
  with pytest.raises(ValueError, match="uint8\\[m, 2\\]"):
    w.append(_codes(2, 3))
  with pytest.raises(ValueError, match="uint8\\[m, 2\\]"):
    w.append(_codes(2, 2).astype(np.int16))
  with pytest.raises(ValueError, match="ids"):
    w.append(_codes(2, 2), np.arange(3))
  with pytest.raises(ValueError, match="ids"):
    w.append(_codes(2, 2), np.zeros(2, np.float32))
  with pytest.raises(ValueError, match="exceed"):
    w.append(_codes(6, 2))
  with pytest.raises(FileNotFoundError, match="not a code file"):
    codefile.open_codes(tmp_path / "nothing")
  (tmp_path / "g.rsh").mkdir()
  (tmp_path / "g.rsh" / "header.json").write_text('{"format": "other/1"}')
  with pytest.raises(ValueError, match="format"):
    codefile.open_codes(tmp_path / "g.rsh")
  (tmp_path / "g.rsh" / "header.json").write_text('{"format": ')
  with pytest.raises(ValueError, match="JSON"):
    codefile.open_codes(tmp_path / "g.rsh")
