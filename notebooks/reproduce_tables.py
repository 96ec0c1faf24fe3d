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
# # A paper table, ours beside the thesis
#
# `python -m rsh.reproduce --table=T` trains every model, code length and seed a table
# needs, reuses finished runs in its workdir, and writes a markdown table where each
# cell is our number with the thesis's in brackets. This notebook runs one table's
# `demo` variant (the embedded procedural data, no downloads) and puts the two
# numbers of each cell side by side as a table and a bar chart.
#
# The demo data is synthetic and small, and each run is short, so the absolute
# numbers are not expected to match the thesis's full EuroSAT protocol; the point is
# the comparison's shape and a quick end-to-end check.

# %% [markdown]
# ## Parameters
#
# `EXTRA_SET` takes `key=value` config overrides separated by `;` (each becomes a
# `--set=` of the CLI); the tests use it to make every run tiny.

# %% tags=["parameters"]
import os

WORKDIR = os.environ.get("RSH_NB_WORKDIR", "runs/reproduce_tables")
TABLE = os.environ.get("RSH_NB_TABLE", "5.7")        # 5.6, 5.7, 5.8, 5.9
VARIANT = os.environ.get("RSH_NB_VARIANT", "demo")
BITS = os.environ.get("RSH_NB_BITS", "32")            # comma-separated code lengths
SEEDS = int(os.environ.get("RSH_NB_SEEDS", "1"))
STEPS = os.environ.get("RSH_NB_STEPS", "")            # empty: the variant's own
EXTRA_SET = [s for s in os.environ.get("RSH_NB_SET", "").split(";") if s]

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
# ## Run the table
#
# The table functions of `rsh.reproduce` read its command-line flags, so the notebook
# calls the command itself, with the same Python. Finished runs in the workdir are
# reused: running the cell again is quick.

# %%
import subprocess

cmd = [sys.executable, "-m", "rsh.reproduce", f"--table={TABLE}", f"--variant={VARIANT}",
       f"--workdir={WORKDIR}", f"--bits={BITS}", f"--seeds={SEEDS}",
       *([f"--steps={STEPS}"] if STEPS else []), *(f"--set={s}" for s in EXTRA_SET)]
print(" ".join(cmd[1:]))
t0 = time.time()
proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
print(f"{time.time() - t0:.0f} s, exit status {proc.returncode}")
print("\n".join(proc.stderr.splitlines()[-15:]))
assert proc.returncode == 0, proc.stderr[-3000:]
text = (WORKDIR / f"table_{TABLE.replace('.', '_')}.md").read_text()
display(Markdown(text))

# %% [markdown]
# ## Ours beside the thesis
#
# Each cell of the written table reads `ours (thesis)`, or `mean ± std (thesis)` over
# several seeds; Table 5.9 has the thesis in its own column. The cell below splits
# them into one row per cell. Rows marked "not in thesis" (the shallow baselines)
# have no thesis number.

# %%
import re

NUM = r"(\d+\.\d+)"
CELL = re.compile(rf"^{NUM}(?: ± {NUM})?(?: \({NUM}\))?$")


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
display(Markdown("\n".join(
    ["| row | column | ours | thesis | ours − thesis |", "|---|---|---|---|---|"] + [
        f"| {r} | {c} | {o:.4f}{f' ± {s:.4f}' if s is not None else ''} | "
        f"{'—' if p is None else f'{p:.4f}'} | {'—' if p is None else f'{o - p:+.4f}'} |"
        for r, c, o, s, p in rows])))

# %% [markdown]
# ## Bar chart
#
# One group of bars per table cell: ours (with the spread over seeds when there are
# several) and the thesis's number, where it has one.

# %%
labels = [f"{r}\n{c}" if len({c for _, c, *_ in rows}) > 1 else r for r, c, *_ in rows]
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
