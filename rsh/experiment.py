"""The experiment runner: one `train_and_evaluate(config, workdir)` for every method.

    data -> what the loss terms need (e.g. the SSM) -> method.build -> train.run
         -> evaluators (in the loop and once at the end) -> results.json -> figures

A method supplies only what is its own, as an `rsh.method.Method`: the
initial state, the pure step `(state, batch, rng) -> (state, metrics)`, the
encoder `(state, rows) -> {name: f32[n, l]}`, its bound loss terms (so the
runner knows which batch inputs to make), and optionally `generate` and extra
figures. Its module exposes `build(config, data, terms) -> Method`
(`rsh/methods/__init__.py` maps `config.method` to it). What a batch holds is
`rsh.method`'s docstring.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import pathlib
import time
import warnings
from typing import Any, Callable, Mapping

import jax
import numpy as np

from rsh import data as rdata
from rsh import deprecation
from rsh import distributed
from rsh import evaluators as revals
from rsh import features  # noqa: F401  registers the features/<backbone> view
from rsh import generated
from rsh import losses as rlosses
from rsh import method as rmethod
from rsh import methods
from rsh import sharding
from rsh import similarity
from rsh import train as rtrain
from rsh.data import fingerprint

log = logging.getLogger(__name__)

# Moved to rsh.method (below both the runner and the methods); the old names
# still work for one release.
__getattr__ = deprecation.moved(__name__, dict.fromkeys(
    ("Method", "Encode", "BatchSource", "BATCH_INPUTS"), "rsh.method"))


def training_ssm(config, data: rdata.Prepared) -> tuple[np.ndarray, dict]:
  """The unsupervised SSM of the training set (thesis §5.2) as packed bits.

  `config.ssm.spatial`: a backbone's features of the RGB bands, or one of its
  views such as `efficientnet_lite0/dihedral_mean`, or "none".
  K1 and K2 are given for 5,000 training images (`config.ssm.n_ref`); smaller
  training sets scale them proportionally so each image keeps the same share
  of the set as neighbours.
  """
  c = config.ssm
  idx = data.split.train
  n = len(idx)
  k1 = similarity.scale_k(int(c.k1), n, int(c.n_ref))
  k2 = similarity.scale_k(int(c.k2), n, int(c.n_ref))
  images = np.asarray(rdata.normalise(data.images[idx], data.max_dn), np.float32)
  spatial = None
  if "/" in c.spatial:  # a backbone's augmented view, e.g. efficientnet_lite0/dihedral_mean
    spatial = data.train_rows(c.spatial)
    if spatial.ndim != 2:
      raise ValueError(f"config.ssm.spatial={c.spatial!r} is a view of shape "
                       f"{list(spatial.shape)}; the SSM needs one feature row per image")
  elif c.spatial != "none":
    rgb = data.rgb(idx)
    if rgb is None:
      raise ValueError(f"config.ssm.spatial={c.spatial!r} needs the bands "
                       f"{' '.join(rdata.RGB)} in the data")
    spatial = features.extract(c.spatial, rgb, weights=_weights(config))
  else:
    log.info("SSM: config.ssm.spatial='none', spectral features only")
  packed, info = similarity.build_ssm(
      images, spectral=c.spectral, n_bins=int(c.n_bins), n_patches=int(c.n_patches),
      spatial_features=spatial, eta=float(c.eta), k1=k1, k2=k2)
  # Wall time is not a metric (never the same twice): results.json's `timings`.
  return packed, {**{k: v for k, v in info.items() if np.ndim(v) == 0 and k != "seconds"},
                  "k1": k1, "k2": k2}


def _weights(config) -> str | None:
  """The backbone weight file: `config.data.weights` (one key for the features
  view and the SSM's CNN); a config.json from before it was one key may still
  name `ssm.weights`."""
  old = config.ssm.get("weights")
  if old and not config.data.get("weights"):
    warnings.warn("config.ssm.weights is now config.data.weights", DeprecationWarning,
                  stacklevel=2)
    return old
  return config.data.get("weights")


def results_dict(config, data: rdata.Prepared, evals, final: Mapping[str, dict],
                 history: list, seconds: float, timings: Mapping[str, float] = ()) -> dict:
  metrics, baselines, curves = {}, {}, {}
  for name, ev in evals.items():
    scalars = {k: v for k, v in final[name].items() if np.ndim(v) == 0}
    if ev.section == "baselines":
      baselines[name] = scalars
    else:
      metrics.update({f"{ev.prefix}{k}": v for k, v in scalars.items()})
      curves.update({f"{ev.prefix}{k}": np.asarray(v).tolist()
                     for k, v in final[name].items() if np.ndim(v) != 0})
  return {
      "method": config.method,
      "name": config.get("name", config.method),
      "variant": config.get("variant"),
      "data_source": config.data.source,
      "data_dir": config.data.get("dir"),
      "bands": list(data.band_names),
      "bits": None if config.model.get("bits") is None else int(config.model.bits),
      "n_query": int(len(data.split.query)),
      "n_archive": int(len(data.split.archive)),
      "n_train": int(len(data.split.train)),
      "seed": int(config.seed),
      "k": int(config.eval.k),
      "n": int(config.eval.n),
      "metrics": metrics,
      "curves": curves,
      "baselines": baselines,
      "evals": {name: {k: v for k, v in final[name].items() if np.ndim(v) == 0}
                for name in evals},
      # The k, n and pr_step each evaluator ranked with (its own, else config.eval's);
      # `k` and `n` above are config.eval's shared defaults.
      "protocol": {name: {key: ev.option(key) for key in ("k", "n", "pr_step")}
                   for name, ev in evals.items()
                   if hasattr(ev, "option") and hasattr(ev, "archive")},
      "history": history,
      "seconds": round(seconds, 1),
      "timings": dict(timings),
      # Training rows a generator added (rsh.generated: which run, step, n, seed),
      # or a second domain's (rsh.data.domains: `domain`).
      **({data.added.get("kind", "generated"): data.added}
         if getattr(data, "added", None) else {}),
  }


def _history_row(evals, results: Mapping[str, dict]) -> dict[str, float]:
  """The scalars of one evaluation, as a row of the curve (eval_history.jsonl)."""
  row = {}
  for name, res in results.items():
    ev = evals[name]
    prefix = f"{name}/" if ev.section == "baselines" else ev.prefix
    row.update({f"{prefix}{k}": v for k, v in res.items() if np.ndim(v) == 0})
  return row


def write_json(path: pathlib.Path, obj) -> None:
  """Writes `obj` to `path` atomically; in a multi-host run, by the writer alone."""
  if not distributed.is_writer():
    return
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
  os.replace(tmp, path)


def loop_config(config) -> rtrain.LoopConfig:
  """The loop's settings from `config.train`."""
  return rtrain.LoopConfig(
      num_steps=int(config.train.num_steps),
      checkpoint_every=int(config.train.checkpoint_every),
      eval_every=int(config.train.eval_every),
      log_every=int(config.train.log_every),
      progress=bool(config.train.get("progress", True)))


def batch_size(config, n_train: int | None = None) -> int | None:
  """`config.train.batch_size`, checked (against `n_train` when given); None
  means the whole training set (full-batch methods, e.g. ITQ)."""
  raw = config.train.batch_size
  if raw is not None and (isinstance(raw, bool) or not isinstance(raw, (int, np.integer))
                          or raw < 1):
    raise ValueError(f"config.train.batch_size must be an integer >= 1 (or None: the whole "
                     f"training set); got {raw!r}")
  if n_train is None:
    return None if raw is None else int(raw)
  size = n_train if raw is None else int(raw)
  if size > n_train:
    raise ValueError(f"config.train.batch_size={size} is larger than the "
                     f"training set ({n_train} images)")
  return size


def _check_mining(train, batch_size: int, terms) -> None:
  """A miner needs negatives in every batch: a P x K batch of one class (P = 1) has none,
  and the miner's loss would be 0 at every step."""
  miners = [b.name for bound in terms.values() for b in bound if b.fn in rlosses.MINERS]
  if not miners or train.get("sampler") != "pk":
    return
  k = (train.get("sampler_options") or {}).get("k") or rdata.PK_DEFAULT_K
  if batch_size // k < 2:
    raise ValueError(f"config.losses.{miners[0]} mines triplets within a batch, but "
                     f"config.train.sampler='pk' with batch_size={batch_size} and k={k} draws "
                     f"one class a batch (no negatives): use batch_size >= 2 * k")


def make_batch_fn(config, data: rdata.Prepared, method: rmethod.Method, ssm,
                  size: int, share: tuple[int, int] | None = None,
                  ) -> tuple[Callable[[int], dict[str, np.ndarray]], dict]:
  """`batch_fn(step)`: the batch of a step, a pure function of it (exact resume):
  the method's batch views (default `x`, rows of `config.data.input`) and each
  batch input a bound term reads. The SSM is built now if a term reads it, not
  in the first step; returns its wall time in `timings`. `config.train.sampler`
  (`rsh.data.samplers`, default uniform) picks the rows, checked first.

  `share` = [lo, hi): only those rows of each global batch (a multi-host run's
  process, `rsh.sharding.process_rows`): the views' rows are cut for them alone;
  a batch input (labels, the SSM block of the whole batch) is made and cut."""
  train = config.get("train") or {}   # a config from before the samplers: uniform
  _check_mining(train, size, method.terms)
  positions = rdata.sampler(train.get("sampler", "uniform"), data.labels[data.split.train],
                            size, config.seed, train.get("sampler_options"),
                            domains=data.domain_ids[data.split.train])
  keys = rlosses.input_keys(method.terms) | set(method.step_inputs)
  inputs = {k: fn for k, fn in method.inputs().items() if k in keys}
  timings = {}
  if "similarity" in inputs:
    t0 = time.time()
    ssm()
    timings["ssm"] = round(time.time() - t0, 2)
  rows = {key: data.train_rows(view) for key, view in (
      method.batch_views or {"x": config.data.get("input")}).items()}
  source = rmethod.BatchSource(data, ssm)

  lo, hi = share or (0, size)

  def batch_fn(step: int) -> dict[str, np.ndarray]:
    idx = positions(step)
    return {**{key: x[idx[lo:hi]] for key, x in rows.items()},
            **{k: fn(source, idx)[lo:hi] for k, fn in inputs.items()}}
  return batch_fn, timings


class _Evaluations:
  """Runs the evaluators at a step (every one at the end, the in-loop ones
  before) and keeps the last step's full results for results.json."""

  def __init__(self, evals, num_steps: int):
    self.evals, self.num_steps = evals, num_steps
    self.done: dict[int, dict] = {}   # step -> full results of the evaluation at that step

  def __call__(self, state, step: int) -> dict[str, dict]:
    final = step >= self.num_steps  # a resumed longer run ends past num_steps
    state = distributed.host_local(state)  # this process's whole copy (multi-host)
    results = {name: ev.run(state, final) for name, ev in self.evals.items()
               if final or ev.in_loop}
    self.done = {step: results}
    return results

  def history_row(self, state, step: int) -> dict[str, float]:
    return _history_row(self.evals, self(state, step))

  def final(self, state, step: int) -> dict[str, dict]:
    # The final evaluation ran inside the loop unless the run had already
    # finished before (a resumed, complete workdir): then it runs here, once.
    return self.done.get(step) or self(state, step)


def train_and_evaluate(config, workdir, terms: Mapping[str, Any] | None = None,
                       evaluators: Mapping[str, type] | None = None,
                       on_start: Callable[[int], None] | None = None,
                       allow_data_change: bool = False) -> dict:
  """Trains `config.method` in `workdir` (resuming if it can), evaluates, writes
  results.json, then the figures; returns the results.

  `terms`: extra or replacement loss terms (`rsh.losses.bind`), e.g. from a
  notebook; `evaluators`: extra evaluator types for `config.evals`;
  `on_start(step)`: called once the run is known to start (`rsh.train.run`).
  The data's fingerprint is recorded in the workdir then (`data.json`) and a
  resumed run's is checked before anything else: data changed under the
  workdir is refused unless `allow_data_change` (`rsh.data.fingerprint`).
  A figure that cannot be drawn (e.g. a full disk) is a warning: results.json
  is already written.
  """
  workdir = pathlib.Path(workdir)
  t_start = time.time()
  module = methods.get(config.method)
  loop = loop_config(config)
  batch_size(config)  # its type before any data is loaded
  data = generated.prepare(config)  # rsh.data.prepare, plus any generated training rows
  fp = fingerprint.fingerprint(data)
  fingerprint.check(workdir, fp, allow_data_change)
  size = batch_size(config, len(data.split.train))
  method = module.build(config, data, terms=terms)
  mesh = sharding.data_mesh()  # every process's devices
  sharding.check_batch_size(size, mesh)
  ssm = functools.cache(lambda: training_ssm(config, data))
  # The evaluators check their settings (k, n, sets, views) before any work. Each
  # process encodes its share of a set; the codes are gathered (rsh.distributed).
  encoders = method.encoders and {view: distributed.sharded_encoder(fn)
                                  for view, fn in method.encoders.items()}
  ctx = revals.Context(config=config, data=data, ssm=ssm, encoders=encoders,
                       encode=distributed.sharded_encoder(method.encode),
                       generate=method.generate)
  evals = revals.build(config.get("evals", {}), ctx, extra=evaluators)
  batch_fn, timings = make_batch_fn(config, data, method, ssm, size,
                                    share=sharding.process_rows(mesh, size))
  # Each evaluator's whole path runs now (the baselines in full, before the
  # networks are even made; the others on a few rows of the initial state):
  # nothing accepted here fails after training.
  later = [ev for ev in evals.values() if hasattr(ev, "precheck")]  # a foreign class may not
  for ev in [ev for ev in later if not getattr(ev, "needs_state", True)]:
    ev.precheck(None)
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  state = method.init(init_rng)
  for ev in [ev for ev in later if getattr(ev, "needs_state", True)]:
    ev.precheck(state)
  evaluate = _Evaluations(evals, loop.num_steps)

  def started(step: int) -> None:
    fingerprint.write(workdir, fp)
    if on_start is not None:
      on_start(step)

  state, history = rtrain.run(workdir=workdir, state=state, step_fn=method.step,
                              batch_fn=batch_fn, rng=train_rng, loop=loop,
                              eval_fn=evaluate.history_row if evals else None,
                              on_start=started, mesh=mesh)
  final = evaluate.final(state, int(jax.device_get(state.step)))
  results = results_dict(config, data, evals, final, history, seconds=time.time() - t_start,
                         timings=timings)
  results["data_digest"] = fp["digest"]
  write_json(workdir / "results.json", results)  # before the figures: nothing lost
  if not distributed.is_writer():
    return results  # figures are the writer's alone (drawn from what it holds)
  try:
    _figures(workdir, config, data, method, evals, results, distributed.host_local(state))
    # Recorded once all are drawn: a run stopped while drawing them lacks the key
    # (rsh.reproduce evaluates such a run again rather than reuse it).
    results["figures"] = sorted(p.name for p in workdir.glob("*.png"))
    write_json(workdir / "results.json", results)
  except Exception as e:  # noqa: BLE001
    # A full disk or a plotting failure must not throw away an evaluation.
    log.warning("could not draw the figures in %s (%s: %s); results.json is written",
                workdir, type(e).__name__, e)
  return results


def _figures(workdir, config, data, method: rmethod.Method, evals, results, state) -> None:
  """The run's figures, by the writer alone in a multi-host run: from `state`
  (its own copy) and what the evaluators kept, never through collectives."""
  from rsh import plots  # matplotlib only when figures are drawn
  # Every baseline as a reference line: the level the codes are to beat.
  def label(name):  # "itq_efficientnet_lite0" -> "ITQ (efficientnet_lite0)"
    kind, _, view = name.partition("_")
    if name == "random_projection":
      return "random projection (LSH, pixels)"
    return f"{kind.upper()} ({view or 'pixels'})" if kind in ("lsh", "itq") else name

  reference = {label(b): m for b, m in sorted(results["baselines"].items(),
                                              key=lambda item: item[0] != "random_projection")}
  if any("map@" in key for row in results["history"] for key in row) or reference:
    # (a generator without codes has no MAP to draw)
    plots.map_vs_steps(results["history"], workdir / "map_vs_steps.png", k=int(config.eval.k),
                       reference=reference or None)
  for ev in evals.values():
    ev.figures(workdir)
  if method.generate is not None:
    labels = np.arange(16) % len(data.class_names)  # an unconditional G reads only n
    plots.image_grid(method.generate(state, labels, config.seed), data.band_names,
                     workdir / "generated.png")
  if method.figures is not None:
    method.figures(state, workdir)
