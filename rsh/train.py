"""The generic training loop: sharding, checkpoints, resume, logging, evaluation.

It knows a state pytree, a pure step `(state, batch, rng) -> (state, metrics)`,
a batch function `step -> dict of host arrays` and an evaluation function. It
knows nothing about any method.

Exact resume: the batch of step `s` is a pure function of `s` (see
`rsh.data.batch_at`), the step's key is `fold_in(rng, s)`, and the state is
restored bit for bit from orbax, so a run killed at any point and restarted from
its workdir ends with the same parameters as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import gc
import json
import logging
import math
import os
import pathlib
import re
import shutil
import socket
import sys
import time
import warnings
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

StepFn = Callable[[Any, Mapping[str, jax.Array], jax.Array], tuple[Any, Mapping[str, jax.Array]]]


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointError(RuntimeError):
  """No checkpoint of the workdir can be restored into this state."""


class WorkdirLockedError(RuntimeError):
  """Another run holds the workdir."""


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike):
  """Holds `workdir/.lock` (an exclusive `flock`) for the duration of a run.

  The lock file names the holder (pid and host), so a second run in the same
  workdir is refused with a message saying who has it. The kernel drops the
  lock when its holder dies, so a killed run never leaves a stale lock.
  """
  path = pathlib.Path(workdir) / ".lock"
  f = open(path, "a+")
  try:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      f.seek(0)
      holder = f.read().strip() or "another process"
      raise WorkdirLockedError(
          f"{workdir} is in use by {holder} (lock {path}); wait for it to finish, "
          "or use another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
    f.flush()
    yield path
  finally:
    f.close()  # releases the flock


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh named `data` over all local devices (data parallelism)."""
  devices = np.asarray(devices if devices is not None else jax.local_devices())
  return Mesh(devices.reshape(-1), ("data",))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Puts each array of a host batch on the mesh, split along its first axis.

  Arrays whose first axis does not divide by the device count (a `[b, b]`
  similarity block does, `[b, b]` rows are split like images) raise, since a
  silent replication would change the maths.
  """
  n_dev = mesh.devices.size
  out = {}
  for name, x in batch.items():
    if x.shape[0] % n_dev:
      raise ValueError(
          f"batch[{name!r}] has leading size {x.shape[0]}, not divisible by the "
          f"{n_dev} devices; choose a batch size that is a multiple of {n_dev}")
    spec = P("data", *([None] * (x.ndim - 1)))
    out[name] = jax.device_put(x, NamedSharding(mesh, spec))
  return out


def replicate(tree, mesh: Mesh):
  """A replicated copy of `tree` (never an alias: the step donates its state)."""
  # `may_alias=False` alone still lets one device's shard share the input's
  # buffer on a multi-device mesh, so go through host memory (once per run).
  return jax.device_put(jax.device_get(tree), NamedSharding(mesh, P()))


# XLA:CPU hands convolutions, dots and reductions to YNNPACK by default (jaxlib
# 0.10 on). Its convolution gradients run about 2x slower than XLA's own (Eigen)
# ones on 2 cores, and UAHM's step 1.2x slower (benchmarks/train_step.py
# --cpu_conv=eigen,ynnpack), so "eigen" keeps YNNPACK for dots and reductions
# and gives convolutions back. It is a process-wide XLA flag, read once when jax
# starts its backend: the flag edits XLA's default set (`-individual_convolution`),
# where a per-jit `compiler_options` entry would have to restate the whole set.
CPU_CONV = ("eigen", "ynnpack")
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_EIGEN_CONV_FLAG = f"{_YNN_FLAG}=-individual_convolution"


def _has_ynnpack() -> bool:
  # The flag aborts a jaxlib that does not know it; YNNPACK came with 0.10.
  import jaxlib
  version = tuple(int(p) for p in re.findall(r"\d+", jaxlib.__version__)[:2])
  return version >= (0, 10)


def _backend_started() -> bool:
  from jax._src import xla_bridge  # private, but the only way to ask
  return bool(getattr(xla_bridge, "backends_are_initialized", lambda: True)())


def set_cpu_conv(cpu_conv: str = "eigen") -> bool:
  """Chooses the XLA:CPU convolution kernels of this process (`config.train.cpu_conv`).

  Call it before the first jax computation: `rsh.main`, `rsh.reproduce` and
  the benchmarks do; a notebook or script calls it first itself (the library
  never sets a process-wide flag behind its caller's back). "eigen" (faster on
  CPU) or "ynnpack" (XLA's default). A `--xla_cpu_experimental_ynn_fusion_type` already in
  `XLA_FLAGS` is the user's own choice and is kept. Other backends ignore it.

  Returns:
    Whether convolutions run as asked: False when jax's backend had already
    started with other settings (the choice then applies to a new process).
  """
  if cpu_conv not in CPU_CONV:
    raise ValueError(f"config.train.cpu_conv must be one of {', '.join(CPU_CONV)}; "
                     f"got {cpu_conv!r}")
  flags = os.environ.get("XLA_FLAGS", "")
  if _YNN_FLAG in flags:
    return (_EIGEN_CONV_FLAG in flags) == (cpu_conv == "eigen")
  if cpu_conv == "ynnpack" or not _has_ynnpack():
    return True  # a jaxlib before YNNPACK: its convolutions are XLA's own anyway
  if _backend_started():
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {_EIGEN_CONV_FLAG}".strip()
  return True


def jit_step(step_fn: StepFn, mesh: Mesh):
  """jit with the state replicated and the batch sharded over `data`.

  XLA inserts the gradient all-reduce itself: the step is written as if for one
  device, which is why it gives the same numbers on 1 or N devices.
  """
  rep = NamedSharding(mesh, P())
  return jax.jit(step_fn, out_shardings=(rep, rep), donate_argnums=(0,))


@dataclasses.dataclass
class LoopConfig:
  num_steps: int
  checkpoint_every: int = 500   # 0: only at the end
  eval_every: int = 0           # 0: only at the end
  log_every: int = 50
  max_to_keep: int = 2
  progress: bool = True

  def __post_init__(self):
    n = self.num_steps
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
      raise ValueError(f"config.train.num_steps must be an integer >= 1 (a run of no steps "
                       f"would report an untrained model); got {n!r}")
    for name in ("checkpoint_every", "eval_every", "log_every"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"config.train.{name} must be an integer >= 0 "
                         f"(0 = only at the end); got {value!r}")
    if self.max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1, got {self.max_to_keep}")


def _finite(metrics: Mapping[str, float]) -> bool:
  return all(math.isfinite(v) for v in metrics.values())


class _History:
  """Evaluation history as a JSON-lines file, so a resumed run keeps its curve."""

  def __init__(self, path: pathlib.Path):
    self.path = path
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
    self.rows = [r for r in self.rows if r["step"] != row["step"]] + [row]
    tmp = self.path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
    os.replace(tmp, self.path)


def _tag(name: str) -> str:
  """A TensorBoard-legal tag: `eval/map@100` -> `eval/map_at_100`."""
  return name.replace("@", "_at_")


def _summary_writer(workdir: pathlib.Path):
  try:
    from tensorboardX import SummaryWriter
  except ImportError:  # TensorBoard logging is a convenience, never a blocker.
    log.warning("tensorboardX is not installed: no TensorBoard event files")
    return None
  return SummaryWriter(str(workdir / "tensorboard"))


def run(
    *,
    workdir: str | os.PathLike,
    state: Any,
    step_fn: StepFn,
    batch_fn: Callable[[int], Mapping[str, np.ndarray]],
    rng: jax.Array,
    loop: LoopConfig,
    eval_fn: Callable[[Any, int], Mapping[str, float]] | None = None,
    mesh: Mesh | None = None,
    on_start: Callable[[int], None] | None = None,
) -> tuple[Any, list[dict]]:
  """Trains `state` to `loop.num_steps`, resuming from `workdir` if it can.

  Args:
    workdir: checkpoints go to `workdir/checkpoints`, TensorBoard events to
      `workdir/tensorboard`, the eval curve to `workdir/eval_history.jsonl`, the
      step's metrics every `log_every` steps to `workdir/train_history.jsonl`.
    state: the initial state pytree; it must hold an integer leaf `step`.
    step_fn: pure `(state, batch, rng) -> (state, metrics)`; metrics are scalars.
    batch_fn: `step -> {name: array[global_batch, ...]}`, a pure function of step.
    rng: the run's base key; step `s` uses `fold_in(rng, s)`.
    eval_fn: `(state, step) -> {metric: float}`, run every `eval_every` steps
      and at the end.
    on_start: called with the start step once the run is known to start: after
      a checkpoint was restored, or after the first step gave finite metrics
      (e.g. to write the workdir's config.json only then).

  Returns:
    The final state and the evaluation history (one dict per evaluation).

  Raises:
    NonFiniteLossError: a metric became NaN/inf; nothing after the last good
      checkpoint is saved.
    CheckpointError: no checkpoint of the workdir can be restored into `state`
      (a corrupt latest one falls back to an older intact one, saying so).
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = mesh or data_mesh()
  manager = _manager(workdir / "checkpoints", loop.max_to_keep)
  history = _History(workdir / "eval_history.jsonl")
  pending = _Pending(workdir / "pending_eval.json")

  state = replicate(state, mesh)
  latest = None
  if manager.latest_step() is not None:
    state, latest = _restore(manager, state, workdir)
    log.info("resumed from %s at step %d", workdir / "checkpoints", latest)
  start = int(jax.device_get(state.step))
  if start > loop.num_steps:
    log.warning("the checkpoint in %s is at step %d, past train.num_steps=%d: a model "
                "cannot be trained backwards, so the model of step %d is evaluated and "
                "reported", workdir / "checkpoints", start, loop.num_steps, start)
  if latest is not None and on_start is not None:
    on_start(start)
    on_start = None

  writer = None
  step_jit = jit_step(step_fn, mesh)
  eval_every = loop.eval_every or loop.num_steps
  checkpoint_every = loop.checkpoint_every or loop.num_steps

  def evaluate(step, train_metrics=None):
    nonlocal writer
    if eval_fn is None:
      pending.clear()
      return
    t0 = time.time()
    metrics = {k: float(v) for k, v in eval_fn(state, step).items()
               if np.ndim(v) == 0}
    # The step's own metrics (each loss term) beside the evaluation, so a
    # run's results show what its terms did.
    history.add({"step": step, **metrics,
                 **{f"train/{k}": v for k, v in (train_metrics or {}).items()}})
    pending.clear()
    writer = writer or _summary_writer(workdir)
    if writer is not None:
      for k, v in metrics.items():
        writer.add_scalar(_tag(f"eval/{k}"), v, step)
      writer.flush()
    shown = {k: v for k, v in metrics.items() if "/" not in k}
    log.info("eval at step %d (%.1fs): %s", step, time.time() - t0,
             " ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))

  def has_row(step):
    return any(r["step"] == step for r in history.rows)

  pbar = None
  last_saved = latest
  metrics = None
  train_log = _TrainLog(workdir / "train_history.jsonl", start)
  try:
    # A kill between a checkpoint and its evaluation: evaluate that step now,
    # with the training metrics saved beside the checkpoint.
    if (latest is not None and latest < loop.num_steps and latest % eval_every == 0
        and not has_row(latest)):
      log.info("step %d was saved but not evaluated (interrupted): evaluating it now", latest)
      evaluate(latest, pending.metrics(latest))
    pbar = _progress(start, loop.num_steps, enabled=loop.progress)
    t_last, s_last = time.time(), start
    for step in range(start, loop.num_steps):
      batch = shard_batch(batch_fn(step), mesh)
      new_state, metrics = step_jit(state, batch, jax.random.fold_in(rng, step))
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not _finite(metrics):
        bad = ", ".join(f"{k}={v}" for k, v in metrics.items() if not math.isfinite(v))
        good = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if math.isfinite(v))
        raise NonFiniteLossError(
            f"non-finite loss at step {step + 1}: {bad}" + (f" (finite: {good})" if good else "")
            + (f"; the last good checkpoint (step {last_saved}) in "
               f"{workdir / 'checkpoints'} is kept" if last_saved is not None
               else "; no checkpoint had been saved yet (lower the learning rate?)"))
      state = new_state
      if on_start is not None:
        on_start(start)
        on_start = None
      done = step + 1
      if pbar is not None:
        pbar.update(1)
        if done % max(1, loop.log_every) == 0 or done == loop.num_steps:
          pbar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()})
      if done % max(1, loop.log_every) == 0:
        train_log.add(done, metrics)
        writer = writer or _summary_writer(workdir)
        if writer is not None:
          for k, v in metrics.items():
            writer.add_scalar(_tag(f"train/{k}"), v, done)
          now = time.time()
          writer.add_scalar("train/steps_per_s", (done - s_last) / max(now - t_last, 1e-9), done)
          t_last, s_last = now, done
      due = done % eval_every == 0 or done == loop.num_steps
      if done % checkpoint_every == 0 or done == loop.num_steps:
        if due and eval_fn is not None:
          pending.write(done, metrics)  # before the save: a kill after it keeps them
        manager.save(done, args=ocp.args.StandardSave(state), force=True)
        manager.wait_until_finished()
        last_saved = done
      if done % eval_every == 0 and done != loop.num_steps:
        evaluate(done, metrics)
    final = int(jax.device_get(state.step))
    if not has_row(final):
      evaluate(final, metrics if start < loop.num_steps else pending.metrics(final))
  finally:
    if pbar is not None:
      pbar.close()
    train_log.close()
    manager.wait_until_finished()
    manager.close()
    if writer is not None:
      writer.close()  # on every path out: tensorboardX's atexit hook must find it closed
  return state, history.rows


class _TrainLog:
  """The step's metrics every `log_every` steps as JSON lines (train_history.jsonl),
  so the loss curves outlive TensorBoard. On resume, rows past the restored step
  (trained again now) and a line cut by a kill are dropped."""

  def __init__(self, path: pathlib.Path, start: int):
    self.path = path
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
    self.file = None

  def add(self, step: int, metrics: Mapping[str, float]) -> None:
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


def latest_step(workdir: str | os.PathLike) -> int | None:
  """The step of the workdir's latest checkpoint, or None when it has none."""
  path = (pathlib.Path(workdir) / "checkpoints").absolute()
  if not path.is_dir():
    return None
  manager = _manager(path, 1, read_only=True)
  try:
    return manager.latest_step()
  finally:
    manager.close()


class _Pending:
  """The training metrics of a saved step whose evaluation has not run yet."""

  def __init__(self, path: pathlib.Path):
    self.path = path

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
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
    self.path.unlink(missing_ok=True)


def _manager(path: pathlib.Path, max_to_keep: int, read_only: bool = False):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(path.absolute(), options=options)


def _one_line(e: BaseException) -> str:
  """The gist of an orbax/tensorstore error: its first line, trimmed."""
  text = str(e).strip().splitlines()
  first = text[0] if text else type(e).__name__
  return f"{type(e).__name__}: {first[:300]}"


def _closed_loop_filter(hook):
  """`sys.unraisablehook` without the noise of orbax's abandoned reads ("Event
  loop is closed", or a read error raised again in a collected coroutine)."""
  import traceback

  def unraisable(u):
    if "Event loop is closed" in str(u.exc_value):
      return
    if u.exc_traceback is not None and any(
        "/orbax/" in f.filename for f in traceback.extract_tb(u.exc_traceback)):
      return
    hook(u)
  return unraisable


def quiet_closed_event_loops() -> None:
  """For a command-line process: orbax's reads abandoned by a failed restore may
  be collected as late as interpreter exit, each printing an "Event loop is
  closed" traceback or asyncio's "Task exception was never retrieved"; the
  failure itself is reported in one line. (rsh itself runs no event loop.)"""
  sys.unraisablehook = _closed_loop_filter(sys.unraisablehook)
  logging.getLogger("asyncio").setLevel(logging.CRITICAL)


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax logs a line per failed read when a restore fails, and its abandoned
  coroutines print "Event loop is closed" once each when collected; the
  caller says what failed in one line instead."""
  names = ("absl", "orbax", "asyncio", "jax._src.distributed")
  loggers = [logging.getLogger(n) for n in names]
  levels = [l.level for l in loggers]
  hook = sys.unraisablehook
  for l in loggers:
    l.setLevel(logging.CRITICAL)
  sys.unraisablehook = _closed_loop_filter(hook)
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="coroutine .* was never awaited")
      try:
        yield
      finally:
        gc.collect()  # the abandoned coroutines go now, while the filter is on
  finally:
    sys.unraisablehook = hook
    for l, level in zip(loggers, levels):
      l.setLevel(level)


def _restore(manager, state, workdir: pathlib.Path):
  """Restores the newest checkpoint that can be read into `state`'s structure.

  A checkpoint that cannot be read while an older one can is corrupt (a
  config change would break both alike): it is moved to
  `workdir/corrupt_checkpoints/` and the run resumes from the older one,
  saying so. If none can be read, CheckpointError says why, moving nothing.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  steps = sorted(manager.all_steps(), reverse=True)
  errors = []
  for step in steps:
    try:
      with _quiet_orbax():
        restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax/tensorstore raise many kinds: each is "unreadable"
      errors.append((step, e))
      continue
    for bad, e in errors:
      dest = workdir / "corrupt_checkpoints" / f"{bad}-{int(time.time())}"
      dest.parent.mkdir(exist_ok=True)
      shutil.move(str(workdir / "checkpoints" / str(bad)), dest)
      log.warning("checkpoint %d in %s cannot be read (%s): moved to %s; resuming from "
                  "step %d", bad, workdir / "checkpoints", _one_line(e), dest, step)
    if errors:
      manager.reload()
    return restored, step
  shown = ", ".join(str(s) for s in steps)
  raise CheckpointError(
      f"no checkpoint in {workdir / 'checkpoints'} (steps {shown}) can be restored into "
      f"this run's model: {_one_line(errors[0][1])}. If the config changed (a different "
      "model or code length), use another --workdir")


def _progress(start: int, total: int, enabled: bool):
  if not enabled or start >= total:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=start, desc="train", unit="step",
              dynamic_ncols=True, file=sys.stderr, mininterval=1.0)


def latest_state(workdir: str | os.PathLike, abstract_state):
  """Restores the latest checkpoint of a workdir into `abstract_state`'s structure."""
  path = (pathlib.Path(workdir) / "checkpoints").absolute()
  if not path.exists():
    return None
  manager = _manager(path, 1, read_only=True)
  try:
    if manager.latest_step() is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    with _quiet_orbax():
      return manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
  finally:
    manager.close()
