"""What every evaluator shares: the `Context` a run offers, the `Evaluator` base
class (options, k / n / pr_step, views, code length, the precheck) and
`Baseline`, an evaluator independent of the trained state."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, Mapping

import numpy as np

from rsh import method as rmethod
from rsh import protocol as rprotocol


@dataclasses.dataclass
class Context:
  """What a run offers its evaluators."""
  config: Any
  data: Any                                          # rsh.data.Prepared
  encode: Callable[[Any, Any], Mapping[str, np.ndarray]]
  ssm: Callable[[], tuple[np.ndarray, dict]]         # the training SSM, built once
  encoders: Mapping[str, Callable] | None = None     # per view (one network per modality)
  generate: Callable | None = None                   # the method's, if it makes images

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
  needs_state = True   # False: its precheck (and run) ignore the state, so run before init
  leave_one_out = False   # True: the query set ranks itself, each query without its own row

  def __init__(self, name: str, cfg: Mapping[str, Any], ctx: Context):
    self.name, self.cfg, self.ctx = name, dict(cfg), ctx
    unknown = sorted(set(self.cfg) - set(self.options) - set(self.COMMON))
    if unknown:
      raise ValueError(f"config.evals.{name}.{unknown[0]} is not an option of "
                       f"{type(self).__name__}; options: "
                       f"{', '.join(self.options + self.COMMON)}")
    if "in_loop" in self.cfg:
      self.in_loop = bool(self.cfg["in_loop"])
    if "leave_one_out" in self.options:
      loo = self.cfg.get("leave_one_out", False)
      if not isinstance(loo, (bool, np.bool_)):
        raise ValueError(f"config.evals.{name}.leave_one_out must be True or False; got "
                         f"{loo!r}")
      self.leave_one_out = bool(loo)

  def option(self, key: str, default=None):
    """The evaluator's own setting, else the shared `config.eval` one."""
    if key in self.cfg:
      return self.cfg[key]
    return self.ctx.config.eval.get(key, default)

  def check_protocol(self, archive: str) -> None:
    """k, n and pr_step against the archive they rank (less the query itself with
    leave-one-out), before any training."""
    size = len(self.ctx.data.indices(archive)) - self.leave_one_out
    less = " less the query itself (leave_one_out)" if self.leave_one_out else ""
    for key, low in (("k", 1), ("n", 1), ("pr_step", 0)):  # pr_step 0: no PR curve
      value = self.option(key)
      where = f"config.evals.{self.name}.{key}" if key in self.cfg else f"config.eval.{key}"
      if value is None and key == "pr_step":
        continue
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{where} must be an integer >= {low}; got {value!r}")
      if key in ("k", "n") and value > size:
        raise ValueError(f"{where}={value} is larger than the archive {archive!r} of "
                         f"config.evals.{self.name}{less} ({size} images); lower it")

  def precheck(self, state) -> None:
    """Called once with the initial state before training: refuse what would
    only fail at the first evaluation (default: nothing to check)."""
    del state

  def view(self, key: str, default=None) -> str:
    """The data view the option `key` names (else `default`), by its full name;
    an unknown one is refused naming the option."""
    where = f"config.evals.{self.name}.{key}" if key in self.cfg else "config.data.input"
    return self.view_of(self.cfg.get(key, default), where)

  def view_of(self, name, where: str) -> str:
    try:
      return self.ctx.data.view_name(name)
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from None

  def bits(self) -> int:
    """The code length: the `bits` option, else (absent or None) `config.model.bits`;
    checked."""
    own = self.cfg.get("bits") is not None
    bits = self.cfg["bits"] if own else self.ctx.config.model.bits
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 1 or bits % 8:
      where = f"config.evals.{self.name}.bits" if own else "config.model.bits"
      raise ValueError(f"{where} must be a positive multiple of 8 (codes are packed 8 bits a "
                       f"byte); got {bits!r}")
    return int(bits)

  def sets(self) -> tuple[str, str]:
    """The `query` and `archive` set names (default "query" / "archive"; with leave-one-out
    the archive is the query set), checked."""
    query = self.cfg.get("query", "query")
    archive = self.cfg.get("archive", query if self.leave_one_out else "archive")
    for key, s in (("query", query), ("archive", archive)):
      try:
        self.ctx.data.indices(s)
      except ValueError as e:
        raise ValueError(f"config.evals.{self.name}.{key}: {e}") from None
    if self.leave_one_out and not np.array_equal(self.ctx.data.indices(query),
                                                 self.ctx.data.indices(archive)):
      raise ValueError(f"config.evals.{self.name}.archive={archive!r} is not the query set "
                       f"{query!r}: leave_one_out ranks the query set against itself; drop "
                       f"`archive` or set it to {query!r}")
    return query, archive

  def run(self, state, final: bool) -> dict[str, Any]:
    raise NotImplementedError

  def figures(self, workdir: pathlib.Path) -> None:
    del workdir


def protocol(ev: Evaluator, q, a, ql, al, final: bool, **kw) -> dict:
  """The retrieval protocol with the evaluator's k, n and pr_step (capped at the
  archive given, less the query itself with leave-one-out, so a precheck on a few rows
  runs the same path)."""
  size = len(al) - ev.leave_one_out
  return rprotocol.evaluate(q, a, ql, al, k=min(int(ev.option("k")), size),
                            n=min(int(ev.option("n")), size),
                            pr_step=int(ev.option("pr_step") or 0),
                            class_names=ev.ctx.data.class_names if final else None,
                            leave_one_out=ev.leave_one_out, **kw)


class Baseline(Evaluator):
  """A baseline independent of the trained state (`compute() -> {metric: value}`):
  computed once, before training (its precheck is the whole computation, so
  it cannot fail after training), and reported with every evaluation."""
  section, in_loop, needs_state = "baselines", False, False

  def __init__(self, name, cfg, ctx):
    super().__init__(name, cfg, ctx)
    self.query, self.archive = self.sets()
    self.result = None

  def precheck(self, state) -> None:
    try:
      self.run(state, final=True)
    except ValueError as e:  # e.g. more bits than the view has dimensions
      hint = f"; set config.evals.{self.name}.bits" if "bits" in str(e) else ""
      raise ValueError(f"config.evals.{self.name} ({type(self).__name__}): {e}{hint}") from None

  def run(self, state, final):
    del state, final
    if self.result is None:
      self.result = {k: v for k, v in self.compute().items() if np.ndim(v) == 0}
    return self.result

  def compute(self) -> dict[str, Any]:
    raise NotImplementedError

  def score(self, q_codes, a_codes) -> dict[str, Any]:
    """The protocol on packed codes of the query and archive sets."""
    data = self.ctx.data
    return protocol(self, q_codes, a_codes, data.labels[data.indices(self.query)],
                     data.labels[data.indices(self.archive)], final=True)
