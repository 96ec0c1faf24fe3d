"""Writes the notebooks of this folder (outputs cleared): `python notebooks/build_notebooks.py`.

The .ipynb files are generated from the cells below so they stay small and
reviewable; edit here, run once, commit both.
"""

import pathlib

import nbformat
from nbformat import v4

HERE = pathlib.Path(__file__).resolve().parent

KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}


def md(text):
  return v4.new_markdown_cell(text.strip())


def code(text, tags=()):
  cell = v4.new_code_cell(text.strip())
  if tags:
    cell.metadata["tags"] = list(tags)
  return cell


def write(name, cells):
  nb = v4.new_notebook(cells=cells, metadata=KERNEL)
  nbformat.validate(nb)
  nbformat.write(nb, HERE / name)
  print("wrote", HERE / name)


# Shared by every notebook: where the repository is, and the figure helper.
SETUP = '''
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
'''

# --------------------------------------------------------------------------- 1

COMPOSE = [
    md('''
# Composing UAHM's objective from loss terms

UAHM trains a GAN whose discriminator also outputs a hash code. Its objective is not
one hard-coded function: it is a list of small loss terms, each a pure function of
arrays, that the config switches on, weights and wires to the model's outputs.
This notebook

1. lists the terms `rsh.losses` knows and shows how `config.losses` binds them,
2. writes a new term here (a bit-balance penalty) and adds it to the objective,
3. trains on the embedded demo data through the normal entry point `rsh.runs.run`,
4. plots every term's value and the retrieval MAP against the training step.
'''),
    md('''
## Parameters

Every value can also come from an environment variable (the tests use them to
shrink the run). The workdir is relative to where the notebook runs; `runs/`
folders are ignored by git.
'''),
    code('''
import os

WORKDIR = os.environ.get("RSH_NB_WORKDIR", "runs/compose_losses")
CONFIG = os.environ.get("RSH_NB_CONFIG", "configs/uahm.py:demo")   # file:variant[,key=value]
STEPS = int(os.environ.get("RSH_NB_STEPS", "300"))
BALANCE_WEIGHT = float(os.environ.get("RSH_NB_BALANCE_WEIGHT", "0.5"))
''', tags=["parameters"]),
    code(SETUP),
    md('''
## The registered terms

`rsh.losses.LOSSES` maps a name to a `Term`: the function and, for each of its array
arguments, the key it reads by default. The keys name things the training step
offers: the discriminator's logits (`real_logit`, `fake_logit`), its tanh codes
(`real_hash`) and batch inputs such as the similarity block `similarity`.
'''),
    code('''
from rsh import losses as rlosses

for name, term in rlosses.LOSSES.items():
    args = ", ".join(f"{a} <- {k}" for a, k in term.inputs.items())
    print(f"{name:18s} {term.fn.__module__}.{term.fn.__name__}({args})")
'''),
    md('''
Each term is an ordinary function, so it can be called on any arrays. Codes near
±1 give a low binary loss; codes whose inner products follow the similarity matrix
give a low semantic loss.
'''),
    code('''
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
'''),
    md('''
## How the config binds them

`config.losses` has one entry per term: its weight, the network whose gradient it
joins (`on`), and optionally which key each argument reads. `rsh.losses.bind` turns
that into one list of bound terms per network; the step sums each list
(`rsh.losses.total_loss`).
'''),
    code('''
config = restore.config_from_file(CONFIG)
print(config.losses)
bound = rlosses.bind(config.losses, nets=("discriminator", "generator"))
for net, terms in bound.items():
    print(net, "=", " + ".join(f"{b.weight:g} * {b.name}({', '.join(b.inputs.values())})"
                               for b in terms))
'''),
    md('''
## A term of our own: bit balance

A good code uses each bit about half the time as +1 and half as −1, otherwise the
bit says little about the image. The penalty below is the mean over bits of the
squared average of each bit over the batch: 0 when every bit is balanced, 1 when
every image gets the same code. It is a plain `jnp` function; its argument name
`codes` becomes an input the config binds.
'''),
    code('''
def bit_balance(codes):
    """Mean over bits of (mean over the batch of the bit)^2, for codes in [-1, 1]."""
    return jnp.mean(jnp.square(jnp.mean(codes, axis=0)))

print("balanced random codes:", float(bit_balance(hard)))
print("one code for every image:", float(bit_balance(jnp.ones((8, 16)))))
'''),
    md('''
It joins the discriminator's objective by one more config entry, reading the codes
of the real images. Passing `terms={"balance": bit_balance}` tells the binder
what `balance` is; nothing global changes. Binding again shows the new sum.
'''),
    code('''
TERMS = {"balance": bit_balance}
config.losses.balance = dict(weight=BALANCE_WEIGHT, on="discriminator", codes="real_hash")
for net, terms in rlosses.bind(config.losses, nets=("discriminator", "generator"),
                               terms=TERMS).items():
    print(net, "=", " + ".join(f"{b.weight:g} * {b.name}" for b in terms))
'''),
    md('''
## Train through the normal entry point

`rsh.runs.run` is what `python -m rsh.main` calls: it writes `config.json`, trains
with checkpoints (a rerun of this cell resumes or reuses the finished run), evaluates
retrieval every `eval_every` steps and at the end, and writes `results.json`. Each
evaluation row also records the training step's term values, so the history holds a
curve per term.
'''),
    code('''
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
'''),
    md('''
## Loss curves

`train_history.jsonl` has one row every `log_every` steps with each term's
unweighted value at that step (`d/<term>`, `g/<term>`; `d_loss` / `g_loss` are the
weighted sums). The new `balance` term is there beside the built-in ones.
`eval_history.jsonl` has the same columns (as `train/...`) at each evaluation.
'''),
    code('''
from rsh import train

curve = train.read_train_history(WORKDIR)
steps = [r["step"] for r in curve]
term_keys = sorted({k for r in curve for k in r if k.startswith(("d/", "g/"))})
assert "d/balance" in term_keys, term_keys
print(len(curve), "rows; terms:", term_keys)
history = sorted(results["history"], key=lambda r: r["step"])  # one row per evaluation

fig, axes = plt.subplots(1, len(term_keys), figsize=(3.2 * len(term_keys), 3), squeeze=False)
for ax, key in zip(axes[0], term_keys):
    ax.plot(steps, [r.get(key, np.nan) for r in curve], "-", linewidth=1)
    ax.set_title(key, fontsize=9)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
save_and_show(fig, "loss_terms.png");
'''),
    md('''
## Retrieval MAP against training

The same rows hold the codes' MAP (Hamming ranking of the binary codes, and cosine
ranking of the real-valued outputs). The shallow baselines (LSH and ITQ) are fitted
once and listed under `baselines` in `results.json`: drawn as flat lines.
'''),
    code('''
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
      f"balance term at the last step: {final['train/d/balance']:.4f}")
'''),
    md('''
To see what the new term does, run the notebook again with another workdir and
`BALANCE_WEIGHT = 0` (the term is still computed and plotted, but leaves the sum).
'''),
]

# --------------------------------------------------------------------------- 2

EXPLORER = [
    md('''
# Exploring what a trained run retrieves

This notebook loads a finished run from its workdir (training a short one first if
the workdir is empty), encodes the query and archive images into binary codes,
shows the nearest archive images of a few queries in true and false colour, and
compares the precision–recall curve of the learned codes with two shallow hashes
fitted on the raw pixels (random hyperplanes, LSH, and ITQ).
'''),
    md('''
## Parameters
'''),
    code('''
import os

WORKDIR = os.environ.get("RSH_NB_WORKDIR", "runs/retrieval_explorer")
CONFIG = os.environ.get("RSH_NB_CONFIG", "configs/uahm.py:demo,recipe=tuned")  # if no run yet
STEPS = int(os.environ.get("RSH_NB_STEPS", "200"))   # steps of that short run
N_QUERIES = int(os.environ.get("RSH_NB_QUERIES", "4"))
TOP_K = int(os.environ.get("RSH_NB_TOP_K", "8"))
SEED = 0
''', tags=["parameters"]),
    code(SETUP),
    md('''
## A run to look at

`rsh.restore.latest_step` says whether the workdir holds a checkpoint; if not, a
short run of `CONFIG` is trained there through `rsh.runs.run`, the normal entry
point.
'''),
    code('''
from rsh import runs

if restore.latest_step(WORKDIR) is None:
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
'''),
    md('''
## Load it back

`rsh.restore.load_run` reads `config.json`, prepares the same data split, rebuilds
the method and restores the latest checkpoint. `rsh.restore.encode` runs the
method's encoder on a named image set; UAHM gives the tanh code (`hash`) and the
discriminator's features (`feature`). A code bit is 1 where the tanh output is ≥ 0.
'''),
    code('''
from rsh import hamming, search

run = restore.load_run(WORKDIR)
print(f"{run.config.name} ({run.config.variant}), step {run.step}, "
      f"{run.config.model.bits} bits; bands {', '.join(run.data.band_names)}")
q_out, a_out = restore.encode(run, "query"), restore.encode(run, "archive")
q_codes = hamming.pack_codes(q_out["hash"] >= 0)
a_codes = hamming.pack_codes(a_out["hash"] >= 0)
q_labels, a_labels = run.labels("query"), run.labels("archive")
print("query codes", q_codes.shape, "archive codes", a_codes.shape, "(packed bytes)")
'''),
    md('''
## Top-k retrievals

One query from each of a few classes (drawn with a fixed seed). Each row is the
query then its `TOP_K` nearest archive images by Hamming distance; a green frame
means the same class as the query, red another class. True colour uses the red,
green and blue bands (B04 B03 B02); the false-colour version puts near infrared in
the red channel (B08 B04 B03), so vegetation shows bright red.
'''),
    code('''
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
'''),
    md('''
## Precision–recall against shallow baselines

`rsh.protocol.evaluate` scores a whole query set against the archive: MAP@k,
precision@n and a precision–recall curve, ties in Hamming distance handled
fairly. The baselines need no training: LSH takes random hyperplanes through the
mean training image, ITQ rotates the top principal directions so the signs lose as
little as possible (`rsh.shallow`). Both see the same pixels and code length.
'''),
    code('''
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

display(Markdown("\\n".join([f"| hash | MAP@{k} | precision@{n} |", "|---|---|---|"] + [
    f"| {label} | {m[f'map@{k}']:.4f} | {m[f'precision@{n}']:.4f} |"
    for label, m in curves.items()])))
'''),
]

# --------------------------------------------------------------------------- 3

REPRODUCE = [
    md('''
# A paper table, ours beside the thesis

`python -m rsh.reproduce --table=T` trains every model, code length and seed a table
needs, reuses finished runs in its workdir, and writes a markdown table where each
cell is our number with the thesis's in brackets. This notebook runs one table's
`demo` variant (the embedded procedural data, no downloads) and puts the two
numbers of each cell side by side as a table and a bar chart.

The demo data is synthetic and small, and each run is short, so the absolute
numbers are not expected to match the thesis's full EuroSAT protocol; the point is
the comparison's shape and a quick end-to-end check.
'''),
    md('''
## Parameters

`EXTRA_SET` takes `key=value` config overrides separated by `;` (each becomes a
`--set=` of the CLI); the tests use it to make every run tiny.
'''),
    code('''
import os

WORKDIR = os.environ.get("RSH_NB_WORKDIR", "runs/reproduce_tables")
TABLE = os.environ.get("RSH_NB_TABLE", "5.7")        # 5.6, 5.7, 5.8, 5.9
VARIANT = os.environ.get("RSH_NB_VARIANT", "demo")
BITS = os.environ.get("RSH_NB_BITS", "32")            # comma-separated code lengths
SEEDS = int(os.environ.get("RSH_NB_SEEDS", "1"))
STEPS = os.environ.get("RSH_NB_STEPS", "")            # empty: the variant's own
EXTRA_SET = [s for s in os.environ.get("RSH_NB_SET", "").split(";") if s]
''', tags=["parameters"]),
    code(SETUP),
    md('''
## Run the table

The table functions of `rsh.reproduce` read its command-line flags, so the notebook
calls the command itself, with the same Python. Finished runs in the workdir are
reused: running the cell again is quick.
'''),
    code('''
import subprocess

cmd = [sys.executable, "-m", "rsh.reproduce", f"--table={TABLE}", f"--variant={VARIANT}",
       f"--workdir={WORKDIR}", f"--bits={BITS}", f"--seeds={SEEDS}",
       *([f"--steps={STEPS}"] if STEPS else []), *(f"--set={s}" for s in EXTRA_SET)]
print(" ".join(cmd[1:]))
t0 = time.time()
proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
print(f"{time.time() - t0:.0f} s, exit status {proc.returncode}")
print("\\n".join(proc.stderr.splitlines()[-15:]))
assert proc.returncode == 0, proc.stderr[-3000:]
text = (WORKDIR / f"table_{TABLE.replace('.', '_')}.md").read_text()
display(Markdown(text))
'''),
    md('''
## Ours beside the thesis

Each cell of the written table reads `ours (thesis)`, or `mean ± std (thesis)` over
several seeds; Table 5.9 has the thesis in its own column. The cell below splits
them into one row per cell. Rows marked "not in thesis" (the shallow baselines)
have no thesis number.
'''),
    code('''
import re

NUM = r"(\\d+\\.\\d+)"
CELL = re.compile(rf"^{NUM}(?: ± {NUM})?(?: \\({NUM}\\))?$")


def parse_table(text):
    """Markdown table -> rows of (row, column, ours, std, thesis)."""
    lines = [l for l in text.splitlines() if l.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    out = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = dict(zip(header, cells))
        thesis_col = row.get("thesis")
        for col, cell in list(row.items())[1:]:
            m = CELL.match(cell)
            if col == "thesis" or not m:
                continue
            ours, std, thesis = m.groups()
            if thesis is None and thesis_col and CELL.match(thesis_col):
                thesis = thesis_col
            out.append((cells[0], col, float(ours), float(std) if std else None,
                        float(thesis) if thesis else None))
    return out


rows = parse_table(text)
assert rows, text
display(Markdown("\\n".join(
    ["| row | column | ours | thesis | ours − thesis |", "|---|---|---|---|---|"] + [
        f"| {r} | {c} | {o:.4f}{f' ± {s:.4f}' if s is not None else ''} | "
        f"{'—' if p is None else f'{p:.4f}'} | {'—' if p is None else f'{o - p:+.4f}'} |"
        for r, c, o, s, p in rows])))
'''),
    md('''
## Bar chart

One group of bars per table cell: ours (with the spread over seeds when there are
several) and the thesis's number, where it has one.
'''),
    code('''
labels = [f"{r}\\n{c}" if len({c for _, c, *_ in rows}) > 1 else r for r, c, *_ in rows]
x = np.arange(len(rows))
ours = np.array([o for _, _, o, _, _ in rows])
err = np.array([s or 0.0 for _, _, _, s, _ in rows])
thesis = np.array([np.nan if p is None else p for *_, p in rows])
fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(rows) + 2), 4.5))
ax.bar(x - 0.2, ours, 0.4, yerr=err if err.any() else None, label=f"ours ({VARIANT})")
ax.bar(x + 0.2, np.nan_to_num(thesis), 0.4, label="thesis", color="0.6")
ax.set_xticks(x)
ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
ax.set_ylim(0, 1)
ax.set_title(text.splitlines()[0], fontsize=8)
ax.grid(axis="y", alpha=0.3)
ax.legend(fontsize=8)
save_and_show(fig, f"table_{TABLE.replace('.', '_')}_bars.png");
'''),
]


if __name__ == "__main__":
  write("compose_losses.ipynb", COMPOSE)
  write("retrieval_explorer.ipynb", EXPLORER)
  write("reproduce_tables.ipynb", REPRODUCE)
