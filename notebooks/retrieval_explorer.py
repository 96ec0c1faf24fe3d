# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exploring what a trained run retrieves
#
# This notebook loads a finished run from its workdir (training a short one first if
# the workdir is empty), encodes the query and archive images into binary codes,
# shows the nearest archive images of a few queries in true and false colour, and
# compares the precision–recall curve of the learned codes with two shallow hashes
# fitted on the raw pixels (random hyperplanes, LSH, and ITQ).

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
import os

WORKDIR = os.environ.get("RSH_NB_WORKDIR", "runs/retrieval_explorer")
CONFIG = os.environ.get("RSH_NB_CONFIG", "configs/uahm.py:demo,recipe=tuned")  # if no run yet
STEPS = int(os.environ.get("RSH_NB_STEPS", "200"))   # steps of that short run
N_QUERIES = int(os.environ.get("RSH_NB_QUERIES", "4"))
TOP_K = int(os.environ.get("RSH_NB_TOP_K", "8"))
SEED = 0

# %%
import json, os, pathlib, sys, time

import numpy as np
import matplotlib
import matplotlib.pyplot as plt
from IPython.display import Image, Markdown, display

import rsh
from rsh import restore

REPO = pathlib.Path(rsh.__file__).resolve().parents[1]
WORKDIR = pathlib.Path(WORKDIR).absolute()
WORKDIR.mkdir(parents=True, exist_ok=True)
print("python:", sys.executable)
print("workdir:", WORKDIR)


def save_and_show(fig, name):
    """Writes the figure as WORKDIR/<name> and shows that PNG here."""
    path = WORKDIR / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    display(Image(filename=str(path)))
    return path


# %% [markdown]
# ## A run to look at
#
# `rsh.checkpoints.latest_step` says whether the workdir holds a checkpoint; if not, a
# short run of `CONFIG` is trained there through `rsh.runs.run`, the normal entry
# point.

# %%
from rsh import checkpoints, runs

if checkpoints.latest_step(WORKDIR) is None:
    config = restore.config_from_file(CONFIG)
    config.train.num_steps = STEPS
    config.train.eval_every = STEPS
    config.train.checkpoint_every = STEPS
    config.train.progress = False
    t0 = time.time()
    print(runs.summary_line(runs.run(config, WORKDIR)))
    print(f"trained in {time.time() - t0:.0f} s")
else:
    print("using the run already in", WORKDIR)

# %% [markdown]
# ## Load it back
#
# `rsh.restore.load_run` reads `config.json`, prepares the same data split, rebuilds
# the method and restores the latest checkpoint. `rsh.restore.encode` runs the
# method's encoder on a named image set; UAHM gives the tanh code (`hash`) and the
# discriminator's features (`feature`). A code bit is 1 where the tanh output is ≥ 0.

# %%
from rsh import hamming, search

run = restore.load_run(WORKDIR)
print(f"{run.config.name} ({run.config.variant}), step {run.step}, "
      f"{run.config.model.bits} bits; bands {', '.join(run.data.band_names)}")
q_out, a_out = restore.encode(run, "query"), restore.encode(run, "archive")
q_codes = hamming.pack_codes(q_out["hash"] >= 0)
a_codes = hamming.pack_codes(a_out["hash"] >= 0)
q_labels, a_labels = run.labels("query"), run.labels("archive")
print("query codes", q_codes.shape, "archive codes", a_codes.shape, "(packed bytes)")

# %% [markdown]
# ## Top-k retrievals
#
# One query from each of a few classes (drawn with a fixed seed). Each row is the
# query then its `TOP_K` nearest archive images by Hamming distance; a green frame
# means the same class as the query, red another class. True colour uses the red,
# green and blue bands (B04 B03 B02); the false-colour version puts near infrared in
# the red channel (B08 B04 B03), so vegetation shows bright red.

# %%
from rsh import plots

rng = np.random.default_rng(SEED)
names = run.data.class_names
classes = rng.permutation(np.unique(q_labels))[:N_QUERIES]
picks = np.array([rng.choice(np.flatnonzero(q_labels == c)) for c in classes])
dist, idx = search.search(q_codes[picks], a_codes, TOP_K)
dist, idx = np.asarray(dist), np.asarray(idx)
q_rows, a_rows = run.data.indices("query"), run.data.indices("archive")


def retrieval_grid(which, title):
    fig, axes = plt.subplots(len(picks), TOP_K + 1, figsize=(1.25 * (TOP_K + 1), 1.45 * len(picks)),
                             squeeze=False)
    for r, q in enumerate(picks):
        ax = axes[r, 0]
        ax.imshow(plots.composite(run.data.images[q_rows[q]], run.data.band_names, which))
        ax.set_title(f"query: {names[q_labels[q]]}", fontsize=6)
        ax.axis("off")
        for c in range(TOP_K):
            a = idx[r, c]
            ax = axes[r, c + 1]
            ax.imshow(plots.composite(run.data.images[a_rows[a]], run.data.band_names, which))
            ok = a_labels[a] == q_labels[q]
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:green" if ok else "tab:red")
                spine.set_linewidth(2.5)
            ax.set_xticks([]); ax.set_yticks([])
            ax.set_title(f"d={dist[r, c]}", fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


save_and_show(retrieval_grid("true", "true colour (B04 B03 B02)"), "retrievals_true_colour.png");
save_and_show(retrieval_grid("nir", "false colour (B08 B04 B03)"), "retrievals_false_colour.png");

# %% [markdown]
# ## Precision–recall against shallow baselines
#
# `rsh.protocol.evaluate` scores a whole query set against the archive: MAP@k,
# precision@n and a precision–recall curve, ties in Hamming distance handled
# fairly. The baselines need no training: LSH takes random hyperplanes through the
# mean training image, ITQ rotates the top principal directions so the signs lose as
# little as possible (`rsh.shallow`). Both see the same pixels and code length.

# %%
from rsh import protocol, shallow

bits, k, n = int(run.config.model.bits), int(run.config.eval.k), int(run.config.eval.n)
pr_step = max(1, len(a_rows) // 20)
score = lambda q, a, **kw: protocol.evaluate(q, a, q_labels, a_labels, k=k, n=n,
                                             pr_step=pr_step, **kw)
curves = {f"UAHM codes ({bits} bits, Hamming)": score(q_codes, a_codes),
          "UAHM real outputs (cosine)": score(q_out["hash"], a_out["hash"], distance="cosine")}
train = run.data.train_rows("pixels")
for label, h in (("LSH, pixels", shallow.fit_lsh(train, bits, SEED + 1)),
                 ("ITQ, pixels", shallow.fit_itq(train, bits, SEED + 1))):
    codes = lambda s: hamming.pack_codes(shallow.project(h, run.data.x(s, "pixels")) >= 0)
    curves[f"{label} ({bits} bits)"] = score(codes("query"), codes("archive"))

fig, ax = plt.subplots(figsize=(5.5, 4.5))
for label, m in curves.items():
    ax.plot(m["pr_curve/recall"], m["pr_curve/precision"], marker=".", label=label)
ax.set_xlabel("recall"); ax.set_ylabel("precision")
ax.set_xlim(0, 1); ax.set_ylim(0, 1); ax.grid(alpha=0.3); ax.legend(fontsize=7)
save_and_show(fig, "pr_curves.png");

display(Markdown("\n".join([f"| hash | MAP@{k} | precision@{n} |", "|---|---|---|"] + [
    f"| {label} | {m[f'map@{k}']:.4f} | {m[f'precision@{n}']:.4f} |"
    for label, m in curves.items()])))
