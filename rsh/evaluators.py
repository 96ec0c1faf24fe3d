"""Evaluators, registered by name and configured in `config.evals` (big_vision style).

    config.evals.retrieval = dict(type="retrieval", query="query", archive="archive",
                                  codes="hash", vectors="hash")

builds `EVALUATORS["retrieval"](name, cfg, ctx)`; its `run(state, final)` returns
`{metric: value}`. `type` is a name below or `"package.module:Class"` (any
importable class with the same constructor and methods). What an evaluator
sees is a `Context`: the config, the prepared data, the method's encoder and
what the run built for its loss terms (e.g. the SSM).

Each evaluator says where its numbers go in results.json (`section`:
"metrics", under `prefix`, or "baselines", under its name) and whether it runs
inside the loop every `train.eval_every` (`in_loop`) or only at the end.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pathlib
import warnings
from typing import Any, Callable, Mapping

import numpy as np

from rsh import hamming
from rsh import method as rmethod
from rsh import protocol as rprotocol
from rsh import shallow
from rsh import similarity

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Context:
  """What a run offers its evaluators."""
  config: Any
  data: Any                                          # rsh.data.Prepared
  encode: Callable[[Any, Any], Mapping[str, np.ndarray]]
  ssm: Callable[[], tuple[np.ndarray, dict]]         # the training SSM, built once
  encoders: Mapping[str, Callable] | None = None     # per view (one network per modality)

  def encoder(self, view: str) -> Callable[[Any, Any], Mapping[str, np.ndarray]]:
    """The encoder of a view: the method's one for it, else its only one."""
    return rmethod.encoder_of(self.encode, self.encoders, view)


class Evaluator:
  """Base class: `run(state, final) -> {metric: value}`; `figures(workdir)`."""
  section = "metrics"   # or "baselines"
  prefix = ""
  in_loop = True
  options: tuple[str, ...] = ()   # the subclass's own config keys
  COMMON = ("k", "n", "pr_step", "in_loop")

  def __init__(self, name: str, cfg: Mapping[str, Any], ctx: Context):
    self.name, self.cfg, self.ctx = name, dict(cfg), ctx
    unknown = sorted(set(self.cfg) - set(self.options) - set(self.COMMON))
    if unknown:
      raise ValueError(f"config.evals.{name}.{unknown[0]} is not an option of "
                       f"{type(self).__name__}; options: "
                       f"{', '.join(self.options + self.COMMON)}")
    if "in_loop" in self.cfg:
      self.in_loop = bool(self.cfg["in_loop"])

  def option(self, key: str, default=None):
    """The evaluator's own setting, else the shared `config.eval` one."""
    if key in self.cfg:
      return self.cfg[key]
    return self.ctx.config.eval.get(key, default)

  def check_protocol(self, archive: str) -> None:
    """k, n and pr_step against the archive they rank, before any training."""
    size = len(self.ctx.data.indices(archive))
    for key, low in (("k", 1), ("n", 1), ("pr_step", 0)):  # pr_step 0: no PR curve
      value = self.option(key)
      where = f"config.evals.{self.name}.{key}" if key in self.cfg else f"config.eval.{key}"
      if value is None and key == "pr_step":
        continue
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{where} must be an integer >= {low}; got {value!r}")
      if key in ("k", "n") and value > size:
        raise ValueError(f"{where}={value} is larger than the archive {archive!r} of "
                         f"config.evals.{self.name} ({size} images); lower it")

  def precheck(self, state) -> None:
    """Called once with the initial state before training: refuse what would
    only fail at the first evaluation (default: nothing to check)."""
    del state

  def run(self, state, final: bool) -> dict[str, Any]:
    raise NotImplementedError

  def figures(self, workdir: pathlib.Path) -> None:
    del workdir


def _protocol(ev: Evaluator, q, a, ql, al, final: bool, **kw) -> dict:
  return rprotocol.evaluate(q, a, ql, al, k=int(ev.option("k")), n=int(ev.option("n")),
                            pr_step=int(ev.option("pr_step")),
                            class_names=ev.ctx.data.class_names if final else None, **kw)


class Retrieval(Evaluator):
  """A named query set against a named archive, by the method's encoder.

  `codes`: the encoder output scored as sign codes by Hamming ranking
  (`binary/...`); `vectors`: the output scored as real vectors by cosine
  ranking (`nonbinary/...`). The unprefixed numbers (`map@100`, ...) are the
  codes' when there are codes, else the vectors'. Outside the final
  evaluation, class-wise metrics carry class indices instead of names.
  `input` is the view both sides are encoded from (default: the one the
  method trains on); `query_input` / `archive_input` set one side each, e.g.
  S1 queries against an S2 archive. `prefix` goes before every metric name
  in results.json's `metrics` (needed when several retrieval entries run).
  """
  options = ("query", "archive", "codes", "vectors", "input", "query_input",
             "archive_input", "prefix")

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.query, self.archive = self.cfg.get("query", "query"), self.cfg.get("archive", "archive")
    self.codes, self.vectors = self.cfg.get("codes"), self.cfg.get("vectors")
    self.prefix = str(self.cfg.get("prefix", ""))
    if not (self.codes or self.vectors):
      raise ValueError(f"config.evals.{name} needs codes= or vectors= (an encoder output)")
    for s in (self.query, self.archive):
      ctx.data.indices(s)  # a clear error for an unknown set, before training
    # The view the encoder reads: the one the method trains on unless set.
    self.input = ctx.data.view_name(self.cfg.get("input", ctx.config.data.get("input")))
    self.query_input = ctx.data.view_name(self.cfg.get("query_input", self.input))
    self.archive_input = ctx.data.view_name(self.cfg.get("archive_input", self.input))
    for view in (self.query_input, self.archive_input):
      if ctx.encoders is not None:
        ctx.encoder(view)  # a view the method has no encoder for, before training
    self.last = None

  def precheck(self, state) -> None:
    """Encodes two query rows with the initial state: an output the encoder does
    not have is refused before training, not after it."""
    rows = self.ctx.data.x(self.query, self.query_input)[:2]
    self._check_outputs(self.ctx.encoder(self.query_input)(state, rows))

  def _check_outputs(self, out) -> None:
    for key in filter(None, (self.codes, self.vectors)):
      if key not in out:
        raise ValueError(f"config.evals.{self.name}: the encoder has no output {key!r}; "
                         f"it has {sorted(out)}")

  def run(self, state, final):
    data = self.ctx.data
    q_out = self.ctx.encoder(self.query_input)(state, data.x(self.query, self.query_input))
    a_out = self.ctx.encoder(self.archive_input)(state, data.x(self.archive, self.archive_input))
    self._check_outputs(q_out)
    ql, al = data.labels[data.indices(self.query)], data.labels[data.indices(self.archive)]
    out = {}
    if self.codes:
      q, a = q_out[self.codes], a_out[self.codes]
      primary = _protocol(self, hamming.pack_codes(q >= 0), hamming.pack_codes(a >= 0),
                          ql, al, final)
      out.update({f"binary/{k}": v for k, v in primary.items()})
    if self.vectors:
      nonbin = _protocol(self, q_out[self.vectors], a_out[self.vectors], ql, al, final,
                         distance="cosine")
      out.update({f"nonbinary/{k}": v for k, v in nonbin.items()})
      if not self.codes:
        primary = nonbin
    out.update(primary)
    self.last = (q_out, a_out, out)
    return out

  def figures(self, workdir):
    if self.last is None:
      return
    from rsh import plots  # matplotlib only when figures are drawn
    q_out, a_out, out = self.last
    suffix = "" if self.name == "retrieval" else f"_{self.name}"
    plots.pr_curve(out, workdir / f"pr_curve{suffix}.png")
    key = self.codes or self.vectors
    plots.retrievals(self.ctx.data, q_out[key], a_out[key], workdir / f"retrievals{suffix}.png",
                     binary=bool(self.codes), seed=self.ctx.config.seed,
                     query=self.query, archive=self.archive,
                     query_view=self.query_input, archive_view=self.archive_input)


class Shallow(Evaluator):
  """A shallow hash of a data view, fitted on the training set, the same protocol.

  `lsh`: random hyperplanes (random projection) through the training
  mean; `itq`: PCA + iterative quantisation (`rsh.shallow`). `input` is the
  view ("pixels", the config's bands in [-1, 1], or a backbone's features,
  e.g. "efficientnet_lite0"); `bits` defaults to `config.model.bits`, `seed`
  to `config.seed + 1`, ITQ's `iterations` to 50. Computed once per run.
  """
  section, in_loop = "baselines", False
  options = ("query", "archive", "bits", "seed", "input", "iterations")
  kind = "lsh"

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.query, self.archive = self.cfg.get("query", "query"), self.cfg.get("archive", "archive")
    for s in (self.query, self.archive):
      ctx.data.indices(s)
    self.input = ctx.data.view_name(self.cfg.get("input", "pixels"))
    bits, n_train = int(self.cfg.get("bits", ctx.config.model.bits)), len(ctx.data.indices("train"))
    if self.kind == "itq" and bits > n_train:  # PCA has at most n_train directions
      raise ValueError(f"config.evals.{name}: ITQ with {bits} bits needs at least {bits} "
                       f"training images, there are {n_train}; set config.evals.{name}.bits")
    self.result = None

  def run(self, state, final):
    del state, final
    if self.result is None:  # independent of the state: computed once
      self.result = self._compute()
    return self.result

  def fit(self, train: np.ndarray, bits: int, seed: int) -> shallow.LinearHash:
    if self.kind == "lsh":
      return shallow.fit_lsh(train, bits, seed)
    return shallow.fit_itq(train, bits, seed, int(self.cfg.get("iterations", 50)))

  def _compute(self):
    c, data = self.ctx.config, self.ctx.data
    bits = int(self.cfg.get("bits", c.model.bits))
    h = self.fit(data.train_rows(self.input), bits, int(self.cfg.get("seed", c.seed + 1)))
    q, a = data.indices(self.query), data.indices(self.archive)
    codes = lambda s: hamming.pack_codes(shallow.project(h, data.x(s, self.input)) >= 0)
    res = _protocol(self, codes(self.query), codes(self.archive), data.labels[q],
                    data.labels[a], final=True)
    return {k: v for k, v in res.items() if np.ndim(v) == 0}


class Itq(Shallow):
  __doc__ = Shallow.__doc__
  kind = "itq"


class CcaItq(Evaluator):
  """CCA-ITQ (`rsh.shallow.fit_cca_itq`): the shallow cross-modal baseline.

  Fitted on the training rows of two paired views (`pair`, default the
  method's `config.data.inputs`, e.g. S1 and S2 pixels), each averaged down
  to `pool` x `pool` pixels (default 8) and flattened; then `query_input`
  queries against the `archive_input` archive, each hashed by its view's
  projection. `bits`, `seed`, `iterations` as for ITQ; `reg` the CCA's ridge
  (default 1.0, `rsh.shallow.fit_cca_itq`). Computed once per run.
  """
  section, in_loop = "baselines", False
  options = ("query", "archive", "query_input", "archive_input", "pair", "pool", "bits",
             "seed", "iterations", "reg")

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.query, self.archive = self.cfg.get("query", "query"), self.cfg.get("archive", "archive")
    for s in (self.query, self.archive):
      ctx.data.indices(s)
    pair = self.cfg.get("pair") or tuple(dict(ctx.config.data.get("inputs") or {}).values())
    if len(pair) != 2:
      raise ValueError(f"config.evals.{name}.pair must name two paired views, got {pair!r}")
    self.pair = tuple(ctx.data.view_name(v) for v in pair)
    self.sides = tuple(ctx.data.view_name(self.cfg.get(k, self.pair[i]))
                       for i, k in enumerate(("query_input", "archive_input")))
    for view in self.sides:
      if view not in self.pair:
        raise ValueError(f"config.evals.{name}: view {view!r} is not one of the pair {self.pair}")
    self.result = None

  def run(self, state, final):
    del state, final
    if self.result is None:
      c, data = self.ctx.config, self.ctx.data
      pool = self.cfg.get("pool", 8)
      rows = lambda s, v: shallow.pool_rows(data.x(s, v) if s != "train" else data.train_rows(v),
                                            pool)
      hashes = dict(zip(self.pair, shallow.fit_cca_itq(
          rows("train", self.pair[0]), rows("train", self.pair[1]),
          int(self.cfg.get("bits", c.model.bits)), int(self.cfg.get("seed", c.seed + 1)),
          int(self.cfg.get("iterations", 50)), float(self.cfg.get("reg", 1.0)))))
      codes = lambda s, v: hamming.pack_codes(shallow.project(hashes[v], rows(s, v)) >= 0)
      q, a = data.indices(self.query), data.indices(self.archive)
      res = _protocol(self, codes(self.query, self.sides[0]), codes(self.archive, self.sides[1]),
                      data.labels[q], data.labels[a], final=True)
      self.result = {k: v for k, v in res.items() if np.ndim(v) == 0}
    return self.result


class RandomCodes(Evaluator):
  """Random sign codes for the query and archive sets: the chance level.

  Each image gets `bits` (default `config.model.bits`) fair random bits from
  `seed` (default `config.seed + 2`); every direction of a cross-modal run
  must beat it. Computed once per run.
  """
  section, in_loop = "baselines", False
  options = ("query", "archive", "bits", "seed")

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.query, self.archive = self.cfg.get("query", "query"), self.cfg.get("archive", "archive")
    for s in (self.query, self.archive):
      ctx.data.indices(s)
    self.result = None

  def run(self, state, final):
    del state, final
    if self.result is None:
      c, data = self.ctx.config, self.ctx.data
      bits = int(self.cfg.get("bits", c.model.bits))
      rng = np.random.default_rng(int(self.cfg.get("seed", c.seed + 2)))
      q, a = data.indices(self.query), data.indices(self.archive)
      codes = lambda n: hamming.pack_codes(rng.random((n, bits)) < 0.5)
      res = _protocol(self, codes(len(q)), codes(len(a)), data.labels[q], data.labels[a],
                      final=True)
      self.result = {k: v for k, v in res.items() if np.ndim(v) == 0}
    return self.result


class SsmQuality(Evaluator):
  """How well the training SSM agrees with the labels (accuracy, IoU), and its sizes."""
  prefix, in_loop = "ssm/", False

  def run(self, state, final):
    del state, final
    packed, info = self.ctx.ssm()
    quality = similarity.ssm_quality(packed, self.ctx.data.labels[self.ctx.data.indices("train")])
    log.info("SSM: K1=%d K2=%d accuracy=%.4f IoU=%.4f", info["k1"], info["k2"],
             quality["accuracy"], quality["iou"])
    return {**info, **quality}


EVALUATORS: Mapping[str, type] = {
    "retrieval": Retrieval,
    "lsh": Shallow,
    "itq": Itq,
    "random_codes": RandomCodes,
    "cca_itq": CcaItq,
    "ssm_quality": SsmQuality,
}


# Old type names, for one release.
_RENAMED = {"random_projection": "lsh"}


def build(evals_config: Mapping[str, Any], ctx: Context,
          extra: Mapping[str, type] | None = None) -> dict[str, Evaluator]:
  """`config.evals` -> {name: evaluator}; `extra` adds types (e.g. a notebook's)."""
  known = {**EVALUATORS, **(extra or {})}
  out = {}
  for name, cfg in evals_config.items():
    cfg = dict(cfg)
    kind = str(cfg.pop("type", name))
    if kind in _RENAMED and kind not in known:
      warnings.warn(f"config.evals.{name}.type={kind!r} is now {_RENAMED[kind]!r}",
                    DeprecationWarning, stacklevel=2)
      kind = _RENAMED[kind]
    if kind in known:
      cls = known[kind]
    elif ":" in kind:
      module, _, attr = kind.partition(":")
      try:
        cls = getattr(importlib.import_module(module), attr)
      except (ImportError, AttributeError) as e:
        raise ValueError(f"config.evals.{name}.type: cannot import {kind!r}: {e}") from None
    else:
      raise ValueError(f"config.evals.{name}.type={kind!r} is unknown; known: "
                       f"{', '.join(sorted(known))} (or 'package.module:Class')")
    out[name] = cls(name, cfg, ctx)
    if isinstance(getattr(out[name], "archive", None), str):
      out[name].check_protocol(out[name].archive)
  return out
