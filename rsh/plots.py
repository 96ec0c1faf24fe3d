"""Figures a reader of a run wants to look at (matplotlib, PNG, no display)."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _stretch(rgb: np.ndarray) -> np.ndarray:
  """Per-image 2-98 percentile stretch: Sentinel-2 reflectances are dark."""
  lo = np.percentile(rgb, 2, axis=(0, 1), keepdims=True)
  hi = np.percentile(rgb, 98, axis=(0, 1), keepdims=True)
  return np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0, 1)


def composite(image: np.ndarray, band_names, which: str = "true") -> np.ndarray:
  """f32[h, w, 3] for display: `true` = B04 B03 B02, `nir` = B08 B04 B03."""
  wanted = {"true": ("B04", "B03", "B02"), "nir": ("B08", "B04", "B03")}[which]
  names = list(band_names)
  if all(b in names for b in wanted):
    x = image[..., [names.index(b) for b in wanted]]
  else:  # fall back to the first three bands (or grey)
    x = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, -1)
  return _stretch(np.asarray(x, np.float32))


def _save(fig, path):
  path = pathlib.Path(path)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)


def pr_curve(metrics: dict, path) -> None:
  fig, ax = plt.subplots(figsize=(4.5, 4))
  for prefix, label in (("binary/", "binary codes (Hamming)"),
                        ("nonbinary/", "real features (cosine)")):
    p, r = metrics.get(f"{prefix}pr_curve/precision"), metrics.get(f"{prefix}pr_curve/recall")
    if p is not None and r is not None:
      ax.plot(r, p, marker=".", label=label)
  ax.set_xlabel("recall")
  ax.set_ylabel("precision")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title("precision-recall")
  _save(fig, path)


def map_vs_steps(history: list[dict], path, k: int = 100, series: dict | None = None) -> None:
  """MAP@k against training steps (thesis Fig. 5.14); `series` adds named runs."""
  series = dict(series or {})
  if history:
    series.setdefault("this run", history)
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for name, rows in series.items():
    rows = sorted(rows, key=lambda r: r["step"])
    # Codes only where the run has them (GAN baselines rank real features only).
    for key, style in ((f"binary/map@{k}", "-o"), (f"nonbinary/map@{k}", "--x")):
      pts = [(r["step"], r[key]) for r in rows if key in r]
      if pts:
        s, m = zip(*pts)
        ax.plot(s, m, style, label=f"{name} ({'non-binary' if 'nonbinary' in key else 'codes'})",
                markersize=4)
  ax.set_xlabel("training step")
  ax.set_ylabel(f"MAP@{k}")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  _save(fig, path)


def image_grid(images: np.ndarray, band_names, path, ncol: int = 8) -> None:
  """Generated images in [-1, 1], true colour above, NIR false colour below."""
  images = (np.asarray(images) + 1) / 2
  n = min(len(images), ncol)
  rows = [("true colour (B04 B03 B02)", "true"), ("false colour (B08 B04 B03)", "nir")]
  fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n, 1.5 * len(rows)), squeeze=False)
  for r, (title, which) in enumerate(rows):
    for c in range(n):
      axes[r, c].imshow(composite(images[c], band_names, which))
      axes[r, c].axis("off")
    axes[r, 0].set_title(title, fontsize=8, loc="left")
  _save(fig, path)


def retrievals(prepared, query_repr: np.ndarray, archive_repr: np.ndarray, path,
               binary: bool, n_queries: int = 4, top: int = 10, seed: int = 0) -> None:
  """Top-10 retrievals of a few queries; green frame = same class as the query."""
  from rsh import hamming
  rng = np.random.default_rng(seed)
  picks = np.sort(rng.choice(len(query_repr), size=min(n_queries, len(query_repr)),
                             replace=False))
  if binary:
    _, idx = hamming.search(hamming.pack_codes(query_repr[picks] >= 0),
                            hamming.pack_codes(archive_repr >= 0), top)
  else:
    _, idx = hamming.cosine_search(query_repr[picks], archive_repr, top)
  idx = np.asarray(idx)
  split, labels, names = prepared.split, prepared.labels, prepared.class_names
  fig, axes = plt.subplots(len(picks), top + 1, figsize=(1.2 * (top + 1), 1.35 * len(picks)),
                           squeeze=False)
  for r, q in enumerate(picks):
    q_global = split.query[q]
    qimg = prepared.images[q_global].astype(np.float32)
    axes[r, 0].imshow(composite(qimg, prepared.band_names))
    axes[r, 0].set_title(f"query: {names[labels[q_global]]}", fontsize=6)
    for c in range(top):
      a_global = split.archive[idx[r, c]]
      ax = axes[r, c + 1]
      ax.imshow(composite(prepared.images[a_global].astype(np.float32), prepared.band_names))
      ok = labels[a_global] == labels[q_global]
      for spine in ax.spines.values():
        spine.set_edgecolor("tab:green" if ok else "tab:red")
        spine.set_linewidth(2.5)
      ax.set_xticks([])
      ax.set_yticks([])
  for ax in axes[:, 0]:
    ax.axis("off")
  _save(fig, path)
