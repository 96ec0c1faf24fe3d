"""One network's train state and the generic update every method's step is made of.

A method's state is a `TrainState`: the step count and one `NetState` per
network (params, BatchNorm statistics, optimiser state), keyed by the network's
name, which is what `config.losses.<term>.on` names. A step is a few calls of
`update_net`: a GAN's step two (D, then G against the new D), DHNN-MS's one, a
hashing MLP on frozen features one.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

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


def in_batches(fn: Callable[[jax.Array], Mapping[str, jax.Array]], images,
               batch_size: int = 256) -> dict[str, np.ndarray]:
  """`fn` over `images` in fixed-size chunks (one compilation), on the host."""
  outs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    if pad:  # a fixed shape: one compilation for the whole archive
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out = jax.device_get(fn(chunk))
    outs.append({k: v[:batch_size - pad] for k, v in out.items()})
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


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
