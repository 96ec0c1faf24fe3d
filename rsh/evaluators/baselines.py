"""The baselines beside every method: LSH, ITQ and CCA-ITQ of a data view, random
codes, and the training SSM's agreement with the labels. None depends on the
trained state: each is computed once, before training (`base.Baseline`)."""

from __future__ import annotations

import logging

import numpy as np

from rsh import hamming
from rsh import shallow
from rsh import similarity
from rsh import update
from rsh.evaluators import base

log = logging.getLogger(__name__)


def _pool_option(cfg, name: str, default):
  pool = cfg.get("pool", default)
  if pool is not None and (isinstance(pool, bool) or not isinstance(pool, (int, np.integer))
                           or pool < 1):
    raise ValueError(f"config.evals.{name}.pool must be an integer >= 1 (or None: no "
                     f"pooling); got {pool!r}")
  return pool


def _fit_sample(cfg, name: str, n: int, seed: int) -> np.ndarray | None:
  """Sorted training rows a baseline is fitted on: `fit_rows` of them drawn from
  `seed` (an archive too big to fit on whole), or None: all `n` rows."""
  m = cfg.get("fit_rows")
  if m is None:
    return None
  if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
    raise ValueError(f"config.evals.{name}.fit_rows must be an integer >= 1 (or None: every "
                     f"training row); got {m!r}")
  if m >= n:
    return None
  return np.sort(np.random.default_rng(seed).choice(n, int(m), replace=False))


def _codes(h: shallow.LinearHash, x, pool) -> np.ndarray:
  """uint8[n, l // 8] sign codes of `x`'s rows (pooled to `pool`), a block of rows at a
  time: an on-disk set is never read whole. Blocks are multiples of 1024 rows, so
  `shallow.project` meets the same chunks as on the whole set (the same codes)."""
  block = update.block_rows(x)
  out = [hamming.pack_codes(shallow.project(h, shallow.pool_rows(x[s:s + block], pool)) >= 0)
         for s in range(0, len(x), block)]
  return np.concatenate(out) if out else np.zeros((0, h.proj.shape[1] // 8), np.uint8)


class Shallow(base.Baseline):
  """A shallow hash of a data view, fitted on the training set, the same protocol.

  `lsh`: random hyperplanes (random projection) through the training
  mean; `itq`: PCA + iterative quantisation (`rsh.shallow`). `input` is the
  view ("pixels", the config's bands in [-1, 1], or a backbone's features,
  e.g. "efficientnet_lite0"); `bits` defaults to `config.model.bits`, `seed`
  to `config.seed + 1`, ITQ's `iterations` to 50. `leave_one_out=True`: the query
  set ranks itself, each query without its own row (as `retrieval`'s). Computed
  once per run. For an archive larger than memory: `pool` (an image view averaged to
  pool x pool cells first, `rsh.shallow.pool_rows`; default none) and `fit_rows`
  (fitted on that many training rows drawn from `seed`; default all); the query and
  archive sets are hashed a block of rows at a time either way.
  """
  options = ("query", "archive", "bits", "seed", "input", "iterations", "leave_one_out",
             "pool", "fit_rows")
  kind = "lsh"

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.input = self.view("input", "pixels")
    bits, n_train = self.bits(), len(ctx.data.indices("train"))
    if self.kind == "itq" and bits > n_train:  # PCA has at most n_train directions
      raise ValueError(f"config.evals.{name}: ITQ with {bits} bits needs at least {bits} "
                       f"training images, there are {n_train}; set config.evals.{name}.bits")

  def fit(self, train: np.ndarray, bits: int, seed: int) -> shallow.LinearHash:
    if self.kind == "lsh":
      return shallow.fit_lsh(train, bits, seed)
    return shallow.fit_itq(train, bits, seed, int(self.cfg.get("iterations", 50)))

  def compute(self):
    c, data = self.ctx.config, self.ctx.data
    seed, pool = int(self.cfg.get("seed", c.seed + 1)), _pool_option(self.cfg, self.name, None)
    train = data.train_rows(self.input)
    sample = _fit_sample(self.cfg, self.name, len(train), seed)
    if sample is not None:
      train = train[sample]
    h = self.fit(shallow.pool_rows(train, pool) if pool else train, self.bits(), seed)
    codes = lambda s: _codes(h, data.x(s, self.input), pool)
    return self.score(codes(self.query), codes(self.archive))


class Itq(Shallow):
  __doc__ = Shallow.__doc__
  kind = "itq"


class CcaItq(base.Baseline):
  """CCA-ITQ (`rsh.shallow.fit_cca_itq`): the shallow cross-modal baseline.

  Fitted on the training rows of two paired views (`pair`, default the
  method's `config.data.inputs`, e.g. S1 and S2 pixels), each averaged down
  to `pool` x `pool` pixels (default 8; any patch size pools to any grid,
  `rsh.shallow.pool_rows`) and flattened; then `query_input` queries against
  the `archive_input` archive, each hashed by its view's projection. `bits`,
  `seed`, `iterations` as for ITQ; `reg` the CCA's ridge (default 1.0,
  `rsh.shallow.fit_cca_itq`); `fit_rows` as for ITQ (the same pairs of both views).
  Computed once per run.
  """
  options = ("query", "archive", "query_input", "archive_input", "pair", "pool", "bits",
             "seed", "iterations", "reg", "fit_rows")

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    pair = self.cfg.get("pair") or tuple(dict(ctx.config.data.get("inputs") or {}).values())
    if len(pair) != 2:
      raise ValueError(f"config.evals.{name}.pair must name two paired views, got {pair!r}")
    where = f"config.evals.{name}.pair" if "pair" in self.cfg else "config.data.inputs"
    self.pair = tuple(self.view_of(v, where) for v in pair)
    self.sides = tuple(self.view(k, self.pair[i])
                       for i, k in enumerate(("query_input", "archive_input")))
    for view in self.sides:
      if view not in self.pair:
        raise ValueError(f"config.evals.{name}: view {view!r} is not one of the pair {self.pair}")
    _pool_option(self.cfg, name, 8)
    self.bits()

  def compute(self):
    c, data = self.ctx.config, self.ctx.data
    pool, seed = _pool_option(self.cfg, self.name, 8), int(self.cfg.get("seed", c.seed + 1))
    sample = _fit_sample(self.cfg, self.name, len(data.indices("train")), seed)

    def train(v):  # the same sampled rows of both views: the pairs stay pairs
      x = data.train_rows(v)
      return shallow.pool_rows(x if sample is None else x[sample], pool)

    hashes = dict(zip(self.pair, shallow.fit_cca_itq(
        train(self.pair[0]), train(self.pair[1]), self.bits(), seed,
        int(self.cfg.get("iterations", 50)), float(self.cfg.get("reg", 1.0)))))
    codes = lambda s, v: _codes(hashes[v], data.x(s, v), pool)
    return self.score(codes(self.query, self.sides[0]), codes(self.archive, self.sides[1]))


class RandomCodes(base.Baseline):
  """Random sign codes for the query and archive sets: the chance level.

  Each image gets `bits` (default `config.model.bits`) fair random bits from
  `seed` (default `config.seed + 2`); every direction of a cross-modal run
  must beat it. Computed once per run.
  """
  options = ("query", "archive", "bits", "seed")

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.bits()

  def compute(self):
    c, data = self.ctx.config, self.ctx.data
    bits = self.bits()
    rng = np.random.default_rng(int(self.cfg.get("seed", c.seed + 2)))
    q, a = data.indices(self.query), data.indices(self.archive)
    codes = lambda n: hamming.pack_codes(rng.random((n, bits)) < 0.5)
    return self.score(codes(len(q)), codes(len(a)))


class SsmQuality(base.Evaluator):
  """How well the training SSM agrees with the labels (accuracy, IoU), and its
  sizes; computed once, before training (the SSM is built then anyway when a
  loss term reads it)."""
  prefix, in_loop, needs_state = "ssm/", False, False

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.result = None

  def precheck(self, state) -> None:
    self.run(state, final=True)

  def run(self, state, final):
    del state, final
    if self.result is None:
      packed, info = self.ctx.ssm()
      quality = similarity.ssm_quality(packed,
                                       self.ctx.data.labels[self.ctx.data.indices("train")])
      log.info("SSM: K1=%d K2=%d accuracy=%.4f IoU=%.4f", info["k1"], info["k2"],
               quality["accuracy"], quality["iou"])
      self.result = {**info, **quality}
    return self.result
