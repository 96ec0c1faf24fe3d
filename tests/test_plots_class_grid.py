"""Tests of rsh.plots.class_grid: one row per class, generated then real images."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from rsh import plots

C, M, M_REAL = 10, 4, 3
NAMES = [f"class {i}" for i in range(C)]


def _fraction(i):
  return (i + 1) / (C + 2)  # 1/12 .. 10/12: inside the 2-98 percentile stretch


def _images(fractions, m):
  """f32[c, m, 64, 64, 3] in [-1, 1]: the first round(64 f) columns of class i's
  images red, the rest green (blue constant), so after `composite`'s per-channel
  stretch the share of red pixels in a row of the figure is that class's f."""
  out = np.zeros((len(fractions), m, 64, 64, 3), np.float32)
  for i, f in enumerate(fractions):
    red = np.arange(64) < round(64 * f)
    out[i, :, :, :, 0] = np.where(red, 1, -1)
    out[i, :, :, :, 1] = np.where(red, -1, 1)
  return out


def _runs(mask):
  """[(start, stop)] of the runs of True in a 1-D boolean array."""
  edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
  return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _read_cells(path):
  """(redness of each figure row's image pixels, redness per image column block)."""
  png = matplotlib.image.imread(path)[..., :3]
  red = (png[..., 0] > 0.6) & (png[..., 1] < 0.4)
  green = (png[..., 1] > 0.6) & (png[..., 0] < 0.4)
  coloured = red | green  # image pixels; the background is white, the text black
  rows = [(a, b) for a, b in _runs(coloured.any(axis=1)) if b - a > 5]
  cols = [(a, b) for a, b in _runs(coloured.any(axis=0)) if b - a > 5]
  share = lambda sl: red[sl].sum() / max(coloured[sl].sum(), 1)
  by_row = [share((slice(a, b), slice(None))) for a, b in rows]
  by_cell = [[share((slice(ra, rb), slice(ca, cb))) for ca, cb in cols] for ra, rb in rows]
  return np.array(by_row), np.array(by_cell), cols


def test_writes_png_generated_only(tmp_path):
  path = tmp_path / "sub" / "grid.png"
  plots.class_grid(_images([_fraction(i) for i in range(C)], M), None, NAMES, path,
                   title="C-DCGAN")
  assert path.stat().st_size > 0
  by_row, by_cell, cols = _read_cells(path)
  assert len(by_row) == C and len(cols) == M
  # Each class's images land in their own row, in class order.
  np.testing.assert_allclose(by_row, [_fraction(i) for i in range(C)], atol=0.05)
  assert np.all(np.diff(by_row) > 0)


def test_writes_png_with_real_images(tmp_path):
  path = tmp_path / "grid.png"
  fractions = [_fraction(i) for i in range(C)]
  real = _images([1 - f for f in fractions], M_REAL)  # real rows are the mirror image
  plots.class_grid(_images(fractions, M), real, NAMES, path)
  assert path.stat().st_size > 0
  _, by_cell, cols = _read_cells(path)
  assert by_cell.shape == (C, M + M_REAL)
  np.testing.assert_allclose(by_cell[:, :M], np.repeat(np.array(fractions)[:, None], M, 1),
                             atol=0.05)
  np.testing.assert_allclose(by_cell[:, M:],
                             np.repeat(1 - np.array(fractions)[:, None], M_REAL, 1), atol=0.05)
  # A wider gap between the generated and the real block than between images.
  gaps = [b[0] - a[1] for a, b in zip(cols, cols[1:])]
  assert gaps[M - 1] > 1.5 * max(gaps[:M - 1] + gaps[M:])


def test_multispectral_bands_pick_rgb(tmp_path):
  # 4 bands in the order B02 B03 B04 B08: red must come from B04 (index 2).
  rgb = _images([_fraction(i) for i in range(C)], 2)
  ms = np.concatenate([rgb[..., 2:3], rgb[..., 1:2], rgb[..., 0:1], -rgb[..., :1]], axis=-1)
  path = tmp_path / "ms.png"
  plots.class_grid(ms, None, NAMES, path, bands=("B02", "B03", "B04", "B08"))
  by_row, _, _ = _read_cells(path)
  np.testing.assert_allclose(by_row, [_fraction(i) for i in range(C)], atol=0.05)


def test_bad_shapes_raise(tmp_path):
  gen = np.zeros((C, M, 64, 64, 3), np.float32)
  path = tmp_path / "bad.png"
  with pytest.raises(ValueError, match="classes=9"):
    plots.class_grid(gen, None, NAMES[:9], path)
  with pytest.raises(ValueError, match="generated"):
    plots.class_grid(gen[0], None, NAMES, path)
  with pytest.raises(ValueError, match="real"):
    plots.class_grid(gen, np.zeros((C, 2, 32, 32, 3)), NAMES, path)
  with pytest.raises(ValueError, match="real"):
    plots.class_grid(gen, np.zeros((C - 1, 2, 64, 64, 3)), NAMES, path)
  with pytest.raises(ValueError, match="band"):
    plots.class_grid(np.zeros((C, M, 64, 64, 4)), None, NAMES, path)
  with pytest.raises(ValueError, match="band"):
    plots.class_grid(gen, None, NAMES, path, bands=("B04", "B03"))
  assert not path.exists()
