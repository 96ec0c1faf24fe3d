"""The package's layers, as ARCHITECTURE.md draws them, checked against its imports.

Every `import` in `rsh/` (function-local ones included: a local import is still
a dependency) must point at a module of the same or a lower layer, and no
modules may import each other in a circle. A new module must be given a layer
here, so the picture stays true.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "rsh"

# Bottom to top; a module belongs to the layer of its longest matching prefix.
LAYERS = (
    ("foundations", ("rsh", "rsh.hamming", "rsh.shallow", "rsh.spectral", "rsh.models", "rsh.paper",
                     "rsh.losses", "rsh.data", "rsh.cli", "rsh.config_lib", "rsh.platform", "rsh.distributed",
                     "rsh.workdir", "rsh.deprecation", "rsh.augment", "rsh.kmeans")),
    ("backbone weights", ("rsh.weights",)),
    ("ranking", ("rsh.ranking",)),
    ("metric formulas", ("rsh.metrics", "rsh.image_quality")),
    ("search", ("rsh.search",)),
    ("protocol", ("rsh.protocol",)),
    ("similarity", ("rsh.similarity",)),
    ("derived views", ("rsh.features",)),
    ("updates", ("rsh.update",)),
    ("GAN step", ("rsh.gan",)),
    ("in-step backbones", ("rsh.frozen",)),
    ("loop services", ("rsh.sharding", "rsh.checkpoints", "rsh.histories")),
    ("loop", ("rsh.train",)),
    ("figures", ("rsh.plots",)),
    ("method contract", ("rsh.method",)),
    ("evaluators", ("rsh.evaluators",)),
    ("methods", ("rsh.methods",)),
    ("saved runs", ("rsh.runstate", "rsh.generated")),
    ("runner", ("rsh.experiment",)),
    ("workdirs", ("rsh.runs",)),
    ("restore", ("rsh.restore",)),
    ("paper tables", ("rsh.tables_ch4",)),
    ("entry points", ("rsh.main", "rsh.reproduce", "rsh.encode")),
)


def module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
  best, found = -1, None
  for i, (_, prefixes) in enumerate(LAYERS):
    for prefix in prefixes:
      if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
        best, found = len(prefix), i
  return found


def imports(module: str) -> set[str]:
  """The rsh modules `module` imports anywhere in its file (`from pkg import
  sub` depends on pkg.sub when that is a module, else on pkg)."""
  path = MODULES[module]
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
        base = ".".join(up + ([node.module] if node.module else []))
      names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
               for a in node.names]
    else:
      continue
    for name in names:
      while name and name not in MODULES:  # `import rsh.data.bands.x` -> its module
        name = name.rpartition(".")[0]
      if name.startswith("rsh") and name != module:
        out.add(name)
  return out


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
  assert [m for m in MODULES if layer_of(m) is None] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_layers(module):
  mine = layer_of(module)
  up = sorted(f"{dep} ({LAYERS[layer_of(dep)][0]})" for dep in GRAPH[module]
              if layer_of(dep) > mine)
  assert up == [], f"{module} ({LAYERS[mine][0]}) imports a higher layer: {up}"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
  """Tarjan's components with more than one module."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def package_reexports(comp: list[str]) -> bool:
  """A package whose `__init__` re-exports its children, the children importing
  siblings through it, is one unit (as house.py counts it), not a circle."""
  return all(m == comp[0] or m.startswith(comp[0] + ".") for m in comp)


def test_no_import_circles():
  circles = [c for c in strongly_connected(GRAPH) if not package_reexports(c)]
  assert circles == []


def test_the_checks_catch_what_they_guard():
  """An upward import and a circle, made up, are both found."""
  fake = {"rsh.hamming": {"rsh.experiment"}, "rsh.experiment": {"rsh.hamming"}}
  assert strongly_connected(fake) == [["rsh.experiment", "rsh.hamming"]]
  assert layer_of("rsh.experiment") > layer_of("rsh.hamming")
  assert layer_of("rsh.data.bigearthnet") == layer_of("rsh.data") == 0
