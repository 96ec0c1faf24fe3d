"""The generic training loop: step, checkpoint, log, evaluate, resume.

It knows a state pytree, a pure step `(state, batch, rng) -> (state, metrics)`,
a batch function `step -> dict of host arrays` and an evaluation function. It
knows nothing about any method. Its jobs live beside it: `rsh.sharding` (mesh,
batches), `rsh.checkpoints` (orbax), `rsh.histories` (the workdir's records and
TensorBoard), `rsh.workdir` (the lock), `rsh.platform` (process-wide settings).

Exact resume: the batch of step `s` is a pure function of `s` (see
`rsh.data.batch_at`), the step's key is `fold_in(rng, s)`, and the state is
restored bit for bit from orbax, so a run killed at any point and restarted from
its workdir ends with the same parameters as one that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pathlib
import sys
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rsh import checkpoints
from rsh import deprecation
from rsh import distributed
from rsh import histories
from rsh import platform
from rsh import sharding

log = logging.getLogger(__name__)

StepFn = Callable[[Any, Mapping[str, jax.Array], jax.Array], tuple[Any, Mapping[str, jax.Array]]]

# Public names that moved out of this module, kept here (deprecated) for one release.
_MOVED = {
    "CheckpointError": "rsh.checkpoints", "latest_state": "rsh.checkpoints",
    "latest_step": "rsh.checkpoints", "read_train_history": "rsh.histories",
    "data_mesh": "rsh.sharding", "shard_batch": "rsh.sharding", "replicate": "rsh.sharding",
    "CPU_CONV": "rsh.platform", "set_cpu_conv": "rsh.platform",
    "quiet_closed_event_loops": "rsh.platform",
    "workdir_lock": "rsh.workdir", "WorkdirLockedError": "rsh.workdir",
}


__getattr__ = deprecation.moved(__name__, _MOVED)


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or infinite; the last good checkpoint is kept."""


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
  mesh = mesh or sharding.data_mesh()
  r = _Run(workdir, loop, eval_fn, on_start)
  try:
    r.resume(sharding.replicate(state, mesh))
    r.train(jit_step(step_fn, mesh), batch_fn, rng, mesh)
  except BaseException as e:
    r.close(quiet=True)  # the first error is the one to report (a full disk fails again)
    if isinstance(e, platform.Interrupted):
      e.step = r.step
    raise
  r.close()
  return r.state, r.history.rows


class _Run:
  """One call of `run`: its state, and what it saves, logs and evaluates as it steps."""

  def __init__(self, workdir: pathlib.Path, loop: LoopConfig, eval_fn, on_start):
    self.workdir, self.loop, self.eval_fn, self.on_start = workdir, loop, eval_fn, on_start
    # Every process saves and restores the checkpoints (orbax); one writes the rest.
    self.manager = checkpoints.open_manager(workdir / "checkpoints", loop.max_to_keep)
    self.writes = write = distributed.is_writer()
    self.history = histories.EvalHistory(workdir / "eval_history.jsonl", write)
    self.pending = histories.PendingEval(workdir / "pending_eval.json", write)
    self.writer = histories.SummaryWriter(workdir / "tensorboard", write)
    self.eval_every = loop.eval_every or loop.num_steps
    self.checkpoint_every = loop.checkpoint_every or loop.num_steps
    self.pbar = self.train_log = None
    self.step = None  # the last step done (a Python int: a donated state cannot be read)

  def resume(self, state) -> None:
    """Starts from `state`, or from the newest readable checkpoint of the workdir."""
    self.latest = None  # the step restored, if any
    if self.manager.latest_step() is not None:
      state, self.latest = checkpoints.restore(self.manager, state, self.workdir)
      log.info("resumed from %s at step %d", self.workdir / "checkpoints", self.latest)
    self.state, self.last_saved = state, self.latest
    self.start = self.step = start = int(jax.device_get(state.step))
    if start > self.loop.num_steps:
      log.warning("the checkpoint in %s is at step %d, past train.num_steps=%d: a model "
                  "cannot be trained backwards, so the model of step %d is evaluated and "
                  "reported", self.workdir / "checkpoints", start, self.loop.num_steps, start)
    if self.latest is not None:
      self._started()
    self.train_log = histories.TrainHistory(self.workdir / "train_history.jsonl", start,
                                            self.writes)

  def _started(self) -> None:
    if self.on_start is not None:
      self.on_start(self.start)
      self.on_start = None

  def train(self, step_jit, batch_fn, rng: jax.Array, mesh: Mesh) -> None:
    """Steps from `start` to `num_steps`, then evaluates the final state once."""
    latest, num_steps = self.latest, self.loop.num_steps
    # A kill between a checkpoint and its evaluation: evaluate that step now,
    # with the training metrics saved beside the checkpoint.
    if (latest is not None and latest < num_steps and latest % self.eval_every == 0
        and not self.history.has(latest)):
      log.info("step %d was saved but not evaluated (interrupted): evaluating it now", latest)
      self.evaluate(latest, self.pending.metrics(latest))
    self.pbar = _progress(self.start, num_steps, enabled=self.loop.progress and self.writes)
    self.clock = time.time(), self.start
    metrics = None
    for step in range(self.start, num_steps):
      batch = sharding.shard_batch(batch_fn(step), mesh)
      new_state, metrics = step_jit(self.state, batch, jax.random.fold_in(rng, step))
      metrics = self._after_step(step + 1, new_state, metrics)
    final = int(jax.device_get(self.state.step))
    if not self.history.has(final):
      self.evaluate(final, metrics if self.start < num_steps else self.pending.metrics(final))
    # Evaluated now or before (a kill between its evaluation and this, or a
    # step evaluated by an earlier run): a finished workdir keeps no pending record.
    self.pending.clear()

  def _after_step(self, done: int, new_state, metrics) -> dict[str, float]:
    """Checks, keeps, logs, saves and evaluates the state of step `done`."""
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not _finite(metrics):
      raise _non_finite(done, metrics, self.last_saved, self.workdir / "checkpoints")
    self.state, self.step = new_state, done
    self._started()
    last = done == self.loop.num_steps
    logged = done % max(1, self.loop.log_every) == 0
    if self.pbar is not None:
      self.pbar.update(1)
      if logged or last:
        self.pbar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()})
    if logged:
      self._log(done, metrics)
    if done % self.checkpoint_every == 0 or last:
      if (done % self.eval_every == 0 or last) and self.eval_fn is not None:
        self.pending.write(done, metrics)  # before the save: a kill after it keeps them
      checkpoints.save(self.manager, done, self.state)
      self.last_saved = done
    if done % self.eval_every == 0 and not last:
      self.evaluate(done, metrics)
    return metrics

  def _log(self, done: int, metrics: Mapping[str, float]) -> None:
    self.train_log.add(done, metrics)
    if self.writer.write_scalars(done, {f"train/{k}": v for k, v in metrics.items()}):
      now, (t_last, s_last) = time.time(), self.clock
      self.writer.write_scalars(
          done, {"train/steps_per_s": (done - s_last) / max(now - t_last, 1e-9)})
      self.clock = now, done

  def evaluate(self, step: int, train_metrics: Mapping[str, float] | None = None) -> None:
    """Runs `eval_fn` on the current state; records it as the evaluation of `step`."""
    if self.eval_fn is None:
      self.pending.clear()
      return
    t0 = time.time()
    metrics = {k: float(v) for k, v in self.eval_fn(self.state, step).items()
               if np.ndim(v) == 0}
    # The step's own metrics (each loss term) beside the evaluation, so a
    # run's results show what its terms did.
    self.history.add({"step": step, **metrics,
                      **{f"train/{k}": v for k, v in (train_metrics or {}).items()}})
    self.pending.clear()
    if self.writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()}):
      self.writer.flush()
    shown = {k: v for k, v in metrics.items() if "/" not in k}
    log.info("eval at step %d (%.1fs): %s", step, time.time() - t0,
             " ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))

  def close(self, quiet: bool = False) -> None:
    """Closes what the run opened, each part even if another fails (a full disk);
    `quiet`: on the way out of an error, whose report a second failure must not replace."""
    parts = [p.close for p in (self.pbar, self.train_log) if p is not None]
    parts += [lambda: checkpoints.close(self.manager), self.writer.close]
    errors = []
    for close in parts:
      try:
        close()
      except Exception as e:  # noqa: BLE001 -- each part is closed whatever the others do
        errors.append(e)
    if errors and not quiet:
      raise errors[0]


def _finite(metrics: Mapping[str, float]) -> bool:
  return all(math.isfinite(v) for v in metrics.values())


def _non_finite(step: int, metrics: Mapping[str, float], last_saved: int | None,
                checkpoint_dir: pathlib.Path) -> NonFiniteLossError:
  """The NaN stop's error: which metrics went bad at `step`, and what is kept."""
  bad = ", ".join(f"{k}={v}" for k, v in metrics.items() if not math.isfinite(v))
  good = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if math.isfinite(v))
  return NonFiniteLossError(
      f"non-finite loss at step {step}: {bad}" + (f" (finite: {good})" if good else "")
      + (f"; the last good checkpoint (step {last_saved}) in "
         f"{checkpoint_dir} is kept" if last_saved is not None
         else "; no checkpoint had been saved yet (lower the learning rate?)"))


def _progress(start: int, total: int, enabled: bool):
  if not enabled or start >= total:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=start, desc="train", unit="step",
              dynamic_ncols=True, file=sys.stderr, mininterval=1.0)
