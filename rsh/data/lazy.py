"""Rows of on-disk arrays, read when asked for: what keeps an archive larger than
memory (a BigEarthNet store, `rsh.data.bigearthnet.store`) out of memory.

`on_disk(x)`: whether `x` is file-backed (a memory map, or a `Bands` of one);
`Prepared` then serves its sets and training rows as `Rows` (row indices into a
view, gathered per batch) instead of arrays, and selects bands with `Bands`
(per row read) instead of copying the archive. Indexing either one with an int
array or a slice of rows returns an ndarray of those rows; `x[:]` is `x` itself
(every row, still lazy: an evaluator's "all rows" cut), and `np.asarray(x)`
reads every row (only for what is known to be small).
"""

from __future__ import annotations

import numpy as np

_ALL = slice(None)


def on_disk(x) -> bool:
  """Whether `x` is file-backed: a memory map (or a slice of one), or a `Bands` of one."""
  return isinstance(x, (np.memmap, Bands))


class Bands:
  """A band selection of on-disk images uint16[n, h, w, b] -> [n, h, w, len(sel)],
  made for the rows read (a selection of the whole array would copy the archive).

  Only rows may be indexed (`x[i]`, `x[idx]`, `x[a:b]`); the bands are always `sel`.
  """

  def __init__(self, base, sel):
    self.base, self.sel = base, np.asarray(sel, np.int64)
    self.shape = tuple(base.shape[:-1]) + (len(self.sel),)
    self.dtype, self.ndim = base.dtype, len(self.shape)
    self.size = int(np.prod(self.shape))

  def __len__(self):
    return self.shape[0]

  def __getitem__(self, rows):
    if isinstance(rows, tuple) or rows is Ellipsis:
      raise TypeError("Bands: index the rows only (x[i], x[idx], x[a:b]); the bands are "
                      "the selection it was made with")
    return np.asarray(self.base[rows])[..., self.sel]

  def __array__(self, dtype=None, copy=None):
    return np.asarray(self[_ALL], dtype)


class Rows:
  """Rows `idx` of `base` (an array, memory map or `Bands`), gathered per read.

  `x[s]` (s an int, int array or slice into `idx`) is `base[idx[s]]` as an ndarray
  (f32 when `transform` is given: `transform(base[idx[s]])`, e.g. the pixels' scaling
  to [-1, 1], which is elementwise, so a row read alone is the same floats as read
  among all); `x[:]` is `x`.
  """

  def __init__(self, base, idx, transform=None, dtype=None):
    self.base, self.idx, self.transform = base, np.asarray(idx, np.int64), transform
    self.shape = (len(self.idx),) + tuple(base.shape[1:])
    self.dtype = np.dtype(dtype or base.dtype)
    self.ndim = len(self.shape)

  def __len__(self):
    return len(self.idx)

  def __getitem__(self, s):
    if isinstance(s, slice) and s == _ALL:
      return self
    x = self.base[self.idx[s]]
    return np.asarray(x if self.transform is None else self.transform(x), self.dtype)

  def __array__(self, dtype=None, copy=None):
    x = self.base[self.idx]
    return np.asarray(x if self.transform is None else self.transform(x), dtype or self.dtype)
