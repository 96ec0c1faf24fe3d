"""What a method gives the runner, and what a batch may hold besides `x`.

A method module (`rsh/methods/<name>.py`, or any importable module) exposes
`build(config, data, terms) -> Method`. This module sits below both the runner
(`rsh.experiment`) and the methods, so neither imports the other for it.

The batch of step `s` holds `x` (training rows of the view `config.data.input`:
pixels in [-1, 1] by default, or e.g. frozen features), or the views a method
names in `Method.batch_views`, and each batch input a bound loss term reads:
`BATCH_INPUTS` (`similarity`, the SSM block of the batch; `labels`) plus the
method's own `Method.batch_inputs` (e.g. cluster ids), all cut from a pure
function of `s` (exact resume).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, Mapping

import jax
import numpy as np

from rsh import similarity
from rsh import train as rtrain

Encode = Callable[[Any, Any], Mapping[str, np.ndarray]]   # (state, rows) -> {name: f32[n, l]}


@dataclasses.dataclass(frozen=True)
class BatchSource:
  """What a batch input is cut from: the prepared data and the (lazy) training SSM."""
  data: Any                                   # rsh.data.Prepared
  ssm: Callable[[], tuple[np.ndarray, dict]]  # () -> (packed SSM, info), built once


# fn(BatchSource, batch rows of the training set) -> that input's rows.
BatchInput = Callable[[BatchSource, np.ndarray], np.ndarray]

# Batch inputs any loss term may read, made only when a bound term reads its key.
BATCH_INPUTS: Mapping[str, BatchInput] = {
    "similarity": lambda src, idx: similarity.ssm_rows(src.ssm()[0], idx),
    "labels": lambda src, idx: np.asarray(src.data.labels[src.data.split.train[idx]]),
}


def code_bits(config, multiple: int = 8) -> int:
  """`config.model.bits`, checked: a positive multiple of `multiple` (the codes
  of a network method are packed 8 bits a byte)."""
  bits = config.model.bits
  if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 1 or (
      bits % multiple):
    raise ValueError(f"config.model.bits must be a positive multiple of {multiple}; "
                     f"got {bits!r}")
  return int(bits)


def encoder_of(encode: Encode, encoders: Mapping[str, Encode] | None, view: str) -> Encode:
  """`encoders[view]` for a method with one encoder per view, else `encode`."""
  if encoders is None:
    return encode
  if view not in encoders:
    raise ValueError(f"the method encodes the views {', '.join(encoders)}, not {view!r}")
  return encoders[view]


@dataclasses.dataclass(frozen=True)
class Method:
  """A built method: the initial state, the pure step, its encoder(s), its
  bound loss terms (so the runner knows which batch inputs to make), and
  optionally `generate` and extra figures.

  `encode` encodes rows of the view the method trains on; a method with one
  network per modality adds `encoders` ({view: encoder}). Read either through
  `encoder(view)`, the one way evaluators and notebooks get an encoder.
  `batch_views` (optional): {batch key: view} when the batch holds more than
  `x` (e.g. `{"s1": "s1", "s2": "pixels"}`, rows of the same pairs).
  `batch_inputs` (optional): the method's own batch inputs beside
  `BATCH_INPUTS` ({key: fn(BatchSource, rows)}), made when a bound term reads them
  or `step_inputs` names them.
  """
  init: Callable[[jax.Array], Any]
  step: rtrain.StepFn
  encode: Encode
  terms: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # losses.bind(...)
  # (state, labels int[n], seed) -> f32[n, 64, 64, c] images of those classes in
  # [-1, 1] (an unconditional generator reads only n); `rsh.gan.make_generate`.
  generate: Callable[[Any, np.ndarray, int], np.ndarray] | None = None
  conditional: bool = False   # `generate` makes images of the labels asked (a conditional GAN)
  figures: Callable[[Any, pathlib.Path], None] | None = None
  encoders: Mapping[str, Encode] | None = None
  batch_views: Mapping[str, str] | None = None
  batch_inputs: Mapping[str, BatchInput] | None = None
  # Batch inputs the step itself reads, whatever the terms read (a conditional
  # GAN's `labels`).
  step_inputs: tuple[str, ...] = ()

  def encoder(self, view: str) -> Encode:
    """The encoder of a (canonical) view: the method's one for it, else its only one."""
    return encoder_of(self.encode, self.encoders, view)

  def inputs(self) -> dict[str, BatchInput]:
    """Every batch input this method's terms may read: the shared ones and its own."""
    return {**BATCH_INPUTS, **(self.batch_inputs or {})}
