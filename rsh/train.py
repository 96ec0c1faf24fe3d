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

import dataclasses
import json
import logging
import math
import os
import pathlib
import sys
import time
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
    for name in ("num_steps", "checkpoint_every", "eval_every", "log_every"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"config.train.{name} must be an integer >= 0 "
                         f"(0 = only at the end for *_every); got {value!r}")
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
      for line in path.read_text().splitlines():
        if line.strip():
          self.rows.append(json.loads(line))

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
) -> tuple[Any, list[dict]]:
  """Trains `state` to `loop.num_steps`, resuming from `workdir` if it can.

  Args:
    workdir: checkpoints go to `workdir/checkpoints`, TensorBoard events to
      `workdir/tensorboard`, the eval curve to `workdir/eval_history.jsonl`.
    state: the initial state pytree; it must hold an integer leaf `step`.
    step_fn: pure `(state, batch, rng) -> (state, metrics)`; metrics are scalars.
    batch_fn: `step -> {name: array[global_batch, ...]}`, a pure function of step.
    rng: the run's base key; step `s` uses `fold_in(rng, s)`.
    eval_fn: `(state, step) -> {metric: float}`, run every `eval_every` steps
      and at the end.

  Returns:
    The final state and the evaluation history (one dict per evaluation).

  Raises:
    NonFiniteLossError: a metric became NaN/inf; nothing after the last good
      checkpoint is saved.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = mesh or data_mesh()
  options = ocp.CheckpointManagerOptions(
      max_to_keep=loop.max_to_keep, create=True,
      enable_async_checkpointing=False)
  manager = ocp.CheckpointManager(
      (workdir / "checkpoints").absolute(), options=options)
  history = _History(workdir / "eval_history.jsonl")

  state = replicate(state, mesh)
  latest = manager.latest_step()
  if latest is not None:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
    log.info("resumed from %s at step %d", workdir / "checkpoints", latest)
  start = int(jax.device_get(state.step))

  writer = _summary_writer(workdir)
  step_jit = jit_step(step_fn, mesh)
  eval_every = loop.eval_every or loop.num_steps
  checkpoint_every = loop.checkpoint_every or loop.num_steps

  def evaluate(step, train_metrics=None):
    if eval_fn is None:
      return
    t0 = time.time()
    metrics = {k: float(v) for k, v in eval_fn(state, step).items()
               if np.ndim(v) == 0}
    # The step's own metrics (each loss term) beside the evaluation, so a
    # run's results show what its terms did.
    history.add({"step": step, **metrics,
                 **{f"train/{k}": v for k, v in (train_metrics or {}).items()}})
    if writer is not None:
      for k, v in metrics.items():
        writer.add_scalar(_tag(f"eval/{k}"), v, step)
      writer.flush()
    shown = {k: v for k, v in metrics.items() if "/" not in k}
    log.info("eval at step %d (%.1fs): %s", step, time.time() - t0,
             " ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))

  pbar = _progress(start, loop.num_steps, enabled=loop.progress)
  last_saved = latest
  t_last, s_last = time.time(), start
  try:
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
               else "; no checkpoint had been saved yet"))
      state = new_state
      done = step + 1
      if pbar is not None:
        pbar.update(1)
        if done % max(1, loop.log_every) == 0 or done == loop.num_steps:
          pbar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()})
      if writer is not None and (done % max(1, loop.log_every) == 0):
        for k, v in metrics.items():
          writer.add_scalar(_tag(f"train/{k}"), v, done)
        now = time.time()
        writer.add_scalar("train/steps_per_s", (done - s_last) / max(now - t_last, 1e-9), done)
        t_last, s_last = now, done
      if done % checkpoint_every == 0 or done == loop.num_steps:
        manager.save(done, args=ocp.args.StandardSave(state), force=True)
        manager.wait_until_finished()
        last_saved = done
      if done % eval_every == 0 and done != loop.num_steps:
        evaluate(done, metrics)
  finally:
    if pbar is not None:
      pbar.close()
    manager.wait_until_finished()
  final = int(jax.device_get(state.step))
  if not any(r["step"] == final for r in history.rows):
    evaluate(final, metrics if start < loop.num_steps else None)
  if writer is not None:
    writer.close()
  manager.close()
  return state, history.rows


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
  manager = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))
