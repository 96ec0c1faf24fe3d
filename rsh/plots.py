"""Figures a reader of a run wants to look at (matplotlib, PNG, no display)."""

from __future__ import annotations

import os
import pathlib
import sys

import matplotlib

if "ipykernel" not in sys.modules:  # a notebook keeps its inline backend
  matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rsh import distributed  # noqa: E402
from rsh.data.bands import RGB  # noqa: E402


def _stretch(rgb: np.ndarray) -> np.ndarray:
  """Per-image 2-98 percentile stretch: Sentinel-2 reflectances are dark."""
  lo = np.percentile(rgb, 2, axis=(0, 1), keepdims=True)
  hi = np.percentile(rgb, 98, axis=(0, 1), keepdims=True)
  return np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0, 1)


def composite(image: np.ndarray, band_names, which: str = "true") -> np.ndarray:
  """f32[h, w, 3] for display: `true` = B04 B03 B02, `nir` = B08 B04 B03."""
  wanted = {"true": RGB, "nir": ("B08", "B04", "B03")}[which]
  names = list(band_names)
  if all(b in names for b in wanted):
    x = image[..., [names.index(b) for b in wanted]]
  else:  # fall back to the first three bands (or grey)
    x = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, -1)
  return _stretch(np.asarray(x, np.float32))


def _save(fig, path):
  """Saves `fig` to `path` whole or not at all (a temporary file renamed into
  place); in a multi-host run every process draws it, the writer alone saves it."""
  path = pathlib.Path(path)
  try:
    if distributed.is_writer():
      tmp = path.with_name(f".{path.name}.tmp")  # not *.png: never listed as a figure
      fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix[1:] or "png")
      os.replace(tmp, path)
  finally:
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


def map_vs_steps(history: list[dict], path, k: int = 100, series: dict | None = None,
                 reference: dict | None = None) -> None:
  """MAP@all against training steps (thesis Fig. 5.14), MAP@k in a second panel.

  `series` adds named runs ({name: history rows}); `reference` draws flat lines
  ({name: metrics dict}, e.g. random projection's `map@all` and `map@k`).
  """
  series = dict(series or {})
  if history:
    series.setdefault("this run", history)
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
  for ax, metric, title in ((axes[0], "map@all", "MAP@all (thesis Fig. 5.14)"),
                            (axes[1], f"map@{k}", f"MAP@{k}")):
    for i, (name, rows) in enumerate(series.items()):
      rows = sorted(rows, key=lambda r: r["step"])
      colour = f"C{i}"
      # Codes only where the run has them (GAN baselines rank real features only).
      for prefix, style in (("binary/", "-o"), ("nonbinary/", "--x")):
        pts = [(r["step"], r[prefix + metric]) for r in rows if prefix + metric in r]
        if pts:
          s, m = zip(*pts)
          kind = "non-binary, cosine" if prefix == "nonbinary/" else "codes, Hamming"
          ax.plot(s, m, style, color=colour, label=f"{name} ({kind})", markersize=4)
    for j, (name, metrics) in enumerate((reference or {}).items()):
      if metrics and metric in metrics:
        ax.axhline(metrics[metric], color="0.3" if j == 0 else f"C{len(series) + j}",
                   linestyle=(0, (1 + j, 2)), linewidth=1.2,
                   label=f"{name} ({metrics[metric]:.3f})")
    ax.set_xlabel("training step")
    ax.set_ylabel(title.split(" (")[0])
    ax.set_title(title, fontsize=9)
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


def _thumbnail(prepared, view: str, row: int) -> np.ndarray:
  """f32[h, w, 3] of one row of a view: S2 pixels as true colour, a 2-channel
  radar view (VV, VH in dB) as false colour (VV, VH, VV - VH); a vector view (e.g.
  backbone features) by the row's own pixels, the image its vector was made from."""
  if view == "pixels":
    return composite(prepared.images[row].astype(np.float32), prepared.band_names)
  x = np.asarray(prepared.view(view)[row], np.float32)
  if x.ndim != 3:
    return composite(prepared.images[row].astype(np.float32), prepared.band_names)
  if x.shape[-1] == 2:
    x = np.concatenate([x, x[..., :1] - x[..., 1:]], axis=-1)
  return _stretch(x[..., :3] if x.shape[-1] >= 3 else np.repeat(x[..., :1], 3, -1))


def _label_text(labels, names, width: int = 28) -> str:
  if np.ndim(labels) == 0:
    return names[int(labels)]
  text = ", ".join(names[i] for i in np.flatnonzero(labels))
  return text if len(text) <= width else text[:width - 1] + "…"


def retrievals(prepared, query_repr: np.ndarray, archive_repr: np.ndarray, path,
               binary: bool, max_classes: int = 10, top: int = 10, seed: int = 0,
               query: str = "query", archive: str = "archive",
               query_view: str = "pixels", archive_view: str = "pixels",
               leave_one_out: bool = False) -> None:
  """Top-10 retrievals of one random query per class (at most `max_classes`).

  Green frame = relevant: the query's class, or for multi-hot labels at least
  one shared label (then each row's query is a random query holding a
  different class, so rare classes show too). One query per class, drawn by
  the seed, shows every class's behaviour rather than whichever few classes a
  random draw of queries happens to hit. `query` / `archive` name the sets of
  `prepared` the representations belong to, `query_view` / `archive_view` the
  views they were encoded from (e.g. S1 queries, S2 archive). `leave_one_out`:
  the archive is the query set row for row, and a query is not shown among its
  own retrievals.
  """
  from rsh import hamming, search
  rng = np.random.default_rng(seed)
  q_set, a_set = prepared.indices(query), prepared.indices(archive)
  q_labels = prepared.labels[q_set]
  multi = np.ndim(q_labels) == 2
  if multi:
    classes = [c for c in range(q_labels.shape[1]) if q_labels[:, c].any()][:max_classes]
    holders = lambda c: np.flatnonzero(q_labels[:, c])
  else:
    classes = np.unique(q_labels)[:max_classes]
    holders = lambda c: np.flatnonzero(q_labels == c)
  picks = np.array([rng.choice(holders(c)) for c in classes])
  top = min(top, len(a_set) - leave_one_out)  # a tiny archive shows all of it
  wanted = top + leave_one_out
  if binary:
    _, idx = search.search(hamming.pack_codes(query_repr[picks] >= 0),
                           hamming.pack_codes(archive_repr >= 0), wanted)
  else:
    _, idx = search.cosine_search(query_repr[picks], archive_repr, wanted)
  idx = np.asarray(idx)
  if leave_one_out:  # each row without the query itself (else without its last)
    idx = np.stack([np.concatenate([row[row != q], row])[:top] for row, q in zip(idx, picks)])
  labels, names = prepared.labels, prepared.class_names
  fig, axes = plt.subplots(len(picks), top + 1, figsize=(1.2 * (top + 1), 1.35 * len(picks)),
                           squeeze=False)
  for r, q in enumerate(picks):
    q_global = q_set[q]
    axes[r, 0].imshow(_thumbnail(prepared, query_view, q_global))
    axes[r, 0].set_title(f"query: {_label_text(labels[q_global], names)}", fontsize=5 if multi
                         else 6)
    for c in range(top):
      a_global = a_set[idx[r, c]]
      ax = axes[r, c + 1]
      ax.imshow(_thumbnail(prepared, archive_view, a_global))
      if multi:
        ok = bool(np.any(labels[a_global] & labels[q_global]))
      else:
        ok = labels[a_global] == labels[q_global]
      for spine in ax.spines.values():
        spine.set_edgecolor("tab:green" if ok else "tab:red")
        spine.set_linewidth(2.5)
      ax.set_xticks([])
      ax.set_yticks([])
  for ax in axes[:, 0]:
    ax.axis("off")
  if query_view != archive_view or query_view != "pixels":
    fig.suptitle(f"{query_view} queries -> {archive_view} archive", fontsize=8)
  _save(fig, path)


def class_grid(generated: np.ndarray, real: np.ndarray | None, class_names, path, *,
               bands=None, title: str | None = None) -> None:
  """Generated images of each class beside real ones (class-conditional GANs).

  One row per class: its name at the left, the m generated images, a gap, then
  the m' real images; images in [-1, 1] shown as true colour like `image_grid`
  (`composite`, with its per-image stretch).

  Args:
    generated: f32[c, m, h, w, b] in [-1, 1], row i of class `class_names[i]`.
    real: f32[c, m', h, w, b] in [-1, 1], or None for generated images only.
    class_names: c names.
    path: the PNG to write (its folder is created).
    bands: the b band names (RGB from B04 B03 B02); None: b must be 3, in R, G, B order.
    title: an optional figure title.
  """
  gen = np.asarray(generated, np.float32)
  names = [str(n) for n in class_names]
  if gen.ndim != 5 or len(gen) != len(names) or gen.shape[1] < 1:
    raise ValueError(f"class_grid expects generated [classes={len(names)}, m, h, w, bands], "
                     f"got shape {gen.shape}")
  blocks = [("generated", gen)]
  if real is not None:
    real = np.asarray(real, np.float32)
    if real.ndim != 5 or real.shape[0] != gen.shape[0] or real.shape[2:] != gen.shape[2:]:
      raise ValueError(f"class_grid expects real [{gen.shape[0]}, m', *{gen.shape[2:]}] "
                       f"like generated, got shape {real.shape}")
    blocks.append(("real", real))
  band_names = list(bands) if bands is not None else (list(RGB) if gen.shape[-1] == 3 else None)
  if band_names is None or len(band_names) != gen.shape[-1]:
    raise ValueError(f"class_grid needs one band name per channel ({gen.shape[-1]}), "
                     f"got bands={bands!r}")
  widths = [1] * gen.shape[1] + ([0.25] + [1] * real.shape[1] if real is not None else [])
  fig, axes = plt.subplots(len(names), len(widths), squeeze=False,
                           figsize=(0.95 * sum(widths), 0.95 * len(names)),
                           gridspec_kw={"width_ratios": widths, "wspace": 0.05, "hspace": 0.08})
  for ax in axes.ravel():
    ax.axis("off")
  start = 0
  for header, images in blocks:
    for r in range(len(names)):
      for j in range(images.shape[1]):
        axes[r, start + j].imshow(composite((images[r, j] + 1) / 2, band_names))
    axes[0, start].set_title(header, fontsize=8, loc="left")
    start += images.shape[1] + 1  # the gap column
  for r, name in enumerate(names):
    axes[r, 0].text(-0.08, 0.5, name, transform=axes[r, 0].transAxes, ha="right",
                    va="center", fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9, va="bottom",  # just above the column headers
                 y=fig.subplotpars.top + 0.25 / fig.get_figheight())
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  _save(fig, path)
