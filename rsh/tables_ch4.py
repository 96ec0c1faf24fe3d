"""The thesis's chapter-4 tables for `rsh.reproduce`: 4.1 (IS / FID of the conditional
GANs), 4.3 (MAP@100 of triplet hashing trained on real, real + C-DCGAN and real +
ACGAN images at 16 / 32 / 64 bits) and 4.4 (class-wise at 32 bits, with Table
4.5's change rows), each cell ours with the thesis's number in brackets.

Each table is a function of `run(name, bits, seed, generated=None) -> results.json`
(`rsh.reproduce.run_cell`: trains a cell or reuses a finished one; `generated` names
the conditional GAN whose images join the training set, trained or reused first),
the seeds and the variant.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from rsh import paper

PAPER, cell = paper.PAPER, paper.cell
Run = Callable[..., dict]

# The training sets of Tables 4.3 / 4.4: (key, generator config or None, row name).
CONDITIONS = (("real", None, "Only real images"), ("cdcgan", "cdcgan", "Real + C-DCGAN images"),
              ("acgan", "acgan", "Real + ACGAN images"))
GAN_NAMES = {"cdcgan": "C-DCGAN", "acgan": "ACGAN"}
SHORT = ("Ann.", "For.", "Her.", "Hig.", "Ind.", "Pas.", "Per.", "Res.", "Riv.", "Sea.")


def table_41(run: Run, seeds: Sequence[int], variant: str) -> str:
  """IS / FID of each conditional GAN's generated images, and the real images' floor."""
  cells, backbones = {}, set()
  for name in GAN_NAMES:
    for s in seeds:
      res = run(name, None, s)
      for key, v in res["metrics"].items():
        if key.startswith("generated/"):
          _, backbone, metric = key.split("/")
          backbones.add(backbone)
          cells.setdefault((name, metric), []).append(v)
  rows = [f"| {label} | {cell(cells.get((name, 'is'), []))} ({PAPER['4.1'][name][0]:.4f}) | "
          f"{cell(cells.get((name, 'fid'), []))} ({PAPER['4.1'][name][1]:.2f}) |"
          for name, label in GAN_NAMES.items()]
  rows.append(f"| real training images: IS; FID half vs half (the floor, not in thesis) | "
              f"{cell(cells.get(('acgan', 'is_real'), []))} | "
              f"{cell(cells.get(('acgan', 'fid_real_halves'), []))} |")
  named = ", ".join(sorted(backbones)) or "?"
  return "\n".join([f"Table 4.1 — generated image quality, ours on {named} (the thesis: "
                    "Inception classifiers, in brackets; numbers on another backbone are not "
                    f"the paper's metric); variant {variant}, {len(seeds)} seed(s)", "",
                    "| model | IS (higher is better) | FID (lower is better) |", "|---|---|---|",
                    *rows])


def map_key(res: dict) -> str:
  """The primary MAP of a leave-one-out run: map@k, k its retrieval entry's (100 on
  the full protocol; the test set less one where it is smaller)."""
  return f"map@{res['protocol']['retrieval']['k']}"


def _generators(run: Run, seeds: Sequence[int]) -> list[str]:
  """Trains or reuses each generator first; one line each: where, how long, which."""
  lines = []
  for name, label in GAN_NAMES.items():
    for s in seeds:
      res = run(name, None, s)
      how = "reused, finished before" if res.get("reused") else "trained now"
      steps = max((r["step"] for r in res.get("history", [])), default="?")
      lines.append(f"- {label}, seed {s}: {res.get('workdir', '?')} ({steps} steps; {how})")
  return lines


def _runs(run: Run, seeds, bits) -> dict:
  """{(condition, bits, seed): results} of every training set of Table 4.3."""
  return {(key, b, s): run("triplet_hash", b, s, generated=gen)
          for key, gen, _ in CONDITIONS for b in bits for s in seeds}


def _n_generated(res: dict) -> str:
  """How many generated images the runs of Table 4.3 added (from their results.json)."""
  return next((str(r["generated"]["n"]) for (cond, _, _), r in res.items()
               if cond != "real" and r.get("generated")), "?")


def table_43(run: Run, seeds: Sequence[int], bits: Sequence[int], variant: str) -> str:
  """MAP@100 of triplet hashing on each training set; ITQ / LSH / SSM-Hash beside it."""
  gens = _generators(run, seeds)
  res = _runs(run, seeds, bits)
  first = res[("real", bits[0], seeds[0])]
  key = map_key(first)
  rows = []
  for cond, _, label in CONDITIONS:
    cells = [f"{cell([res[(cond, b, s)]['metrics'][key] for s in seeds])}"
             + (f" ({PAPER['4.3'][cond][b]:.4f})" if b in PAPER["4.3"][cond] else "")
             for b in bits]
    rows.append(f"| {label} | " + " | ".join(cells) + " |")
  for base, label in (("itq_features", "ITQ"), ("lsh_features", "LSH")):
    cells = [cell([res[("real", b, s)]["baselines"][base][key] for s in seeds
                   if base in res[("real", b, s)]["baselines"]]) for b in bits]
    rows.append(f"| {label} on the same features, real images (not in thesis) | "
                + " | ".join(cells) + " |")
  ssm = [cell([run("ssm_hash", b, s)["metrics"][key] for s in seeds]) for b in bits]
  rows.append("| SSM-Hash (rsh's, no labels), real images (not in thesis) | "
              + " | ".join(ssm) + " |")
  n_test, n_train = first["n_query"], first["n_train"]
  return "\n".join([
      f"Table 4.3 — {key.upper()} of triplet hashing, each of {n_test} test images against "
      f"the other {n_test - 1} (the thesis: MAP@100 of 1,000, in brackets); {n_train} real "
      f"training images, + {_n_generated(res)} generated ones; variant {variant}, "
      f"{len(seeds)} seed(s)", "", "Generators:", *gens, "",
      "| training set | " + " | ".join(f"{b} bits" for b in bits) + " |",
      "|" + "---|" * (len(bits) + 1), *rows])


def table_44(run: Run, seeds: Sequence[int], bits: int, variant: str) -> str:
  """Class-wise MAP at one code length per training set, and the change against real."""
  gens = _generators(run, seeds)
  res = _runs(run, seeds, [bits])
  key = map_key(res[("real", bits, seeds[0])])
  classes = [n for n in PAPER["5.9"]]   # EuroSAT's class order
  def values(cond, tie=False):
    out = []
    for c in classes + ["ALL"]:
      name = (f"{key}/tie_aware" if tie else key) if c == "ALL" else (
          f"classwise_{key}/tie_aware/{c}" if tie else f"classwise_{key}/{c}")
      out.append([res[(cond, bits, s)]["metrics"][name] for s in seeds])
    return out
  rows, tie_rows, change = [], [], []
  base = [np.mean(v) for v in values("real")]
  for cond, _, label in CONDITIONS:
    ours = values(cond)
    thesis = PAPER["4.4"][cond] if bits == 32 else [None] * 11
    rows.append(f"| {label} | " + " | ".join(
        cell(v) + (f" ({p:.4f})" if p is not None else "") for v, p in zip(ours, thesis)) + " |")
    tie_rows.append(f"| {label}, tie-aware | " + " | ".join(cell(v) for v in values(cond, True))
                    + " |")
    if cond != "real":
      pct = PAPER["4.5"][cond] if bits == 32 else [None] * 11
      change.append(f"| {label}: change vs real (Table 4.5) | " + " | ".join(
          f"{100 * (np.mean(v) - b) / b:+.2f}%" + (f" ({p:+.2f}%)" if p is not None else "")
          for v, b, p in zip(ours, base, pct)) + " |")
  thesis = "" if bits == 32 else " (the thesis: 32 bits; no numbers beside ours)"
  return "\n".join([
      f"Table 4.4 — class-wise {key.upper()} of triplet hashing at {bits} bits{thesis}, ours "
      f"(thesis in brackets); variant {variant}, {len(seeds)} seed(s); tie-aware = the "
      "expected value over orders within Hamming-distance ties", "", "Generators:", *gens, "",
      "| training set | " + " | ".join(SHORT) + " | ALL |", "|" + "---|" * 12,
      *rows, *change, *tie_rows])
