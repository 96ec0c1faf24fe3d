"""One command per paper table: `python -m rsh.reproduce --table=5.7 --workdir=DIR`.

Runs every model, code length and seed a table needs (a finished run found in
DIR is reused, an interrupted one resumed), then prints a markdown table with
the thesis's number beside ours in every cell and writes it to DIR.

Variants: `full` (the paper protocol; needs the full EuroSAT), `small` (a small
folder such as the 369 real GeoTIFFs, `--data_dir=...`), `demo`. Tables 5.6-5.9
and Fig. 5.14 are UAHM and its baselines (ch. 5); Table 4.1 the IS / FID of the
conditional GANs' images (ch. 4), each at its config's own training length;
Tables 4.3 / 4.4 triplet hashing (`configs/triplet_hash.py`) trained on real
images alone or with each GAN's (`rsh.tables_ch4`; the two GANs are trained
first, or their finished runs in DIR reused, on the same split).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pathlib
import re
import time

import numpy as np
from absl import app, flags

from rsh import checkpoints
from rsh import cli
from rsh import config_lib
from rsh import paper
from rsh import platform
from rsh import runs
from rsh import tables_ch4
from rsh import train
from rsh.workdir import WorkdirLockedError

TABLES = ("4.1", "4.3", "4.4", "5.6", "5.7", "5.8", "5.9", "fig5.14")


class _CodeLengths(flags.ListParser):
  """--bits: positive integers, each once (absl's message: `flag --bits=...: ...`)."""

  def parse(self, argument) -> list[int]:
    values = super().parse(argument)
    if not values or any(not re.fullmatch(r"\s*\d*[1-9]\d*\s*", str(b)) for b in values):
      raise ValueError("code lengths are positive integers, e.g. --bits=32,64,128")
    if len({int(b) for b in values}) < len(values):
      raise ValueError("a code length is given twice")
    return [int(b) for b in values]


_TABLE = flags.DEFINE_enum("table", None, TABLES, "Which table or figure to reproduce.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where runs and tables are written.")
_VARIANT = flags.DEFINE_enum("variant", "small", ("full", "small", "demo"), "Protocol size.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "EuroSAT-MS folder (variants full/small).")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds per cell; mean ± std when > 1.", lower_bound=1)
_BITS = flags.DEFINE(_CodeLengths(), "bits", "32,64,128", "Code lengths of Tables 5.7 and 5.8 "
                     "(4.3: default 16,32,64); Tables 4.4, 5.6 and 5.9 and Fig. 5.14 take one "
                     "(default 32, 64, 128, 64).",
                     serializer=flags.CsvListSerializer(","))
_STEPS = flags.DEFINE_integer("steps", None, "The training steps of every run.", lower_bound=1)
_SET = flags.DEFINE_multi_string("set", [], "Extra config override key=value (repeatable).")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Reuse or resume a run in --workdir whose config.json differs from this config (eval.* "
    "and evals.* keys and train.num_steps / *_every may always change).")

_ALLOW_DATA = flags.DEFINE_bool(
    "allow_data_change", False, "Reuse or resume a run in --workdir whose data.json differs "
    "from the data loaded now (rsh.data.fingerprint).")

log = logging.getLogger("rsh.reproduce")  # not __name__: this runs as __main__

# Training steps per run where a table needs many runs: `small` is 36 runs for
# Table 5.7 (4 models x 3 code lengths x 3 seeds), about an hour on 2 CPU cores.
# The chapter-5 tables only; the others train each config's own length.
DEFAULT_STEPS = {"small": 40}
SHORT_TABLES = ("5.6", "5.7", "5.8", "5.9", "fig5.14")
GANS = ("cdcgan", "acgan")   # configs without codes (no bits)

REPO = pathlib.Path(__file__).resolve().parents[1]

PAPER, ROW_NAMES = paper.PAPER, paper.ROW_NAMES

# Baselines every deep run evaluates beside itself (config_lib.baselines).
BASELINE_ROWS = {"random_projection": "LSH, pixels", "itq": "ITQ, pixels",
                 "lsh_efficientnet_lite0": "LSH, EfficientNet-Lite0 features",
                 "itq_efficientnet_lite0": "ITQ, EfficientNet-Lite0 features"}


def load_config(name: str, arg: str):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


_apply = config_lib.apply_overrides  # `--set` key=value overrides


def make_config(name: str, bits: int | None, seed: int):
  """The config of one cell; `bits` None for a model without codes (Table 4.1's GANs)."""
  config = load_config(name, f"{_VARIANT.value},seed={seed}" + (f",bits={bits}" if bits else ""))
  config.train.progress = False
  if _DATA_DIR.value:
    config.data.dir = _DATA_DIR.value
  if name == "ssm_hash":  # Table 4.3's unsupervised row: triplet_hash's split and protocol
    config = ssm_on_triplet_protocol(config, bits, seed)
  short = bits and _TABLE.value in SHORT_TABLES
  steps = _STEPS.value or (DEFAULT_STEPS.get(_VARIANT.value) if short else None)
  if steps:
    config.train.num_steps = steps
    config.train.eval_every = min(int(config.train.eval_every), max(steps // 2, 1))
  # Tables 4.3 / 4.4: every --set key is checked on triplet_hash's config, and set
  # in the GANs' and SSM-Hash's where they have it (e.g. data.generated.n is not theirs).
  others = _TABLE.value in ("4.3", "4.4") and name != "triplet_hash"
  return _apply(config, _SET.value, only_present=others)


def ssm_on_triplet_protocol(config, bits: int, seed: int):
  """SSM-Hash on Table 4.3's test set: each test image ranks the others (leave-one-out)."""
  ref = load_config("triplet_hash", f"{_VARIANT.value},seed={seed},bits={bits}")
  config.data.n_query, config.data.n_train = ref.data.n_query, ref.data.n_train
  config.eval.k, config.eval.n = ref.eval.k, ref.eval.n
  config.evals = {"retrieval": dict(config.evals.retrieval, leave_one_out=True, archive="query")}
  return config


# The models each table runs; the tables of one code length, with its default.
TABLE_MODELS = {"4.1": GANS, "4.3": ("triplet_hash", *GANS, "ssm_hash"),
                "4.4": ("triplet_hash", *GANS), "5.6": ("uahm",), "5.9": ("uahm",),
                "fig5.14": ("uahm", "gan_ms", "gan_rgb"),
                **dict.fromkeys(("5.7", "5.8"), tuple(dict.fromkeys(n for n, _ in PAPER["5.7"])))}
ONE_BITS = {"4.4": (32, "class-wise MAP@100 at 32 bits in the thesis"),
            "5.6": (64, "SSM quality, which the code length does not change"),
            "5.9": (128, "class-wise MAP@100 of UAHM's binary codes, 128 bits in the thesis"),
            "fig5.14": (64, "MAP against training steps of UAHM, GAN-MS and GAN-RGB")}


def table_bits() -> list[int]:
  """The code lengths the table runs: every --bits for Tables 5.7 and 5.8; for
  the others one, --bits's or the ONE_BITS default."""
  bits = _BITS.value
  if _TABLE.value == "4.1":  # generators: no codes, no code length
    if _BITS.present:
      cli.fail("--bits: --table=4.1 scores generated images; its GANs make no codes")
    return [None]
  if _TABLE.value == "4.3" and not _BITS.present:
    return [16, 32, 64]
  if _TABLE.value not in ONE_BITS:
    return bits
  default, what = ONE_BITS[_TABLE.value]
  if not _BITS.present:
    return [default]
  if len(bits) > 1:
    cli.fail(f"--bits={','.join(map(str, bits))}: --table={_TABLE.value} is of one code length "
             f"({what}); give one, e.g. --bits={default}")
  return bits


def check_flags() -> str:
  """Before any work, what absl does not check: the table's --bits and every
  config it builds (--set, --data_dir). Returns config.train.cpu_conv."""
  configs, bits = [], table_bits()
  for name in TABLE_MODELS[_TABLE.value]:  # a mistake named with the config it is in
    try:
      configs += [make_config(name, b, 0) for b in ([None] if name in GANS else bits)]
    except ValueError as e:
      cli.fail(f"{e} (configs/{name}.py)")
  data = configs[0].data
  flag = "--data_dir" if _DATA_DIR.value else "--set data.dir"
  if data.source == "demo" and data.dir is not None:
    cli.fail(f"{flag}={data.dir}: --variant=demo makes its own images and reads no folder")
  if data.source == "folder" and data.dir is None:
    cli.fail(f"--variant={_VARIANT.value} reads a folder of <Class>/*.tif: give --data_dir, "
             "e.g. --data_dir=../shared/data/eurosat_ms")
  if data.dir is not None and not os.path.isdir(data.dir):
    cli.fail(f"{flag}={data.dir}: " + ("not a directory" if os.path.exists(data.dir)
                                        else "no such directory"))
  return configs[0].train.get("cpu_conv", "eigen")


def figures_drawn(workdir: pathlib.Path, results: dict) -> bool:
  """A run draws its figures after writing results.json, then lists them there
  (`figures`, rsh.experiment): a run stopped while drawing them has no list (a
  run from before the list: map_vs_steps.png, drawn first, is older or missing)."""
  if "figures" in results:
    return all((workdir / name).is_file() for name in results["figures"])
  fig = workdir / "map_vs_steps.png"
  return (fig.is_file() and fig.stat().st_size > 0
          and fig.stat().st_mtime >= (workdir / "results.json").stat().st_mtime)


def run_cell(name: str, bits: int | None, seed: int, generated: str | None = None) -> dict:
  """Trains (or reuses) one model; returns its results.json, plus `workdir` and
  `reused`. `generated`: the GAN config whose images join the training set (its
  cell trained or reused first, on the same seed and so the same split)."""
  root = pathlib.Path(_WORKDIR.value)
  label = f"{name}_{generated}" if generated else name
  workdir = root / (f"{label}_{bits}b_seed{seed}" if bits else f"{label}_seed{seed}")
  config = make_config(name, bits, seed)
  if generated:
    gan = run_cell(generated, None, seed)
    config.data.generated.workdir = gan["workdir"]
    config.name = f"{config.name}+{generated}"
  done = runs.load_results(workdir)
  if done is not None and done.get("history"):
    # Never reuse a run of another config (unless --allow_config_change).
    runs.check_workdir(config, workdir, _ALLOW_CHANGE.value)
    trained = max(r["step"] for r in done["history"])
    if trained == config.train.num_steps and figures_drawn(workdir, done):
      log.info("reusing %s", workdir)
      return {**done, "workdir": str(workdir), "reused": True}
    if trained == config.train.num_steps:  # its final checkpoint, evaluated again
      log.info("%s: finished, its figures not drawn: drawing them", workdir)
    if trained > config.train.num_steps:
      # A checkpoint cannot be trained backwards: reusing it would put a longer
      # run's numbers in a table that says otherwise.
      raise ValueError(
          f"{workdir} holds a finished run of {trained} steps, more than the "
          f"{config.train.num_steps} asked for; use another --workdir, or --steps={trained}")
  t0 = time.time()
  results = runs.run(config, workdir, allow_config_change=_ALLOW_CHANGE.value,
                     allow_data_change=_ALLOW_DATA.value)
  log.info("%s: %.0fs, %s", workdir.name, time.time() - t0, runs.summary_line(results))
  return {**results, "workdir": str(workdir), "reused": False}


_cell = paper.cell


def table_57_58(table: str) -> str:
  bits, seeds = table_bits(), range(_SEEDS.value)
  metric = "map@100" if table == "5.7" else "precision@20"
  rows, cache = [], {}
  for (name, kind) in PAPER[table]:
    cells = []
    for b in bits:
      vals = []
      for s in seeds:
        key = (name, b, s)
        if key not in cache:
          cache[key] = run_cell(name, b, s)
        vals.append(cache[key]["metrics"][f"{kind}/{metric}"])
      paper = PAPER[table][(name, kind)].get(b)
      cells.append(f"{_cell(vals)} ({paper:.4f})" if paper else _cell(vals))
    rows.append(f"| {ROW_NAMES[(name, kind)]} | " + " | ".join(cells) + " |")
  # Shallow baselines (not in the thesis), from the UAHM runs' `baselines`.
  for base, label in BASELINE_ROWS.items():
    cells = []
    for b in bits:
      vals = [cache[("uahm", b, s)]["baselines"][base][metric] for s in seeds
              if base in cache[("uahm", b, s)].get("baselines", {})]
      cells.append(_cell(vals))
    rows.append(f"| {label} (not in thesis) | " + " | ".join(cells) + " |")
  head = f"| model | " + " | ".join(f"{b} bits" for b in bits) + " |"
  title = {"5.7": "MAP@100", "5.8": "precision@20"}[table]
  return "\n".join([f"Table {table} — {title}, ours (thesis in brackets); variant "
                    f"{_VARIANT.value}, {len(seeds)} seed(s)", "", head,
                    "|" + "---|" * (len(bits) + 1), *rows])


def table_59() -> str:
  seeds, (bits,) = range(_SEEDS.value), table_bits()
  per_class, tie_aware = {}, {}  # class -> its MAP@100 in each seed
  prefix, tie_prefix = "binary/classwise_map@100/", "binary/classwise_map@100/tie_aware/"
  for s in seeds:
    res = run_cell("uahm", bits, s)
    for key, v in res["metrics"].items():
      if key.startswith(tie_prefix):
        tie_aware.setdefault(key[len(tie_prefix):], []).append(v)
      elif key.startswith(prefix):
        per_class.setdefault(key[len(prefix):], []).append(v)
  rows = [f"| {c} | {_cell(per_class.get(c, []))} | {_cell(tie_aware.get(c, []))} | {p:.4f} |"
          for c, p in PAPER["5.9"].items()]
  thesis = "" if bits == 128 else " (the thesis: 128 bits)"
  return "\n".join([f"Table 5.9 — class-wise MAP@100, UAHM binary {bits} bits{thesis}; "
                    f"variant {_VARIANT.value}, {len(seeds)} seed(s); tie-aware = expected MAP@100 "
                    "over orders within ties", "",
                    "| class | ours | ours, tie-aware | thesis |", "|---|---|---|---|", *rows])


# Table 5.6's rows: ours, its config.ssm.spatial and .spectral, the thesis's row beside it.
SSM_ROWS = (("EfficientNet-Lite0 (stands in for Inception-v3)", "efficientnet_lite0", "none",
             "Inception-v3"),
            ("raw colour", "none", "raw", "raw colour"),
            ("local histogram", "none", "local_hist", "local histogram"),
            ("EfficientNet-Lite0 + local histogram", "efficientnet_lite0", "local_hist",
             "Inception-v3 + local histogram"))


def table_56() -> str:
  """SSM accuracy / IoU for each feature type on the training set (no training)."""
  from rsh import data as rdata, experiment, similarity
  (bits,), acc, iou = table_bits(), {}, {}
  for s in range(_SEEDS.value):
    prepared = rdata.prepare(make_config("uahm", bits, s))
    for label, spatial, spectral, _ in SSM_ROWS:
      c = make_config("uahm", bits, s)
      c.ssm.spatial, c.ssm.spectral = spatial, spectral
      packed, _ = experiment.training_ssm(c, prepared)
      info = similarity.ssm_quality(packed, prepared.labels[prepared.split.train])
      acc.setdefault(label, []).append(info["accuracy"])
      iou.setdefault(label, []).append(info["iou"])
  out = [f"Table 5.6 — SSM quality on the training set; variant {_VARIANT.value}, "
         f"{_SEEDS.value} seed(s); thesis numbers (Inception-v3 where we use "
         "EfficientNet-Lite0) in brackets", "",
         "| features | accuracy | IoU |", "|---|---|---|"]
  for label, *_, thesis in SSM_ROWS:
    pa, pi = PAPER["5.6"][thesis]
    out.append(f"| {label} | {_cell(acc[label])} ({pa:.4f}) | {_cell(iou[label])} ({pi:.4f}) |")
  return "\n".join(out)


def fig_514() -> str:
  from rsh import plots
  (bits,) = table_bits()
  series, lines, reference = {}, [], None
  for name, label in (("uahm", "UAHM"), ("gan_ms", "GAN-MS"), ("gan_rgb", "GAN-RGB")):
    res = run_cell(name, bits, 0)
    series[label] = res["history"]
    if name == "uahm":
      reference = {"random projection": res.get("baselines", {}).get("random_projection")}
    for r in res["history"]:
      cells = ["—" if r.get(key) is None else f"{r[key]:.4f}"  # GAN baselines have no codes
               for key in ("binary/map@all", "nonbinary/map@all", "binary/map@100",
                           "nonbinary/map@100")]
      lines.append(f"| {label} | {r['step']} | " + " | ".join(cells) + " |")
  rp = (reference or {}).get("random projection") or {}
  if rp:
    lines.append(f"| random projection ({bits} bits, pixels) | — | {rp.get('map@all', float('nan')):.4f}"
                 f" | — | {rp.get('map@100', float('nan')):.4f} | — |")
  path = pathlib.Path(_WORKDIR.value) / "fig5_14.png"
  plots.map_vs_steps([], path, k=100, series=series, reference=reference)
  return "\n".join([f"Fig. 5.14 — MAP@all (and MAP@100) against training steps, {bits} bits; "
                    f"variant {_VARIANT.value}; figure: {path}", "",
                    "| model | step | MAP@all (codes) | MAP@all (non-binary) | MAP@100 (codes) "
                    "| MAP@100 (non-binary) |",
                    "|---|---|---|---|---|---|", *lines])


def main(argv):
  with platform.stop_on_signals():  # Ctrl-C / SIGTERM: one line, what is kept
    try:
      _main(argv)
    except platform.Interrupted as e:
      cli.exit_now(f"interrupted: the finished runs in {_WORKDIR.value} are kept and the one "
                   "in progress resumes from its last checkpoint; rerun the same command "
                   "to go on", e.code)


def _main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
  if not _TABLE.value or not _WORKDIR.value:
    cli.fail("--table and --workdir are required, e.g. --table=5.7 --variant=demo "
             "--workdir=runs/t57")
  cpu_conv = check_flags()
  # rsh's own progress at INFO; libraries (orbax, absl) only when they warn.
  logging.getLogger().setLevel(logging.WARNING)
  logging.getLogger("rsh").setLevel(logging.INFO)
  platform.quiet_closed_event_loops()
  try:  # XLA reads its flags when jax's backend starts: before anything runs
    platform.set_cpu_conv(cpu_conv)
    workdir = pathlib.Path(_WORKDIR.value)
    created = runs._make_workdir(workdir)  # its messages: rsh.main's
  except ValueError as e:
    cli.fail(str(e))
  # Identical programs across seeds compile once.
  import jax
  cache = pathlib.Path(os.environ.get("RSH_CACHE_DIR") or pathlib.Path.home() / ".cache/rsh")
  jax.config.update("jax_compilation_cache_dir", str(cache / "jax"))
  table = _TABLE.value
  try:
    seeds, variant = range(_SEEDS.value), _VARIANT.value
    text = {"4.1": lambda: tables_ch4.table_41(run_cell, seeds, variant),
            "4.3": lambda: tables_ch4.table_43(run_cell, seeds, table_bits(), variant),
            "4.4": lambda: tables_ch4.table_44(run_cell, seeds, table_bits()[0], variant),
            "5.6": table_56, "5.7": lambda: table_57_58("5.7"), "5.8": lambda: table_57_58("5.8"),
            "5.9": table_59, "fig5.14": fig_514}[table]()
  except (ValueError, OSError, runs.ConfigMismatchError, train.NonFiniteLossError,
          checkpoints.CheckpointError, WorkdirLockedError) as e:
    if created and workdir.is_dir() and not any(workdir.iterdir()):
      workdir.rmdir()  # nothing was run: leave no empty folder behind
    cli.fail(cli.error_line(e, workdir))
  (workdir / f"table_{table.replace('.', '_')}.md").write_text(text + "\n")
  print(text)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
