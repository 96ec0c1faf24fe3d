"""The retrieval evaluator: a query set against an archive, by the method's encoder."""

from __future__ import annotations

import numpy as np

from rsh import hamming
from rsh import update
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

  def _check_outputs(self, q_shapes, a_shapes) -> None:
    """`q_shapes` / `a_shapes`: {output: shape of one row} of each side's encoder."""
    for key in filter(None, (self.codes, self.vectors)):
      for side, shapes in (("query", q_shapes), ("archive", a_shapes)):
        self._has_output(side, shapes, key)
      if q_shapes[key] != a_shapes[key]:
        raise ValueError(f"config.evals.{self.name}: {key!r} of the queries "
                         f"({self.query_input}) has shape {q_shapes[key]} and of the "
                         f"archive ({self.archive_input}) {a_shapes[key]}: they "
                         "cannot be compared")

  def _has_output(self, side: str, shapes, key: str) -> None:
    if key not in shapes:
      raise ValueError(f"config.evals.{self.name}: the {side} encoder has no output "
                       f"{key!r}; it has {sorted(shapes)}")

  def _encode(self, state, side: str, cut: slice):
    """One side ("query" or "archive"): its packed codes (uint8[n, l // 8]) or None, its float outputs
    ({name: f32[n, ...]}) or None, and {output: shape of one row}.

    With `codes` alone the set streams through the encoder a block at a time
    (`update.stream_codes`): only codes are kept, never every row's floats.
    `vectors` need the floats (cosine ranking), so they are kept whole.
    """
    view = getattr(self, f"{side}_input")
    encode = self.ctx.encoder(view)
    rows = self.ctx.data.x(getattr(self, side), view)[cut]
    if self.vectors:
      out = encode(state, rows)
      shapes = {k: tuple(np.shape(v)[1:]) for k, v in out.items()}
      codes = (hamming.pack_codes(np.asarray(out[self.codes]) >= 0)
               if self.codes and self.codes in out else None)
      return codes, out, shapes
    shapes, blocks = {}, []

    def first(out):  # the outputs' shapes, and a missing output refused by name
      shapes.update({k: tuple(np.shape(v)[1:]) for k, v in out.items()})
      self._has_output(side, shapes, self.codes)
    update.stream_codes(lambda x: encode(state, x), rows, self.codes, blocks,
                        update.block_rows(rows), pad=False, check=first)
    return np.concatenate(blocks), None, shapes

  def _evaluate(self, state, final: bool, rows: int | None = None):
    data, cut = self.ctx.data, slice(rows)
    q_codes, q_out, q_shapes = self._encode(state, "query", cut)
    a_codes, a_out, a_shapes = self._encode(state, "archive", cut)
    self._check_outputs(q_shapes, a_shapes)
    ql = data.labels[data.indices(self.query)[cut]]
    al = data.labels[data.indices(self.archive)[cut]]
    out = {}
    if self.codes:
      primary = base.protocol(self, q_codes, a_codes, ql, al, final)
      out.update({f"binary/{k}": v for k, v in primary.items()})
    if self.vectors:
      nonbin = base.protocol(self, q_out[self.vectors], a_out[self.vectors], ql, al, final,
                             distance="cosine")
      out.update({f"nonbinary/{k}": v for k, v in nonbin.items()})
      if not self.codes:
        primary = nonbin
    out.update(primary)
    # What the figures draw: the codes, or the vectors when there are no codes.
    shown = ((q_codes, a_codes) if self.codes else
             (q_out[self.vectors], a_out[self.vectors]))
    return shown, out

  def run(self, state, final):
    shown, out = self._evaluate(state, final)
    self.last = (*shown, out)
    return out

  def figures(self, workdir):
    if self.last is None:
      return
    from rsh import plots  # matplotlib only when figures are drawn
    q, a, out = self.last
    suffix = "" if self.name == "retrieval" else f"_{self.name}"
    plots.pr_curve(out, workdir / f"pr_curve{suffix}.png")
    if self.codes:  # ±1 codes: what `plots.retrievals` binarises (>= 0) and packs again
      q, a = (hamming.unpack_codes(c, signed=True) for c in (q, a))
    plots.retrievals(self.ctx.data, q, a, workdir / f"retrievals{suffix}.png",
                     binary=bool(self.codes), seed=self.ctx.config.seed,
                     query=self.query, archive=self.archive,
                     query_view=self.query_input, archive_view=self.archive_input,
                     leave_one_out=self.leave_one_out)
