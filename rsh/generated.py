"""Training rows made by a finished generator run (thesis ch. 4: hashing trained on
real images plus a conditional GAN's).

    config.data.generated = dict(workdir="runs/cdcgan", n=5000, seed=0)

asks the conditional generator in `workdir` (e.g. `configs/cdcgan.py`,
`configs/acgan.py`, trained to its last step) for `n` images of balanced
classes (image i of class i % classes) drawn from `seed`, and adds them to the
training set only (`rsh.data.with_training_rows`): never to the queries or the
archive, whose rows and views stay byte for byte what they are without them.
Their backbone features are computed like any row's. `prepare(config)` is
`rsh.data.prepare` plus these rows; results.json's `generated` says which run,
checkpoint step, n and seed they came from.

The rows are made once per (run, checkpoint step, n, seed) and kept under
`<cache>/generated/` (`RSH_CACHE_DIR`, `config.data.cache_dir`): a run trained
further, or another n or seed, is a new entry, never a stale one. Refused, each
with one line naming the workdir: no run there, a run without a conditional
generator, an unfinished run (its last checkpoint before `train.num_steps`),
classes or bands the consumer has and the generator lacks, and a generator
that trained on any of the consumer's query images (compared by pixels).
"""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib

import numpy as np

from rsh import checkpoints
from rsh import data as rdata
from rsh import runstate
from rsh.weights import convert

log = logging.getLogger(__name__)

KEYS = ("workdir", "n", "seed")
_VERSION = 1   # bumped when the rows made change


def spec(config) -> dict | None:
  """`config.data.generated` checked: {workdir, n, seed}, or None (no rows to add)."""
  raw = config.data.get("generated")
  if raw is None or raw.get("workdir") in (None, ""):
    return None
  unknown = sorted(set(raw.keys()) - set(KEYS))
  if unknown:
    raise ValueError(f"config.data.generated.{unknown[0]} is not an option (options: "
                     f"{', '.join(KEYS)})")
  out = {"workdir": str(raw["workdir"]), "n": raw.get("n", 5000), "seed": raw.get("seed", 0)}
  for key, low in (("n", 1), ("seed", 0)):
    v = out[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
      raise ValueError(f"config.data.generated.{key} must be an integer >= {low}; got {v!r}")
    out[key] = int(v)
  return out


def prepare(config) -> rdata.Prepared:
  """`rsh.data.prepare(config)`, plus the generated training rows it asks for, or a
  second domain's (`config.data.domain`, `rsh.data.domains`)."""
  data = rdata.prepare(config)
  s = spec(config)
  if s is not None and rdata.domains.spec(config) is not None:
    raise ValueError("config.data.generated and config.data.domain both add training rows; "
                     "set one of them")
  if s is None:
    return rdata.with_domain(data, config)
  images, labels, origin = rows(s, data, config.data.get("cache_dir"))
  out = rdata.with_training_rows(data, images, labels, origin)
  log.info("data: + %d generated training images from %s (step %d)", len(labels),
           origin["workdir"], origin["step"])
  return out


def _finished_step(workdir: pathlib.Path) -> int:
  """The generator run's last checkpoint step, refused unless it is the run's last."""
  what = f"config.data.generated.workdir={workdir}"
  try:
    config = runstate.read_config(workdir)
  except (FileNotFoundError, ValueError) as e:
    raise ValueError(f"{what}: {e}") from None
  step, total = checkpoints.latest_step(workdir), int(config.train.num_steps)
  if step is None or step < total:
    done = "no checkpoint" if step is None else f"its last checkpoint is step {step}"
    raise ValueError(f"{what}: the generator run is unfinished ({done} of {total}); "
                     "finish it first (the same python -m rsh.main command resumes it)")
  return step


def _key(workdir: pathlib.Path, step: int, s: dict, data: rdata.Prepared) -> str:
  """What the rows depend on: the run (config, data record, its checkpoint of `step`),
  the step, n, seed, and the consumer's classes, bands and query set."""
  def stat(path):
    st = path.stat() if path.exists() else None
    return None if st is None else [st.st_size, st.st_mtime_ns]
  ckpt = workdir / "checkpoints" / str(step)
  record = dict(
      version=_VERSION, workdir=str(workdir.resolve()), step=step, n=s["n"], seed=s["seed"],
      config=hashlib.sha256((workdir / "config.json").read_bytes()).hexdigest(),
      data=stat(workdir / "data.json"), checkpoint=stat(ckpt),
      classes=list(data.class_names), bands=list(data.band_names))
  return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]


def _row_digests(images: np.ndarray) -> np.ndarray:
  """uint8[n, 16]: a digest of each row's bytes (which images two sets share)."""
  return np.stack([np.frombuffer(hashlib.blake2b(np.ascontiguousarray(x).tobytes(),
                                                 digest_size=16).digest(), np.uint8)
                   for x in images]) if len(images) else np.zeros((0, 16), np.uint8)


def _make(workdir: pathlib.Path, s: dict, data: rdata.Prepared) -> dict:
  """Restores the generator and makes the rows (uint16 DN of the consumer's bands)."""
  what = f"config.data.generated.workdir={workdir}"
  run = runstate.restore(workdir)
  if run.method.generate is None or not run.method.conditional:
    kind = "no generator" if run.method.generate is None else "an unconditional generator"
    raise ValueError(f"{what}: the run ({run.config.get('name')}) has {kind}; labelled rows "
                     "need a conditional GAN (configs/cdcgan.py, configs/acgan.py)")
  names = list(run.data.class_names)
  missing = [c for c in data.class_names if c not in names]
  lacking = [b for b in data.band_names if b not in run.data.band_names]
  if missing or lacking:
    why = (f"classes {', '.join(missing)}" if missing else "") + (" and " if missing and lacking
                                                                 else "") + (
        f"bands {' '.join(lacking)}" if lacking else "")
    raise ValueError(f"{what}: the generator has no {why} of this dataset (it makes "
                     f"{' '.join(run.data.band_names)} of {', '.join(names)})")
  sel = rdata.band_indices(run.data.band_names, data.band_names)
  classes = len(data.class_names)
  labels = (np.arange(s["n"]) % classes).astype(np.int32)
  theirs = np.asarray([names.index(data.class_names[c]) for c in labels])
  log.info("generating %d images from %s (step %d)", s["n"], workdir, run.step)
  x = np.asarray(run.method.generate(run.state, theirs, s["seed"]), np.float32)[..., sel]
  # Back to digital numbers on the generator's own scale (what x = -1..1 meant to it).
  dn = np.rint((np.clip(x, -1.0, 1.0) + 1.0) / 2.0 * run.data.max_dn)
  trained = run.data.images[run.data.split.train][..., sel]
  return dict(images=dn.astype(np.uint16), labels=labels, step=np.int64(run.step),
              trained=_row_digests(trained), name=str(run.config.get("name")),
              method=str(run.config.method))


def _load(path: pathlib.Path | None) -> dict | None:
  if path is None or not path.exists():
    return None
  try:
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  except (OSError, ValueError, EOFError):
    log.warning("%s is unreadable: making the generated rows again", path)
    return None


def rows(s: dict, data: rdata.Prepared, cache_dir=None) -> tuple[np.ndarray, np.ndarray, dict]:
  """(uint16[n, h, w, c] images of `data.band_names`, int32[n] labels, origin) for
  the checked `spec` `s`: from the cache, else made and cached."""
  workdir = pathlib.Path(s["workdir"])
  step = _finished_step(workdir)
  root = rdata.cache_root(cache_dir)
  path = None if root is None else root / "generated" / f"{_key(workdir, step, s, data)}.npz"
  made = _load(path)
  if made is None:
    made = _make(workdir, s, data)
    if path is not None:
      convert.save_npz_atomic(path, {k: np.asarray(v) for k, v in made.items()})
  if made["images"].shape[1:] != data.images.shape[1:]:
    raise ValueError(f"config.data.generated.workdir={workdir}: its images are "
                     f"{list(made['images'].shape[1:])}, this dataset's "
                     f"{list(data.images.shape[1:])}")
  test = set(map(bytes, _row_digests(data.images[data.split.query])))
  seen = sum(bytes(d) in test for d in made["trained"])
  if seen:
    raise ValueError(f"config.data.generated.workdir={workdir}: the generator trained on "
                     f"{seen} of this run's {len(test)} query images; its images would leak "
                     "the test set into training. Train it on this split (the same "
                     "data.dir, data.n_query and seed)")
  counts = np.bincount(made["labels"], minlength=len(data.class_names))
  origin = dict(source="generated", workdir=str(workdir), name=str(made["name"]),
                method=str(made["method"]), step=int(made["step"]), n=s["n"], seed=s["seed"],
                per_class=dict(zip(data.class_names, counts.tolist())))
  return made["images"], made["labels"].astype(np.int32), origin
