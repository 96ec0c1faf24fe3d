"""One network's train state and the generic update every method's step is made of.

A method's state is a `TrainState`: the step count and one `NetState` per
network (params, BatchNorm statistics, optimiser state), keyed by the network's
name, which is what `config.losses.<term>.on` names. A step is a few calls of
`update_net`: a GAN's step two (D, then G against the new D), DHNN-MS's one, a
hashing MLP on frozen features one.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rsh import hamming
from rsh import losses as rlosses


@flax.struct.dataclass
class NetState:
  params: Any
  batch_stats: Any
  opt_state: Any


@flax.struct.dataclass
class TrainState:
  """What a run carries between steps (a pytree; `step` is what train.run reads)."""
  step: jax.Array
  nets: dict   # {network name: NetState}

  @classmethod
  def create(cls, nets: Mapping[str, NetState]) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), nets=dict(nets))


def optimizer(optim) -> optax.GradientTransformation:
  """`config.optim` -> optax: Adam (the only kind the thesis methods use)."""
  kind = optim.get("type", "adam")
  if kind != "adam":
    raise ValueError(f"config.optim.type must be 'adam', got {kind!r}")
  return optax.adam(optim.lr, b1=optim.b1, b2=optim.b2, eps=optim.get("eps", 1e-8))


def init_net(model, tx: optax.GradientTransformation, rng, *example) -> NetState:
  """Initialises `model` on example inputs (eval mode) with a fresh optimiser."""
  variables = model.init(rng, *example, train=False)
  params = variables["params"]
  return NetState(params=params, batch_stats=variables.get("batch_stats", {}),
                  opt_state=tx.init(params))


def apply(model, params, batch_stats, *args):
  """A train-mode forward pass: (outputs, updated BatchNorm statistics)."""
  out, upd = model.apply({"params": params, "batch_stats": batch_stats}, *args, train=True,
                         mutable=["batch_stats"])
  return out, upd.get("batch_stats", {})   # {}: a network without BatchNorm


Forward = Callable[[Any], tuple[Mapping[str, Any], Any]]


def update_net(net: NetState, tx: optax.GradientTransformation, forward: Forward,
               terms: Sequence[rlosses.Bound], batch: Mapping[str, Any], prefix: str
               ) -> tuple[NetState, dict[str, jax.Array]]:
  """One optimiser step of one network on its bound loss terms.

  Args:
    forward: `params -> (outputs, new batch stats)`; the terms read `outputs`
      merged over `batch`.
    terms: `rsh.losses.bind(...)[network]`.
    prefix: metric names: `{prefix}_loss` (the total) and `{prefix}/<term>`.

  Returns:
    The updated NetState and the step's metrics.
  """
  def loss_fn(params):
    outputs, stats = forward(params)
    total, values = rlosses.total_loss(terms, {**batch, **outputs})
    return total, (values, stats)

  (total, (values, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
  updates, opt_state = tx.update(grads, net.opt_state, net.params)
  new = NetState(params=optax.apply_updates(net.params, updates), batch_stats=stats,
                 opt_state=opt_state)
  return new, {f"{prefix}_loss": total, **{f"{prefix}/{k}": v for k, v in values.items()}}


def update_net_from(net: NetState, tx: optax.GradientTransformation, y: Any, pull: Callable,
                    stats: Any, head: Callable[[Any], Mapping[str, Any]],
                    terms: Sequence[rlosses.Bound], batch: Mapping[str, Any], prefix: str
                    ) -> tuple[NetState, dict[str, jax.Array]]:
  """`update_net` for a network whose forward pass has already run.

  The same update as `update_net(net, tx, lambda p: (head(f(p)), stats), ...)`
  where `y, pull, stats = jax.vjp(f, net.params, has_aux=True)`: the loss's
  gradient w.r.t. `y` is pulled back through the saved pass (the chain rule
  reverse mode applies anyway), so a pass already needed elsewhere (UAHM's G
  makes the images D's step reads) is not run twice.

  Args:
    y: the network's output; `pull`: its vjp; `stats`: its new BatchNorm statistics.
    head: `y -> outputs` the terms read (the rest of the forward pass, e.g. a frozen D).
  """
  def loss_fn(y):
    total, values = rlosses.total_loss(terms, {**batch, **head(y)})
    return total, values

  (total, values), g_y = jax.value_and_grad(loss_fn, has_aux=True)(y)
  grads, = pull(g_y)
  updates, opt_state = tx.update(grads, net.opt_state, net.params)
  new = NetState(params=optax.apply_updates(net.params, updates), batch_stats=stats,
                 opt_state=opt_state)
  return new, {f"{prefix}_loss": total, **{f"{prefix}/{k}": v for k, v in values.items()}}


# Rows per block of a streamed encoding (`stream_codes` over a method's encoder):
# a multiple of the encoders' own chunks (64 and 256 rows in `in_batches`, 1024 in
# `rsh.shallow.project`), so every row meets the same chunk, at the same place, as
# in one whole-set call: the codes are bit for bit the same.
ENCODE_BLOCK = 4096
# Bytes of input rows per block at most (when fewer than ENCODE_BLOCK rows fill it):
# 4096 BigEarthNet S2 rows at 120 px would be 2.4 GB of f32.
ENCODE_BYTES = 1 << 28


def block_rows(rows, block: int | None = None, max_bytes: int | None = None) -> int:
  """Rows per block of a streamed encoding of `rows` (anything with `shape`, `dtype`).

  `block` (default `ENCODE_BLOCK`), cut to `max_bytes` (default `ENCODE_BYTES`) of
  input rows but never below 1024 rows (a multiple of 1024 keeps the encoders' own
  chunks, see `ENCODE_BLOCK`).
  """
  block = ENCODE_BLOCK if block is None else int(block)
  max_bytes = ENCODE_BYTES if max_bytes is None else int(max_bytes)
  shape = getattr(rows, "shape", None)
  if shape is None or len(shape) < 2:
    return block
  row_bytes = int(np.prod(shape[1:])) * np.dtype(getattr(rows, "dtype", np.float32)).itemsize
  fit = max(1024, max_bytes // max(row_bytes, 1) // 1024 * 1024)
  return min(block, fit)


def iter_batches(fn: Callable[[Any], Mapping[str, Any]], rows, batch_size: int = 256, *,
                 pad: bool = True, start: int = 0) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
  """`fn` over consecutive blocks of `rows`, one block's outputs at a time, on the host.

  Args:
    fn: `rows[lo:hi] -> {name: array[m, ...]}` (a jitted forward pass, or a whole
      `rsh.method.Encode` bound to its state).
    rows: anything with `len` and slicing (an array, `Prepared.x`'s lazy pixels).
    pad: pad the last block with zero rows to `batch_size` (a fixed shape: one
      compilation for the whole archive); off for an `fn` that pads itself.
    start: the first row (a resumed encoding).

  Yields:
    `(lo, {name: np.ndarray[m, ...]})`: the outputs of rows `lo..lo + m`, padding cut.
    Nothing here keeps a block once it is yielded, so a consumer that drops it
    holds one block of outputs at a time.
  """
  for lo in range(start, len(rows), batch_size):
    chunk = rows[lo:lo + batch_size]
    m = len(chunk)
    if pad and m < batch_size:  # a fixed shape: one compilation for the whole archive
      chunk = np.concatenate([chunk, np.zeros((batch_size - m,) + chunk.shape[1:], chunk.dtype)])
    out = jax.device_get(fn(chunk))
    del chunk
    block = {k: v[:m] for k, v in out.items()}
    del out  # the padded outputs: only `block` may outlive the yield
    yield lo, block
    del block


def in_batches(fn: Callable[[jax.Array], Mapping[str, jax.Array]], images,
               batch_size: int = 256) -> dict[str, np.ndarray]:
  """`fn` over `images` in fixed-size chunks (one compilation), on the host: every
  output of every row, concatenated (`iter_batches`' blocks)."""
  outs = [out for _, out in iter_batches(fn, images, batch_size)]
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def stream_codes(fn: Callable[[Any], Mapping[str, Any]], rows, key: str, sink,
                 batch_size: int = 256, *, pad: bool = True, start: int = 0, ids=None,
                 check: Callable[[Mapping[str, np.ndarray]], None] | None = None) -> int:
  """Packed sign codes of `fn(rows)[key]`, handed to `sink` a block at a time.

  Each block's `hamming.pack_codes(out[key] >= 0)` (uint8[m, l // 8]) goes to
  `sink.append(codes)`, or `sink.append(codes, ids[lo:lo + m])` when `ids` (int[n],
  one per row of `rows`) is given: a list, or an `rsh.search.codefile.CodeWriter`.
  The float outputs of one block at most are alive at a time, so an archive of
  any size is encoded in the memory of one block (codes, 32x smaller than f32,
  are the sink's business). Blocks as `iter_batches`' (`pad`, `start`).

  Args:
    check: called with the first block's outputs before anything is packed (e.g.
      to refuse an encoder without `key`).

  Returns:
    The number of rows encoded (`len(rows) - start`).
  """
  done = 0
  for lo, out in iter_batches(fn, rows, batch_size, pad=pad, start=start):
    if check is not None and lo == start:
      check(out)
    if key not in out:
      raise ValueError(f"the encoder has no output {key!r}; it has {sorted(out)}")
    codes = hamming.pack_codes(np.asarray(out[key]) >= 0)
    del out  # this block's floats go before the next block is encoded
    if ids is None:
      sink.append(codes)
    else:
      sink.append(codes, ids[lo:lo + len(codes)])
    done += len(codes)
  return done


def recalibrate_batch_stats(model, params, batch_stats, images, batch_size: int,
                            momentum: float) -> Any:
  """BatchNorm running statistics re-estimated exactly on `images`.

  Each layer's running mean / variance becomes the mean over full batches of
  its batch moments (train-mode forward passes, so every layer sees inputs
  normalised as in training). Starting the running averages at zero, one update
  leaves (1 - momentum) * moment, which is how the moments are read out.
  """
  n = len(images)
  size = min(batch_size, n)
  zeros = jax.tree.map(jnp.zeros_like, batch_stats)

  @jax.jit
  def moments(params, x):
    _, upd = apply(model, params, zeros, x)
    return jax.tree.map(lambda v: v / (1.0 - momentum), upd)

  total, count = None, 0
  for start in range(0, n - size + 1, size):
    m = moments(params, jnp.asarray(images[start:start + size]))
    total = m if total is None else jax.tree.map(jnp.add, total, m)
    count += 1
  return jax.tree.map(lambda v: v / count, total)
