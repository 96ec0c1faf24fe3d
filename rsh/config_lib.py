"""What `configs/*.py` share (big_vision style `get_config(arg)`): the argument
parser, the data / optimiser / train / eval defaults, the thesis SSM, and the
variant overrides as a table.

`arg` is a comma-separated list of a variant name and `key=value` pairs, e.g.
`configs/uahm.py:small,bits=32,seed=1`. Each config file writes its own model,
loss and evaluator sections, then calls `finish(config, variant)`.
"""

from __future__ import annotations

from typing import Any

import ml_collections

# How the losses are weighted: "paper" is the thesis's eq. 5.5 / 5.8 as
# written; "tuned" is what docs/RESULTS.md's study found better at small scale.
RECIPES = ("paper", "tuned")

# Variant -> overrides by dotted key; a key whose section the config does not
# have (e.g. `ssm.*` for a method without an SSM) is skipped.
#   full  — the paper protocol on the full EuroSAT (Table 5.3 split, 30,000 steps);
#   small — the 369 real EuroSAT-MS GeoTIFFs (`--config.data.dir=...`): 5 queries
#           per class, the rest archive and training set; batch 32, 200 steps
#           (~1.3 s per step on 2 CPU cores: about 5 minutes);
#   demo  — the embedded procedural dataset, a few minutes on 2 CPU cores; the
#           thesis's SSM (EfficientNet-Lite0 + local histograms: on the demo data
#           histograms alone give SSM IoU 0.23, with the CNN 0.56);
#   smoke — tiny, for tests.
DROP = object()  # a VARIANTS value: delete the key (e.g. an evaluator) if present
_LOOP = ("train.batch_size", "train.num_steps", "train.eval_every",
         "train.checkpoint_every", "train.log_every")
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "small": {"data.source": "folder", "data.n_query": 5, "data.n_train": None,
              **dict(zip(_LOOP, (32, 200, 20, 50, 10))), "eval.pr_step": 25},
    "demo": {"data.source": "demo", "data.n_per_class": 60, "data.n_query": 10,
             "data.n_train": None, **dict(zip(_LOOP, (32, 120, 40, 40, 10))),
             "eval.pr_step": 50},
    "smoke": {"data.source": "demo", "data.n_per_class": 12, "data.n_query": 2,
              "data.n_train": None, **dict(zip(_LOOP, (8, 4, 2, 2, 1))),
              "train.progress": False, "ssm.spatial": "none", "ssm.n_bins": 8,
              "eval.k": 20, "eval.n": 5, "eval.pr_step": 10,
              # no CNN feature baselines in tests' smoke runs (a backbone compile each)
              "evals.lsh_efficientnet_lite0": DROP, "evals.itq_efficientnet_lite0": DROP},
}


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """`"small,bits=32"` -> {variant: "small", bits: 32, ...defaults}."""
  out = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    if "=" in part:
      key, value = part.split("=", 1)
      if key not in defaults:
        raise ValueError(f"unknown config argument {key!r}; known: {', '.join(sorted(defaults))}")
      out[key] = type(defaults[key])(value) if defaults[key] is not None else value
    else:
      if part not in VARIANTS:
        raise ValueError(f"unknown config variant {part!r}; known: {', '.join(VARIANTS)}")
      out["variant"] = part
  if out.get("recipe", "paper") not in RECIPES:
    raise ValueError(f"unknown config recipe {out['recipe']!r}; known: {', '.join(RECIPES)}")
  return ml_collections.ConfigDict(out)


def base(a, *, method: str, name: str, bands: str) -> ml_collections.ConfigDict:
  """Seed, variant, data, optimiser, train and eval defaults of the full protocol."""
  c = ml_collections.ConfigDict()
  c.method = method
  c.name = name if a.get("recipe", "paper") == "paper" else f"{name}_{a.recipe}"
  c.variant = a.variant
  c.seed = a.seed
  c.data = ml_collections.ConfigDict(dict(
      source="tfds", dir=ml_collections.FieldReference(None, field_type=str),
      cache_dir=ml_collections.FieldReference(None, field_type=str),
      bands=bands, n_query=100,
      input="pixels",  # the view a method trains on: pixels | <backbone> (its features)
      weights=ml_collections.FieldReference(None, field_type=str),  # a backbone's file
      n_train=ml_collections.FieldReference(500, field_type=int),
      n_per_class=ml_collections.FieldReference(None, field_type=int)))
  c.optim = ml_collections.ConfigDict(dict(lr=1e-4, b1=0.5, b2=0.999, eps=1e-8))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=64, num_steps=30_000, eval_every=2_500, checkpoint_every=500,
      log_every=50, progress=True))
  # Shared defaults of every evaluator (each may set its own k, n, pr_step).
  c.eval = ml_collections.ConfigDict(dict(k=100, n=20, pr_step=500))
  return c


def ssm() -> ml_collections.ConfigDict:
  """The thesis's unsupervised SSM (§5.2): CNN + local colour histograms, two-stage kNN."""
  return ml_collections.ConfigDict(dict(
      spatial="efficientnet_lite0",
      weights=ml_collections.FieldReference(None, field_type=str),
      spectral="local_hist", n_bins=32, n_patches=4, eta=6.0,
      k1=500, k2=300, n_ref=5000))


def baselines(features=("efficientnet_lite0",)) -> dict[str, dict]:
  """The shallow baselines beside a deep run (`config.evals` entries): LSH
  (`random_projection`) and ITQ on pixels, and both on each backbone's features."""
  out = {"random_projection": dict(type="random_projection"), "itq": dict(type="itq")}
  for b in features:
    out[f"lsh_{b}"] = dict(type="lsh", input=b)
    out[f"itq_{b}"] = dict(type="itq", input=b)
  return out


def finish(c: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """Applies the variant's overrides (`VARIANTS`) to a method's full config."""
  for key, value in VARIANTS[variant].items():
    *path, leaf = key.split(".")
    section = c
    for part in path:
      section = section.get(part) if section is not None else None
    if section is not None and value is DROP:
      if leaf in section:
        del section[leaf]
    elif section is not None:
      section[leaf] = value
  return c
