"""LSH and ITQ as methods on the core (`configs/lsh.py`, `configs/itq.py`).

Both hash the view `config.data.input` (pixels or frozen features, see
`rsh.data.prepared`) linearly: codes = sign((x - mean) @ proj). LSH draws
`proj` at init and has nothing to train (one no-op step). ITQ fits PCA at
init and runs one ITQ alternation per step (`rsh.shallow.itq_step`) on the
whole training set (`train.batch_size=None`); its quantisation loss is the
training curve.
"""

from __future__ import annotations

import contextlib

import jax.numpy as jnp
import numpy as np

from rsh import method as rmethod
from rsh import shallow
from rsh import update


def _encoder(hash_of):
  def encode(state, x) -> dict[str, np.ndarray]:
    return {"hash": shallow.project(hash_of(state), x)}
  return encode


@contextlib.contextmanager
def _named(key: str):
  """A ValueError of the fit (e.g. more bits than images) names the config key."""
  try:
    yield
  except ValueError as e:
    raise ValueError(f"{key}: {e}") from None


def build_lsh(config, data, terms=None) -> rmethod.Method:
  del terms
  with _named("config.model.bits"):
    h = shallow.fit_lsh(data.train_rows(config.data.get("input")), config.model.bits,
                        config.seed)

  def step(state, batch, rng):
    del batch, rng
    return update.TrainState(step=state.step + 1, nets=state.nets), {}

  return rmethod.Method(init=lambda rng: update.TrainState.create({"hash": h}),
                           step=step, encode=_encoder(lambda s: s.nets["hash"]))


def build_itq(config, data, terms=None) -> rmethod.Method:
  del terms
  bits = int(config.model.bits)
  with _named("config.model.bits"):
    pca = shallow.pca(data.train_rows(config.data.get("input")), bits)
  rotation = shallow.random_rotation(bits, config.seed)

  def step(state, batch, rng):
    del rng
    p = state.nets["pca"]
    v = batch["x"].reshape(batch["x"].shape[0], -1) - p.mean
    r, loss = shallow.itq_step(v @ p.proj, state.nets["rotation"])
    return update.TrainState(step=state.step + 1, nets={"pca": p, "rotation": r}), {
        "quantisation": loss}

  def init(rng):
    del rng  # seeded by config.seed, like the LSH baseline evaluator
    return update.TrainState.create({"pca": pca, "rotation": jnp.asarray(rotation)})

  return rmethod.Method(init=init, step=step, encode=_encoder(
      lambda s: shallow.with_rotation(s.nets["pca"], np.asarray(s.nets["rotation"]))))
