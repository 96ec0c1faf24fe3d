"""Small layers shared by the rsh models.

`ConvTranspose2x` is a drop-in for `nn.ConvTranspose(features, (k, k), strides=(2, 2),
padding="SAME")` (same parameters, same initialiser, same numbers) that XLA on CPU
can differentiate quickly; see `ConvTranspose2x` for how. `Conv` is the same for
`nn.Conv(features, (k, k), strides=(s, s), padding="SAME")`: with stride 2 its input
gradient (itself a stride-2 transposed convolution) runs in the same phase form.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import dtypes as flax_dtypes

Array = jax.Array
Initializer = Callable[..., Array]

IMPLS = ("phase", "xla")

_DIMS = ("NHWC", "HWIO", "NHWC")


def _same_transpose_padding(k: int, s: int) -> tuple[int, int]:
  """The (before, after) padding that `lax.conv_transpose(..., "SAME")` applies.

  Mirrors jax's private `_conv_transpose_padding`, which pads the stride-dilated
  input before an ordinary stride-1 correlation with the (unflipped) kernel.
  """
  pad_len = k + s - 2
  pad_a = k - 1 if s > k - 1 else int(np.ceil(pad_len / 2))
  return pad_a, pad_len - pad_a


def phase_taps(k: int) -> tuple[np.ndarray, int]:
  """Which kernel tap feeds each output parity of a stride-2 'SAME' transpose.

  With the input dilated by 2 and padded by `pad_a` in front, output `o` reads
  dilated position `o + t - pad_a` with tap `t`; only even positions hold input
  samples, at input index `(o + t - pad_a) / 2`. So output `2p + a` reads input
  `p + d` with tap `t = 2d + pad_a - a` for every `d` where that tap exists.

  Args:
    k: kernel size along one axis.

  Returns:
    (taps, lo): `taps` int[2, w], taps[a, i] = the kernel tap that multiplies
    input `p + lo + i` for output `2p + a`, or `k` (a zero tap) where none does;
    `lo` <= 0 is the first input offset of the shared window of width `w`.
  """
  pad_a, _ = _same_transpose_padding(k, 2)
  offsets = {a: {(a + t - pad_a) // 2: t for t in range(k) if (a + t - pad_a) % 2 == 0}
             for a in (0, 1)}
  used = [d for by_offset in offsets.values() for d in by_offset]
  lo, hi = min(used), max(used)
  taps = np.full((2, hi - lo + 1), k, dtype=np.int32)
  for a, by_offset in offsets.items():
    for d, t in by_offset.items():
      taps[a, d - lo] = t
  return taps, lo


def phase_kernel(kernel: Array) -> tuple[Array, tuple[tuple[int, int], tuple[int, int]]]:
  """Rearranges a transposed-convolution kernel into one stride-1 convolution.

  Args:
    kernel: [kh, kw, cin, cout], as `nn.ConvTranspose` stores it.

  Returns:
    (phase, padding): `phase` [wh, ww, cin, 4 * cout] with output channels
    ordered (row parity, column parity, cout); `padding` the spatial padding
    of the undilated input for `lax.conv_general_dilated`.
  """
  kh, kw, cin, cout = kernel.shape
  taps_h, lo_h = phase_taps(kh)
  taps_w, lo_w = phase_taps(kw)
  wh, ww = taps_h.shape[1], taps_w.shape[1]
  # One extra all-zero tap at index k on each axis: windows of a phase that no
  # tap reaches gather it, so every phase shares one window and one conv.
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  rows = padded[taps_h]                      # [2, wh, kw + 1, cin, cout]
  full = rows[:, :, taps_w]                  # [2, wh, 2, ww, cin, cout]
  phase = jnp.transpose(full, (1, 3, 4, 0, 2, 5)).reshape(wh, ww, cin, 4 * cout)
  # Window offset lo..lo+w-1 around p is 'padding -lo before, w-1+lo after'.
  padding = ((-lo_h, wh - 1 + lo_h), (-lo_w, ww - 1 + lo_w))
  return phase, padding


def depth_to_space2(y: Array) -> Array:
  """[b, h, w, 2 * 2 * c] with channels (row parity, col parity, c) -> [b, 2h, 2w, c]."""
  b, h, w, c4 = y.shape
  c = c4 // 4
  y = y.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, 2 * h, 2 * w, c)


def conv_transpose2x(x: Array, kernel: Array, impl: str = "phase",
                     precision: Any = None) -> Array:
  """`lax.conv_transpose(x, kernel, (2, 2), "SAME")` (NHWC / HWIO), without bias.

  Args:
    x: [b, h, w, cin].
    kernel: [kh, kw, cin, cout].
    impl: "phase" (one stride-1 conv to 4 * cout channels + depth-to-space) or
      "xla" (`lax.conv_transpose`, i.e. a convolution of the zero-dilated input).
    precision: passed to the XLA convolution.

  Returns:
    [b, 2h, 2w, cout], same dtype as the promoted inputs.
  """
  if impl == "xla":
    return jax.lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=_DIMS,
                                  precision=precision)
  if impl != "phase":
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
  phase, padding = phase_kernel(kernel)
  y = jax.lax.conv_general_dilated(x, phase, (1, 1), padding, dimension_numbers=_DIMS,
                                   precision=precision)
  return depth_to_space2(y)


def _same_padding(n: int, k: int, s: int) -> tuple[int, int]:
  """The (before, after) padding of a 'SAME' convolution of `n` samples, kernel `k`, stride `s`."""
  total = max((-(-n // s) - 1) * s + k - n, 0)
  return total // 2, total - total // 2


def down_phase_taps(k: int, pad_lo: int) -> tuple[np.ndarray, int]:
  """Which kernel tap feeds each input parity in the gradient of a stride-2 conv.

  Forward, output `o` reads input `2o + t - pad_lo` with tap `t`. So the input
  gradient at `i = 2p + a` sums the output gradient at `p + d` times tap
  `t = a + pad_lo - 2d`, for every `d` where that tap exists.

  Returns:
    (taps, lo): `taps` int[2, w], taps[a, j] = the tap that multiplies output
    gradient `p + lo + j` for input `2p + a`, or `k` (a zero tap) where none does.
  """
  offsets = {a: {(a + pad_lo - t) // 2: t for t in range(k) if (a + pad_lo - t) % 2 == 0}
             for a in (0, 1)}
  used = [d for by_offset in offsets.values() for d in by_offset]
  lo, hi = min(used), max(used)
  taps = np.full((2, hi - lo + 1), k, dtype=np.int32)
  for a, by_offset in offsets.items():
    for d, t in by_offset.items():
      taps[a, d - lo] = t
  return taps, lo


def _conv(x: Array, kernel: Array, strides, precision) -> Array:
  return jax.lax.conv_general_dilated(x, kernel, strides, "SAME", dimension_numbers=_DIMS,
                                      precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_stride2(x: Array, kernel: Array, precision: Any = None) -> Array:
  """`lax.conv_general_dilated(x, kernel, (2, 2), "SAME")` (NHWC / HWIO), even h and w.

  The same forward pass as XLA's; the input gradient runs as one stride-1
  convolution of the output gradient to 4 * cin channels + depth-to-space (the
  phase form of `ConvTranspose2x`) instead of XLA's convolution of a
  zero-dilated gradient, which on CPU is 2-4x slower than the forward pass.
  The kernel gradient is XLA's own.
  """
  return _conv(x, kernel, (2, 2), precision)


def _conv_stride2_fwd(x, kernel, precision):
  return _conv(x, kernel, (2, 2), precision), (x, kernel)


def _conv_stride2_bwd(precision, residuals, g):
  x, kernel = residuals
  kh, kw, cin, cout = kernel.shape
  taps_h, lo_h = down_phase_taps(kh, _same_padding(x.shape[1], kh, 2)[0])
  taps_w, lo_w = down_phase_taps(kw, _same_padding(x.shape[2], kw, 2)[0])
  wh, ww = taps_h.shape[1], taps_w.shape[1]
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  full = padded[taps_h][:, :, taps_w]                  # [2, wh, 2, ww, cin, cout]
  phase = jnp.transpose(full, (1, 3, 5, 0, 2, 4)).reshape(wh, ww, cout, 4 * cin)
  padding = ((-lo_h, wh - 1 + lo_h), (-lo_w, ww - 1 + lo_w))
  dx = depth_to_space2(jax.lax.conv_general_dilated(
      g.astype(phase.dtype), phase, (1, 1), padding, dimension_numbers=_DIMS,
      precision=precision)).astype(x.dtype)
  _, pull = jax.vjp(lambda k: _conv(x, k, (2, 2), precision), kernel)
  return dx, pull(g)[0]


conv_stride2.defvjp(_conv_stride2_fwd, _conv_stride2_bwd)


def conv(x: Array, kernel: Array, stride: int = 1, impl: str = "phase",
         precision: Any = None) -> Array:
  """A 'SAME' convolution (NHWC / HWIO), without bias; `impl` as in `Conv`."""
  if impl not in IMPLS:
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
  if impl == "phase" and stride == 2 and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0:
    return conv_stride2(x, kernel, precision)
  return _conv(x, kernel, (stride, stride), precision)


class Conv(nn.Module):
  """'SAME' convolution with equal strides: [b, h, w, cin] -> [b, h / s, w / s, features].

  Parameters are exactly those of `nn.Conv(features, kernel_size, strides=(s, s),
  padding="SAME")` ('kernel' [kh, kw, cin, features], 'bias' [features]), so
  checkpoints are interchangeable, and so is the forward pass. `impl="phase"`
  only changes how a stride-2 layer's input gradient is computed (see
  `conv_stride2`); `impl="xla"` differentiates `lax.conv_general_dilated` as is.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: 1 or 2 (both axes).
    impl: "phase" or "xla".
    use_bias, dtype, param_dtype, precision, kernel_init, bias_init: as in `nn.Conv`.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: int = 1
  impl: str = "phase"
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Initializer = nn.linear.default_kernel_init
  bias_init: Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x: [b, h, w, cin] -> [b, ceil(h / s), ceil(w / s), features]."""
    if self.impl not in IMPLS:
      raise ValueError(f"Conv.impl must be one of {IMPLS}, got {self.impl!r}")
    if x.ndim != 4:
      raise ValueError(f"Conv expects NHWC input [b, h, w, c], got shape {x.shape}")
    kernel = self.param("kernel", self.kernel_init,
                        tuple(self.kernel_size) + (x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = flax_dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv(x, kernel, int(self.strides), self.impl, self.precision)
    if bias is not None:
      y = y + bias
    return y


class ConvTranspose2x(nn.Module):
  """Stride-2, 'SAME' transposed convolution: [b, h, w, cin] -> [b, 2h, 2w, features].

  Parameters are exactly those of `nn.ConvTranspose(features, kernel_size,
  strides=(2, 2), padding="SAME")` ('kernel' [kh, kw, cin, features] and 'bias'
  [features], same default initialisers), so checkpoints are interchangeable.

  Why a second form: XLA on CPU computes the transposed convolution as a
  convolution of the zero-dilated input, and its backward pass for 5x5 stride 2
  is slow: for 8x8x512 -> 16x16x256 at batch 64 on 2 cores, forward+backward
  takes 15-30 s with `impl="xla"` and 0.8 s with `impl="phase"` (forward alone
  ~0.2 s for both; see shared/PERF_FACTS.md). A stride-2 transpose is exactly four interleaved
  stride-1 convolutions of the undilated input, one per output parity, each
  using the kernel taps of that parity. `impl="phase"` (the default) runs them
  as ONE convolution with 4 * features outputs (for 5x5: a 3x3 window, zero
  taps where a parity has only two) and a depth-to-space. The zero taps cost
  44% more multiply-adds than the 25 real ones (36 per channel pair), far less
  than the dilated form loses on CPU. `impl="xla"` calls `lax.conv_transpose`,
  the form cuDNN handles well on GPU.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw); 5x5 in DCGAN.
    impl: "phase" or "xla"; same parameters and (up to rounding) outputs.
    use_bias: add a learned bias (after the interleave; one per channel).
    dtype: computation dtype (None: promote inputs and params).
    param_dtype: parameter dtype.
    precision: XLA convolution precision.
    kernel_init, bias_init: as in `nn.ConvTranspose`.
  """
  features: int
  kernel_size: Sequence[int] = (5, 5)
  impl: str = "phase"
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Initializer = nn.linear.default_kernel_init
  bias_init: Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x: [b, h, w, cin] -> [b, 2h, 2w, features]."""
    if self.impl not in IMPLS:
      raise ValueError(f"ConvTranspose2x.impl must be one of {IMPLS}, got {self.impl!r}")
    if x.ndim != 4:
      raise ValueError(f"ConvTranspose2x expects NHWC input [b, h, w, c], got shape {x.shape}")
    kernel = self.param("kernel", self.kernel_init,
                        tuple(self.kernel_size) + (x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = flax_dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv_transpose2x(x, kernel, self.impl, self.precision)
    if bias is not None:
      y = y + bias
    return y
