"""Eager shape checks shared by the loss terms, and the matmul precision they use.

Shapes are static under `jax.jit`, so these run once per trace: a ValueError
names the function and the offending shapes before XLA sees a mismatch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# bf16 passes (TPU default) would put ~1e-2 error on the inner products.
HIGHEST = jax.lax.Precision.HIGHEST


def check_codes(h: Array, where: str) -> None:
  """Raise unless `h` is [batch, code_length] (the UAHM terms' wording)."""
  if h.ndim != 2:
    raise ValueError(f"{where}: codes must be [batch, code_length], got shape {tuple(h.shape)}")


def check_rank2(where: str, **arrays: Array) -> None:
  """Raise unless every named array is rank 2 [batch, dim]."""
  for name, x in arrays.items():
    if jnp.ndim(x) != 2:
      raise ValueError(f"{where}: {name} must be rank 2 [batch, dim], got shape "
                       f"{tuple(jnp.shape(x))}")


def check_same(where: str, axis: int, what: str, **arrays: Array) -> None:
  """Raise unless the named arrays agree in size along `axis` (`what` names it)."""
  sizes = {name: jnp.shape(x)[axis] for name, x in arrays.items()}
  if len(set(sizes.values())) > 1:
    shapes = ", ".join(f"{name} {tuple(jnp.shape(x))}" for name, x in arrays.items())
    raise ValueError(f"{where}: {', '.join(arrays)} must have the same {what}, got {shapes}")


def l2_normalise(x: Array, eps: float = 1e-8) -> Array:
  """Rows of x / max(||x||, eps) (torch's F.normalize): a zero row stays zero and
  its gradient stays finite (the max picks the constant, whose gradient is 0)."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))
