"""The method registry: `config.method` -> a module exposing `build(config, data, terms)`.

`build` returns an `rsh.method.Method` (initial state, pure step, encoder,
bound loss terms, optionally `generate`); `rsh.experiment.train_and_evaluate`
does everything else. Methods never import each other: shared pieces live in
the core modules. `config.method` may also be `"package.module"` (a module with
`build`) or `"package.module:function"` (a build function) defined anywhere
importable, so a new method needs no change here.
"""

import importlib
import types

# method name (config.method) -> module under rsh.methods[:its build function]
METHODS = {
    "uahm": "uahm",  # UAHM and its baselines GAN-RGB, GAN-MS, DHNN-MS (by config)
    "lsh": "shallow:build_lsh",  # random hyperplanes (configs/lsh.py)
    "itq": "shallow:build_itq",  # PCA + iterative quantisation (configs/itq.py)
    "crossmodal": "crossmodal",  # S1 <-> S2 hashing (configs/crossmodal.py, sscm.py, duch.py)
    "feature_hash": "feature_hash",  # a hashing MLP on frozen features (configs/ssm_hash.py)
    "cgan": "cgan",  # class-conditional GANs: C-DCGAN, ACGAN (configs/cdcgan.py, acgan.py)
}


def get(name: str):
  """The module (or namespace) with `build` for `name`; a ValueError lists the choices."""
  if name in METHODS:
    module, _, attr = METHODS[name].partition(":")
    mod = importlib.import_module(f"rsh.methods.{module}")
    return types.SimpleNamespace(build=getattr(mod, attr), __name__=name) if attr else mod
  if "." in name or ":" in name:
    module, _, attr = name.partition(":")
    try:
      mod = importlib.import_module(module)
      build = getattr(mod, attr or "build")
    except (ImportError, AttributeError) as e:
      raise ValueError(f"cannot import method {name!r}: {e}") from None
    return types.SimpleNamespace(build=build, __name__=name)
  raise ValueError(
      f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))} "
      "(or 'package.module[:build_function]')")
