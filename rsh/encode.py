"""Entry point: `python -m rsh.encode --workdir=RUN --set=archive --out=archive.rsh`.

Encodes a named set of a finished (or checkpointed) run with the run's encoder and
writes its packed codes, as they are made, to a code file (`rsh.search.codefile`: a
folder of `codes.npy` uint8[n, bits // 8], `ids.npy` int64[n] and `header.json`):

    python -m rsh.encode --workdir=runs/demo --set=archive --out=runs/demo/archive.rsh
    python -m rsh.encode --workdir=runs/demo --set=query --out=runs/demo/query.rsh
    python -m rsh.encode --workdir=runs/cm --set=all --view=s1 --out=s1.rsh

The set streams through the encoder `--batch_size` rows at a time
(`rsh.update.stream_codes`): only one block's float outputs are ever in memory, so
archives of 10^8 images encode in the memory of one block. `--set` is any set of the
run's prepared data (`query`, `archive`, `train`, a source's own splits) or `all`
(every row); the ids written are the rows' indices into the prepared data (a set's
`Prepared.indices`, or 0..n-1 for `all`). `--view` is the data view encoded (default
the run's `config.data.input`); a method with one encoder per view (cross-modal) uses
that view's. `--output` is the encoder output binarised (`>= 0`), by default the
`codes` of the run's retrieval evaluator, else `hash`. The header's `meta` says what
the codes are: the run's workdir (absolute), step, config name, method, set, view,
output, bits and the data's digest (`data.json`).

Each block is on disk (data, then the header's `written`) before the next is encoded,
so a killed encoding loses at most one block: rerunning the same command continues at
the header's `written` row, and a finished file is left as it is. An output holding
another encoding (another run, step, set, view) or anything else is refused unless
`--overwrite`. A user's mistake is one `error: ...` line and exit code 2; Ctrl-C /
SIGTERM one line saying what is kept, exit 130 / 143.

Searching the files (the archive stays memory-mapped; ids map hits back to rows):

    from rsh import search
    from rsh.search import codefile
    queries = codefile.open_codes("query.rsh")
    # exact top-100, the archive read a chunk at a time: distances and the archive's ids
    dist, rows = search.stream_search(queries.codes, "archive.rsh", 100, ids=True)
    # an archive that fits in memory: search.search(queries.codes, archive.codes, 100)
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
import time

from absl import app, flags

from rsh import cli
from rsh import platform
from rsh.cli import fail

# The blocks of a streamed encoding: rsh.update.ENCODE_BLOCK (not imported here, so a
# bad flag is answered before jax loads).
BLOCK = 4096

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (config.json and "
                               "checkpoints/); its latest checkpoint is encoded.")
_SET = flags.DEFINE_string("set", "archive", "The set encoded: query, archive, train, a "
                           "source's own split, or all (every row of the prepared data).")
_OUT = flags.DEFINE_string("out", None, "The code file written (a folder, e.g. archive.rsh).")
_VIEW = flags.DEFINE_string("view", None, "The data view encoded (default: the run's "
                            "config.data.input), e.g. s1 for a cross-modal run.")
_OUTPUT = flags.DEFINE_string("output", None, "The encoder output binarised (default: the "
                              "codes of the run's retrieval evaluator, else hash).")
_BATCH = flags.DEFINE_integer("batch_size", BLOCK, "Rows encoded per block: the memory "
                              "bound, and what a kill can lose (default: 4096, fewer where 4096 rows would "
                              "exceed 256 MB, never below 1024); a multiple of 1024 keeps the "
                              "encoders' own chunks (so the codes equal a whole-set encoding "
                              "bit for bit).", lower_bound=1)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace whatever is at --out.")
_ALLOW_DATA = flags.DEFINE_bool(
    "allow_data_change", False, "Encode although the data loaded now differs from the "
    "run's data.json.")


def main(argv):
  written = []  # the writer, once there is one: what an interruption keeps
  with platform.stop_on_signals():
    try:
      _main(argv, written)
    except platform.Interrupted as e:
      cli.exit_now(_interrupted_line(written), e.code)


def _interrupted_line(written) -> str:
  if not written:
    return "interrupted before any code was written"
  w = written[0]
  return (f"interrupted: {w.written} of {w.count} codes are in {w.path}; rerun the same "
          "command to resume")


def _main(argv, written) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
  if not _WORKDIR.value:
    fail("--workdir is required, e.g. --workdir=runs/demo")
  if not _OUT.value:
    fail("--out is required, e.g. --out=archive.rsh")
  workdir, out = pathlib.Path(_WORKDIR.value), pathlib.Path(_OUT.value)
  if not workdir.is_dir():
    fail(f"--workdir={workdir}: no such directory")
  if out.exists() and not _OVERWRITE.value and not (out / "header.json").is_file():
    fail(f"--out={out} exists and is not a code file; pass --overwrite to replace it")
  logging.getLogger().setLevel(logging.WARNING)
  logging.getLogger("rsh").setLevel(logging.INFO)
  from rsh import checkpoints
  from rsh import restore
  try:
    run = restore.load_run(workdir, allow_data_change=_ALLOW_DATA.value)
    job = _job(run, _SET.value, _VIEW.value, _OUTPUT.value)
  except (ValueError, OSError, checkpoints.CheckpointError) as e:
    fail(cli.error_line(e, str(workdir)))
  _refuse_another(out, job["meta"], job["count"])
  _encode(job, out, written)


def _job(run, set_name: str, view, output) -> dict:
  """What is encoded: rows, ids, encoder, output key, bits and the header's meta."""
  import numpy as np
  from rsh import data as rdata
  from rsh.data import fingerprint
  data, config = run.data, run.config
  if set_name == "all":
    ids = np.arange(len(data.labels), dtype=np.int64)
  else:
    try:
      ids = np.asarray(data.indices(set_name), np.int64)
    except ValueError as e:
      raise ValueError(f"--set={set_name}: {e} (or all)") from None
  trained = data.view_name(config.data.get("input"))
  try:
    view = data.view_name(view) if view is not None else trained
    encoder = run.method.encoder(view)
  except ValueError as e:
    raise ValueError(f"--view={view}: {e}") from None
  if run.method.encoders is None and view != trained:
    raise ValueError(f"--view={view}: the run's {config.method} encodes only the view it "
                     f"trained on ({trained}, config.data.input)")
  if not len(ids):
    raise ValueError(f"--set={set_name} is empty: nothing to encode")
  rows = _Rows(data.view(view), ids) if view != rdata.PIXELS else (
      data.view(view) if set_name == "all" else data.x(set_name, view))
  output = output or _codes_output(config)
  probe = encoder(run.state, rows[:1])  # the output's width, before a file is made
  if output not in probe:
    raise ValueError(f"--output={output}: the encoder's outputs are {', '.join(sorted(probe))}")
  shape = np.shape(probe[output])
  if len(shape) != 2 or shape[1] % 8:
    raise ValueError(f"--output={output}: rows of shape {list(shape[1:])} are not codes of a "
                     "multiple of 8 bits")
  fp = fingerprint.read(run.workdir) or {}
  meta = dict(workdir=str(pathlib.Path(run.workdir).resolve()), step=int(run.step),
              config=config.get("name"), method=config.method, set=set_name, view=view,
              output=output, bits=int(shape[1]), data_digest=fp.get("digest"))
  return dict(rows=rows, ids=ids, encode=lambda x: encoder(run.state, x), output=output,
              bits=int(shape[1]), count=len(ids), meta=meta)


def _codes_output(config) -> str:
  """The encoder output the run's retrieval evaluator ranks as codes, else `hash`."""
  for cfg in (config.get("evals") or {}).values():
    if cfg.get("type") == "retrieval" and cfg.get("codes"):
      return str(cfg["codes"])
  return "hash"


class _Rows:
  """`view[ids]` sliced block by block, never copied whole."""

  def __init__(self, view, ids):
    self.view, self.ids = view, ids

  def __len__(self):
    return len(self.ids)

  def __getitem__(self, s):
    return self.view[self.ids[s]]


def _refuse_another(out: pathlib.Path, meta: dict, count: int) -> None:
  """An existing code file of another encoding is refused (without --overwrite),
  naming what differs."""
  if _OVERWRITE.value or not (out / "header.json").is_file():
    return
  try:
    header = json.loads((out / "header.json").read_text())
  except (OSError, json.JSONDecodeError) as e:
    fail(f"--out={out}: unreadable header.json ({e}); pass --overwrite to replace it")
  have = {**(header.get("meta") or {}), "count": header.get("count")}
  want = {**meta, "count": count}
  diff = [f"{k} {have.get(k)!r} (now {want.get(k)!r})" for k in want if have.get(k) != want[k]]
  if diff:
    fail(f"--out={out} holds another encoding: {', '.join(diff)}; pass --overwrite to "
         "replace it")


def _encode(job: dict, out: pathlib.Path, written: list) -> None:
  """Streams the rows into the code file from its `written` row on; one summary line."""
  from tqdm.auto import tqdm
  from rsh import update
  from rsh.search import codefile
  batch = _BATCH.value if _BATCH.present else update.block_rows(job["rows"], _BATCH.value)
  try:
    writer = codefile.create(out, job["count"], job["bits"], meta=job["meta"],
                             resume=not _OVERWRITE.value, overwrite=_OVERWRITE.value,
                             flush_every=batch)
  except (ValueError, OSError) as e:
    fail(cli.error_line(e, str(out)))
  written.append(writer)
  start, meta = writer.written, job["meta"]
  what = f"{meta['set']} ({meta['view']}, step {meta['step']})"
  if writer.done:
    writer.close()
    print(f"{out}: already complete: {writer.count} codes of {writer.bits} bits, {what}")
    return
  t0 = time.perf_counter()
  with writer, tqdm(total=writer.count, initial=start, desc=f"encode {meta['set']}",
                    unit="img", dynamic_ncols=True) as bar:
    sink = _Progress(writer, bar)
    done = update.stream_codes(job["encode"], job["rows"], job["output"], sink, batch,
                               pad=False, start=start, ids=job["ids"])
  rate = done / max(time.perf_counter() - t0, 1e-9)
  resumed = f", resumed at row {start}" if start else ""
  print(f"{out}: {writer.count} codes of {writer.bits} bits, {what}; encoded {done} rows "
        f"({rate:.0f} rows/s{resumed})")


class _Progress:
  """A sink: the code file's writer, and the progress bar moved by each block."""

  def __init__(self, writer, bar):
    self.writer, self.bar = writer, bar

  def append(self, codes, ids):
    self.writer.append(codes, ids)
    self.bar.update(len(codes))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
