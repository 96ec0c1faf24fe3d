"""Names that moved to another module keep working from the old one for a release.

    __getattr__ = deprecation.moved(__name__, {"old_name": "rsh.new_module"})

in the old module makes `old_module.old_name` warn (`DeprecationWarning`) and
return `rsh.new_module.old_name`, imported on first use. Only for moves to a
module of the same or a lower layer (tests/test_layers.py does not see this
import).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Callable, Mapping


def moved(module: str, table: Mapping[str, str]) -> Callable[[str], object]:
  """A module-level `__getattr__` for `module` whose `table` maps a name to the
  module that now holds it (under the same name)."""

  def __getattr__(name: str):
    if name in table:
      warnings.warn(f"{module}.{name} moved to {table[name]}.{name}; the old name goes in the "
                    "next release", DeprecationWarning, stacklevel=2)
      return getattr(importlib.import_module(table[name]), name)
    raise AttributeError(f"module {module!r} has no attribute {name!r}")

  return __getattr__
