"""One small module per method; each exposes `train_and_evaluate(config, workdir, terms=None)`.

Methods never import each other: shared pieces live in the core modules.
"""

import importlib

# method name (config.method) -> module under rsh.methods
METHODS = {
    "uahm": "uahm",  # UAHM and its baselines GAN-RGB, GAN-MS, DHNN-MS (by config)
}


def get(name: str):
  """Returns the module implementing `name`, or a ValueError listing the choices."""
  if name not in METHODS:
    raise ValueError(
        f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
  return importlib.import_module(f"rsh.methods.{METHODS[name]}")
