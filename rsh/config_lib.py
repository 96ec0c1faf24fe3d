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


# The cross-modal family's variants (configs/crossmodal.py, sscm.py, duch.py):
#   full   — BigEarthNet-MM (`--config.data.dir` holding BigEarthNet-v1.0/ and
#            BigEarthNet-S1-v1.0/), the official splits, snow / cloud excluded;
#   serbia — the same restricted to Serbia (the cross-modal proposal's subset);
#   example — the 6 real pairs of the bigearthnet-common package (a format check);
#   demo   — the procedural `demo_crossmodal` pairs, a few minutes on 2 CPU cores;
#   smoke  — tiny, for tests.
_BEN = {"data.source": "bigearthnet", "data.split": "official", "data.n_query": 2000,
        "data.n_train": None, **dict(zip(_LOOP, (128, 50_000, 5_000, 1_000, 100))),
        "eval.k": 1000, "eval.n": 100, "eval.pr_step": 1000,
        # The shallow baselines on an archive larger than memory: fitted on 20,000
        # sampled training pairs, LSH / ITQ on the patches pooled to 8 x 8 (as CCA-ITQ's);
        # raw 120 px S2 has 144,000 dimensions, beyond any PCA here.
        **{f"evals.{e}.fit_rows": 20_000 for e in ("lsh_s1", "lsh_s2", "itq_s1", "itq_s2",
                                                  "cca_itq_s1_to_s2", "cca_itq_s2_to_s1")},
        **{f"evals.{e}.pool": 8 for e in ("lsh_s1", "lsh_s2", "itq_s1", "itq_s2")}}
CROSSMODAL_VARIANTS: dict[str, dict[str, Any]] = {
    "full": _BEN,
    "serbia": {**_BEN, "data.options.countries": ("Serbia",),
               **dict(zip(_LOOP, (128, 20_000, 2_000, 1_000, 100)))},
    # The 6 real pairs bigearthnet-common ships (snowy one included): the real
    # format end to end in a minute; too few to learn from (no ITQ: 4 training pairs).
    "example": {"data.source": "bigearthnet", "data.dir": "example",
                "data.options.exclude": "none", "data.n_query": 2, "data.n_train": None,
                **dict(zip(_LOOP, (4, 4, 2, 2, 1))), "train.progress": False,
                "eval.k": 4, "eval.n": 2, "eval.pr_step": 1, "model.widths": (8, 16),
                "model.feature_dim": 32, "evals.itq_s1": DROP, "evals.itq_s2": DROP},
    "demo": {"data.source": "demo_crossmodal", "data.options.limit": 600,
             "data.options.size": 32, "data.n_query": 100, "data.n_train": None,
             **dict(zip(_LOOP, (64, 150, 50, 50, 10))), "eval.k": 100, "eval.n": 20,
             "eval.pr_step": 50},
    "smoke": {"data.source": "demo_crossmodal", "data.options.limit": 96,
              "data.options.size": 16, "data.n_query": 16, "data.n_train": None,
              **dict(zip(_LOOP, (16, 4, 2, 2, 1))), "train.progress": False,
              "eval.k": 20, "eval.n": 5, "eval.pr_step": 10,
              "model.widths": (8, 16), "model.feature_dim": 32},
}


def parse_arg(arg: str | None, variants: dict | None = None, **defaults
              ) -> ml_collections.ConfigDict:
  """`"small,bits=32"` -> {variant: "small", bits: 32, ...defaults}; `variants`
  is the table the variant names come from (default `VARIANTS`)."""
  variants = VARIANTS if variants is None else variants
  out = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    if "=" in part:
      key, value = part.split("=", 1)
      if key not in defaults:
        raise ValueError(f"unknown config argument {key!r}; known: {', '.join(sorted(defaults))}")
      out[key] = type(defaults[key])(value) if defaults[key] is not None else value
    else:
      if part not in variants:
        raise ValueError(f"unknown config variant {part!r}; known: {', '.join(variants)}")
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
      # A backbone's weight file (.pth), for the features view and the SSM's CNN.
      weights=ml_collections.FieldReference(None, field_type=str),
      n_train=ml_collections.FieldReference(500, field_type=int),
      n_per_class=ml_collections.FieldReference(None, field_type=int)))
  c.optim = ml_collections.ConfigDict(dict(lr=1e-4, b1=0.5, b2=0.999, eps=1e-8))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=64, num_steps=30_000, eval_every=2_500, checkpoint_every=500,
      log_every=50, progress=True,
      cpu_conv="eigen",  # XLA:CPU convolution kernels (rsh.platform.set_cpu_conv)
      # Which training rows make a batch (rsh.data.samplers): uniform | two_class | pk.
      sampler="uniform",
      # two_class: n (the first class's images; None = 2/3 of the batch); pk: k
      # (images per class; None = 4). Declared here so the command line may set them.
      sampler_options=ml_collections.ConfigDict(dict(
          n=ml_collections.FieldReference(None, field_type=int),
          k=ml_collections.FieldReference(None, field_type=int)))))
  # Shared defaults of every evaluator (each may set its own k, n, pr_step).
  c.eval = ml_collections.ConfigDict(dict(k=100, n=20, pr_step=500))
  return c


def ssm() -> ml_collections.ConfigDict:
  """The thesis's unsupervised SSM (§5.2): CNN + local colour histograms, two-stage kNN."""
  return ml_collections.ConfigDict(dict(
      spatial="efficientnet_lite0",  # its weight file, if needed: config.data.weights
      spectral="local_hist", n_bins=32, n_patches=4, eta=6.0,
      k1=500, k2=300, n_ref=5000))


def baselines(features=("efficientnet_lite0",)) -> dict[str, dict]:
  """The shallow baselines beside a deep run (`config.evals` entries): LSH
  (`random_projection`) and ITQ on pixels, and both on each backbone's features."""
  out = {"random_projection": dict(type="lsh", bits=own_bits()),
         "itq": dict(type="itq", bits=own_bits())}
  for b in features:
    out[f"lsh_{b}"] = dict(type="lsh", input=b, bits=own_bits())
    out[f"itq_{b}"] = dict(type="itq", input=b, bits=own_bits())
  return out


def own_bits() -> ml_collections.FieldReference:
  """A baseline's `bits`: None (the default) is config.model.bits; an int, its own
  (`--config.evals.<name>.bits=16`, e.g. where the view has few dimensions)."""
  return ml_collections.FieldReference(None, field_type=int)


def crossmodal(a, *, name: str, similarity: str | None = None) -> ml_collections.ConfigDict:
  """The cross-modal family's shared sections (`rsh/methods/crossmodal.py`):
  data (S1 view + S2 pixels, ms10), optimiser, model, and the evaluators:
  the four directions S1->S2, S2->S1, S1->S1, S2->S2 (each a retrieval entry,
  multi-label relevance = at least one shared label), random codes, and LSH /
  ITQ within each modality."""
  c = base(a, method="crossmodal", name=name, bands="ms10")
  c.data.inputs = ml_collections.ConfigDict(dict(s1="s1", s2="pixels"))
  c.data.split = "random"
  c.data.max_dn = 10_000  # S2 L2A reflectance x 10,000: NIR often exceeds EuroSAT's 4095
  c.data.options = ml_collections.ConfigDict(dict(
      countries=ml_collections.FieldReference(None, field_type=tuple),
      exclude=ml_collections.FieldReference(None, field_type=str),  # "snow,cloud" | "none"
      bands=ml_collections.FieldReference(None, field_type=str),  # S2 bands loaded: ms10 | all
      limit=ml_collections.FieldReference(None, field_type=int),
      size=ml_collections.FieldReference(None, field_type=int),
      # An on-disk store of the decoded pairs (rsh.data.bigearthnet.store): made when
      # absent, then read through memory maps (an archive larger than memory).
      store=ml_collections.FieldReference(None, field_type=str)))
  c.optim = ml_collections.ConfigDict(dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8))
  c.model = ml_collections.ConfigDict(dict(
      bits=a.bits, widths=(32, 64, 128), feature_dim=256, discriminator=False,
      disc_hidden=(128, 64), augment_noise=0.1))
  views = {"s1": "s1", "s2": "pixels"}
  evals = {}
  for q, r in (("s1", "s2"), ("s2", "s1"), ("s1", "s1"), ("s2", "s2")):
    evals[f"{q}_to_{r}"] = dict(type="retrieval", query="query", archive="archive",
                                query_input=views[q], archive_input=views[r],
                                codes="hash", vectors="hash", prefix=f"{q}_to_{r}/")
  evals["random_codes"] = dict(type="random_codes", bits=own_bits())
  for q, r in (("s1", "s2"), ("s2", "s1")):  # the shallow cross-modal baseline
    evals[f"cca_itq_{q}_to_{r}"] = dict(type="cca_itq", query_input=views[q],
                                        archive_input=views[r], pool=8, bits=own_bits())
  for kind in ("lsh", "itq"):
    evals[f"{kind}_s2"] = dict(type=kind, input="pixels", bits=own_bits())
    evals[f"{kind}_s1"] = dict(type=kind, input="s1", bits=own_bits())
  c.evals = ml_collections.ConfigDict(evals)
  if similarity is not None and similarity not in ("any", "jaccard"):
    raise ValueError(f"unknown config similarity {similarity!r}; known: any, jaccard")
  return c


# The conditional GANs' variants (configs/cdcgan.py, acgan.py): batch 64 and the
# RGB bands everywhere; `quality` is the generated_quality evaluator's sample count.
_GAN_LOOP = ("train.num_steps", "train.eval_every", "train.checkpoint_every", "train.log_every")
CGAN_VARIANTS: dict[str, dict[str, Any]] = {
    "full": {**dict(zip(_GAN_LOOP, (100_000, 10_000, 1_000, 100))),
             "evals.quality.samples": 5000},
    "small": {"data.source": "folder", "data.n_query": 5,
              **dict(zip(_GAN_LOOP, (1_000, 500, 250, 50))), "evals.quality.samples": 1000,
              "evals.quality.in_loop": True},
    "demo": {"data.source": "demo", "data.n_per_class": 60, "data.n_query": 10,
             **dict(zip(_GAN_LOOP, (300, 150, 50, 10))), "evals.quality.samples": 500},
    "smoke": {"data.source": "demo", "data.n_per_class": 12, "data.n_query": 2,
              "train.batch_size": 8, **dict(zip(_GAN_LOOP, (4, 2, 2, 1))),
              "train.progress": False, "evals.quality.samples": 20,
              "evals.quality.splits": 2},
}


def cgan(a, *, name: str, conditioning: str) -> ml_collections.ConfigDict:
  """Thesis ch. 4's conditional GANs (`rsh/methods/cgan.py`, Fig. 4.4): EuroSAT RGB
  (B04 B03 B02), batch 64, Adam 2e-4 (0.5, 0.999), D's targets smoothed to 0.9 / 0.1
  (§4.1.1), the test images (100 a class in `full`, as part 2's protocol) never
  trained on; IS / FID of the generated images (`generated_quality`)."""
  c = base(a, method="cgan", name=name, bands="rgb")
  c.data.n_train = None  # every image but the queries
  c.optim = ml_collections.ConfigDict(dict(lr=2e-4, b1=0.5, b2=0.999, eps=1e-8))
  c.model = ml_collections.ConfigDict(dict(
      conditioning=conditioning, noise_dim=100, conv_impl="phase", d_stats="real",
      d_batch_norm=True))  # False: D without BatchNorm, Fig. 4.4 as drawn (rsh/models/cgan.py)
  c.losses = ml_collections.ConfigDict(dict(
      adversarial_d=dict(weight=1.0, on="discriminator", real_target=0.9, fake_target=0.1),
      adversarial_g=dict(weight=1.0, on="generator")))
  c.evals = ml_collections.ConfigDict(dict(
      quality=dict(type="generated_quality", samples=5000, splits=10)))
  return c


def finish(c: ml_collections.ConfigDict, variant: str, variants: dict | None = None,
           loop: dict | None = None) -> ml_collections.ConfigDict:
  """Applies the variant's overrides (`VARIANTS`, or `variants`) to a method's full config.

  `loop`: a method's own `config.train` settings that no variant changes (e.g.
  ITQ's full-batch loop: one step an alternation); the variant's other keys apply.
  """
  own = {f"train.{k}": v for k, v in (loop or {}).items()}
  overrides = {**{k: v for k, v in (VARIANTS if variants is None else variants)[variant].items()
                  if k not in own}, **own}
  for key, value in overrides.items():
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


# Every config's top-level sections (GAN-MS has no `ssm`, a shallow config no `losses`).
_SECTIONS = ("data", "eval", "evals", "losses", "model", "optim", "ssm", "train")


def apply_overrides(config, overrides: list[str], only_present: bool = False):
  """`rsh.reproduce`'s `--set key=value` overrides; one for a section a config does
  not have (e.g. `ssm.*` for GAN-MS, which builds no SSM) is skipped for that
  config only. `only_present`: skip any key the config lacks (a table's other
  configs, when its main one has checked every key)."""
  for item in overrides:
    if "=" not in item:
      raise ValueError(f"--set {item!r}: expected key=value, e.g. --set=train.num_steps=100")
    key, value = item.split("=", 1)
    node = config
    *path, last = key.split(".")
    if path and path[0] not in config:
      if path[0] not in _SECTIONS:  # a typo, not a section of another table's model
        raise ValueError(f"--set {item!r}: no config has a section {path[0]!r}; sections: "
                         f"{', '.join(_SECTIONS)}")
      continue
    for i, p in enumerate(path + [last]):
      if not hasattr(node, "keys") or p not in node:
        if only_present:
          break
        where = ".".join(["config"] + path[:i])
        raise ValueError(f"--set {item!r}: {where} has no key {p!r}"
                         + (f"; it has {', '.join(sorted(node.keys()))}"
                            if hasattr(node, "keys") else ""))
      if i < len(path):
        node = node[p]
    else:  # every key found
      try:
        node[last] = convert(node[last], value)
      except (TypeError, ValueError) as e:
        raise ValueError(f"--set {item!r}: {e}") from None
  return config


def convert(old, value: str):
  """`value` as the type of the key's present value (a string where it is None)."""
  if isinstance(old, bool):
    if value.lower() not in ("1", "0", "true", "false"):
      raise ValueError(f"expected true or false, got {value!r}")
    return value.lower() in ("1", "true")
  return value if old is None else type(old)(value)
