"""What a run records in its workdir besides checkpoints, so a resumed run keeps it.

- `eval_history.jsonl` (`EvalHistory`): one row per evaluation, `{"step": s,
  <metric>: value, "train/<metric>": value}`.
- `pending_eval.json` (`PendingEval`): the training metrics of a saved step
  whose evaluation has not run yet (written before its checkpoint).
- `train_history.jsonl` (`TrainHistory`, `read_train_history`): the step's
  metrics every `log_every` steps.
- `tensorboard/` (`SummaryWriter`): TensorBoard event files of both.

Each takes `write`: False in every process of a multi-host run but the writer
(`rsh.distributed.is_writer`), which then keeps its records in memory only.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Mapping

log = logging.getLogger(__name__)


class EvalHistory:
  """Evaluation history as a JSON-lines file, so a resumed run keeps its curve."""

  def __init__(self, path: pathlib.Path, write: bool = True):
    self.path, self.write = path, write
    self.rows: list[dict] = []
    if path.exists():
      for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
          try:
            self.rows.append(json.loads(line))
          except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {i} is not valid JSON ({e.msg}); the file is "
                             "damaged: delete that line (or the file, losing the "
                             "evaluation curve) to resume") from None

  def add(self, row: dict):
    """Adds `row` (replacing any row of its step) and rewrites the file atomically."""
    self.rows = [r for r in self.rows if r["step"] != row["step"]] + [row]
    if not self.write:
      return
    tmp = self.path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
    os.replace(tmp, self.path)

  def has(self, step: int) -> bool:
    """Whether step `step` has been evaluated."""
    return any(r["step"] == step for r in self.rows)


class PendingEval:
  """The training metrics of a saved step whose evaluation has not run yet."""

  def __init__(self, path: pathlib.Path, write: bool = True):
    self.path, self.writes = path, write

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.writes:
      return
    tmp = self.path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"step": step, "train": dict(metrics)}))
    os.replace(tmp, self.path)

  def metrics(self, step: int) -> dict | None:
    try:
      row = json.loads(self.path.read_text())
    except (OSError, ValueError):
      return None
    return row.get("train") if row.get("step") == step else None

  def clear(self) -> None:
    if self.writes:
      self.path.unlink(missing_ok=True)


class TrainHistory:
  """The step's metrics every `log_every` steps as JSON lines (train_history.jsonl),
  so the loss curves outlive TensorBoard. On resume, rows past the restored step
  (trained again now) and a line cut by a kill are dropped."""

  def __init__(self, path: pathlib.Path, start: int, write: bool = True):
    self.path, self.write, self.file = path, write, None
    if not write:
      return
    rows, rewrite = [], False
    if path.exists():
      for line in path.read_text().splitlines():
        try:
          row = json.loads(line)
        except ValueError:
          rewrite = True
          continue
        if isinstance(row, dict) and row.get("step", start + 1) <= start:
          rows.append(row)
        else:
          rewrite = True
    if rewrite:
      tmp = path.with_suffix(".tmp")
      tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
      os.replace(tmp, path)

  def add(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.write:
      return
    if self.file is None:
      self.file = open(self.path, "a")
    self.file.write(json.dumps({"step": step, **metrics}) + "\n")
    self.file.flush()

  def close(self) -> None:
    if self.file is not None:
      self.file.close()


def read_train_history(workdir: str | os.PathLike) -> list[dict]:
  """The rows of `workdir/train_history.jsonl`: {"step": s, <metric>: value, ...}."""
  path = pathlib.Path(workdir) / "train_history.jsonl"
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except ValueError:
      continue  # a line cut by a kill
  return rows


def _tag(name: str) -> str:
  """A TensorBoard-legal tag: `eval/map@100` -> `eval/map_at_100`."""
  return name.replace("@", "_at_")


class SummaryWriter:
  """Scalars to TensorBoard event files in `logdir` (tensorboardX), made on first use.

  Without tensorboardX it writes nothing and warns at each write; if its files
  cannot be written (a full disk) it warns once and stops writing them:
  TensorBoard logging is a convenience, never a blocker.
  """

  def __init__(self, logdir: pathlib.Path, write: bool = True):
    self.logdir = logdir
    self._writer = None
    self._failed = not write  # a process that does not write: as if it had failed, silently

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> bool:
    """Writes `{tag: value}` at `step`; returns whether anything could be written."""
    if self._failed:
      return False
    if self._writer is None:
      try:
        from tensorboardX import SummaryWriter as TBWriter
      except ImportError:
        log.warning("tensorboardX is not installed: no TensorBoard event files")
        return False
      try:
        self._writer = TBWriter(str(self.logdir))
      except OSError as e:
        self._fail(e)
        return False
      _guard_files(self._writer, self._fail)
    for k, v in scalars.items():
      self._writer.add_scalar(_tag(k), v, step)
    return not self._failed

  def _fail(self, e: OSError) -> None:
    if not self._failed:
      self._failed = True
      log.warning("cannot write the TensorBoard events in %s (%s): they stop here",
                  self.logdir, e.strerror or e)

  def flush(self) -> None:
    if self._writer is not None and not self._failed:
      try:
        self._writer.flush()
      except OSError as e:
        self._fail(e)

  def close(self) -> None:
    if self._writer is not None:
      writer, self._writer = self._writer, None
      try:
        writer.close()  # on every path out: tensorboardX's atexit hook must find it closed
      except OSError as e:
        self._fail(e)


class _GuardedFile:
  """A tensorboardX record file that stops at its first OSError (a full disk),
  reporting it once, where it would raise in tensorboardX's writer thread (a
  traceback, then a queue nobody empties) and again in its exit hook."""

  def __init__(self, inner, on_error):
    self.inner, self.on_error, self.failed = inner, on_error, False

  def _do(self, name: str, *args) -> None:
    if not self.failed:
      try:
        getattr(self.inner, name)(*args)
      except OSError as e:
        self.failed = True
        self.on_error(e)

  def write(self, data) -> None:
    self._do("write", data)

  def flush(self) -> None:
    self._do("flush")

  def close(self) -> None:
    try:
      self.inner.close()
    except OSError:
      pass  # reported at the first failure


def _guard_files(writer, on_error) -> None:
  """Wraps the files of tensorboardX's writer (its internals, as of 2.6) in
  `_GuardedFile`; a writer built otherwise is left as it is."""
  for file_writer in (getattr(writer, "all_writers", None) or {}).values():
    events = getattr(getattr(file_writer, "event_writer", None), "_ev_writer", None)
    record = getattr(events, "_py_recordio_writer", None)
    if record is not None and hasattr(record, "write") and hasattr(record, "flush"):
      events._py_recordio_writer = _GuardedFile(record, on_error)
