import contextlib
import dataclasses
import importlib
import io
import logging
import os
import pathlib
import sys
import traceback

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_EUROSAT = REPO.parent / "shared" / "data" / "eurosat_ms"


@pytest.fixture(scope="session")
def eurosat_dir():
  """The 369 real EuroSAT-MS GeoTIFFs, when ../shared is present; else skip."""
  path = pathlib.Path(os.environ.get("RSH_EUROSAT_DIR", SHARED_EUROSAT))
  if not path.is_dir():
    pytest.skip(f"real EuroSAT folder not present at {path}")
  return path


# ----------------------------------------------------------------------------
# The absl command lines (`rsh.main`, `rsh.reproduce`), run in this process.


@dataclasses.dataclass
class CliResult:
  """What `python -m module args` would have left: exit code, stdout, stderr."""
  returncode: int
  stdout: str
  stderr: str


# Each command line's own absl flags. Both define `--workdir` on the one global
# FLAGS, so only the running command's flags are registered at a time.
CLI_MODULES = ("rsh.main", "rsh.reproduce", "rsh.encode")
_CLI_FLAGS: dict[str, dict] = {}


def import_cli(module: str):
  """Imports `module` (one of CLI_MODULES) with its absl flags alone registered,
  unparsed: import the command lines only through here (or `cli_main`)."""
  from absl import flags
  fv = flags.FLAGS
  for name in CLI_MODULES:  # imported elsewhere: its flags are known by their module
    if name in sys.modules and name not in _CLI_FLAGS:
      _CLI_FLAGS[name] = {f.name: f for f in fv.flags_by_module_dict().get(name, [])}
  # `--config.a.b` overrides are flags that config_flags adds while parsing.
  stale = [n for n in fv if n.startswith("config.")]
  stale += [n for own in _CLI_FLAGS.values() for n in own if n in fv]
  for name in dict.fromkeys(stale):
    delattr(fv, name)
  if module not in _CLI_FLAGS:
    importlib.import_module(module)
    _CLI_FLAGS[module] = {f.name: f for f in fv.flags_by_module_dict().get(module, [])}
  for name, flag in _CLI_FLAGS[module].items():
    if name not in fv:
      fv[name] = flag
  fv.unparse_flags()
  return sys.modules[module]


def cli_main(*args: str, module: str = "rsh.main") -> CliResult:
  """`python -m module args`, run in this process.

  What `app.run` does, minus absl's help flags (`--help` needs a process):
  `cli.parse_flags`, then the module's `main`; `SystemExit` is the exit code,
  an uncaught exception a traceback on stderr and exit code 1, and the log
  records (at the levels `main` sets) go to stderr as absl's handler sends
  them. The process-wide settings a command makes (log levels, XLA_FLAGS,
  jax's compilation cache, `sys.unraisablehook`, `sys.argv`) are undone
  afterwards; jax's backend is started first, so the command's XLA:CPU kernel
  choice cannot carry over to the rest of the session.
  """
  import jax
  from absl import flags
  from jax._src import compilation_cache
  from rsh import cli
  jax.devices()
  entry = import_cli(module)
  fv = flags.FLAGS
  saved = (sys.argv, sys.unraisablehook, os.environ.get("XLA_FLAGS"),
           jax.config.jax_compilation_cache_dir,
           {name: logging.getLogger(name).level for name in (None, "rsh", "asyncio")})
  argv = [f"{module.replace('.', '/')}.py", *args]
  sys.argv = argv
  out, err = io.StringIO(), io.StringIO()
  handler = logging.StreamHandler(err)
  logging.getLogger().addHandler(handler)
  code = 0
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        rest = cli.parse_flags(argv, getattr(entry, "_unknown_override", lambda argv: None))
        entry.main(rest)
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      except Exception:  # noqa: BLE001 -- what the interpreter would print
        traceback.print_exc()
        code = 1
  finally:
    logging.getLogger().removeHandler(handler)
    fv.unparse_flags()
    sys.argv, sys.unraisablehook, xla_flags, cache_dir, levels = saved
    for name, level in levels.items():
      logging.getLogger(name).setLevel(level)
    if xla_flags is None:
      os.environ.pop("XLA_FLAGS", None)
    else:
      os.environ["XLA_FLAGS"] = xla_flags
    if jax.config.jax_compilation_cache_dir != cache_dir:  # rsh.reproduce sets it
      jax.config.update("jax_compilation_cache_dir", cache_dir)
      compilation_cache.reset_cache()
  return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory):
  """One RSH_CACHE_DIR for the tests that run the real backbone on the same smoke
  data (configs/milan.py, the frozen backbone): its features are computed once."""
  return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture
def run_cli():
  """`run_cli(*args, module="rsh.main") -> CliResult`: `cli_main`."""
  return cli_main


# ----------------------------------------------------------------------------
# Shared checks.


def load_config(name: str, arg: str | None = None):
  """`configs/<name>.py`'s `get_config(arg)`, as `--config=configs/<name>.py:arg` reads it."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def with_overrides(config, changes: dict):
  """`config` with each dotted key of `changes` set (`{"train.num_steps": 2}`)."""
  for key, value in changes.items():
    *path, leaf = key.split(".")
    node = config
    for part in path:
      node = node[part]
    node[leaf] = value
  return config


def one_error_line(out: CliResult, *names) -> str:
  """Exit code 2, no traceback, and one `error:` line that names each of `names`."""
  assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  lines = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1, out.stderr[-2000:]
  for name in names:
    assert name in lines[0], (name, lines[0])
  return lines[0]
