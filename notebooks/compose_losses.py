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
# # Composing UAHM's objective from loss terms
#
# UAHM trains a GAN whose discriminator also outputs a hash code. Its objective is not
# one hard-coded function: it is a list of small loss terms, each a pure function of
# arrays, that the config switches on, weights and wires to the model's outputs.
# This notebook
#
# 1. lists the terms `rsh.losses` knows and shows how `config.losses` binds them,
# 2. writes a new term here (a bit-balance penalty) and adds it to the objective,
# 3. trains on the embedded demo data through the normal entry point `rsh.runs.run`,
# 4. plots every term's value and the retrieval MAP against the training step.

# %% [markdown]
# ## Parameters
#
# Every value can also come from an environment variable (the tests use them to
# shrink the run). The workdir is relative to where the notebook runs; `runs/`
# folders are ignored by git.

# %% tags=["parameters"]
import os

WORKDIR = os.environ.get("RSH_NB_WORKDIR", "runs/compose_losses")
CONFIG = os.environ.get("RSH_NB_CONFIG", "configs/uahm.py:demo")   # file:variant[,key=value]
STEPS = int(os.environ.get("RSH_NB_STEPS", "300"))
BALANCE_WEIGHT = float(os.environ.get("RSH_NB_BALANCE_WEIGHT", "0.5"))

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
# ## The registered terms
#
# `rsh.losses.LOSSES` maps a name to a `Term`: the function and, for each of its array
# arguments, the key it reads by default (`None`: no default, the config names it,
# e.g. the two sides of a contrastive term). The keys name things the training step
# offers: the discriminator's logits (`real_logit`, `fake_logit`), its tanh codes
# (`real_hash`) and batch inputs such as the similarity block `similarity`.

# %%
from rsh import losses as rlosses

for name, term in rlosses.LOSSES.items():
    args = ", ".join(f"{a} <- {k}" for a, k in term.inputs.items())
    print(f"{name:18s} {term.fn.__module__}.{term.fn.__name__}({args})")

# %% [markdown]
# Each term is an ordinary function, so it can be called on any arrays. Codes near
# ±1 give a low binary loss; codes whose inner products follow the similarity matrix
# give a low semantic loss.

# %%
import jax
import jax.numpy as jnp

key = jax.random.PRNGKey(0)
soft = 0.1 * jax.random.normal(key, (8, 16))          # codes near 0
hard = jnp.sign(jax.random.normal(key, (8, 16)))      # codes at the corners
same = jnp.ones((8, 8))                               # "all images are similar"
print("binary loss,   soft codes:", float(rlosses.binary_loss(soft)))
print("binary loss,   hard codes:", float(rlosses.binary_loss(hard)))
print("semantic loss, hard codes vs all-similar:", float(rlosses.semantic_loss(hard, same)))
print("semantic loss, one code for all vs all-similar:",
      float(rlosses.semantic_loss(jnp.ones((8, 16)), same)))

# %% [markdown]
# ## How the config binds them
#
# `config.losses` has one entry per term: its weight, the network whose gradient it
# joins (`on`), and optionally which key each argument reads. `rsh.losses.bind` turns
# that into one list of bound terms per network; the step sums each list
# (`rsh.losses.total_loss`).

# %%
config = restore.config_from_file(CONFIG)
print(config.losses)
bound = rlosses.bind(config.losses, nets=("discriminator", "generator"))
for net, terms in bound.items():
    print(net, "=", " + ".join(f"{b.weight:g} * {b.name}({', '.join(b.inputs.values())})"
                               for b in terms))


# %% [markdown]
# ## A term of our own: bit balance
#
# A good code uses each bit about half the time as +1 and half as −1, otherwise the
# bit says little about the image. The penalty below is the mean over bits of the
# squared average of each bit over the batch: 0 when every bit is balanced, 1 when
# every image gets the same code. It is a plain `jnp` function; its argument name
# `codes` becomes an input the config binds.

# %%
def bit_balance(codes):
    """Mean over bits of (mean over the batch of the bit)^2, for codes in [-1, 1]."""
    return jnp.mean(jnp.square(jnp.mean(codes, axis=0)))

print("balanced random codes:", float(bit_balance(hard)))
print("one code for every image:", float(bit_balance(jnp.ones((8, 16)))))

# %% [markdown]
# It joins the discriminator's objective by one more config entry, reading the codes
# of the real images. Passing `terms={"my_balance": bit_balance}` tells the binder
# what `my_balance` is; nothing global changes (a name already registered, such as
# MiLAN's `balance`, would be replaced for this binding only). Binding again shows the new sum.

# %%
TERMS = {"my_balance": bit_balance}
config.losses.my_balance = dict(weight=BALANCE_WEIGHT, on="discriminator", codes="real_hash")
for net, terms in rlosses.bind(config.losses, nets=("discriminator", "generator"),
                               terms=TERMS).items():
    print(net, "=", " + ".join(f"{b.weight:g} * {b.name}" for b in terms))

# %% [markdown]
# ## Train through the normal entry point
#
# `rsh.runs.run` is what `python -m rsh.main` calls: it writes `config.json`, trains
# with checkpoints (a rerun of this cell resumes or reuses the finished run), evaluates
# retrieval every `eval_every` steps and at the end, and writes `results.json`. Each
# evaluation row also records the training step's term values, so the history holds a
# curve per term.

# %%
from rsh import runs

config.train.num_steps = STEPS
config.train.eval_every = max(1, STEPS // 10)
config.train.checkpoint_every = max(1, STEPS // 2)
config.train.log_every = max(1, STEPS // 60)
config.train.progress = False

t0 = time.time()
results = runs.run(config, WORKDIR, terms=TERMS)
print(f"{time.time() - t0:.0f} s")
print(runs.summary_line(results))

# %% [markdown]
# ## Loss curves
#
# `train_history.jsonl` has one row every `log_every` steps with each term's
# unweighted value at that step (`d/<term>`, `g/<term>`; `d_loss` / `g_loss` are the
# weighted sums). The new `my_balance` term is there beside the built-in ones.
# `eval_history.jsonl` has the same columns (as `train/...`) at each evaluation.

# %%
from rsh import histories

curve = histories.read_train_history(WORKDIR)
steps = [r["step"] for r in curve]
term_keys = sorted({k for r in curve for k in r if k.startswith(("d/", "g/"))})
assert "d/my_balance" in term_keys, term_keys
print(len(curve), "rows; terms:", term_keys)
history = sorted(results["history"], key=lambda r: r["step"])  # one row per evaluation

fig, axes = plt.subplots(1, len(term_keys), figsize=(3.2 * len(term_keys), 3), squeeze=False)
for ax, key in zip(axes[0], term_keys):
    ax.plot(steps, [r.get(key, np.nan) for r in curve], "-", linewidth=1)
    ax.set_title(key, fontsize=9)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
save_and_show(fig, "loss_terms.png");

# %% [markdown]
# ## Retrieval MAP against training
#
# The same rows hold the codes' MAP (Hamming ranking of the binary codes, and cosine
# ranking of the real-valued outputs). The shallow baselines (LSH and ITQ) are fitted
# once and listed under `baselines` in `results.json`: drawn as flat lines.

# %%
k = int(config.eval.k)
fig, ax = plt.subplots(figsize=(6, 4))
for key, label in ((f"binary/map@{k}", "UAHM codes (Hamming)"),
                   (f"nonbinary/map@{k}", "UAHM real outputs (cosine)")):
    pts = [(r["step"], r[key]) for r in history if key in r]
    if pts:
        ax.plot(*zip(*pts), "-o", markersize=3, label=label)
for i, (name, m) in enumerate(sorted(results["baselines"].items())):
    if f"map@{k}" in m:
        ax.axhline(m[f"map@{k}"], linestyle=":", color=f"C{i + 2}",
                   label=f"{name} ({m[f'map@{k}']:.3f})")
ax.set_xlabel("training step")
ax.set_ylabel(f"MAP@{k}")
ax.grid(alpha=0.3)
ax.legend(fontsize=7)
save_and_show(fig, "map_curve.png");

final = results["history"][-1]
print(f"final MAP@{k}: {results['metrics'][f'map@{k}']:.4f}; "
      f"balance term at the last step: {final['train/d/my_balance']:.4f}")

# %% [markdown]
# To see what the new term does, run the notebook again with another workdir and
# `BALANCE_WEIGHT = 0` (the term is still computed and plotted, but leaves the sum).
