"""The retrieval evaluator: a query set against an archive, by the method's encoder."""

from __future__ import annotations

import numpy as np

from rsh import hamming
from rsh.evaluators import base


class Retrieval(base.Evaluator):
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
  `leave_one_out=True`: the query set is the archive (`archive` defaults to it) and
  each query ranks it without itself (the MiLAN / thesis ch. 4 protocol); same metric
  names, k and n at most the set size - 1.
  """
  options = ("query", "archive", "codes", "vectors", "input", "query_input",
             "archive_input", "prefix", "leave_one_out")

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.query, self.archive = self.sets()
    self.codes, self.vectors = self.cfg.get("codes"), self.cfg.get("vectors")
    self.prefix = str(self.cfg.get("prefix", ""))
    if not (self.codes or self.vectors):
      raise ValueError(f"config.evals.{name} needs codes= or vectors= (an encoder output)")
    # The view the encoder reads: the one the method trains on unless set.
    self.input = self.view("input", ctx.config.data.get("input"))
    self.query_input = self.view("query_input", self.input)
    self.archive_input = self.view("archive_input", self.input)
    for view in (self.query_input, self.archive_input):
      if ctx.encoders is not None:
        ctx.encoder(view)  # a view the method has no encoder for, before training
    self.last = None

  def precheck(self, state) -> None:
    """The whole evaluation on two query and two archive rows with the initial
    state: an output the encoder does not have, codes of two lengths, or a
    protocol that cannot run is refused before training, not after it."""
    self._evaluate(state, final=True, rows=2)

  def _check_outputs(self, q_out, a_out) -> None:
    for key in filter(None, (self.codes, self.vectors)):
      for side, out in (("query", q_out), ("archive", a_out)):
        if key not in out:
          raise ValueError(f"config.evals.{self.name}: the {side} encoder has no output "
                           f"{key!r}; it has {sorted(out)}")
      if np.shape(q_out[key])[1:] != np.shape(a_out[key])[1:]:
        raise ValueError(f"config.evals.{self.name}: {key!r} of the queries "
                         f"({self.query_input}) has shape {np.shape(q_out[key])[1:]} and of the "
                         f"archive ({self.archive_input}) {np.shape(a_out[key])[1:]}: they "
                         "cannot be compared")

  def _evaluate(self, state, final: bool, rows: int | None = None):
    data, cut = self.ctx.data, slice(rows)
    q_out = self.ctx.encoder(self.query_input)(state, data.x(self.query, self.query_input)[cut])
    a_out = self.ctx.encoder(self.archive_input)(
        state, data.x(self.archive, self.archive_input)[cut])
    self._check_outputs(q_out, a_out)
    ql = data.labels[data.indices(self.query)[cut]]
    al = data.labels[data.indices(self.archive)[cut]]
    out = {}
    if self.codes:
      q, a = q_out[self.codes], a_out[self.codes]
      primary = base.protocol(self, hamming.pack_codes(q >= 0), hamming.pack_codes(a >= 0),
                          ql, al, final)
      out.update({f"binary/{k}": v for k, v in primary.items()})
    if self.vectors:
      nonbin = base.protocol(self, q_out[self.vectors], a_out[self.vectors], ql, al, final,
                         distance="cosine")
      out.update({f"nonbinary/{k}": v for k, v in nonbin.items()})
      if not self.codes:
        primary = nonbin
    out.update(primary)
    return q_out, a_out, out

  def run(self, state, final):
    q_out, a_out, out = self._evaluate(state, final)
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
                     query_view=self.query_input, archive_view=self.archive_input,
                     leave_one_out=self.leave_one_out)
